//! The composition root: the one place that knows the order of the layers.
//!
//! Read top to bottom, outermost first. The shared stack runs for every
//! request; behind the router each route has its own stack, built here once
//! (at start-up, and again on reload), never per request.

use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer, ServiceBuilder};

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::forward::ForwardClaimsLayer;
use crate::auth::login::{Endpoint, Endpoints};
use crate::auth::{Authenticator, JwtAuthLayer};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::credentials::inject::InjectCredentialLayer;
use crate::error::CatchPanicLayer;
use crate::execution_key::ExecutionKeyLayer;
use crate::metrics::Metrics;
use crate::observe::{ObserveLayer, ObservedRoute};
use crate::proxy::health::Targets;
use crate::proxy::{ConnectionSettings, ForwardHeadersLayer, Proxy, Upstream, UpstreamClient};
use crate::router::{HttpService, RouteEntry, Router};
use crate::routes::{AuthMode, RouteSettings, RouteTable};
use crate::server::limits::RequestLimitsLayer;

/// What the stacks are built from, besides the config.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Metric families.
    pub metrics: Metrics,
    /// Pooled upstream clients, by connection settings.
    pub clients: HashMap<ConnectionSettings, UpstreamClient>,
    /// Verifies tokens for every jwt route.
    pub authenticator: Arc<Authenticator>,
    /// The audit log.
    pub audit: AuditLog,
    /// Login, revocation and JWKS.
    pub endpoints: Endpoints,
    /// Upstream credentials.
    pub credentials: Arc<Credentials>,
    /// `server.max_body_bytes`, for body injection.
    pub max_body_bytes: u64,
}

/// What [`build`] makes.
#[derive(Debug)]
pub struct Built {
    /// The service that answers client requests.
    pub service: HttpService,
    /// The routes' active health checks.
    pub tasks: Vec<tokio::task::AbortHandle>,
    /// The `warden_upstream_up{route,target}` series this build reports.
    pub upstream_labels: Vec<(String, String)>,
}

/// Builds the service that answers client requests.
pub fn build(config: &Config, shared: &Shared) -> Built {
    let Shared {
        metrics, endpoints, ..
    } = shared;
    // Every header any route fills from claims: no client may send one.
    let mut names: Vec<http::HeaderName> = config
        .routes
        .iter()
        .flat_map(|r| r.forward.claims.iter().map(|(name, _)| name.clone()))
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let claim_headers: Arc<[http::HeaderName]> = names.into();
    let mut tasks = Vec::new();
    let mut upstream_labels = Vec::new();
    let routes = config
        .routes
        .iter()
        .map(|route| {
            let entry = RouteEntry {
                observed: ObservedRoute {
                    name: route.name.as_str().into(),
                    metrics: metrics.for_route(&route.name),
                },
                service: route_stack(
                    route,
                    shared,
                    &claim_headers,
                    &mut tasks,
                    &mut upstream_labels,
                ),
            };
            (route.key.clone(), entry)
        })
        .collect();
    let endpoint_entries: HashMap<Endpoint, RouteEntry> =
        [Endpoint::Login, Endpoint::Revoke, Endpoint::Jwks]
            .into_iter()
            .map(|endpoint| {
                let entry = RouteEntry {
                    observed: ObservedRoute {
                        name: endpoint.route_name().into(),
                        metrics: metrics.for_route(endpoint.route_name()),
                    },
                    service: BoxCloneSyncService::new(endpoints.service(endpoint)),
                };
                (endpoint, entry)
            })
            .collect();
    let router = Router::new(
        RouteTable::new(routes),
        endpoints.clone(),
        endpoint_entries,
        config.server.request_timeout,
    );

    let service = ServiceBuilder::new()
        // Outermost, so every response carries the key, rejections included.
        .layer(ExecutionKeyLayer::new(
            config.server.trust_execution_key_header,
        ))
        // Sees every request, so the access log and metrics count rejections too.
        .layer(ObserveLayer::new(metrics.clone()))
        // Inside the observers: a panic becomes a 500 that is logged and counted.
        .layer(CatchPanicLayer)
        // Cheap size checks before any path parsing or crypto.
        .layer(RequestLimitsLayer::new(
            config.server.max_header_bytes,
            config.server.max_body_bytes,
        ))
        .service(router);
    Built {
        service: BoxCloneSyncService::new(service),
        tasks,
        upstream_labels,
    }
}

/// One route's stack: auth, then the header policy, then the upstream.
fn route_stack(
    route: &RouteSettings,
    shared: &Shared,
    claim_headers: &Arc<[http::HeaderName]>,
    tasks: &mut Vec<tokio::task::AbortHandle>,
    upstream_labels: &mut Vec<(String, String)>,
) -> HttpService {
    let Shared {
        metrics,
        clients,
        authenticator,
        audit,
        ..
    } = shared;
    let strip = route.strip_prefix.then(|| route.key.path_prefix.clone());
    let client = match clients.get(&route.connection) {
        Some(client) => client.clone(),
        None => {
            // The generation builds a client for every route's settings.
            tracing::error!(route = %route.name, "no upstream client for the route's connection settings");
            return BoxCloneSyncService::new(tower::service_fn(
                |request: http::Request<crate::body::Body>| async move {
                    let key = request
                        .extensions()
                        .get::<crate::execution_key::ExecutionKey>()
                        .cloned();
                    Ok::<_, std::convert::Infallible>(
                        crate::error::GatewayError::new(
                            crate::error::ErrorCode::Internal,
                            "the route has no upstream client",
                        )
                        .into_response(key.as_ref()),
                    )
                },
            ));
        }
    };
    let targets = match &route.upstream {
        Upstream::Echo => None,
        Upstream::Http(uris) => {
            let targets = Arc::new(Targets::new(
                &route.name,
                uris,
                route.health.clone(),
                &metrics.upstream_up,
            ));
            if route.health.path.is_some() {
                tasks.push(
                    tokio::spawn(targets.clone().check_forever(client.clone())).abort_handle(),
                );
            }
            upstream_labels.extend(targets.labels(&route.name));
            Some(targets)
        }
    };
    let proxy = Proxy::new(targets, strip, route.timeout, client);
    // Innermost, after the header policy: nothing after it can remove the
    // credential, and nothing before it sees it.
    // Without injection the proxy is called directly, not through a box.
    let proxy = match &route.inject {
        Some(inject) => Either::Left(BoxCloneSyncService::new(
            InjectCredentialLayer::new(
                inject.clone(),
                shared.credentials.clone(),
                shared.max_body_bytes,
            )
            .layer(BoxCloneSyncService::new(proxy)),
        )),
        None => Either::Right(proxy),
    };
    let forward = ServiceBuilder::new()
        // Hop-by-hop headers out (with every header the client's Connection
        // names), X-Forwarded-* and X-Execution-Key in. First, so a client
        // cannot name the headers the next layers set.
        .layer(ForwardHeadersLayer::new(route.connection.http2))
        // On every route, public ones too: client-sent copies of any route's
        // forwarded claim headers go, the route's claims come in, and the
        // client's token goes unless the route keeps it.
        .layer(ForwardClaimsLayer::new(
            route.forward.clone(),
            claim_headers.clone(),
        ))
        .service(proxy);
    match route.auth {
        // 401/403 before anything is rewritten or reaches the upstream.
        AuthMode::Jwt => BoxCloneSyncService::new(
            JwtAuthLayer::new(
                authenticator.clone(),
                route.authz.clone(),
                &route.name,
                metrics.clone(),
                audit.clone(),
            )
            .layer(BoxCloneSyncService::new(forward)),
        ),
        AuthMode::None => BoxCloneSyncService::new(forward),
    }
}
