//! One forward: a noun prefix and its upstream, parsed from the operator's
//! spec, and the upstream URL an event under the prefix becomes.

use http::Uri;
use http::uri::{Authority, Scheme};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Bytes left as they are in an argument: RFC 3986's unreserved characters.
/// Everything else (`/`, `%`, `?`, `#`, space, non-ASCII...) is encoded.
const ARGUMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One forward: a prefix and where it goes.
#[derive(Debug)]
pub(super) struct Route {
    /// Noun segments without a trailing `/`, e.g. `files` or `files/private`.
    pub(super) prefix: String,
    /// `host:port` of the upstream, as configured.
    pub(super) authority: Authority,
    /// The upstream URL's path without its trailing `/`: `` or `/base`.
    pub(super) base: String,
}

impl Route {
    /// Whether the forward answers `noun`: the prefix itself, or under it.
    pub(super) fn matches(&self, noun: &str) -> bool {
        noun.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The upstream, for messages and `/_pipe/status`.
    pub(super) fn url(&self) -> String {
        format!("http://{}{}/", self.authority, self.base)
    }

    /// The upstream URI for `noun` (under this prefix), `args` and `query`.
    pub(super) fn upstream_uri(
        &self,
        noun: &str,
        args: &[String],
        query: &str,
    ) -> Result<Uri, String> {
        let remainder = noun
            .strip_prefix(&self.prefix)
            .unwrap_or_default()
            .trim_start_matches('/');
        let mut path = format!("{}/{remainder}", self.base);
        for (i, arg) in args.iter().enumerate() {
            // Not only `..` itself: many upstreams decode `%2F` and `%5C`
            // before resolving dot segments, so `../x` (sent as `..%2Fx`)
            // would climb out of the base path there.
            if arg
                .split(['/', '\\'])
                .any(|piece| piece == "." || piece == "..")
            {
                return Err(format!(
                    "argument {arg:?} would leave the upstream's base path"
                ));
            }
            if i > 0 || !remainder.is_empty() {
                path.push('/');
            }
            path.extend(utf8_percent_encode(arg, ARGUMENT));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path.as_str())
            .build()
            .map_err(|error| format!("cannot build the upstream URL for {path:?}: {error}"))
    }
}

/// Whether `segment` is a valid noun segment, as the router accepts them.
pub(super) fn is_noun_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
}

/// `files/` or `files` → `files`; `a/b/` → `a/b`.
pub(super) fn parse_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err("the prefix is empty: name a noun such as files/".to_owned());
    }
    if let Some(bad) = trimmed.split('/').find(|s| !is_noun_segment(s)) {
        return Err(format!(
            "prefix segment {bad:?} is not a noun segment (letters, digits, '_', '-', '.', '~'; not '.' or '..')"
        ));
    }
    Ok(trimmed.to_owned())
}

/// The authority and base path (without trailing `/`) of an upstream URL.
pub(super) fn parse_upstream(url: &str) -> Result<(Authority, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {}
        Some(scheme) => {
            return Err(format!(
                "the upstream must be http:// (it is local to this node), not {scheme}://"
            ));
        }
        None => return Err(format!("{url:?} must start with http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} names no host"));
    };
    if authority.as_str().contains('@') {
        return Err("the upstream URL may not carry a user or password".to_owned());
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    // `Authority::port` hides a port that does not parse; look at the text.
    let port = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    if !port.is_empty() && authority.port_u16().is_none_or(|port| port == 0) {
        return Err(format!("{url:?} has an invalid port"));
    }
    if uri.query().is_some() {
        return Err("the upstream URL may not have a query".to_owned());
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((authority.clone(), base))
}
