//! The data directory: signing key, retired keys, hashing secret and database, created on
//! first start.
//!
//! Layout:
//! - `signing-key.pem`: the active Ed25519 key, PKCS#8 PEM, mode 0600.
//! - `retired-keys/*.pem`: keys that no longer sign but still verify (public or private PEM).
//! - `hashing-secret`: 32 random bytes in hex, mode 0600. Losing it resets every quota count
//!   and breaks idempotent retries of earlier requests; back it up with the database.
//! - `root-key.pem`: the root key that signs the trust list, created on first start so that
//!   everything works with no set-up. In production keep the root key offline: sign trust
//!   lists with `epass trust-list build` elsewhere and leave only `trust-list.bin` here.
//! - `trust-list.bin`: the root-signed list of pass-signing keys the server signs under and
//!   serves to offline verifiers.
//! - `epass.sqlite3`: the database, mode 0600 (SQLite gives its `-wal` and `-shm` files the
//!   database's mode).
//!
//! The directory is created with mode 0700: it holds secrets, and the database holds who
//! travelled where.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};

use epass_core::keys::{HashingSecret, KeyError, KeyRing, KeyStatus, KeyValidity, PassSigner, VerificationKey};
use epass_core::trust::{TrustList, TrustListError};

/// File name of the active signing key.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
/// Folder of retired keys.
pub const RETIRED_KEYS_DIR: &str = "retired-keys";
/// File name of the hashing secret.
pub const HASHING_SECRET_FILE: &str = "hashing-secret";
/// File name of the SQLite database.
pub const DATABASE_FILE: &str = "epass.sqlite3";
/// File name of the root key.
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// File name of the signed trust list.
pub const TRUST_LIST_FILE: &str = "trust-list.bin";

pub use epass_core::trust::{SIGNING_PERIOD, TRUST_LIST_LIFETIME};

/// The server renews the embedded trust list on start when it has the root key and the list is
/// within this margin of going stale.
pub const RENEW_BEFORE: TimeDelta = TimeDelta::days(7);

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
    DuplicateKey(epass_core::ids::KeyId),
    /// The trust list cannot be used.
    #[error("{path}: {source}")]
    TrustList {
        /// The file.
        path: PathBuf,
        /// Why.
        source: TrustListError,
    },
    /// The trust list does not let the signing key sign now, and there is no root key here
    /// to sign a new list.
    #[error("signing key {key_id} is not active in the trust list {path}; sign a new trust list with `epass trust-list build`")]
    SignerNotActive {
        /// The signing key.
        key_id: epass_core::ids::KeyId,
        /// The trust list.
        path: PathBuf,
    },
    /// The embedded trust list cannot be renewed for this signing key.
    #[error("cannot renew the trust list: {0}")]
    Renewal(epass_core::trust::SuccessorError),
    /// A trust list exists but no root key to check it with.
    #[error("{path}: a trust list needs the root public key to check it ({root})")]
    NoRootKey {
        /// The trust list.
        path: PathBuf,
        /// Where the root key was looked for.
        root: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_owned(), source }
}

/// Writes a new file readable by its owner only, synced; fails if it exists. Every secret the
/// server writes (keys, hashing secret, local tokens) goes through here.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates a directory (and any missing parents) readable by its owner only; an existing one
/// is left as it is, with a warning if others may read it (the operator may have chosen that).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    match fs::metadata(dir) {
        Ok(metadata) => {
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    directory = %dir.display(),
                    mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                    "the data directory may be read by others; chmod 700 it"
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
        }
        Err(error) => Err(error),
    }
}

/// Creates the SQLite database file empty and readable by its owner only (0600), before SQLite
/// opens it, unless it exists. SQLite takes an empty file for a new database, and gives the
/// `-wal` and `-shm` files it creates beside it the same mode, whatever the umask.
pub fn create_database_file(path: &Path) -> Result<(), DataDirError> {
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DataDirError::Io { path: path.to_owned(), source }),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    create_private_file(path, contents).map_err(io_error(path))
}

/// Writes a signing key as PKCS#8 version 1 PEM (the secret alone, as OpenSSL writes it: the
/// version 2 form with the public key inside is refused by some libraries, Python's
/// `cryptography` among them) with mode 0600; refuses to overwrite. Both forms are read.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), DataDirError> {
    let v1 = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    let pem = v1.to_pkcs8_pem(LineEnding::LF).map_err(|_| DataDirError::BadKeyFile { path: path.to_owned() })?;
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
    /// The signed trust list bytes.
    pub trust_list_bytes: Vec<u8>,
    /// The trust list.
    pub trust_list: TrustList,
    /// What this start created, to tell the operator.
    pub created: Vec<PathBuf>,
}

/// Reads the retired keys of `retired-keys/`, sorted by file name.
fn retired_keys(dir: &Path) -> Result<Vec<VerificationKey>, DataDirError> {
    let retired_dir = dir.join(RETIRED_KEYS_DIR);
    if !retired_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&retired_dir)
        .map_err(io_error(&retired_dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    paths.sort();
    paths.iter().map(|path| read_verification_key(path, KeyStatus::Retired)).collect()
}

/// Whether the server may go on with `list` at `now` without signing a new one.
fn list_serves(list: &TrustList, signer: &PassSigner, now: DateTime<Utc>) -> bool {
    list.stale_after > now + RENEW_BEFORE
        && list.key(signer.key_id()).is_some_and(|k| k.may_sign_at(now) && k.sign_until > now + RENEW_BEFORE)
}

/// Loads the trust list, creating the root key and the list on first start, and renewing the
/// list when a root private key is at hand and the list goes stale soon or does not let the
/// signing key sign.
fn provision_trust_list(
    dir: &Path,
    signer: &PassSigner,
    now: DateTime<Utc>,
    created: &mut Vec<PathBuf>,
) -> Result<(Vec<u8>, TrustList), DataDirError> {
    let list_path = dir.join(TRUST_LIST_FILE);
    let root_path = dir.join(ROOT_KEY_FILE);
    let root_signer = if root_path.exists() {
        read_signing_key(&root_path).ok()
    } else if list_path.exists() {
        None
    } else {
        write_signing_key(&root_path, &SigningKey::from_bytes(&rand::random()))?;
        created.push(root_path.clone());
        Some(read_signing_key(&root_path)?)
    };
    let previous = if list_path.exists() {
        if !root_path.exists() {
            return Err(DataDirError::NoRootKey { path: list_path, root: root_path });
        }
        let root = read_verification_key(&root_path, KeyStatus::Active)?;
        let bytes = fs::read(&list_path).map_err(io_error(&list_path))?;
        let list = TrustList::open(&bytes, &root)
            .map_err(|source| DataDirError::TrustList { path: list_path.clone(), source })?;
        Some((bytes, list))
    } else {
        None
    };
    match (previous, root_signer) {
        (Some((bytes, list)), _) if list_serves(&list, signer, now) => Ok((bytes, list)),
        (previous, Some(root)) => {
            let previous_list = previous.as_ref().map(|(_, list)| list);
            let list = TrustList::successor(previous_list, &[signer.verification_key()], &retired_keys(dir)?, &[], now)
                .map_err(DataDirError::Renewal)?;
            let bytes = list.sign(&root);
            let temporary = dir.join(format!("{TRUST_LIST_FILE}.new"));
            let _ = fs::remove_file(&temporary);
            write_private(&temporary, &bytes)?;
            fs::rename(&temporary, &list_path).map_err(io_error(&list_path))?;
            created.push(list_path);
            Ok((bytes, list))
        }
        (Some((bytes, list)), None) => {
            if list.key(signer.key_id()).is_some_and(|k| k.may_sign_at(now)) {
                // Stale soon, but the root is offline: serve it and let the operator renew.
                tracing::warn!(stale_after = %list.stale_after, "the trust list goes stale soon; sign a new one");
                Ok((bytes, list))
            } else {
                Err(DataDirError::SignerNotActive { key_id: signer.key_id(), path: list_path })
            }
        }
        (None, None) => unreachable!("without a trust list the root key is created above"),
    }
}

/// Opens a data directory, creating it, the signing key, the secret, the root key and the
/// trust list on first start. `signing_key` overrides the key file's location.
pub fn provision(dir: &Path, signing_key: Option<&Path>, now: DateTime<Utc>) -> Result<Provisioned, DataDirError> {
    create_private_dir(dir).map_err(io_error(dir))?;
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

    let (trust_list_bytes, trust_list) = provision_trust_list(dir, &signer, now, &mut created)?;
    let keys = trust_list.key_ring().map_err(|e| DataDirError::DuplicateKey(e.0))?;

    Ok(Provisioned { signer, keys, secret, database: dir.join(DATABASE_FILE), trust_list_bytes, trust_list, created })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap()
    }

    #[test]
    fn first_start_creates_second_start_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = provision(dir.path(), None, now()).unwrap();
        assert_eq!(first.created.len(), 4, "{:?}", first.created);
        for file in [SIGNING_KEY_FILE, ROOT_KEY_FILE, HASHING_SECRET_FILE] {
            let mode = fs::metadata(dir.path().join(file)).unwrap().permissions();
            assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{file}");
        }
        let second = provision(dir.path(), None, now() + TimeDelta::days(1)).unwrap();
        // Regression (issue 12): the directory was 0755. (The tempdir itself is the caller's.)
        let data = dir.path().join("nested").join("data");
        provision(&data, None, now()).unwrap();
        for created in [dir.path().join("nested"), data] {
            let mode = fs::metadata(&created).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", created.display());
        }
        assert!(second.created.is_empty());
        assert_eq!(first.signer.key_id(), second.signer.key_id());
        assert_eq!(first.secret.as_bytes(), second.secret.as_bytes());
        assert_eq!(first.trust_list_bytes, second.trust_list_bytes);
        let root = read_verification_key(&dir.path().join(ROOT_KEY_FILE), KeyStatus::Active).unwrap();
        let list = TrustList::open(&second.trust_list_bytes, &root).unwrap();
        assert!(list.key(second.signer.key_id()).unwrap().may_sign_at(now()));
    }

    #[test]
    fn rotation_retires_the_old_key_in_a_new_list() {
        let dir = tempfile::tempdir().unwrap();
        let first = provision(dir.path(), None, now()).unwrap();
        let old_id = first.signer.key_id();
        fs::create_dir_all(dir.path().join(RETIRED_KEYS_DIR)).unwrap();
        fs::rename(dir.path().join(SIGNING_KEY_FILE), dir.path().join(RETIRED_KEYS_DIR).join("old.pem")).unwrap();
        let later = now() + TimeDelta::days(3);
        let second = provision(dir.path(), None, later).unwrap();
        assert_ne!(second.signer.key_id(), old_id);
        assert_eq!(second.trust_list.sequence, first.trust_list.sequence + 1);
        let old = second.trust_list.key(old_id).unwrap();
        assert_eq!(old.status, KeyStatus::Retired);
        // The old key signs to the end of the rotation's second (a pass it signed then verifies).
        let second_after = later + TimeDelta::seconds(1);
        assert_eq!(old.sign_until, second_after);
        assert_eq!(old.verify_until, second_after + epass_core::pass::MAX_VALIDITY);
        assert_eq!(second.keys.find(old_id).unwrap().status, KeyStatus::Retired);
        assert!(second.trust_list.key(second.signer.key_id()).unwrap().may_sign_at(later));
    }

    #[test]
    fn stale_soon_list_is_renewed_with_the_root_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = provision(dir.path(), None, now()).unwrap();
        let later = first.trust_list.stale_after - RENEW_BEFORE;
        let second = provision(dir.path(), None, later).unwrap();
        assert_eq!(second.trust_list.sequence, 2);
        assert_eq!(second.trust_list.stale_after, later + TRUST_LIST_LIFETIME);
    }

    #[test]
    fn without_the_root_key_a_list_that_excludes_the_signer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        provision(dir.path(), None, now()).unwrap();
        // The root key goes offline (only its public half stays), and the signing key changes.
        let root = read_verification_key(&dir.path().join(ROOT_KEY_FILE), KeyStatus::Active).unwrap();
        let public = VerifyingKey::from_bytes(&root.public_key()).unwrap();
        let pem = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(&public, LineEnding::LF).unwrap();
        fs::write(dir.path().join(ROOT_KEY_FILE), pem).unwrap();
        fs::remove_file(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let err = provision(dir.path(), None, now()).unwrap_err();
        assert!(matches!(err, DataDirError::SignerNotActive { .. }), "{err}");
    }
}
