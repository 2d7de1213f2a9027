//! The cluster's NATS subjects, all under `rp.<cluster name>.`, so one
//! NATS deployment can carry several clusters and a node's permissions can
//! be limited to its own cluster's subjects (`rp.<cluster name>.>` plus its
//! inboxes, `_INBOX.>`).
//!
//! | subject | who subscribes | what travels |
//! |---|---|---|
//! | `rp.<c>.client.<name>` | the node holding client `name` (queue group `holders`) | a forwarded request's `Event` frame |
//! | `rp.<c>.held.<name>` | every node | "node N now holds `name`": an older holder lets go |
//! | `rp.<c>.peers` | every node | "which clients do you hold?", answered on the asker's inbox |
//! | `rp.<c>.nodes` | every node | each node's heartbeat |

/// The queue group of the nodes serving one client name: whichever holds
/// it answers, and only one does.
pub(super) const HOLDERS: &str = "holders";

/// The subjects of one cluster.
#[derive(Debug, Clone)]
pub(super) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects of the cluster named `cluster` (a checked name: see
    /// [`is_cluster_name`]).
    pub(super) fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("rp.{cluster}"),
        }
    }

    /// Where requests for client `name` go.
    pub(super) fn client(&self, name: &str) -> String {
        format!("{}.client.{}", self.prefix, token(name))
    }

    /// Where a node announces that it now holds client `name`.
    pub(super) fn held(&self, name: &str) -> String {
        format!("{}.held.{}", self.prefix, token(name))
    }

    /// Every announcement of a holder.
    pub(super) fn all_held(&self) -> String {
        format!("{}.held.*", self.prefix)
    }

    /// Where the clients of the cluster are asked for.
    pub(super) fn peers(&self) -> String {
        format!("{}.peers", self.prefix)
    }

    /// Where nodes send their heartbeats.
    pub(super) fn nodes(&self) -> String {
        format!("{}.nodes", self.prefix)
    }
}

/// Whether `name` may name a cluster (or a node): 1 to 64 letters, digits,
/// `-` and `_`, so it is one NATS subject token as it is.
pub fn is_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A client name as one subject token: letters, digits, `-` and `_` stay;
/// every other byte (`.`, `*`, `>`, spaces, anything else a certificate
/// may hold) becomes `%XX`, so no name can reach another's subject or match
/// a wildcard.
fn token(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("%{byte:02X}"));
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_become_one_token_each() {
        let subjects = Subjects::new("prod");
        assert_eq!(subjects.client("client-1"), "rp.prod.client.client-1");
        assert_eq!(subjects.client("a.b"), "rp.prod.client.a%2Eb");
        assert_eq!(subjects.client("*"), "rp.prod.client.%2A");
        assert_eq!(subjects.client(">"), "rp.prod.client.%3E");
        assert_eq!(subjects.client("a b%"), "rp.prod.client.a%20b%25");
        // Distinct names stay distinct: `%` itself is escaped.
        assert_ne!(subjects.client("a.b"), subjects.client("a%2Eb"));
        assert_eq!(subjects.held("x.y"), "rp.prod.held.x%2Ey");
    }

    #[test]
    fn cluster_names_are_one_plain_token() {
        assert!(is_cluster_name("restpipe"));
        assert!(is_cluster_name("eu-west_1"));
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(!is_cluster_name(bad), "{bad:?}");
        }
    }
}
