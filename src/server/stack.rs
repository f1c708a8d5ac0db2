//! The composition root: the one place that knows the order of the layers.
//!
//! Read top to bottom, outermost first: [`build`] is the shared stack every
//! request runs through, [`dispatcher`] the routes and built-in endpoints
//! behind it, and [`route_stack`] one route's own layers down to the
//! upstream. Everything is built here once (at start-up, and again on
//! reload), never per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderName, Request};
use tower::ServiceBuilder;
use tower::util::{BoxCloneSyncService, Either};

use super::client_address::ClientAddressLayer;
use super::framing::RequestFramingLayer;
use super::limits::RequestLimitsLayer;
use super::request_deadline::{RequestDeadline, RequestDeadlineLayer};
use crate::access_log::{AccessLogLayer, MatchedRoute};
use crate::audit::AuditLog;
use crate::auth::forward::ForwardClaimsLayer;
use crate::auth::issue::TokenIssuer;
use crate::auth::login::Endpoints;
use crate::auth::upstream_token::UpstreamTokenLayer;
use crate::auth::{Authenticator, JwtAuthLayer};
use crate::body::{Body, HttpService};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::credentials::inject::InjectCredentialLayer;
use crate::error::{CatchPanicLayer, ErrorCode, GatewayError};
use crate::execution_key::{ExecutionKey, ExecutionKeyLayer};
use crate::grpc::GrpcRejectionLayer;
use crate::metrics::Metrics;
use crate::oauth_connections::OauthConnections;
use crate::oauth_connections::endpoints::{Endpoint as ConnectionEndpoint, EndpointService};
use crate::oauth_connections::inject::InjectConnectionLayer;
use crate::proxy::health::Targets;
use crate::proxy::{ConnectionSettings, ForwardHeadersLayer, Proxy, Upstream, UpstreamClient};
use crate::rate_limit::RateLimitLayer;
use crate::routes::{AuthMode, Dispatcher, RouteEntry, RouteSettings};
use crate::shared_state::RateLimiter;
use crate::token_use::TokenUseLayer;

/// What the stacks are built from, besides the config.
#[derive(Clone, Debug)]
pub struct Components {
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
    /// The users' OAuth connections, when configured.
    pub connections: Option<Arc<OauthConnections>>,
    /// Where upgraded connections (WebSocket) are joined.
    pub tunnels: Arc<crate::proxy::tunnel::Tunnels>,
    /// Exports request spans over OTLP, when configured.
    pub exporter: Option<Arc<crate::trace::Exporter>>,
    /// The rate-limit counters of each limited route, by route name.
    pub rate_limiters: HashMap<String, RateLimiter>,
    /// Signs the tokens minted for upstreams (`issuer.signing_kid`).
    pub token_issuer: Option<Arc<TokenIssuer>>,
}

/// What [`build`] makes.
#[derive(Debug)]
pub struct GatewayStack {
    /// The service that answers client requests.
    pub service: HttpService,
    /// The routes' active health checks.
    pub tasks: Vec<tokio::task::AbortHandle>,
    /// The `warden_upstream_up{route,target}` series this build reports.
    pub upstream_labels: Vec<(String, String)>,
}

/// A route's stack, or a built-in endpoint, as the dispatcher holds it.
type RouteService = RequestDeadline<HttpService>;

/// Builds the service that answers client requests: the shared stack, outermost first.
pub fn build(config: &Config, parts: &Components) -> GatewayStack {
    let mut background = Background::default();
    let dispatcher = dispatcher(config, parts, &mut background);
    let service = ServiceBuilder::new()
        // Outermost, so every response carries the key, rejections included.
        .layer(ExecutionKeyLayer::new(
            config.server.trust_execution_key_header,
        ))
        // Right after the key: the trace id is named beside it in every
        // log line and audit event, and the upstream continues the trace.
        .layer(crate::trace::TraceLayer::new(parts.exporter.clone()))
        // Before anything reads the client's address: behind trusted
        // proxies it is the one they forwarded, not theirs.
        .option_layer(ClientAddressLayer::new(&config.server.trusted_proxies))
        // Sees every request, so the access log and metrics count rejections too.
        .layer(AccessLogLayer::new(parts.metrics.clone()))
        // Inside the access log (which logs the grpc-status sent), outside
        // every refusal: a gRPC call refused by the gateway gets a gRPC status.
        .layer(GrpcRejectionLayer)
        // Inside the access log: a panic becomes a 500 that is logged and counted.
        .layer(CatchPanicLayer)
        // One framing only, before anything reads the body; outside the
        // limits, so only hyper's reading of the client's bytes is marked
        // as the client's fault and the limit's 413 stays a 413.
        .layer(RequestFramingLayer)
        // Cheap size checks before any path parsing or crypto.
        .layer(RequestLimitsLayer::new(
            config.server.max_header_bytes,
            config.server.max_body_bytes,
        ))
        // Authority check, path normalisation, then the built-in endpoint or
        // the route: 400, 404 and 405 are answered here.
        .service(dispatcher);
    GatewayStack {
        service: BoxCloneSyncService::new(service),
        tasks: background.tasks,
        upstream_labels: background.upstream_labels,
    }
}

/// What building the routes starts besides the stacks.
#[derive(Default)]
struct Background {
    tasks: Vec<tokio::task::AbortHandle>,
    upstream_labels: Vec<(String, String)>,
}

/// The built-in endpoints (by exact path) and the routes (by table).
fn dispatcher(
    config: &Config,
    parts: &Components,
    background: &mut Background,
) -> Dispatcher<RouteService> {
    let deadline = RequestDeadlineLayer::new(config.server.request_timeout);
    // No upstream series where no upstream can ever be called.
    let matched = |name: &str, upstream: bool| MatchedRoute {
        name: name.into(),
        metrics: if upstream {
            parts.metrics.for_route(name)
        } else {
            parts.metrics.for_endpoint(name)
        },
    };
    let mut builtin: Vec<(String, RouteEntry<RouteService>)> = parts
        .endpoints
        .paths()
        .into_iter()
        .map(|(path, endpoint)| {
            let service = ServiceBuilder::new()
                // The same deadline as a route's.
                .layer(deadline)
                .layer_fn(BoxCloneSyncService::new)
                // Revocation leaves an auth outcome to audit, as a route does.
                .layer(TokenUseLayer::for_endpoint(
                    endpoint.route_name(),
                    parts.audit.clone(),
                    config.audit.on_failure,
                ))
                .service(parts.endpoints.service(endpoint));
            let entry = RouteEntry {
                observed: matched(endpoint.route_name(), false),
                service,
            };
            (path, entry)
        })
        .collect();
    builtin.extend(connection_endpoints(config, parts));
    let claim_headers = claim_headers(config);
    let routes = config
        .routes
        .iter()
        .map(|route| {
            let entry = RouteEntry {
                observed: matched(&route.name, route.upstream != Upstream::Echo),
                service: route_stack(route, config, parts, &claim_headers, background),
            };
            (route.key.clone(), entry)
        })
        .collect();
    Dispatcher::new(routes, builtin)
}

/// `/oauth/{name}/connect`, `…/callback` and `…/connection` of every
/// connection: the callback is public (the provider sends the browser
/// there), the others need the user's token, audited as any token use.
fn connection_endpoints(
    config: &Config,
    parts: &Components,
) -> Vec<(String, RouteEntry<RouteService>)> {
    let Some(connections) = &parts.connections else {
        return Vec::new();
    };
    let deadline = RequestDeadlineLayer::new(config.server.request_timeout);
    let mut entries = Vec::new();
    for name in connections.names() {
        for endpoint in ConnectionEndpoint::ALL {
            let label = endpoint.route_name();
            let auth = endpoint.needs_token().then(|| {
                ServiceBuilder::new()
                    .layer(TokenUseLayer::for_endpoint(
                        label,
                        parts.audit.clone(),
                        config.audit.on_failure,
                    ))
                    .layer(JwtAuthLayer::new(
                        parts.authenticator.clone(),
                        crate::auth::RouteAuthz::default(),
                    ))
                    .layer_fn(BoxCloneSyncService::new)
            });
            let service = ServiceBuilder::new()
                .layer(deadline)
                .layer_fn(BoxCloneSyncService::new)
                .option_layer(auth)
                .layer_fn(BoxCloneSyncService::new)
                .service(EndpointService::new(connections.clone(), name, endpoint));
            let entry = RouteEntry {
                observed: MatchedRoute {
                    name: label.into(),
                    metrics: parts.metrics.for_route(label),
                },
                service,
            };
            entries.push((endpoint.path(name), entry));
        }
    }
    entries
}

/// Every header any route fills from claims: no client may send one, on any route.
fn claim_headers(config: &Config) -> Arc<[HeaderName]> {
    let mut names: Vec<HeaderName> = config
        .routes
        .iter()
        .flat_map(|r| r.forward.claims.iter().map(|(name, _)| name.clone()))
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names.into()
}

/// One route's stack, outermost first.
fn route_stack(
    route: &RouteSettings,
    config: &Config,
    parts: &Components,
    claim_headers: &Arc<[HeaderName]>,
    background: &mut Background,
) -> RouteService {
    // These take their inner stack boxed; a route without them calls the
    // next layer directly.
    let jwt = route.auth == AuthMode::Jwt;
    let limit = |before_auth: bool| {
        let settings = route.rate_limit.as_ref()?;
        if settings.key.needs_token() == before_auth {
            return None;
        }
        let limiter = parts.rate_limiters.get(&route.name)?.clone();
        let refused = parts.metrics.rate_limited.with_label_values(&[&route.name]);
        Some(RateLimitLayer::new(
            &route.name,
            settings,
            limiter,
            refused,
            jwt,
        ))
    };
    // A limit counted after auth is also advertised in front of it, so
    // auth's own refusals carry `RateLimit-Policy` as well.
    let advertise = route
        .rate_limit
        .as_ref()
        .filter(|settings| settings.key.needs_token() && jwt)
        .map(|settings| {
            let refused = parts.metrics.rate_limited.with_label_values(&[&route.name]);
            RateLimitLayer::advertising(&route.name, settings, refused)
        });
    let limit_before_auth = limit(true);
    let limit_after_auth = limit(false);
    let auth = jwt.then(|| {
        ServiceBuilder::new()
            .layer(JwtAuthLayer::new(
                parts.authenticator.clone(),
                route.authz.clone(),
            ))
            .layer_fn(BoxCloneSyncService::new)
    });
    // Counts the decision and audits the token use, from the outcome auth
    // (or a rate limit) leaves on every answer; outside both so that
    // `on_failure = "refuse"` answers before a token is used.
    let token_use = jwt.then(|| {
        TokenUseLayer::for_route(
            &route.name,
            &parts.metrics,
            parts.audit.clone(),
            config.audit.on_failure,
        )
    });
    let upstream_token = route.upstream_token.as_ref().and_then(|settings| {
        let issuer = parts.token_issuer.clone()?;
        let minted = parts
            .metrics
            .upstream_tokens_minted
            .with_label_values(&[&route.name]);
        // The config names only public encryption keys here; were one
        // missing, the layer refuses rather than send the token in clear.
        let encrypt_to = settings.encrypt_to.as_ref().map(|kid| {
            config
                .encryption_keys
                .iter()
                .find(|key| key.kid() == kid)
                .cloned()
        });
        Some(UpstreamTokenLayer::new(
            settings.clone(),
            issuer,
            encrypt_to,
            minted,
        ))
    });
    let inject = route.inject.as_ref().map(|inject| {
        ServiceBuilder::new()
            .layer(InjectCredentialLayer::new(
                inject.clone(),
                parts.credentials.clone(),
                config.server.max_body_bytes,
            ))
            .layer_fn(BoxCloneSyncService::new)
    });
    let inject_connection = route.inject_connection.as_ref().and_then(|inject| {
        let connections = parts.connections.clone()?;
        Some(
            ServiceBuilder::new()
                .layer(InjectConnectionLayer::new(
                    inject.clone(),
                    connections,
                    config.server.max_body_bytes,
                ))
                .layer_fn(BoxCloneSyncService::new),
        )
    });
    ServiceBuilder::new()
        // Outermost: bounds everything the request waits for once routed.
        .layer(RequestDeadlineLayer::for_route(
            config.server.request_timeout,
            route.timeout,
        ))
        // Boxed once here: the dispatcher holds every route as one type.
        .layer_fn(BoxCloneSyncService::new)
        .option_layer(token_use)
        // Limits that need no token (client_ip, header, route): before the
        // signature check, so a flood costs no verification.
        .option_layer(limit_before_auth)
        .option_layer(advertise)
        // 401/403 before anything is rewritten or reaches the upstream.
        .option_layer(auth)
        // Limits keyed by the token (sub, claim): after it is verified, so
        // a forged token drains no one's bucket.
        .option_layer(limit_after_auth)
        // Hop-by-hop headers out (with every header the client's Connection
        // names), X-Forwarded-* and X-Execution-Key in. Before the claims and
        // the credential, so a client cannot name the headers they set.
        .layer(
            ForwardHeadersLayer::new(route.connection.http2).with_upgrades(route.upgrades.clone()),
        )
        // On every route, public ones too: client-sent copies of any route's
        // forwarded claim headers go, the route's claims come in, and the
        // client's token goes unless the route keeps it.
        .layer(ForwardClaimsLayer::new(
            route.forward.clone(),
            claim_headers.clone(),
        ))
        // After the header policy, which removed the client's own token:
        // the upstream gets one minted for it alone.
        .option_layer(upstream_token)
        // Innermost, after the header policy: nothing after it can remove
        // the credential, and nothing before it sees it.
        .option_layer(inject)
        // Or the calling user's own token at an OAuth connection, in the
        // same place and for the same reason.
        .option_layer(inject_connection)
        .service(upstream(route, parts, background))
}

/// The route's upstream: its targets (health-checked when configured)
/// through the pooled client of its connection settings.
fn upstream(
    route: &RouteSettings,
    parts: &Components,
    background: &mut Background,
) -> Either<Proxy, BoxCloneSyncService<Request<Body>, http::Response<Body>, Infallible>> {
    let Some(client) = parts.clients.get(&route.connection).cloned() else {
        // The generation builds a client for every route's settings.
        tracing::error!(route = %route.name, "no upstream client for the route's connection settings");
        return Either::Right(BoxCloneSyncService::new(tower::service_fn(
            |request: Request<Body>| async move {
                let key = request.extensions().get::<ExecutionKey>();
                let error =
                    GatewayError::new(ErrorCode::Internal, "the route has no upstream client");
                Ok::<_, Infallible>(error.into_response(key))
            },
        )));
    };
    let targets = match &route.upstream {
        Upstream::Echo => None,
        Upstream::Http(uris) => {
            let targets = Arc::new(Targets::new(
                &route.name,
                uris,
                route.health.clone(),
                &parts.metrics.upstream_up,
            ));
            if route.health.path.is_some() {
                let checks = tokio::spawn(targets.clone().check_forever(client.clone()));
                background.tasks.push(checks.abort_handle());
            }
            background
                .upstream_labels
                .extend(targets.labels(&route.name));
            Some(targets)
        }
    };
    let strip = route.strip_prefix.then(|| route.key.path_prefix.clone());
    Either::Left(
        Proxy::new(targets, strip, client).with_tunnels(parts.tunnels.clone(), &route.name),
    )
}
