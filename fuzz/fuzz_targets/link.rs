//! One link (the server side of a connection) fed a good `Hello` and then
//! arbitrary bytes by its peer: it may refuse them, never panic, never hold
//! more events or bodies than its bounds, always end once the peer goes
//! quiet, and leave nothing behind: its tables empty and every task it
//! started finished soon after. What it writes back is a well-formed frame
//! stream: its `Hello` first, then only replies, window updates and pongs
//! about the peer's own requests and pings (it sends no requests here), and
//! nothing after a `GoAway`.
//!
//! One current-thread runtime serves every input, its clock paused: timers
//! (heartbeats, deadlines) jump ahead whenever the runtime is idle, so an
//! input costs its frames, not its timeouts. Each input waits for all its
//! tasks to finish, so nothing of one input reaches the next.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pipe_core::fuzzing::{LinkTables, link_tables};
use pipe_core::proto::{Hello, Role as WireRole, frame::Body};
use pipe_core::{
    ConnectionSettings, DEFAULT_MAX_BODY_MEMORY, Delivery, Endpoint, FrameCodec, Inbound, LocalHello,
    MemoryBudget, PROTOCOL_VERSION,
    PeerHandle, PeerInfo, Reply, ReplyFuture, Side, WAITING_PER_SLOT, establish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame either side sends or accepts.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Handlers that may run at once: small, so the bounds are reached.
const SLOTS: usize = 2;
/// Events admitted at most (running or waiting for a slot).
const ADMITTED: usize = SLOTS * (1 + WAITING_PER_SLOT);
/// How often (virtual time) the bounds are checked while the link lives.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// Longest a link may live after its peer has gone quiet: the heartbeat
/// deadline below, plus a wide margin (virtual time, so it costs nothing).
const ENDS_WITHIN: Duration = Duration::from_secs(10);
/// Longest the link's tasks may outlive it: its close timeout (2 s) and a
/// margin.
const TASKS_END_WITHIN: Duration = Duration::from_secs(10);

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

/// The runtime every input runs on: one thread, time paused.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// The peer's opening `Hello`, encoded once.
fn hello() -> &'static [u8] {
    static HELLO: OnceLock<BytesMut> = OnceLock::new();
    HELLO.get_or_init(|| {
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
    })
}

/// Our side of the link; short heartbeats, so a quiet peer is dropped
/// after a few timer steps.
fn endpoint() -> &'static Endpoint {
    static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| Endpoint {
        hello: LocalHello {
            name: "fuzz-server".into(),
            side: Side::Server,
            standby: false,
        },
        settings: ConnectionSettings {
            max_concurrent_handlers: SLOTS,
            max_frame_bytes: MAX_FRAME_BYTES,
            ping_interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(150),
            hello_timeout: Duration::from_secs(1),
            // Small, so inputs reach the refusals past the peer's budget.
            max_body_memory_per_peer: 1 << 20,
            ..ConnectionSettings::default()
        },
        inbound: Arc::new(Answer),
        body_memory: MemoryBudget::node(DEFAULT_MAX_BODY_MEMORY),
    })
}

/// The bounds that hold at every moment of the link's life.
fn check_bounds(handle: &PeerHandle) {
    let tables = link_tables(handle);
    assert!(
        handle.in_flight_in() <= ADMITTED && tables.running <= ADMITTED,
        "past the admission bound: {tables:?}"
    );
    // A body arrives only with an admitted event (we send no requests, so
    // no reply bodies), and we stream no replies.
    assert!(tables.receiving <= ADMITTED, "bodies unbounded: {tables:?}");
    assert_eq!(tables.pending, 0, "requests we never sent: {tables:?}");
    assert_eq!(tables.sending, 0, "bodies we never sent: {tables:?}");
}

/// What the peer's bytes say, as far as they decode: the ids of its
/// events, of its replies, and the nonces of its pings.
#[derive(Default)]
struct PeerSaid {
    events: HashSet<u64>,
    replies: HashSet<u64>,
    pings: HashSet<u64>,
}

impl PeerSaid {
    fn decode(data: &[u8]) -> Self {
        let mut said = Self::default();
        let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
        let mut buffer = BytesMut::from(data);
        while let Ok(Some(body)) = codec.decode(&mut buffer) {
            match body {
                Body::Event(event) => said.events.insert(event.request_id),
                Body::Reply(reply) => said.replies.insert(reply.request_id),
                Body::Ping(ping) => said.pings.insert(ping.nonce),
                _ => false,
            };
        }
        said
    }
}

/// Checks what the node wrote: whole frames within the limit, its `Hello`
/// first, then only answers to what the peer said.
fn check_output(written: &[u8], said: &PeerSaid) {
    let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
    let mut buffer = BytesMut::from(written);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buffer) {
            Ok(Some(body)) => frames.push(body),
            Ok(None) => break,
            Err(error) => panic!("the node wrote a broken frame: {error}"),
        }
    }
    assert!(buffer.is_empty(), "the node wrote half a frame");
    let Some((first, rest)) = frames.split_first() else {
        return;
    };
    assert!(matches!(first, Body::Hello(_)), "first frame {first:?}");
    for (index, body) in rest.iter().enumerate() {
        match body {
            Body::Reply(reply) => assert!(said.events.contains(&reply.request_id), "{reply:?}"),
            Body::Window(window) if window.of_reply => {
                assert!(said.replies.contains(&window.request_id), "{window:?}")
            }
            Body::Window(window) => assert!(said.events.contains(&window.request_id), "{window:?}"),
            Body::Pong(pong) => assert!(said.pings.contains(&pong.nonce), "{pong:?}"),
            Body::Ping(_) => {}
            Body::GoAway(_) => assert_eq!(index + 1, rest.len(), "frames after GoAway"),
            other => panic!("the node sent {other:?} unasked"),
        }
    }
}

/// Runs one input: the peer's `Hello` and `data`, then silence.
async fn run(data: &[u8]) {
    // Everything the peer sends fits the pipe at once: no writer task.
    let (raw, node_side) = tokio::io::duplex(hello().len() + data.len() + 64 * 1024);
    let (mut from_node, mut to_node) = tokio::io::split(raw);
    to_node.write_all(hello()).await.expect("the pipe has room");
    to_node.write_all(data).await.expect("the pipe has room");
    // The peer reads what the node writes, to its end (the node's side
    // gone).
    let written = tokio::spawn(async move {
        let mut written = Vec::new();
        let _ = from_node.read_to_end(&mut written).await;
        written
    });
    let peer = PeerInfo {
        name: "fuzz-client".into(),
        side: Side::Client,
        remote_addr: None,
    };
    if let Ok((handle, _)) = establish(node_side, endpoint(), peer, |_| Ok(())).await {
        // `to_node` stays open: the link must end on its own (heartbeat).
        let ended = tokio::time::timeout(ENDS_WITHIN, async {
            while !handle.is_closed() {
                check_bounds(&handle);
                tokio::time::sleep(CHECK_EVERY).await;
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the link did not end after its peer went quiet"
        );
        drop(to_node);
        wait_for_tasks().await;
        let tables = link_tables(&handle);
        let empty = LinkTables {
            pending: 0,
            running: 0,
            receiving: 0,
            sending: 0,
        };
        assert_eq!(tables, empty, "the ended link still holds entries");
        assert!(!handle.is_accepting());
    } else {
        drop(to_node);
        wait_for_tasks().await;
    }
    let written = written.await.expect("the peer's reading task ends");
    check_output(&written, &PeerSaid::decode(data));
}

/// Waits until every task spawned for this input has finished: none may
/// outlive its link for long (a leak), and none may reach the next input.
async fn wait_for_tasks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let finished = tokio::time::timeout(TASKS_END_WITHIN, async {
        // Doubling waits: few steps whether the tasks end at once or after
        // the close timeout.
        let mut wait = Duration::from_micros(100);
        while metrics.num_alive_tasks() > 0 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "{} tasks outlived their link",
        metrics.num_alive_tasks()
    );
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(run(data));
});
