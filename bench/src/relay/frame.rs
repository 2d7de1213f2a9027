//! The relay's frames: a 4-byte big-endian length (of what follows it), an
//! 8-byte id, a kind byte, and the payload.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// The length, the id and the kind.
pub(super) const HEADER_BYTES: usize = 4 + 8 + 1;
/// Largest frame either end accepts: a body piece and its header.
const MAX_FRAME: usize = 1024 * 1024;
/// Payloads at least this long go to the socket from their own memory
/// (a vectored write), not copied behind the frames before them.
const OWN_SLICE_BYTES: usize = 16 * 1024;
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A whole request line, or a whole answer.
    Whole = 0,
    /// The request line of an upload; its pieces and an end follow.
    Open = 1,
    /// A piece of a body.
    Piece = 2,
    /// The end of a body.
    End = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> anyhow::Result<Self> {
        Ok(match byte {
            0 => Self::Whole,
            1 => Self::Open,
            2 => Self::Piece,
            3 => Self::End,
            other => anyhow::bail!("relay: a frame of kind {other}"),
        })
    }
}

/// One frame read.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) id: u64,
    pub(super) kind: Kind,
    pub(super) payload: Bytes,
}

/// Frames queued for one write: headers and small payloads copied together,
/// large payloads as slices of their own.
#[derive(Default)]
pub(super) struct Outgoing {
    small: BytesMut,
    queue: VecDeque<Bytes>,
}

impl Outgoing {
    /// Queues a frame.
    pub(super) fn push(&mut self, id: u64, kind: Kind, payload: Bytes) {
        let length = u32::try_from(8 + 1 + payload.len()).unwrap_or(u32::MAX);
        self.small.reserve(HEADER_BYTES);
        self.small.put_u32(length);
        self.small.put_u64(id);
        self.small.put_u8(kind as u8);
        if payload.len() < OWN_SLICE_BYTES {
            self.small.extend_from_slice(&payload);
        } else {
            self.queue.push_back(self.small.split().freeze());
            self.queue.push_back(payload);
        }
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.small.is_empty() && self.queue.is_empty()
    }

    /// Writes everything queued, in as few writes as the socket takes, and
    /// flushes.
    pub(super) async fn write_to(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        if !self.small.is_empty() {
            self.queue.push_back(self.small.split().freeze());
        }
        while !self.queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_SLICES)
                .map(|bytes| IoSlice::new(bytes))
                .collect();
            let mut written = writer.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        writer.flush().await
    }
}

/// Takes the next complete frame off the front of `buffer`, if there is one.
pub(super) fn next(buffer: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
    let Some(length) = buffer.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    anyhow::ensure!(
        (9..=MAX_FRAME).contains(&length),
        "relay: a frame of {length} bytes"
    );
    if buffer.len() < 4 + length {
        // The rest of a large frame reads straight into place.
        buffer.reserve(4 + length - buffer.len());
        return Ok(None);
    }
    let mut framed = buffer.split_to(4 + length);
    framed.advance(4);
    let id = framed.get_u64();
    let kind = Kind::from_byte(framed.get_u8())?;
    Ok(Some(Frame {
        id,
        kind,
        payload: framed.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_taken_whole_and_only_whole() {
        let mut out = Outgoing::default();
        out.push(7, Kind::Whole, Bytes::from_static(b"GET /server/time"));
        out.push(8, Kind::Piece, Bytes::from(vec![1u8; OWN_SLICE_BYTES]));
        out.push(8, Kind::End, Bytes::new());
        let mut written = Vec::new();
        out.write_to(&mut written).await.unwrap();
        assert!(out.is_empty());

        let mut buffer = BytesMut::from(&written[..written.len() - 1]);
        let first = next(&mut buffer).unwrap().unwrap();
        assert_eq!(
            (first.id, first.kind, &first.payload[..]),
            (7, Kind::Whole, &b"GET /server/time"[..])
        );
        let piece = next(&mut buffer).unwrap().unwrap();
        assert_eq!((piece.id, piece.kind), (8, Kind::Piece));
        assert_eq!(piece.payload.len(), OWN_SLICE_BYTES);
        assert!(next(&mut buffer).unwrap().is_none(), "a cut frame");
        buffer.extend_from_slice(&written[written.len() - 1..]);
        let end = next(&mut buffer).unwrap().unwrap();
        assert_eq!((end.id, end.kind, end.payload.len()), (8, Kind::End, 0));
        assert!(buffer.is_empty());
    }

    #[test]
    fn an_oversized_frame_or_an_unknown_kind_is_refused() {
        let mut buffer = BytesMut::new();
        buffer.put_u32(u32::try_from(MAX_FRAME + 1).unwrap());
        assert!(next(&mut buffer).is_err());
        let mut buffer = BytesMut::new();
        buffer.put_u32(9);
        buffer.put_u64(1);
        buffer.put_u8(9);
        assert!(next(&mut buffer).is_err());
    }
}
