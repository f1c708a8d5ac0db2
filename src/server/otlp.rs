//! The OTLP exporter's HTTP client: the gateway's own hyper client (rustls
//! on aws-lc-rs), driven on the gateway's runtime. The exporter's batch
//! thread awaits the request as a plain future; the request itself runs as
//! a task of the runtime, which owns the sockets.

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

use crate::http_client::HttpsClient;
use crate::trace::{Exporter, OtlpSettings};

/// How long one export may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest collector answer read.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug)]
struct OtlpClient {
    client: HttpsClient<Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let response = client.request(request.map(Full::new)).await?;
                let (parts, body) = response.into_parts();
                let body = crate::body::read_to_limit(body, MAX_ANSWER).await?;
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            tokio::time::timeout(EXPORT_TIMEOUT, exchange)
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))?
        });
        task.await
            .map_err(|_| HttpError::from("the export task failed"))?
    }
}

/// Starts exporting to `settings`, on the current runtime.
pub fn start(settings: &OtlpSettings) -> Result<Exporter, String> {
    let client = crate::http_client::https_client(None).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    Exporter::start(settings, OtlpClient { client, runtime })
}
