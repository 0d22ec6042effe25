//! `epass` issues one-time electronic temporary passes to Hong Kong and Macau residents who
//! travel to the Mainland without a valid Home Return Permit, and verifies them at checkpoints.
//!
//! The flow:
//! 1. **Issue.** The applicant-facing backend sends an application ([`policy::Application`])
//!    after its SMS and face checks. The rules are checked, the monthly quota is counted and
//!    the pass inserted in one transaction, and the pass is signed ([`pass::SignedPass`]).
//! 2. **QR.** The signed envelope becomes a QR text (`EP1:` + base64url) and a QR symbol at
//!    level Q ([`qr::QrSymbol`]).
//! 3. **Verify offline.** A checkpoint holding the root public key, the root-signed trust list
//!    and a status list checks format, key, signature, window, mode, revocation and use
//!    ([`offline::verify_offline`], built on [`verify::verify_at`]), with no server; `now` is
//!    passed in.
//! 4. **Verify online and admit.** Checkpoints call the server, which runs the same
//!    verification and adds revocation and single use, recording the one entry atomically.
//!
//! Module map. The pure core (no I/O, no clock, builds with `--no-default-features`):
//! [`ids`], [`applicant`], [`pass`], [`keys`], [`policy`], [`verify`], [`qr`], [`trust`] (the
//! root-signed list of pass keys), [`status`] (revoked and used passes), [`offline`] (the
//! offline verifier).
//! The edges (feature `server`): `grpc` (protobuf types, conversions, status mapping,
//! handlers), `store` (SQL behind one trait), `server` (wiring: limits, TLS, shutdown),
//! `access` (roles, callers, the layer that authenticates, authorizes and rate-limits every
//! call), `config` (the TOML file, environment and flags, checked), `telemetry` (logs, metrics
//! and the RPC layer that times and logs every call), `datadir` (keys, secret, trust list and
//! database on disk), `clock`, `cli`.

pub mod applicant;
pub mod ids;
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

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod datadir;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
