//! `pipe-client` as an operator runs it: the real binary and real files in
//! a temporary directory.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use restpipe_tests::files::{files_in, mode, path_arg};
use restpipe_tests::process::{self, stderr, stdout};
use restpipe_tests::{CertFiles, IssueRequest, Pki, Role};

const PIPE_CLIENT: &str = env!("CARGO_BIN_EXE_pipe-client");

fn run(args: &[&str]) -> Output {
    process::run(PIPE_CLIENT, args)
}

fn set_identity(files: &CertFiles, cert_dir: &Path) -> Output {
    run(&[
        "set-identity",
        path_arg(&files.key),
        path_arg(&files.cert),
        path_arg(&files.ca),
        "--cert-dir",
        path_arg(cert_dir),
    ])
}

#[test]
fn set_identity_takes_a_client_identity_and_refuses_a_server_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let inputs = tmp.path().join("inputs");
    let client = pki
        .write_identity(&inputs, IssueRequest::new("node-1", Role::Client))
        .unwrap();
    let server = pki
        .write_identity(
            &inputs,
            IssueRequest {
                ips: vec!["127.0.0.1".parse().unwrap()],
                ..IssueRequest::new("localhost", Role::Server)
            },
        )
        .unwrap();

    let refused_dir = tmp.path().join("refused");
    let output = set_identity(&server, &refused_dir);
    let stderr = stderr(&output);
    assert!(!output.status.success(), "a server identity was accepted");
    assert!(
        stderr.contains("not installed") && stderr.contains("clientAuth"),
        "{stderr}"
    );
    assert!(
        files_in(&refused_dir).is_empty(),
        "{:?}",
        files_in(&refused_dir)
    );

    let cert_dir = tmp.path().join("var/lib/restpipe");
    let output = set_identity(&client, &cert_dir);
    assert!(output.status.success(), "{}", process::stderr(&output));
    assert!(stdout(&output).contains("node-1"), "{}", stdout(&output));
    assert_eq!(
        files_in(&cert_dir),
        [
            "ca.crt.pem",
            "restpipe.client.crt.pem",
            "restpipe.client.key.pem"
        ]
    );
    assert_eq!(mode(&cert_dir.join("restpipe.client.key.pem")), 0o600);
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.client.key.pem")).unwrap(),
        std::fs::read(&client.key).unwrap()
    );
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.client.crt.pem")).unwrap(),
        std::fs::read(&client.cert).unwrap()
    );

    // Offering the server identity again leaves the installed one alone.
    let output = set_identity(&server, &cert_dir);
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.client.crt.pem")).unwrap(),
        std::fs::read(&client.cert).unwrap()
    );
    assert_eq!(files_in(&cert_dir).len(), 3);
}

#[test]
fn serve_help_lists_its_flags_and_the_original_environment() {
    let top = run(&["--help"]);
    assert!(top.status.success());
    let top = stdout(&top);
    for command in ["serve", "set-identity"] {
        assert!(top.contains(command), "--help lacks {command}: {top}");
    }
    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success());
    let serve = stdout(&serve);
    for word in [
        "--server",
        "--http",
        "--cert-dir",
        "--crl",
        "RP_CRL",
        "--profile",
        "RP_CLIENT_TARGET_HOSTNAME",
        "--proxy",
        "RP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        assert!(serve.contains(word), "serve --help lacks {word}: {serve}");
    }
}

#[test]
fn serve_fails_fast_and_clearly_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    // (--server, what stderr must say)
    let cases: [(&str, &[&str]); 2] = [
        // A --server without a port.
        ("example.com", &["HOST:PORT"]),
        // No identity installed in the cert dir.
        ("127.0.0.1:1", &["client identity", "restpipe.client"]),
    ];
    for (server, expected) in cases {
        let args = [
            "serve",
            "--server",
            server,
            "--http",
            "127.0.0.1:0",
            "--cert-dir",
            path_arg(tmp.path()),
        ];
        let output = process::run_within(PIPE_CLIENT, &args, Duration::from_secs(10));
        assert!(!output.status.success());
        let stderr = stderr(&output);
        for needle in expected {
            assert!(stderr.contains(needle), "{stderr}");
        }
    }
}

#[test]
fn token_new_makes_a_handlers_only_token_for_a_client_nodes_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tokens.toml");
    let made = run(&[
        "token",
        "new",
        "app",
        "--handlers",
        "get_time,get_cat",
        "--append",
        path_arg(&file),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let secret = stdout(&made).trim().to_owned();
    assert!(secret.starts_with("rpt_"), "{secret}");
    let tokens = restpipe_tests::ApiTokens::load(&file, restpipe_tests::Side::Client).unwrap();
    let app = tokens.find(&secret).unwrap();
    assert_eq!(app.refusal("get_cat", "server"), None);
    assert!(app.refusal("post_cat", "server").is_some());

    let refused = run(&["token", "new", "web", "--handlers", "*", "--clients", "*"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("a client node pipes only to its server"),
        "{}",
        stderr(&refused)
    );
}
