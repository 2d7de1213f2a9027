//! `pipe-server` as an operator runs it: the real binary, real files in a
//! temporary directory, and the quick-start demo end to end.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use restpipe_tests::files::{files_in, mode, path_arg};
use restpipe_tests::process::{self, stderr, stdout};
use restpipe_tests::{CertFiles, IssueRequest, Pki, Role};

const PIPE_SERVER: &str = env!("CARGO_BIN_EXE_pipe-server");

fn run(args: &[&str]) -> Output {
    process::run(PIPE_SERVER, args)
}

/// A CA with a server identity and a client identity on disk, plus the
/// same from a second, unrelated CA.
struct Fixture {
    tmp: tempfile::TempDir,
    server: CertFiles,
    client: CertFiles,
    foreign_server: CertFiles,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let dir = tmp.path().join("inputs");
    let server_request = IssueRequest {
        dns: vec!["localhost".to_owned()],
        ips: vec!["127.0.0.1".parse().unwrap()],
        ..IssueRequest::new("srv", Role::Server)
    };
    let server = pki.write_identity(&dir, server_request.clone()).unwrap();
    let client = pki
        .write_identity(&dir, IssueRequest::new("node-1", Role::Client))
        .unwrap();
    let foreign_server = Pki::new()
        .write_identity(&tmp.path().join("foreign"), server_request)
        .unwrap();
    Fixture {
        tmp,
        server,
        client,
        foreign_server,
    }
}

fn set_identity(key: &Path, crt: &Path, ca: &Path, cert_dir: &Path) -> Output {
    run(&[
        "set-identity",
        path_arg(key),
        path_arg(crt),
        path_arg(ca),
        "--cert-dir",
        path_arg(cert_dir),
    ])
}

#[test]
fn set_identity_installs_a_server_identity() {
    let f = fixture();
    let cert_dir = f.tmp.path().join("etc/restpipe");
    let output = set_identity(&f.server.key, &f.server.cert, &f.server.ca, &cert_dir);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("srv"), "{}", stdout(&output));
    assert_eq!(
        files_in(&cert_dir),
        [
            "ca.crt.pem",
            "restpipe.server.crt.pem",
            "restpipe.server.key.pem"
        ]
    );
    assert_eq!(mode(&cert_dir.join("restpipe.server.key.pem")), 0o600);
    for (installed, original) in [
        ("restpipe.server.key.pem", &f.server.key),
        ("restpipe.server.crt.pem", &f.server.cert),
        ("ca.crt.pem", &f.server.ca),
    ] {
        assert_eq!(
            std::fs::read(cert_dir.join(installed)).unwrap(),
            std::fs::read(original).unwrap(),
            "{installed}"
        );
    }
}

#[test]
fn serve_refuses_a_socket_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let cert_dir = f.tmp.path().join("certs");
    let output = set_identity(&f.server.key, &f.server.cert, &f.server.ca, &cert_dir);
    assert!(output.status.success(), "{}", stderr(&output));
    // Like /tmp: anyone may create the socket's path while the node restarts.
    let shared = f.tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let http = format!("unix:{}", shared.join("rpserver.sock").display());
    let output = process::run_within(
        PIPE_SERVER,
        &[
            "serve",
            "--profile",
            "prod",
            "--http",
            &http,
            "--listen",
            "127.0.0.1:0",
            "--cert-dir",
            path_arg(&cert_dir),
            "--statsd-host",
            "",
        ],
        Duration::from_secs(20),
    );
    assert!(!output.status.success(), "it started: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("writable by others"), "{message}");
    assert!(message.contains("/run/restpipe"), "{message}");
    assert!(!shared.join("rpserver.sock").exists());
}

#[test]
fn serve_does_not_start_with_a_revocation_list_it_cannot_use() {
    let f = fixture();
    let cert_dir = f.tmp.path().join("certs");
    let output = set_identity(&f.server.key, &f.server.cert, &f.server.ca, &cert_dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let crl = f.tmp.path().join("ca.crl.pem");
    // (the list's contents, or none; what stderr must say)
    let foreign = Pki::new().revocation_list(&[], 1);
    let cases = [
        (None, "cannot read the revocation list"),
        (Some("no list here"), "holds no usable X509 CRL PEM block"),
        (
            Some(foreign.as_str()),
            "not signed by a CA this node trusts",
        ),
    ];
    for (contents, expected) in cases {
        if let Some(contents) = contents {
            std::fs::write(&crl, contents).unwrap();
        }
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--cert-dir",
            path_arg(&cert_dir),
            "--crl",
            path_arg(&crl),
        ];
        let output = process::run_within(PIPE_SERVER, &args, Duration::from_secs(20));
        assert!(!output.status.success(), "it started: {}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains(expected) && message.contains("ca.crl.pem"),
            "{expected:?}: {message}"
        );
    }
}

#[test]
fn set_identity_refuses_bad_identities_and_installs_nothing() {
    let f = fixture();
    // (what, key, certificate, CA, what stderr must say)
    let cases: [(&str, &Path, &Path, &Path, &str); 3] = [
        (
            "client certificate",
            &f.client.key,
            &f.client.cert,
            &f.client.ca,
            "serverAuth",
        ),
        (
            "key of another certificate",
            &f.client.key,
            &f.server.cert,
            &f.server.ca,
            "does not match",
        ),
        (
            "certificate from another CA",
            &f.foreign_server.key,
            &f.foreign_server.cert,
            &f.server.ca,
            "does not verify against the CA",
        ),
    ];
    for (i, (what, key, crt, ca, expected)) in cases.into_iter().enumerate() {
        let cert_dir = f.tmp.path().join(format!("certs-{i}"));
        let output = set_identity(key, crt, ca, &cert_dir);
        let stderr = stderr(&output);
        assert!(!output.status.success(), "{what}: accepted");
        assert!(stderr.contains("not installed"), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(
            files_in(&cert_dir).is_empty(),
            "{what}: {:?}",
            files_in(&cert_dir)
        );
    }

    // An existing cert dir with an identity in it keeps that identity.
    let cert_dir = f.tmp.path().join("existing");
    let output = set_identity(&f.server.key, &f.server.cert, &f.server.ca, &cert_dir);
    assert!(output.status.success());
    let output = set_identity(&f.client.key, &f.client.cert, &f.client.ca, &cert_dir);
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.server.crt.pem")).unwrap(),
        std::fs::read(&f.server.cert).unwrap()
    );
    assert_eq!(files_in(&cert_dir).len(), 3);
}

/// Runs `pipe-server demo --once`, killing it if it outlives `limit`.
fn run_demo(limit: Duration) -> Output {
    process::run_within(PIPE_SERVER, &["demo", "--once"], limit)
}

#[test]
fn demo_once_runs_the_examples_both_ways() {
    let output = run_demo(Duration::from_secs(30));
    let stdout = stdout(&output);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        stderr(&output)
    );
    let curls: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("curl"))
        .collect();
    for path in [
        "/server/time",
        "/server/cat//hello%20/world",
        "/client/demo-client/time",
        "/client/demo-client/cat//hello%20/world",
    ] {
        assert!(
            curls
                .iter()
                .any(|line| line.contains("http://127.0.0.1:") && line.contains(path)),
            "no curl line for {path}: {curls:#?}"
        );
    }
    for answer in [
        r#""result_from_server":"hello world""#,
        r#""result_from_client":"hello world""#,
        r#""time_from_server":"#,
        r#""time_from_client":"#,
    ] {
        assert!(stdout.contains(answer), "no {answer} in: {stdout}");
    }
    let results: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("->"))
        .collect();
    // Four synchronous calls, then the job: accepted, then its result.
    assert_eq!(results.len(), 6, "{stdout}");
    assert!(
        curls
            .iter()
            .any(|line| line.contains("-H 'Prefer: respond-async'")
                && line.contains("/client/demo-client/time")),
        "no job submission: {curls:#?}"
    );
    assert!(
        results[4].contains("-> 202, Location: /_pipe/jobs/"),
        "{}",
        results[4]
    );
    assert!(
        results[5].contains(r#""time_from_client":"#),
        "{}",
        results[5]
    );
    for result in results[..4].iter().chain([&results[5]]) {
        assert!(
            result
                .trim_start()
                .starts_with("-> 200, X-Event-Return-Code: 0,"),
            "{result}"
        );
    }
}

#[test]
fn help_lists_the_commands_and_flags() {
    let top = run(&["--help"]);
    assert!(top.status.success());
    let top = stdout(&top);
    for command in ["serve", "set-identity", "demo"] {
        assert!(top.contains(command), "--help lacks {command}: {top}");
    }
    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success());
    let serve = stdout(&serve);
    for flag in [
        "--listen",
        "--http",
        "--cert-dir",
        "--crl",
        "RP_CRL",
        "--profile",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}: {serve}");
    }
    let set = run(&["set-identity", "--help"]);
    assert!(set.status.success());
    let set = stdout(&set);
    for word in ["KEY", "CRT", "CA", "--cert-dir"] {
        assert!(
            set.contains(word),
            "set-identity --help lacks {word}: {set}"
        );
    }
}
