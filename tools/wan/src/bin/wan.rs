//! `wan`: builds and removes the simulated WAN of `ltxd-wan` for scripts and benchmarks.
//!
//! `scripts/wan` builds this binary and runs it. `wan up <profile>` creates namespaces
//! `<name>-a` and `<name>-b` joined by a link with the profile's delay and loss, and leaves them
//! running; `wan down` removes them; `wan clean` removes what crashed test runs left behind.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ltxd_wan::{Profile, Side};

/// Builds and removes a simulated WAN between two network namespaces.
#[derive(Parser)]
#[command(name = "wan", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates namespaces <NAME>-a (10.77.0.1) and <NAME>-b (10.77.0.2) joined by a link with
    /// the profile's delay and loss.
    Up {
        /// lan (no delay or loss), wan50 (50 ms RTT, 1% loss each way) or wan150 (150 ms RTT,
        /// 0.5% loss each way).
        profile: Profile,
        /// The link's name, the prefix of the namespaces' names.
        #[arg(long, default_value = "ltxd-wan")]
        name: String,
    },
    /// Stops every process in the link's namespaces and deletes them.
    Down {
        /// The link's name, as given to `up`.
        #[arg(long, default_value = "ltxd-wan")]
        name: String,
    },
    /// Removes the namespaces of test runs that died (`ltxd-<pid>-…` with no such process).
    Clean,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Up { profile, name } => ltxd_wan::up(&name, profile).map(|()| {
            println!(
                "{profile}: {} ms RTT added, {}% loss each way",
                profile.rtt().as_millis(),
                profile.loss() * 100.0
            );
            for side in Side::BOTH {
                println!("{}  {}", ltxd_wan::netns_name(&name, side), side.addr());
            }
        }),
        Cmd::Down { name } => ltxd_wan::down(&name),
        Cmd::Clean => ltxd_wan::cleanup_stale().map(|removed| {
            for netns in removed {
                println!("removed {netns}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wan: {e}");
            ExitCode::FAILURE
        }
    }
}
