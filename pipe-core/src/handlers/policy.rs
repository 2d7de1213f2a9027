//! Access control by identity: which peers may call which handlers, in the
//! spirit of DIRAC's per-method `auth_` lists.
//!
//! A policy file holds `[[allow]]` rules, each naming peers and handlers
//! (shell-style wildcards `*` and `?`). Once a node has a policy, everything
//! not allowed is refused (403, return code 253):
//!
//! ```toml
//! [[allow]]
//! peers = ["branch-*"]
//! handlers = ["get_time", "get_files_*"]
//!
//! [[allow]]
//! peers = ["hq"]
//! handlers = ["*"]
//! ```
//!
//! On a server node the peers are client names; on a client node the one
//! peer is the server, so a client can restrict what the server may call.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a policy file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("policy {origin}: {message}")]
    Invalid {
        /// The file (or other origin).
        origin: String,
        /// What is wrong, with line and column where TOML says.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<Rule>,
}

/// One `[[allow]]` rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Peer identities (wildcards allowed).
    pub peers: Vec<String>,
    /// Handler names (wildcards allowed).
    pub handlers: Vec<String>,
}

/// A parsed policy: deny unless a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Invalid {
            origin: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        for (i, rule) in file.allow.iter().enumerate() {
            if rule.peers.is_empty() || rule.handlers.is_empty() {
                return Err(PolicyError::Invalid {
                    origin: origin.to_owned(),
                    message: format!("rule {} allows nothing: it needs peers and handlers", i + 1),
                });
            }
        }
        Ok(Self { rules: file.allow })
    }

    /// Whether `peer` may call `handler`.
    pub fn allows(&self, peer: &str, handler: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.peers.iter().any(|p| wildcard(p, peer))
                && rule.handlers.iter().any(|h| wildcard(h, handler))
        })
    }

    /// The rules, for status and logs.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Shell-style match: `*` any run, `?` any one character. The one matcher
/// of rules naming peers and handlers, here and in the local API's tokens.
pub(crate) fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` is always a wildcard, even against a `*` in the text: taken
        // as a literal there, it would leave nothing to backtrack to.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard("get_*", "get_time"));
        assert!(!wildcard("get_*", "post_time"));
        assert!(wildcard("branch-?", "branch-7"));
        assert!(!wildcard("branch-?", "branch-17"));
        assert!(wildcard("*_files_*", "get_files_report"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("", ""));
        assert!(!wildcard("", "x"));
    }

    #[test]
    fn a_star_in_the_pattern_is_a_wildcard_even_against_a_star_in_the_name() {
        // Found by the policy_differential fuzz target: the star matched
        // the name's `*` as a literal, and the match failed with no star to
        // backtrack to.
        assert!(wildcard("*b", "*ab"));
        assert!(wildcard("get_*_x", "get_*_y_x"));
        assert!(wildcard("**x", "*x*x"));
        assert!(!wildcard("*a", "*b"));
    }

    #[test]
    fn deny_unless_allowed() {
        let policy = Policy::parse(
            "[[allow]]\npeers = [\"branch-*\"]\nhandlers = [\"get_time\", \"get_files_*\"]\n\n[[allow]]\npeers = [\"hq\"]\nhandlers = [\"*\"]\n",
            "test",
        )
        .unwrap();
        assert!(policy.allows("branch-7", "get_time"));
        assert!(policy.allows("branch-7", "get_files_report"));
        assert!(!policy.allows("branch-7", "post_upload"));
        assert!(policy.allows("hq", "post_upload"));
        assert!(!policy.allows("stranger", "get_time"));
        let empty = Policy::parse("", "empty").unwrap();
        assert!(
            !empty.allows("hq", "get_time"),
            "a policy with no rules denies all"
        );
    }

    #[test]
    fn bad_policies_say_why() {
        let error = Policy::parse("[[allow]]\npeers = [\"a\"]\n", "p.toml").unwrap_err();
        assert!(error.to_string().contains("policy p.toml"), "{error}");
        let error =
            Policy::parse("[[allow]]\npeers = []\nhandlers = [\"*\"]\n", "p.toml").unwrap_err();
        assert!(error.to_string().contains("allows nothing"), "{error}");
        let error = Policy::parse("[[deny]]\npeers = [\"a\"]\n", "p.toml").unwrap_err();
        assert!(error.to_string().contains("deny"), "{error}");
    }
}
