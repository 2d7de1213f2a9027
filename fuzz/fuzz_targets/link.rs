//! One link (the server side of a connection) fed a good `Hello` and then
//! arbitrary bytes by its peer: it may refuse them, never panic, never hold
//! more events than its bounds, and always end once the peer goes quiet.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pipe_core::proto::{Hello, Role as WireRole, frame::Body};
use pipe_core::{
    ConnectionSettings, Delivery, Endpoint, FrameCodec, Inbound, LocalHello, PROTOCOL_VERSION,
    PeerInfo, Reply, ReplyFuture, Side, WAITING_PER_SLOT, establish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;

/// Handlers that may run at once: small, so the bounds are reached.
const SLOTS: usize = 2;

/// Answers every event at once, reading a streamed body to its end.
struct Answer;

impl Inbound for Answer {
    fn answer(&self, _peer: &PeerInfo, delivery: Delivery) -> ReplyFuture {
        Box::pin(async move {
            if let Some(mut stream) = delivery.event.stream {
                while let Some(Ok(_)) = stream.chunk().await {}
            }
            Reply::bytes("text/plain", "ok")
        })
    }
}

fn hello() -> BytesMut {
    let mut bytes = BytesMut::new();
    let hello = Body::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: WireRole::Client as i32,
        node_name: "fuzz-client".into(),
        ..Default::default()
    });
    FrameCodec::default()
        .encode(hello, &mut bytes)
        .expect("a Hello encodes");
    bytes
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (raw, node_side) = tokio::io::duplex(256 * 1024);
        let endpoint = Endpoint {
            hello: LocalHello {
                name: "fuzz-server".into(),
                side: Side::Server,
                standby: false,
            },
            // Short heartbeats, so a quiet peer is dropped after few timer
            // steps (time is paused and jumps ahead when all is idle).
            settings: ConnectionSettings {
                max_concurrent_handlers: SLOTS,
                max_frame_bytes: 1024 * 1024,
                ping_interval: Duration::from_millis(50),
                dead_after: Duration::from_millis(150),
                hello_timeout: Duration::from_secs(1),
                ..ConnectionSettings::default()
            },
            inbound: Arc::new(Answer),
        };
        let peer = PeerInfo {
            name: "fuzz-client".into(),
            side: Side::Client,
            remote_addr: None,
        };
        let (mut from_node, mut to_node) = tokio::io::split(raw);
        let input = data.to_vec();
        let feed = tokio::spawn(async move {
            let _ = to_node.write_all(&hello()).await;
            let _ = to_node.write_all(&input).await;
            // Stays open: the link must end on its own (heartbeat deadline).
            std::future::pending::<()>().await;
        });
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(from_node.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        if let Ok((handle, _)) = establish(node_side, &endpoint, peer, |_| Ok(())).await {
            let bound = SLOTS * (1 + WAITING_PER_SLOT);
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                while !handle.is_closed() {
                    assert!(handle.in_flight_in() <= bound, "past the admission bound");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(ended.is_ok(), "the link did not end after its peer went quiet");
        }
        feed.abort();
        drain.abort();
    });
});
