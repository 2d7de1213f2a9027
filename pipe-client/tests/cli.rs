//! `pipe-client` as an operator runs it: the real binary and real files in
//! a temporary directory.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};

/// Environment variables that would change what the binary does.
const ENV: &[&str] = &[
    "RP_CLIENT_CERT_PATH",
    "RP_CLIENT_KEY_FILENAME",
    "RP_CLIENT_CRT_FILENAME",
    "RP_CA_CRT_FILENAME",
    "RP_CLIENT_HTTP",
    "RP_CLIENT_TARGET_HOSTNAME",
    "RP_CLIENT_TARGET_PORT",
    "RP_CLIENT_TARGET_SERVER_NAME",
    "RP_PROFILE",
    "RUST_LOG",
    "DEBUG",
];

fn pipe_client() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipe-client"));
    for name in ENV {
        command.env_remove(name);
    }
    command
}

fn run(args: &[&str]) -> Output {
    pipe_client().args(args).output().expect("pipe-client runs")
}

/// Runs a command that is expected to exit on its own, killing it if it is
/// still running after `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let mut child = pipe_client()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipe-client starts");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "pipe-client {args:?} still running after {limit:?}: {}",
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Files in `dir`, or none if it does not exist.
fn files_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Key, certificate and CA files of one identity.
struct Files {
    key: PathBuf,
    crt: PathBuf,
    ca: PathBuf,
}

fn write_identity(ca: &CertificateAuthority, dir: &Path, request: IssueRequest) -> Files {
    let name = request.name.clone();
    let (crt, key) = ca.issue(&request).unwrap().write(dir, &name).unwrap();
    let (ca, _) = ca.write(dir).unwrap();
    Files { key, crt, ca }
}

fn set_identity(files: &Files, cert_dir: &Path) -> Output {
    run(&[
        "set-identity",
        arg(&files.key),
        arg(&files.crt),
        arg(&files.ca),
        "--cert-dir",
        arg(cert_dir),
    ])
}

#[test]
fn set_identity_takes_a_client_identity_and_refuses_a_server_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("cli test CA").unwrap();
    let inputs = tmp.path().join("inputs");
    let client = write_identity(&ca, &inputs, IssueRequest::new("node-1", Role::Client));
    let server = write_identity(
        &ca,
        &inputs,
        IssueRequest {
            ips: vec!["127.0.0.1".parse().unwrap()],
            ..IssueRequest::new("localhost", Role::Server)
        },
    );

    let refused_dir = tmp.path().join("refused");
    let output = set_identity(&server, &refused_dir);
    let stderr = text(&output.stderr);
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
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("node-1"),
        "{}",
        text(&output.stdout)
    );
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
        std::fs::read(&client.crt).unwrap()
    );

    // Offering the server identity again leaves the installed one alone.
    let output = set_identity(&server, &cert_dir);
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.client.crt.pem")).unwrap(),
        std::fs::read(&client.crt).unwrap()
    );
    assert_eq!(files_in(&cert_dir).len(), 3);
}

#[test]
fn serve_help_lists_its_flags_and_the_original_environment() {
    let top = run(&["--help"]);
    assert!(top.status.success());
    let top = text(&top.stdout);
    for command in ["serve", "set-identity"] {
        assert!(top.contains(command), "--help lacks {command}: {top}");
    }
    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success());
    let serve = text(&serve.stdout);
    for word in [
        "--server",
        "--http",
        "--cert-dir",
        "--profile",
        "RP_CLIENT_TARGET_HOSTNAME",
    ] {
        assert!(serve.contains(word), "serve --help lacks {word}: {serve}");
    }
}

#[test]
fn serve_fails_fast_and_clearly_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    // A --server without a port.
    let output = run_bounded(
        &[
            "serve",
            "--server",
            "example.com",
            "--http",
            "127.0.0.1:0",
            "--cert-dir",
            arg(tmp.path()),
        ],
        Duration::from_secs(10),
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("HOST:PORT"), "{stderr}");

    // No identity installed in the cert dir.
    let output = run_bounded(
        &[
            "serve",
            "--server",
            "127.0.0.1:1",
            "--http",
            "127.0.0.1:0",
            "--cert-dir",
            arg(tmp.path()),
        ],
        Duration::from_secs(10),
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("client identity") && stderr.contains("restpipe.client"),
        "{stderr}"
    );
}
