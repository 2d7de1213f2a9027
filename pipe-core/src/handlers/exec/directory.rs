//! The handler directory, and which of its files may ever be run: plain
//! handler names only, never symbolic links, non-regular files or files
//! without an execute bit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use tracing::warn;

use super::executable::Executable;
use super::ledger::GroupLedger;
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
    /// Places for programs running at once, shared by every handler here.
    processes: Arc<Semaphore>,
    /// Where running groups are noted, if the node has a state directory.
    ledger: Option<Arc<GroupLedger>>,
}

/// Default cap on executable handlers running at once on a node.
pub const DEFAULT_MAX_EXEC_PROCESSES: usize = 128;

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
    /// The file or the directory may be changed by someone other than its
    /// owner (group- or world-writable), or is owned by someone other than
    /// root or this process's user: anyone who can change it could run code
    /// as this node, so it is refused, as sshd refuses such key files.
    Unsafe(&'static str),
}

/// The owner of files this process may trust: itself, or root.
fn trusted_owner(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process's effective user (no libc needed).
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    uid == 0 || Some(uid) == me
}

/// Why `metadata` (of the handler directory or a handler) makes it unsafe to
/// run from, if it does.
fn unsafe_because(metadata: &std::fs::Metadata, is_dir: bool) -> Option<&'static str> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if metadata.permissions().mode() & 0o022 != 0 {
        return Some(if is_dir {
            "the handler directory is writable by its group or by others"
        } else {
            "it is writable by its group or by others"
        });
    }
    if !trusted_owner(metadata.uid()) {
        return Some(if is_dir {
            "the handler directory is owned by another user"
        } else {
            "it is owned by another user"
        });
    }
    None
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
            processes: Arc::new(Semaphore::new(DEFAULT_MAX_EXEC_PROCESSES)),
            ledger: None,
        })
    }

    /// At most `max` programs run at once (default
    /// [`DEFAULT_MAX_EXEC_PROCESSES`]); more events wait for a place within
    /// their deadline, then get 503.
    pub fn with_max_processes(mut self, max: usize) -> Self {
        self.processes = Arc::new(Semaphore::new(max));
        self
    }

    /// Notes each running program's process group in `ledger`, so that
    /// the node's next start kills what a crash left running.
    pub fn with_ledger(mut self, ledger: Arc<GroupLedger>) -> Self {
        self.ledger = Some(ledger);
        self
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
        if let Some(why) = unsafe_because(&metadata, false) {
            return Err(NotRunnable::Unsafe(why));
        }
        // Checked per event too: a directory made writable later is noticed.
        let dir = std::fs::metadata(&self.dir).map_err(|_| NotRunnable::Missing)?;
        if let Some(why) = unsafe_because(&dir, true) {
            return Err(NotRunnable::Unsafe(why));
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
                processes: self.processes.clone(),
                ledger: self.ledger.clone(),
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
                        NotRunnable::Unsafe(why) => why,
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

    #[test]
    fn files_or_directories_others_may_change_are_never_run() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let set_mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set_mode(dir.path(), 0o755);
        let script = dir.path().join("get_time");
        std::fs::write(&script, "#!/bin/sh\necho '{}'\n").unwrap();
        let handlers = ExecDirectory::new(dir.path().to_owned(), 1024).unwrap();
        let name = HandlerName::new("get", "time");

        set_mode(&script, 0o755);
        assert!(handlers.lookup(&name).is_some(), "a safe handler runs");
        for unsafe_mode in [0o775, 0o757, 0o777] {
            set_mode(&script, unsafe_mode);
            assert!(
                handlers.lookup(&name).is_none(),
                "file mode {unsafe_mode:o}"
            );
        }
        set_mode(&script, 0o755);
        for unsafe_mode in [0o775, 0o777, 0o1777] {
            set_mode(dir.path(), unsafe_mode);
            assert!(
                handlers.lookup(&name).is_none(),
                "directory mode {unsafe_mode:o}"
            );
        }
        set_mode(dir.path(), 0o755);
        assert!(handlers.lookup(&name).is_some());
        assert_eq!(handlers.names(), ["get_time"]);
    }
}
