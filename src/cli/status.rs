//! `ltxd status`: a running node's role, its primary, and each database's TXID and replication
//! lag; `--watch` refreshes a view of one or more nodes in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ltxd_protocol::{Connector, NodeInfo};

use super::node_client::NodeArgs;
use super::table::render;

/// `ltxd status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print the node's `/info` JSON.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Refresh the view in place until interrupted, with each database's throughput.
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with `--watch`.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Another node to show (its URL), with the same token and TLS; repeatable.
    #[arg(long = "node")]
    nodes: Vec<String>,
}

/// Prints the status of a running node, once or (`--watch`) until interrupted.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (url, client) = args.node.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.watch {
        let interval = Duration::try_from_secs_f64(args.interval).context("--interval")?;
        let mut urls = vec![url];
        urls.extend(args.nodes);
        return watch(
            &runtime,
            &client,
            &urls,
            interval.max(Duration::from_millis(100)),
        );
    }
    let info = runtime
        .block_on(client.info(&url))
        .with_context(|| format!("ask {url} for its status"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", node_view(&url, &info, None));
    for url in &args.nodes {
        let info = runtime
            .block_on(client.info(url))
            .with_context(|| format!("ask {url} for its status"))?;
        print!("\n{}", node_view(url, &info, None));
    }
    Ok(ExitCode::SUCCESS)
}

/// What one refresh saw of a node, to compute throughput at the next.
type Seen = BTreeMap<String, u64>;

/// Redraws every node's view every `interval`, in place (cursor home, clear screen).
fn watch(
    runtime: &tokio::runtime::Runtime,
    client: &ltxd_http::HttpConnector,
    urls: &[String],
    interval: Duration,
) -> anyhow::Result<ExitCode> {
    let mut previous: BTreeMap<&str, (Instant, Seen)> = BTreeMap::new();
    loop {
        let mut screen = String::from("\x1b[H\x1b[2J");
        screen.push_str(&format!(
            "ltxd status --watch (every {interval:?}; Ctrl-C to stop)\n\n"
        ));
        for url in urls {
            let now = Instant::now();
            match runtime.block_on(client.info(url)) {
                Ok(info) => {
                    let rates = previous.get(url.as_str()).map(|(then, seen)| {
                        rates(seen, &info, now.duration_since(*then).as_secs_f64())
                    });
                    screen.push_str(&node_view(url, &info, rates.as_ref()));
                    previous.insert(url, (now, txids(&info)));
                }
                Err(err) => screen.push_str(&format!("node:      {url}\nerror:     {err}\n")),
            }
            screen.push('\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(screen.as_bytes())?;
        out.flush()?;
        drop(out);
        std::thread::sleep(interval);
    }
}

/// Each database's TXID.
fn txids(info: &NodeInfo) -> Seen {
    info.databases
        .iter()
        .filter_map(|(name, db)| Some((name.clone(), u64::from_str_radix(&db.txid, 16).ok()?)))
        .collect()
}

/// Transactions per second of each database since `seen`, `secs` ago.
fn rates(seen: &Seen, info: &NodeInfo, secs: f64) -> BTreeMap<String, f64> {
    txids(info)
        .into_iter()
        .filter_map(|(name, txid)| {
            let before = *seen.get(&name)?;
            (secs > 0.0).then(|| (name, txid.saturating_sub(before) as f64 / secs))
        })
        .collect()
}

/// A node's role and database table; with `rates`, a TX/S column.
fn node_view(url: &str, info: &NodeInfo, rates: Option<&BTreeMap<String, f64>>) -> String {
    let role = if info.is_primary {
        "primary"
    } else {
        "replica"
    };
    let mut out = format!("node:      {url}\n");
    out.push_str(&format!(
        "role:      {role}{}\n",
        if info.candidate { " (candidate)" } else { "" }
    ));
    if let Some(primary) = &info.primary {
        out.push_str(&format!("primary:   {}\n", primary.hostname));
    }
    if let Some(cluster) = &info.cluster_id {
        out.push_str(&format!("cluster:   {cluster}\n"));
    }
    if let Some(proxy) = &info.proxy {
        out.push_str(&format!(
            "proxy:     {} (forwarded {}, waited {}, timed out {})
",
            proxy.addr, proxy.forwarded, proxy.waited, proxy.timed_out
        ));
    }
    if let Some(sync) = &info.sync {
        let state = if sync.degraded {
            "DEGRADED (asynchronous)"
        } else {
            "synchronous"
        };
        out.push_str(&format!(
            "sync:      {} {state}, {} replicas acknowledging, ack wait {}us, degraded {}ms in all\n",
            sync.mode, sync.replicas, sync.ack_wait_us, sync.degraded_ms
        ));
    }
    let backs_up = info.databases.values().any(|db| db.backup_txid.is_some());
    let mut header = vec!["DATABASE", "TXID", "CHECKSUM", "LAG"];
    if rates.is_some() {
        header.push("TX/S");
    }
    if backs_up {
        header.push("BACKUP");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for (name, db) in &info.databases {
        let lag = db.lag_ms.map_or("-".to_string(), |ms| format!("{ms}ms"));
        let mut row = vec![name.clone(), db.txid.clone(), db.checksum.clone(), lag];
        if let Some(rates) = rates {
            row.push(rates.get(name).map_or("-".into(), |r| format!("{r:.1}")));
        }
        if backs_up {
            row.push(match (db.backup_txid, db.backup_lag_ms) {
                (Some(txid), Some(lag)) => format!("{txid:016x} ({lag}ms behind)"),
                (Some(txid), None) => format!("{txid:016x}"),
                _ => "-".to_string(),
            });
        }
        rows.push(row);
    }
    out.push_str(&render(&rows));
    out
}
