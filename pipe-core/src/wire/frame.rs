//! The wire format: a 4-byte big-endian length, then one protobuf [`Frame`].
//!
//! Splitting "is a whole frame here?" (the length prefix) from "decode it"
//! (prost) keeps both halves small. The length is checked against the
//! configured maximum *before* any buffer is reserved, so a hostile or broken
//! peer cannot make us allocate more than one maximum frame.

use bytes::{Buf, BytesMut};
use prost::Message;
use tokio_util::codec::Decoder;

use super::limits::LimitError;
use super::proto::{Frame, frame::Body};

/// Version of the wire protocol this build speaks; exchanged in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default largest frame, in bytes: big enough for any single-frame body a
/// local HTTP caller is likely to send, small enough that one frame cannot
/// exhaust a node's memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Size of the length prefix in front of every frame.
pub(super) const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more bytes than this node accepts.
    #[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes the prefix announced, or the encoded size when writing.
        announced: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The bytes of a frame are not a valid protobuf `Frame`.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A well-formed frame carried none of the known bodies.
    #[error("frame carries no body")]
    Empty,
    /// The frame carries more headers or arguments than allowed.
    #[error("frame over a limit: {0}")]
    OverLimit(#[from] LimitError),
    /// The underlying stream failed or ended inside a frame.
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes length-prefixed [`Frame`]s with a size limit.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec refusing frames (in either direction) over `max_frame_bytes`
    /// (at most `u32::MAX`, what the prefix can express).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_frame_bytes.min(u32::MAX as usize),
        }
    }

    /// The limit this codec enforces.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Body;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Body>, FrameError> {
        // Is a whole frame here? The prefix stays in `src` until it is, so
        // every call starts at a frame boundary.
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes(*prefix) as usize;
        if announced > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                announced,
                limit: self.max_frame_bytes,
            });
        }
        let whole = LENGTH_PREFIX_BYTES + announced;
        if src.len() < whole {
            src.reserve(whole - src.len());
            return Ok(None);
        }
        // Decode it.
        src.advance(LENGTH_PREFIX_BYTES);
        let bytes = src.split_to(announced).freeze();
        // Counted before decoding: empty repeated fields take 2 bytes each
        // on the wire and far more once decoded.
        super::limits::check_counts(&bytes)?;
        let frame = Frame::decode(bytes)?;
        let mut body = frame.body.ok_or(FrameError::Empty)?;
        unpin_data(&mut body, announced);
        Ok(Some(body))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Body>, FrameError> {
        match self.decode(src)? {
            Some(body) => Ok(Some(body)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed inside a frame ({} bytes pending)",
                    src.len()
                ),
            ))),
        }
    }
}

/// Bytes of a frame beyond its data that may stay pinned by the data.
const PINNED_SLACK_BYTES: usize = 16 * 1024;

/// The data of a decoded frame is a slice of the whole frame's buffer, and
/// keeps all of it alive: a 1-byte chunk padded with megabytes of unknown
/// fields would hold megabytes while counting one byte. Data whose frame is
/// much larger is copied out, so what a body holds is what it counts.
fn unpin_data(body: &mut Body, frame_bytes: usize) {
    let data = match body {
        Body::Chunk(chunk) => &mut chunk.data,
        Body::Event(event) => &mut event.body,
        Body::Reply(reply) => &mut reply.body,
        _ => return,
    };
    if frame_bytes - data.len().min(frame_bytes) > PINNED_SLACK_BYTES {
        *data = bytes::Bytes::copy_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use tokio_util::codec::Encoder;

    use super::*;
    use crate::wire::proto::{Event, Ping};

    fn ping(nonce: u64) -> Body {
        Body::Ping(Ping { nonce })
    }

    #[test]
    fn round_trips_frames_split_at_every_byte() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        let event = Body::Event(Event {
            request_id: 7,
            verb: "get".into(),
            noun: "time".into(),
            body: bytes::Bytes::from_static(b"\x00\xff\xfe binary"),
            ..Default::default()
        });
        codec.encode(event.clone(), &mut wire).unwrap();
        codec.encode(ping(9), &mut wire).unwrap();

        // Feed one byte at a time: nothing is decoded until a frame is whole.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(body) = codec.decode(&mut buf).unwrap() {
                out.push(body);
            }
        }
        assert_eq!(out, vec![event, ping(9)]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn body_bytes_are_never_read_as_a_length_when_a_frame_arrives_in_parts() {
        // A body of 0xff bytes would look like a huge length if a partial
        // frame were re-parsed from its middle.
        let mut codec = FrameCodec::new(4096);
        let event = Body::Event(Event {
            body: vec![0xff; 3000].into(),
            ..Default::default()
        });
        let mut wire = BytesMut::new();
        codec.encode(event.clone(), &mut wire).unwrap();
        let mut buf = BytesMut::new();
        for part in wire.chunks(7) {
            buf.extend_from_slice(part);
            if let Some(body) = codec.decode(&mut buf).unwrap() {
                assert_eq!(body, event);
                assert!(buf.is_empty());
                return;
            }
        }
        panic!("frame never completed");
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    announced: 1025,
                    limit: 1024
                }
            ),
            "{err}"
        );
        // Nothing was reserved for the announced body.
        assert!(buf.capacity() < 1025);
    }

    /// A frame of `data` in a chunk, padded with `padding` bytes of an
    /// unknown field.
    fn padded_chunk(data: &'static [u8], padding: usize) -> BytesMut {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let chunk = Frame {
            body: Some(Body::Chunk(crate::wire::proto::Chunk {
                request_id: 1,
                data: bytes::Bytes::from_static(data),
                ..Default::default()
            })),
        };
        let mut frame = chunk.encode_to_vec();
        encode_key(1000, WireType::LengthDelimited, &mut frame);
        encode_varint(padding as u64, &mut frame);
        frame.resize(frame.len() + padding, 0);
        let mut wire = BytesMut::new();
        wire.put_u32(frame.len() as u32);
        wire.extend_from_slice(&frame);
        wire
    }

    /// Where `data` lies inside `whole`'s memory.
    fn shares_memory(data: &[u8], whole: std::ops::Range<usize>) -> bool {
        whole.contains(&(data.as_ptr() as usize))
    }

    #[test]
    fn data_of_a_padded_frame_is_copied_out_instead_of_pinning_the_frame() {
        let mut codec = FrameCodec::default();
        let mut wire = padded_chunk(b"x", 1 << 20);
        let whole = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let Some(Body::Chunk(chunk)) = codec.decode(&mut wire).unwrap() else {
            panic!("not a chunk");
        };
        assert_eq!(&chunk.data[..], b"x");
        assert!(
            !shares_memory(&chunk.data, whole),
            "one byte of data pins a 1 MiB frame"
        );
        // Data that is most of its frame is not copied.
        let mut wire = padded_chunk(&[7; 64 * 1024], 16);
        let whole = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let Some(Body::Chunk(chunk)) = codec.decode(&mut wire).unwrap() else {
            panic!("not a chunk");
        };
        assert!(shares_memory(&chunk.data, whole), "copied for nothing");
    }

    #[test]
    fn huge_length_prefix_is_refused() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn encoding_over_the_limit_is_an_error() {
        let mut codec = FrameCodec::new(64);
        let mut dst = BytesMut::new();
        let big = Body::Event(Event {
            body: vec![0u8; 100].into(),
            ..Default::default()
        });
        assert!(matches!(
            codec.encode(big, &mut dst),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(6);
        buf.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn frame_without_body_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Empty)));
    }

    #[test]
    fn eof_inside_a_frame_is_an_error_and_clean_eof_is_none() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        buf.put_u32(10);
        buf.put_slice(b"abc");
        assert!(matches!(codec.decode_eof(&mut buf), Err(FrameError::Io(_))));
    }

    mod properties {
        //! The codec over arbitrary frames and arbitrary cuts of the stream.

        use bytes::Bytes;
        use proptest::prelude::*;

        use tokio_util::codec::Encoder;

        use super::super::*;
        use crate::wire::proto::{self, Cancel, Chunk, Event, GoAway, Header, Ping, Pong, Reply};

        fn header() -> impl Strategy<Value = Header> {
            (".{0,12}", prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(name, value)| {
                Header {
                    name,
                    value: value.into(),
                }
            })
        }

        /// Mostly short bytes; now and then a payload large enough to be
        /// written from its own buffer (`wire::encode`).
        fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
            let large = 4096..6000usize;
            prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from),
                1 => (large, any::<u8>()).prop_map(|(len, byte)| Bytes::from(vec![byte; len])),
            ]
        }

        fn event() -> impl Strategy<Value = Body> {
            (
                (any::<u64>(), "[a-z]{0,6}", "[a-z0-9/_]{0,16}", ".{0,16}"),
                prop::collection::vec(".{0,8}", 0..4),
                prop::collection::vec(header(), 0..4),
                (
                    bytes(300),
                    any::<u64>(),
                    any::<bool>(),
                    any::<Option<u64>>(),
                ),
            )
                .prop_map(|((request_id, verb, noun, query), args, headers, rest)| {
                    let (body, timeout_ms, body_follows, body_length) = rest;
                    Body::Event(Event {
                        request_id,
                        verb,
                        noun,
                        args,
                        query,
                        content_type: "text/plain".into(),
                        body,
                        timeout_ms,
                        headers,
                        body_follows,
                        body_length,
                        ..Default::default()
                    })
                })
        }

        fn reply() -> impl Strategy<Value = Body> {
            (
                (any::<u64>(), any::<u32>(), any::<u32>()),
                bytes(300),
                prop::collection::vec(header(), 0..4),
                (any::<bool>(), any::<Option<u64>>()),
            )
                .prop_map(
                    |((request_id, return_code, http_status), body, headers, rest)| {
                        Body::Reply(Reply {
                            request_id,
                            return_code,
                            content_type: String::new(),
                            body,
                            headers,
                            body_follows: rest.0,
                            body_length: rest.1,
                            http_status,
                        })
                    },
                )
        }

        fn body() -> impl Strategy<Value = Body> {
            prop_oneof![
                event(),
                reply(),
                (
                    any::<u64>(),
                    any::<bool>(),
                    bytes(600),
                    any::<bool>(),
                    ".{0,8}"
                )
                    .prop_map(|(request_id, of_reply, data, last, error)| {
                        Body::Chunk(Chunk {
                            request_id,
                            of_reply,
                            data,
                            last,
                            error,
                        })
                    }),
                (any::<u64>(), ".{0,16}")
                    .prop_map(|(request_id, reason)| Body::Cancel(Cancel { request_id, reason })),
                any::<u64>().prop_map(|nonce| Body::Ping(Ping { nonce })),
                any::<u64>().prop_map(|nonce| Body::Pong(Pong { nonce })),
                (0..6i32, ".{0,16}")
                    .prop_map(|(reason, message)| Body::GoAway(GoAway { reason, message })),
                (any::<u64>(), any::<bool>(), any::<u64>(), any::<bool>()).prop_map(
                    |(request_id, of_reply, bytes, stop)| Body::Window(proto::Window {
                        request_id,
                        of_reply,
                        bytes,
                        stop,
                    })
                ),
                (any::<u64>(), any::<u32>()).prop_map(|(request_id, percent)| {
                    Body::Progress(proto::Progress {
                        request_id,
                        percent,
                    })
                }),
            ]
        }

        /// The frames' bytes, and where each frame ends.
        fn encode_all(frames: &[Body]) -> (BytesMut, Vec<usize>) {
            let mut codec = FrameCodec::default();
            let mut wire = BytesMut::new();
            let mut ends = Vec::new();
            for frame in frames {
                codec.encode(frame.clone(), &mut wire).unwrap();
                ends.push(wire.len());
            }
            (wire, ends)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn frames_come_back_whatever_the_cuts(
                frames in prop::collection::vec(body(), 0..8),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            ) {
                let (wire, _) = encode_all(&frames);
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
                cuts.push(wire.len());
                cuts.sort_unstable();
                let mut codec = FrameCodec::default();
                let (mut buffer, mut decoded, mut from) = (BytesMut::new(), Vec::new(), 0);
                for to in cuts {
                    buffer.extend_from_slice(&wire[from..to]);
                    from = to;
                    while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                        decoded.push(frame);
                    }
                }
                prop_assert!(codec.decode_eof(&mut buffer).unwrap().is_none());
                prop_assert_eq!(decoded, frames);
            }

            #[test]
            fn a_stream_cut_inside_a_frame_ends_in_an_error(
                frames in prop::collection::vec(body(), 1..6),
                cut in any::<prop::sample::Index>(),
            ) {
                let (wire, ends) = encode_all(&frames);
                let cut = cut.index(wire.len());
                let mut codec = FrameCodec::default();
                let mut buffer = BytesMut::from(&wire[..cut]);
                let mut decoded = 0;
                while let Some(_frame) = codec.decode(&mut buffer).unwrap() {
                    decoded += 1;
                }
                prop_assert_eq!(decoded, ends.iter().filter(|&&end| end <= cut).count());
                let at_boundary = cut == 0 || ends.contains(&cut);
                match codec.decode_eof(&mut buffer) {
                    Ok(None) => prop_assert!(at_boundary, "cut at {} passed as clean", cut),
                    Err(FrameError::Io(_)) => prop_assert!(!at_boundary),
                    other => prop_assert!(false, "cut at {}: {:?}", cut, other),
                }
            }
        }
    }
}
