//! Criterion benchmarks of the whole in-process stack: one request through
//! the service a connection calls (execution key, access log, limits, dispatcher,
//! the route's stack, the pooled upstream client) to a hyper upstream on
//! 127.0.0.1 in the same single-threaded runtime, and its response body read
//! to the end. No client socket: what is left out is hyper's server side.
//!
//! - `stack/public`: a route with `auth = "none"`;
//! - `stack/jwt_cached`: a jwt route and one HS256 token, repeated (served by
//!   the verified-token cache);
//! - `stack/jwt_credential`: the jwt route with a service credential (a
//!   bearer token from the encrypted store) injected;
//! - `stack/jwt_connection`: the jwt route with the caller's own OAuth
//!   connection token injected (a record in the embedded vault, served from
//!   the per-user token cache): what SPEC §13 costs against a credential;
//! - `stack/upstream_only`: the same upstream through a bare hyper client,
//!   the baseline the others are compared with.
//!
//! Before timing, it prints the heap allocations per request of each case
//! (`stats_alloc` wraps the system allocator in this bench only).
//!
//! Run with `cargo bench --bench stack`. A filter that matches no benchmark
//! (`-- zzz-nothing`) runs only the allocation count: a fixed workload of
//! 1,100 requests per case, which `valgrind --tool=callgrind` turns into
//! instructions per request (see docs/performance.md).

use std::alloc::System;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use warden::audit::AuditLog;
use warden::body::HttpService;
use warden::extensions::ConnectInfo;
use warden::metrics::Metrics;
use warden::server::generation::Persistent;
use warden::shared_state::health::Health;
use warden::shared_state::{InMemoryState, SharedState};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SECRET: &str = "stack-bench-secret-of-at-least-thirty-two-bytes";
const ISS: &str = "https://issuer.bench.local";

/// The static upstream: 200 and a small JSON body, like `bench_upstream`.
async fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                    let mut response = Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true,\"from\":\"bench-upstream\"}\n",
                    )));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The gateway's client-facing service for a config with a public and a
/// jwt route in front of `upstream`.
fn gateway(upstream: SocketAddr, dir: &std::path::Path) -> HttpService {
    let secret_file = dir.join("hs256.secret");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[log]
level = "warn"

[[keys]]
kid = "bench-hs256"
alg = "HS256"
secret_file = "{secret}"

[issuer]
iss = "{ISS}"
aud = ["bench-api"]

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "http://{upstream}"
auth = "none"

[[routes]]
name = "jwt"
path_prefix = "/jwt"
upstream = "http://{upstream}"

[credentials]
store = "{store}"
master_key_file = "{master}"

[[oauth_connections]]
name = "provider"
authorize_url = "http://127.0.0.1:9/authorize"
token_url = "http://127.0.0.1:9/token"
client_id = "bench"
client_secret_file = "{secret}"
redirect_url = "https://gateway.bench.local/oauth/provider/callback"

[[routes]]
name = "credential"
path_prefix = "/credential"
upstream = "http://{upstream}"
inject = {{ credential = "service-token" }}

[[routes]]
name = "connection"
path_prefix = "/connection"
upstream = "http://{upstream}"
inject = {{ connection = "provider" }}
"#,
        secret = secret_file.display(),
        store = dir.join("creds.store").display(),
        master = dir.join("master.key").display(),
    );
    let config = warden::Config::from_toml(&text, "stack-bench.toml").expect("a valid config");
    let metrics = Metrics::new(prometheus::Registry::new()).expect("metrics");
    let audit = AuditLog::with_writer(tokio::io::sink(), 65_536, metrics.audit_dropped.clone());
    let shared = SharedState::in_memory(Arc::new(InMemoryState::default()), Health::new(&metrics));
    let persistent = Persistent::new(metrics, shared, audit);
    persistent
        .build(&config, String::new())
        .expect("the stacks")
        .service
}

/// The credential store (one bearer credential) and the vault (one
/// connection record of the bench's subject, with no expiry).
fn stores(dir: &std::path::Path) {
    use warden::credentials::store::{MasterKey, Store};
    use warden::credentials::{Credential, Kind};
    use warden::oauth_connections::vault::{RecordId, Vault, embedded_path};
    use warden::secret::SecretString;
    let master = MasterKey::generate().expect("a master key");
    std::fs::write(dir.join("master.key"), master.to_base64().as_bytes()).expect("the key file");
    let store = Store::new(dir.join("creds.store"), master.clone());
    store.create().expect("the store");
    let token = Kind::Bearer {
        token: SecretString::new("service-token-value"),
    };
    store
        .update(|c| {
            c.credentials
                .insert("service-token".into(), Credential::new(token, None))
        })
        .expect("a credential");
    let sealer = warden::oauth_connections::seal::Sealer::new(&master).expect("a sealer");
    let id = RecordId {
        connection: "provider".into(),
        iss: ISS.into(),
        sub: "bench-client".into(),
    };
    let tokens = warden::oauth_connections::Tokens {
        access_token: SecretString::new("users-own-access-token"),
        refresh_token: None,
        expires_at: None,
    };
    let record = warden::oauth_connections::seal_record(&sealer, &id, &tokens, 0, None)
        .expect("a sealed record");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let vault =
            Vault::open_embedded(&embedded_path(&dir.join("creds.store"))).expect("the vault");
        vault.put(&record).await.expect("the record");
    });
}

fn token() -> String {
    let claims = serde_json::json!({
        "iss": ISS,
        "aud": "bench-api",
        "sub": "bench-client",
        "exp": warden::clock::unix_now() + 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("bench-hs256".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token")
}

fn request(path: &str, bearer: Option<&str>) -> Request<warden::body::Body> {
    let mut builder = Request::get(path).header(header::HOST, "gateway.bench.local");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = builder
        .body(warden::body::empty())
        .expect("a valid request");
    let client: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let local: SocketAddr = ([127, 0, 0, 1], 8080).into();
    request
        .extensions_mut()
        .insert(ConnectInfo::new(client, local, false));
    request
}

/// One request through the gateway's stack, body read to the end.
async fn through_gateway(service: &HttpService, path: &str, bearer: Option<&str>) {
    let response = service
        .clone()
        .oneshot(request(path, bearer))
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await;
    assert!(body.is_ok());
}

/// One request to the upstream through a bare pooled hyper client.
async fn direct(client: &Client<HttpConnector, Empty<Bytes>>, uri: &http::Uri) {
    let mut service = client.clone();
    let request = Request::get(uri.clone())
        .body(Empty::new())
        .expect("a valid request");
    let response = service
        .ready()
        .await
        .expect("ready")
        .call(request)
        .await
        .expect("an answer");
    assert!(response.into_body().collect().await.is_ok());
}

fn stack(c: &mut Criterion) {
    warden::crypto::install_providers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = std::env::temp_dir().join(format!("warden-stack-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("hs256.secret"), SECRET).expect("the secret file");
    stores(&dir);

    let (service, client, uri) = runtime.block_on(async {
        let upstream = start_upstream().await.expect("an upstream");
        let service = gateway(upstream, &dir);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let uri: http::Uri = format!("http://{upstream}/public").parse().expect("a URI");
        (service, client, uri)
    });
    let token = token();

    // Allocations per request, after a warm-up that fills pools and caches.
    let per_request = |run: &dyn Fn()| {
        for _ in 0..100 {
            run();
        }
        let region = Region::new(GLOBAL);
        for _ in 0..1000 {
            run();
        }
        let stats = region.change();
        (stats.allocations + stats.reallocations) as f64 / 1000.0
    };
    let public = per_request(&|| runtime.block_on(through_gateway(&service, "/public/x", None)));
    let jwt = per_request(&|| {
        runtime.block_on(through_gateway(&service, "/jwt/x", Some(&token)));
    });
    let credential = per_request(&|| {
        runtime.block_on(through_gateway(&service, "/credential/x", Some(&token)));
    });
    let connection = per_request(&|| {
        runtime.block_on(through_gateway(&service, "/connection/x", Some(&token)));
    });
    let upstream_only = per_request(&|| runtime.block_on(direct(&client, &uri)));
    eprintln!(
        "heap allocations per request: public {public:.1}, jwt_cached {jwt:.1}, jwt_credential {credential:.1}, jwt_connection {connection:.1}, upstream_only {upstream_only:.1}"
    );

    let mut group = c.benchmark_group("stack");
    group.bench_function("public", |b| {
        b.to_async(&runtime)
            .iter(|| through_gateway(&service, "/public/x", None));
    });
    group.bench_function("jwt_cached", |b| {
        b.to_async(&runtime)
            .iter(|| through_gateway(&service, "/jwt/x", Some(&token)));
    });
    group.bench_function("jwt_credential", |b| {
        b.to_async(&runtime)
            .iter(|| through_gateway(&service, "/credential/x", Some(&token)));
    });
    group.bench_function("jwt_connection", |b| {
        b.to_async(&runtime)
            .iter(|| through_gateway(&service, "/connection/x", Some(&token)));
    });
    group.bench_function("upstream_only", |b| {
        b.to_async(&runtime).iter(|| direct(&client, &uri));
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, stack);
criterion_main!(benches);
