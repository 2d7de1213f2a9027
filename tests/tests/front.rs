//! The local front under hostile or careless callers: bad deadlines, slow
//! bodies, too many connections, callers that stop reading. Real nodes over
//! real mutual TLS, HTTP in the way an app would send it.

use restpipe_tests::{Pipe, Registry, Side, fast_settings, get, send};

const CLIENT: &str = "client-1";

/// The example handlers on both nodes, `CLIENT` connected.
async fn pipe() -> Pipe {
    Pipe::start(
        Registry::with_examples(Side::Server),
        fast_settings(),
        CLIENT,
        Registry::with_examples(Side::Client),
    )
    .await
}

#[tokio::test]
async fn a_timeout_out_of_range_is_a_400_with_a_reason_not_a_dropped_connection() {
    let pipe = pipe().await;
    let url = pipe.client.url("/server/time");
    for value in ["1e20", "1e308", "86401", "-1", "0", "NaN", "inf", "soon"] {
        let reply = send("GET", &url, &[("x-pipe-timeout", value)], "").await;
        assert_eq!(reply.status, 400, "X-Pipe-Timeout: {value}");
        let message = reply.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("X-Pipe-Timeout"), "{value}: {message}");
    }
    let reply = send("GET", &url, &[("x-pipe-timeout", "2.5")], "").await;
    assert_eq!(reply.status, 200, "a deadline in range is taken");
    assert_eq!(get(&url).await.status, 200, "the node is still fine");
}
