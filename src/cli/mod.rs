//! The command line: `ltxd <command>`.

mod ltx;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// SQLite replication through an event-sourced log of LTX files.
#[derive(Parser)]
#[command(name = "ltxd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, verify, apply, encode and compact LTX files offline.
    #[command(subcommand)]
    Ltx(ltx::LtxCommand),
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Ltx(command) => ltx::run(command),
    }
}
