//! The reply's content type for a handler's output: a leading
//! `Content-Type` line, JSON if the whole output parses, bytes otherwise.

use bytes::Bytes;

use crate::wire::JSON;

/// The content type of output that is neither declared nor JSON.
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// The reply's type and body for a whole output: a declared type (and the
/// body after its header), JSON if it parses, bytes otherwise.
pub(super) fn typed(output: Bytes) -> (String, Bytes) {
    if let Some((content_type, body_start)) = declared_type(&output) {
        return (content_type, output.slice(body_start..));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok() {
        return (JSON.to_owned(), output);
    }
    (OCTET_STREAM.to_owned(), output)
}

/// A leading `Content-Type: type/subtype` line followed by an empty line:
/// the type and where the body starts.
pub(super) fn declared_type(output: &[u8]) -> Option<(String, usize)> {
    const PREFIX: &[u8] = b"content-type:";
    /// A header line longer than this is not one.
    const MAX_LINE: usize = 1024;
    let head = output.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let line_end = output.iter().take(MAX_LINE).position(|&b| b == b'\n')?;
    let line = &output[PREFIX.len()..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let value = std::str::from_utf8(line).ok()?.trim();
    let valid = value.contains('/')
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if !valid {
        return None;
    }
    let rest = &output[line_end + 1..];
    let blank = if rest.starts_with(b"\n") {
        1
    } else if rest.starts_with(b"\r\n") {
        2
    } else {
        return None;
    };
    Some((value.to_owned(), line_end + 1 + blank))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_type_is_taken_and_stripped() {
        let (kind, body) = typed(Bytes::from_static(b"Content-Type: text/csv\n\na,b\n"));
        assert_eq!((kind.as_str(), &body[..]), ("text/csv", &b"a,b\n"[..]));
        let (kind, body) = typed(Bytes::from_static(
            b"content-type:  text/plain; charset=utf-8 \r\n\r\nhi",
        ));
        assert_eq!(
            (kind.as_str(), &body[..]),
            ("text/plain; charset=utf-8", &b"hi"[..])
        );
        let (kind, body) = typed(Bytes::from_static(b"Content-Type: text/plain\n\n"));
        assert_eq!((kind.as_str(), &body[..]), ("text/plain", &b""[..]));
        // No blank line, no slash, or not first: not a header.
        for output in [
            &b"Content-Type: text/plain\nhello"[..],
            b"Content-Type: plain\n\nhello",
            b"hello\nContent-Type: text/plain\n\n",
            b"Content-Type: text/plain",
        ] {
            assert_eq!(typed(Bytes::from(output)).0, OCTET_STREAM, "{output:?}");
        }
    }

    #[test]
    fn undeclared_output_is_json_if_it_parses() {
        assert_eq!(typed(Bytes::from_static(b"{\"a\": 1}\n")).0, JSON);
        assert_eq!(typed(Bytes::from_static(b"[1, 2]")).0, JSON);
        assert_eq!(typed(Bytes::from_static(b"{\"a\": ")).0, OCTET_STREAM);
        assert_eq!(typed(Bytes::from_static(b"hello\n")).0, OCTET_STREAM);
        assert_eq!(typed(Bytes::new()).0, OCTET_STREAM);
    }
}
