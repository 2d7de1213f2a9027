//! The HTTP proxy a client node's pipe goes through, where a firewall lets
//! the client's host out only through one: which servers go through it,
//! where it is, and the credentials it is given. The tunnel itself (HTTP
//! `CONNECT`, then the pipe's TLS end to end through it) is `tunnel`.
//!
//! hyper-util's proxy matcher does what curl does with these settings: it
//! reads `NO_PROXY` entries (names with their subdomains, IP addresses and
//! networks, `*`) and turns the URL's percent-decoded `user:password` into
//! a Basic `Proxy-Authorization` value. What this file adds around it:
//! [`ProxyUrl`] takes only `http://HOST:PORT` proxies and says why not
//! without quoting the text (which may hold a password), and no `Debug` or
//! `Display` here shows a user or password.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

/// What stands for the user and password wherever a proxy URL is shown.
const HIDDEN_CREDENTIALS: &str = "***";

/// Any HTTPS destination: what the matcher is asked about to read a proxy
/// URL alone, before any server is known.
const ANY_DESTINATION: &str = "https://restpipe.invalid/";

/// An HTTP proxy, `http://[USER:PASSWORD@]HOST:PORT`, checked: plain HTTP
/// to the proxy (the pipe's own TLS runs end to end through it), and an
/// explicit port, since proxies have no well-known one. Without a scheme,
/// `HOST:PORT` means `http://`, as with curl. Special characters in the
/// user and password are percent-encoded (`@` as `%40`).
///
/// Shown (`Display`, `Debug`) as `http://***@HOST:PORT`: the user and
/// password never reach a log.
#[derive(Clone)]
pub struct ProxyUrl {
    /// The URL as given, credentials and all: what the matcher reads.
    text: String,
    /// The matcher's reading: where the proxy is, and the credentials as a
    /// header value (marked sensitive).
    intercept: Intercept,
    /// Whether the URL carries a user (and password).
    has_credentials: bool,
}

/// Why a proxy URL is unusable. The messages never quote the URL, which
/// may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// Not a URL at all.
    #[error(
        "not a proxy URL: expected http://[USER:PASSWORD@]HOST:PORT, special characters in USER and PASSWORD percent-encoded"
    )]
    NotUrl,
    /// `https://`: TLS to the proxy itself.
    #[error(
        "https:// proxies (TLS to the proxy) are not supported: give the proxy's http:// address; the pipe's own TLS runs end to end through it"
    )]
    Tls,
    /// SOCKS or another kind of proxy.
    #[error("{0}:// proxies are not supported, only http:// (HTTP CONNECT)")]
    Scheme(String),
    /// No port.
    #[error("the proxy URL names no port: write http://HOST:PORT")]
    NoPort,
    /// A path, query or fragment after the address.
    #[error("a proxy URL is http://[USER:PASSWORD@]HOST:PORT, without a path or query")]
    Path,
}

impl FromStr for ProxyUrl {
    type Err = ProxyUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let uri: Uri = text.parse().map_err(|_| ProxyUrlError::NotUrl)?;
        match uri.scheme_str() {
            None => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => return Err(ProxyUrlError::Tls),
            Some(scheme) => return Err(ProxyUrlError::Scheme(scheme.to_ascii_lowercase())),
        }
        let authority = uri.authority().ok_or(ProxyUrlError::NotUrl)?;
        if authority.port_u16().is_none() {
            return Err(ProxyUrlError::NoPort);
        }
        if authority.host().is_empty() {
            return Err(ProxyUrlError::NotUrl);
        }
        // `http::Uri` keeps no fragment; a `#` is simply not part of a URL.
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || text.contains('#') {
            return Err(ProxyUrlError::Path);
        }
        let has_credentials = authority.as_str().contains('@');
        let any = Uri::from_static(ANY_DESTINATION);
        let intercept = Matcher::builder()
            .https(text)
            .build()
            .intercept(&any)
            .ok_or(ProxyUrlError::NotUrl)?;
        Ok(Self {
            text: text.to_owned(),
            intercept,
            has_credentials,
        })
    }
}

impl ProxyUrl {
    /// The proxy's host (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        let host = self.intercept.uri().host().unwrap_or_default();
        host.strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        // An explicit port is what `from_str` checked for.
        self.intercept.uri().port_u16().unwrap_or_default()
    }

    /// The `Proxy-Authorization` value (Basic), when the URL has a user.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.intercept.basic_auth()
    }

    /// Whether the URL has a user (and password) for the proxy.
    pub fn has_credentials(&self) -> bool {
        self.has_credentials
    }

    /// The URL as given, credentials and all: to hand on to a process or a
    /// file, never to show.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ProxyUrl {}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = if self.has_credentials {
            format!("{HIDDEN_CREDENTIALS}@")
        } else {
            String::new()
        };
        let address = self
            .intercept
            .uri()
            .authority()
            .map_or("", |authority| authority.as_str());
        write!(f, "http://{credentials}{address}")
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// How a client node reaches its servers: directly (the default), or
/// through one HTTP proxy, except the servers that `NO_PROXY` exempts.
#[derive(Clone, Default)]
pub struct Proxies {
    through: Option<Arc<Through>>,
}

/// A proxy and the servers that do not go through it.
struct Through {
    proxy: ProxyUrl,
    /// The `NO_PROXY` list, as given.
    exempt: String,
    /// The proxy with `exempt`: says which destinations go through it.
    matcher: Matcher,
    /// Where the proxy was configured (`--proxy`, `HTTPS_PROXY`...).
    origin: String,
}

impl Proxies {
    /// Every server directly.
    pub fn direct() -> Self {
        Self::default()
    }

    /// Every server through `proxy`, except those `no_proxy` names (a
    /// comma-separated list as `NO_PROXY` is: names, which cover their
    /// subdomains, IP addresses, networks such as `10.0.0.0/8`, or `*`).
    /// `origin` says where the proxy was configured, for the log.
    pub fn through(proxy: ProxyUrl, no_proxy: &str, origin: impl Into<String>) -> Self {
        let matcher = Matcher::builder()
            .https(proxy.expose())
            .no(no_proxy)
            .build();
        Self {
            through: Some(Arc::new(Through {
                proxy,
                exempt: no_proxy.trim().to_owned(),
                matcher,
                origin: origin.into(),
            })),
        }
    }

    /// The proxy, if there is one.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        self.through.as_ref().map(|through| &through.proxy)
    }

    /// The proxy for the server `host:port`, or `None` to go directly.
    pub fn for_server(&self, host: &str, port: u16) -> Option<&ProxyUrl> {
        let through = self.through.as_deref()?;
        let destination = if host.contains(':') {
            format!("https://[{host}]:{port}/")
        } else {
            format!("https://{host}:{port}/")
        };
        match destination.parse::<Uri>() {
            Ok(destination) => through
                .matcher
                .intercept(&destination)
                .map(|_| &through.proxy),
            // No list can name a host that is no URL host: not exempt.
            Err(_) => Some(&through.proxy),
        }
    }

    /// One line for the log: the proxy (credentials hidden), where it was
    /// configured, and the exemptions; or that there is none.
    pub fn describe(&self) -> String {
        match self.through.as_deref() {
            None => "none: servers are dialled directly".to_owned(),
            Some(through) if through.exempt.is_empty() => {
                format!("{} (from {})", through.proxy, through.origin)
            }
            Some(through) => format!(
                "{} (from {}), except for NO_PROXY={:?}",
                through.proxy, through.origin, through.exempt
            ),
        }
    }
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxies({})", self.describe())
    }
}

/// `text`, a URL or a value holding one, with the user and password hidden:
/// for messages that quote a configured value (`scheme://user:pass@host/...`
/// and `user:pass@host:port` become `scheme://***@host/...`,
/// `***@host:port`). Whatever precedes the host's `@` goes, even what no
/// URL may hold (a mistyped password with a space).
pub(crate) fn hide_credentials(text: &str) -> String {
    let start = text.find("://").map_or(0, |at| at + 3);
    let rest = &text[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!(
            "{}{HIDDEN_CREDENTIALS}{}",
            &text[..start],
            &text[start + at..]
        ),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ProxyUrl {
        text.parse().unwrap()
    }

    #[test]
    fn a_proxy_url_is_http_host_and_port() {
        let plain = url("http://proxy.corp:3128");
        assert_eq!((plain.host(), plain.port()), ("proxy.corp", 3128));
        assert_eq!(plain.authorization(), None);
        assert!(!plain.has_credentials());
        let bare = url("proxy.corp:8080");
        assert_eq!((bare.host(), bare.port()), ("proxy.corp", 8080));
        let v6 = url("http://[fd00::3]:3128/");
        assert_eq!((v6.host(), v6.port()), ("fd00::3", 3128));
        assert_eq!(v6.to_string(), "http://[fd00::3]:3128");
        let upper = url("HTTP://10.0.0.1:3128");
        assert_eq!(upper.host(), "10.0.0.1");
    }

    #[test]
    fn what_is_no_http_proxy_is_refused_without_quoting_it() {
        let refused = |text: &str| text.parse::<ProxyUrl>().unwrap_err();
        assert_eq!(refused("https://u:secret@proxy:3128"), ProxyUrlError::Tls);
        assert_eq!(
            refused("socks5://u:secret@proxy:1080"),
            ProxyUrlError::Scheme("socks5".to_owned())
        );
        assert_eq!(refused("http://u:secret@proxy"), ProxyUrlError::NoPort);
        assert_eq!(refused("http://proxy:3128/path"), ProxyUrlError::Path);
        assert_eq!(refused("http://proxy:3128/?q=1"), ProxyUrlError::Path);
        assert_eq!(refused("http://proxy:3128#top"), ProxyUrlError::Path);
        assert_eq!(
            refused("http://u:se cret@proxy:3128"),
            ProxyUrlError::NotUrl
        );
        assert_eq!(refused(""), ProxyUrlError::NotUrl);
        for text in [
            "https://u:secret@proxy:3128",
            "socks5://u:secret@proxy:1080",
            "http://u:secret@proxy",
            "http://u:se cret@proxy:3128",
        ] {
            assert!(!refused(text).to_string().contains("secret"), "{text}");
        }
    }

    #[test]
    fn credentials_become_basic_authorization_and_are_never_shown() {
        // RFC 7617's example; the password percent-encoded in the URL.
        let proxy = url("http://Aladdin:open%20sesame@proxy.corp:3128");
        assert!(proxy.has_credentials());
        let header = proxy.authorization().unwrap();
        assert_eq!(header, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(header.is_sensitive());
        assert_eq!(proxy.to_string(), "http://***@proxy.corp:3128");
        for shown in [
            proxy.to_string(),
            format!("{proxy:?}"),
            format!("{:?}", Proxies::through(proxy.clone(), "", "--proxy")),
            Proxies::through(proxy.clone(), "", "--proxy").describe(),
        ] {
            assert!(!shown.contains("Aladdin"), "{shown}");
            assert!(!shown.contains("sesame"), "{shown}");
        }
    }

    #[test]
    fn no_proxy_sends_the_servers_it_names_directly() {
        let proxy = url("http://proxy.corp:3128");
        let proxies = Proxies::through(
            proxy.clone(),
            "internal.corp, 10.1.0.0/16, ::1",
            "HTTPS_PROXY",
        );
        assert_eq!(proxies.for_server("pipe.example.com", 1234), Some(&proxy));
        assert_eq!(proxies.for_server("10.2.0.1", 1234), Some(&proxy));
        for exempt in ["internal.corp", "pipe.internal.corp", "10.1.2.3", "::1"] {
            assert_eq!(proxies.for_server(exempt, 1234), None, "{exempt}");
        }
        let everything = Proxies::through(proxy.clone(), "*", "HTTPS_PROXY");
        assert_eq!(everything.for_server("pipe.example.com", 1234), None);
        assert_eq!(Proxies::direct().for_server("pipe.example.com", 1234), None);
        assert_eq!(Proxies::direct().proxy(), None);
        assert_eq!(
            proxies.describe(),
            "http://proxy.corp:3128 (from HTTPS_PROXY), except for NO_PROXY=\"internal.corp, 10.1.0.0/16, ::1\""
        );
    }

    #[test]
    fn quoted_values_hide_credentials() {
        assert_eq!(
            hide_credentials("http://alice:s3cret@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(
            hide_credentials("alice:s3cret@proxy:3128"),
            "***@proxy:3128"
        );
        assert_eq!(
            hide_credentials("files/=http://u:p@upstream:8080/a@b"),
            "files/=http://***@upstream:8080/a@b"
        );
        assert_eq!(
            hide_credentials("http://proxy:3128/a@b"),
            "http://proxy:3128/a@b"
        );
        assert_eq!(
            hide_credentials("http://alice:s3 cret@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(hide_credentials("0.5"), "0.5");
    }
}
