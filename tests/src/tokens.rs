//! Local API token files as an operator keeps them: entries made by
//! pipe-core's own `token new` code ([`NewToken`]), added and removed in
//! a file a node reads at start and on reload, and the secrets a test then
//! sends as `Authorization: Bearer <secret>`.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::http::{Response, send};
use crate::{NewToken, Side};

/// A token file being written by a test: each change rewrites it whole
/// (through a temporary file and a rename, as an editor or `install` does,
/// so a node reading it meanwhile sees the old file or the new one).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    side: Side,
    /// `(name, entry)`, in the order added.
    entries: Vec<(String, String)>,
}

impl TokenFile {
    /// An empty token file at `path` for a node on `side`.
    pub fn new(path: impl Into<PathBuf>, side: Side) -> Self {
        let file = Self {
            path: path.into(),
            side,
            entries: Vec::new(),
        };
        file.write();
        file
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a token `name` allowed `handlers` and (server nodes) `clients`,
    /// writes it into the file and returns its secret.
    pub fn add(&mut self, name: &str, handlers: &[&str], clients: &[&str]) -> String {
        let owned = |items: &[&str]| {
            items
                .iter()
                .map(|item| (*item).to_owned())
                .collect::<Vec<_>>()
        };
        let new = NewToken::generate(self.side, name, &owned(handlers), &owned(clients))
            .unwrap_or_else(|e| panic!("making token {name:?}: {e}"));
        self.entries.push((name.to_owned(), new.entry));
        self.write();
        new.secret
    }

    /// Takes token `name` out of the file.
    pub fn remove(&mut self, name: &str) {
        let before = self.entries.len();
        self.entries.retain(|(entry, _)| entry != name);
        assert_ne!(before, self.entries.len(), "no token {name:?} to remove");
        self.write();
    }

    fn write(&self) {
        let text: Vec<&str> = self
            .entries
            .iter()
            .map(|(_, entry)| entry.as_str())
            .collect();
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, text.join("\n"))
            .and_then(|()| std::fs::rename(&temporary, &self.path))
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.path.display()));
    }
}

/// The value of the `Authorization` header that carries `secret`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// `GET url` with `secret` as its bearer token.
pub async fn get_with_token(url: &str, secret: &str) -> Response {
    send(
        "GET",
        url,
        &[("authorization", &bearer(secret))],
        Bytes::new(),
    )
    .await
}
