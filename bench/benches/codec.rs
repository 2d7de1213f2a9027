//! Micro-benchmarks of the frame codec: encoding and decoding one `Event`
//! frame, small (a `GET /server/time`) and with a 64 KiB body, since every
//! piped request pays for one of each on both sides.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pipe_core::FrameCodec;
use pipe_core::proto::Event;
use pipe_core::proto::frame::Body;
use tokio_util::codec::{Decoder, Encoder};

fn event(body: Bytes) -> Body {
    Body::Event(Event {
        request_id: 42,
        verb: "get".to_owned(),
        noun: "time".to_owned(),
        content_type: if body.is_empty() {
            String::new()
        } else {
            "application/octet-stream".to_owned()
        },
        body,
        timeout_ms: 30_000,
        ..Default::default()
    })
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("small event", event(Bytes::new())),
        ("64 KiB event", event(Bytes::from(vec![7u8; 64 * 1024]))),
    ];
    let mut group = c.benchmark_group("frame codec");
    for (name, body) in cases {
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode(body.clone(), &mut wire)
            .expect("a valid event encodes");
        group.throughput(Throughput::Bytes(wire.len() as u64));
        // Inputs are prepared outside the timed part: cloning a `BytesMut`
        // copies it, which would swamp the decode of a 64 KiB frame.
        group.bench_function(format!("encode {name}"), |b| {
            let mut codec = FrameCodec::default();
            let mut out = BytesMut::with_capacity(wire.len());
            b.iter_batched(
                || body.clone(),
                |body| {
                    out.clear();
                    codec.encode(body, &mut out).expect("a valid event encodes");
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("decode {name}"), |b| {
            let mut codec = FrameCodec::default();
            b.iter_batched(
                || wire.clone(),
                |mut input| black_box(codec.decode(&mut input).expect("a whole frame decodes")),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
