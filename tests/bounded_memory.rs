//! The decoder streams: `ltxd ltx verify` reads a large file from a pipe with a peak memory that
//! does not grow with the file. Set `LTXD_LONG=1` to stream 10 GiB instead of the default size.
//! And a primary's memory stays bounded while replicas subscribe and never read, and on both
//! sides while a new replica bootstraps a large database.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ltxd::ltx::{Encoder, Format, Header, PageNo, PageSize, TxId, FLAG_COMPRESS_LZ4};

const PAGE: usize = 4096;

/// Streams a snapshot of `pages` pages in `format` into `ltxd ltx verify`, and returns the
/// verifier's peak resident set in KiB.
///
/// The peak is `VmHWM`, sampled every 2 ms until the verifier exits, not the `ru_maxrss` that
/// `wait4` reports: Linux counts in the latter the peak of the memory the child was spawned
/// from, which is this test process, whose other tests run at the same time.
fn peak_rss_kib_verifying(format: Format, flags: u32, pages: u32) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args([
            "ltx",
            "verify",
            "--format",
            &format.to_string(),
            "/dev/stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sampler = PeakSampler::start(child.id());
    let stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
    let page_size = PageSize::new(PAGE as u32).unwrap();
    let mut header = Header::new(page_size, pages, TxId(1), TxId(1));
    header.flags = flags;
    let mut encoder = Encoder::new(stdin, format, header).unwrap();
    let mut data = vec![0u8; PAGE];
    for pgno in (1..=pages).filter(|&p| PageNo(p) != page_size.lock_page()) {
        data[..4].copy_from_slice(&pgno.to_be_bytes());
        data[PAGE - 4..].copy_from_slice(&pgno.wrapping_mul(2_654_435_761).to_le_bytes());
        encoder.encode_page(PageNo(pgno), &data).unwrap();
    }
    let (mut stdin, _) = encoder.finish_snapshot().unwrap();
    stdin.flush().unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "verify failed: {status}");
    sampler.stop()
}

/// Samples a process's `VmHWM` until it exits, once it runs `ltxd` (before its exec the child
/// shares this process's memory).
struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pid: u32) -> PeakSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let is_ltxd = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "ltxd");
                if is_ltxd {
                    if let Some(hwm) = status_field(pid, "VmHWM:") {
                        peak = peak.max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling (after the process exited) and returns the highest `VmHWM` seen, in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let peak = self.thread.join().unwrap();
        assert!(peak > 0, "the verifier's memory was never sampled");
        peak
    }
}

/// A field of `/proc/<pid>/status` in KiB, or `None` once the process is gone or a zombie.
fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn verify_memory_does_not_grow_with_file_size() {
    let long = std::env::var_os("LTXD_LONG").is_some();
    let large_pages: u32 = if long { 10 << 18 } else { 1 << 16 }; // 10 GiB or 256 MiB of pages
    for (format, flags) in [
        (Format::V1, 0),
        (Format::V1, FLAG_COMPRESS_LZ4),
        (Format::V3, 0),
    ] {
        let small = peak_rss_kib_verifying(format, flags, 1 << 10);
        let large = peak_rss_kib_verifying(format, flags, large_pages);
        eprintln!(
            "{format} flags {flags}: peak RSS {small} KiB at 4 MiB, {large} KiB at {} MiB",
            large_pages / 256
        );
        assert!(
            large < small + 8 * 1024,
            "{format}: {large} KiB vs {small} KiB"
        );
        assert!(large < 64 * 1024, "{format}: peak RSS {large} KiB");
    }
}

/// A process's `VmRSS`, `VmHWM` (both KiB) and thread count, from `/proc/<pid>/status`.
fn memory_of(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

/// A `/stream` subscription over HTTP/1.1 with an empty position map (so the primary sends a
/// snapshot of every database), whose response is never read.
fn unread_subscription(addr: &str) -> std::net::TcpStream {
    let body = ltxd_protocol::wire::encode_positions(&Default::default());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /stream HTTP/1.1\r\nHost: primary\r\nLitefs-Id: {:016X}\r\nContent-Length: {}\r\n\r\n",
        0x1000 + stream.local_addr().unwrap().port() as u64,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    stream
}

/// 150 replicas that subscribe and never read keep a primary with a 20 MB database within
/// [`SUBSCRIBER_RSS_BOUND_KIB`] of resident memory, without a thread each, and the memory goes
/// back once they are gone (the numbers are in docs/performance.md).
#[test]
fn unread_subscriptions_keep_the_primary_memory_bounded() {
    let mut primary = common::Node::with_lease("candidate: true");
    primary.edit_config(|text| text.replace("http:\n", "http:\n  max-streams-per-peer: 200\n"));
    primary.stop();
    primary.start();
    primary.sqlite(
        "big.db",
        "CREATE TABLE t (x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
         WHERE i < 20000) INSERT INTO t SELECT randomblob(1000) FROM n;",
    );
    let size = std::fs::metadata(primary.backing_db("big.db"))
        .unwrap()
        .len();
    assert!(size >= 20_000_000, "{size}");
    let pid = primary.pid().unwrap();
    let (before, _, threads_before) = memory_of(pid);

    let addr = primary.url.strip_prefix("http://").unwrap().to_string();
    let subscribers: Vec<_> = (0..150).map(|_| unread_subscription(&addr)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while primary.daemon_log().matches("replica subscribed").count() < 150 {
        assert!(Instant::now() < deadline, "{}", primary.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let every stream fill what it may hold: the socket buffers, hyper's and its own.
    let mut rss = memory_of(pid).0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = memory_of(pid).0;
        if now <= rss + 1024 {
            break;
        }
        rss = now;
    }
    let (during, peak, threads) = memory_of(pid);
    eprintln!(
        "RSS before {before} KiB, with 150 unread subscriptions {during} KiB (peak {peak} KiB), \
         threads {threads_before} -> {threads}"
    );
    assert!(
        peak <= SUBSCRIBER_RSS_BOUND_KIB,
        "peak RSS {peak} KiB is over {SUBSCRIBER_RSS_BOUND_KIB} KiB"
    );
    // Not a thread per subscription (a6e34d7 had 167 threads here). Runs have added 8 and 36
    // threads (the log's reads, at most 8 at once, and the blocking pool's threads, which stay
    // idle for 10 s; why one run kept 36 was not examined).
    assert!(
        threads < threads_before + 64,
        "{threads} threads for 150 subscriptions (from {threads_before})"
    );

    drop(subscribers);
    let deadline = Instant::now() + Duration::from_secs(60);
    while primary.daemon_log().matches("stream ended").count() < 150 {
        assert!(Instant::now() < deadline, "{}", primary.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (after, _, _) = memory_of(pid);
        if after <= before + RSS_LEFT_BEHIND_KIB || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("RSS after they closed: {after} KiB");
    assert!(
        after <= before + RSS_LEFT_BEHIND_KIB,
        "RSS {after} KiB after the subscriptions closed, from {before} KiB before"
    );
}

/// The resident memory a primary with a 20 MB database may reach while 150 subscriptions never
/// read (the goal: 128 MB).
const SUBSCRIBER_RSS_BOUND_KIB: u64 = 128 * 1024;
/// How much more resident memory than before they came the primary may keep once they are gone.
const RSS_LEFT_BEHIND_KIB: u64 = 16 * 1024;

/// The bound on each side's peak resident memory while a new replica bootstraps a large
/// database (the goal: 64 MB).
const BOOTSTRAP_RSS_BOUND_KIB: u64 = 64_000_000 / 1024;

/// Makes a SQLite database of about `mib` MiB at `path` with the sqlite3 CLI: one table of
/// 4000-byte random blobs, a page each.
fn make_database(path: &std::path::Path, mib: u64) {
    let rows = mib * 256;
    let sql = format!(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
         INSERT INTO t (x) SELECT randomblob(4000) FROM n;"
    );
    let status = Command::new("sqlite3")
        .arg(path)
        .arg(sql)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A new replica bootstraps a 256 MiB database (`LTXD_LONG=1`: 2 GiB) from its primary over
/// HTTP, and neither process's peak resident memory (VmHWM) passes
/// [`BOOTSTRAP_RSS_BOUND_KIB`]: the primary sends its snapshot from disk, and the replica
/// spools it to disk and applies it from there. The replica's log then restores the database
/// byte for byte.
#[test]
fn a_new_replica_bootstraps_a_large_database_in_bounded_memory() {
    let mib = if std::env::var_os("LTXD_LONG").is_some() {
        2048
    } else {
        256
    };
    let db = "big.db";
    let mut primary = common::Node::primary();
    primary.stop();
    // The database enters the primary's log offline, as one snapshot record, so that setting
    // it up does not count in the daemon's peak memory.
    let seed = primary.root.path().join("seed.db");
    let seed_ltx = primary.root.path().join("seed.ltx");
    make_database(&seed, mib);
    primary.ltxd(&[
        "ltx",
        "encode-db",
        "-o",
        seed_ltx.to_str().unwrap(),
        seed.to_str().unwrap(),
    ]);
    primary.ltxd(&[
        "log",
        "import",
        "--data-dir",
        primary.data.to_str().unwrap(),
        "--db",
        db,
        seed_ltx.to_str().unwrap(),
    ]);
    std::fs::remove_file(&seed).unwrap();
    std::fs::remove_file(&seed_ltx).unwrap();
    primary.start();
    // Commits after the snapshot record make the primary compact a new snapshot for the
    // replica.
    for i in 0..3 {
        primary.sqlite(
            db,
            &format!("INSERT INTO t (x) VALUES (randomblob({i} + 100));"),
        );
    }

    let replica = common::Node::replica_of(&primary);
    let want = common::pos(&primary, db);
    let deadline = Instant::now() + Duration::from_secs(600);
    while common::pos(&replica, db) != want {
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up:\n{}",
            replica.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new database enters the replica's log before its pages are written, and the mount
    // shows it once they are: wait until it reads as the primary's.
    let count = "SELECT count(*), sum(length(x)) FROM t;";
    let want = primary.sqlite(db, count);
    common::wait_until(
        Duration::from_secs(600),
        "the replica's database reads as the primary's",
        &[&replica],
        || replica.sqlite_result(db, count).as_ref() == Ok(&want),
    );
    let (_, primary_peak, _) = memory_of(primary.pid().unwrap());
    let (_, replica_peak, _) = memory_of(replica.pid().unwrap());
    eprintln!(
        "{mib} MiB database: peak RSS primary {primary_peak} KiB, replica {replica_peak} KiB"
    );
    assert!(
        primary_peak <= BOOTSTRAP_RSS_BOUND_KIB,
        "primary peak RSS {primary_peak} KiB"
    );
    assert!(
        replica_peak <= BOOTSTRAP_RSS_BOUND_KIB,
        "replica peak RSS {replica_peak} KiB"
    );
    let mut replica = replica;
    replica.stop();
    replica.check_log_matches_database(db);
    assert_eq!(
        std::fs::read_dir(replica.data.join("spool"))
            .unwrap()
            .count(),
        0,
        "spool files left behind"
    );
}
