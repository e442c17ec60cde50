//! `ltxd promote` (also `ltxd handoff`): makes a candidate replica the primary without downtime.
//! The node asks its primary to hand the lease over; the primary lets in-flight transactions
//! finish, stops writes, sends the replica everything it lacks, then the lease.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ltxd_protocol::{Connector, Promotion};

use super::node_client::NodeArgs;

/// `ltxd promote` arguments.
#[derive(Args)]
pub struct PromoteArgs {
    /// The node to promote.
    #[command(flatten)]
    node: NodeArgs,
    /// How long to wait for the node to report that it is primary, in seconds.
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
}

/// Promotes a running node and waits until it is primary.
pub fn run(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let (url, client) = args.node.client()?;
    let wait = Duration::try_from_secs_f64(args.wait).context("--wait")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let promotion = runtime
        .block_on(client.promote(&url))
        .with_context(|| format!("promote {url}"))?;
    if promotion == Promotion::AlreadyPrimary {
        println!("{url} is already primary");
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let info = runtime.block_on(client.info(&url));
        if info.as_ref().is_ok_and(|info| info.is_primary) {
            println!("{url} is primary ({} ms)", started.elapsed().as_millis());
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= wait {
            anyhow::bail!(
                "the primary handed its lease to {url}, but it did not report being primary within {wait:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
