//! The small exchange the pipe's request scenarios are judged by, as the
//! baselines that are not HTTP send it: the request names what the app asks
//! for (`GET /server/time`) and the answer is what the pipe's `get_time`
//! handler answers, made afresh for each request as the handler does.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// What a requester sends: as long as the request line the pipe carries.
pub const REQUEST: &[u8] = b"GET /server/time";

/// Where the answer starts, to recognise it without parsing the float.
pub const ANSWER_PREFIX: &[u8] = br#"{"time_from_server":"#;

/// `{"time_from_server":<float>}` with the time now, as `get_time` answers.
pub fn time_answer() -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0);
    serde_json::to_vec(&serde_json::json!({ "time_from_server": now }))
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Whether `answer` is one [`time_answer`] made.
pub fn is_time_answer(answer: &[u8]) -> bool {
    answer.starts_with(ANSWER_PREFIX) && answer.ends_with(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_recognised() {
        let answer = time_answer();
        assert!(is_time_answer(&answer), "{answer:?}");
        assert!(!is_time_answer(b"{}"));
    }
}
