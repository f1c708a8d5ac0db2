//! A fast static upstream for the load benchmark (`benches/load.sh`).
//!
//! It answers every request with `200 OK` and a small fixed body, over
//! HTTP/1.1 keep-alive, on `127.0.0.1:PORT`. It runs on one thread (a
//! current-thread tokio runtime), so that pinned to one core it is a fixed,
//! cheap cost that is the same for every proxy measured in front of it.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 39100
//! ```
//!
//! Request bodies are not read: the benchmark sends none, and hyper drains
//! or closes as needed.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body of every answer: small, like a typical JSON API reply header-wise.
const BODY: &[u8] = b"{\"ok\":true,\"from\":\"bench-upstream\"}\n";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let port = match args.next().map(|p| p.parse::<u16>()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: bench_upstream PORT");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench_upstream: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench_upstream: {err}");
            ExitCode::from(1)
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bench_upstream: listening on {addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the others.
            Err(err) => {
                eprintln!("bench_upstream: accept: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .header_read_timeout(None)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
