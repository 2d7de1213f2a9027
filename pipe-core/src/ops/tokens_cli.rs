//! `pipe-server token` and `pipe-client token`: making the local API's
//! tokens. A new token's secret is printed once; the token file
//! (`--api-tokens`) keeps only its SHA-256, so a lost secret is replaced,
//! never recovered.

use std::io::Write as _;
use std::path::PathBuf;

use crate::front::{ApiTokens, NewToken, TokenError};
use crate::wire::Side;

/// Permissions of a token file `--append` creates: the node's user (who
/// should run the command) reads and writes it, its group reads it. The
/// file holds digests of random secrets, not secrets, but also who may do
/// what.
const NEW_FILE_MODE: u32 = 0o640;

/// Flags of `token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// What `token` does.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Makes a token of 256 random bits: prints its secret once, and its
    /// entry for the node's API token file (or, with --append, adds the
    /// entry to the file). Reload the node (SIGHUP) to put it in force.
    New {
        /// The token's name, which logs show (letters, digits, '_', '-',
        /// '.').
        name: String,
        /// Handlers it may call, with the access policy's wildcards
        /// (`get_*`, `*` for all); repeatable or comma-separated.
        #[arg(long, value_name = "PATTERN", value_delimiter = ',', required = true)]
        handlers: Vec<String>,
        /// Server nodes: client names it may reach, wildcards allowed
        /// (`web-*`, `*` for all); repeatable or comma-separated. A client
        /// node's tokens have none.
        #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
        clients: Vec<String>,
        /// Add the entry to this token file (created if missing) after
        /// checking that the file with it still reads, and print only the
        /// secret.
        #[arg(long, value_name = "FILE")]
        append: Option<PathBuf>,
    },
}

/// Why `token` failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenCliError {
    /// The token, or the file with it, is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token file could not be written.
    #[error("cannot write API token file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What `token` has to say: `stdout` for scripts (the secret, and the entry
/// unless it went into a file), `stderr` for the person running it.
#[derive(Debug)]
pub struct TokenAnswer {
    /// For standard output.
    pub stdout: String,
    /// For standard error.
    pub stderr: String,
}

/// Runs `token` for a node of `side`.
pub fn run(side: Side, args: TokenArgs) -> Result<TokenAnswer, TokenCliError> {
    let TokenCommand::New {
        name,
        handlers,
        clients,
        append,
    } = args.command;
    let new = NewToken::generate(side, &name, &handlers, &clients)?;
    let Some(path) = append else {
        return Ok(TokenAnswer {
            stdout: format!("{}\n\n{}", new.secret, new.entry),
            stderr: format!(
                "The first line is the secret of API token {name:?}, shown this once (callers send \
                 Authorization: Bearer <secret>); the node keeps only its SHA-256. Add the entry \
                 below it to the node's API token file (--api-tokens), then reload the node \
                 (systemctl reload, or SIGHUP)."
            ),
        });
    };
    append_entry(side, &path, &new.entry)?;
    Ok(TokenAnswer {
        stdout: new.secret,
        stderr: format!(
            "API token {name:?} added to {}; its secret (above) is shown this once. Reload the \
             node (systemctl reload, or SIGHUP) to put it in force.",
            path.display()
        ),
    })
}

/// Adds `entry` to the token file at `path`, once the file with it has been
/// read as the node will read it (so a name used twice is refused here,
/// not at the node's next reload).
fn append_entry(side: Side, path: &std::path::Path, entry: &str) -> Result<(), TokenCliError> {
    let write_error = |source| TokenCliError::Write {
        path: path.to_owned(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokenError::Read {
                path: path.to_owned(),
                source,
            }
            .into());
        }
    };
    let separator = match existing.as_str() {
        "" => "",
        text if text.ends_with("\n\n") => "",
        text if text.ends_with('\n') => "\n",
        _ => "\n\n",
    };
    let addition = format!("{separator}{entry}");
    ApiTokens::parse(
        &format!("{existing}{addition}"),
        &path.display().to_string(),
        side,
    )?;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(NEW_FILE_MODE)
        .open(path)
        .map_err(write_error)?;
    file.write_all(addition.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, clients: &[&str], append: Option<PathBuf>) -> TokenArgs {
        TokenArgs {
            command: TokenCommand::New {
                name: name.to_owned(),
                handlers: vec!["get_*".to_owned()],
                clients: clients.iter().map(|c| (*c).to_owned()).collect(),
                append,
            },
        }
    }

    #[test]
    fn the_secret_is_printed_once_and_the_entry_finds_it() {
        let answer = run(Side::Server, new("web", &["web-*"], None)).unwrap();
        let (secret, entry) = answer.stdout.split_once("\n\n").unwrap();
        assert_eq!(entry.matches(secret).count(), 0);
        let tokens = ApiTokens::parse(entry, "printed", Side::Server).unwrap();
        assert_eq!(tokens.find(secret).unwrap().name(), "web");
        assert!(
            answer.stderr.contains("shown this once"),
            "{}",
            answer.stderr
        );
    }

    #[test]
    fn append_adds_entries_and_refuses_a_name_twice() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let first = run(Side::Client, new("app", &[], Some(path.clone()))).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            NEW_FILE_MODE
        );
        let second = run(Side::Client, new("cron", &[], Some(path.clone()))).unwrap();
        let tokens = ApiTokens::load(&path, Side::Client).unwrap();
        assert_eq!(tokens.find(&first.stdout).unwrap().name(), "app");
        assert_eq!(tokens.find(&second.stdout).unwrap().name(), "cron");
        let before = std::fs::read_to_string(&path).unwrap();
        let error = run(Side::Client, new("app", &[], Some(path.clone()))).unwrap_err();
        assert!(error.to_string().contains("used twice"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}
