//! Speed of the durable LTX log (src/log): appends, cursor reads, compaction, snapshots, and
//! opening a log with and without its index.
//!
//! A plain timed program (`harness = false`, no criterion): most of what it measures changes the
//! log it runs on (appends grow it, compaction rewrites it, a rebuild rewrites the index), so
//! every repetition gets its own prepared copy of a data directory, and the preparation stays
//! out of the timed region. Each measurement is repeated; the JSON it prints holds every
//! repetition and their median.
//!
//! Workload: `SyntheticDatabase` with 4 KiB pages, LTX v1 uncompressed, 256 initial pages,
//! transactions from `next_transaction(3)` (1 to 3 random pages, a quarter of them growing the
//! database by one more page): about 10 KB of LTX per transaction.
//!
//! Measurements:
//! - `appends`: `DatabaseLog::append` of pre-generated transactions, each fdatasynced before it
//!   returns, on the real disk and on tmpfs (the difference is the cost of the fdatasync). Each
//!   round is followed by a raw `pwrite` + `fdatasync` loop of the same bytes on the same file
//!   system: the floor under an append, measured in the same minute.
//! - `cursor`: a 20k-transaction log read from the start, every record's bytes copied to a sink,
//!   through `record_after` in a loop and through the async `LogCursor` on a current-thread
//!   tokio runtime; next to a sequential read of the segment files (the page-cache ceiling). The
//!   time per record in the first and the last tenth of the log shows whether a read's cost
//!   grows with the log.
//! - `compaction`: the same 20k-transaction log (4 sealed segments of 5000 records) compacted
//!   with the default policy at `now = last timestamp + 2 h`, so that every record is in the 1 h
//!   level and each segment merges into one record; and the same transactions in 20 segments
//!   (merge groups of 1000), which shows how the cost grows with the size of a merge group.
//! - `snapshot`: `create_snapshot` over the same log uncompacted (one input per record) and
//!   compacted (five inputs), and over a 10k-transaction log, uncompacted.
//! - `open_100k`: `Log::open` of a 100k-transaction log with its index intact, and after
//!   deleting `<data-dir>/index` (a full rebuild: every record scanned and verified). Built on
//!   tmpfs, then copied to the disk, where it is opened with a warm and a cold page cache.
//!
//! Environment:
//! - `LOG_BENCH_DISK_DIR`: where the disk data directories go (default: the system temporary
//!   directory, refused if it is tmpfs). A fresh subdirectory is made and removed.
//! - `LOG_BENCH_TMPFS_DIR`: the tmpfs directory (default `/dev/shm`).
//! - `LOG_BENCH_QUICK=1`: small sizes, for a smoke test.
//!
//! Run: `cargo bench --bench log`, or `benches/log-bench.sh` for `benches/results/log.json`.
//! The JSON is printed on one line starting with `LOGBENCH-JSON `.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer as _, SubscriberExt};

use ltxd::log::{Log, Policy};
use ltxd::ltx::{Format, PageSize, Pos};
use ltxd::workload::SyntheticDatabase;

const DB: &str = "bench";
const INITIAL_PAGES: u32 = 256;
const MAX_PAGES: u32 = 3;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Sizes of one run.
struct Sizes {
    appends: usize,
    append_rounds: usize,
    cursor_log: usize,
    cursor_reps: usize,
    sealed_segments: usize,
    compaction_reps: usize,
    rebuild_log: usize,
    open_reps: usize,
    rebuild_reps: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                appends: 200,
                append_rounds: 2,
                cursor_log: 2_000,
                cursor_reps: 2,
                sealed_segments: 4,
                compaction_reps: 1,
                rebuild_log: 5_000,
                open_reps: 2,
                rebuild_reps: 1,
            }
        } else {
            Sizes {
                appends: 2_000,
                append_rounds: 3,
                cursor_log: 20_000,
                cursor_reps: 5,
                sealed_segments: 4,
                compaction_reps: 3,
                rebuild_log: 100_000,
                open_reps: 5,
                rebuild_reps: 3,
            }
        }
    }
}

/// Counts the log's "rebuilt the index" events, to check that each open did what it is
/// measured as (an intact index must not be rebuilt; a deleted one must be).
#[derive(Clone, Default)]
struct RebuildCounter(Arc<AtomicUsize>);

impl RebuildCounter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RebuildCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
                if field.name() == "message" && format!("{value:?}").contains("rebuilt the index") {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn workload(seed: u64) -> SyntheticDatabase {
    let page_size = PageSize::new(4096).expect("4096 is a page size");
    SyntheticDatabase::new(page_size, Format::V1, INITIAL_PAGES, seed)
}

fn fs_type(path: &Path) -> Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

fn fs_name(magic: i64) -> String {
    match magic {
        TMPFS_MAGIC => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("0x{other:x}"),
    }
}

/// The soft limit on open files (`ulimit -n`).
fn open_files_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit buffer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        0
    }
}

/// Median of a non-empty list.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn mb(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            files_under(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Writes back and drops from the page cache every file under `dir`, so that the next open
/// reads them from the disk. Only these files are evicted, nothing else on the machine.
fn evict(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    for path in files {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.sync_all()?;
        // SAFETY: a valid open file descriptor; the advice only drops clean cached pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!("posix_fadvise {}: error {rc}", path.display());
        }
    }
    Ok(())
}

/// What building a log produced.
#[derive(Clone, Copy)]
struct Built {
    records: usize,
    ltx_bytes: u64,
    last_timestamp: i64,
    segments: usize,
}

/// Builds a log of `count` transactions (the first a snapshot) in `dir`, sealing the active
/// segment every `seal_every` transactions and at the end when given.
fn build_log(dir: &Path, count: usize, seal_every: Option<usize>, seed: u64) -> Result<Built> {
    let log = Log::open(dir)?;
    let db = log.database(DB)?;
    let mut w = workload(seed);
    let mut ltx_bytes = 0;
    let mut last_timestamp = 0;
    for i in 1..=count {
        let tx = w.next_transaction(MAX_PAGES)?;
        let record = db.append(&tx)?;
        ltx_bytes += record.len;
        last_timestamp = record.timestamp;
        if seal_every.is_some_and(|k| i % k == 0) {
            db.seal_active_segment_older_than(Duration::ZERO)?;
        }
    }
    let segments = fs::read_dir(dir.join("dbs").join(DB).join("segments"))?.count();
    log.flush_index()?;
    Ok(Built {
        records: count,
        ltx_bytes,
        last_timestamp,
        segments,
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Appends.

/// The floor under an append: `pwrite` of the same bytes at the end of a file, then
/// `fdatasync`, with nothing else.
struct RawFile {
    file: File,
    at: u64,
}

impl RawFile {
    fn write_synced(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.at)?;
        self.file.sync_data()?;
        self.at += bytes.len() as u64;
        Ok(())
    }
}

/// Appends on the file system of `base`. Each round times `sizes.appends` log appends, then the
/// same writes through a raw `pwrite` + `fdatasync` loop, so that both see the same disk
/// weather: on a shared machine the latency of an fdatasync changes from minute to minute.
fn bench_appends(base: &Path, label: &str, sizes: &Sizes) -> Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("ltxd-logbench-append-")
        .tempdir_in(base)?;
    let log = Log::open(dir.path())?;
    let db = log.database(DB)?;
    let mut raw = RawFile {
        file: OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("raw"))?,
        at: 0,
    };
    let mut w = workload(1);
    // The initial snapshot, then a short warm-up, untimed: the first segment file, the index
    // tree and the allocator settle.
    db.append(&w.next_transaction(MAX_PAGES)?)?;
    for _ in 0..50 {
        let tx = w.next_transaction(MAX_PAGES)?;
        db.append(&tx)?;
        raw.write_synced(&tx)?;
    }
    let mut rounds = Vec::new();
    let mut rates = Vec::new();
    let mut raw_rates = Vec::new();
    let mut all_latencies: Vec<f64> = Vec::new();
    let mut total_bytes = 0u64;
    let mut total_appends = 0usize;
    for _ in 0..sizes.append_rounds {
        let txs: Vec<Vec<u8>> = (0..sizes.appends)
            .map(|_| w.next_transaction(MAX_PAGES))
            .collect::<Result<_, _>>()?;
        let bytes: u64 = txs.iter().map(|t| t.len() as u64).sum();
        let mut latencies = Vec::with_capacity(txs.len());
        let start = Instant::now();
        for tx in &txs {
            let t = Instant::now();
            db.append(tx)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = txs.len() as f64 / secs;

        let start = Instant::now();
        for tx in &txs {
            raw.write_synced(tx)?;
        }
        let raw_secs = start.elapsed().as_secs_f64();
        let raw_rate = txs.len() as f64 / raw_secs;
        println!(
            "log bench: append {label}: {} appends in {secs:.3} s = {rate:.0}/s ({:.1} MB/s); \
             raw pwrite+fdatasync {raw_rate:.0}/s",
            txs.len(),
            mb(bytes, secs)
        );
        rates.push(rate);
        raw_rates.push(raw_rate);
        rounds.push(json!({
            "appends": txs.len(),
            "secs": round(secs, 4),
            "appends_per_s": round(rate, 1),
            "mb_per_s": round(mb(bytes, secs), 2),
            "raw_pwrite_fdatasync_per_s": round(raw_rate, 1),
        }));
        all_latencies.extend(latencies);
        total_bytes += bytes;
        total_appends += txs.len();
    }
    all_latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "dir": base.display().to_string(),
        "fs": fs_name(fs_type(base)?),
        "appends_per_round": sizes.appends,
        "mean_ltx_bytes": total_bytes / total_appends as u64,
        "appends_per_s": round(median(&rates), 1),
        "raw_pwrite_fdatasync_per_s": round(median(&raw_rates), 1),
        "latency_us": {
            "p50": round(percentile(&all_latencies, 0.5), 1),
            "p90": round(percentile(&all_latencies, 0.9), 1),
            "p99": round(percentile(&all_latencies, 0.99), 1),
            "max": round(*all_latencies.last().unwrap_or(&0.0), 1),
        },
        "rounds": rounds,
    }))
}

// ---------------------------------------------------------------------------------------------
// 2. Cursor reads.

fn read_with_record_after(log_dir: &Path, records: usize) -> Result<(u64, f64, f64, f64)> {
    let log = Log::open(log_dir)?;
    let db = log.database(DB)?;
    let tenth = (records / 10).max(1);
    let mut sink = io::sink();
    let mut bytes = 0u64;
    let mut pos = Pos::ZERO;
    let mut n = 0usize;
    let mut first_tenth = 0.0;
    let mut last_tenth_start = 0.0;
    let start = Instant::now();
    while let Some(mut r) = db.record_after(pos)? {
        bytes += io::copy(&mut r.data, &mut sink)?;
        pos = Pos::new(r.record.max_txid, r.record.post_apply_checksum);
        n += 1;
        if n == tenth {
            first_tenth = start.elapsed().as_secs_f64();
        }
        if n == records - tenth {
            last_tenth_start = start.elapsed().as_secs_f64();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if n != records {
        bail!("read {n} records, expected {records}");
    }
    // Per-record time in the first and the last tenth of the log, in µs.
    let early = first_tenth / tenth as f64 * 1e6;
    let late = (secs - last_tenth_start) / tenth as f64 * 1e6;
    Ok((bytes, secs, early, late))
}

fn read_with_cursor(log_dir: &Path, records: usize) -> Result<(u64, f64)> {
    let log = Log::open(log_dir)?;
    let db = log.database(DB)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let mut cursor = db
            .cursor(Pos::ZERO)
            .map_err(|e| anyhow::anyhow!("cursor at zero: {e:?}"))?;
        let mut sink = io::sink();
        let mut bytes = 0u64;
        let start = Instant::now();
        for _ in 0..records {
            let mut r = cursor.next().await?;
            bytes += io::copy(&mut r.data, &mut sink)?;
        }
        Ok((bytes, start.elapsed().as_secs_f64()))
    })
}

fn read_segment_files(log_dir: &Path) -> Result<(u64, f64)> {
    let mut files = Vec::new();
    files_under(&log_dir.join("dbs").join(DB).join("segments"), &mut files)?;
    files.sort();
    let mut sink = io::sink();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    for path in files {
        let mut file = File::open(path)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            io::Write::write_all(&mut sink, &buf[..n])?;
        }
    }
    Ok((bytes, start.elapsed().as_secs_f64()))
}

fn bench_cursor(log_dir: &Path, built: &Built, sizes: &Sizes) -> Result<Value> {
    let mut after = Vec::new();
    let mut early = Vec::new();
    let mut late = Vec::new();
    let mut via_cursor = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..sizes.cursor_reps {
        let (bytes, secs, e, l) = read_with_record_after(log_dir, built.records)?;
        if bytes != built.ltx_bytes {
            bail!(
                "record_after read {bytes} bytes, expected {}",
                built.ltx_bytes
            );
        }
        after.push(mb(bytes, secs));
        early.push(e);
        late.push(l);
        let (bytes, secs) = read_with_cursor(log_dir, built.records)?;
        if bytes != built.ltx_bytes {
            bail!(
                "the cursor read {bytes} bytes, expected {}",
                built.ltx_bytes
            );
        }
        via_cursor.push(mb(bytes, secs));
        let (bytes, secs) = read_segment_files(log_dir)?;
        raw.push(mb(bytes, secs));
    }
    let r = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| round(*x, 1)).collect() };
    println!(
        "log bench: cursor: record_after {:.0} MB/s ({:.1} µs/record early, {:.1} late), \
         async cursor {:.0} MB/s, raw segment read {:.0} MB/s",
        median(&after),
        median(&early),
        median(&late),
        median(&via_cursor),
        median(&raw)
    );
    Ok(json!({
        "records": built.records,
        "ltx_bytes": built.ltx_bytes,
        "segments": built.segments,
        "fs": "tmpfs (page cache)",
        "record_after_mb_per_s": round(median(&after), 1),
        "async_cursor_mb_per_s": round(median(&via_cursor), 1),
        "raw_segment_read_mb_per_s": round(median(&raw), 1),
        "record_after_us_per_record_first_tenth": round(median(&early), 2),
        "record_after_us_per_record_last_tenth": round(median(&late), 2),
        "reps": {
            "record_after_mb_per_s": r(&after),
            "async_cursor_mb_per_s": r(&via_cursor),
            "raw_segment_read_mb_per_s": r(&raw),
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// 3. Compaction and snapshots.

/// Copies the template log to a fresh directory under `base`, opens it and seals its segments.
fn fresh_copy(template: &Path, base: &Path) -> Result<(tempfile::TempDir, Log)> {
    let dir = tempfile::Builder::new()
        .prefix("ltxd-logbench-copy-")
        .tempdir_in(base)?;
    copy_dir(template, dir.path())?;
    let log = Log::open(dir.path())?;
    // Opening makes the last segment active again: seal it, so that every segment is sealed.
    log.database(DB)?
        .seal_active_segment_older_than(Duration::ZERO)?;
    Ok((dir, log))
}

fn bench_compaction(template: &Path, built: &Built, base: &Path, sizes: &Sizes) -> Result<Value> {
    let policy = Policy::default();
    let now_ms = built.last_timestamp + 2 * 3600 * 1000;
    let mut reps = Vec::new();
    let mut rates = Vec::new();
    let mut last = json!(null);
    for _ in 0..sizes.compaction_reps {
        let (_dir, log) = fresh_copy(template, base)?;
        let db = log.database(DB)?;
        let records = db.records();
        let input_bytes: u64 = records.iter().map(|r| r.len).sum();
        let start = Instant::now();
        let report = db.compact_levels(&policy, now_ms)?;
        let secs = start.elapsed().as_secs_f64();
        let output_bytes: u64 = db.records().iter().map(|r| r.len).sum();
        if report.segments != built.segments {
            bail!(
                "compacted {} segments of {}",
                report.segments,
                built.segments
            );
        }
        let rate = mb(input_bytes, secs);
        rates.push(rate);
        reps.push(round(secs, 4));
        last = json!({
            "segments_rewritten": report.segments,
            "records_before": report.records_before,
            "records_after": report.records_after,
            "input_bytes": input_bytes,
            "output_bytes": output_bytes,
        });
        println!(
            "log bench: compaction {}: {} records ({input_bytes} bytes) -> {} in {secs:.3} s \
             = {rate:.1} MB/s",
            base.display(),
            report.records_before,
            report.records_after
        );
    }
    Ok(json!({
        "dir": base.display().to_string(),
        "fs": fs_name(fs_type(base)?),
        "policy": "default (1 h level for every record: now = last timestamp + 2 h)",
        "mb_per_s": round(median(&rates), 1),
        "secs": reps,
        "result": last,
    }))
}

fn bench_snapshot(
    template: &Path,
    built: &Built,
    base: &Path,
    compacted_first: bool,
    sizes: &Sizes,
) -> Result<Value> {
    let mut rates = Vec::new();
    let mut reps = Vec::new();
    let mut detail = json!(null);
    for _ in 0..sizes.compaction_reps {
        let (_dir, log) = fresh_copy(template, base)?;
        let db = log.database(DB)?;
        if compacted_first {
            db.compact_levels(&Policy::default(), built.last_timestamp + 2 * 3600 * 1000)?;
        }
        let records = db.records();
        let input_bytes: u64 = records.iter().map(|r| r.len).sum();
        let start = Instant::now();
        let result = db.create_snapshot();
        let secs = start.elapsed().as_secs_f64();
        let snapshot = match result {
            Ok(Some(s)) => s,
            Ok(None) => bail!("no snapshot taken"),
            Err(err) => {
                println!(
                    "log bench: snapshot over {} records failed after {secs:.3} s: {err}",
                    records.len()
                );
                return Ok(json!({
                    "dir": base.display().to_string(),
                    "input_records": records.len(),
                    "error": err.to_string(),
                    "failed_after_secs": round(secs, 4),
                }));
            }
        };
        let rate = mb(input_bytes, secs);
        rates.push(rate);
        reps.push(round(secs, 4));
        detail = json!({
            "input_records": records.len(),
            "input_bytes": input_bytes,
            "snapshot_bytes": snapshot.len,
        });
        println!(
            "log bench: snapshot {} ({}): {} records ({input_bytes} bytes) in {secs:.3} s \
             = {rate:.1} MB/s",
            base.display(),
            if compacted_first {
                "compacted"
            } else {
                "uncompacted"
            },
            records.len()
        );
    }
    Ok(json!({
        "dir": base.display().to_string(),
        "fs": fs_name(fs_type(base)?),
        "mb_per_s": round(median(&rates), 1),
        "secs": reps,
        "result": detail,
    }))
}

// ---------------------------------------------------------------------------------------------
// 4. Opening a large log, with and without its index.

fn time_open(dir: &Path, counter: &RebuildCounter, expect_rebuild: bool) -> Result<f64> {
    let before = counter.get();
    let start = Instant::now();
    let log = Log::open(dir)?;
    let secs = start.elapsed().as_secs_f64();
    let rebuilt = counter.get() - before;
    if rebuilt != usize::from(expect_rebuild) {
        bail!(
            "open of {}: {rebuilt} index rebuilds, expected {}",
            dir.display(),
            usize::from(expect_rebuild)
        );
    }
    log.flush_index()?;
    drop(log);
    Ok(secs)
}

fn open_series(
    dir: &Path,
    counter: &RebuildCounter,
    sizes: &Sizes,
    cold: bool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut intact = Vec::new();
    for _ in 0..sizes.open_reps {
        if cold {
            evict(dir)?;
        }
        intact.push(time_open(dir, counter, false)?);
    }
    let mut rebuild = Vec::new();
    for _ in 0..sizes.rebuild_reps {
        fs::remove_dir_all(dir.join("index"))?;
        if cold {
            evict(dir)?;
        }
        rebuild.push(time_open(dir, counter, true)?);
    }
    Ok((intact, rebuild))
}

fn open_summary(label: &str, built: &Built, intact: &[f64], rebuild: &[f64]) -> Value {
    let r = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| round(*x, 4)).collect() };
    println!(
        "log bench: open {label}: with index {:.3} s, rebuild {:.3} s ({:.0} MB/s)",
        median(intact),
        median(rebuild),
        mb(built.ltx_bytes, median(rebuild))
    );
    json!({
        "open_with_index_secs": round(median(intact), 4),
        "open_rebuild_secs": round(median(rebuild), 4),
        "rebuild_mb_per_s": round(mb(built.ltx_bytes, median(rebuild)), 1),
        "reps": { "open_with_index_secs": r(intact), "open_rebuild_secs": r(rebuild) },
    })
}

fn bench_open(tmpfs: &Path, disk: &Path, counter: &RebuildCounter, sizes: &Sizes) -> Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("ltxd-logbench-100k-")
        .tempdir_in(tmpfs)?;
    let start = Instant::now();
    let built = build_log(dir.path(), sizes.rebuild_log, None, 4)?;
    let build_secs = start.elapsed().as_secs_f64();
    println!(
        "log bench: built a {}-transaction log ({} bytes, {} segments) on tmpfs in {build_secs:.1} s",
        built.records, built.ltx_bytes, built.segments
    );
    // The first open after the build: not timed (sled settles its own files).
    time_open(dir.path(), counter, false)?;
    let (intact, rebuild) = open_series(dir.path(), counter, sizes, false)?;
    let on_tmpfs = open_summary("tmpfs", &built, &intact, &rebuild);

    let disk_dir = tempfile::Builder::new()
        .prefix("ltxd-logbench-100k-")
        .tempdir_in(disk)?;
    copy_dir(dir.path(), disk_dir.path())?;
    drop(dir);
    time_open(disk_dir.path(), counter, false)?;
    let (intact, rebuild) = open_series(disk_dir.path(), counter, sizes, false)?;
    let disk_warm = open_summary("disk, warm cache", &built, &intact, &rebuild);
    let (intact, rebuild) = open_series(disk_dir.path(), counter, sizes, true)?;
    let disk_cold = open_summary("disk, cold cache", &built, &intact, &rebuild);
    Ok(json!({
        "records": built.records,
        "ltx_bytes": built.ltx_bytes,
        "segments": built.segments,
        "build_secs_tmpfs": round(build_secs, 2),
        "tmpfs": on_tmpfs,
        "disk_warm_cache": disk_warm,
        "disk_cold_cache": disk_cold,
    }))
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter argument selects sections by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let quick = std::env::var("LOG_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = Sizes::new(quick);

    // Only ltxd's own INFO events reach the counter, and no `log` bridge is installed: sled's
    // debug and trace logging stays off, as in a server that logs at INFO.
    let counter = RebuildCounter::default();
    let only_ltxd = Targets::new().with_target("ltxd", tracing::Level::INFO);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(counter.clone().with_filter(only_ltxd)),
    )?;

    let tmpfs =
        PathBuf::from(std::env::var("LOG_BENCH_TMPFS_DIR").unwrap_or_else(|_| "/dev/shm".into()));
    if fs_type(&tmpfs)? != TMPFS_MAGIC {
        bail!("{} is not tmpfs; set LOG_BENCH_TMPFS_DIR", tmpfs.display());
    }
    let disk_base = std::env::var_os("LOG_BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&disk_base)?;
    if fs_type(&disk_base)? == TMPFS_MAGIC {
        bail!(
            "{} is tmpfs: set LOG_BENCH_DISK_DIR to a directory on the real disk",
            disk_base.display()
        );
    }
    // Everything on the disk goes in one directory, removed at the end (or on an error).
    let disk_dir = tempfile::Builder::new()
        .prefix("ltxd-logbench-")
        .tempdir_in(&disk_base)?;
    let disk = disk_dir.path();
    println!(
        "log bench: disk {} ({}), tmpfs {}{}",
        disk.display(),
        fs_name(fs_type(disk)?),
        tmpfs.display(),
        if quick { ", QUICK sizes" } else { "" }
    );

    let mut out = serde_json::Map::new();
    out.insert(
        "workload".into(),
        json!({
            "page_size": 4096,
            "format": "v1, uncompressed",
            "initial_pages": INITIAL_PAGES,
            "transaction": format!("SyntheticDatabase::next_transaction({MAX_PAGES})"),
            "quick": quick,
        }),
    );

    if run("append") {
        out.insert(
            "appends".into(),
            json!({
                "disk": bench_appends(disk, "disk", &sizes)?,
                "tmpfs": bench_appends(&tmpfs, "tmpfs", &sizes)?,
            }),
        );
    }

    if run("cursor") || run("compaction") || run("snapshot") {
        // The main log: `cursor_log` transactions in 4 sealed segments.
        let template = tempfile::Builder::new()
            .prefix("ltxd-logbench-main-")
            .tempdir_in(&tmpfs)?;
        let per_segment = sizes.cursor_log.div_ceil(sizes.sealed_segments);
        let built = build_log(template.path(), sizes.cursor_log, Some(per_segment), 2)?;
        println!(
            "log bench: built a {}-transaction log ({} bytes, {} sealed segments)",
            built.records, built.ltx_bytes, built.segments
        );
        if run("cursor") {
            out.insert(
                "cursor".into(),
                bench_cursor(template.path(), &built, &sizes)?,
            );
        }
        if run("compaction") {
            // The same transactions in 5 times as many segments: 5 times smaller merge groups.
            let small_groups = tempfile::Builder::new()
                .prefix("ltxd-logbench-small-")
                .tempdir_in(&tmpfs)?;
            let built_small = build_log(
                small_groups.path(),
                sizes.cursor_log,
                Some(per_segment / 5),
                2,
            )?;
            out.insert(
                "compaction".into(),
                json!({
                    "records": built.records,
                    "ltx_bytes": built.ltx_bytes,
                    "sealed_segments": built.segments,
                    "records_per_segment": per_segment,
                    "tmpfs": bench_compaction(template.path(), &built, &tmpfs, &sizes)?,
                    "disk": bench_compaction(template.path(), &built, disk, &sizes)?,
                    "tmpfs_smaller_groups": {
                        "sealed_segments": built_small.segments,
                        "records_per_segment": per_segment / 5,
                        "result": bench_compaction(
                            small_groups.path(), &built_small, &tmpfs, &sizes)?,
                    },
                }),
            );
        }
        if run("snapshot") {
            // Half the log: `create_snapshot` opens a file per input record at once (see the
            // notes in the JSON), so the full log can exceed the open-file limit.
            let half = tempfile::Builder::new()
                .prefix("ltxd-logbench-half-")
                .tempdir_in(&tmpfs)?;
            let n = sizes.cursor_log / 2;
            let built_half = build_log(half.path(), n, Some(n.div_ceil(2)), 2)?;
            out.insert(
                "snapshot".into(),
                json!({
                    "open_files_limit": open_files_limit(),
                    "uncompacted_tmpfs":
                        bench_snapshot(template.path(), &built, &tmpfs, false, &sizes)?,
                    "compacted_tmpfs":
                        bench_snapshot(template.path(), &built, &tmpfs, true, &sizes)?,
                    "uncompacted_half_tmpfs":
                        bench_snapshot(half.path(), &built_half, &tmpfs, false, &sizes)?,
                    "uncompacted_half_disk":
                        bench_snapshot(half.path(), &built_half, disk, false, &sizes)?,
                }),
            );
        }
    }

    if run("open") {
        out.insert("open".into(), bench_open(&tmpfs, disk, &counter, &sizes)?);
    }

    drop(disk_dir);
    println!("LOGBENCH-JSON {}", Value::Object(out));
    Ok(())
}
