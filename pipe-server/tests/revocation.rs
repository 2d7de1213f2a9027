//! A stolen client key shut out of a running `pipe-server`: the server runs
//! with `--crl`, two clients are connected and serving; the CA's list gains
//! one client's certificate and the server gets SIGHUP (what `systemctl
//! reload` sends). That client's established connection is closed with
//! `GoAway` (revoked) within moments, its reconnects are refused, requests
//! for it get 503; the other client is never disturbed.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use restpipe_tests::files::path_arg;
use restpipe_tests::wire::go_away;
use restpipe_tests::{
    ANSWER_LIMIT, InstalledServer, IssueRequest, NodeProcess, Response, Role, SERVER_KEY,
    get_within,
};

/// How long anything the test waits for may take.
const LIMIT: Duration = Duration::from_secs(5);
/// How long a request waits for a missing peer (server and clients).
const PEER_WAIT: Duration = Duration::from_millis(300);

/// A GET to a node that must answer, and within [`ANSWER_LIMIT`].
async fn get(url: &str) -> Response {
    get_within(url, ANSWER_LIMIT).await
}

/// GETs `url` until it answers `status`, failing after [`LIMIT`].
async fn answers(url: &str, status: u16) -> Response {
    let started = Instant::now();
    loop {
        let answer = get(url).await;
        if answer.status == status {
            return answer;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{url} not {status} within {LIMIT:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the server's log until it holds `needle`.
async fn log_shows(server: &mut NodeProcess, needle: &str) -> String {
    server
        .wait_for_log(LIMIT, needle, |log| log.contains(needle))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_revoked_client_closes_its_connection_and_refuses_it() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let stolen = installed
        .pki()
        .issue(IssueRequest::new("stolen-client", Role::Client));
    let kept = installed
        .pki()
        .issue(IssueRequest::new("kept-client", Role::Client));
    // The operator runs with the CA's list from the start; nothing on it yet.
    let crl = installed.crl_path();
    std::fs::write(&crl, installed.pki().revocation_list(&[], 1)).unwrap();
    installed.add_args(["--crl", path_arg(&crl), "--peer-wait", "0.3"]);
    let mut server = installed.start().await;
    log_shows(&mut server, "revocation list in force").await;

    let stolen_node = installed
        .start_client_with(installed.pki().identity(&stolen), PEER_WAIT)
        .await;
    let kept_node = installed
        .start_client_with(installed.pki().identity(&kept), PEER_WAIT)
        .await;
    for node in [&stolen_node, &kept_node] {
        node.time_ok_within(LIMIT).await;
    }
    answers(&installed.url("/client/stolen-client/time"), 200).await;
    answers(&installed.url("/client/kept-client/time"), 200).await;
    let kept_connection = kept_node.status().await["peers"][0]["connection_id"].clone();
    let stolen_link = stolen_node
        .running
        .node()
        .peers()
        .get(SERVER_KEY)
        .expect("the stolen client is connected");

    // `certs-tool revoke --name stolen-client`, then `kill -HUP`.
    std::fs::write(&crl, installed.pki().revocation_list(&[&stolen], 2)).unwrap();
    server.signal("HUP").unwrap();

    // The established connection is closed, with GoAway saying why.
    let log = log_shows(
        &mut server,
        "closing the connection: the peer's certificate is revoked",
    )
    .await;
    assert!(log.contains("peer=\"stolen-client\""), "{log}");
    tokio::time::timeout(LIMIT, stolen_link.closed())
        .await
        .expect("the revoked client's connection closes");
    assert_eq!(stolen_link.peer_go_away(), Some(go_away::Reason::Revoked));
    let reason = stolen_link.close_reason();
    assert!(
        reason.contains("certificate revoked") && reason.contains("stolen-client"),
        "{reason}"
    );

    // Its reconnects are refused at the handshake, and it hears why.
    log_shows(
        &mut server,
        "client refused: its certificate is on this node's revocation list",
    )
    .await;
    let link = stolen_node
        .link_until(LIMIT, "a refused reconnect", |link| {
            link["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("CertificateRevoked"))
        })
        .await;
    assert_eq!(link["connected"], false, "{link}");
    // Requests for it find no connection.
    let answer = answers(&installed.url("/client/stolen-client/time"), 503).await;
    assert!(
        String::from_utf8_lossy(&answer.body).contains("stolen-client"),
        "{answer:?}"
    );
    assert!(!stolen_node.is_connected());

    // The other client was never disturbed: same connection, still served.
    answers(&installed.url("/client/kept-client/time"), 200).await;
    kept_node.time_ok_within(LIMIT).await;
    let status = kept_node.status().await;
    assert_eq!(status["peers"][0]["connection_id"], kept_connection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_crl_at_sighup_is_refused_and_the_old_list_stays_in_force() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let stolen = installed
        .pki()
        .issue(IssueRequest::new("stolen-client", Role::Client));
    let crl = installed.crl_path();
    std::fs::write(&crl, installed.pki().revocation_list(&[&stolen], 1)).unwrap();
    installed.add_args(["--crl", path_arg(&crl)]);
    let mut server = installed.start().await;
    let kept = installed.start_client(PEER_WAIT).await;
    kept.time_ok_within(LIMIT).await;

    // Half a list, as an interrupted copy would leave it.
    let good = std::fs::read_to_string(&crl).unwrap();
    std::fs::write(&crl, &good[..good.len() / 2]).unwrap();
    server.signal("HUP").unwrap();
    let log = log_shows(&mut server, "certificate reload refused").await;
    assert!(log.contains("ca.crl.pem"), "{log}");

    // The old list is still in force: the revoked client is still refused...
    let refused = installed
        .start_client_with(installed.pki().identity(&stolen), PEER_WAIT)
        .await;
    refused
        .link_until(LIMIT, "a refused attempt", |link| {
            link["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("CertificateRevoked"))
        })
        .await;
    // ...and the connected one carries on.
    kept.time_ok_within(LIMIT).await;
}
