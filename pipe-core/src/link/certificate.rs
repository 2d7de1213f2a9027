//! Reading who a peer is from its certificate: its role (extended key
//! usage) and its node name (first DNS name, CN as fallback). Called on
//! every certificate a peer presents, so everything here takes arbitrary
//! bytes and never panics.

use std::fmt;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Longest node name accepted; matches the longest DNS name, since the name
/// travels as a DNS subject alternative name.
pub const MAX_NODE_NAME_LEN: usize = 253;

/// Which side of the pipe a certificate is for; decides its extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The central server node: its certificate carries `serverAuth`.
    Server,
    /// A client node: its certificate carries `clientAuth`, and its first DNS
    /// name is the node's identity.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not a well-formed X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Malformed(String),
    /// The certificate has no name that may serve as a node identity.
    #[error(
        "the certificate's name {name:?} is not a valid node name (use letters, digits, '_', '.' or '-')"
    )]
    InvalidNodeName {
        /// The first DNS name or common name, as found ("" when there is none).
        name: String,
    },
}

/// Whether `name` is acceptable as a node identity: 1 to
/// [`MAX_NODE_NAME_LEN`] characters from `[A-Za-z0-9_.-]`, and not `.` or `..`.
///
/// Node names end up in URLs, log lines, metric names and file names, so the
/// charset is deliberately narrow.
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A client node's identity: the first DNS subject alternative name of its
/// certificate, or the subject CN if it has none, restricted to
/// `[A-Za-z0-9_.-]+` (and not `.` or `..`).
pub fn node_name(cert_der: &[u8]) -> Result<String, CertificateError> {
    let cert = parse_certificate(cert_der)?;
    let name = first_dns_name(&cert)?
        .or_else(|| common_name(&cert))
        .unwrap_or_default();
    if is_valid_node_name(name) {
        Ok(name.to_owned())
    } else {
        Err(CertificateError::InvalidNodeName {
            name: name.to_owned(),
        })
    }
}

/// Whether the certificate explicitly carries the extended key usage of
/// `role` (`serverAuth` or `clientAuth`).
///
/// webpki accepts a certificate with no extended key usage extension at
/// all; restpipe does not, so that a server certificate can never pass as a
/// client and the other way round.
pub fn has_extended_key_usage(cert_der: &[u8], role: Role) -> Result<bool, CertificateError> {
    let cert = parse_certificate(cert_der)?;
    let usage = cert
        .extended_key_usage()
        .map_err(|err| CertificateError::Malformed(err.to_string()))?;
    Ok(usage.is_some_and(|usage| match role {
        Role::Server => usage.value.server_auth,
        Role::Client => usage.value.client_auth,
    }))
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(CertificateError::Malformed(
            "trailing bytes after the certificate".to_owned(),
        )),
        Ok((_, cert)) => Ok(cert),
        Err(err) => Err(CertificateError::Malformed(err.to_string())),
    }
}

/// The certificate's first DNS subject alternative name, if any.
pub(crate) fn first_dns_name<'a>(
    cert: &'a X509Certificate<'_>,
) -> Result<Option<&'a str>, CertificateError> {
    let names = cert
        .subject_alternative_name()
        .map_err(|err| CertificateError::Malformed(err.to_string()))?;
    Ok(names.and_then(|names| {
        names
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(dns) => Some(*dns),
                _ => None,
            })
    }))
}

/// The certificate's subject common name, if any.
pub(crate) fn common_name<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
}
