//! A client node's identity reloaded in place: established links keep
//! serving, the next connection uses the new identity, a broken file changes
//! nothing. (The server side, with SIGHUP on a real process, is in
//! `pipe-server/tests/reload.rs`.)

mod common;

use common::*;
use pipe_core::identity::CertFiles;
use pipe_core::pki::{IssueRequest, Role};
use pipe_core::{Registry, Side};

const CLIENT: &str = "rotating-client";

#[tokio::test]
async fn a_client_reloads_its_identity_without_dropping_the_pipe() {
    let old_pki = Pki::new();
    let server = start_server(
        &old_pki,
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;
    let addr = server.pipe_addr();
    let client = connect_client(&old_pki, &server, CLIENT, Registry::new()).await;
    let connection = server
        .running
        .node()
        .peers()
        .get(CLIENT)
        .unwrap()
        .connection_id();

    // The new identity, from a new CA, in a cert dir as set-identity leaves it.
    let new_pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::in_dir(dir.path(), Role::Client);
    let issued = new_pki.issue(IssueRequest::new(CLIENT, Role::Client));
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    std::fs::write(&files.ca, new_pki.ca.cert_pem()).unwrap();

    // A broken file is refused, naming what is wrong.
    let foreign = old_pki.issue(IssueRequest::new(CLIENT, Role::Client));
    std::fs::write(&files.key, &foreign.key_pem).unwrap();
    let error = client.running.reloader().reload_files(&files).unwrap_err();
    assert!(format!("{error:#}").contains("does not match"), "{error:#}");
    std::fs::write(&files.key, &issued.key_pem).unwrap();

    client.running.reloader().reload_files(&files).unwrap();
    // The established link is untouched.
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
    assert_eq!(
        server
            .running
            .node()
            .peers()
            .get(CLIENT)
            .unwrap()
            .connection_id(),
        connection
    );

    // The server moves to the new CA; the client comes back with its new
    // identity (the old one would be refused now).
    server.stop().await;
    let server = start_server_at(
        addr,
        new_pki.server(),
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;
    wait_for_client(&server, CLIENT).await;
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}
