//! Certificate revocation as an operator meets it: the CA's revocation list
//! names the serials revoked; a node given the list (`--crl`) refuses those
//! certificates at the handshake, and a reload that brings a list naming a
//! connected peer closes that connection with `GoAway` (revoked) while
//! every other peer carries on; a list that cannot be used is refused at
//! start and at reload, where the list in force stays. (SIGHUP on a real
//! `pipe-server` process is in `pipe-server/tests/revocation.rs`; the
//! `certs-tool revoke` command line in `certs-tool/tests/cli.rs`.)

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use restpipe_tests::pki::server_request;
use restpipe_tests::{
    CertFiles, CertificateAuthority, IssueRequest, IssuedIdentity, Pki, Registry, Role, Side,
    TestNode, TlsIdentity, connect_client, eventually, fast_settings, get, start_client,
    start_server_with, wait_for_client,
};
use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;

/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// A client node with `identity` and the example handlers dialling `server`
/// (not waiting for it to connect).
async fn client(identity: TlsIdentity, server: &TestNode) -> TestNode {
    start_client(
        identity,
        server.pipe_addr(),
        Registry::with_examples(Side::Client),
        fast_settings(),
    )
    .await
}

/// The client node's last connection error, once it has one.
async fn refusal(client: &TestNode) -> String {
    let link = client
        .link_until(WAIT, "a failed connection attempt", |link| {
            link["last_error"].is_string()
        })
        .await;
    assert_eq!(link["connected"], false, "{link}");
    link["last_error"].as_str().unwrap().to_owned()
}

/// `issued`, for a node of `role`, installed in `dir` as `set-identity`
/// leaves it, with `crl` (PEM) as its revocation list beside it.
fn install_with_crl(
    pki: &Pki,
    dir: &Path,
    role: Role,
    issued: &IssuedIdentity,
    crl: &str,
) -> CertFiles {
    let mut files = pki.install(dir, role, issued).unwrap();
    let crl_path = dir.join("ca.crl.pem");
    std::fs::write(&crl_path, crl).unwrap();
    files.crl = Some(crl_path);
    files
}

#[test]
fn the_ca_revocation_list_names_each_revoked_serial_and_is_signed_by_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("restpipe CA").unwrap();
    ca.write(dir.path()).unwrap();
    let stolen = ca
        .issue(&IssueRequest::new("stolen", Role::Client))
        .unwrap();
    let kept = ca.issue(&IssueRequest::new("kept", Role::Client)).unwrap();
    for (name, issued) in [("stolen", &stolen), ("kept", &kept)] {
        restpipe_tests::record_issued(dir.path(), name, issued).unwrap();
    }

    // What `certs-tool revoke --out DIR --name stolen` does.
    let certificates = ca.issued_to(dir.path(), "stolen").unwrap();
    let done = ca.revoke(dir.path(), &certificates, 30).unwrap();
    assert_eq!((done.number, done.revoked), (1, 1));

    let pem = std::fs::read(dir.path().join("ca.crl.pem")).unwrap();
    let der = CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
    let (rest, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert!(rest.is_empty());
    let serials: Vec<&[u8]> = crl
        .iter_revoked_certificates()
        .map(|revoked| revoked.raw_serial())
        .collect();
    assert_eq!(serials, [stolen.serial().unwrap().as_slice()]);
    assert_eq!(crl.crl_number().unwrap().to_bytes_be(), [1]);
    let next_update = crl.next_update().unwrap().timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(next_update > i64::try_from(now).unwrap() + 29 * 24 * 3600);
    // Signed by the CA: its issuer is the CA and the CA's key verifies it.
    let ca_der =
        rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(crl.issuer(), ca_cert.subject());
    crl.verify_signature(ca_cert.public_key()).unwrap();

    // Revoking another name numbers the list on.
    let kept_certificates = ca.issued_to(dir.path(), "kept").unwrap();
    let done = ca.revoke(dir.path(), &kept_certificates, 30).unwrap();
    assert_eq!((done.number, done.revoked), (2, 2));
}

#[tokio::test]
async fn a_server_with_a_crl_refuses_a_revoked_client_and_takes_another() {
    let pki = Pki::new();
    let stolen = pki.issue(IssueRequest::new("stolen-client", Role::Client));
    let crl = pki.revocation_list(&[&stolen], 1);
    let identity = pki.identity_with_crl(&pki.issue(server_request()), &crl);
    let server = start_server_with(
        identity,
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;

    let examples = Registry::with_examples(Side::Client);
    let good = connect_client(&pki, &server, "good-client", examples).await;
    let revoked = client(pki.identity(&stolen), &server).await;
    // TLS 1.3: the server judges the client's certificate after the client
    // finished its side, so the client reads the refusal as an alert.
    let error = refusal(&revoked).await;
    assert!(error.contains("CertificateRevoked"), "{error}");
    assert!(!server.has_peer("stolen-client"));
    let answer = get(&server.url("/client/stolen-client/time")).await;
    assert_eq!(answer.status, 404, "{answer:?}");

    good.time_ok_within(WAIT).await;
    assert_eq!(
        get(&server.url("/client/good-client/time")).await.status,
        200
    );
}

#[tokio::test]
async fn a_client_with_a_crl_refuses_a_revoked_server() {
    let pki = Pki::new();
    let server_certificate = pki.issue(server_request());
    let server = start_server_with(
        pki.identity(&server_certificate),
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;
    let crl = pki.revocation_list(&[&server_certificate], 1);
    let careful = pki.issue(IssueRequest::new("careful-client", Role::Client));
    let careful = client(pki.identity_with_crl(&careful, &crl), &server).await;

    let error = refusal(&careful).await;
    assert!(
        error.contains("TLS handshake") && error.contains("Revoked"),
        "{error}"
    );
    assert!(!server.has_peer("careful-client"));
    let answer = get(&careful.url("/server/time")).await;
    assert_eq!(answer.status, 503, "{answer:?}");
}

#[tokio::test]
async fn a_client_watching_its_crl_closes_the_connection_when_its_server_is_revoked() {
    let pki = Pki::new();
    let server_certificate = pki.issue(server_request());
    let server = start_server_with(
        pki.identity(&server_certificate),
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;
    let issued = pki.issue(IssueRequest::new("careful-client", Role::Client));
    let dir = tempfile::tempdir().unwrap();
    let files = install_with_crl(
        &pki,
        dir.path(),
        Role::Client,
        &issued,
        &pki.revocation_list(&[], 1),
    );
    let careful = client(TlsIdentity::load(&files).unwrap(), &server).await;
    wait_for_client(&server, "careful-client").await;
    careful.time_ok_within(WAIT).await;

    // The server's key is stolen: its certificate goes on the list, which
    // the client notices by itself (`--watch-certs`).
    careful.running.reload_on_signal(files.clone(), true);
    let crl = pki.revocation_list(&[&server_certificate], 2);
    std::fs::write(files.crl.as_ref().unwrap(), crl).unwrap();

    // The established connection is closed, at once and for that reason.
    eventually(WAIT, "the client closes its connection", || {
        !careful.is_connected() && !server.has_peer("careful-client")
    })
    .await;
    let error = refusal(&careful).await;
    assert!(error.to_lowercase().contains("revoked"), "{error}");
    // And it does not come back.
    let answer = get(&careful.url("/server/time")).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!server.has_peer("careful-client"));
}

#[tokio::test]
async fn a_crl_that_cannot_be_used_is_refused_at_start_and_at_reload_the_old_one_stays() {
    let pki = Pki::new();
    let stolen = pki.issue(IssueRequest::new("stolen-client", Role::Client));
    let dir = tempfile::tempdir().unwrap();
    let files = install_with_crl(
        &pki,
        dir.path(),
        Role::Server,
        &pki.issue(server_request()),
        &pki.revocation_list(&[&stolen], 1),
    );
    let crl_path = files.crl.clone().unwrap();

    // At start: a missing list, a broken one, and one of another CA (which
    // would refuse every client) each stop the node with the reason.
    let foreign = Pki::new().revocation_list(&[], 1);
    let broken = "-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n";
    let cases = [
        (None, "cannot read the revocation list"),
        (Some(broken), "ca.crl.pem"),
        (Some("not a list"), "holds no usable X509 CRL PEM block"),
        (
            Some(foreign.as_str()),
            "not signed by a CA this node trusts",
        ),
    ];
    let good_crl = std::fs::read_to_string(&crl_path).unwrap();
    for (contents, expected) in cases {
        match contents {
            Some(contents) => std::fs::write(&crl_path, contents).unwrap(),
            None => std::fs::remove_file(&crl_path).unwrap(),
        }
        let error = TlsIdentity::load(&files).unwrap_err().to_string();
        assert!(error.contains(expected), "{expected:?}: {error}");
    }
    std::fs::write(&crl_path, &good_crl).unwrap();

    let server = start_server_with(
        TlsIdentity::load(&files).unwrap(),
        Registry::with_examples(Side::Server),
        fast_settings(),
    )
    .await;
    let good = connect_client(&pki, &server, "good-client", Registry::new()).await;
    let connection = server.connection_id("good-client");

    // At reload: the same lists are refused, and the list in force stays.
    for contents in [broken, foreign.as_str()] {
        std::fs::write(&crl_path, contents).unwrap();
        let error = server.running.reloader().reload_files(&files).unwrap_err();
        assert!(format!("{error:#}").contains("ca.crl.pem"), "{error:#}");
    }
    let revoked = client(pki.identity(&stolen), &server).await;
    let error = refusal(&revoked).await;
    assert!(error.contains("CertificateRevoked"), "{error}");
    assert_eq!(server.connection_id("good-client"), connection);
    good.time_ok_within(WAIT).await;
}
