//! Who gets in at the local front once it has API tokens (`--api-tokens`).
//!
//! The rule, path by path:
//!
//! - `/_pipe/health` is open, so supervisors and load balancers need no
//!   secret (it tells only that the node runs, its name and peer count);
//! - every other request needs `Authorization: Bearer <token>` with a token
//!   of the file: without one, 401 with `WWW-Authenticate: Bearer`;
//! - a piped request needs a token whose handlers cover the handler the
//!   front derives (`GET /server/time` → `get_time`) and, on a server node,
//!   whose clients cover the client name: otherwise 403;
//! - `/_pipe/status`, `/_pipe/peers` and `/_pipe/metrics` take any valid
//!   token: they describe the node, not a handler; the status page
//!   (`/_pipe/`) needs none: it is the same HTML on every node, and it reads
//!   the status with the token it asks for;
//! - a job follows the scope of the piped request that made it: reading or
//!   cancelling it needs a token that covers its handler and peer (403
//!   otherwise), a listing shows only the jobs the token covers, and
//!   purging, which forgets every peer's jobs, needs a token that covers
//!   every handler and client (`"*"` in both).
//!
//! The file is read at start (a bad file stops the node) and again on
//! SIGHUP, where a bad file is logged and the tokens in force stay. Logs
//! name a token, never its secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tracing::{debug, info};

use super::response::{ResponseBody, error_response};
use super::tokens::{ApiToken, ApiTokens, TokenError};
use crate::wire::Side;

/// The challenge of a 401: RFC 6750's scheme, and the realm it names.
const CHALLENGE: &str = "Bearer realm=\"restpipe\"";
/// The challenge of a 401 for a token that is no token of the file.
const CHALLENGE_INVALID: &str = "Bearer realm=\"restpipe\", error=\"invalid_token\"";
/// The challenge of a 403: a token whose scope does not cover the request.
const CHALLENGE_SCOPE: &str = "Bearer realm=\"restpipe\", error=\"insufficient_scope\"";

/// A node's token file and the tokens in force, replaced whole on reload.
#[derive(Debug)]
pub struct TokenGate {
    path: PathBuf,
    side: Side,
    current: RwLock<Arc<ApiTokens>>,
}

impl TokenGate {
    /// Reads the token file of a node on `side`.
    pub fn load(path: &Path, side: Side) -> Result<Self, TokenError> {
        let tokens = ApiTokens::load(path, side)?;
        Ok(Self {
            path: path.to_owned(),
            side,
            current: RwLock::new(Arc::new(tokens)),
        })
    }

    /// Reads the file again and puts its tokens in force: requests from now
    /// on are checked against them. On error the tokens in force stay.
    /// Returns how many tokens are in force.
    pub fn reload(&self) -> Result<usize, TokenError> {
        let tokens = ApiTokens::load(&self.path, self.side)?;
        let count = tokens.len();
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tokens);
        Ok(count)
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<ApiTokens> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The token a request carries, or the 401 that refuses it (boxed: a
    /// response is large beside a token). `caller` is for the log.
    pub(super) fn admit(
        &self,
        headers: &HeaderMap,
        caller: &str,
    ) -> Result<Arc<ApiToken>, Box<Response<ResponseBody>>> {
        let secret = match bearer(headers) {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                debug!(caller, "local request refused: no API token");
                return Err(Box::new(unauthorized(
                    "this node's local API needs a token: send Authorization: Bearer <token>",
                    CHALLENGE,
                )));
            }
            Err(message) => {
                debug!(caller, "local request refused: {message}");
                return Err(Box::new(unauthorized(message, CHALLENGE)));
            }
        };
        match self.tokens().find(secret) {
            Some(token) => Ok(token),
            None => {
                info!(
                    caller,
                    "local request refused: not an API token of this node"
                );
                Err(Box::new(unauthorized(
                    "the API token is not valid on this node (unknown, or no longer in its token file)",
                    CHALLENGE_INVALID,
                )))
            }
        }
    }
}

/// The secret of `Authorization: Bearer <secret>`: `None` without the
/// header, an error for another scheme or an unreadable value.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let refused = "Authorization must be Bearer <token>";
    let value = value.to_str().map_err(|_| refused)?.trim();
    let (scheme, secret) = value.split_once(' ').ok_or(refused)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(refused);
    }
    Ok(Some(secret))
}

fn unauthorized(message: &str, challenge: &'static str) -> Response<ResponseBody> {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// 403 for a valid token outside its scope; `why` names the token and
/// what it may not do.
pub(super) fn forbidden(why: &str, caller: &str) -> Response<ResponseBody> {
    info!(caller, "local request refused: {why}");
    let mut response = error_response(StatusCode::FORBIDDEN, why);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE_SCOPE),
    );
    response
}

/// The 403 for a request to `handler` on `peer` that `token` does not
/// cover, or `None` when there is no token to check (a front without
/// tokens) or it covers it.
pub(super) fn refuse_out_of_scope(
    token: Option<&ApiToken>,
    handler: &str,
    peer: &str,
    caller: &str,
) -> Option<Response<ResponseBody>> {
    let why = token?.refusal(handler, peer)?;
    Some(forbidden(&why, caller))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_secret_is_what_follows_bearer_in_any_case() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&with_authorization("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(&with_authorization("bearer  abc ")), Ok(Some("abc")));
        for refused in ["Basic YTpi", "Bearer", "Bearer   ", "abc"] {
            assert!(bearer(&with_authorization(refused)).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn refusals_carry_the_challenge_and_the_json_error() {
        let response = unauthorized("no", CHALLENGE);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], crate::wire::JSON);
        let response = forbidden("API token \"x\" may not call get_time", "test");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            CHALLENGE_SCOPE
        );
    }
}
