//! `epass-core` is the pure core of epass: the pass format, signing, the issuance policy, QR
//! symbols and offline verification. It does no I/O and never reads the clock (`now` is
//! always passed in), and it depends on no async runtime, RPC or database crate, so a gate
//! vendor's verifier, a command line or a WASM build can link it alone.
//!
//! The flow:
//! 1. **Issue.** The service checks an application ([`policy::Application`]) against the
//!    rules ([`policy`]) and signs the pass ([`pass::SignedPass`]) with a [`keys::PassSigner`].
//! 2. **QR.** The signed envelope becomes a QR text (`EP1:` + base64url) and a QR symbol at
//!    level Q ([`qr::QrSymbol`]).
//! 3. **Verify offline.** A checkpoint holding the root public key, the root-signed trust list
//!    ([`trust`]) and a status list ([`status`]) checks format, key, signature, window, mode,
//!    revocation and use ([`offline::verify_offline`], built on [`verify::verify_at`]).
//!
//! Module map: [`ids`] (pass and key ids), [`applicant`] (permit number, names, dates),
//! [`pass`] (payload and envelope), [`keys`] (signing key and key ring), [`policy`] (validity
//! window, quota month), [`verify`] (one pass against a key ring), [`qr`] (symbols, images),
//! [`trust`] (the root-signed list of pass keys), [`status`] (revoked and used passes),
//! [`offline`] (the offline verifier), [`journal`] (what an offline checkpoint admitted, chained
//! by hash). The byte-level format is docs/FORMAT.md at the top of the repository.

pub mod applicant;
pub mod ids;
pub mod journal;
pub mod keys;
pub mod offline;
pub mod pass;
pub mod policy;
pub mod qr;
mod signed;
pub mod status;
pub mod trust;
pub mod verify;
mod wire;
