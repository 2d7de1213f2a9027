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
