//! The `epass` binary: parses the command line and runs it.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = epass::cli::Cli::parse();
    if !cli.sets_up_logging() {
        // The client commands print their results; their logs are warnings only.
        if let Err(error) = epass::telemetry::init_logging(epass::config::LogFormat::Text, "warn") {
            eprintln!("error: {error}");
            return ExitCode::from(epass::cli::EXIT_ERROR);
        }
    }
    match epass::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(epass::cli::EXIT_ERROR)
        }
    }
}
