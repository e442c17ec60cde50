//! Continuous backup to a real S3 server (moto on 127.0.0.1): every committed TXID reaches the
//! bucket, restores from it equal restores from the log, an unreachable bucket loses nothing, a
//! killed primary and a failover leave one chain, and an empty replica starts from the bucket.
//!
//! Every wait is bounded and prints the daemons' and the server's logs when it runs out.

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ltxd, Node};
use moto::Moto;

const DB: &str = "app.db";

/// Waits up to `timeout` for `done`, printing `logs()` if it never is.
fn wait_for(
    timeout: Duration,
    what: &str,
    logs: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A primary on a static lease that backs up to `moto` under `prefix`.
fn primary_with_backup(moto: &Moto, prefix: &str) -> Node {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        &url,
        &format!(
            "  type: static\n  hostname: primary-host\n  advertise-url: {url}\n  reconnect-delay: 50ms\n  candidate: true\n"
        ),
        &moto.backup_config(prefix),
        None,
    )
}

/// The node's head TXID of `db`, from `ltxd status --json`.
fn head(node: &Node) -> u64 {
    let out = ltxd(&["status", "--json", "--url", &node.url]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let txid = info["databases"][DB]["txid"].as_str().unwrap_or("0");
    u64::from_str_radix(txid, 16).unwrap_or(0)
}

/// The last TXID of the bucket's chain from TXID 1 (0 when there is none).
fn bucket_tip(moto: &Moto, prefix: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(["backup", "list", "--from", &moto.url(prefix), "--db", DB])
        .args(["--endpoint", &moto.endpoint])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{DB}: TXIDs 1 to ")))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// The restorable ranges `ltxd backup list` prints.
fn restorable(moto: &Moto, prefix: &str) -> Vec<String> {
    ltxd(&[
        "backup",
        "list",
        "--from",
        &moto.url(prefix),
        "--endpoint",
        &moto.endpoint,
    ])
    .lines()
    .filter(|l| l.contains("restorable"))
    .map(str::to_string)
    .collect()
}

fn wait_until_backed_up(moto: &Moto, prefix: &str, nodes: &[&Node], txid: u64) {
    // Generous: on a loaded 2-core machine one run waited more than 30 s here (not explained:
    // the daemon logged nothing after resuming from the bucket).
    wait_for(
        Duration::from_secs(90),
        &format!("the bucket holds TXID {txid}"),
        || {
            let logs: Vec<String> = nodes.iter().map(|n| n.daemon_log()).collect();
            format!("{}\n--- moto:\n{}", logs.join("\n-----\n"), moto.logs())
        },
        || bucket_tip(moto, prefix) >= txid,
    );
}

fn write_rows(node: &Node, from: usize, count: usize) {
    for i in from..from + count {
        node.sqlite(
            DB,
            &format!(
                "INSERT INTO t(v) VALUES ('row {i} {}');",
                "x".repeat(i % 500)
            ),
        );
    }
}

fn create_table(node: &Node) {
    node.sqlite(
        DB,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
    );
}

/// A small deterministic generator, so that a failure can be replayed.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn every_txid_reaches_the_bucket_and_restores_equal_the_logs() {
    let Some(moto) = Moto::start("backups") else {
        return;
    };
    let prefix = "every/txid";
    let mut primary = primary_with_backup(&moto, prefix);
    create_table(&primary);
    write_rows(&primary, 0, 40);
    let head = head(&primary);
    assert!(head >= 41, "head {head}");
    wait_until_backed_up(&moto, prefix, &[&primary], head);
    wait_for(
        Duration::from_secs(10),
        "ltxd status shows the backup caught up",
        || primary.daemon_log(),
        || {
            let out = ltxd(&["status", "--json", "--url", &primary.url]);
            let info: serde_json::Value = serde_json::from_str(&out).unwrap();
            info["databases"][DB]["backupTxid"] == head && info["databases"][DB]["backupLagMs"] == 0
        },
    );
    let table = ltxd(&["status", "--url", &primary.url]);
    assert!(
        table.contains(&format!("{head:016x} (0ms behind)")),
        "{table}"
    );
    primary.stop();

    let from = moto.url(prefix);
    let data = primary.data.to_str().unwrap().to_string();
    let out = primary.root.path().to_path_buf();
    let verify = ltxd(&[
        "backup",
        "verify",
        "--from",
        &from,
        "--endpoint",
        &moto.endpoint,
    ]);
    assert!(verify.contains(&format!("TXID 1 to {head}")), "{verify}");

    // Random TXIDs, and the commit times of random records, from the bucket and from the log.
    let list: serde_json::Value = serde_json::from_str(&ltxd(&[
        "log",
        "list",
        "--data-dir",
        &data,
        "--db",
        DB,
        "--json",
    ]))
    .unwrap();
    let records = list.to_string();
    let mut seed = 16;
    let mut targets: Vec<Vec<String>> = (0..6)
        .map(|_| vec!["--txid".into(), (1 + lcg(&mut seed) % head).to_string()])
        .collect();
    targets.push(vec!["--txid".into(), head.to_string()]);
    let timestamps = timestamps_in(&list);
    assert!(!timestamps.is_empty(), "no timestamps in {records}");
    for _ in 0..4 {
        let ms = timestamps[lcg(&mut seed) as usize % timestamps.len()];
        targets.push(vec!["--timestamp".into(), rfc3339(ms)]);
    }
    for (i, target) in targets.iter().enumerate() {
        let a = out.join(format!("bucket-{i}.db"));
        let b = out.join(format!("log-{i}.db"));
        let mut args = vec![
            "restore",
            "--from",
            &from,
            "--endpoint",
            &moto.endpoint,
            "--db",
            DB,
        ];
        args.extend(target.iter().map(String::as_str));
        let said_a = ltxd(&[&args[..], &["-o", a.to_str().unwrap()]].concat());
        let mut args = vec!["restore", "--data-dir", &data, "--db", DB];
        args.extend(target.iter().map(String::as_str));
        let said_b = ltxd(&[&args[..], &["-o", b.to_str().unwrap()]].concat());
        assert_eq!(
            said_a.split(" to ").next(),
            said_b.split(" to ").next(),
            "{target:?}"
        );
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{target:?}: the bucket's restore differs from the log's"
        );
    }
}

/// Every `timestamp` field (ms) in `ltxd log list --json` output.
fn timestamps_in(value: &serde_json::Value) -> Vec<i64> {
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "timestamp" {
                    if let Some(ms) = v.as_i64() {
                        out.push(ms);
                    } else if let Some(s) = v.as_str() {
                        if let Ok(t) = time::OffsetDateTime::parse(
                            s,
                            &time::format_description::well_known::Rfc3339,
                        ) {
                            out.push((t.unix_timestamp_nanos() / 1_000_000) as i64);
                        }
                    }
                } else {
                    out.extend(timestamps_in(v));
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| out.extend(timestamps_in(v))),
        _ => {}
    }
    out
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Drops packets to a port on 127.0.0.1 until dropped.
struct Blackhole {
    port: u16,
}

impl Blackhole {
    fn rule(port: u16, op: &str) -> std::process::Output {
        Command::new("iptables")
            .args([
                op,
                "INPUT",
                "-i",
                "lo",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ])
            .output()
            .unwrap()
    }

    fn new(port: u16) -> Blackhole {
        let out = Blackhole::rule(port, "-I");
        assert!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Blackhole { port }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Blackhole::rule(self.port, "-D");
    }
}

#[test]
fn an_unreachable_bucket_for_ten_seconds_loses_nothing() {
    let Some(moto) = Moto::start("backups") else {
        return;
    };
    let prefix = "outage";
    let mut primary = primary_with_backup(&moto, prefix);
    create_table(&primary);
    write_rows(&primary, 0, 5);
    wait_until_backed_up(&moto, prefix, &[&primary], head(&primary));
    {
        let _outage = Blackhole::new(moto.port);
        let start = Instant::now();
        let mut i = 5;
        while start.elapsed() < Duration::from_secs(10) {
            write_rows(&primary, i, 1);
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(i > 20, "only {i} commits in 10 s of outage");
    }
    write_rows(&primary, 1000, 3);
    let head = head(&primary);
    wait_until_backed_up(&moto, prefix, &[&primary], head);
    primary.stop();
    let ranges = restorable(&moto, prefix);
    assert_eq!(ranges, [format!("{DB}: TXIDs 1 to {head} restorable")]);
    let restored = primary.root.path().join("restored.db");
    ltxd(&[
        "restore",
        "--from",
        &moto.url(prefix),
        "--endpoint",
        &moto.endpoint,
        "--db",
        DB,
        "-o",
        restored.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&restored).unwrap() == std::fs::read(primary.backing_db(DB)).unwrap(),
        "the restore differs from the database"
    );
}

#[test]
fn an_empty_replica_starts_from_the_bucket_then_follows() {
    let Some(moto) = Moto::start("backups") else {
        return;
    };
    let prefix = "bootstrap";
    let primary = primary_with_backup(&moto, prefix);
    create_table(&primary);
    write_rows(&primary, 0, 20);
    let at = head(&primary);
    wait_until_backed_up(&moto, prefix, &[&primary], at);
    let port = common::free_port();
    let replica = replica_with_backup(&moto, prefix, &primary, port);
    write_rows(&primary, 20, 5);
    wait_for_the_primary_s_rows(&primary, &replica);
    let log = replica.daemon_log();
    assert!(log.contains("restored from the backup"), "{log}");
    assert!(
        !log.contains("snapshot applied"),
        "the primary sent a snapshot:\n{log}"
    );
}

/// A static replica of `primary` on `port`, with the same backup configured.
fn replica_with_backup(moto: &Moto, prefix: &str, primary: &Node, port: u16) -> Node {
    Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        &primary.advertise_url,
        &format!(
            "  type: static\n  hostname: primary-host\n  advertise-url: {}\n  reconnect-delay: 50ms\n  candidate: false\n",
            primary.advertise_url
        ),
        &moto.backup_config(prefix),
        None,
    )
}

/// Waits until `replica` holds as many rows of `t` as `primary`, with the same highest id.
fn wait_for_the_primary_s_rows(primary: &Node, replica: &Node) {
    let want = primary.sqlite(DB, "SELECT count(*), max(id) FROM t;");
    wait_for(
        Duration::from_secs(20),
        "the replica has the primary's rows",
        || format!("{}\n-----\n{}", primary.daemon_log(), replica.daemon_log()),
        || {
            replica
                .sqlite_result(DB, "SELECT count(*), max(id) FROM t;")
                .ok()
                .as_ref()
                == Some(&want)
        },
    );
}

#[test]
fn a_killed_primary_and_a_failover_leave_one_chain() {
    let Some(moto) = Moto::start("backups") else {
        return;
    };
    let prefix = "failover";
    let mut primary = primary_with_backup(&moto, prefix);
    let port = common::free_port();
    let own_url = format!("http://127.0.0.1:{port}");
    let mut replica = replica_with_backup(&moto, prefix, &primary, port);
    create_table(&primary);
    write_rows(&primary, 0, 30);
    wait_for_the_primary_s_rows(&primary, &replica);
    // SIGKILL while the last second's records are still being uploaded.
    primary.kill();
    // Fail over by hand (a static lease): the replica becomes the primary.
    replica.stop();
    let old = primary.advertise_url.clone();
    replica.edit_config(|text| {
        text.replace("candidate: false", "candidate: true")
            .replace(&old, &own_url)
    });
    replica.start();
    wait_for(
        Duration::from_secs(20),
        "the new primary takes writes",
        || replica.daemon_log(),
        || {
            replica
                .sqlite_result(DB, "INSERT INTO t(v) VALUES ('after');")
                .is_ok()
        },
    );
    write_rows(&replica, 100, 10);
    let head = head(&replica);
    wait_until_backed_up(&moto, prefix, &[&replica], head);
    assert_eq!(
        restorable(&moto, prefix),
        [format!("{DB}: TXIDs 1 to {head} restorable")]
    );
    let verify = ltxd(&[
        "backup",
        "verify",
        "--from",
        &moto.url(prefix),
        "--endpoint",
        &moto.endpoint,
    ]);
    assert!(verify.contains(&format!("TXID 1 to {head}")), "{verify}");
}
