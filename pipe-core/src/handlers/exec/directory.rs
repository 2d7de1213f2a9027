//! The handler directory, and which of its files may ever be run: plain
//! handler names only, never symbolic links, non-regular files or files
//! without an execute bit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::executable::Executable;
use crate::handlers::registry::Handler;
use crate::handlers::sources::{HandlerSource, VERBS};
use crate::wire::HandlerName;

/// Longest file name Linux allows.
const MAX_NAME_BYTES: usize = 255;

/// A directory of executable handlers, looked up afresh for every event.
#[derive(Debug, Clone)]
pub struct ExecDirectory {
    dir: PathBuf,
    max_output_bytes: usize,
}

/// Why a file in the directory is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotRunnable {
    /// The name is not a plain handler name.
    BadName,
    /// No such file (or it cannot be looked at).
    Missing,
    /// A symbolic link: never followed.
    Symlink,
    /// A directory, socket, device...
    NotRegular,
    /// No execute bit.
    NotExecutable,
}

impl ExecDirectory {
    /// Handlers from the executables in `dir`, whose output (stdout) may be
    /// at most `max_output_bytes`. Fails with a message for the operator if
    /// `dir` does not exist or is not a directory.
    pub fn new(dir: PathBuf, max_output_bytes: usize) -> Result<Self, String> {
        // Absolute, so the program path stays right whatever the working
        // directory, and logs name the real place.
        let absolute = std::fs::canonicalize(&dir)
            .map_err(|e| format!("handler directory {}: {e}", dir.display()))?;
        let metadata = std::fs::metadata(&absolute)
            .map_err(|e| format!("handler directory {}: {e}", dir.display()))?;
        if !metadata.is_dir() {
            return Err(format!(
                "handler directory {}: not a directory",
                dir.display()
            ));
        }
        Ok(Self {
            dir: absolute,
            max_output_bytes,
        })
    }

    /// The directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the executable named `name`, if it may be run.
    fn runnable(&self, name: &str) -> Result<PathBuf, NotRunnable> {
        use std::os::unix::fs::PermissionsExt as _;
        if !is_handler_name(name) {
            return Err(NotRunnable::BadName);
        }
        // `name` is one plain file name (checked above): the path cannot
        // leave the directory.
        let path = self.dir.join(name);
        let metadata = std::fs::symlink_metadata(&path).map_err(|_| NotRunnable::Missing)?;
        let kind = metadata.file_type();
        if kind.is_symlink() {
            return Err(NotRunnable::Symlink);
        }
        if !kind.is_file() {
            return Err(NotRunnable::NotRegular);
        }
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(NotRunnable::NotExecutable);
        }
        Ok(path)
    }
}

/// Whether `name` is a plain handler name that may name an executable: a
/// verb, `_`, then at least one of `[A-Za-z0-9_-]`. Rules out `.`, `/`,
/// hidden files and anything else a path could be made of.
pub fn is_handler_name(name: &str) -> bool {
    let Some((verb, rest)) = name.split_once('_') else {
        return false;
    };
    name.len() <= MAX_NAME_BYTES
        && VERBS.contains(&verb)
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl HandlerSource for ExecDirectory {
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>> {
        if !VERBS.contains(&name.verb()) {
            return None;
        }
        match self.runnable(name.as_str()) {
            Ok(path) => Some(Arc::new(Executable {
                name: name.as_str().to_owned(),
                path,
                dir: self.dir.clone(),
                max_output_bytes: self.max_output_bytes,
            })),
            Err(NotRunnable::BadName | NotRunnable::Missing) => None,
            Err(why) => {
                warn!(
                    handler = %name,
                    dir = %self.dir.display(),
                    "not running {name}: {}",
                    match why {
                        NotRunnable::Symlink => "it is a symbolic link",
                        NotRunnable::NotRegular => "it is not a regular file",
                        _ => "it is not executable (chmod +x)",
                    }
                );
                None
            }
        }
    }

    fn names(&self) -> Vec<String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                warn!(dir = %self.dir.display(), "cannot list the handler directory: {error}");
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| self.runnable(name).is_ok())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_handler_names_are_runnable() {
        for name in [
            "get_time",
            "post_upload",
            "get_files_report",
            "delete_x-1_Y",
        ] {
            assert!(is_handler_name(name), "{name}");
        }
        for name in [
            "",
            "get_",
            "get",
            "_time",
            ".get_time",
            "get_.secret",
            "get_a.sh",
            "get_../x",
            "get_a/b",
            "get_a b",
            "GET_time",
            "options_time",
            "head_time",
            "get_\u{e9}t\u{e9}",
        ] {
            assert!(!is_handler_name(name), "{name:?}");
        }
        assert!(!is_handler_name(&format!("get_{}", "x".repeat(300))));
    }

    #[test]
    fn the_directory_must_exist() {
        let missing = ExecDirectory::new("/nonexistent/handlers".into(), 1).unwrap_err();
        assert!(missing.contains("/nonexistent/handlers"), "{missing}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let not_dir = ExecDirectory::new(file.path().to_owned(), 1).unwrap_err();
        assert!(not_dir.contains("not a directory"), "{not_dir}");
    }
}
