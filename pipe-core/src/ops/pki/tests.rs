//! The CA kit end to end: the certificates it makes, the files it writes
//! and loads again, and what it refuses.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::fs;
use std::path::Path;

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::*;
use crate::link::{MAX_NODE_NAME_LEN, is_valid_node_name};

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn parse(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn ca_is_a_constrained_ca() {
    let ca = CertificateAuthority::generate("restpipe test CA").unwrap();
    let der = parse(ca.cert_pem());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "restpipe test CA");
}

#[test]
fn issued_certificate_has_name_first_then_dns_then_ips() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let mut request = IssueRequest::new("node-1", Role::Server);
    request.dns = vec!["pipe.example.com".to_owned()];
    request.ips = vec!["127.0.0.1".parse().unwrap()];
    let issued = ca.issue(&request).unwrap();
    let der = parse(&issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "DNSName(node-1)",
            "DNSName(pipe.example.com)",
            "IPAddress(7f:00:00:01)"
        ]
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
}

#[test]
fn serials_differ() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let request = IssueRequest::new("a", Role::Client);
    let first = parse(&ca.issue(&request).unwrap().cert_pem);
    let second = parse(&ca.issue(&request).unwrap().cert_pem);
    let (_, first) = x509_parser::parse_x509_certificate(&first).unwrap();
    let (_, second) = x509_parser::parse_x509_certificate(&second).unwrap();
    assert_ne!(first.raw_serial(), second.raw_serial());
}

#[test]
fn bad_names_are_rejected() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    for name in ["", ".", "..", "a/b", "a b", "ü", "a*"] {
        let err = ca
            .issue(&IssueRequest::new(name, Role::Client))
            .unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    let issued = ca.issue(&IssueRequest::new("ok", Role::Client)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(issued.write(dir.path(), "../escape").is_err());
    let mut request = IssueRequest::new("ok", Role::Client);
    request.valid_days = Some(0);
    assert!(matches!(
        ca.issue(&request),
        Err(PkiError::InvalidValidity { days: 0 })
    ));
}

#[test]
fn write_then_load_round_trips_with_private_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("new/ca");
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let (cert_path, key_path) = ca.write(&ca_dir).unwrap();
    assert_eq!(cert_path, ca_dir.join(CA_CERT_FILE));
    assert_eq!(key_path, ca_dir.join(CA_KEY_FILE));
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&key_path), 0o600);
        assert_eq!(mode_of(&cert_path), 0o644);
    }

    let loaded = CertificateAuthority::load(&cert_path, &key_path).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    let issued = loaded
        .issue(&IssueRequest::new("client-1", Role::Client))
        .unwrap();
    let (crt, key) = issued.write(dir.path(), "client-1").unwrap();
    assert_eq!(crt, dir.path().join("client-1.crt.pem"));
    assert_eq!(key, dir.path().join("client-1.key.pem"));
    #[cfg(unix)]
    assert_eq!(mode_of(&key), 0o600);

    // Overwriting an existing, world-readable file still leaves 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        issued.write(dir.path(), "client-1").unwrap();
        assert_eq!(mode_of(&key), 0o600);
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn load_rejects_mismatched_key_and_non_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = CertificateAuthority::generate("A")
        .unwrap()
        .write(&dir.path().join("a"))
        .unwrap();
    let (_, key_b) = CertificateAuthority::generate("B")
        .unwrap()
        .write(&dir.path().join("b"))
        .unwrap();
    let err = CertificateAuthority::load(&cert_a, &key_b).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

    let ca = CertificateAuthority::load(&cert_a, &dir.path().join("a").join(CA_KEY_FILE)).unwrap();
    let (leaf_crt, leaf_key) = ca
        .issue(&IssueRequest::new("leaf", Role::Server))
        .unwrap()
        .write(dir.path(), "leaf")
        .unwrap();
    let err = CertificateAuthority::load(&leaf_crt, &leaf_key).unwrap_err();
    assert!(matches!(err, PkiError::NotCa { .. }), "{err}");

    let missing = dir.path().join("missing.pem");
    let err = CertificateAuthority::load(&missing, &leaf_key).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn debug_masks_keys() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca.issue(&IssueRequest::new("n", Role::Client)).unwrap();
    let shown = format!("{issued:?} {ca:?}");
    assert!(shown.contains("MASKED"));
    assert!(!shown.contains("PRIVATE KEY"));
}

#[test]
fn node_names() {
    assert!(is_valid_node_name("client_1.example-a"));
    for bad in ["", ".", "..", "a/b", "a b", "é", "a\0"] {
        assert!(!is_valid_node_name(bad), "{bad:?}");
    }
    assert!(is_valid_node_name(&"a".repeat(MAX_NODE_NAME_LEN)));
    assert!(!is_valid_node_name(&"a".repeat(MAX_NODE_NAME_LEN + 1)));
}

/// The serials a PEM revocation list names, its CRL number and its next
/// update (Unix time).
fn read_crl(pem: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>, i64) {
    let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let serials = crl
        .iter_revoked_certificates()
        .map(|revoked| revoked.raw_serial().to_vec())
        .collect();
    let number = crl.crl_number().unwrap().to_bytes_be();
    (serials, number, crl.next_update().unwrap().timestamp())
}

#[test]
fn revoking_a_name_lists_each_of_its_serials_once_under_a_growing_number() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("test CA").unwrap();
    ca.write(dir.path()).unwrap();
    let first = ca
        .issue(&IssueRequest::new("stolen", Role::Client))
        .unwrap();
    let second = ca
        .issue(&IssueRequest::new("stolen", Role::Client))
        .unwrap();
    let other = ca.issue(&IssueRequest::new("other", Role::Client)).unwrap();
    for issued in [&first, &second] {
        record_issued(dir.path(), "stolen", issued).unwrap();
    }
    record_issued(dir.path(), "other", &other).unwrap();

    let stolen = ca.issued_to(dir.path(), "stolen").unwrap();
    assert_eq!(stolen.len(), 2);
    let done = ca.revoke(dir.path(), &stolen, 30).unwrap();
    assert_eq!((done.added.len(), done.number, done.revoked), (2, 1, 2));
    let crl_path = dir.path().join(CA_CRL_FILE);
    let pem = fs::read(&crl_path).unwrap();
    let (mut serials, number, next_update) = read_crl(&pem);
    serials.sort();
    let mut expected = vec![first.serial().unwrap(), second.serial().unwrap()];
    expected.sort();
    assert_eq!(serials, expected);
    assert_eq!(number, [1]);
    let in_29_days = time::OffsetDateTime::now_utc() + time::Duration::days(29);
    assert!(next_update > in_29_days.unix_timestamp());
    #[cfg(unix)]
    assert_eq!(mode_of(&crl_path), 0o644);

    // Again: nothing changes, not even the file.
    let again = ca.revoke(dir.path(), &stolen, 30).unwrap();
    assert!(again.added.is_empty());
    assert_eq!((again.already.len(), again.number), (2, 1));
    assert_eq!(fs::read(&crl_path).unwrap(), pem);

    // Another name: the next number, the earlier entries kept.
    let done = ca
        .revoke(dir.path(), &ca.issued_to(dir.path(), "other").unwrap(), 30)
        .unwrap();
    assert_eq!((done.added.len(), done.number, done.revoked), (1, 2, 3));
    let (serials, number, _) = read_crl(&fs::read(&crl_path).unwrap());
    assert_eq!((serials.len(), number), (3, vec![2]));
}

#[test]
fn revocation_finds_certificates_of_older_directories_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("restpipe CA").unwrap();
    ca.write(dir.path()).unwrap();

    // Issued before the records: only NAME.crt.pem beside the CA.
    let legacy = ca
        .issue(&IssueRequest::new("legacy", Role::Client))
        .unwrap();
    legacy.write(dir.path(), "legacy").unwrap();
    let found = ca.issued_to(dir.path(), "legacy").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].serial, legacy.serial().unwrap());

    // A name never issued, and one that is no name at all.
    for name in ["ghost", "../legacy"] {
        let error = ca.issued_to(dir.path(), name).unwrap_err();
        assert!(matches!(error, PkiError::NotRecorded { .. }), "{error}");
        assert!(error.to_string().contains("--cert"), "{error}");
    }

    // A certificate of another CA with the same name is not this CA's.
    let other_ca = CertificateAuthority::generate("restpipe CA").unwrap();
    let foreign = other_ca
        .issue(&IssueRequest::new("foreign", Role::Client))
        .unwrap();
    let (foreign_path, _) = foreign
        .write(&dir.path().join("elsewhere"), "foreign")
        .unwrap();
    let error = ca.issued_certificate(&foreign_path).unwrap_err();
    assert!(matches!(error, PkiError::NotIssuedByCa { .. }), "{error}");

    // A list the other CA signed is refused, and left as it was.
    let crl_path = dir.path().join(CA_CRL_FILE);
    let foreign_serial = foreign.serial().unwrap();
    let stranger = other_ca
        .revocation_list(&[foreign_serial.as_slice()], 7, 30)
        .unwrap();
    fs::write(&crl_path, &stranger).unwrap();
    let error = ca.revoke(dir.path(), &found, 30).unwrap_err();
    assert!(matches!(error, PkiError::InvalidCrl { .. }), "{error}");
    assert!(
        error.to_string().contains("not signed by this CA"),
        "{error}"
    );
    assert_eq!(fs::read_to_string(&crl_path).unwrap(), stranger);

    // A broken list is refused the same way.
    fs::write(
        &crl_path,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    assert!(matches!(
        ca.revoke(dir.path(), &found, 30),
        Err(PkiError::InvalidCrl { .. })
    ));
    assert!(matches!(
        ca.revoke(dir.path(), &found, 0),
        Err(PkiError::InvalidValidity { days: 0 })
    ));
}
