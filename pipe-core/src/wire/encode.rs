//! Encoding a frame without copying its payload: a chunk's data, or an
//! event's or reply's body, of [`SPLIT_PAYLOAD_BYTES`] or more is handed
//! back to be written from its own buffer right after the frame's other
//! bytes, instead of being copied into the write buffer first.
//!
//! Protobuf lets a message's fields come in any order, so the payload field
//! goes last: the frame's bytes are the prefix, the body's key and length,
//! the message without its payload, then the payload's key and length, all
//! in the write buffer, and the payload after them. The frame is as long as
//! the usual encoding and decodes to the same body. On a large transfer this
//! saves the sender one copy of every byte (the TLS library still makes its
//! own, into the record it encrypts).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use tokio_util::codec::Encoder;

use super::frame::{FrameCodec, FrameError, LENGTH_PREFIX_BYTES};
use super::proto::{Frame, frame::Body};

/// Payloads at least this large are written from their own buffer; smaller
/// ones cost less to copy than a separate slice costs to write.
pub(crate) const SPLIT_PAYLOAD_BYTES: usize = 4 * 1024;

/// Field numbers of `Frame.body`'s variants that carry a payload, and of the
/// payload in each (proto/restpipe.proto).
const EVENT_VARIANT: u32 = 2;
const REPLY_VARIANT: u32 = 3;
const CHUNK_VARIANT: u32 = 4;
const EVENT_BODY_FIELD: u32 = 7;
const REPLY_BODY_FIELD: u32 = 4;
const CHUNK_DATA_FIELD: u32 = 3;

impl FrameCodec {
    /// Encodes `body` into `dst` like [`Encoder::encode`], except that a
    /// large payload is left out and handed back, to be written from its own
    /// buffer right after `dst`'s bytes (see [`SPLIT_PAYLOAD_BYTES`]).
    pub fn encode_split(
        &self,
        body: Body,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, FrameError> {
        encode_split(body, self.max_frame_bytes(), dst)
    }
}

impl Encoder<Body> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Body, dst: &mut BytesMut) -> Result<(), FrameError> {
        if let Some(payload) = self.encode_split(body, dst)? {
            dst.extend_from_slice(&payload);
        }
        Ok(())
    }
}

/// Encodes `body` into `dst` as one length-prefixed frame of at most
/// `max_frame_bytes`. Returns the payload that completes the frame when it
/// was left out of `dst` (see the module's comment); the caller writes it
/// right after `dst`'s bytes. Nothing is written when the frame is over the
/// limit.
fn encode_split(
    mut body: Body,
    max_frame_bytes: usize,
    dst: &mut BytesMut,
) -> Result<Option<Bytes>, FrameError> {
    let large =
        |data: &mut Bytes| (data.len() >= SPLIT_PAYLOAD_BYTES).then(|| std::mem::take(data));
    let limit = max_frame_bytes;
    let payload = match &mut body {
        Body::Event(event) => match large(&mut event.body) {
            Some(payload) => {
                put_all_but(EVENT_VARIANT, event, EVENT_BODY_FIELD, payload, limit, dst)?
            }
            None => None,
        },
        Body::Reply(reply) => match large(&mut reply.body) {
            Some(payload) => {
                put_all_but(REPLY_VARIANT, reply, REPLY_BODY_FIELD, payload, limit, dst)?
            }
            None => None,
        },
        Body::Chunk(chunk) => match large(&mut chunk.data) {
            Some(payload) => {
                put_all_but(CHUNK_VARIANT, chunk, CHUNK_DATA_FIELD, payload, limit, dst)?
            }
            None => None,
        },
        _ => None,
    };
    if payload.is_none() {
        encode_whole(Frame { body: Some(body) }, max_frame_bytes, dst)?;
    }
    Ok(payload)
}

/// Puts the frame of `message` (the body variant `variant`, its payload
/// field `payload_field` emptied) into `dst`, with the payload's key and
/// length last; returns the payload, whose bytes complete the frame.
fn put_all_but(
    variant: u32,
    message: &impl Message,
    payload_field: u32,
    payload: Bytes,
    max_frame_bytes: usize,
    dst: &mut BytesMut,
) -> Result<Option<Bytes>, FrameError> {
    let payload_head = key_len(payload_field) + encoded_len_varint(payload.len() as u64);
    let message_len = message.encoded_len() + payload_head + payload.len();
    let frame_len = key_len(variant) + encoded_len_varint(message_len as u64) + message_len;
    check_limit(frame_len, max_frame_bytes)?;
    dst.reserve(LENGTH_PREFIX_BYTES + frame_len - payload.len());
    // The cast cannot truncate: `check_limit` bounds the length by what the
    // codec accepts, at most `u32::MAX`.
    dst.put_u32(frame_len as u32);
    encode_key(variant, WireType::LengthDelimited, dst);
    encode_varint(message_len as u64, dst);
    message
        .encode(dst)
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    encode_key(payload_field, WireType::LengthDelimited, dst);
    encode_varint(payload.len() as u64, dst);
    Ok(Some(payload))
}

/// Encodes a frame entirely into `dst`.
fn encode_whole(
    frame: Frame,
    max_frame_bytes: usize,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = frame.encoded_len();
    check_limit(len, max_frame_bytes)?;
    dst.reserve(LENGTH_PREFIX_BYTES + len);
    // The cast cannot truncate, as above.
    dst.put_u32(len as u32);
    frame
        .encode(dst)
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))
}

fn check_limit(len: usize, max_frame_bytes: usize) -> Result<(), FrameError> {
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            announced: len,
            limit: max_frame_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::Decoder;

    use super::{SPLIT_PAYLOAD_BYTES, encode_split};
    use crate::wire::FrameCodec;
    use crate::wire::proto::{Chunk, Event, Header, Reply, frame::Body};

    /// The frame `body` encodes to, payload appended where it was left out.
    fn wire(body: Body, limit: usize) -> (BytesMut, Option<Bytes>) {
        let mut dst = BytesMut::new();
        let payload = encode_split(body, limit, &mut dst).expect("under the limit");
        let mut whole = dst.clone();
        if let Some(payload) = &payload {
            whole.extend_from_slice(payload);
        }
        (whole, payload)
    }

    fn bodies(payload: &Bytes) -> Vec<Body> {
        vec![
            Body::Chunk(Chunk {
                request_id: 9,
                of_reply: true,
                data: payload.clone(),
                last: true,
                error: "cut".into(),
            }),
            Body::Event(Event {
                request_id: 3,
                verb: "post".into(),
                noun: "upload".into(),
                args: vec!["a".into()],
                content_type: "application/octet-stream".into(),
                body: payload.clone(),
                timeout_ms: 5000,
                headers: vec![Header {
                    name: "x-trace".into(),
                    value: b"1".to_vec().into(),
                }],
                body_length: Some(payload.len() as u64),
                ..Default::default()
            }),
            Body::Reply(Reply {
                request_id: 4,
                return_code: 0,
                content_type: "text/plain".into(),
                body: payload.clone(),
                http_status: 200,
                ..Default::default()
            }),
        ]
    }

    #[test]
    fn a_large_payload_is_handed_back_uncopied_and_the_frame_decodes_to_the_same_body() {
        let payload = Bytes::from(vec![0xa5; SPLIT_PAYLOAD_BYTES + 1]);
        for body in bodies(&payload) {
            let (mut whole, handed_back) = wire(body.clone(), 1 << 20);
            let handed_back = handed_back.expect("a large payload is left out");
            assert_eq!(
                handed_back.as_ptr(),
                payload.as_ptr(),
                "the payload was copied"
            );
            // As long as the usual encoding, and the same body once decoded.
            let mut usual = BytesMut::new();
            tokio_util::codec::Encoder::encode(
                &mut FrameCodec::new(1 << 20),
                body.clone(),
                &mut usual,
            )
            .unwrap();
            assert_eq!(whole.len(), usual.len());
            let decoded = FrameCodec::new(1 << 20).decode(&mut whole).unwrap();
            assert_eq!(decoded, Some(body));
            assert!(whole.is_empty());
        }
    }

    #[test]
    fn a_small_payload_is_encoded_in_place() {
        let payload = Bytes::from(vec![7; SPLIT_PAYLOAD_BYTES - 1]);
        for body in bodies(&payload) {
            let (mut whole, handed_back) = wire(body.clone(), 1 << 20);
            assert!(handed_back.is_none());
            assert_eq!(
                FrameCodec::new(1 << 20).decode(&mut whole).unwrap(),
                Some(body)
            );
        }
    }

    #[test]
    fn a_split_frame_over_the_limit_is_refused_and_nothing_is_written() {
        let payload = Bytes::from(vec![1; 64 * 1024]);
        for body in bodies(&payload) {
            let mut dst = BytesMut::new();
            let refused = encode_split(body, 64 * 1024, &mut dst);
            assert!(
                matches!(refused, Err(crate::wire::FrameError::TooLarge { announced, limit: 65536 }) if announced > 65536),
                "{refused:?}"
            );
            assert!(dst.is_empty());
        }
    }
}
