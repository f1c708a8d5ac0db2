//! HTTP(S) clients for everything warden connects to: upstreams, trusted
//! issuers' JWKS, OAuth2 token endpoints. rustls with the aws-lc-rs
//! provider and the webpki roots, plus, per client, an extra trust root
//! (`ca_file`), a TLS name other than the URL's host (`server_name`), and
//! HTTP/2 only (h2 over TLS via ALPN, or prior-knowledge h2c).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A pooled client for bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector, B>;

/// Opens plain TCP connections for `http` URLs and TLS ones for `https`.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How a client connects.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientOptions<'a> {
    /// An extra trust root (PEM), besides the webpki roots.
    pub ca_file: Option<&'a Path>,
    /// The name to verify the server's certificate against.
    pub server_name: Option<&'a str>,
    /// Speak HTTP/2 only.
    pub http2: bool,
    /// Give up connecting after this long.
    pub connect_timeout: Option<Duration>,
}

/// Why a client could not be built. Its text names the file or value at
/// fault and goes into config errors and start-up errors as it is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `ca_file` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The `ca_file` is not PEM.
    #[error("{} is not a PEM certificate file: {source}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The `ca_file` holds no certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the `ca_file` is not a usable trust root.
    #[error("{}: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the protocol versions (a bug in the provider set-up).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// `server_name` is not a name a certificate can be checked against.
    #[error("{0:?} is not a DNS name or IP address")]
    ServerName(String),
}

/// The certificates of a `ca_file`; a file with none is an error, not an
/// empty trust root that would only show up as failed connections.
pub fn ca_certificates(
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ClientError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|source| ClientError::ReadCa {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ClientError::NotPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A client trusting the webpki roots and the certificates in `ca_file`.
pub fn https_client<B>(ca_file: Option<&Path>) -> Result<HttpsClient<B>, ClientError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    client(&ClientOptions {
        ca_file,
        ..ClientOptions::default()
    })
}

/// A pooled keep-alive client with `options`.
pub fn client<B>(options: &ClientOptions<'_>) -> Result<HttpsClient<B>, ClientError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let https = connector(options)?;
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .http2_only(options.http2);
    Ok(client.build(https))
}

/// What opens a connection with `options`: TCP (with `TCP_NODELAY` and the
/// connect timeout), then TLS for `https` URLs with ALPN `h2` or
/// `http/1.1` as `options.http2` says.
pub fn connector(options: &ClientOptions<'_>) -> Result<HttpsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = options.ca_file {
        for cert in ca_certificates(path)? {
            roots
                .add(cert)
                .map_err(|source| ClientError::BadCertificate {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(options.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match options.server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.to_owned())
                .map_err(|_| ClientError::ServerName(name.to_owned()))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(if options.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}
