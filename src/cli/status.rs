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
    let mut rows = vec![["DATABASE", "TXID", "CHECKSUM", "LAG", "BACKUP"]
        .map(String::from)
        .to_vec()];
    for (name, db) in &info.databases {
        let lag = db.lag_ms.map_or("-".to_string(), |ms| format!("{ms}ms"));
        let backup = match (db.backup_txid, db.backup_lag_ms) {
            (Some(txid), Some(lag)) => format!("{txid:016x} ({lag}ms behind)"),
            (Some(txid), None) => format!("{txid:016x}"),
            _ => "-".to_string(),
        };
        rows.push(vec![
            name.clone(),
            db.txid.clone(),
            db.checksum.clone(),
            lag,
            backup,
        ]);
    }
    print!("{}", render(&rows));
    Ok(ExitCode::SUCCESS)
}
