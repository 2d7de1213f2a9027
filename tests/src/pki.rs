//! Identities for tests: a throwaway certificate authority that issues
//! server and client identities, in memory or as files in the two layouts
//! an operator meets (what `certs-tool issue` writes, and a cert dir as
//! `set-identity` leaves it).
//!
//! Issuing in memory cannot fail for the names tests use, so those methods
//! panic on failure (a bug in the test); writing files returns the error.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    CertFiles, CertificateAuthority, IssueRequest, IssuedIdentity, RevocationList, Role,
    TlsIdentity,
};

/// The name in every test server's certificate, and the name client nodes
/// verify it against: the certificate is valid for `localhost` and
/// 127.0.0.1, where test servers listen.
pub const SERVER_NAME: &str = "localhost";

/// Mode of a private key file, as `set-identity` installs it.
const KEY_MODE: u32 = 0o600;

/// A throwaway certificate authority.
pub struct Pki {
    ca: CertificateAuthority,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A new CA with its own key.
    pub fn new() -> Self {
        Self {
            ca: CertificateAuthority::generate("restpipe test CA")
                .unwrap_or_else(|e| panic!("generating a CA in memory: {e}")),
        }
    }

    /// The CA written into `cert` and `key` by [`Pki::write_authority`]:
    /// another process issuing identities of the same CA.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let ca = CertificateAuthority::load(cert, key)
            .with_context(|| format!("loading the CA from {}", cert.display()))?;
        Ok(Self { ca })
    }

    /// Writes the CA's certificate and key (`ca.crt.pem`, `ca.key.pem`,
    /// the key mode `0600`) into `dir`; returns their paths (certificate,
    /// key).
    pub fn write_authority(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.ca
            .write(dir)
            .with_context(|| format!("writing the CA into {}", dir.display()))
    }

    /// The CA certificate (PEM): what peers of its identities trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A certificate and key as `request` asks.
    pub fn issue(&self, request: IssueRequest) -> IssuedIdentity {
        self.ca
            .issue(&request)
            .unwrap_or_else(|e| panic!("issuing {request:?}: {e}"))
    }

    /// `issued` as an identity that trusts this CA.
    pub fn identity(&self, issued: &IssuedIdentity) -> TlsIdentity {
        TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.ca_pem().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("an identity from freshly issued PEM: {e}"))
    }

    /// The CA's revocation list (PEM) naming the certificates of `revoked`
    /// (none: an empty list), as `certs-tool revoke` writes it; `number` is
    /// its CRL number.
    pub fn revocation_list(&self, revoked: &[&IssuedIdentity], number: u64) -> String {
        let serials: Vec<Vec<u8>> = revoked
            .iter()
            .map(|issued| {
                issued
                    .serial()
                    .unwrap_or_else(|e| panic!("the serial of a freshly issued certificate: {e}"))
            })
            .collect();
        let serials: Vec<&[u8]> = serials.iter().map(Vec::as_slice).collect();
        self.ca
            .revocation_list(&serials, number, 30)
            .unwrap_or_else(|e| panic!("signing a revocation list: {e}"))
    }

    /// `issued` as an identity that trusts this CA and enforces the
    /// revocation list `crl` (PEM).
    pub fn identity_with_crl(&self, issued: &IssuedIdentity, crl: &str) -> TlsIdentity {
        let list = RevocationList::from_pem(crl.as_bytes())
            .unwrap_or_else(|e| panic!("reading a revocation list just signed: {e}"));
        self.identity(issued)
            .with_revocations(list)
            .unwrap_or_else(|e| panic!("a revocation list of this CA: {e}"))
    }

    /// A server identity: [`SERVER_NAME`] and 127.0.0.1.
    pub fn server(&self) -> TlsIdentity {
        self.identity(&self.issue(server_request()))
    }

    /// A client identity named `name`.
    pub fn client(&self, name: &str) -> TlsIdentity {
        self.identity(&self.issue(IssueRequest::new(name, Role::Client)))
    }

    /// Issues `request` into `dir` as `certs-tool issue` does:
    /// `NAME.crt.pem`, `NAME.key.pem` (mode `0600`), and beside them the
    /// CA's certificate `ca.crt.pem` (not its key); creates `dir` if missing.
    pub fn write_identity(&self, dir: &Path, request: IssueRequest) -> anyhow::Result<CertFiles> {
        let name = request.name.clone();
        let issued = self.issue(request);
        issued.write(dir, &name)?;
        let files = named_files(dir, &name);
        std::fs::write(&files.ca, self.ca_pem())
            .with_context(|| format!("writing {}", files.ca.display()))?;
        Ok(files)
    }

    /// Installs `issued` for `role` in `cert_dir` as `set-identity` leaves
    /// a cert dir: the role's standard file names, the key readable by the
    /// owner only, and this CA's certificate; creates `cert_dir` if missing
    /// and replaces files already there.
    pub fn install(
        &self,
        cert_dir: &Path,
        role: Role,
        issued: &IssuedIdentity,
    ) -> anyhow::Result<CertFiles> {
        std::fs::create_dir_all(cert_dir)
            .with_context(|| format!("creating {}", cert_dir.display()))?;
        let files = CertFiles::in_dir(cert_dir, role);
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(&files.cert, &issued.cert_pem)?;
        write(&files.key, &issued.key_pem)?;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(KEY_MODE))
            .with_context(|| format!("restricting {}", files.key.display()))?;
        write(&files.ca, self.ca_pem())?;
        Ok(files)
    }
}

/// What a test server's certificate asks for: [`SERVER_NAME`] and 127.0.0.1.
pub fn server_request() -> IssueRequest {
    IssueRequest {
        ips: vec![Ipv4Addr::LOCALHOST.into()],
        ..IssueRequest::new(SERVER_NAME, Role::Server)
    }
}

/// The files of identity `name` in `dir` as `certs-tool issue` names them:
/// `NAME.key.pem`, `NAME.crt.pem`, and the CA's `ca.crt.pem`.
pub fn named_files(dir: &Path, name: &str) -> CertFiles {
    CertFiles {
        key: dir.join(format!("{name}.key.pem")),
        cert: dir.join(format!("{name}.crt.pem")),
        ca: dir.join("ca.crt.pem"),
        crl: None,
    }
}
