//! Checking and installing identities made by the CA kit: each refusal
//! names its cause and input, and a refused install writes nothing.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::fs;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::*;
use crate::link::Role;
use crate::link::certificate;
use crate::ops::pki::{CertificateAuthority, IssueRequest, IssuedIdentity};

fn node_name(der: &[u8]) -> Result<String, IdentityError> {
    let input = Input::new(InputKind::Certificate, None);
    certificate::node_name(der).map_err(|error| error.in_input(&input))
}

fn has_extended_key_usage(der: &[u8], role: Role) -> Result<bool, IdentityError> {
    let input = Input::new(InputKind::Certificate, None);
    certificate::has_extended_key_usage(der, role).map_err(|error| error.in_input(&input))
}

struct Fixture {
    ca: CertificateAuthority,
    server: IssuedIdentity,
    client: IssuedIdentity,
}

fn fixture() -> Fixture {
    let ca = CertificateAuthority::generate("restpipe test CA").unwrap();
    let mut server_request = IssueRequest::new("server-1", Role::Server);
    server_request.dns = vec!["localhost".to_owned()];
    server_request.ips = vec!["127.0.0.1".parse().unwrap()];
    let server = ca.issue(&server_request).unwrap();
    let client = ca
        .issue(&IssueRequest::new("client-1", Role::Client))
        .unwrap();
    Fixture { ca, server, client }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn check(
    identity: &IssuedIdentity,
    ca: &str,
    role: Role,
) -> Result<ValidatedIdentity, IdentityError> {
    validate(
        identity.key_pem.as_bytes(),
        identity.cert_pem.as_bytes(),
        ca.as_bytes(),
        role,
    )
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn issued_identities_pass_for_their_role() {
    let f = fixture();
    let server = check(&f.server, f.ca.cert_pem(), Role::Server).unwrap();
    assert_eq!(server.name, "server-1");
    assert_eq!(server.role, Role::Server);
    let client = check(&f.client, f.ca.cert_pem(), Role::Client).unwrap();
    assert_eq!(client.name, "client-1");
    // Two years from now, in RFC 3339.
    assert_eq!(client.not_after.len(), "2027-01-01T00:00:00Z".len());
    assert!(client.not_after.ends_with('Z'));
}

#[test]
fn wrong_role_is_refused() {
    let f = fixture();
    let err = check(&f.client, f.ca.cert_pem(), Role::Server).unwrap_err();
    assert!(matches!(
        err,
        IdentityError::WrongRole { role: Role::Server }
    ));
    assert!(err.to_string().contains("serverAuth"), "{err}");
    let err = check(&f.server, f.ca.cert_pem(), Role::Client).unwrap_err();
    assert!(matches!(
        err,
        IdentityError::WrongRole { role: Role::Client }
    ));
    assert!(err.to_string().contains("clientAuth"), "{err}");
}

#[test]
fn key_of_another_identity_is_refused() {
    let f = fixture();
    let err = validate(
        f.server.key_pem.as_bytes(),
        f.client.cert_pem.as_bytes(),
        f.ca.cert_pem().as_bytes(),
        Role::Client,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch), "{err}");
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let f = fixture();
    let other = CertificateAuthority::generate("other CA").unwrap();
    let stranger = other
        .issue(&IssueRequest::new("client-1", Role::Client))
        .unwrap();
    let err = check(&stranger, f.ca.cert_pem(), Role::Client).unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Chain {
                source: webpki::Error::UnknownIssuer,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not signed by this CA"), "{err}");
}

#[test]
fn certificate_without_extended_key_usage_is_refused() {
    // webpki alone would accept this certificate for either role.
    let f = fixture();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["bare".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        f.ca.cert_pem(),
        rcgen::KeyPair::from_pem(&extract_ca_key(&f.ca)).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    assert!(!has_extended_key_usage(cert.der(), Role::Client).unwrap());
    let err = validate(
        key.serialize_pem().as_bytes(),
        cert.pem().as_bytes(),
        f.ca.cert_pem().as_bytes(),
        Role::Client,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::WrongRole { .. }), "{err}");
}

/// The CA key, through the files `write` produces (the only way out).
fn extract_ca_key(ca: &CertificateAuthority) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = ca.write(dir.path()).unwrap();
    fs::read_to_string(key).unwrap()
}

#[test]
fn garbage_and_empty_inputs_name_the_input() {
    let f = fixture();
    let key = f.client.key_pem.as_bytes();
    let cert = f.client.cert_pem.as_bytes();
    let ca = f.ca.cert_pem().as_bytes();

    let err = validate(b"", cert, ca, Role::Client).unwrap_err();
    assert_eq!(err.to_string(), "the private key is empty");
    let err = validate(key, b" \n", ca, Role::Client).unwrap_err();
    assert_eq!(err.to_string(), "the certificate is empty");
    let err = validate(key, cert, b"garbage", Role::Client).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the CA certificate holds no CERTIFICATE"),
        "{err}"
    );
    // Key and certificate swapped.
    let err = validate(cert, key, ca, Role::Client).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the private key holds no PRIVATE KEY"),
        "{err}"
    );
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n";
    let err = validate(key, broken.as_bytes(), ca, Role::Client).unwrap_err();
    assert!(err.to_string().starts_with("the certificate"), "{err}");
    let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = validate(key, bogus.as_bytes(), ca, Role::Client).unwrap_err();
    assert!(
        matches!(err, IdentityError::Certificate { ref input, .. } if input.kind == InputKind::Certificate),
        "{err}"
    );
}

#[test]
fn node_name_prefers_first_dns_name_then_cn() {
    let f = fixture();
    let mut request = IssueRequest::new("first", Role::Client);
    request.dns = vec!["second".to_owned()];
    let cert = f.ca.issue(&request).unwrap().cert_pem;
    assert_eq!(node_name(&der(&cert)).unwrap(), "first");

    // No DNS name at all: the CN is used.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "from-cn");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(node_name(cert.der()).unwrap(), "from-cn");

    // A bad first DNS name is not skipped in favour of a later one.
    let params =
        rcgen::CertificateParams::new(vec!["bad*name".to_owned(), "ok".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = node_name(cert.der()).unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidNodeName { ref name } if name == "bad*name"),
        "{err}"
    );

    for bad_cn in ["a b", "..", "a/b"] {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, bad_cn);
        let cert = params.self_signed(&key).unwrap();
        assert!(node_name(cert.der()).is_err(), "{bad_cn:?}");
    }

    // No name at all.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let cert = params.self_signed(&key).unwrap();
    assert!(matches!(
        node_name(cert.der()),
        Err(IdentityError::InvalidNodeName { .. })
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let f = fixture();
    let good = der(&f.client.cert_pem);
    assert!(node_name(&[]).is_err());
    assert!(has_extended_key_usage(&[0x30, 0x82, 0xff, 0xff], Role::Client).is_err());
    // Every truncation and a byte flipped at every position.
    for end in 0..good.len() {
        let _ = node_name(&good[..end]);
        let _ = has_extended_key_usage(&good[..end], Role::Client);
    }
    for at in 0..good.len() {
        let mut bent = good.clone();
        bent[at] ^= 0xa5;
        let _ = node_name(&bent);
        let _ = has_extended_key_usage(&bent, Role::Server);
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(node_name(&trailing).is_err());
}

#[test]
fn cert_files_use_the_original_names() {
    let dir = Path::new("certs");
    let server = CertFiles::in_dir(dir, Role::Server);
    assert_eq!(server.key, dir.join("restpipe.server.key.pem"));
    assert_eq!(server.cert, dir.join("restpipe.server.crt.pem"));
    assert_eq!(server.ca, dir.join("ca.crt.pem"));
    let client = CertFiles::in_dir(dir, Role::Client);
    assert_eq!(client.key, dir.join("restpipe.client.key.pem"));
    assert_eq!(client.cert, dir.join("restpipe.client.crt.pem"));
    assert_eq!(client.ca, dir.join("ca.crt.pem"));
}

fn write_inputs(dir: &Path, identity: &IssuedIdentity, ca: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = identity.write(dir, "input").unwrap();
    let ca_path = dir.join("input-ca.pem");
    fs::write(&ca_path, ca).unwrap();
    (key, cert, ca_path)
}

#[test]
fn install_writes_nothing_when_invalid() {
    let f = fixture();
    let inputs = tempfile::tempdir().unwrap();
    let (key, cert, ca) = write_inputs(inputs.path(), &f.client, f.ca.cert_pem());

    let target = tempfile::tempdir().unwrap();
    let cert_dir = target.path().join("certs");
    let dest = CertFiles::in_dir(&cert_dir, Role::Server);
    // A client identity offered to a server.
    let err = install(&key, &cert, &ca, Role::Server, &dest).unwrap_err();
    assert!(matches!(err, IdentityError::WrongRole { .. }), "{err}");
    assert!(!cert_dir.exists());

    // An existing cert dir stays untouched too.
    fs::create_dir(&cert_dir).unwrap();
    let err = install(&ca, &cert, &ca, Role::Client, &dest).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("the private key "), "{message}");
    assert!(message.contains("input-ca.pem"), "{message}");
    assert_eq!(fs::read_dir(&cert_dir).unwrap().count(), 0);

    let missing = inputs.path().join("missing.pem");
    let err = install(&missing, &cert, &ca, Role::Client, &dest).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    assert_eq!(fs::read_dir(&cert_dir).unwrap().count(), 0);
}

#[test]
fn install_copies_the_identity_with_a_private_key() {
    let f = fixture();
    let inputs = tempfile::tempdir().unwrap();
    let (key, cert, ca) = write_inputs(inputs.path(), &f.client, f.ca.cert_pem());

    let target = tempfile::tempdir().unwrap();
    let dest = CertFiles::in_dir(&target.path().join("a/b"), Role::Client);
    let identity = install(&key, &cert, &ca, Role::Client, &dest).unwrap();
    assert_eq!(identity.name, "client-1");
    assert_eq!(fs::read_to_string(&dest.key).unwrap(), f.client.key_pem);
    assert_eq!(fs::read_to_string(&dest.cert).unwrap(), f.client.cert_pem);
    assert_eq!(fs::read_to_string(&dest.ca).unwrap(), f.ca.cert_pem());
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&dest.key), 0o600);
        assert_eq!(mode_of(&dest.cert), 0o644);
        assert_eq!(mode_of(&key), 0o600);
    }
    // Only the three files, no temporaries.
    assert_eq!(fs::read_dir(target.path().join("a/b")).unwrap().count(), 3);

    // Installing again (here: from the cert dir itself) replaces in place.
    let again = install(&dest.key, &dest.cert, &dest.ca, Role::Client, &dest).unwrap();
    assert_eq!(again, identity);
    assert_eq!(fs::read_to_string(&dest.key).unwrap(), f.client.key_pem);
}
