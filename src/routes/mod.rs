//! Routes: what a request is matched on, and the dispatcher that runs the
//! matched route's stack.
//!
//! - [`path`]: the one normalisation of a request's path;
//! - [`authority`]: the one reading of the authority (`Host`, `:authority`);
//! - [`table`]: host, longest whole-segment prefix, then method;
//! - [`dispatch`]: the last shared service, in front of the route stacks.
//!
//! [`RouteSettings`] is one `[[routes]]` entry as the composition root builds
//! its stack from it: it gathers the settings of the concerns a route uses
//! (auth, credentials, the proxy), each owned by its concern.

pub mod authority;
pub mod dispatch;
pub mod path;
pub mod table;

pub use dispatch::{Dispatcher, RouteEntry};
pub use path::{PathError, normalize_path};
pub use table::{Match, RouteKey, RouteTable};

/// Whether a route requires a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid JWT is required (the default).
    Jwt,
    /// A public route: no token is read.
    None,
}

/// One `[[routes]]` entry, validated.
#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// Unique name; the `route` label of metrics and logs.
    pub name: String,
    /// What the route is matched on.
    pub key: RouteKey,
    /// Where matched requests go.
    pub upstream: crate::proxy::Upstream,
    /// Remove `path_prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// How long the upstream may take to answer (capped by `request_timeout`).
    pub timeout: std::time::Duration,
    /// Whether a token is required.
    pub auth: AuthMode,
    /// What a token must hold to use the route.
    pub authz: crate::auth::RouteAuthz,
    /// Claims towards the upstream; the client's token kept or not.
    pub forward: crate::auth::forward::ForwardSettings,
    /// The upstream credential injected, if any.
    pub inject: Option<crate::credentials::inject::InjectSettings>,
    /// The calling user's token at an OAuth connection, if injected.
    pub inject_connection: Option<crate::oauth_connections::inject::InjectConnectionSettings>,
    /// The token minted for the upstream, if any.
    pub upstream_token: Option<crate::auth::upstream_token::UpstreamTokenSettings>,
    /// The route's rate limit, if any.
    pub rate_limit: Option<crate::rate_limit::RateLimitSettings>,
    /// The `Upgrade` protocols tunnelled to the upstream (`websocket` by
    /// default), lowercase.
    pub upgrades: std::sync::Arc<[String]>,
    /// How the upstream is reached: extra trust root, TLS name, HTTP/2.
    pub connection: crate::proxy::ConnectionSettings,
    /// When a target counts as down, and how it is checked.
    pub health: crate::proxy::health::HealthSettings,
}
