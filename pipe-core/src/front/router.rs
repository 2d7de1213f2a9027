//! Turns a local HTTP request line into the event it stands for.
//!
//! Client node: `VERB /server/<noun>[//arg1/arg2...][?query]`.
//! Server node: `VERB /client/<name>/<noun>[//arg1/arg2...][?query]`.
//! The handler a request reaches is the lower-case verb, `_`, and the noun
//! with `/` turned into `_`: `GET /server/time/utc` → `get_time_utc`.

use http::Method;
use percent_encoding::percent_decode_str;

/// Path prefix for requests a client node pipes to its server.
pub const SERVER_PREFIX: &str = "/server/";
/// Path prefix for requests a server node pipes to one of its clients.
pub const CLIENT_PREFIX: &str = "/client/";

/// An HTTP method the pipe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `HEAD`, handled as `GET` with the body dropped.
    Head,
}

impl Verb {
    /// The verb for an HTTP method, or `None` for one the pipe does not carry.
    pub fn from_method(method: &Method) -> Option<Self> {
        Some(match *method {
            Method::GET => Self::Get,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::PATCH => Self::Patch,
            Method::DELETE => Self::Delete,
            Method::HEAD => Self::Head,
            _ => return None,
        })
    }

    /// The verb as it travels in an event (HEAD travels as `get`).
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Get | Self::Head => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }
}

/// The value of the `Allow` header on a 405.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD";

/// The piped part of a request path: which handler, with which arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipedPath {
    /// Noun segments joined by `/`, e.g. `time/utc`.
    pub noun: String,
    /// Percent-decoded arguments after `//`.
    pub args: Vec<String>,
}

/// Why a request path cannot be piped; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing named a handler (`/server/` alone).
    #[error("the path names no handler: expected {0}<noun>")]
    MissingNoun(&'static str),
    /// A noun segment holds characters a handler name cannot.
    #[error(
        "noun segment {0:?} may contain only letters, digits, '_', '-', '.' and '~' (and not be '.' or '..')"
    )]
    BadNounSegment(String),
    /// A client name outside `[A-Za-z0-9_.-]+`.
    #[error("client name {0:?} may contain only letters, digits, '_', '-' and '.'")]
    BadClientName(String),
    /// An argument with a `%` not followed by two hex digits.
    #[error("argument {0:?} has malformed percent-encoding")]
    BadPercentEncoding(String),
    /// An argument that does not decode to UTF-8.
    #[error("argument {0:?} does not decode to UTF-8")]
    ArgumentNotUtf8(String),
}

/// Parses what follows `/server/` on a client node. `None` if the path is
/// not a piped path at all.
pub fn parse_server_path(path: &str) -> Option<Result<PipedPath, RouteError>> {
    let rest = path
        .strip_prefix(SERVER_PREFIX)
        .or_else(|| (path == SERVER_PREFIX.trim_end_matches('/')).then_some(""))?;
    Some(parse_piped(rest, SERVER_PREFIX))
}

/// Parses `/client/<name>/...` on a server node into the client name and the
/// piped path. `None` if the path is not a piped path at all.
pub fn parse_client_path(path: &str) -> Option<Result<(String, PipedPath), RouteError>> {
    let rest = path
        .strip_prefix(CLIENT_PREFIX)
        .or_else(|| (path == CLIENT_PREFIX.trim_end_matches('/')).then_some(""))?;
    let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some((|| {
        if name.is_empty() {
            return Err(RouteError::MissingNoun("/client/<name>/"));
        }
        if !is_node_name(name) {
            return Err(RouteError::BadClientName(name.to_owned()));
        }
        Ok((name.to_owned(), parse_piped(rest, "/client/<name>/")?))
    })())
}

/// Whether `name` is a valid node identity: `[A-Za-z0-9_.-]+`, not `.`/`..`.
pub fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn parse_piped(rest: &str, prefix: &'static str) -> Result<PipedPath, RouteError> {
    let (noun_part, args_part) = match rest.split_once("//") {
        Some((noun, args)) => (noun, Some(args)),
        None => (rest, None),
    };
    let noun_part = noun_part.strip_suffix('/').unwrap_or(noun_part);
    if noun_part.is_empty() {
        return Err(RouteError::MissingNoun(prefix));
    }
    for segment in noun_part.split('/') {
        let valid = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'));
        if !valid {
            return Err(RouteError::BadNounSegment(segment.to_owned()));
        }
    }
    let args = match args_part {
        None | Some("") => Vec::new(),
        Some(args) => args.split('/').map(decode_arg).collect::<Result<_, _>>()?,
    };
    Ok(PipedPath {
        noun: noun_part.to_owned(),
        args,
    })
}

/// Strict percent-decoding: `%` must be followed by two hex digits, and the
/// result must be UTF-8 (the `percent-encoding` crate passes bad escapes
/// through unchanged, which would hide a caller's mistake).
fn decode_arg(raw: &str) -> Result<String, RouteError> {
    let bytes = raw.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(RouteError::BadPercentEncoding(raw.to_owned()));
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RouteError::ArgumentNotUtf8(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piped(noun: &str, args: &[&str]) -> PipedPath {
        PipedPath {
            noun: noun.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn server_paths_of_the_readme() {
        assert_eq!(
            parse_server_path("/server/time"),
            Some(Ok(piped("time", &[])))
        );
        assert_eq!(
            parse_server_path("/server/cat//hello%20/world"),
            Some(Ok(piped("cat", &["hello ", "world"])))
        );
        assert_eq!(
            parse_server_path("/server/time/utc"),
            Some(Ok(piped("time/utc", &[])))
        );
        assert_eq!(
            parse_server_path("/server/time/"),
            Some(Ok(piped("time", &[])))
        );
        assert_eq!(
            parse_server_path("/server/cat//%C3%A9t%C3%A9//x"),
            Some(Ok(piped("cat", &["été", "", "x"])))
        );
    }

    #[test]
    fn non_piped_paths_are_none() {
        assert_eq!(parse_server_path("/_pipe/health"), None);
        assert_eq!(parse_server_path("/serverx/time"), None);
        assert_eq!(parse_client_path("/server/time"), None);
    }

    #[test]
    fn client_paths_carry_the_name() {
        assert_eq!(
            parse_client_path("/client/node-1.example/cat//a%2Fb"),
            Some(Ok(("node-1.example".into(), piped("cat", &["a/b"]))))
        );
        assert_eq!(
            parse_client_path("/client/bad%20name/time"),
            Some(Err(RouteError::BadClientName("bad%20name".into())))
        );
        assert_eq!(
            parse_client_path("/client/node1"),
            Some(Err(RouteError::MissingNoun("/client/<name>/")))
        );
        assert_eq!(
            parse_client_path("/client/"),
            Some(Err(RouteError::MissingNoun("/client/<name>/")))
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_guess() {
        assert_eq!(
            parse_server_path("/server/"),
            Some(Err(RouteError::MissingNoun(SERVER_PREFIX)))
        );
        assert_eq!(
            parse_server_path("/server/cat//bad%zz"),
            Some(Err(RouteError::BadPercentEncoding("bad%zz".into())))
        );
        assert_eq!(
            parse_server_path("/server/cat//trailing%4"),
            Some(Err(RouteError::BadPercentEncoding("trailing%4".into())))
        );
        assert_eq!(
            parse_server_path("/server/cat//%ff"),
            Some(Err(RouteError::ArgumentNotUtf8("%ff".into())))
        );
        assert_eq!(
            parse_server_path("/server/../etc"),
            Some(Err(RouteError::BadNounSegment("..".into())))
        );
        assert_eq!(
            parse_server_path("/server/a%20b"),
            Some(Err(RouteError::BadNounSegment("a%20b".into())))
        );
    }

    #[test]
    fn verbs() {
        assert_eq!(
            Verb::from_method(&Method::HEAD).map(Verb::as_wire),
            Some("get")
        );
        assert_eq!(
            Verb::from_method(&Method::PATCH).map(Verb::as_wire),
            Some("patch")
        );
        assert_eq!(Verb::from_method(&Method::OPTIONS), None);
        assert_eq!(Verb::from_method(&Method::TRACE), None);
    }

    #[test]
    fn node_names() {
        assert!(is_node_name("client-1.example_x"));
        assert!(!is_node_name(""));
        assert!(!is_node_name(".."));
        assert!(!is_node_name("a b"));
        assert!(!is_node_name("a/b"));
    }

    mod properties {
        //! Arguments encoded as a caller (or a forward) encodes them come
        //! back as they were.

        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        use proptest::prelude::*;

        use super::super::*;

        /// What a careful caller encodes: all but RFC 3986's unreserved.
        const ARGUMENT: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');

        fn noun() -> impl Strategy<Value = String> {
            prop::collection::vec("[A-Za-z0-9_.~-]{1,8}", 1..4)
                .prop_filter("no dot segments", |segments| {
                    segments.iter().all(|s| s != "." && s != "..")
                })
                .prop_map(|segments| segments.join("/"))
        }

        /// Any arguments, but not one empty one alone: `noun//` is the
        /// same path as `noun`, so that list cannot be told from none.
        fn args() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(any::<String>(), 0..5)
                .prop_filter("one empty argument", |args| args != &[String::new()])
        }

        /// Every byte as `%xx`, in lower case.
        fn encode_all(arg: &str) -> String {
            arg.bytes().map(|b| format!("%{b:02x}")).collect()
        }

        fn path(prefix: &str, noun: &str, args: &[String], encode: fn(&str) -> String) -> String {
            if args.is_empty() {
                return format!("{prefix}{noun}");
            }
            let encoded: Vec<String> = args.iter().map(|arg| encode(arg)).collect();
            format!("{prefix}{noun}//{}", encoded.join("/"))
        }

        fn encode_minimal(arg: &str) -> String {
            utf8_percent_encode(arg, ARGUMENT).to_string()
        }

        proptest! {
            #[test]
            fn arguments_round_trip_however_they_are_encoded(noun in noun(), args in args()) {
                let expected = PipedPath { noun: noun.clone(), args: args.clone() };
                for encode in [encode_minimal as fn(&str) -> String, encode_all] {
                    let path = path(SERVER_PREFIX, &noun, &args, encode);
                    prop_assert_eq!(parse_server_path(&path), Some(Ok(expected.clone())), "{}", path);
                }
            }

            #[test]
            fn client_paths_carry_the_name_and_the_same_arguments(
                name in "[A-Za-z0-9_.-]{1,12}",
                noun in noun(),
                args in args(),
            ) {
                prop_assume!(name != "." && name != "..");
                let path = path(&format!("{CLIENT_PREFIX}{name}/"), &noun, &args, encode_minimal);
                let expected = PipedPath { noun, args };
                prop_assert_eq!(parse_client_path(&path), Some(Ok((name, expected))), "{}", path);
            }

            #[test]
            fn a_percent_without_two_hex_digits_is_refused(
                before in "[a-z]{0,4}",
                after in "([g-z%]|[0-9a-f][g-z%]?)?",
            ) {
                let arg = format!("{before}%{after}");
                let path = format!("{SERVER_PREFIX}cat//{arg}");
                prop_assert_eq!(
                    parse_server_path(&path),
                    Some(Err(RouteError::BadPercentEncoding(arg)))
                );
            }
        }
    }
}
