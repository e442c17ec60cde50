//! `ltxd debug ...`: tools for tests and benchmarks, hidden from help.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use ltxd::log::{self, Level, Log, Policy};
use ltxd::ltx::{Format, PageSize, TxId};
use ltxd::workload::SyntheticDatabase;

/// The `ltxd debug` subcommands.
#[derive(Subcommand)]
pub enum DebugCommand {
    /// Append synthetic transactions to a log, printing `ack TXID CHECKSUM` after each durable
    /// append, and compact, snapshot and retain aggressively every `--maintain-every` appends.
    /// It continues a database already in the log, restoring it first.
    WriteLoad {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The database name.
        #[arg(long, default_value = "load.db")]
        db: String,
        /// How many transactions to append.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// The seed of the synthetic workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run maintenance after this many appends (0: never).
        #[arg(long, default_value_t = 0)]
        maintain_every: u64,
    },
}

/// Runs an `ltxd debug` subcommand.
pub fn run(command: DebugCommand) -> anyhow::Result<ExitCode> {
    match command {
        DebugCommand::WriteLoad {
            data_dir,
            db,
            count,
            seed,
            maintain_every,
        } => write_load(&data_dir, &db, count, seed, maintain_every),
    }
}

/// Compaction with every record old enough to merge in 20 ms windows, frequent snapshots, and
/// retention that keeps only what the newest snapshot needs.
fn aggressive_policy() -> Policy {
    Policy {
        levels: vec![Level {
            min_age: Duration::ZERO,
            window: Duration::from_millis(20),
        }],
        snapshot_after_bytes: 256 * 1024,
        snapshot_interval: Duration::from_secs(3600),
        retention: Duration::from_secs(1),
        max_bytes: None,
        segment_max_age: Duration::ZERO,
    }
}

fn write_load(
    data_dir: &std::path::Path,
    name: &str,
    count: u64,
    seed: u64,
    maintain_every: u64,
) -> anyhow::Result<ExitCode> {
    let log = Log::open(data_dir)?;
    let dblog = log.database(name)?;
    let page_size = PageSize::new(4096).ok_or_else(|| anyhow::anyhow!("page size"))?;
    let head = dblog.head();
    let mut db = if head.txid == TxId::ZERO {
        SyntheticDatabase::new(page_size, Format::V1, 8, seed)
    } else {
        let restored = data_dir.join(format!(".{name}.resume"));
        log::restore(&dblog, head.txid, &restored)?;
        let bytes = std::fs::read(&restored)?;
        std::fs::remove_file(&restored)?;
        SyntheticDatabase::resume(page_size, Format::V1, &bytes, head.txid, seed)
    };
    let policy = aggressive_policy();
    let mut out = std::io::stdout().lock();
    for i in 1..=count {
        let record = dblog.append(&db.next_transaction(3)?)?;
        writeln!(
            out,
            "ack {} {}",
            record.max_txid, record.post_apply_checksum
        )?;
        out.flush()?;
        if maintain_every > 0 && i % maintain_every == 0 {
            let now = record.timestamp + 10_000;
            let done = dblog.maintain(&policy, now)?;
            writeln!(out, "maintained {done:?}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
