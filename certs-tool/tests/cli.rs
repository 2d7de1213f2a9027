//! `certs-tool` as an operator runs it: the real binary, in a temporary
//! directory, and the certificates it writes put through a real TLS 1.3
//! handshake.
// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use restpipe_tests::files::{files_in, mode, path_arg as arg, read};
use restpipe_tests::process::{run, stderr, stdout};
use restpipe_tests::{CertificateAuthority, Role, TlsIdentity, named_files};
use restpipe_tests::{CertificateId, RevocationList, identity, peer_identity};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

fn certs_tool(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_certs-tool"), args)
}

/// Runs certs-tool and insists it succeeded.
fn ok(args: &[&str]) -> Output {
    let output = certs_tool(args);
    assert!(
        output.status.success(),
        "certs-tool {args:?} failed: {}",
        stderr(&output)
    );
    output
}

/// Runs certs-tool and insists it failed; returns its stderr.
fn fails(args: &[&str]) -> String {
    let output = certs_tool(args);
    assert!(
        !output.status.success(),
        "certs-tool {args:?} should have failed; stdout: {}",
        stdout(&output)
    );
    stderr(&output)
}

/// A CA made by `certs-tool init-ca` in a fresh directory.
fn ca_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    ok(&["init-ca", "--out", arg(&dir)]);
    (tmp, dir)
}

/// Identity `name` as `certs-tool issue` wrote it into `dir`, with the CA
/// of `ca_dir`, checked for `role`.
fn validate(
    dir: &Path,
    name: &str,
    ca_dir: &Path,
    role: Role,
) -> Result<identity::ValidatedIdentity, identity::IdentityError> {
    let files = named_files(dir, name);
    identity::validate(
        &read(&files.key),
        &read(&files.cert),
        &read(&named_files(ca_dir, name).ca),
        role,
    )
}

fn load(dir: &Path, name: &str) -> TlsIdentity {
    TlsIdentity::load(&named_files(dir, name)).unwrap()
}

/// A full TLS 1.3 handshake in memory between the two identities, the
/// client verifying the server as `server_name`. Returns the client's
/// identity as the server's pipe code reads it.
fn handshake(
    server: &TlsIdentity,
    client: &TlsIdentity,
    server_name: &str,
) -> Result<String, String> {
    let mut s = rustls::ServerConnection::new(server.server_config().unwrap()).unwrap();
    let mut c = rustls::ClientConnection::new(
        client.client_config().unwrap(),
        ServerName::try_from(server_name.to_owned()).unwrap(),
    )
    .unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut wire = Vec::new();
        s.write_tls(&mut wire).unwrap();
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return peer_identity(s.peer_certificates(), Role::Client).map_err(|e| e.to_string());
        }
    }
    Err("handshake did not finish".to_owned())
}

#[test]
fn init_ca_writes_the_ca_with_a_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/ca");
    let output = ok(&["init-ca", "--out", arg(&dir)]);
    assert_eq!(files_in(&dir), ["ca.crt.pem", "ca.key.pem"]);
    assert_eq!(mode(&dir.join("ca.key.pem")), 0o600);
    assert!(
        stdout(&output).contains("ca.crt.pem"),
        "{}",
        stdout(&output)
    );
    // It is a CA whose key belongs to its certificate.
    CertificateAuthority::load(&dir.join("ca.crt.pem"), &dir.join("ca.key.pem"))
        .expect("the written CA loads");
}

#[test]
fn issued_server_and_client_identities_work_over_tls() {
    let (_tmp, dir) = ca_dir();
    ok(&[
        "issue",
        "--out",
        arg(&dir),
        "--name",
        "srv",
        "--server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    ok(&["issue", "--out", arg(&dir), "--name", "node-1", "--client"]);
    assert_eq!(
        files_in(&dir),
        [
            "ca.crt.pem",
            "ca.key.pem",
            "issued",
            "node-1.crt.pem",
            "node-1.key.pem",
            "srv.crt.pem",
            "srv.key.pem"
        ]
    );
    // Each certificate is recorded under its name, for `revoke`.
    for name in ["srv", "node-1"] {
        assert_eq!(files_in(&dir.join("issued").join(name)).len(), 1, "{name}");
    }
    for key in ["srv.key.pem", "node-1.key.pem"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }

    // Each fits its role, and only its role.
    let check = |name: &str, role: Role| validate(&dir, name, &dir, role);
    assert_eq!(check("srv", Role::Server).unwrap().name, "srv");
    assert_eq!(check("node-1", Role::Client).unwrap().name, "node-1");
    assert!(check("srv", Role::Client).is_err());
    assert!(check("node-1", Role::Server).is_err());

    // The server certificate is good for the names asked for, and no other.
    let server = load(&dir, "srv");
    let client = load(&dir, "node-1");
    for name in ["localhost", "127.0.0.1", "srv"] {
        assert_eq!(
            handshake(&server, &client, name).as_deref(),
            Ok("node-1"),
            "{name}"
        );
    }
    let wrong = handshake(&server, &client, "example.com").unwrap_err();
    assert!(
        wrong.starts_with("client:") && wrong.contains("example.com"),
        "{wrong}"
    );
}

#[test]
fn issue_with_ca_dir_writes_elsewhere() {
    let (tmp, ca) = ca_dir();
    let out = tmp.path().join("nodes");
    // `certs-tool issue` of client `name` into `out` with the CA in `ca`.
    let issue = |name: &str, more: &[&str]| {
        let mut args = vec!["issue", "--out", arg(&out), "--ca-dir", arg(&ca)];
        args.extend(["--name", name, "--client"]);
        args.extend(more);
        ok(&args);
    };
    issue("n2", &["--days", "3"]);
    assert_eq!(files_in(&out), ["n2.crt.pem", "n2.key.pem"]);
    let installed = validate(&out, "n2", &ca, Role::Client).unwrap();
    // --days is honoured: it expires before one issued with the default.
    issue("n3", &[]);
    let default = validate(&out, "n3", &ca, Role::Client).unwrap();
    assert!(
        installed.not_after < default.not_after,
        "{installed:?} vs {default:?}"
    );
}

#[test]
fn second_init_ca_without_force_is_refused_and_keeps_the_ca() {
    let (_tmp, dir) = ca_dir();
    let key = read(&dir.join("ca.key.pem"));
    let cert = read(&dir.join("ca.crt.pem"));

    let message = fails(&["init-ca", "--out", arg(&dir)]);
    assert!(
        message.contains("already exists") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(read(&dir.join("ca.key.pem")), key);
    assert_eq!(read(&dir.join("ca.crt.pem")), cert);

    ok(&["init-ca", "--out", arg(&dir), "--force"]);
    assert_ne!(read(&dir.join("ca.key.pem")), key);
    assert_eq!(mode(&dir.join("ca.key.pem")), 0o600);
}

#[test]
fn bad_names_and_roles_are_refused_and_write_nothing() {
    let (_tmp, dir) = ca_dir();
    for name in ["bad/name", "..", "", "white space", "ümlaut"] {
        let message = fails(&["issue", "--out", arg(&dir), "--name", name, "--client"]);
        assert!(message.contains("invalid name"), "{name:?}: {message}");
    }
    // Nothing escaped into a subdirectory or the parent.
    assert_eq!(files_in(&dir), ["ca.crt.pem", "ca.key.pem"]);
    assert!(!dir.join("bad").exists());

    // (flags after `issue --out DIR --name x`, what the message must say)
    let cases: [(&[&str], &[&str]); 3] = [
        // Exactly one of --server and --client.
        (&[], &["--server", "--client"]),
        (&["--server", "--client"], &[]),
        // A bad IP address.
        (&["--server", "--ip", "1.2.3"], &["1.2.3"]),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["issue", "--out", arg(&dir), "--name", "x"];
        args.extend(flags);
        let message = fails(&args);
        for needle in expected {
            assert!(message.contains(needle), "{message}");
        }
    }
    assert_eq!(files_in(&dir), ["ca.crt.pem", "ca.key.pem"]);
}

#[test]
fn issue_without_a_ca_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let message = fails(&["issue", "--out", arg(tmp.path()), "--name", "n", "--client"]);
    assert!(message.contains("init-ca"), "{message}");
    assert!(files_in(tmp.path()).is_empty());
}

#[test]
fn help_of_each_subcommand_names_its_flags() {
    let top = stdout(&ok(&["--help"]));
    for word in ["init-ca", "issue", "revoke"] {
        assert!(top.contains(word), "--help lacks {word}: {top}");
    }
    let init = stdout(&ok(&["init-ca", "--help"]));
    for flag in ["--out", "--name", "--force"] {
        assert!(init.contains(flag), "init-ca --help lacks {flag}: {init}");
    }
    let issue = stdout(&ok(&["issue", "--help"]));
    for flag in [
        "--out", "--name", "--server", "--client", "--dns", "--ip", "--ca-dir", "--days",
    ] {
        assert!(issue.contains(flag), "issue --help lacks {flag}: {issue}");
    }
    let revoke = stdout(&ok(&["revoke", "--help"]));
    for flag in ["--out", "--name", "--cert", "--days", "ca.crl.pem"] {
        assert!(
            revoke.contains(flag),
            "revoke --help lacks {flag}: {revoke}"
        );
    }
}

/// The id (issuer and serial) of the certificate in `path`.
fn certificate_id(path: &Path) -> CertificateId {
    let der = CertificateDer::from_pem_file(path).unwrap();
    CertificateId::from_der(&der).unwrap()
}

#[test]
fn revoke_lists_every_certificate_of_a_name_once_and_nodes_refuse_them() {
    let (_tmp, dir) = ca_dir();
    let issue_client = |name: &str| ok(&["issue", "--out", arg(&dir), "--name", name, "--client"]);
    ok(&[
        "issue",
        "--out",
        arg(&dir),
        "--name",
        "srv",
        "--server",
        "--dns",
        "localhost",
    ]);
    // node-1 twice: the first certificate is replaced on disk, but stays
    // recorded, and is revoked too.
    issue_client("node-1");
    let first = certificate_id(&dir.join("node-1.crt.pem"));
    issue_client("node-1");
    let second = certificate_id(&dir.join("node-1.crt.pem"));
    assert_ne!(first, second);
    issue_client("node-2");

    let output = ok(&["revoke", "--out", arg(&dir), "--name", "node-1"]);
    let said = stdout(&output);
    assert_eq!(said.matches("revoked node-1 (serial").count(), 2, "{said}");
    assert!(said.contains("CRL number 1, 2 revoked"), "{said}");
    let crl = dir.join("ca.crl.pem");
    assert_eq!(mode(&crl), 0o644);
    let list = RevocationList::load(&crl).unwrap();
    assert!(list.revokes(&first) && list.revokes(&second));
    assert!(!list.revokes(&certificate_id(&dir.join("node-2.crt.pem"))));

    // A server enforcing the list refuses node-1 and takes node-2.
    let server = load(&dir, "srv").with_revocations(list).unwrap();
    let refused = handshake(&server, &load(&dir, "node-1"), "localhost").unwrap_err();
    assert!(
        refused.starts_with("server:") && refused.contains("Revoked"),
        "{refused}"
    );
    assert_eq!(
        handshake(&server, &load(&dir, "node-2"), "localhost").as_deref(),
        Ok("node-2")
    );

    // Again: nothing changes.
    let before = read(&crl);
    let said = stdout(&ok(&["revoke", "--out", arg(&dir), "--name", "node-1"]));
    assert_eq!(said.matches("already revoked node-1").count(), 2, "{said}");
    assert!(said.contains("unchanged (CRL number 1"), "{said}");
    assert_eq!(read(&crl), before);

    // Another name: the next CRL number, node-1 still on the list.
    let said = stdout(&ok(&["revoke", "--out", arg(&dir), "--name", "node-2"]));
    assert!(said.contains("CRL number 2, 3 revoked"), "{said}");
    assert!(RevocationList::load(&crl).unwrap().revokes(&first));
}

#[test]
fn revoke_refuses_unknown_names_and_strangers_and_takes_older_certificates_by_file() {
    let (tmp, dir) = ca_dir();
    let message = fails(&["revoke", "--out", arg(&dir), "--name", "ghost"]);
    assert!(
        message.contains("no certificate issued to \"ghost\"") && message.contains("--cert"),
        "{message}"
    );
    assert!(!dir.join("ca.crl.pem").exists());

    // Issued into another directory by a certs-tool that kept no records.
    let nodes = tmp.path().join("nodes");
    ok(&[
        "issue",
        "--out",
        arg(&nodes),
        "--ca-dir",
        arg(&dir),
        "--name",
        "old-node",
        "--client",
    ]);
    std::fs::remove_dir_all(dir.join("issued")).unwrap();
    let message = fails(&["revoke", "--out", arg(&dir), "--name", "old-node"]);
    assert!(message.contains("--cert"), "{message}");
    let old = nodes.join("old-node.crt.pem");
    let said = stdout(&ok(&["revoke", "--out", arg(&dir), "--cert", arg(&old)]));
    assert!(said.contains("revoked old-node"), "{said}");
    let list = RevocationList::load(&dir.join("ca.crl.pem")).unwrap();
    assert!(list.revokes(&certificate_id(&old)));

    // A certificate of another CA is not this CA's to revoke.
    let (_other_tmp, other) = ca_dir();
    ok(&[
        "issue",
        "--out",
        arg(&other),
        "--name",
        "stranger",
        "--client",
    ]);
    let stranger = other.join("stranger.crt.pem");
    let message = fails(&["revoke", "--out", arg(&dir), "--cert", arg(&stranger)]);
    assert!(message.contains("not issued by this CA"), "{message}");

    // One of --name and --cert, not none, not both.
    let message = fails(&["revoke", "--out", arg(&dir)]);
    assert!(
        message.contains("--name") && message.contains("--cert"),
        "{message}"
    );
    let both = [
        "revoke",
        "--out",
        arg(&dir),
        "--name",
        "x",
        "--cert",
        arg(&old),
    ];
    assert!(fails(&both).contains("cannot be used with"));
}
