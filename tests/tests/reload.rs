//! A client node's identity reloaded in place: established links keep
//! serving, the next connection uses the new identity, a broken file changes
//! nothing. (The server side, with SIGHUP on a real process, is in
//! `pipe-server/tests/reload.rs`.)

use restpipe_tests::{
    IssueRequest, Pki, Registry, Role, connect_client, example_server, example_server_at,
    fast_settings, get, wait_for_client,
};

const CLIENT: &str = "rotating-client";

#[tokio::test]
async fn a_client_reloads_its_identity_without_dropping_the_pipe() {
    let old_pki = Pki::new();
    let server = example_server(&old_pki, fast_settings()).await;
    let addr = server.pipe_addr();
    let client = connect_client(&old_pki, &server, CLIENT, Registry::new()).await;
    let connection = server.connection_id(CLIENT);

    // The new identity, from a new CA, in a cert dir as set-identity leaves it.
    let new_pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let issued = new_pki.issue(IssueRequest::new(CLIENT, Role::Client));
    let files = new_pki.install(dir.path(), Role::Client, &issued).unwrap();

    // A broken file is refused, naming what is wrong.
    let foreign = old_pki.issue(IssueRequest::new(CLIENT, Role::Client));
    std::fs::write(&files.key, &foreign.key_pem).unwrap();
    let error = client.running.reloader().reload_files(&files).unwrap_err();
    assert!(format!("{error:#}").contains("does not match"), "{error:#}");
    std::fs::write(&files.key, &issued.key_pem).unwrap();

    client.running.reloader().reload_files(&files).unwrap();
    // The established link is untouched.
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
    assert_eq!(server.connection_id(CLIENT), connection);

    // The server moves to the new CA; the client comes back with its new
    // identity (the old one would be refused now).
    server.stop().await;
    let server = example_server_at(addr, &new_pki, fast_settings()).await;
    wait_for_client(&server, CLIENT).await;
    assert_eq!(get(&client.url("/server/time")).await.status, 200);
}
