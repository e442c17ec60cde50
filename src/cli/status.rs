//! `ltxd status`: a running node's role, its primary, and each database's TXID and lag.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ltxd_protocol::Connector;

use super::node_client::NodeArgs;
use super::table::render;

/// `ltxd status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print the node's `/info` JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the status of a running node.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (url, client) = args.node.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info = runtime
        .block_on(client.info(&url))
        .with_context(|| format!("ask {url} for its status"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let role = if info.is_primary {
        "primary"
    } else {
        "replica"
    };
    println!("node:      {url}");
    println!(
        "role:      {role}{}",
        if info.candidate { " (candidate)" } else { "" }
    );
    if let Some(primary) = &info.primary {
        println!("primary:   {}", primary.hostname);
    }
    if let Some(cluster) = &info.cluster_id {
        println!("cluster:   {cluster}");
    }
    if let Some(proxy) = &info.proxy {
        println!(
            "proxy:     {} (forwarded {}, waited {}, timed out {})",
            proxy.addr, proxy.forwarded, proxy.waited, proxy.timed_out
        );
    }
    let mut rows = vec![["DATABASE", "TXID", "CHECKSUM", "LAG"]
        .map(String::from)
        .to_vec()];
    for (name, db) in &info.databases {
        let lag = db.lag_ms.map_or("-".to_string(), |ms| format!("{ms}ms"));
        rows.push(vec![
            name.clone(),
            db.txid.clone(),
            db.checksum.clone(),
            lag,
        ]);
    }
    print!("{}", render(&rows));
    Ok(ExitCode::SUCCESS)
}
