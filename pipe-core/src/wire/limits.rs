//! Limits on what one event or reply may carry besides its body: how many
//! headers and arguments, and how many bytes of them. A frame past a limit
//! is a protocol error for its receiver (a sender checks before sending, so
//! only a broken or hostile peer sends one). The counts are checked on the
//! frame's raw bytes before it is decoded, so a frame of many empty
//! repeated fields never decodes to many times its own size.

use super::proto;

/// Headers per event or reply: HTTP servers take about 100 (hyper's default
/// is 100, nginx's buffers hold fewer); 256 leaves room for forwarded ones.
pub const MAX_HEADERS: usize = 256;
/// Bytes of header names and values per event or reply: nginx's default
/// `large_client_header_buffers` is 32 KiB; twice that is generous.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Positional arguments per event: they come from one URL's path.
pub const MAX_ARGS: usize = 256;
/// Bytes of arguments per event: a URL longer than 64 KiB is refused by
/// every HTTP server in front of restpipe anyway.
pub const MAX_ARG_BYTES: usize = 64 * 1024;

/// A limit an event or reply broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More headers than [`MAX_HEADERS`].
    #[error("{count} headers exceed the limit of {MAX_HEADERS}")]
    TooManyHeaders {
        /// Headers counted (counting may stop just past the limit).
        count: usize,
    },
    /// More header bytes than [`MAX_HEADER_BYTES`].
    #[error("{bytes} bytes of headers exceed the limit of {MAX_HEADER_BYTES}")]
    HeadersTooLarge {
        /// Bytes of names and values.
        bytes: usize,
    },
    /// More arguments than [`MAX_ARGS`].
    #[error("{count} arguments exceed the limit of {MAX_ARGS}")]
    TooManyArgs {
        /// Arguments counted (counting may stop just past the limit).
        count: usize,
    },
    /// More argument bytes than [`MAX_ARG_BYTES`].
    #[error("{bytes} bytes of arguments exceed the limit of {MAX_ARG_BYTES}")]
    ArgsTooLarge {
        /// Bytes of all arguments.
        bytes: usize,
    },
    /// A job id longer than [`MAX_JOB_ID`] or not of letters and digits.
    #[error("a job id must be 1 to {MAX_JOB_ID} ASCII letters and digits ({bytes} bytes given)")]
    BadJobId {
        /// Its length.
        bytes: usize,
    },
}

/// Longest job id an event may carry.
pub const MAX_JOB_ID: usize = 64;

impl LimitError {
    /// What was counted, its count and the limit: for
    /// [`crate::link::RequestError::TooLarge`].
    pub fn parts(&self) -> (&'static str, usize, usize) {
        match *self {
            Self::TooManyHeaders { count } => ("headers", count, MAX_HEADERS),
            Self::HeadersTooLarge { bytes } => ("header bytes", bytes, MAX_HEADER_BYTES),
            Self::TooManyArgs { count } => ("arguments", count, MAX_ARGS),
            Self::ArgsTooLarge { bytes } => ("argument bytes", bytes, MAX_ARG_BYTES),
            Self::BadJobId { bytes } => ("job id bytes", bytes, MAX_JOB_ID),
        }
    }
}

/// Checks an event's headers and arguments against the limits.
pub(crate) fn check_event(event: &proto::Event) -> Result<(), LimitError> {
    check_headers(&event.headers)?;
    if event.args.len() > MAX_ARGS {
        return Err(LimitError::TooManyArgs {
            count: event.args.len(),
        });
    }
    let bytes: usize = event.args.iter().map(String::len).sum();
    if bytes > MAX_ARG_BYTES {
        return Err(LimitError::ArgsTooLarge { bytes });
    }
    let job = &event.job_id;
    if job.len() > MAX_JOB_ID || !job.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(LimitError::BadJobId { bytes: job.len() });
    }
    Ok(())
}

/// Checks a reply's headers against the limits.
pub(crate) fn check_reply(reply: &proto::Reply) -> Result<(), LimitError> {
    check_headers(&reply.headers)
}

fn check_headers(headers: &[proto::Header]) -> Result<(), LimitError> {
    if headers.len() > MAX_HEADERS {
        return Err(LimitError::TooManyHeaders {
            count: headers.len(),
        });
    }
    let bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(LimitError::HeadersTooLarge { bytes });
    }
    Ok(())
}

/// Field numbers in `pipe.proto` that the pre-decode count looks at.
const FRAME_EVENT: u64 = 2;
const FRAME_REPLY: u64 = 3;
const EVENT_ARGS: u64 = 4;
const EVENT_HEADERS: u64 = 9;
const REPLY_HEADERS: u64 = 5;

/// Counts the repeated fields of an encoded `Frame` without decoding it:
/// an event's arguments and headers, a reply's headers. Bytes it cannot
/// parse are left for the real decoder to reject.
pub(crate) fn check_counts(frame: &[u8]) -> Result<(), LimitError> {
    // Totals over every occurrence: protobuf merges a repeated message field.
    let (mut args, mut headers) = (0, 0);
    let mut fields = Fields(frame);
    while let Some((number, value)) = fields.next_field() {
        let Some(inner) = value else { continue };
        let (more_args, more_headers) = match number {
            FRAME_EVENT => count(inner, EVENT_ARGS, EVENT_HEADERS),
            FRAME_REPLY => count(inner, 0, REPLY_HEADERS),
            _ => continue,
        };
        args += more_args;
        headers += more_headers;
        if headers > MAX_HEADERS {
            return Err(LimitError::TooManyHeaders { count: headers });
        }
        if args > MAX_ARGS {
            return Err(LimitError::TooManyArgs { count: args });
        }
    }
    Ok(())
}

/// How many length-delimited fields numbered `first` and `second` a message
/// holds.
fn count(message: &[u8], first: u64, second: u64) -> (usize, usize) {
    let mut counts = (0, 0);
    let mut fields = Fields(message);
    while let Some((number, _)) = fields.next_field() {
        if number == first {
            counts.0 += 1;
        } else if number == second {
            counts.1 += 1;
        }
    }
    counts
}

/// The fields of one protobuf message, as (field number, the bytes of a
/// length-delimited value). Stops at the first byte it cannot parse.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Option<(u64, Option<&'a [u8]>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => self.varint().map(|_| None)?,
            1 => self.skip(8).map(|_| None)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Some(self.skip(len)?)
            }
            5 => self.skip(4).map(|_| None)?,
            _ => return None,
        };
        Some((key >> 3, value))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }
}

/// Longest text from a peer (a `GoAway` reason, a cancel reason, a body's
/// error) kept for logs, status and hooks: enough to explain, too little to
/// flood them.
pub const MAX_PEER_TEXT: usize = 256;

/// `text` from a peer as it may be shown to people and hooks: control
/// characters escaped (no terminal escapes or forged log lines), and cut
/// to [`MAX_PEER_TEXT`] characters with an ellipsis.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len().min(MAX_PEER_TEXT + 8));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_PEER_TEXT {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::*;
    use crate::wire::proto::{Frame, frame::Body};

    fn encoded(body: Body) -> Vec<u8> {
        Frame { body: Some(body) }.encode_to_vec()
    }

    #[test]
    fn counts_are_read_from_the_raw_frame() {
        let event = proto::Event {
            args: vec![String::new(); MAX_ARGS],
            headers: vec![proto::Header::default(); MAX_HEADERS],
            body: Bytes::from_static(b"body"),
            timeout_ms: 5,
            ..Default::default()
        };
        assert_eq!(check_counts(&encoded(Body::Event(event.clone()))), Ok(()));
        let mut many_args = event.clone();
        many_args.args.push(String::new());
        assert_eq!(
            check_counts(&encoded(Body::Event(many_args))),
            Err(LimitError::TooManyArgs {
                count: MAX_ARGS + 1
            })
        );
        let reply = proto::Reply {
            headers: vec![proto::Header::default(); MAX_HEADERS + 1],
            ..Default::default()
        };
        assert_eq!(
            check_counts(&encoded(Body::Reply(reply))),
            Err(LimitError::TooManyHeaders {
                count: MAX_HEADERS + 1
            })
        );
        // Garbage is the decoder's to reject.
        assert_eq!(check_counts(&[0xff, 0xff, 0x07]), Ok(()));
    }

    #[test]
    fn header_and_argument_bytes_are_bounded() {
        let event = proto::Event {
            args: vec!["a".repeat(MAX_ARG_BYTES + 1)],
            ..Default::default()
        };
        assert!(matches!(
            check_event(&event),
            Err(LimitError::ArgsTooLarge { .. })
        ));
        let reply = proto::Reply {
            headers: vec![proto::Header {
                name: "x-big".into(),
                value: Bytes::from(vec![b'v'; MAX_HEADER_BYTES]),
            }],
            ..Default::default()
        };
        assert!(matches!(
            check_reply(&reply),
            Err(LimitError::HeadersTooLarge { .. })
        ));
    }

    #[test]
    fn peer_text_is_escaped_and_capped() {
        assert_eq!(printable("shutting down"), "shutting down");
        assert_eq!(
            printable("a\u{1b}[31mred\nforged"),
            "a\\u{1b}[31mred\\nforged"
        );
        let long = printable(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_PEER_TEXT + 1);
        assert!(long.ends_with('…'));
    }
}
