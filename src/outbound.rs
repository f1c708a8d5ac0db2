//! HTTPS clients for the gateway's own outbound calls (trusted issuers'
//! JWKS, OAuth2 token endpoints): rustls with the aws-lc-rs provider, the
//! webpki roots, plus an optional extra trust root for a private service.

use std::path::Path;
use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled client for bodies of type `B`.
pub type HttpsClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// A client trusting the webpki roots and the certificates in `ca_file`.
pub fn https_client<B>(ca_file: Option<&Path>) -> Result<HttpsClient<B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}
