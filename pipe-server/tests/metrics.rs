//! A real `pipe-server` started with `--metrics-listen`, as an operator
//! starts one for Prometheus: its metrics listener and its local front's
//! `/_pipe/metrics` are scraped over HTTP and read by the Prometheus
//! project's own text parser while a client node uses the pipe.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use restpipe_tests::process::free_ports;
use restpipe_tests::{ANSWER_LIMIT, InstalledServer, get, get_within, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_of_a_server_process_counts_what_its_clients_asked() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let (metrics, _) = free_ports().unwrap();
    installed.add_args(["--metrics-listen", &metrics.to_string()]);
    let _server = installed.start().await;
    let client = installed.start_client(Duration::from_millis(300)).await;
    client.time_ok_within(Duration::from_secs(5)).await;
    let asked_before = scrape(&format!("http://{metrics}/metrics"))
        .await
        .value("restpipe_events_received_total", &[]);

    for _ in 0..3 {
        assert_eq!(get(&client.url("/server/time")).await.status, 200);
    }
    let scraped = scrape(&format!("http://{metrics}/metrics")).await;
    assert_eq!(
        scraped.value("restpipe_events_received_total", &[]),
        asked_before + 3.0
    );
    let handled = [("direction", "received"), ("handler", "get_time")];
    assert_eq!(
        scraped.value("restpipe_request_duration_seconds_count", &handled),
        asked_before + 3.0
    );
    assert_eq!(scraped.value("restpipe_peers_connected", &[]), 1.0);
    assert_eq!(
        scraped.value("restpipe_connections_established_total", &[]),
        1.0
    );

    // The local front has the same metrics; the listener has nothing else.
    let front = scrape(&installed.url("/_pipe/metrics")).await;
    assert_eq!(
        front.value("restpipe_request_duration_seconds_count", &handled),
        asked_before + 3.0
    );
    let status = get_within(&format!("http://{metrics}/_pipe/status"), ANSWER_LIMIT).await;
    assert_eq!(status.status, 404);
}
