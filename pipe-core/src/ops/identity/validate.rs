//! The checks an identity must pass: the key matches the certificate, the
//! certificate carries its role's extended key usage and chains to the CA,
//! and a client's certificate names a valid node.

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use time::UtcOffset;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::input::{IdentityError, Input, InputKind};
use crate::link::Role;
use crate::link::certificate;

/// A checked identity, described for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedIdentity {
    /// For a client, its node name (first DNS name, CN as fallback); for a
    /// server, the first DNS name, CN or IP address in its certificate.
    pub name: String,
    /// The role it was checked for.
    pub role: Role,
    /// When the certificate expires, as RFC 3339 UTC, so the operator can
    /// plan the renewal.
    pub not_after: String,
}

/// Checks that a key, certificate and CA (all PEM) form a usable identity
/// for `role`: the key matches the certificate, the certificate carries the
/// role's extended key usage and chains to the CA, and a client's
/// certificate names a valid node.
pub fn validate(
    key_pem: &[u8],
    cert_pem: &[u8],
    ca_pem: &[u8],
    role: Role,
) -> Result<ValidatedIdentity, IdentityError> {
    validate_inputs(
        (key_pem, Input::new(InputKind::Key, None)),
        (cert_pem, Input::new(InputKind::Certificate, None)),
        (ca_pem, Input::new(InputKind::Ca, None)),
        role,
    )
}

/// Checks the three inputs, each named by its [`Input`] in errors: the
/// work behind both [`validate`] and `install`.
pub(super) fn validate_inputs(
    (key_pem, key_input): (&[u8], Input),
    (cert_pem, cert_input): (&[u8], Input),
    (ca_pem, ca_input): (&[u8], Input),
    role: Role,
) -> Result<ValidatedIdentity, IdentityError> {
    // Parse all three first, so a wrong or empty file is reported as such.
    not_empty(key_pem, &key_input)?;
    not_empty(cert_pem, &cert_input)?;
    not_empty(ca_pem, &ca_input)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| pem_error(err, key_input.clone(), "PRIVATE KEY"))?;
    let chain = certificates(cert_pem, &cert_input)?;
    let cas = certificates(ca_pem, &ca_input)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(IdentityError::Missing {
            input: cert_input,
            expected: "CERTIFICATE",
        });
    };
    let parsed_leaf = parse_certificate(leaf, &cert_input)?;
    let end_entity = EndEntityCert::try_from(leaf).map_err(|err| IdentityError::Certificate {
        input: cert_input.clone(),
        reason: format!("{err:?}"),
    })?;
    let anchors = cas
        .iter()
        .map(|ca| {
            webpki::anchor_from_trusted_cert(ca).map_err(|err| IdentityError::Certificate {
                input: ca_input.clone(),
                reason: format!("{err:?}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        IdentityError::Key {
            input: key_input,
            source,
        }
    })?;
    CertifiedKey::new(vec![leaf.clone()], signing_key)
        .keys_match()
        .map_err(|_| IdentityError::KeyMismatch)?;

    if !certificate::has_extended_key_usage(leaf, role).map_err(|e| e.in_input(&cert_input))? {
        return Err(IdentityError::WrongRole { role });
    }
    let usage = match role {
        Role::Server => KeyUsage::server_auth(),
        Role::Client => KeyUsage::client_auth(),
    };
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|source| IdentityError::Chain {
            hint: chain_hint(&source),
            source,
        })?;

    let name = match role {
        Role::Client => certificate::node_name(leaf).map_err(|e| e.in_input(&cert_input))?,
        Role::Server => server_name(&parsed_leaf, &cert_input)?,
    };
    Ok(ValidatedIdentity {
        name,
        role,
        not_after: rfc3339_utc(parsed_leaf.validity().not_after.to_datetime()),
    })
}

fn not_empty(pem: &[u8], input: &Input) -> Result<(), IdentityError> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        Err(IdentityError::Empty {
            input: input.clone(),
        })
    } else {
        Ok(())
    }
}

fn pem_error(
    err: rustls_pki_types::pem::Error,
    input: Input,
    expected: &'static str,
) -> IdentityError {
    match err {
        rustls_pki_types::pem::Error::NoItemsFound => IdentityError::Missing { input, expected },
        source => IdentityError::Pem { input, source },
    }
}

/// Every certificate in a PEM input, in order; at least one.
fn certificates(pem: &[u8], input: &Input) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(err, input.clone(), "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(IdentityError::Missing {
            input: input.clone(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn parse_certificate<'a>(
    der: &'a [u8],
    input: &Input,
) -> Result<X509Certificate<'a>, IdentityError> {
    certificate::parse_certificate(der).map_err(|error| error.in_input(input))
}

fn first_dns_name<'a>(
    cert: &'a X509Certificate<'_>,
    input: &Input,
) -> Result<Option<&'a str>, IdentityError> {
    certificate::first_dns_name(cert).map_err(|error| error.in_input(input))
}

/// A server's name for display only: servers are identified by the names
/// clients dial, which need not fit the node-name charset.
fn server_name(cert: &X509Certificate<'_>, input: &Input) -> Result<String, IdentityError> {
    if let Some(name) = first_dns_name(cert, input)?.or_else(|| certificate::common_name(cert)) {
        return Ok(name.to_owned());
    }
    let first_ip = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|names| {
            names
                .value
                .general_names
                .iter()
                .find_map(|name| match name {
                    GeneralName::IPAddress(bytes) => ip_address(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
        });
    Ok(first_ip.unwrap_or_default())
}

fn ip_address(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn chain_hint(err: &webpki::Error) -> &'static str {
    match err {
        webpki::Error::UnknownIssuer => "it was not signed by this CA",
        webpki::Error::CertExpired { .. } => "it has expired",
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet (check the clock)",
        webpki::Error::InvalidSignatureForPublicKey => "its signature does not match the CA",
        webpki::Error::CaUsedAsEndEntity => "it is a CA certificate, not a node certificate",
        _ => "see the cause below",
    }
}

/// Formats a time as RFC 3339 in UTC without needing `time`'s formatting feature.
fn rfc3339_utc(time: time::OffsetDateTime) -> String {
    let time = time.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}
