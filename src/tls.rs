//! TLS on the main listener (rustls, aws-lc-rs): the certificate chain and
//! key from PEM files, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3 only with
//! rustls's default (modern) cipher suites, and optional client-certificate
//! verification (`client_ca_file`) for mTLS callers.
//!
//! The `rustls::ServerConfig` is built while the config is validated, so a
//! bad certificate is a config error at start, and on reload the old one
//! keeps serving. [`TlsConfigError`] says which file is wrong; `config`
//! reports its text as the problem with `server.tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `[server.tls]`, validated and loaded.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The certificate chain file.
    pub cert_file: PathBuf,
    /// The private key file.
    pub key_file: PathBuf,
    /// Client certificates must chain to these roots, when set.
    pub client_ca_file: Option<PathBuf>,
    /// The loaded rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
}

/// Why `[server.tls]` cannot be loaded; each message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file is not PEM.
    #[error("{} is not a PEM certificate chain: {source}", path.display())]
    NotCertificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no usable PEM private key.
    #[error("{} is not a PEM private key: {source}", path.display())]
    NotPrivateKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The provider does not offer TLS 1.2 and 1.3.
    #[error("{0}")]
    Versions(rustls::Error),
    /// A client CA certificate cannot be a trust root.
    #[error("{}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    /// No client-certificate verifier can be built from the client CAs.
    #[error("{}: {source}", path.display())]
    ClientVerifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and key do not belong together (or are unusable).
    #[error("{} and {} do not make a usable certificate: {source}", cert_file.display(), key_file.display())]
    Unusable {
        cert_file: PathBuf,
        key_file: PathBuf,
        source: rustls::Error,
    },
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsConfigError::Read {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::NotCertificates {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Builds the server configuration; the error says which file is wrong.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsConfigError::NotPrivateKey {
            path: key_file.to_owned(),
            source,
        })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsConfigError::Versions)?;
    let builder = match client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|source| TlsConfigError::ClientCa {
                    path: path.to_owned(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsConfigError::ClientVerifier {
                    path: path.to_owned(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsConfigError::Unusable {
                cert_file: cert_file.to_owned(),
                key_file: key_file.to_owned(),
                source,
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_at_fault_in_the_old_wording() {
        let dir = std::env::temp_dir().join(format!("warden-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("empty file");
        let err = server_config(&empty, &empty, None).expect_err("no certificate");
        let expected = format!("{} holds no certificate", empty.display());
        assert_eq!(err.to_string(), expected);
        let missing = dir.join("missing.pem");
        let err = server_config(&missing, &empty, None).expect_err("no file");
        let expected = format!("cannot read {}: ", missing.display());
        assert!(err.to_string().starts_with(&expected), "{err}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
