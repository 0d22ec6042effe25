//! `epass` issues one-time electronic temporary passes to Hong Kong and Macau residents who
//! travel to the Mainland without a valid Home Return Permit, and verifies them at checkpoints.
//!
//! The flow:
//! 1. **Issue.** The applicant-facing backend sends an application
//!    ([`epass_core::policy::Application`]) after its SMS and face checks. The rules are
//!    checked, the monthly quota is counted and the pass inserted in one transaction, and the
//!    pass is signed ([`epass_core::pass::SignedPass`]).
//! 2. **QR.** The signed envelope becomes a QR text (`EP1:` + base64url) and a QR symbol at
//!    level Q ([`epass_core::qr::QrSymbol`]).
//! 3. **Verify offline.** A checkpoint holding the root public key, the root-signed trust list
//!    and a status list checks format, key, signature, window, mode, revocation and use
//!    ([`epass_core::offline::verify_offline`], built on [`epass_core::verify::verify_at`]),
//!    with no server; `now` is passed in.
//! 4. **Verify online and admit.** Checkpoints call the server, which runs the same
//!    verification and adds revocation and single use, recording the one entry atomically.
//!
//! The pure core, steps 1 to 3 without I/O, is the crate `epass-core` (`core/` in the
//! repository): [`epass_core::ids`], [`epass_core::applicant`], [`epass_core::pass`],
//! [`epass_core::keys`], [`epass_core::policy`], [`epass_core::verify`], [`epass_core::qr`],
//! [`epass_core::trust`], [`epass_core::status`], [`epass_core::offline`],
//! [`epass_core::journal`]. It has no tokio, tonic or sqlx in its dependency tree.
//!
//! This crate is the service around it, the edges: [`grpc`] (protobuf types, conversions,
//! status mapping, handlers), [`store`] (SQL behind one trait, and the task that prunes what
//! is past its retention period), [`server`] (wiring: limits,
//! TLS, shutdown), [`access`] (roles, callers, the layer that authenticates, authorizes and
//! rate-limits every call), [`config`] (the TOML file, environment and flags, checked),
//! [`telemetry`] (logs, metrics and the RPC layer that times and logs every call), [`datadir`]
//! (keys, secret, trust list and database on disk), [`clock`], [`cli`] (the `epass` command,
//! and the journal of an offline checkpoint), [`mod@bench`] (the load generator `epass bench`
//! and its bare baselines).

pub mod access;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod grpc;
pub mod server;
pub mod store;
pub mod telemetry;
