//! Wire ↔ domain: the one place where protobuf messages become restpipe's
//! own types ([`Event`], [`Reply`], [`Side`]) and back. Nothing else builds
//! or takes apart an `Event` or `Reply` frame.

use std::time::Duration;

use bytes::Bytes;

use super::body::BodyStream;
use super::message::{Event, HandlerError, HandlerName, JSON, RETURN_HANDLER_FAILED, Reply, Side};
use super::proto;

impl From<Side> for proto::Role {
    fn from(side: Side) -> Self {
        match side {
            Side::Server => Self::Server,
            Side::Client => Self::Client,
        }
    }
}

/// Headers as they travel in frames.
pub(crate) fn headers_to_wire(headers: &http::HeaderMap) -> Vec<proto::Header> {
    headers
        .iter()
        .map(|(name, value)| proto::Header {
            name: name.as_str().to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}

/// Headers from a frame; any a peer sent that HTTP cannot carry are
/// dropped. Never sized or grown past what `http` allows from the peer's
/// count: `HeaderMap` panics beyond its maximum, so the rest is dropped.
pub(crate) fn headers_from_wire(headers: Vec<proto::Header>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for header in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(&header.value),
        ) && map.try_append(name, value).is_err()
        {
            break;
        }
    }
    map
}

/// The frame for `event` under `request_id` with the caller's `timeout`, and
/// the body to stream after it, if any.
pub(crate) fn event_frame(
    request_id: u64,
    event: Event,
    timeout: Duration,
) -> (proto::Event, Option<BodyStream>) {
    let (verb, noun) = event.handler.into_parts();
    let frame = proto::Event {
        request_id,
        verb,
        noun,
        args: event.args,
        query: event.query,
        content_type: event.content_type,
        body: event.body,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        headers: headers_to_wire(&event.headers),
        body_follows: event.stream.is_some(),
        body_length: event.stream.as_ref().and_then(BodyStream::length),
        job_id: String::new(),
        redelivery: false,
    };
    (frame, event.stream)
}

/// An event as it arrived: the domain event (its streamed body, if one
/// follows, is attached by the link) and what the frame says about delivery.
#[derive(Debug)]
pub(crate) struct ReceivedEvent {
    /// The sender's id for this request.
    pub(crate) request_id: u64,
    /// The event, with its handler name computed.
    pub(crate) event: Event,
    /// How long the sender waits for the reply.
    pub(crate) timeout: Duration,
    /// Whether the body follows in `Chunk` frames.
    pub(crate) body_follows: bool,
    /// The streamed body's length, when the sender knows it.
    pub(crate) body_length: Option<u64>,
    /// The sender's durable job this event carries, if any.
    pub(crate) job: Option<JobTag>,
}

/// Which durable job of its sender an event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTag {
    /// The job's id at its sender.
    pub id: String,
    /// The sender delivered it before without getting its result.
    pub redelivery: bool,
}

impl From<proto::Event> for ReceivedEvent {
    fn from(frame: proto::Event) -> Self {
        Self {
            request_id: frame.request_id,
            event: Event {
                handler: HandlerName::new(frame.verb, frame.noun),
                args: frame.args,
                query: frame.query,
                content_type: frame.content_type,
                headers: headers_from_wire(frame.headers),
                body: frame.body,
                stream: None,
            },
            timeout: Duration::from_millis(frame.timeout_ms),
            body_follows: frame.body_follows,
            body_length: frame.body_length,
            job: if frame.job_id.is_empty() {
                None
            } else {
                Some(JobTag {
                    id: frame.job_id,
                    redelivery: frame.redelivery,
                })
            },
        }
    }
}

/// The frame for `reply` to `request_id`, and the body to stream after it.
pub(crate) fn reply_frame(request_id: u64, reply: Reply) -> (proto::Reply, Option<BodyStream>) {
    let frame = proto::Reply {
        request_id,
        return_code: reply.return_code,
        content_type: reply.content_type,
        body: reply.body,
        headers: headers_to_wire(&reply.headers),
        body_follows: reply.stream.is_some(),
        body_length: reply.stream.as_ref().and_then(BodyStream::length),
        http_status: reply.http_status.map_or(0, u32::from),
    };
    (frame, reply.stream)
}

/// The frame for a `failure` answering `request_id` (return code 251), with
/// an explicit HTTP status if given.
pub(crate) fn failure_frame(
    request_id: u64,
    failure: &HandlerError,
    http_status: Option<http::StatusCode>,
) -> proto::Reply {
    proto::Reply {
        request_id,
        return_code: RETURN_HANDLER_FAILED,
        content_type: JSON.to_owned(),
        body: failure.to_body(),
        http_status: http_status.map_or(0, |status| u32::from(status.as_u16())),
        ..Default::default()
    }
}

/// A reply as it arrived: the domain reply (its streamed body, if one
/// follows, is attached by the link) and what the frame says about it.
#[derive(Debug)]
pub(crate) struct ReceivedReply {
    /// Our id of the request this answers.
    pub(crate) request_id: u64,
    /// The reply.
    pub(crate) reply: Reply,
    /// Whether the body follows in `Chunk` frames.
    pub(crate) body_follows: bool,
    /// The streamed body's length, when the sender knows it.
    pub(crate) body_length: Option<u64>,
}

impl From<proto::Reply> for ReceivedReply {
    fn from(frame: proto::Reply) -> Self {
        Self {
            request_id: frame.request_id,
            reply: Reply {
                return_code: frame.return_code,
                content_type: frame.content_type,
                body: frame.body,
                stream: None,
                headers: headers_from_wire(frame.headers),
                http_status: u16::try_from(frame.http_status).ok().filter(|s| *s != 0),
            },
            body_follows: frame.body_follows,
            body_length: frame.body_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_frame() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-a", http::HeaderValue::from_static("1"));
        headers.append("x-a", http::HeaderValue::from_static("2"));
        let event = Event {
            handler: HandlerName::new("get", "time/utc"),
            args: vec!["a b".into()],
            query: "q=1".into(),
            content_type: JSON.into(),
            headers,
            body: Bytes::from_static(b"{}"),
            stream: None,
        };
        let (frame, stream) = event_frame(7, event, Duration::from_millis(1500));
        assert!(stream.is_none());
        assert_eq!(frame.timeout_ms, 1500);
        let received = ReceivedEvent::from(frame);
        assert_eq!(received.request_id, 7);
        assert_eq!(received.event.handler.as_str(), "get_time_utc");
        assert_eq!(received.event.handler.noun(), "time/utc");
        assert_eq!(received.event.args, ["a b"]);
        assert_eq!(received.event.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(received.timeout, Duration::from_millis(1500));
        assert!(!received.body_follows);
    }

    #[test]
    fn replies_round_trip_and_status_zero_means_derived() {
        let reply = Reply::bytes("text/plain", "hi").with_return_code(3);
        let (frame, _) = reply_frame(9, reply);
        let received = ReceivedReply::from(frame);
        assert_eq!(received.request_id, 9);
        assert_eq!(received.reply.return_code, 3);
        assert_eq!(received.reply.http_status, None);
        let frame = failure_frame(
            4,
            &HandlerError::new("Busy", "full"),
            Some(http::StatusCode::SERVICE_UNAVAILABLE),
        );
        let received = ReceivedReply::from(frame);
        assert_eq!(received.reply.http_status, Some(503));
        assert_eq!(received.reply.return_code, RETURN_HANDLER_FAILED);
    }

    #[test]
    fn a_peer_sending_more_headers_than_http_holds_does_not_panic() {
        // `HeaderMap::with_capacity` panics above 24,576 entries and
        // `append` above 32,768: both were reachable from a peer's frame.
        let headers = (0..40_000)
            .map(|i| proto::Header {
                name: format!("x-{i}"),
                value: Bytes::from_static(b"v"),
            })
            .collect();
        let map = headers_from_wire(headers);
        assert!(map.len() <= 32_768, "{}", map.len());
        assert!(map.len() > 20_000, "{}", map.len());
    }

    #[test]
    fn headers_http_cannot_carry_are_dropped() {
        let headers = headers_from_wire(vec![
            proto::Header {
                name: "bad name".into(),
                value: Bytes::from_static(b"x"),
            },
            proto::Header {
                name: "good".into(),
                value: Bytes::from_static(b"y"),
            },
        ]);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["good"], "y");
    }

    mod properties {
        //! The mapping both ways, through real frame bytes.

        use bytes::BytesMut;
        use proptest::prelude::*;
        use tokio_util::codec::{Decoder, Encoder};

        use super::super::*;
        use crate::wire::FrameCodec;
        use crate::wire::proto::frame::Body;

        /// Names and values HTTP takes; a name may come twice.
        fn header_map() -> impl Strategy<Value = http::HeaderMap> {
            let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
            let value = prop::collection::vec(byte, 0..24);
            prop::collection::vec(("x-[a-c]|[a-z][a-z0-9-]{0,12}", value), 0..8).prop_map(|pairs| {
                let mut map = http::HeaderMap::new();
                for (name, value) in pairs {
                    let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                    map.append(name, http::HeaderValue::from_bytes(&value).unwrap());
                }
                map
            })
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                ("[a-z]{1,6}", "[a-z0-9_.~-]{1,6}(/[a-z0-9_.~-]{1,6}){0,3}"),
                prop::collection::vec(any::<String>(), 0..5),
                (".{0,16}", ".{0,16}"),
                header_map(),
                prop::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(
                    |((verb, noun), args, (query, content_type), headers, body)| Event {
                        handler: HandlerName::new(verb, noun),
                        args,
                        query,
                        content_type,
                        headers,
                        body: body.into(),
                        stream: None,
                    },
                )
        }

        /// `body` through the frame codec: encoded, then decoded.
        fn across(body: Body) -> Body {
            let mut codec = FrameCodec::default();
            let mut wire = BytesMut::new();
            codec.encode(body, &mut wire).unwrap();
            codec.decode(&mut wire).unwrap().unwrap()
        }

        /// Headers as a `HeaderMap` holds them: grouped by name, in order of
        /// first appearance, values in order.
        fn grouped(headers: &[proto::Header]) -> Vec<(String, Vec<Bytes>)> {
            let mut groups: Vec<(String, Vec<Bytes>)> = Vec::new();
            for header in headers {
                let name = header.name.to_ascii_lowercase();
                match groups.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(header.value.clone()),
                    None => groups.push((name, vec![header.value.clone()])),
                }
            }
            groups
        }

        proptest! {
            #[test]
            fn events_come_back_as_they_were_sent(
                event in event(),
                request_id in any::<u64>(),
                nanos in any::<u64>(),
            ) {
                let timeout = Duration::from_nanos(nanos);
                let expected = (
                    event.handler.clone(),
                    event.args.clone(),
                    event.query.clone(),
                    event.content_type.clone(),
                    event.headers.clone(),
                    event.body.clone(),
                );
                let (frame, stream) = event_frame(request_id, event, timeout);
                prop_assert!(stream.is_none());
                let Body::Event(frame) = across(Body::Event(frame)) else {
                    panic!("not an event");
                };
                let received = ReceivedEvent::from(frame);
                prop_assert_eq!(received.request_id, request_id);
                let event = received.event;
                let got = (
                    event.handler,
                    event.args,
                    event.query,
                    event.content_type,
                    event.headers,
                    event.body,
                );
                prop_assert_eq!(got, expected);
                // Carried to the millisecond, rounded down.
                let millis = u64::try_from(timeout.as_millis()).unwrap();
                prop_assert_eq!(received.timeout, Duration::from_millis(millis));
                prop_assert!(!received.body_follows);
            }

            #[test]
            fn replies_come_back_as_they_were_sent(
                (return_code, http_status) in (any::<u32>(), any::<Option<u16>>()),
                content_type in ".{0,16}",
                headers in header_map(),
                body in prop::collection::vec(any::<u8>(), 0..64),
                request_id in any::<u64>(),
            ) {
                let mut reply = Reply::bytes(content_type.clone(), body.clone())
                    .with_return_code(return_code);
                reply.headers = headers.clone();
                reply.http_status = http_status;
                let (frame, stream) = reply_frame(request_id, reply);
                prop_assert!(stream.is_none());
                let Body::Reply(frame) = across(Body::Reply(frame)) else {
                    panic!("not a reply");
                };
                let received = ReceivedReply::from(frame);
                prop_assert_eq!(received.request_id, request_id);
                let reply = received.reply;
                prop_assert_eq!(reply.return_code, return_code);
                prop_assert_eq!(reply.content_type, content_type);
                prop_assert_eq!(reply.body, Bytes::from(body));
                prop_assert_eq!(reply.headers, headers);
                // Status 0 on the wire means "derive it from the code".
                prop_assert_eq!(reply.http_status, http_status.filter(|s| *s != 0));
                prop_assert!(!received.body_follows);
            }

            #[test]
            fn a_peers_headers_keep_what_http_carries_and_go_back_unchanged(
                headers in prop::collection::vec(
                    ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}|.{0,4}", prop::collection::vec(any::<u8>(), 0..12)),
                    0..10,
                ),
            ) {
                let headers: Vec<proto::Header> = headers
                    .into_iter()
                    .map(|(name, value)| proto::Header { name, value: value.into() })
                    .collect();
                let carried: Vec<proto::Header> = headers
                    .iter()
                    .filter(|h| {
                        http::HeaderName::from_bytes(h.name.as_bytes()).is_ok()
                            && http::HeaderValue::from_bytes(&h.value).is_ok()
                    })
                    .cloned()
                    .collect();
                let map = headers_from_wire(headers);
                prop_assert_eq!(map.len(), carried.len());
                let back = headers_to_wire(&map);
                prop_assert_eq!(grouped(&back), grouped(&carried));
                prop_assert_eq!(headers_from_wire(back), map);
            }
        }
    }
}
