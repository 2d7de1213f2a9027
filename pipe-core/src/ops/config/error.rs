//! Why a configuration is unusable. Every message says where the value came
//! from, so an operator knows which layer to fix.

use std::path::PathBuf;

/// Why the configuration is unusable. Each names where the value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The config file has a key this node does not know.
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// The keys a file for this node may hold.
        known: String,
    },
    /// A value could not be used.
    #[error("{source_name}: {message}")]
    BadValue {
        /// Where it came from: `--flag`, `ENV_VAR=...` or `file: key`.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// A value from `source_name` that is unusable because of `message`.
    pub(super) fn bad_value(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadValue {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}
