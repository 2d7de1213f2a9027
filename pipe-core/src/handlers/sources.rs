//! Which handler answers an event, and whether the peer may call it.
//!
//! Handlers come from several sources, asked in a fixed order: the built-in
//! and Rust handlers of the [`Registry`], then forwards to local HTTP
//! upstreams, then executables in the handler directory. The first that has
//! the name answers. Before any of them, the node's access policy (if it has
//! one) decides whether this peer may call this handler at all.

use std::sync::Arc;

use super::policy::Policy;
use super::registry::{Handler, Registry};
use crate::wire::HandlerName;

/// A place handlers come from.
pub trait HandlerSource: Send + Sync + 'static {
    /// The handler for an event to `name` (its verb, noun and flattened
    /// name), if this source has one. Called per event, so a source may look
    /// things up afresh (files appear).
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>>;

    /// What this source offers, for `/_pipe/status`: handler names, or
    /// patterns such as `* files/...` for a forward.
    fn names(&self) -> Vec<String>;
}

impl HandlerSource for Registry {
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>> {
        Registry::lookup(self, name.as_str())
    }

    fn names(&self) -> Vec<String> {
        Registry::names(self).map(str::to_owned).collect()
    }
}

/// The verbs events carry (HEAD travels as `get`); a handler name starts
/// with one of them.
pub(crate) const VERBS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// How an event resolved.
pub enum Resolution {
    /// This handler answers it.
    Found(Arc<dyn Handler>),
    /// The policy refuses this peer this handler; the message says so.
    Denied(String),
    /// No source has a handler of that name.
    Missing,
}

/// All of a node's handler sources, in precedence order, and its policy.
#[derive(Default)]
pub struct Handlers {
    sources: Vec<Box<dyn HandlerSource>>,
    policy: Option<Policy>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("names", &self.names())
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

impl Handlers {
    /// Handlers from `registry` alone, open to every peer.
    pub fn new(registry: Registry) -> Self {
        Self {
            sources: vec![Box::new(registry)],
            policy: None,
        }
    }

    /// Adds a source, asked after those already added.
    pub fn with_source(mut self, source: impl HandlerSource) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Restricts which peer may call which handler.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The handler for `peer`'s event to `name`, or why there is none.
    ///
    /// An event whose verb is not one the pipe carries has no handler: the
    /// verb is part of the name the policy decides on, so a verb such as
    /// `get_files_x` would let noun `admin/secret` pass a `get_files_*` rule
    /// and reach whatever serves `admin/`.
    pub fn resolve(&self, peer: &str, name: &HandlerName) -> Resolution {
        if !VERBS.contains(&name.verb()) {
            return Resolution::Missing;
        }
        if let Some(policy) = &self.policy
            && !policy.allows(peer, name.as_str())
        {
            return Resolution::Denied(format!(
                "{peer:?} may not call {name} on this node (access policy)"
            ));
        }
        self.sources
            .iter()
            .find_map(|source| source.lookup(name))
            .map_or(Resolution::Missing, Resolution::Found)
    }

    /// Everything the node offers, source by source, in precedence order.
    pub fn names(&self) -> Vec<String> {
        self.sources.iter().flat_map(|s| s.names()).collect()
    }

    /// The access policy, if any.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::registry::Request;
    use crate::wire::Reply;

    fn resolve(handlers: &Handlers, peer: &str, verb: &str, noun: &str) -> Resolution {
        handlers.resolve(peer, &HandlerName::new(verb, noun))
    }

    struct Everything;

    impl HandlerSource for Everything {
        fn lookup(&self, _name: &HandlerName) -> Option<Arc<dyn Handler>> {
            Some(Arc::new(|_request: Request| async {
                Ok(Reply::bytes("text/plain", "fallback"))
            }))
        }

        fn names(&self) -> Vec<String> {
            vec!["* *".to_owned()]
        }
    }

    #[test]
    fn sources_are_asked_in_order_and_the_policy_comes_first() {
        let mut registry = Registry::new();
        registry.register("get_time", |_request: Request| async {
            Ok(Reply::bytes("text/plain", "registry"))
        });
        let handlers = Handlers::new(registry).with_source(Everything);
        assert!(matches!(
            resolve(&handlers, "p", "get", "time"),
            Resolution::Found(_)
        ));
        assert!(matches!(
            resolve(&handlers, "p", "get", "other"),
            Resolution::Found(_)
        ));
        assert_eq!(handlers.names(), ["get_time", "* *"]);

        let policy = Policy::parse(
            "[[allow]]\npeers = [\"ok-*\"]\nhandlers = [\"get_time\"]\n",
            "test",
        )
        .unwrap();
        let handlers = Handlers::new(Registry::new())
            .with_source(Everything)
            .with_policy(policy);
        assert!(matches!(
            resolve(&handlers, "ok-1", "get", "time"),
            Resolution::Found(_)
        ));
        let Resolution::Denied(message) = resolve(&handlers, "other", "get", "time") else {
            panic!("not denied")
        };
        assert!(
            message.contains("\"other\" may not call get_time"),
            "{message}"
        );
        assert!(matches!(
            resolve(&handlers, "ok-1", "post", "time"),
            Resolution::Denied(_)
        ));
    }

    #[test]
    fn a_verb_the_pipe_does_not_carry_cannot_smuggle_a_noun_past_the_policy() {
        let policy = Policy::parse(
            "[[allow]]\npeers = [\"*\"]\nhandlers = [\"get_files_*\"]\n",
            "test",
        )
        .unwrap();
        // `Everything` answers any noun, as a forward of `admin/` would.
        let handlers = Handlers::new(Registry::new())
            .with_source(Everything)
            .with_policy(policy);
        assert!(matches!(
            resolve(&handlers, "p", "get", "files/report"),
            Resolution::Found(_)
        ));
        assert!(matches!(
            resolve(&handlers, "p", "get_files_x", "admin/secret"),
            Resolution::Missing
        ));
        assert!(matches!(
            resolve(&handlers, "p", "GET", "files/report"),
            Resolution::Missing
        ));
    }
}
