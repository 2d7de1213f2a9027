//! Installing an identity: validated first, then each file written in full
//! beside its destination and renamed into place, so a bad input installs
//! nothing and never overwrites a working identity.

use std::fs;
use std::path::Path;

use super::input::{IdentityError, Input, InputKind};
use super::validate::{ValidatedIdentity, validate_inputs};
use crate::link::{CertFiles, Role};
use crate::ops::pki::{PRIVATE_MODE, PUBLIC_MODE, ReadLimitedError, StagedFile, read_limited};

/// Validates the identity in the files `key`, `cert` and `ca` for `role`
/// and, only if it is valid, copies them to `dest` (creating its
/// directories; the key with mode `0600`).
///
/// Each file is first written in full beside its destination and then
/// renamed, so invalid input writes nothing and a failed write leaves the
/// previous identity in place.
pub fn install(
    key: &Path,
    cert: &Path,
    ca: &Path,
    role: Role,
    dest: &CertFiles,
) -> Result<ValidatedIdentity, IdentityError> {
    let key_pem = read_file(key)?;
    let cert_pem = read_file(cert)?;
    let ca_pem = read_file(ca)?;
    let identity = validate_inputs(
        (&key_pem, Input::new(InputKind::Key, Some(key))),
        (&cert_pem, Input::new(InputKind::Certificate, Some(cert))),
        (&ca_pem, Input::new(InputKind::Ca, Some(ca))),
        role,
    )?;

    let files = [
        (&dest.key, &key_pem, PRIVATE_MODE),
        (&dest.cert, &cert_pem, PUBLIC_MODE),
        (&dest.ca, &ca_pem, PUBLIC_MODE),
    ];
    let mut staged = Vec::with_capacity(files.len());
    for (path, contents, mode) in files {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Dropping `staged` on an early return removes what was written so far.
        staged.push(StagedFile::create(path, contents, mode).map_err(|source| {
            IdentityError::Write {
                path: path.clone(),
                source,
            }
        })?);
    }
    for (file, (path, _, _)) in staged.into_iter().zip(files) {
        file.commit().map_err(|source| IdentityError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(identity)
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    read_limited(path).map_err(|err| match err {
        ReadLimitedError::Io(source) => IdentityError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadLimitedError::TooLarge => IdentityError::TooLarge {
            path: path.to_path_buf(),
        },
    })
}
