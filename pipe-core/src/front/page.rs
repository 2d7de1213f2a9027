//! `GET /_pipe/`: the status page, for people. One self-contained HTML
//! file (inline CSS and script, no external assets, so it works offline
//! and behind any firewall) that reads `/_pipe/status` every 2 s and shows
//! it. The page itself carries no data: everything it shows comes from the
//! status document, written into the page as text (never as markup: peer
//! names come from certificates). Its headers forbid loading anything but
//! the node's own status, and caching.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::response::{ResponseBody, full};

/// The page's path, and the same without its trailing slash.
pub(super) const PAGE_PATHS: [&str; 2] = ["/_pipe/", "/_pipe"];

/// The page: one file beside this one, so it can be read and edited as HTML.
const PAGE: &str = include_str!("status_page.html");

/// What the page may do: run its own inline script and style, fetch from
/// its own origin (the status document), and nothing else: no external
/// scripts, images, fonts or frames, and no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page with its headers.
pub(super) fn page_response() -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from_static(PAGE.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for attribute in ["src=", "href="] {
            for (at, _) in PAGE.match_indices(attribute) {
                let value = &PAGE[at + attribute.len()..];
                let value = value.trim_start_matches(['"', '\'']);
                assert!(
                    !value.starts_with("http:")
                        && !value.starts_with("https:")
                        && !value.starts_with("//"),
                    "an external reference at byte {at}"
                );
            }
        }
        assert!(!PAGE.contains("innerHTML"), "data goes in as text only");
    }

    #[test]
    fn the_page_has_its_headers() {
        let response = page_response();
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .is_ok_and(|policy| policy.starts_with("default-src 'none'"))
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
}
