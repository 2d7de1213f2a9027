//! Forwards: a noun prefix answered by a local HTTP upstream, with no
//! handler to write.
//!
//! This is the original project's example use case: a public web server
//! reads a file server that sits behind a firewall on a client node's host.
//! The client node is started with
//!
//! ```text
//! pipe-client serve --forward files/=http://127.0.0.1:8080/ ...
//! ```
//!
//! (or `RP_FORWARDS="files/=http://127.0.0.1:8080/"`, or
//! `forwards = ["files/=http://127.0.0.1:8080/"]` in the config file), and
//! the server side asks `GET /client/<name>/files/report.pdf`: the request
//! reaches the file server as `GET /report.pdf`, and the file server's
//! status, content type, headers and body come back to the caller.
//!
//! # Which events a forward answers
//!
//! A prefix is one or more noun segments (letters, digits, `_`, `-`, `.`,
//! `~`, as in any noun), written with or without a trailing `/`: `files/`
//! and `files` mean the same thing, the noun `files` and every noun under
//! it (`files/report`, `files/report/2024`), for every verb. It never
//! matches part of a segment: `files/` does not answer `filesystem`.
//! When several prefixes match, the longest wins (`files/private/` before
//! `files/`). Handlers come first: a built-in or Rust handler with the
//! event's name (`get_files`) answers instead of the forward, and a forward
//! answers before the handler directory.
//!
//! # The upstream request
//!
//! The upstream URL is `http://HOST[:PORT][/BASE/]`: plain HTTP, because the
//! upstream is local to this node (port 80 when none is given). Its path is
//! the base every forwarded path is put under. With the forward
//! `files/=http://127.0.0.1:8080/base/` on a client node (a forward on the
//! server node works the same for callers of `/server/files...`):
//!
//! | the caller asks the server node (forward on client `branch-1`) | the upstream gets |
//! |---|---|
//! | `GET /client/branch-1/files` | `GET /base/` |
//! | `GET /client/branch-1/files/report/2024?x=1` | `GET /base/report/2024?x=1` |
//! | `GET /client/branch-1/files//dir%20a/b.txt` | `GET /base/dir%20a/b.txt` |
//! | `GET /client/branch-1/files/docs//a%2Fb.txt` | `GET /base/docs/a%2Fb.txt` |
//! | `POST /client/branch-1/files/upload` + body | `POST /base/upload` + the same body |
//!
//! - **Method**: the verb, upper-cased. `HEAD` travels through the pipe as
//!   `GET`, so the upstream sees `GET` (the caller still gets no body).
//! - **Path**: the base path, `/`, then the noun segments after the prefix,
//!   then each argument (after `//`) as one more path segment. Arguments are
//!   percent-encoded again, everything but `A-Za-z0-9-._~`, so a `/` inside
//!   an argument stays `%2F` and never splits it. An argument that is `.`
//!   or `..`, or has such a piece between `/` or `\` (`../x`, `a\..`), is
//!   refused: it would climb out of the base path, at once or at an
//!   upstream that decodes `%2F` before resolving dots.
//! - **Query**: appended exactly as the caller sent it.
//! - **Headers**: the caller's end-to-end headers (`Accept`,
//!   `If-None-Match`, `Authorization`, `Range`...; not hop-by-hop ones such
//!   as `Connection`), the caller's `Content-Type`, `Host` set to the
//!   upstream's authority, and `X-Restpipe-Peer` naming the node that sent
//!   the event (the identity in its certificate), so the upstream knows who
//!   asked. A caller cannot set `X-Restpipe-Peer` itself.
//! - **Body**: streamed to the upstream as it arrives through the pipe, with
//!   `Content-Length` when the caller gave one.
//!
//! # The reply
//!
//! Whatever the upstream answers, its status is the caller's status (a 404
//! stays a 404) with `X-Event-Return-Code: 0` (the forward ran); its
//! `Content-Type`, its end-to-end headers (`ETag`, `Last-Modified`...) and
//! its body, streamed, come back. When the upstream cannot be reached or
//! fails before answering, the caller gets 500 with return code 251 and an
//! `UpstreamError` naming the upstream and the cause. Waiting for the
//! upstream's answer is bounded by the request's deadline (`X-Pipe-Timeout`)
//! and stops when the caller gives up; once the body streams, an upstream
//! that stays silent for as long as the deadline allowed is cut off.
//!
//! Connections to upstreams are kept alive and reused. At most
//! `max_upstream_connections` (256) requests to upstreams are in progress at
//! once on a node, for all forwards together, each holding its place until
//! the upstream's body has been read: so at most that many connections,
//! busy or pooled. Past it a request waits for a place for up to half the
//! time its deadline leaves, then gets 503 (`Busy`).
//!
//! The code, one concept a file: `forwards` (the configured forwards, and
//! which of them answers an event), `route` (one prefix and its upstream:
//! parsing the spec, the upstream URL for an event), `proxy` (one forwarded
//! request and the streamed reply) and `request_body` (the event's body as
//! the upstream request's).

mod download;
mod forwards;
mod proxy;
mod request_body;
mod route;

#[cfg(test)]
mod tests;

pub use forwards::{DEFAULT_MAX_UPSTREAM_CONNECTIONS, Forwards};
pub use proxy::PEER_HEADER;
