//! `ltxd status`: a running node's role, its primary, and each database's TXID and lag.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ltxd::config::{process_env, Config};
use ltxd_protocol::Connector;

use super::table::render;

/// `ltxd status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    /// The node's URL. Without it, the node at `http.addr` of the configuration.
    #[arg(long)]
    url: Option<String>,
    /// The configuration file, to find `http.addr` (same search as `ltxd mount`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the node's `/info` JSON.
    #[arg(long)]
    json: bool,
    /// The node's `http.token`, when it requires one (or set `LTXD_TOKEN`).
    #[arg(long, env = "LTXD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The URL of the node the configuration describes.
fn url_from_config(config: Option<&std::path::Path>) -> anyhow::Result<String> {
    let (config, _) = Config::load(config, &process_env)?;
    let addr = &config.http.addr;
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.replace("0.0.0.0", "127.0.0.1"),
    };
    Ok(format!("http://{addr}"))
}

/// Prints the status of a running node.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = match args.url {
        Some(url) => url,
        None => url_from_config(args.config.as_deref())?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = args
        .token
        .as_deref()
        .map(ltxd_transport_security::Token::new)
        .transpose()
        .context("--token")?;
    let info = runtime
        .block_on(ltxd_http::HttpConnector::with_security(None, token).info(&url))
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
