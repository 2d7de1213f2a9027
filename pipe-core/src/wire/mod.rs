//! The wire: protobuf messages, the length-prefixed frame codec, streamed
//! bodies, and the domain types the rest of restpipe speaks instead of
//! protobuf, with the one mapping between the two. Knows nothing above it.

pub mod body;
mod budget;
mod convert;
mod encode;
mod frame;
mod limits;
mod message;
mod progress;
pub mod proto;

pub use budget::{
    BudgetScope, DEFAULT_MAX_BODY_MEMORY, DEFAULT_MAX_BODY_MEMORY_PER_PEER, Held, MemoryBudget,
    OverBudget,
};
pub use convert::JobTag;
pub(crate) use convert::{ReceivedEvent, ReceivedReply, event_frame, failure_frame, reply_frame};
#[cfg(feature = "fuzzing")]
pub(crate) use convert::{headers_from_wire, headers_to_wire};
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameCodec, FrameError, PROTOCOL_VERSION};
pub use limits::{
    LimitError, MAX_ARG_BYTES, MAX_ARGS, MAX_HEADER_BYTES, MAX_HEADERS, MAX_JOB_ID, MAX_PEER_TEXT,
    printable,
};
pub(crate) use limits::{check_counts, check_event, check_reply};
pub(crate) use message::cause_chain;
pub use message::{
    Event, HandlerError, HandlerName, JSON, RETURN_ACCESS_DENIED, RETURN_HANDLER_FAILED,
    RETURN_NO_HANDLER, RETURN_OK, Reply, Side, handler_name, is_hop_by_hop, is_json_type,
};
pub use progress::JobProgress;
