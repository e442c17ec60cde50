//! The HTTP API under hostile and careless clients: connections that never finish a request
//! header are closed, idle connections never take the descriptors the mount needs, and running
//! out of descriptors neither floods the log nor stops the node. The limits are set short
//! (`http.header-read-timeout: 1s`) so that the tests run fast; they check what happens, not how
//! long it takes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, pos, wait_until, Launcher, Node};

/// A primary on a static lease whose `http:` section adds `http_extra`, started by `launcher`.
fn primary(http_extra: &str, launcher: Option<Launcher>) -> Node {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let lease = format!(
        "  type: static\n  hostname: primary-host\n  advertise-url: {url}\n  reconnect-delay: 50ms\n  candidate: true\n"
    );
    Node::configured(
        &format!("127.0.0.1:{port}"),
        http_extra,
        &url,
        &lease,
        "",
        launcher,
    )
}

/// A launcher that starts the daemon with a soft and hard descriptor limit of `limit`, as
/// `ulimit -n` would.
fn with_descriptor_limit(limit: u64) -> Launcher {
    Box::new(move |mut command: Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn()
    })
}

/// `count` connections to `node`'s HTTP port, each having sent `sent(i)` and nothing more.
fn connections(node: &Node, count: usize, sent: impl Fn(usize) -> &'static [u8]) -> Vec<TcpStream> {
    let addr = node.url.strip_prefix("http://").unwrap();
    (0..count)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(sent(i)).unwrap();
            stream
        })
        .collect()
}

/// Reads each connection until the server closes it (end of file or a reset). A connection
/// still open after `patience` fails the test.
fn assert_all_closed(streams: Vec<TcpStream>, patience: Duration, node: &Node) {
    let deadline = Instant::now() + patience;
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "connection {i} is still open after {patience:?}:\n{}",
                        node.daemon_log()
                    )
                }
                Err(_) => break,
            }
        }
    }
}

/// Half a request header over HTTP/1.1, the first bytes of HTTP/2's preface, or nothing.
fn slow_header(i: usize) -> &'static [u8] {
    match i % 3 {
        0 => b"POST /stream HTTP/1.1\r\nHost: primary\r\nContent-Len",
        1 => b"PRI * HTTP/2.0\r\n",
        _ => b"",
    }
}

#[test]
fn slow_header_connections_are_closed_while_a_replica_streams_and_the_mount_works() {
    let primary = primary("  header-read-timeout: 1s\n  idle-timeout: 2s\n", None);
    let replica = Node::replica_of(&primary);
    primary.sqlite(
        "app.db",
        "PRAGMA journal_mode=wal; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (0);",
    );
    wait_until(
        Duration::from_secs(30),
        "the replica follows",
        &[&primary, &replica],
        || {
            !pos(&replica, "app.db").is_empty()
                && pos(&replica, "app.db") == pos(&primary, "app.db")
        },
    );

    let slow = connections(&primary, 1000, slow_header);
    for i in 1..=20 {
        primary.sqlite("app.db", &format!("INSERT INTO t VALUES ({i});"));
    }
    assert_eq!(
        primary.sqlite("app.db", "SELECT count(*) FROM t;").trim(),
        "21"
    );
    wait_until(
        Duration::from_secs(30),
        "the replica has every row while 1,000 slow clients are connected",
        &[&primary, &replica],
        || pos(&replica, "app.db") == pos(&primary, "app.db"),
    );
    assert_eq!(
        replica.sqlite("app.db", "SELECT count(*) FROM t;").trim(),
        "21"
    );

    // Far longer than the 1 s the settings allow: only a server that never closes them fails.
    assert_all_closed(slow, Duration::from_secs(60), &primary);

    // The replica's stream, a request in flight all along, was never taken for an idle client.
    primary.sqlite("app.db", "INSERT INTO t VALUES (21);");
    wait_until(
        Duration::from_secs(30),
        "the replica still follows after the slow clients are gone",
        &[&primary, &replica],
        || pos(&replica, "app.db") == pos(&primary, "app.db"),
    );
    assert_eq!(
        replica
            .daemon_log()
            .matches("replication stream failed")
            .count(),
        0,
        "{}",
        replica.daemon_log()
    );
}

/// Lines of `log` about accepting connections: failures and the connection limit.
fn accept_lines(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("accept failed") || line.contains("connection limit"))
        .count()
}

/// Opens 300 connections that send nothing to a daemon limited to 256 descriptors, checks (when
/// `mount_meanwhile`) that SQLite keeps working through its mount while they are open, that they
/// are all closed in the end and that SQLite works then, and returns the daemon's log.
fn three_hundred_idle_connections(http_extra: &str, mount_meanwhile: bool) -> String {
    let primary = primary(http_extra, Some(with_descriptor_limit(256)));
    primary.sqlite("app.db", "CREATE TABLE t (x INTEGER);");
    let idle = connections(&primary, 300, |_| b"");
    if mount_meanwhile {
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..10 {
            primary.sqlite("app.db", &format!("INSERT INTO t VALUES ({i});"));
        }
        assert_eq!(
            primary.sqlite("app.db", "SELECT count(*) FROM t;").trim(),
            "10"
        );
    }
    assert_all_closed(idle, Duration::from_secs(120), &primary);
    primary.sqlite("app.db", "INSERT INTO t VALUES (10);");
    let info = primary.ltxd(&["status", "--json", "--url", &primary.url]);
    assert!(info.contains("\"isPrimary\": true"), "{info}");
    primary.daemon_log()
}

#[test]
fn idle_connections_under_a_low_descriptor_limit_leave_descriptors_for_the_mount() {
    // The default connection cap is half the descriptor limit: 128 of the 300 are served at a
    // time, the rest wait in the backlog, and the mount keeps its descriptors.
    let log = three_hundred_idle_connections("  header-read-timeout: 1s\n", true);
    let lines = accept_lines(&log);
    assert!((1..=10).contains(&lines), "{lines} lines:\n{log}");
    assert!(!log.contains("accept failed"), "{log}");
}

#[test]
fn running_out_of_descriptors_is_logged_a_bounded_number_of_times() {
    // A cap above the descriptor limit: accept fails with EMFILE until connections close (and
    // the mount cannot open files meanwhile: that is what the default cap prevents). The accept
    // loop backs off and logs one line per 10 s, instead of millions, and the node recovers.
    // The header-read timeout is long enough that the descriptors run out even on a loaded
    // machine, where accepting 300 connections can take longer than a second.
    let log = three_hundred_idle_connections(
        "  header-read-timeout: 5s\n  max-connections: 1000\n",
        false,
    );
    let failures = log.matches("accept failed").count();
    assert!((1..=10).contains(&failures), "{failures} lines:\n{log}");
}
