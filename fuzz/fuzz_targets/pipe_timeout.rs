//! `X-Pipe-Timeout` values as the local front parses them, on arbitrary
//! bytes: never a panic (`Duration::from_secs_f64` panics on values it
//! cannot hold), and either a refusal (the front answers 400 with the
//! message, which names the header and the limit) or a deadline no longer
//! than the maximum. Checked against a model of the documented rule: a
//! positive, finite number of seconds up to a day, surrounding whitespace
//! allowed; an accepted value is the number given, to the nanosecond.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_core::fuzzing::{MAX_PIPE_TIMEOUT, parse_pipe_timeout};

/// The seconds the documented rule accepts `value` as, if any.
fn model(value: &[u8]) -> Option<f64> {
    let secs: f64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0 && secs <= MAX_PIPE_TIMEOUT.as_secs_f64()).then_some(secs)
}

fuzz_target!(|data: &[u8]| {
    match (parse_pipe_timeout(data), model(data)) {
        (Ok(timeout), Some(secs)) => {
            assert!(timeout <= MAX_PIPE_TIMEOUT, "{data:?} gave {timeout:?}");
            let error = (timeout.as_secs_f64() - secs).abs();
            assert!(error <= 1e-9, "{data:?} gave {timeout:?}, not {secs} s");
        }
        (Err(message), None) => {
            let max = MAX_PIPE_TIMEOUT.as_secs().to_string();
            assert!(
                message.contains("X-Pipe-Timeout") && message.contains(&max),
                "{data:?}: the refusal does not say what to send: {message}"
            );
        }
        (outcome, model) => panic!("{data:?}: parsed as {outcome:?}, the rule says {model:?}"),
    }
});
