//! The frame decoder on arbitrary bytes: it may refuse them, never panic,
//! and never allocate past the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pipe_core::FrameCodec;
use tokio_util::codec::Decoder;

/// Small, so oversized-length paths are reached too.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(LIMIT);
    let mut buffer = BytesMut::from(data);
    // Decode frames until the input runs out or is refused.
    while let Ok(Some(_frame)) = codec.decode(&mut buffer) {}
    let _ = codec.decode_eof(&mut buffer);
});
