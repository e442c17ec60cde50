//! The command line: `ltxd <command>`.

mod backup;
mod debug;
mod exec;
mod log;
mod logging;
mod ltx;
mod mount;
mod mount_flags;
mod node_client;
mod promote;
mod proxy;
mod role_wait;
mod status;
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
    /// Mount the FUSE file system and capture every SQLite commit into the log.
    Mount(mount::MountArgs),
    /// Inspect, verify, apply, encode and compact LTX files offline.
    #[command(subcommand)]
    Ltx(ltx::LtxCommand),
    /// Administer the durable log in a data directory.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Show a running node's role, its primary, and each database's TXID and lag.
    Status(status::StatusArgs),
    /// Make a candidate replica the primary, without downtime (the primary hands its lease over).
    #[command(alias = "handoff")]
    Promote(promote::PromoteArgs),
    /// Rebuild a database file at any retained point of its log, or of a backup (`--from`).
    Restore(log::RestoreArgs),
    /// Inspect a backup in a bucket or directory.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Tools for tests and benchmarks.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let command = Cli::parse_from(litefs_spellings(std::env::args_os())).command;
    // `ltxd mount` starts its log once it has read `log.*` from its configuration.
    if !matches!(command, Command::Mount(_)) {
        logging::init(&logging::default_config());
    }
    match command {
        Command::Mount(args) => mount::run(args),
        Command::Ltx(command) => ltx::run(command),
        Command::Log(command) => log::run(command),
        Command::Restore(args) => log::restore(args),
        Command::Backup(command) => backup::run(command),
        Command::Status(args) => status::run(args),
        Command::Promote(args) => promote::run(args),
        Command::Debug(command) => debug::run(command),
    }
}

/// LiteFS's flags are written with one dash (`-config FILE`, `-no-expand-env`, `-name DB`),
/// as Go spells them: those become `--config` and so on, but not among the application's
/// arguments after `--`. `-flag=value` is rewritten too.
/// The long flags LiteFS's commands take, which it spells with one dash.
const LITEFS_FLAGS: &[&str] = &[
    "config",
    "no-expand-env",
    "skip-unmount",
    "fuse.debug",
    "debug",
    "tracing",
    "name",
    "url",
];

fn litefs_spellings(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> impl Iterator<Item = std::ffi::OsString> {
    let mut after_dash_dash = false;
    args.map(move |arg| {
        if arg == "--" {
            after_dash_dash = true;
        }
        let name = arg
            .to_str()
            .and_then(|a| a.strip_prefix('-'))
            .filter(|a| !a.starts_with('-'))
            .map(|a| a.split_once('=').map_or(a, |(name, _)| name));
        match name {
            Some(name) if !after_dash_dash && LITEFS_FLAGS.contains(&name) => {
                let mut long = std::ffi::OsString::from("-");
                long.push(&arg);
                long
            }
            _ => arg,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dash_config_is_rewritten_only_before_the_application_arguments() {
        let args = [
            "ltxd",
            "mount",
            "-config",
            "a.yml",
            "-fuse.debug",
            "-debug=true",
            "-x",
            "--",
            "app",
            "-config",
            "b",
        ];
        let rewritten: Vec<_> = super::litefs_spellings(args.iter().map(Into::into)).collect();
        let expected = [
            "ltxd",
            "mount",
            "--config",
            "a.yml",
            "--fuse.debug",
            "--debug=true",
            "-x",
            "--",
            "app",
            "-config",
            "b",
        ];
        assert_eq!(rewritten, expected.map(std::ffi::OsString::from));
    }
}
