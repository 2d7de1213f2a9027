//! A tunnel to a server node through an HTTP proxy: TCP to the proxy, an
//! HTTP `CONNECT host:port` (with the proxy's credentials, if any), and on
//! its `2xx` the same TCP stream, now carrying bytes to the server and
//! back. The pipe's TLS runs over it end to end: the proxy sees ciphertext
//! and the server sees, and verifies, the client's own certificate.
//!
//! The exchange is hyper's HTTP/1 client (a `CONNECT` answered `2xx` is an
//! upgrade there), so the proxy's answer is read by a real HTTP parser,
//! its head is bounded ([`MAX_ANSWER_HEAD`]), and a refusal keeps its
//! status and reason for the error. hyper-util's `Tunnel` connector does
//! the same exchange but folds every refusal other than 407 into one
//! "unsuccessful", which would not tell an operator a 403 from a 502.
//! The whole of it runs under the caller's deadline: a proxy that accepts
//! and says nothing cannot hold an attempt.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::dial::{dial, no_address_of_family, reachable_from};
use super::proxy::ProxyUrl;
use crate::wire::printable;

/// Most bytes of the proxy's answer before its headers end: the smallest
/// read buffer hyper allows, and far more than a `CONNECT` answer needs.
pub const MAX_ANSWER_HEAD: usize = 8192;

/// A proxy's answer to a `CONNECT` that opened no tunnel: its status code
/// and reason phrase (made printable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    /// The status code.
    pub code: u16,
    /// The reason phrase as the proxy sent it, or the standard one.
    pub reason: String,
}

impl fmt::Display for ProxyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// Why no tunnel through the proxy was opened; each says what the operator
/// can do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Nothing answered at the proxy's address (or its name does not
    /// resolve, or there is no route to it).
    #[error("cannot reach the proxy")]
    Unreachable(#[source] std::io::Error),
    /// The proxy did not open the tunnel within the connect deadline.
    #[error("the proxy did not answer the CONNECT within {0:?}")]
    TimedOut(Duration),
    /// The proxy closed the connection without answering.
    #[error("the proxy closed the connection without answering the CONNECT")]
    Closed,
    /// What came back is not an HTTP answer: not an HTTP proxy at that
    /// address?
    #[error("the proxy's answer is not HTTP (is that address an HTTP proxy?)")]
    NotHttp(#[source] hyper::Error),
    /// The answer's head did not end within [`MAX_ANSWER_HEAD`] bytes.
    #[error("the proxy's answer has more than {MAX_ANSWER_HEAD} bytes of headers")]
    HeadTooLarge,
    /// Writing the request or reading the answer failed.
    #[error("the CONNECT exchange with the proxy failed")]
    Exchange(#[source] hyper::Error),
    /// The proxy wants credentials (407) and the proxy URL has none.
    #[error(
        "the proxy requires authentication ({status}): give its user and password in the proxy URL, http://USER:PASSWORD@HOST:PORT"
    )]
    CredentialsRequired {
        /// The proxy's answer.
        status: ProxyStatus,
    },
    /// The proxy refused the credentials given (407, or 401 as some
    /// proxies answer a wrong password).
    #[error(
        "the proxy refused this node's credentials ({status}): check the user and password in the proxy URL"
    )]
    CredentialsRefused {
        /// The proxy's answer.
        status: ProxyStatus,
    },
    /// The proxy does not allow a tunnel to this destination (403).
    #[error(
        "the proxy does not allow a tunnel to {target} ({status}): its administrator must allow CONNECT to this host and port"
    )]
    Forbidden {
        /// The server, `host:port`.
        target: String,
        /// The proxy's answer.
        status: ProxyStatus,
    },
    /// The proxy could not reach the server, or failed (5xx: 502, 503,
    /// 504, or 500 as some proxies answer an unreachable server).
    #[error("the proxy could not open a tunnel to {target} ({status})")]
    NoTunnel {
        /// The server, `host:port`.
        target: String,
        /// The proxy's answer.
        status: ProxyStatus,
    },
    /// Any other answer that is not a `2xx`.
    #[error("the proxy refused the tunnel to {target} ({status})")]
    Refused {
        /// The server, `host:port`.
        target: String,
        /// The proxy's answer.
        status: ProxyStatus,
    },
    /// The proxy sent bytes through the tunnel before this node's TLS
    /// handshake began: no TLS server speaks first, so they are not the
    /// server's.
    #[error("the proxy sent {0} bytes through the tunnel before the TLS handshake began")]
    EarlyData(usize),
    /// The server's address cannot be written as a `CONNECT` target.
    #[error("{0} cannot be the target of a CONNECT")]
    BadTarget(String),
    /// hyper handed back another stream than the TCP stream it was given
    /// (it does not: this is the error should it ever).
    #[error("the tunnel's stream is not the TCP stream it was opened on")]
    NotTcp,
}

impl ProxyError {
    /// Whether the proxy refused this node itself (its credentials, or
    /// their absence): any server through this proxy meets the same.
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Self::CredentialsRequired { .. } | Self::CredentialsRefused { .. }
        )
    }

    /// A `hyper` error of the exchange, by what it says about the proxy.
    fn from_exchange(error: hyper::Error) -> Self {
        if error.is_parse_too_large() {
            Self::HeadTooLarge
        } else if error.is_parse() || error.is_parse_status() {
            Self::NotHttp(error)
        } else if error.is_incomplete_message()
            || error.is_canceled()
            || error.is_closed()
            || is_reset(&error)
        {
            Self::Closed
        } else {
            Self::Exchange(error)
        }
    }
}

/// Whether `error` is the proxy dropping the connection (a reset counts).
fn is_reset(error: &hyper::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}

/// A TCP stream to the server `host:port` through `proxy`, ready for the
/// pipe's TLS handshake, within `limit` for all of it. The connection to
/// the proxy leaves from `source`, if given.
pub(super) async fn open(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    source: Option<IpAddr>,
    limit: Duration,
) -> Result<TcpStream, ProxyError> {
    tokio::time::timeout(limit, connect_through(proxy, host, port, source))
        .await
        .map_err(|_| ProxyError::TimedOut(limit))?
}

/// A TCP connection to `proxy` from `source`, if given: each of the
/// proxy's addresses of `source`'s family in turn, until one connects.
async fn reach(proxy: &ProxyUrl, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let addresses = tokio::net::lookup_host((proxy.host(), proxy.port())).await?;
    let mut last_error = None;
    for address in addresses.filter(|address| reachable_from(address, source)) {
        match dial(address, source).await {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last_error = Some(error),
        }
    }
    Err(match (last_error, source) {
        (Some(error), _) => error,
        (None, Some(source)) => no_address_of_family(&format!("proxy {proxy}"), source),
        (None, None) => std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("proxy {proxy} resolves to no address"),
        ),
    })
}

/// [`open`] without its deadline.
async fn connect_through(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    source: Option<IpAddr>,
) -> Result<TcpStream, ProxyError> {
    let tcp = reach(proxy, source)
        .await
        .map_err(ProxyError::Unreachable)?;
    let _ = tcp.set_nodelay(true);
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_ANSWER_HEAD)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(ProxyError::from_exchange)?;
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.as_str())
        .header(header::HOST, target.as_str());
    if let Some(authorization) = proxy.authorization() {
        request = request.header(header::PROXY_AUTHORIZATION, authorization.clone());
    }
    let request = request
        .body(Empty::new())
        .map_err(|_| ProxyError::BadTarget(target.clone()))?;

    // The connection is driven alongside the request: it reads the answer,
    // and after a `2xx` hands its stream back (the upgrade) and ends.
    let mut connection = std::pin::pin!(connection.with_upgrades());
    let mut answered = std::pin::pin!(sender.send_request(request));
    let mut handed_back = false;
    let answer = tokio::select! {
        answer = &mut answered => answer,
        ended = &mut connection => {
            ended.map_err(ProxyError::from_exchange)?;
            handed_back = true;
            answered.await
        }
    }
    .map_err(ProxyError::from_exchange)?;
    if !answer.status().is_success() {
        return Err(refusal(status_of(&answer), target, proxy.has_credentials()));
    }
    let upgrade = hyper::upgrade::on(answer);
    let upgraded = if handed_back {
        upgrade.await
    } else {
        tokio::try_join!(upgrade, connection).map(|(upgraded, ())| upgraded)
    }
    .map_err(ProxyError::from_exchange)?;
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => Ok(parts.io.into_inner()),
        Ok(parts) => Err(ProxyError::EarlyData(parts.read_buf.len())),
        // hyper hands back the stream it was given.
        Err(_) => Err(ProxyError::NotTcp),
    }
}

/// The status of a proxy's answer, as an error shows it.
fn status_of<B>(answer: &http::Response<B>) -> ProxyStatus {
    let status = answer.status();
    let reason = answer
        .extensions()
        .get::<ReasonPhrase>()
        .map(|reason| String::from_utf8_lossy(reason.as_bytes()).into_owned())
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    ProxyStatus {
        code: status.as_u16(),
        reason: printable(reason.trim()),
    }
}

/// The error for a proxy's answer `status` other than `2xx` to a
/// `CONNECT` to `target`.
fn refusal(status: ProxyStatus, target: String, sent_credentials: bool) -> ProxyError {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY);
    match code {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED | StatusCode::UNAUTHORIZED
            if sent_credentials =>
        {
            ProxyError::CredentialsRefused { status }
        }
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => ProxyError::CredentialsRequired { status },
        StatusCode::FORBIDDEN => ProxyError::Forbidden { target, status },
        code if code.is_server_error() => ProxyError::NoTunnel { target, status },
        _ => ProxyError::Refused { target, status },
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    /// A one-connection stand-in for a proxy on loopback: reads a request
    /// head, answers `answer` (nothing, if empty), then echoes whatever
    /// comes through until the other side closes. Sends the head it read.
    async fn proxy_answering(answer: Vec<u8>) -> (SocketAddr, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (head_tx, head_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
            if answer.is_empty() {
                // Says nothing, and holds the connection open.
                let _ = socket.read(&mut byte).await;
                return;
            }
            socket.write_all(&answer).await.unwrap();
            let mut buffer = [0u8; 1024];
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (address, head_rx)
    }

    fn proxy_at(address: SocketAddr, credentials: &str) -> ProxyUrl {
        format!("http://{credentials}{address}").parse().unwrap()
    }

    /// What a `CONNECT` to `pipe.example.com:1234` meets when the proxy
    /// answers `answer`.
    async fn tunnel_answered(answer: &[u8], credentials: &str) -> Result<TcpStream, ProxyError> {
        let (address, _head) = proxy_answering(answer.to_vec()).await;
        let proxy = proxy_at(address, credentials);
        open(&proxy, "pipe.example.com", 1234, None, LIMIT).await
    }

    #[tokio::test]
    async fn a_2xx_answer_opens_a_tunnel_with_the_credentials_sent() {
        let answer = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
        let (address, head) = proxy_answering(answer).await;
        let proxy = proxy_at(address, "alice:s3cret@");
        let mut stream = open(&proxy, "pipe.example.com", 1234, None, LIMIT)
            .await
            .unwrap();
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("connect pipe.example.com:1234 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: pipe.example.com:1234\r\n"), "{head}");
        assert!(
            head.contains("proxy-authorization: basic ywxpy2u6cznjcmv0\r\n"),
            "{head}"
        );
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
    }

    #[tokio::test]
    async fn an_ipv6_server_is_a_bracketed_target_and_credentials_are_optional() {
        let answer = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        let (address, head) = proxy_answering(answer).await;
        open(&proxy_at(address, ""), "fd00::1", 1234, None, LIMIT)
            .await
            .unwrap();
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("connect [fd00::1]:1234 "), "{head}");
        assert!(!head.contains("proxy-authorization"), "{head}");
    }

    #[tokio::test]
    async fn each_refusal_says_what_the_proxy_answered() {
        let cases: [(&[u8], &str, &str); 8] = [
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n",
                "",
                "the proxy requires authentication (407 Proxy Authentication Required)",
            ),
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                "alice:wrong@",
                "the proxy refused this node's credentials (407 Proxy Authentication Required)",
            ),
            (
                b"HTTP/1.0 401 Unauthorized\r\nConnection: close\r\n\r\n<html>",
                "alice:wrong@",
                "the proxy refused this node's credentials (401 Unauthorized)",
            ),
            (
                b"HTTP/1.1 403 Access violation\r\nConnection: close\r\n\r\n",
                "",
                "the proxy does not allow a tunnel to pipe.example.com:1234 (403 Access violation)",
            ),
            (
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
                "",
                "the proxy could not open a tunnel to pipe.example.com:1234 (502 Bad Gateway)",
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                "",
                "(503 Service Unavailable)",
            ),
            (
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n",
                "",
                "(504 Gateway Timeout)",
            ),
            (
                b"HTTP/1.1 302 Found\r\nLocation: http://portal/\r\nContent-Length: 0\r\n\r\n",
                "",
                "the proxy refused the tunnel to pipe.example.com:1234 (302 Found)",
            ),
        ];
        for (answer, credentials, expected) in cases {
            let error = tunnel_answered(answer, credentials).await.unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("wrong"), "{message}");
            let authentication =
                expected.contains("authentication") || expected.contains("credentials");
            assert_eq!(error.is_authentication(), authentication, "{message}");
        }
    }

    #[tokio::test]
    async fn what_is_not_an_http_proxy_is_an_error_never_a_hang() {
        let garbage = tunnel_answered(b"SSH-2.0-OpenSSH_9.2p1\r\n\r\n", "").await;
        assert!(
            matches!(garbage, Err(ProxyError::NotHttp(_))),
            "{garbage:?}"
        );

        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        while endless.len() <= 2 * MAX_ANSWER_HEAD {
            endless.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let oversized = tunnel_answered(&endless[..endless.len() - 2], "").await;
        assert!(
            matches!(oversized, Err(ProxyError::HeadTooLarge)),
            "{oversized:?}"
        );

        let early = tunnel_answered(b"HTTP/1.1 200 OK\r\n\r\nHELLO", "").await;
        assert!(matches!(early, Err(ProxyError::EarlyData(5))), "{early:?}");
    }

    /// A tunnel to the pipe through the proxy at `address`, without
    /// credentials.
    async fn open_through(address: SocketAddr, limit: Duration) -> Result<TcpStream, ProxyError> {
        open(
            &proxy_at(address, ""),
            "pipe.example.com",
            1234,
            None,
            limit,
        )
        .await
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out_and_a_closing_one_is_closed() {
        let (address, _head) = proxy_answering(Vec::new()).await;
        let limit = Duration::from_millis(200);
        let silent = open_through(address, limit).await;
        assert!(
            matches!(silent, Err(ProxyError::TimedOut(d)) if d == limit),
            "{silent:?}"
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 64];
            let _ = socket.read(&mut head).await;
        });
        let closed = open_through(address, LIMIT).await;
        assert!(matches!(closed, Err(ProxyError::Closed)), "{closed:?}");

        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = gone.local_addr().unwrap();
        drop(gone);
        let unreachable = open_through(address, LIMIT).await;
        assert!(
            matches!(unreachable, Err(ProxyError::Unreachable(_))),
            "{unreachable:?}"
        );
    }
}
