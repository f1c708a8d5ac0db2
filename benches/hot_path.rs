//! Criterion benchmarks of the per-request hot path:
//!
//! - token verification per algorithm, cold (`jwt::verify`: parse, select
//!   the key, check the signature and the claims) and through the
//!   authenticator's cache (a SHA-256 of the token and a cache hit);
//! - the scope check of a route;
//! - route matching with 10, 1,000 and 10,000 routes.
//!
//! Run with `cargo bench --bench hot_path`. Figures are only comparable
//! within one run on one machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;
use jsonwebtoken::Algorithm;
use warden::auth::issue::IssuerSettings;
use warden::auth::issue::{Grant, TokenIssuer};
use warden::auth::jwt::{self, IssuerPolicy, KeySet, VerifyingKey};
use warden::auth::keys::{self, KeySettings, KeySource, alg_name};
use warden::auth::scopes::RouteAuthz;
use warden::auth::{Authenticator, ValidationSettings};
use warden::clock::unix_now;
use warden::metrics::Metrics;
use warden::routes::{Match, RouteKey, RouteTable};
use warden::shared_state::InMemoryState;

const ISS: &str = "https://issuer.bench.local";
const AUD: &str = "bench-api";

/// A key of `alg`, a key set that verifies it, and a token it signed.
fn setup(alg: Algorithm) -> (KeySet, String) {
    let kid = format!("bench-{}", alg_name(alg));
    let loaded = keys::load(&KeySettings {
        kid: kid.clone(),
        alg,
        source: KeySource::Generate,
    })
    .expect("a generated key");
    let settings = IssuerSettings {
        iss: ISS.into(),
        audiences: vec![AUD.into()],
        signing_kid: Some(kid.clone()),
        ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(3600),
    };
    let loaded = Arc::new(loaded);
    let issuer = TokenIssuer::new(&settings, &loaded).expect("a signing key");
    let scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    let issued = issuer
        .issue(&Grant {
            sub: "bench-client",
            scopes: &scopes,
            ..Default::default()
        })
        .expect("a token");
    let set = KeySet::new(vec![VerifyingKey {
        kid: Some(kid),
        alg,
        key: loaded.decoding.clone(),
        issuer: Arc::new(IssuerPolicy {
            iss: ISS.into(),
            audiences: vec![AUD.into()],
            accept_high_s: false,
        }),
    }]);
    (set, issued.token)
}

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

fn verification(c: &mut Criterion) {
    warden::crypto::install_providers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut cold = c.benchmark_group("verify_cold");
    for alg in ALGORITHMS {
        let (set, token) = setup(alg);
        let now = unix_now();
        cold.bench_with_input(
            BenchmarkId::from_parameter(alg_name(alg)),
            &token,
            |b, token| {
                b.iter(|| jwt::verify(black_box(token), &[&set], now, 30).expect("valid"));
            },
        );
    }
    cold.finish();

    let mut cached = c.benchmark_group("verify_cached");
    for alg in ALGORITHMS {
        let (set, token) = setup(alg);
        let metrics = Metrics::new(prometheus::Registry::new()).expect("metrics");
        let authenticator = Authenticator::new(
            set,
            Vec::new(),
            Arc::new(InMemoryState::default()),
            &ValidationSettings::default(),
            &metrics,
        );
        runtime
            .block_on(authenticator.authenticate(&token))
            .expect("valid");
        cached.bench_with_input(
            BenchmarkId::from_parameter(alg_name(alg)),
            &token,
            |b, token| {
                b.to_async(&runtime).iter(|| async {
                    authenticator
                        .authenticate(black_box(token))
                        .await
                        .expect("valid")
                });
            },
        );
    }
    cached.finish();
}

fn scope_check(c: &mut Criterion) {
    let (set, token) = setup(Algorithm::HS256);
    let principal = jwt::verify(&token, &[&set], unix_now(), 30).expect("valid");
    let authz = RouteAuthz {
        scopes: vec!["orders:read".into()],
        method_scopes: vec![(Method::POST, vec!["orders:write".into()])],
        require_claims: Vec::new(),
    };
    c.bench_function("scope_check", |b| {
        b.iter(|| {
            authz
                .check(black_box(&principal), black_box(&Method::POST))
                .expect("allowed")
        });
    });
}

fn route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for count in [10usize, 1_000, 10_000] {
        let routes: Vec<(RouteKey, usize)> = (0..count)
            .map(|i| {
                let key = RouteKey {
                    host: None,
                    path_prefix: format!("/svc{i}/api"),
                    methods: None,
                };
                (key, i)
            })
            .collect();
        let table = RouteTable::new(routes);
        let path = format!("/svc{}/api/items/42", count / 2);
        group.bench_with_input(BenchmarkId::from_parameter(count), &path, |b, path| {
            b.iter(|| match table.lookup(None, black_box(path), &Method::GET) {
                Match::Found(route) => *route,
                _ => usize::MAX,
            });
        });
    }
    group.finish();
}

criterion_group!(benches, verification, scope_check, route_matching);
criterion_main!(benches);
