//! Where the local front listens: TCP or a unix socket (mode, group), and
//! accepting its connections.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tracing::info;

/// Where the local HTTP front listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAddr {
    /// A TCP address such as `127.0.0.1:8080`.
    Tcp(SocketAddr),
    /// A unix socket path, written `unix:/path`.
    Unix(PathBuf),
}

/// Why an address is not one the local front can listen on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpAddrError {
    /// `unix:` with nothing after it.
    #[error("unix: needs a socket path, e.g. unix:/tmp/rpclient.sock")]
    EmptySocketPath,
    /// Neither form.
    #[error("{0:?} is neither IP:PORT nor unix:/path")]
    Unrecognised(String),
}

impl FromStr for HttpAddr {
    type Err = HttpAddrError;

    fn from_str(s: &str) -> Result<Self, HttpAddrError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(HttpAddrError::EmptySocketPath);
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| HttpAddrError::Unrecognised(s.to_owned()))
    }
}

impl fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How a unix-socket front is exposed, and whose `X-Forwarded-For` to
/// believe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits of the socket file (e.g. `0o660`).
    pub mode: u32,
    /// Group to give the socket file (name or number), e.g. `www-data`.
    pub group: Option<String>,
    /// TCP callers whose `X-Forwarded-For` names the real caller in logs.
    /// Callers on a unix socket (nginx) are always believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Whether a unix socket may live in a directory others can write (the
    /// dev profile's `/tmp`). Otherwise binding there is refused: another
    /// local user could bind the path while the node restarts and receive
    /// the apps' requests.
    pub shared_directory: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            mode: 0o660,
            group: None,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
            shared_directory: false,
        }
    }
}

/// A bound local HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    socket: Socket,
    trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    /// Removed again on shutdown.
    Unix(UnixListener, PathBuf),
}

impl HttpListener {
    /// Binds `addr` with default [`SocketOptions`].
    pub async fn bind(addr: &HttpAddr) -> std::io::Result<Self> {
        Self::bind_with(addr, &SocketOptions::default()).await
    }

    /// Binds `addr`. A stale unix socket left by a dead process is replaced;
    /// one a live process still serves is an error. A unix socket gets the
    /// mode and group of `options`, and is refused in a directory others
    /// can write unless `options` allow it.
    pub async fn bind_with(addr: &HttpAddr, options: &SocketOptions) -> std::io::Result<Self> {
        let socket = match addr {
            HttpAddr::Tcp(addr) => Socket::Tcp(TcpListener::bind(addr).await?),
            HttpAddr::Unix(path) => {
                if !options.shared_directory {
                    check_socket_directory(path)?;
                }
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("{} is served by a running process", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(options.mode))?;
                if let Some(group) = &options.group {
                    std::os::unix::fs::chown(path, None, Some(group_id(group)?))?;
                }
                Socket::Unix(listener, path.clone())
            }
        };
        Ok(Self {
            socket,
            trusted_proxies: options.trusted_proxies.clone(),
        })
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> std::io::Result<HttpAddr> {
        Ok(match &self.socket {
            Socket::Tcp(listener) => HttpAddr::Tcp(listener.local_addr()?),
            Socket::Unix(_, path) => HttpAddr::Unix(path.clone()),
        })
    }
}

/// Refuses a socket path whose directory others may write (even with the
/// sticky bit, as in `/tmp`: anyone may create the path while it is free).
fn check_socket_directory(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(directory)
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("the socket's directory {}: {error}", directory.display()),
            )
        })?
        .permissions()
        .mode();
    if mode & 0o002 == 0 {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing to listen on {}: its directory {} is writable by others (mode {:04o}), \
             so another local user could bind the path while the node restarts; use a private \
             directory such as /run/restpipe/ (RuntimeDirectory=restpipe), or --profile dev \
             on a development machine",
            path.display(),
            directory.display(),
            mode & 0o7777
        ),
    ))
}

/// The numeric id of a group given by name (looked up in `/etc/group`) or
/// number.
fn group_id(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?;
            if name == group {
                gid.parse().ok()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group named {group:?} in /etc/group"),
            )
        })
}

/// The other end of a local HTTP connection.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) addr: String,
    /// A trusted proxy (or a unix-socket caller): its forwarded-for counts.
    pub(super) trusted: bool,
}

pub(super) fn listener_cleanup(listener: &HttpListener) -> std::io::Result<()> {
    match &listener.socket {
        Socket::Tcp(_) => Ok(()),
        Socket::Unix(_, path) => std::fs::remove_file(path),
    }
}

pub(super) type BoxedIo = TokioIo<Box<dyn IoStream>>;

pub(super) trait IoStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

pub(super) async fn accept(listener: &HttpListener) -> std::io::Result<(BoxedIo, Peer)> {
    Ok(match &listener.socket {
        Socket::Tcp(tcp) => {
            let (stream, addr) = tcp.accept().await?;
            let _ = stream.set_nodelay(true);
            let peer = Peer {
                addr: addr.to_string(),
                trusted: listener.trusted_proxies.contains(&addr.ip()),
            };
            (TokioIo::new(Box::new(stream) as Box<dyn IoStream>), peer)
        }
        Socket::Unix(unix, _) => {
            let (stream, _) = unix.accept().await?;
            let peer = Peer {
                addr: "unix".to_owned(),
                trusted: true,
            };
            (TokioIo::new(Box::new(stream) as Box<dyn IoStream>), peer)
        }
    })
}

/// Logs where the local front listens.
pub fn log_listening(addr: &HttpAddr) {
    info!(%addr, "local HTTP front listening");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses() {
        assert_eq!(
            "127.0.0.1:8080".parse::<HttpAddr>(),
            Ok(HttpAddr::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/rpclient.sock".parse::<HttpAddr>(),
            Ok(HttpAddr::Unix("/tmp/rpclient.sock".into()))
        );
        assert!("unix:".parse::<HttpAddr>().is_err());
        assert!("localhost".parse::<HttpAddr>().is_err());
        assert_eq!(
            HttpAddr::Unix("/tmp/x.sock".into()).to_string(),
            "unix:/tmp/x.sock"
        );
    }

    /// A unix socket in a fresh directory of `mode`, bound with `options`.
    async fn bind_in(mode: u32, options: &SocketOptions) -> std::io::Result<HttpListener> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))?;
        let path = dir.path().join("front.sock");
        let bound = HttpListener::bind_with(&HttpAddr::Unix(path), options).await;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        bound
    }

    #[tokio::test]
    async fn a_socket_in_a_directory_others_can_write_is_refused() {
        let strict = SocketOptions::default();
        for mode in [0o777, 0o1777, 0o703] {
            let error = bind_in(mode, &strict).await.expect_err("refused");
            assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
            let message = error.to_string();
            assert!(message.contains("writable by others"), "{message}");
            assert!(message.contains("/run/restpipe"), "{message}");
        }
        for mode in [0o700, 0o750, 0o770] {
            assert!(bind_in(mode, &strict).await.is_ok(), "{mode:o}");
        }
        let dev = SocketOptions {
            shared_directory: true,
            ..SocketOptions::default()
        };
        assert!(
            bind_in(0o1777, &dev).await.is_ok(),
            "the dev profile's /tmp"
        );
    }
}
