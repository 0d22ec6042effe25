//! The data directory: signing key, retired keys, hashing secret and database, created on
//! first start.
//!
//! Layout:
//! - `signing-key.pem`: the active Ed25519 key, PKCS#8 PEM, mode 0600.
//! - `retired-keys/*.pem`: keys that no longer sign but still verify (public or private PEM).
//! - `hashing-secret`: 32 random bytes in hex, mode 0600. Losing it resets every quota count
//!   and breaks idempotent retries of earlier requests; back it up with the database.
//! - `epass.sqlite3`: the database.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::keys::{HashingSecret, KeyError, KeyRing, KeyStatus, KeyValidity, PassSigner, VerificationKey};

/// File name of the active signing key.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
/// Folder of retired keys.
pub const RETIRED_KEYS_DIR: &str = "retired-keys";
/// File name of the hashing secret.
pub const HASHING_SECRET_FILE: &str = "hashing-secret";
/// File name of the SQLite database.
pub const DATABASE_FILE: &str = "epass.sqlite3";

/// A data directory problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file is not a PKCS#8 / SPKI Ed25519 PEM.
    #[error("{path}: not an Ed25519 key in PEM (PKCS#8 private key or SPKI public key)")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A public key that must not be trusted.
    #[error("{path}: {source}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The hashing secret is not 64 hex digits.
    #[error("{path}: must hold 64 hex digits")]
    BadSecret {
        /// The file.
        path: PathBuf,
    },
    /// Two key files hold the same key.
    #[error("key id {0} appears in two key files")]
    DuplicateKey(crate::ids::KeyId),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_owned(), source }
}

/// Writes a file readable by its owner only; fails if it exists.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Writes a signing key as PKCS#8 PEM with mode 0600; refuses to overwrite.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), DataDirError> {
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| DataDirError::BadKeyFile { path: path.to_owned() })?;
    write_private(path, pem.as_bytes())
}

/// Reads a PKCS#8 PEM signing key.
pub fn read_signing_key(path: &Path) -> Result<PassSigner, DataDirError> {
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io_error(path))?);
    let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| DataDirError::BadKeyFile { path: path.to_owned() })?;
    Ok(PassSigner::from_signing_key(key))
}

/// Reads a public key from an SPKI PEM, or the public half of a PKCS#8 PEM private key.
pub fn read_verification_key(path: &Path, status: KeyStatus) -> Result<VerificationKey, DataDirError> {
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io_error(path))?);
    let public = match VerifyingKey::from_public_key_pem(&pem) {
        Ok(key) => key.to_bytes(),
        Err(_) => SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| DataDirError::BadKeyFile { path: path.to_owned() })?
            .verifying_key()
            .to_bytes(),
    };
    VerificationKey::from_public_key(&public, status, KeyValidity::UNBOUNDED)
        .map_err(|source| DataDirError::BadKey { path: path.to_owned(), source })
}

/// Everything the server needs from its data directory.
#[derive(Debug)]
pub struct Provisioned {
    /// The active key.
    pub signer: PassSigner,
    /// The active key and every retired one.
    pub keys: KeyRing,
    /// The hashing secret.
    pub secret: HashingSecret,
    /// Where the database lives.
    pub database: PathBuf,
    /// What this start created, to tell the operator.
    pub created: Vec<PathBuf>,
}

/// Opens a data directory, creating it, the signing key and the secret on first start.
/// `signing_key` overrides the key file's location.
pub fn provision(dir: &Path, signing_key: Option<&Path>) -> Result<Provisioned, DataDirError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut created = Vec::new();

    let key_path = signing_key.map_or_else(|| dir.join(SIGNING_KEY_FILE), Path::to_owned);
    if signing_key.is_none() && !key_path.exists() {
        write_signing_key(&key_path, &SigningKey::from_bytes(&rand::random()))?;
        created.push(key_path.clone());
    }
    let signer = read_signing_key(&key_path)?;

    let secret_path = dir.join(HASHING_SECRET_FILE);
    if !secret_path.exists() {
        let bytes: [u8; 32] = rand::random();
        write_private(&secret_path, hex::encode(bytes).as_bytes())?;
        created.push(secret_path.clone());
    }
    let text = zeroize::Zeroizing::new(fs::read_to_string(&secret_path).map_err(io_error(&secret_path))?);
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| DataDirError::BadSecret { path: secret_path.clone() })?;
    let secret = HashingSecret::from_bytes(bytes);

    let mut keys = vec![signer.verification_key()];
    let retired_dir = dir.join(RETIRED_KEYS_DIR);
    if retired_dir.is_dir() {
        let mut paths: Vec<PathBuf> = fs::read_dir(&retired_dir)
            .map_err(io_error(&retired_dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect();
        paths.sort();
        for path in paths {
            keys.push(read_verification_key(&path, KeyStatus::Retired)?);
        }
    }
    let keys = KeyRing::new(keys).map_err(|e| DataDirError::DuplicateKey(e.0))?;

    Ok(Provisioned { signer, keys, secret, database: dir.join(DATABASE_FILE), created })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_second_start_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = provision(dir.path(), None).unwrap();
        assert_eq!(first.created.len(), 2);
        let mode = fs::metadata(dir.path().join(SIGNING_KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let second = provision(dir.path(), None).unwrap();
        assert!(second.created.is_empty());
        assert_eq!(first.signer.key_id(), second.signer.key_id());
        assert_eq!(first.secret.as_bytes(), second.secret.as_bytes());
    }

    #[test]
    fn retired_keys_verify_but_do_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(RETIRED_KEYS_DIR)).unwrap();
        let old = SigningKey::from_bytes(&[4; 32]);
        write_signing_key(&dir.path().join(RETIRED_KEYS_DIR).join("old.pem"), &old).unwrap();
        let p = provision(dir.path(), None).unwrap();
        assert_eq!(p.keys.keys().len(), 2);
        let old_id = PassSigner::from_signing_key(old).key_id();
        assert_eq!(p.keys.find(old_id).unwrap().status, KeyStatus::Retired);
        assert_ne!(p.signer.key_id(), old_id);
    }
}
