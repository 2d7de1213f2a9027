//! Certificate rotation on a running `pipe-server`: new files in the cert dir
//! and SIGHUP (what `systemctl reload` sends). The established pipe keeps
//! serving, a client with a certificate from the new CA is accepted, and a
//! broken file is refused with the old identity left in use.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use restpipe_tests::{
    ANSWER_LIMIT, InstalledServer, IssueRequest, NodeProcess, Pki, Response, Role, get_within,
    server_request,
};

/// How long the server may take to log what a SIGHUP did.
const LOG_LIMIT: Duration = Duration::from_secs(5);

/// A GET to a node that must answer, and within [`ANSWER_LIMIT`].
async fn get(url: &str) -> Response {
    get_within(url, ANSWER_LIMIT).await
}

/// Polls the server's log until it holds `needle`.
async fn log_shows(server: &mut NodeProcess, needle: &str) {
    server
        .wait_for_log(LOG_LIMIT, needle, |log| log.contains(needle))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_to_a_new_ca_without_dropping_the_pipe() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let mut server = installed.start().await;
    let old_client = installed.start_client(Duration::from_millis(300)).await;
    old_client.time_ok_within(Duration::from_secs(5)).await;
    let status = get(&old_client.url("/_pipe/status")).await.json();
    let connection = status["peers"][0]["connection_id"].clone();

    // Rotate: a new CA, a new server identity from it, installed in place.
    let new_pki = Pki::new();
    let server_cert = new_pki.issue(server_request());
    new_pki
        .install(&installed.cert_dir(), Role::Server, &server_cert)
        .unwrap();
    server.signal("HUP").unwrap();
    log_shows(&mut server, "certificates reloaded").await;

    // A client of the new CA is accepted...
    let new_client = installed
        .start_client_with(new_pki.client("new-client"), Duration::from_millis(300))
        .await;
    new_client.time_ok_within(Duration::from_secs(5)).await;

    // ...while the established pipe keeps serving, on the same connection.
    let answer = get(&old_client.url("/server/time")).await;
    assert_eq!(answer.status, 200);
    let status = get(&old_client.url("/_pipe/status")).await.json();
    assert_eq!(
        status["peers"][0]["connection_id"], connection,
        "the old pipe was dropped"
    );

    // A newcomer from the old CA is now refused: the new config is in force.
    let stale = installed
        .start_client_with(
            installed.pki().client("stale-client"),
            Duration::from_millis(300),
        )
        .await;
    let link = stale
        .link_until(Duration::from_secs(5), "a refused attempt", |link| {
            link["last_error"].is_string()
        })
        .await;
    assert_eq!(link["connected"], false);
    assert!(
        link["last_error"].as_str().unwrap().contains("certificate"),
        "{link}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_certificate_is_refused_and_the_old_identity_stays() {
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let mut server = installed.start().await;
    let files = installed.cert_files();

    // A truncated certificate, then a key that belongs to another certificate.
    let good_cert = std::fs::read_to_string(&files.cert).unwrap();
    std::fs::write(&files.cert, &good_cert[..good_cert.len() / 2]).unwrap();
    server.signal("HUP").unwrap();
    log_shows(&mut server, "certificate reload refused").await;

    std::fs::write(&files.cert, &good_cert).unwrap();
    let other = installed
        .pki()
        .issue(IssueRequest::new("localhost", Role::Server));
    std::fs::write(&files.key, &other.key_pem).unwrap();
    server.signal("HUP").unwrap();
    let log = server
        .wait_for_log(LOG_LIMIT, "second refusal logged", |log| {
            log.matches("certificate reload refused").count() >= 2
        })
        .await
        .unwrap();
    assert!(
        log.contains("the private key does not match the certificate"),
        "{log}"
    );

    // The server still accepts new clients with its old, valid identity.
    let client = installed.start_client(Duration::from_millis(300)).await;
    client.time_ok_within(Duration::from_secs(5)).await;
}
