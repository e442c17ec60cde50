//! `ltxd backup list|verify` and `ltxd restore --from`: a backup in a bucket or directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::log::{parse_timestamp_ms, parse_txid, RestoreArgs};
use super::table;
use ltxd::backup::restore::{restore as restore_from, Target};
use ltxd::backup::{Chain, Location, Remote};
use ltxd::ltx::{verify_file, TxId};

/// Where the backup is.
#[derive(Args)]
pub struct From {
    /// `s3://BUCKET/PREFIX` or a directory.
    #[arg(long)]
    from: String,
    /// The S3 service URL (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, default_value = "")]
    endpoint: String,
    /// Only this database.
    #[arg(long)]
    db: Option<String>,
}

/// The `ltxd backup` subcommands.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// List each database's objects, and the TXIDs the bucket can restore.
    List(From),
    /// Download the chain up to its tip and verify every object and the checksums between
    /// them; exit 1 on any fault.
    Verify(From),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn remote(from: &str, endpoint: &str) -> anyhow::Result<Remote> {
    Ok(Remote::open(&Location::parse(from, endpoint)?)?)
}

/// `ltxd restore --from`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let from = args
        .from
        .as_deref()
        .context("--from or --data-dir is required")?;
    let remote = remote(from, &args.endpoint)?;
    let target = match (&args.txid, &args.timestamp) {
        (Some(txid), _) => Target::Txid(parse_txid(txid)?),
        (None, Some(ts)) => Target::Timestamp(parse_timestamp_ms(ts)?),
        (None, None) => Target::Latest,
    };
    let txid = runtime()?
        .block_on(restore_from(&remote, &args.db, target, &args.output))
        .with_context(|| format!("restore {} from {remote}", args.db))?;
    println!(
        "restored {} at TXID {txid} to {}",
        args.db,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs an `ltxd backup` subcommand.
pub fn run(command: BackupCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match command {
        BackupCommand::List(from) => rt.block_on(list(&from)),
        BackupCommand::Verify(from) => rt.block_on(verify(&from)),
    }
}

async fn databases(remote: &Remote, from: &From) -> anyhow::Result<Vec<String>> {
    Ok(match &from.db {
        Some(db) => vec![db.clone()],
        None => remote.databases().await?,
    })
}

async fn list(from: &From) -> anyhow::Result<ExitCode> {
    let remote = remote(&from.from, &from.endpoint)?;
    let mut rows = vec![["DB", "LEVEL", "MIN", "MAX", "EPOCH", "SIZE", "STATE"]
        .map(String::from)
        .to_vec()];
    let mut ranges = Vec::new();
    for db in databases(&remote, from).await? {
        let listing = remote.list(&db).await?;
        let chain = Chain::build(&listing.names(), &listing.markers);
        for (name, size, _) in &listing.objects {
            let state = if chain.superseded().contains(name) {
                "superseded"
            } else {
                "valid"
            };
            rows.push(vec![
                db.clone(),
                name.level.to_string(),
                name.min.to_string(),
                name.max.to_string(),
                name.epoch.to_string(),
                size.to_string(),
                state.to_string(),
            ]);
        }
        for (a, b) in chain.restorable() {
            ranges.push(format!("{db}: TXIDs {} to {} restorable", a.0, b.0));
        }
    }
    print!("{}", table::render(&rows));
    for line in ranges {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(from: &From) -> anyhow::Result<ExitCode> {
    let remote = remote(&from.from, &from.endpoint)?;
    let scratch = tempfile::Builder::new().prefix("ltxd-verify-").tempdir()?;
    let mut faults = 0;
    for db in databases(&remote, from).await? {
        let listing = remote.list(&db).await?;
        let chain = Chain::build(&listing.names(), &listing.markers);
        let Some(tip) = chain.tip() else {
            println!("{db}: empty");
            continue;
        };
        let plan = chain.plan(tip.max)?;
        let mut post = None;
        for name in &plan {
            let path: PathBuf = scratch.path().join("object.ltx");
            let mut file = std::fs::File::create(&path)?;
            remote.download(&db, *name, &mut file).await?;
            drop(file);
            match verify_file(&path, None) {
                Ok(v) if post.is_none_or(|p| v.header.pre_apply_checksum == p) => {
                    post = Some(v.trailer.post_apply_checksum);
                }
                Ok(_) => {
                    faults += 1;
                    println!("{db}: {name:?}: its pre-apply checksum does not continue the chain");
                    post = None;
                }
                Err(err) => {
                    faults += 1;
                    println!("{db}: {name:?}: {err}");
                    post = None;
                }
            }
        }
        let first = plan.first().map_or(TxId::ZERO, |o| o.max);
        println!(
            "{db}: {} objects verified, TXID {} to {}, {} superseded",
            plan.len(),
            first.0,
            tip.max.0,
            chain.superseded().len()
        );
    }
    Ok(if faults == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// With a backup configured: restores an empty data directory from it, then starts the
/// uploader (which uploads only while the node is primary). The returned sender stops it.
pub fn start(
    config: &ltxd::config::Config,
    runtime: &tokio::runtime::Runtime,
    log: &std::sync::Arc<ltxd::log::Log>,
    node: &std::sync::Arc<ltxd::replication::NodeState>,
    metrics: &ltxd::metrics::Metrics,
) -> anyhow::Result<Option<tokio::sync::watch::Sender<bool>>> {
    let Some(location) = Location::from_config(&config.backup) else {
        return Ok(None);
    };
    let remote = {
        let _guard = runtime.enter();
        Remote::open(&location).context("backup")?
    };
    match runtime.block_on(ltxd::backup::bootstrap::bootstrap(&remote, log)) {
        Ok(restored) => {
            for (db, txid) in restored {
                tracing::info!(db, %txid, "started from the backup");
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot start from the backup; the primary will send a snapshot")
        }
    }
    let uploader = ltxd::backup::Uploader::new(
        remote,
        std::sync::Arc::clone(log),
        std::sync::Arc::clone(node),
        ltxd::backup::BackupMetrics::new(metrics.registry()),
        config.backup.retention,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    runtime.spawn(uploader.run(stopped));
    tracing::info!(backup = ?location, "backup configured");
    Ok(Some(stop))
}
