//! The floor: the least a hyper reverse proxy can cost per request.
//!
//! No routing, no auth, no logging, no metrics: accept HTTP/1.1, send the
//! request to the upstream, stream the answer back. The load benchmark runs
//! it beside warden, so the report shows what warden's own work costs on top
//! of hyper and the kernel.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- LISTEN_PORT UPSTREAM_PORT
//! ```
//!
//! It runs on a current-thread runtime (`BARE_RUNTIME=multi`: tokio's
//! multi-thread runtime, as warden; give it `TOKIO_WORKER_THREADS=1`).
//! `BARE_CLIENT=pool` (the default) uses hyper-util's pooled client, as
//! warden does; `BARE_CLIENT=conn` opens one upstream connection per client
//! connection instead (no pool).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(Ok(listen)), Some(Ok(upstream))) = (
        args.next().map(|p| p.parse::<u16>()),
        args.next().map(|p| p.parse::<u16>()),
    ) else {
        eprintln!("usage: bare_proxy LISTEN_PORT UPSTREAM_PORT");
        return ExitCode::from(2);
    };
    let mut builder = if std::env::var("BARE_RUNTIME").is_ok_and(|v| v == "multi") {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bare_proxy: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let per_connection = std::env::var("BARE_CLIENT").is_ok_and(|v| v == "conn");
    match runtime.block_on(serve(listen, upstream, per_connection)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bare_proxy: {err}");
            ExitCode::from(1)
        }
    }
}

async fn serve(listen: u16, upstream: u16, per_connection: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, listen))).await?;
    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let base: Uri = format!("http://{upstream_addr}")
        .parse()
        .map_err(std::io::Error::other)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let base = base.clone();
        tokio::task::spawn(async move {
            if per_connection {
                let Ok(up) = TcpStream::connect(upstream_addr).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((sender, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(up)).await
                else {
                    return;
                };
                tokio::task::spawn(conn);
                let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |request: Request<Incoming>| {
                            let sender = sender.clone();
                            async move {
                                let mut sender = sender.lock().await;
                                match sender.send_request(request).await {
                                    Ok(response) => Ok::<_, hyper::Error>(response),
                                    Err(err) => Err(err),
                                }
                            }
                        }),
                    )
                    .await;
            } else {
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |mut request: Request<Incoming>| {
                            let client = client.clone();
                            let mut parts = base.clone().into_parts();
                            parts.path_and_query = request.uri().path_and_query().cloned();
                            if let Ok(uri) = Uri::from_parts(parts) {
                                *request.uri_mut() = uri;
                            }
                            async move {
                                match client.request(request).await {
                                    Ok(response) => {
                                        Ok::<_, Infallible>(response.map(BodyExt::boxed))
                                    }
                                    Err(_) => {
                                        let mut response =
                                            Response::new(http_body_util::BodyExt::boxed(
                                                http_body_util::Empty::new()
                                                    .map_err(|e| match e {}),
                                            ));
                                        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                                        Ok(response)
                                    }
                                }
                            }
                        }),
                    )
                    .await;
            }
        });
    }
}
