//! Headers and arguments across the wire, both ways: a peer's event or
//! reply frame with arbitrary headers and arguments (any count, any bytes),
//! and our own events and replies sent and received again.
//!
//! - Receiving never panics, and takes a frame exactly when it is within
//!   [`MAX_HEADERS`], [`MAX_HEADER_BYTES`], [`MAX_ARGS`] and
//!   [`MAX_ARG_BYTES`]. A frame over a count is refused before it is
//!   decoded: refusing it allocates next to nothing, so a peer cannot make
//!   the node allocate by its counts; taking one allocates at most a small
//!   multiple of its size, and no single block larger than the limits.
//! - What is taken is what was sent: the arguments as they are, every
//!   header HTTP can carry (names lower-cased), in order per name, and the
//!   headers go back to the wire and come again unchanged.
//! - What we send, the receiver takes as it was (handler name, arguments,
//!   query, type, headers, body, timeout to the millisecond; a reply's code
//!   and status), and what our own check refuses, the receiver refuses too.
//!
//! Input: `[kind]` then records `[tag][repeat][len][name]([len][value])`: a
//! header (even tag) or an argument (odd tag), repeated `1 + 4 * repeat`
//! times. Kind 0/1: a peer's event/reply; 2/3: our event/reply.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pipe_core::fuzzing::{
    check_event, check_reply, event_from_wire, event_to_wire, headers_from_wire, headers_to_wire,
    reply_from_wire, reply_to_wire,
};
use pipe_core::proto::{self, frame::Body};
use pipe_core::{
    Event, FrameCodec, HandlerName, MAX_ARG_BYTES, MAX_ARGS, MAX_HEADER_BYTES, MAX_HEADERS, Reply,
};
use tokio_util::codec::{Decoder, Encoder};

/// Counts allocations while `COUNTING` is on (the target is one thread).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static TOTAL: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        TOTAL.fetch_add(size, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// wrapper only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the bytes it allocated: in all, and
/// in its largest block.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    TOTAL.store(0, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let out = f();
    COUNTING.store(false, Ordering::Relaxed);
    (
        out,
        TOTAL.load(Ordering::Relaxed),
        LARGEST.load(Ordering::Relaxed),
    )
}

/// What a refused frame may allocate: an error and its message.
const REFUSAL_BYTES: usize = 4 * 1024;
/// What taking a frame may allocate besides a few times its size: the
/// tables of up to `MAX_HEADERS` headers and `MAX_ARGS` arguments.
const TABLE_BYTES: usize = 256 * 1024;

/// The headers and arguments an input describes.
#[derive(Default)]
struct Parts {
    headers: Vec<proto::Header>,
    args: Vec<String>,
}

fn parse(mut data: &[u8]) -> Parts {
    let mut parts = Parts::default();
    let take = |data: &mut &[u8]| -> Vec<u8> {
        let Some((&len, rest)) = data.split_first() else {
            return Vec::new();
        };
        let len = usize::from(len).min(rest.len());
        let (taken, rest) = rest.split_at(len);
        *data = rest;
        taken.to_vec()
    };
    while let [tag, repeat, rest @ ..] = data {
        data = rest;
        let times = 1 + 4 * usize::from(*repeat);
        if tag % 2 == 0 {
            let name = String::from_utf8_lossy(&take(&mut data)).into_owned();
            let value = Bytes::from(take(&mut data));
            let header = proto::Header { name, value };
            parts.headers.extend(std::iter::repeat_n(header, times));
        } else {
            let arg = String::from_utf8_lossy(&take(&mut data)).into_owned();
            parts.args.extend(std::iter::repeat_n(arg, times));
        }
    }
    parts
}

/// Whether a receiver must take headers and arguments like these.
fn within_limits(headers: &[proto::Header], args: &[String]) -> bool {
    let header_bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let arg_bytes: usize = args.iter().map(String::len).sum();
    headers.len() <= MAX_HEADERS
        && header_bytes <= MAX_HEADER_BYTES
        && args.len() <= MAX_ARGS
        && arg_bytes <= MAX_ARG_BYTES
}

/// The frame as it crosses the wire: its bytes, with its length prefix.
fn encoded(body: Body) -> BytesMut {
    let mut bytes = BytesMut::new();
    FrameCodec::new(u32::MAX as usize)
        .encode(body, &mut bytes)
        .expect("a frame encodes");
    bytes
}

/// Receives `bytes` as the link does: decode (counts checked first), then
/// the limits. Checks that it is `taken` or refused as the limits say, and
/// what that allocates. Returns the frame's body and size.
fn receive(mut bytes: BytesMut, taken: bool, over_a_count: bool) -> Option<(Body, usize)> {
    let size = bytes.len();
    let (body, total, largest) = measured(|| {
        FrameCodec::default()
            .decode(&mut bytes)
            .ok()
            .flatten()
            .filter(|body| match body {
                Body::Event(event) => check_event(event).is_ok(),
                Body::Reply(reply) => check_reply(reply).is_ok(),
                _ => false,
            })
    });
    assert_eq!(body.is_some(), taken, "taken against the limits");
    if over_a_count {
        assert!(
            total <= REFUSAL_BYTES,
            "refusing a {size}-byte frame over a count allocated {total} bytes"
        );
    }
    bounded(size, total, largest);
    body.map(|body| (body, size))
}

/// What decoding or converting a frame of `size` bytes may allocate.
fn bounded(size: usize, total: usize, largest: usize) {
    assert!(
        total <= 3 * size + TABLE_BYTES,
        "a {size}-byte frame allocated {total} bytes"
    );
    assert!(
        largest <= MAX_HEADER_BYTES.max(MAX_ARG_BYTES) + TABLE_BYTES / 4,
        "a {size}-byte frame allocated a block of {largest} bytes"
    );
}

/// Converts a frame of `size` bytes, checking what that allocates.
fn convert<T>(size: usize, f: impl FnOnce() -> T) -> T {
    let (out, total, largest) = measured(f);
    bounded(size, total, largest);
    out
}

/// The headers HTTP can carry, lower-cased, grouped by name in order of
/// first appearance: how a `HeaderMap` keeps them.
fn carried(headers: &[proto::Header]) -> Vec<(String, Vec<Bytes>)> {
    let mut groups: Vec<(String, Vec<Bytes>)> = Vec::new();
    for header in headers {
        let (Ok(name), Ok(_)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(&header.value),
        ) else {
            continue;
        };
        match groups.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, values)) => values.push(header.value.clone()),
            None => groups.push((name.as_str().to_owned(), vec![header.value.clone()])),
        }
    }
    groups
}

/// Checks the headers a receiver took from `sent`, and their way back.
fn check_headers(sent: &[proto::Header], map: &http::HeaderMap) {
    let expected = carried(sent);
    let got: Vec<(String, Vec<Bytes>)> = map
        .keys()
        .map(|name| {
            let values = map.get_all(name).iter();
            let values = values.map(|v| Bytes::copy_from_slice(v.as_bytes()));
            (name.as_str().to_owned(), values.collect())
        })
        .collect();
    assert_eq!(got, expected, "headers taken");
    let back = headers_to_wire(map);
    assert_eq!(carried(&back), expected, "headers sent back");
    assert_eq!(&headers_from_wire(back), map, "headers taken again");
}

fn peer_event(parts: Parts) {
    let taken = within_limits(&parts.headers, &parts.args);
    let over_a_count = parts.headers.len() > MAX_HEADERS || parts.args.len() > MAX_ARGS;
    let frame = proto::Event {
        request_id: 1,
        verb: "get".into(),
        noun: "files/x".into(),
        args: parts.args.clone(),
        headers: parts.headers.clone(),
        timeout_ms: 1000,
        ..Default::default()
    };
    let received = receive(encoded(Body::Event(frame)), taken, over_a_count);
    let Some((Body::Event(frame), size)) = received else {
        return;
    };
    let (event, _) = convert(size, || event_from_wire(frame));
    assert_eq!(event.args, parts.args, "arguments taken");
    check_headers(&parts.headers, &event.headers);
}

fn peer_reply(parts: Parts) {
    let taken = within_limits(&parts.headers, &[]);
    let over_a_count = parts.headers.len() > MAX_HEADERS;
    let frame = proto::Reply {
        request_id: 1,
        headers: parts.headers.clone(),
        ..Default::default()
    };
    let received = receive(encoded(Body::Reply(frame)), taken, over_a_count);
    let Some((Body::Reply(frame), size)) = received else {
        return;
    };
    let reply = convert(size, || reply_from_wire(frame));
    check_headers(&parts.headers, &reply.headers);
}

/// The headers of ours an input describes: those HTTP takes.
fn header_map(headers: &[proto::Header]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for header in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(&header.value),
        ) {
            let _ = map.try_append(name, value);
        }
    }
    map
}

fn our_event(parts: Parts, timeout_ms: u64) {
    let headers = header_map(&parts.headers);
    let event = Event {
        handler: HandlerName::new("post", "files/x"),
        args: parts.args.clone(),
        query: "a=1&b".into(),
        content_type: "text/plain".into(),
        headers: headers.clone(),
        body: Bytes::from_static(b"body"),
        stream: None,
    };
    let timeout = Duration::from_millis(timeout_ms);
    let frame = event_to_wire(7, event, timeout);
    let ours_ok = check_event(&frame).is_ok();
    let over_a_count = frame.headers.len() > MAX_HEADERS || frame.args.len() > MAX_ARGS;
    let received = receive(encoded(Body::Event(frame)), ours_ok, over_a_count);
    let Some((Body::Event(frame), size)) = received else {
        return;
    };
    let (event, received_timeout) = convert(size, || event_from_wire(frame));
    assert_eq!(event.handler, HandlerName::new("post", "files/x"));
    assert_eq!(event.args, parts.args);
    assert_eq!(event.query, "a=1&b");
    assert_eq!(event.content_type, "text/plain");
    assert_eq!(event.headers, headers);
    assert_eq!(event.body, Bytes::from_static(b"body"));
    assert!(event.stream.is_none());
    assert_eq!(received_timeout, timeout);
}

fn our_reply(parts: Parts, code: u32, status: u16) {
    let headers = header_map(&parts.headers);
    let mut reply = Reply::bytes("application/json", "{}").with_return_code(code);
    reply.headers = headers.clone();
    reply.http_status = Some(status);
    let frame = reply_to_wire(7, reply);
    let ours_ok = check_reply(&frame).is_ok();
    let over_a_count = frame.headers.len() > MAX_HEADERS;
    let received = receive(encoded(Body::Reply(frame)), ours_ok, over_a_count);
    let Some((Body::Reply(frame), size)) = received else {
        return;
    };
    let reply = convert(size, || reply_from_wire(frame));
    assert_eq!(reply.return_code, code);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.body, Bytes::from_static(b"{}"));
    assert_eq!(reply.headers, headers);
    assert_eq!(reply.http_status, Some(status).filter(|s| *s != 0));
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    // Kind's high bits vary the code, status and timeout.
    let number = u16::from(kind >> 2) * 997;
    match kind % 4 {
        0 => peer_event(parse(rest)),
        1 => peer_reply(parse(rest)),
        2 => our_event(parse(rest), u64::from(number)),
        _ => our_reply(parse(rest), u32::from(number), number),
    }
});
