//! The `epass` command line: serve, keygen, issue, verify (online, or offline with a trust
//! list), admit (online, or offline into a journal), sync, revoke, trust-list build and
//! inspect, root export, fetch, audit, backup, config check, db migrate, bench.
//!
//! Client commands authenticate with a bearer token: `--token`/`EPASS_TOKEN`, or, for a
//! server on this machine, the token of the command's role in `DATA_DIR/local-tokens.toml`.
//!
//! This file holds the parsed command line, its dispatch and the exit codes. The clap
//! definitions are in `commands`; the commands themselves are grouped by what they touch:
//! `serve` (the server and its settings), `online` (calls to a server), `offline` (trust and
//! status lists, checked here), `root` (the root public key file checkpoints are given),
//! `audit` (the database, read directly), `backup` (a copy of it), `db` (the schema), `bench`
//! (load and baselines), `journal` (`admit --offline` and `sync`);
//! `input` and `output` are shared by them.

mod audit;
mod backup;
mod bench;
mod commands;
mod db;
mod input;
mod journal;
mod offline;
mod online;
mod output;
mod root;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use commands::{Command, ConfigCommand, DbCommand, TrustListCommand};

/// Exit code of an accepted pass, and of a trust list that is valid and current.
const EXIT_ACCEPTED: u8 = 0;
/// Exit code of a rejected pass, and of a trust list that is authentic but stale (or older
/// than the one held).
const EXIT_REJECTED: u8 = 1;
/// Exit code of any error, and of a trust list whose signature or format is bad.
pub const EXIT_ERROR: u8 = 2;
/// Exit code of an offline check whose own trust list does not allow a decision.
const EXIT_CANNOT_DECIDE: u8 = 3;

/// Issues and verifies one-time electronic temporary passes.
#[derive(Debug, Parser)]
#[command(name = "epass", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command sets up logging itself: `serve` does, from its settings. For the
    /// others the caller sets it up (warnings to stderr).
    pub fn sets_up_logging(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Keygen(args) => serve::keygen(&args),
        Command::Issue(args) => online::issue(args).await,
        Command::Verify(args) => online::verify(args).await,
        Command::Admit(args) if args.offline.offline => journal::admit_offline(&args),
        Command::Admit(args) => online::admit(args).await,
        Command::Sync(args) => journal::sync(args).await,
        Command::Revoke(args) => online::revoke(args).await,
        Command::TrustList(TrustListCommand::Build(args)) => offline::build_trust_list_file(&args),
        Command::TrustList(TrustListCommand::Inspect(args)) => offline::inspect_trust_list(&args),
        Command::Root(command) => root::run(&command),
        Command::Fetch(args) => offline::fetch(args).await,
        Command::Audit(args) => audit::audit(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Config(ConfigCommand::Check { file }) => Ok(serve::config_check(&file)),
        Command::Db(DbCommand::Migrate(args)) => db::migrate(args).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::BenchBaselineServer { public_key, listen } => bench::baseline_server(&public_key, listen).await,
    }
}
