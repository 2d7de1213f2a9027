//! Local API tokens: who, among the programs that can reach a node's local
//! front, may use it, and for what.
//!
//! The token file (`--api-tokens`) holds named tokens, each stored as the
//! SHA-256 of its secret (so the file, a backup of it or a look over an
//! operator's shoulder gives nobody a usable token), the handlers it may call
//! and, on a server node, the clients it may reach. Patterns are the access
//! policy's shell-style wildcards (`*`, `?`):
//!
//! ```toml
//! [[token]]
//! name = "web-frontend"
//! sha256 = "4d6f0c9e..."          # 64 hex digits: SHA-256 of the secret
//! handlers = ["get_*"]
//! clients = ["web-*"]             # server nodes only; ["*"] for every client
//! ```
//!
//! `pipe-server token new NAME --handlers ... --clients ...` (or
//! `pipe-client token new`) makes a secret of 256 random bits and prints
//! it once, with its entry ([`NewToken`]). Only such high-entropy secrets
//! belong here: an unsalted SHA-256 of a guessable password could be found
//! from the file by trying guesses.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::handlers::wildcard;
use crate::wire::Side;

/// Bytes of randomness in a new token's secret: 256 bits, beyond guessing
/// even with the file's digest in hand.
const SECRET_BYTES: usize = 32;
/// What every secret `token new` makes begins with, so a secret scanner (or
/// a person) can tell a restpipe token from other strings.
pub const TOKEN_PREFIX: &str = "rpt_";

/// Why a token file, or a new token, is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read API token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid token file.
    #[error("API token file {origin}: {message}")]
    Invalid {
        /// The file (or other origin).
        origin: String,
        /// What is wrong, with line and column where TOML says.
        message: String,
    },
    /// A new token's name or scope is not valid.
    #[error("cannot make that token: {0}")]
    NotMade(String),
    /// The system gave no randomness for a new secret.
    #[error("no randomness for a new token: the system's random source failed")]
    Random,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

/// One `[[token]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    handlers: Vec<String>,
    clients: Option<Vec<String>>,
}

/// One token of the file: its name (what logs show, never the secret), the
/// digest of its secret and its scope.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    name: String,
    digest: [u8; 32],
    handlers: Vec<String>,
    /// `None` on a client node, whose one peer is its server.
    clients: Option<Vec<String>>,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("digest", &"MASKED")
            .field("handlers", &self.handlers)
            .field("clients", &self.clients)
            .finish()
    }
}

impl ApiToken {
    /// The token's name, for logs and messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why this token may not call `handler` on peer `peer` (a client name
    /// on a server node; ignored on a client node), or `None` if it may.
    pub fn refusal(&self, handler: &str, peer: &str) -> Option<String> {
        if !self.handlers.iter().any(|p| wildcard(p, handler)) {
            return Some(format!("API token {:?} may not call {handler}", self.name));
        }
        match &self.clients {
            Some(clients) if !clients.iter().any(|p| wildcard(p, peer)) => Some(format!(
                "API token {:?} may not reach client {peer:?}",
                self.name
            )),
            _ => None,
        }
    }

    /// Whether the token covers every handler and every client: what the
    /// node-wide operations (purging jobs) ask for.
    pub fn is_unrestricted(&self) -> bool {
        let all = |patterns: &[String]| patterns.iter().any(|p| p.chars().all(|c| c == '*'));
        all(&self.handlers) && self.clients.as_deref().is_none_or(all)
    }
}

/// A parsed token file.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<Arc<ApiToken>>,
}

impl ApiTokens {
    /// Reads and parses the token file of a node on `side`.
    pub fn load(path: &Path, side: Side) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), side)
    }

    /// Parses token file text for a node on `side`; `origin` names it in
    /// errors.
    pub fn parse(text: &str, origin: &str, side: Side) -> Result<Self, TokenError> {
        let invalid = |message: String| TokenError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let file: File =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
        let mut names = HashSet::new();
        let mut tokens: Vec<Arc<ApiToken>> = Vec::new();
        for (index, entry) in file.token.into_iter().enumerate() {
            let token = validate(entry, index + 1, side).map_err(invalid)?;
            if !names.insert(token.name.clone()) {
                return Err(invalid(format!(
                    "token name {:?} is used twice",
                    token.name
                )));
            }
            if let Some(same) = tokens.iter().find(|t| t.digest == token.digest) {
                return Err(invalid(format!(
                    "tokens {:?} and {:?} have the same sha256: one secret would go by two names",
                    same.name, token.name
                )));
            }
            tokens.push(Arc::new(token));
        }
        Ok(Self { tokens })
    }

    /// The token whose secret is `presented`, if any.
    ///
    /// The secret is hashed first and digests are compared, never secrets:
    /// a caller cannot steer the digest of what it sends toward a stored
    /// one byte by byte (that takes SHA-256 preimages), so even a comparison
    /// whose time leaked where the first difference is would tell it nothing
    /// about a secret. The comparison is constant-time all the same
    /// (`subtle`), and every entry is compared, so the time does not say
    /// which one matched either.
    pub fn find(&self, presented: &str) -> Option<Arc<ApiToken>> {
        let digest = sha256(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token.clone());
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none (then every request but health is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Checks one entry (the `index`th) and makes it a token.
fn validate(entry: Entry, index: usize, side: Side) -> Result<ApiToken, String> {
    let Entry {
        name,
        sha256,
        handlers,
        clients,
    } = entry;
    if !is_token_name(&name) {
        return Err(format!(
            "token {index}: name {name:?} may contain only letters, digits, '_', '-' and '.'"
        ));
    }
    let digest = parse_digest(&sha256).ok_or_else(|| {
        format!(
            "token {name:?}: sha256 must be 64 hexadecimal digits, the SHA-256 of the secret (as `token new` prints it)"
        )
    })?;
    if handlers.is_empty() {
        return Err(format!(
            "token {name:?} allows nothing: it needs handlers ([\"*\"] for all)"
        ));
    }
    let clients = match (side, clients) {
        (Side::Server, Some(clients)) if !clients.is_empty() => Some(clients),
        (Side::Server, _) => {
            return Err(format!(
                "token {name:?} names no clients: a server node's token needs clients ([\"*\"] for every client)"
            ));
        }
        (Side::Client, None) => None,
        (Side::Client, Some(_)) => {
            return Err(format!(
                "token {name:?} names clients, but a client node pipes only to its server: its tokens name handlers only"
            ));
        }
    };
    Ok(ApiToken {
        name,
        digest,
        handlers,
        clients,
    })
}

/// Token names: `[A-Za-z0-9_.-]+`, like node names, since logs show them.
fn is_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// 64 hex digits (either case) as 32 bytes.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

fn sha256(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token just made: its secret, to be shown once, and its entry for the
/// token file, which holds only the secret's digest.
#[derive(Clone)]
pub struct NewToken {
    /// The secret a caller sends as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// The `[[token]]` entry, TOML.
    pub entry: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("secret", &"MASKED")
            .field("entry", &self.entry)
            .finish()
    }
}

impl NewToken {
    /// Makes a token named `name` for a node on `side`, allowed `handlers`
    /// and (server nodes) `clients`, checked as the node will check its
    /// file.
    pub fn generate(
        side: Side,
        name: &str,
        handlers: &[String],
        clients: &[String],
    ) -> Result<Self, TokenError> {
        let mut random = [0u8; SECRET_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| TokenError::Random)?;
        let secret = format!("{TOKEN_PREFIX}{}", hex(&random));
        // JSON strings are TOML basic strings (the same escapes), and the
        // one serializer at hand; the parse below proves the entry reads
        // back.
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let list = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
            format!("[{}]", items.join(", "))
        };
        let mut entry = format!(
            "[[token]]\nname = {}\nsha256 = \"{}\"\nhandlers = {}\n",
            quoted(name),
            hex(&sha256(&secret)),
            list(handlers),
        );
        if !clients.is_empty() {
            entry.push_str(&format!("clients = {}\n", list(clients)));
        }
        match ApiTokens::parse(&entry, "(new)", side) {
            Ok(_) => Ok(Self { secret, entry }),
            Err(TokenError::Invalid { message, .. }) => Err(TokenError::NotMade(message)),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "rpt_test-secret";

    fn digest_of(secret: &str) -> String {
        hex(&sha256(secret))
    }

    fn server_file() -> String {
        format!(
            r#"
[[token]]
name = "web"
sha256 = "{}"
handlers = ["get_*"]
clients = ["web-*"]

[[token]]
name = "ops"
sha256 = "{}"
handlers = ["*"]
clients = ["*"]
"#,
            digest_of(SECRET),
            digest_of("rpt_ops").to_uppercase(),
        )
    }

    #[test]
    fn the_digest_is_the_sha256_an_operator_gets_from_sha256sum() {
        // `printf %s abc | sha256sum`
        assert_eq!(
            digest_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_secret_finds_its_token_and_nothing_else_does() {
        let tokens = ApiTokens::parse(&server_file(), "t.toml", Side::Server).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.find(SECRET).unwrap().name(), "web");
        assert_eq!(
            tokens.find("rpt_ops").unwrap().name(),
            "ops",
            "hex of either case"
        );
        for wrong in ["", "rpt_test-secre", "rpt_test-secret ", &digest_of(SECRET)] {
            assert!(tokens.find(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn scope_is_handlers_and_clients_with_the_policys_wildcards() {
        let tokens = ApiTokens::parse(&server_file(), "t.toml", Side::Server).unwrap();
        let web = tokens.find(SECRET).unwrap();
        assert_eq!(web.refusal("get_time", "web-7"), None);
        assert_eq!(web.refusal("get_files_report", "web-"), None);
        let handler = web.refusal("post_upload", "web-7").unwrap();
        assert!(handler.contains("may not call post_upload"), "{handler}");
        let client = web.refusal("get_time", "db-1").unwrap();
        assert!(client.contains("may not reach client \"db-1\""), "{client}");
        assert!(!web.is_unrestricted());
        assert!(tokens.find("rpt_ops").unwrap().is_unrestricted());
    }

    #[test]
    fn a_client_nodes_tokens_name_handlers_only() {
        let text = format!(
            "[[token]]\nname = \"app\"\nsha256 = \"{}\"\nhandlers = [\"get_time\"]\n",
            digest_of(SECRET)
        );
        let tokens = ApiTokens::parse(&text, "c.toml", Side::Client).unwrap();
        let app = tokens.find(SECRET).unwrap();
        assert_eq!(app.refusal("get_time", "server"), None);
        assert!(app.refusal("get_cat", "server").is_some());
        let error = ApiTokens::parse(&text, "c.toml", Side::Server).unwrap_err();
        assert!(error.to_string().contains("names no clients"), "{error}");
        let error = ApiTokens::parse(&server_file(), "c.toml", Side::Client).unwrap_err();
        assert!(
            error.to_string().contains("a client node pipes only"),
            "{error}"
        );
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let digest = digest_of(SECRET);
        let cases = [
            ("[[token]]\nname = \"a\"\n", "missing field"),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{digest}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\nextra = 1\n"
                ),
                "unknown field",
            ),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"abc\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n",
                "64 hexadecimal digits",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a b\"\nsha256 = \"{digest}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n"
                ),
                "may contain only",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{digest}\"\nhandlers = []\nclients = [\"*\"]\n"
                ),
                "allows nothing",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{digest}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n[[token]]\nname = \"a\"\nsha256 = \"{}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n",
                    digest_of("other")
                ),
                "used twice",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{digest}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n[[token]]\nname = \"b\"\nsha256 = \"{digest}\"\nhandlers = [\"*\"]\nclients = [\"*\"]\n"
                ),
                "the same sha256",
            ),
            ("[[tokens]]\n", "unknown field"),
        ];
        for (text, why) in cases {
            let error = ApiTokens::parse(text, "t.toml", Side::Server).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("API token file t.toml: "), "{message}");
            assert!(message.contains(why), "{why}: {message}");
        }
        let empty = ApiTokens::parse("", "t.toml", Side::Server).unwrap();
        assert!(empty.is_empty() && empty.find("").is_none());
    }

    #[test]
    fn a_new_token_is_found_by_its_own_entry_and_its_secret_never_printed() {
        let handlers = ["get_*".to_owned()];
        let clients = ["web-*".to_owned(), "db-\"1\"".to_owned()];
        let new = NewToken::generate(Side::Server, "deploy", &handlers, &clients).unwrap();
        assert!(new.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(new.secret.len(), TOKEN_PREFIX.len() + 2 * SECRET_BYTES);
        assert!(!new.entry.contains(&new.secret));
        assert!(!format!("{new:?}").contains(&new.secret));
        let tokens = ApiTokens::parse(&new.entry, "entry", Side::Server).unwrap();
        let token = tokens.find(&new.secret).unwrap();
        assert_eq!(token.name(), "deploy");
        assert_eq!(token.refusal("get_time", "db-\"1\""), None);
        assert!(!format!("{token:?}").contains(&digest_of(&new.secret)));
        let other = NewToken::generate(Side::Server, "deploy", &handlers, &clients).unwrap();
        assert_ne!(other.secret, new.secret);
        let error = NewToken::generate(Side::Client, "app", &handlers, &clients).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot make that token: token \"app\" names clients"),
            "{error}"
        );
        let error = NewToken::generate(Side::Server, "a b", &handlers, &clients).unwrap_err();
        assert!(error.to_string().contains("may contain only"), "{error}");
    }
}
