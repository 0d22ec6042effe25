//! `root export`: the root public key in the file checkpoints are provisioned with (SPKI PEM,
//! docs/FORMAT.md, *Provisioning the root public key*), with its key id and hex.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey as _;
use serde_json::json;

use super::offline::write_new_file;
use crate::datadir::read_verification_key;
use epass_core::keys::{KeyStatus, VerificationKey};

#[derive(Debug, Subcommand)]
pub(super) enum RootCommand {
    /// Writes the root public key as an SPKI PEM file ("BEGIN PUBLIC KEY"), the file offline
    /// checkpoints are provisioned with, and prints its key id and its 32 bytes in hex.
    ///
    /// OpenSSL and the common libraries load the file as it is. Hand it to checkpoints by a
    /// channel you trust, and have the key id confirmed through another: it is their only trust
    /// anchor.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// The root key: a PKCS#8 private key PEM (such as DATA_DIR/root-key.pem) of which only the
    /// public half is used, or an SPKI public key PEM.
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    root: PathBuf,
    /// Where to write the public key PEM; without it, the PEM goes to standard output.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Print JSON: key_id, public_key (hex), pem, path.
    #[arg(long)]
    json: bool,
}

/// The SPKI PEM of a public key.
pub(crate) fn public_key_pem(key: &VerificationKey) -> anyhow::Result<String> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key.public_key()).context("not an Ed25519 public key")?;
    key.to_public_key_pem(LineEnding::LF).context("encoding the public key")
}

pub(super) fn run(command: &RootCommand) -> anyhow::Result<ExitCode> {
    match command {
        RootCommand::Export(args) => export(args),
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let root = read_verification_key(&args.root, KeyStatus::Active)?;
    let pem = public_key_pem(&root)?;
    if let Some(path) = &args.out {
        write_new_file(path, pem.as_bytes(), args.force)?;
    }
    let key_id = root.key_id().to_string();
    let hex = hex::encode(root.public_key());
    if args.json {
        let path = args.out.as_ref().map(|p| p.display().to_string());
        println!("{}", json!({ "key_id": key_id, "public_key": hex, "pem": pem, "path": path }));
    } else if let Some(path) = &args.out {
        println!("root key {key_id}");
        println!("public key {hex}");
        eprintln!("wrote {}", path.display());
    } else {
        print!("{pem}");
        eprintln!("root key {key_id}, public key {hex}");
    }
    Ok(ExitCode::SUCCESS)
}
