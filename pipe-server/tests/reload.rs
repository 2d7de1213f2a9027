//! Certificate rotation on a running `pipe-server`: new files in the cert dir
//! and SIGHUP (what `systemctl reload` sends). The established pipe keeps
//! serving, a client with a certificate from the new CA is accepted, and a
//! broken file is refused with the old identity left in use.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use pipe_core::TlsIdentity;
use pipe_core::identity::CertFiles;
use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};

/// A client identity from `ca`, trusting `ca`.
fn client_identity(ca: &CertificateAuthority, name: &str) -> TlsIdentity {
    let issued = ca.issue(&IssueRequest::new(name, Role::Client)).unwrap();
    TlsIdentity::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap()
}

/// Polls the server's log until it holds `needle`.
async fn log_shows(server: &ServerProcess, needle: &str) {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "server log never showed {needle:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_to_a_new_ca_without_dropping_the_pipe() {
    let mut fixture = Fixture::new();
    let server = fixture.start_server().await;
    let old_client = fixture.start_client(Duration::from_millis(300)).await;
    old_client.time_ok_within(Duration::from_secs(5)).await;
    let status = get(&old_client.url("/_pipe/status")).await.body;
    let connection = status["peers"][0]["connection_id"].clone();

    // Rotate: a new CA, a new server identity from it, installed in place.
    let new_ca = CertificateAuthority::generate("rotated CA").unwrap();
    let server_cert = new_ca
        .issue(&IssueRequest {
            ips: vec![Ipv4Addr::LOCALHOST.into()],
            ..IssueRequest::new("localhost", Role::Server)
        })
        .unwrap();
    let files = CertFiles::in_dir(&cert_dir(fixture.tmp.path()), Role::Server);
    std::fs::write(&files.cert, &server_cert.cert_pem).unwrap();
    std::fs::write(&files.key, &server_cert.key_pem).unwrap();
    std::fs::write(&files.ca, new_ca.cert_pem()).unwrap();
    server.signal("HUP");
    log_shows(&server, "certificates reloaded").await;

    // A client of the new CA is accepted...
    let new_client = fixture
        .start_client_with(
            client_identity(&new_ca, "new-client"),
            Duration::from_millis(300),
        )
        .await;
    new_client.time_ok_within(Duration::from_secs(5)).await;

    // ...while the established pipe keeps serving, on the same connection.
    let answer = get(&old_client.url("/server/time")).await;
    assert_eq!(answer.status, 200);
    let status = get(&old_client.url("/_pipe/status")).await.body;
    assert_eq!(
        status["peers"][0]["connection_id"], connection,
        "the old pipe was dropped"
    );

    // A newcomer from the old CA is now refused: the new config is in force.
    let stale = fixture
        .start_client_with(
            client_identity(&fixture.ca, "stale-client"),
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
    let mut fixture = Fixture::new();
    let server = fixture.start_server().await;
    let files = CertFiles::in_dir(&cert_dir(fixture.tmp.path()), Role::Server);

    // A truncated certificate, then a key that belongs to another certificate.
    let good_cert = std::fs::read_to_string(&files.cert).unwrap();
    std::fs::write(&files.cert, &good_cert[..good_cert.len() / 2]).unwrap();
    server.signal("HUP");
    log_shows(&server, "certificate reload refused").await;

    std::fs::write(&files.cert, &good_cert).unwrap();
    let other = fixture
        .ca
        .issue(&IssueRequest::new("localhost", Role::Server))
        .unwrap();
    std::fs::write(&files.key, &other.key_pem).unwrap();
    server.signal("HUP");
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if log.matches("certificate reload refused").count() >= 2 {
            assert!(
                log.contains("the private key does not match the certificate"),
                "{log}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "second refusal not logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server still accepts new clients with its old, valid identity.
    let client = fixture.start_client(Duration::from_millis(300)).await;
    client.time_ok_within(Duration::from_secs(5)).await;
}
