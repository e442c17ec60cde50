//! `ltxd log ...` and `ltxd restore`: administering the durable log in a data directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use super::table;
use ltxd::log::{self, DatabaseLog, Log, Policy};
use ltxd::ltx::{detect_format, TxId};

/// The `ltxd log` subcommands.
#[derive(Subcommand)]
pub enum LogCommand {
    /// Append LTX files to a database's log, enforcing the TXID and checksum chain.
    Import {
        #[command(flatten)]
        dir: DataDir,
        /// The database name.
        #[arg(long)]
        db: String,
        /// The LTX files, in TXID order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the records and snapshots of every database, or of one.
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Only this database.
        #[arg(long)]
        db: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every record and snapshot and check the whole chain; exit 1 on any fault.
    Verify {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Write a database's retained records and snapshots as `%016x-%016x.ltx` files.
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// The database name.
        #[arg(long)]
        db: String,
        /// The directory to write to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compact a database's log now by time level, and take a snapshot at the head.
    Compact {
        #[command(flatten)]
        dir: DataDir,
        /// The database name.
        #[arg(long)]
        db: String,
        /// Only merge by level; take no snapshot.
        #[arg(long)]
        no_snapshot: bool,
    },
}

/// The data directory that holds the log.
#[derive(Args)]
pub struct DataDir {
    /// The data directory (LiteFS's `data.dir`).
    #[arg(long = "data-dir")]
    pub path: PathBuf,
}

/// `ltxd restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The data directory (LiteFS's `data.dir`) whose log to restore from.
    #[arg(
        long = "data-dir",
        required_unless_present = "from",
        conflicts_with = "from"
    )]
    data_dir: Option<PathBuf>,
    /// Restore from a backup instead: `s3://BUCKET/PREFIX` or a directory.
    #[arg(long)]
    pub from: Option<String>,
    /// The S3 service URL for `--from s3://` (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// The database name.
    #[arg(long)]
    pub db: String,
    /// The TXID to restore: decimal, or 16 hex digits as in LTX file names (default: the head).
    #[arg(long, conflicts_with = "timestamp")]
    pub txid: Option<String>,
    /// Restore the last transaction committed at or before this time (RFC 3339).
    #[arg(long)]
    pub timestamp: Option<String>,
    /// The database file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Opens the log of an existing data directory.
fn open(dir: &DataDir) -> anyhow::Result<Log> {
    if !dir.path.is_dir() {
        bail!("{}: no such data directory", dir.path.display());
    }
    Log::open(&dir.path).with_context(|| format!("open the log in {}", dir.path.display()))
}

/// Parses a TXID given as decimal or as 16 hex digits.
pub fn parse_txid(text: &str) -> anyhow::Result<TxId> {
    if text.len() == 16 {
        return text
            .parse::<TxId>()
            .with_context(|| format!("invalid TXID {text:?}"));
    }
    Ok(TxId(text.parse().with_context(|| {
        format!("invalid TXID {text:?}: use decimal or 16 hex digits")
    })?))
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_timestamp_ms(text: &str) -> anyhow::Result<i64> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("invalid --timestamp {text:?}: expected RFC 3339"))?;
    Ok((time.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `ltxd restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let Some(data_dir) = args.data_dir.clone() else {
        return super::backup::restore(args);
    };
    let log = open(&DataDir { path: data_dir })?;
    let db = log.existing(&args.db)?;
    let txid = match (&args.txid, &args.timestamp) {
        (Some(txid), _) => parse_txid(txid)?,
        (None, Some(ts)) => log::txid_at_time(&db, parse_timestamp_ms(ts)?)?,
        (None, None) => db.head().txid,
    };
    log::restore(&db, txid, &args.output)?;
    println!(
        "restored {} at TXID {txid} to {}",
        args.db,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs an `ltxd log` subcommand.
pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Import { dir, db, files } => {
            let log = Log::open(&dir.path)
                .with_context(|| format!("open the log in {}", dir.path.display()))?;
            let dblog = log.database(&db)?;
            for path in &files {
                let mut file =
                    File::open(path).with_context(|| format!("open {}", path.display()))?;
                let format =
                    detect_format(&mut file).with_context(|| format!("{}", path.display()))?;
                let len = file.metadata()?.len();
                let record = dblog
                    .append_stream(format, len, std::io::BufReader::new(file))
                    .with_context(|| format!("import {}", path.display()))?;
                println!(
                    "{}: appended TXID {}-{}",
                    path.display(),
                    record.min_txid,
                    record.max_txid
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::List { dir, db, json } => list(&open(&dir)?, db.as_deref(), json),
        LogCommand::Verify { dir } => verify(&open(&dir)?),
        LogCommand::Export { dir, db, out } => {
            let log = open(&dir)?;
            export(&*log.existing(&db)?, &out)
        }
        LogCommand::Compact {
            dir,
            db,
            no_snapshot,
        } => {
            let log = open(&dir)?;
            let dblog = log.existing(&db)?;
            dblog.seal_active_segment_older_than(std::time::Duration::ZERO)?;
            let report = dblog.compact_levels(&Policy::default(), now_ms())?;
            let db = table::escape_control(&db);
            println!(
                "{db}: {} segment(s) rewritten, {} record(s) merged into {}",
                report.segments, report.records_before, report.records_after
            );
            if !no_snapshot {
                match dblog.create_snapshot()? {
                    Some(s) => println!("{db}: snapshot at TXID {}", s.max_txid),
                    None => println!("{db}: the newest snapshot is already at the head"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn selected(log: &Log, db: Option<&str>) -> anyhow::Result<Vec<std::sync::Arc<DatabaseLog>>> {
    match db {
        Some(name) => Ok(vec![log.existing(name)?]),
        None => log
            .database_names()
            .iter()
            .map(|n| Ok(log.database(n)?))
            .collect(),
    }
}

fn list(log: &Log, db: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = vec![[
        "db",
        "kind",
        "min_txid",
        "max_txid",
        "commit",
        "preapply",
        "postapply",
        "timestamp",
        "bytes",
        "format",
    ]
    .map(String::from)
    .to_vec()];
    let mut entries = Vec::new();
    for dblog in selected(log, db)? {
        let records = dblog.snapshots().into_iter().map(|r| ("snapshot", r));
        for (kind, r) in records.chain(dblog.records().into_iter().map(|r| ("record", r))) {
            rows.push(vec![
                table::escape_control(dblog.name()),
                kind.to_string(),
                r.min_txid.to_string(),
                r.max_txid.to_string(),
                r.commit.to_string(),
                r.pre_apply_checksum.to_string(),
                r.post_apply_checksum.to_string(),
                super::ltx::format_timestamp(r.timestamp),
                r.len.to_string(),
                r.format.to_string(),
            ]);
            entries.push(json!({
                "db": dblog.name(), "kind": kind, "min_txid": r.min_txid.to_string(),
                "max_txid": r.max_txid.to_string(), "commit": r.commit, "page_size": r.page_size,
                "pre_apply_checksum": r.pre_apply_checksum.to_string(),
                "post_apply_checksum": r.post_apply_checksum.to_string(),
                "timestamp": r.timestamp, "bytes": r.len, "format": r.format,
            }));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", table::render(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(log: &Log) -> anyhow::Result<ExitCode> {
    let mut sound = true;
    for name in log.database_names() {
        let report = log.database(&name)?.verify()?;
        let name = table::escape_control(&name);
        if report.faults.is_empty() {
            println!(
                "{name}: ok ({} records, {} snapshots, {} bytes)",
                report.records, report.snapshots, report.bytes
            );
        } else {
            sound = false;
            for fault in &report.faults {
                println!("{name}: {fault}");
            }
        }
    }
    Ok(if sound {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn export(dblog: &DatabaseLog, out: &Path) -> anyhow::Result<ExitCode> {
    ltxd::durable::create_dir_all(out)?;
    for record in dblog.snapshots().iter().chain(dblog.records().iter()) {
        let path = out.join(ltxd::ltx::file_name(record.min_txid, record.max_txid));
        let mut data = dblog.source(record).open_raw()?;
        ltxd::durable::write_atomically(&path, |w| std::io::copy(&mut data, w).map(|_| ()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
