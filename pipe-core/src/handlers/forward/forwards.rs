//! The forwards a node is configured with, as a handler source: the
//! longest prefix that covers an event's noun answers it.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use super::proxy::{Forward, UpstreamClient};
use super::route::{Route, is_noun_segment, parse_prefix, parse_upstream};
use crate::handlers::registry::Handler;
use crate::handlers::sources::HandlerSource;
use crate::wire::HandlerName;

/// How long an idle pooled connection to an upstream is kept: shorter than
/// the keep-alive timeouts of common servers (Node.js closes after 5 s), so
/// a request rarely picks a connection the upstream is just closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default cap on requests to upstreams in progress at once, for all
/// forwards of a node together.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 256;

/// The forwards a node is configured with: a [`HandlerSource`] that answers
/// events whose noun falls under a forwarded prefix by asking a local HTTP
/// upstream. See the `forward` module's documentation for the exact rules.
pub struct Forwards {
    /// In the order configured; lookups pick the longest matching prefix.
    pub(super) routes: Vec<(Arc<Route>, Arc<dyn Handler>)>,
}

impl std::fmt::Debug for Forwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Forwards {
    /// Forwards for `specs`, each a prefix and an upstream URL such as
    /// `("files/", "http://127.0.0.1:8080/")`. Fails, naming the spec, on a
    /// prefix that is not noun segments, a prefix given twice, or a URL that
    /// is not `http://HOST[:PORT][/PATH]` without query, fragment or user.
    pub fn new(specs: &[(String, String)]) -> Result<Self, String> {
        Self::with_max_connections(specs, DEFAULT_MAX_UPSTREAM_CONNECTIONS)
    }

    /// [`Forwards::new`], with at most `max` requests to upstreams at once
    /// (so at most `max` connections, busy or pooled): more wait for a
    /// place within their deadline, then get 503.
    pub fn with_max_connections(specs: &[(String, String)], max: usize) -> Result<Self, String> {
        let places = Arc::new(Semaphore::new(max));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: UpstreamClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut routes: Vec<(Arc<Route>, Arc<dyn Handler>)> = Vec::with_capacity(specs.len());
        for (prefix, url) in specs {
            let spec = format!("{prefix}={url}");
            let prefix =
                parse_prefix(prefix).map_err(|error| format!("forward {spec:?}: {error}"))?;
            let (authority, base) =
                parse_upstream(url).map_err(|error| format!("forward {spec:?}: {error}"))?;
            if routes.iter().any(|(route, _)| route.prefix == prefix) {
                return Err(format!(
                    "forward {spec:?}: the prefix {prefix}/ is already forwarded"
                ));
            }
            let route = Arc::new(Route {
                prefix,
                authority,
                base,
            });
            let handler = Arc::new(Forward {
                route: route.clone(),
                client: client.clone(),
                places: places.clone(),
            });
            routes.push((route, handler));
        }
        Ok(Self { routes })
    }
}

impl Forwards {
    /// The forward that answers `noun`, if one does.
    fn route(&self, noun: &str) -> Option<&(Arc<Route>, Arc<dyn Handler>)> {
        // The sending node checked the noun; a peer that skipped the check
        // must not smuggle `..` or `?` into an upstream path.
        if !noun.split('/').all(is_noun_segment) {
            return None;
        }
        // Prefixes match whole segments, so the longest string is the most
        // specific prefix.
        self.routes
            .iter()
            .filter(|(route, _)| route.matches(noun))
            .max_by_key(|(route, _)| route.prefix.len())
    }

    /// The upstream URI the forward answering `noun` would ask for `args`
    /// and `query`; `None` when no forward answers it.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn upstream_uri(
        &self,
        noun: &str,
        args: &[String],
        query: &str,
    ) -> Option<Result<http::Uri, String>> {
        let (route, _) = self.route(noun)?;
        Some(route.upstream_uri(noun, args, query))
    }
}

impl HandlerSource for Forwards {
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>> {
        self.route(name.noun()).map(|(_, handler)| handler.clone())
    }

    fn names(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|(route, _)| format!("* {}/... -> {}", route.prefix, route.url()))
            .collect()
    }
}
