//! `pipe-server` as an operator runs it: the real binary, real files in a
//! temporary directory, and the quick-start demo end to end.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};

/// Environment variables that would change what the binary does.
const ENV: &[&str] = &[
    "RP_SERVER_CERT_PATH",
    "RP_SERVER_KEY_FILENAME",
    "RP_SERVER_CRT_FILENAME",
    "RP_CA_CRT_FILENAME",
    "RP_SERVER_HTTP",
    "RP_PROFILE",
    "RUST_LOG",
    "DEBUG",
];

fn pipe_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipe-server"));
    for name in ENV {
        command.env_remove(name);
    }
    command
}

fn run(args: &[&str]) -> Output {
    pipe_server().args(args).output().expect("pipe-server runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// Key, certificate and CA files of one identity.
struct Files {
    key: PathBuf,
    crt: PathBuf,
    ca: PathBuf,
}

/// A CA with a server identity and a client identity on disk, plus the
/// same from a second, unrelated CA.
struct Fixture {
    tmp: tempfile::TempDir,
    server: Files,
    client: Files,
    foreign_server: Files,
}

fn write_identity(ca: &CertificateAuthority, dir: &Path, request: IssueRequest) -> Files {
    let name = request.name.clone();
    let issued = ca.issue(&request).unwrap();
    let (crt, key) = issued.write(dir, &name).unwrap();
    let (ca, _) = ca.write(dir).unwrap();
    Files { key, crt, ca }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("cli test CA").unwrap();
    let dir = tmp.path().join("inputs");
    let server_request = IssueRequest {
        dns: vec!["localhost".to_owned()],
        ips: vec!["127.0.0.1".parse().unwrap()],
        ..IssueRequest::new("srv", Role::Server)
    };
    let server = write_identity(&ca, &dir, server_request.clone());
    let client = write_identity(&ca, &dir, IssueRequest::new("node-1", Role::Client));
    let other = CertificateAuthority::generate("another CA").unwrap();
    let foreign_server = write_identity(&other, &tmp.path().join("foreign"), server_request);
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
        arg(key),
        arg(crt),
        arg(ca),
        "--cert-dir",
        arg(cert_dir),
    ])
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

#[test]
fn set_identity_installs_a_server_identity() {
    let f = fixture();
    let cert_dir = f.tmp.path().join("etc/restpipe");
    let output = set_identity(&f.server.key, &f.server.crt, &f.server.ca, &cert_dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("srv"),
        "{}",
        text(&output.stdout)
    );
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
        ("restpipe.server.crt.pem", &f.server.crt),
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
fn set_identity_refuses_bad_identities_and_installs_nothing() {
    let f = fixture();
    // (what, key, certificate, CA, what stderr must say)
    let cases: [(&str, &Path, &Path, &Path, &str); 3] = [
        (
            "client certificate",
            &f.client.key,
            &f.client.crt,
            &f.client.ca,
            "serverAuth",
        ),
        (
            "key of another certificate",
            &f.client.key,
            &f.server.crt,
            &f.server.ca,
            "does not match",
        ),
        (
            "certificate from another CA",
            &f.foreign_server.key,
            &f.foreign_server.crt,
            &f.server.ca,
            "does not verify against the CA",
        ),
    ];
    for (i, (what, key, crt, ca, expected)) in cases.into_iter().enumerate() {
        let cert_dir = f.tmp.path().join(format!("certs-{i}"));
        let output = set_identity(key, crt, ca, &cert_dir);
        let stderr = text(&output.stderr);
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
    let output = set_identity(&f.server.key, &f.server.crt, &f.server.ca, &cert_dir);
    assert!(output.status.success());
    let output = set_identity(&f.client.key, &f.client.crt, &f.client.ca, &cert_dir);
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read(cert_dir.join("restpipe.server.crt.pem")).unwrap(),
        std::fs::read(&f.server.crt).unwrap()
    );
    assert_eq!(files_in(&cert_dir).len(), 3);
}

/// Runs `pipe-server demo --once`, killing it if it outlives `limit`.
fn run_demo(limit: Duration) -> Output {
    let mut child = pipe_server()
        .args(["demo", "--once"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipe-server demo starts");
    // Drain both pipes in the background so a chatty child never blocks.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pipe-server demo --once still running after {limit:?}; stdout: {}",
                text(&out.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn demo_once_runs_the_examples_both_ways() {
    let output = run_demo(Duration::from_secs(30));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        text(&output.stderr)
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
    assert_eq!(results.len(), 4, "{stdout}");
    for result in results {
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
    let top = text(&top.stdout);
    for command in ["serve", "set-identity", "demo"] {
        assert!(top.contains(command), "--help lacks {command}: {top}");
    }
    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success());
    let serve = text(&serve.stdout);
    for flag in ["--listen", "--http", "--cert-dir", "--profile"] {
        assert!(serve.contains(flag), "serve --help lacks {flag}: {serve}");
    }
    let set = run(&["set-identity", "--help"]);
    assert!(set.status.success());
    let set = text(&set.stdout);
    for word in ["KEY", "CRT", "CA", "--cert-dir"] {
        assert!(
            set.contains(word),
            "set-identity --help lacks {word}: {set}"
        );
    }
}
