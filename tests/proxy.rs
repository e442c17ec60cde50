//! The proxy with a real web application on every node (`tests/proxy/app.py`, which keeps items
//! in SQLite on its node's mount): writes sent to a replica's proxy are stored on the primary,
//! reads carrying the returned `__txid` cookie see them every time, passthrough paths never
//! wait, a write during `ltxd promote` lands once, and a dead application or primary gives 502
//! or 503. Then the same between nodes over HTTPS with client certificates.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::leases::Consul;
use common::{free_port, Node};

const DB: &str = "app.db";

/// The test application on one node, killed on drop.
struct App {
    child: Child,
}

impl App {
    fn start(port: u16, mnt: &Path) -> App {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/app.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(mnt.join(DB))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the test application");
        let app = App { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(&format!("127.0.0.1:{port}"), "GET", "/ping", None, "").is_err() {
            assert!(Instant::now() < deadline, "the application did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer from the proxy.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `__txid=...` pair of the `Set-Cookie` header, to send back as a `Cookie`.
    fn cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        Some(set.split(';').next()?.to_string())
    }
}

/// One HTTP/1.1 request on a new connection.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: app.test\r\n{cookie}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The `proxy:` section in front of the application at `app_port`, with more lines `extra`.
fn proxy_section(proxy_port: u16, app_port: u16, extra: &str) -> String {
    format!(
        "proxy:\n  addr: 127.0.0.1:{proxy_port}\n  target: 127.0.0.1:{app_port}\n  db: {DB}\n  passthrough: [\"/static/*\"]\n  primary-redirect-timeout: 2s\n{extra}"
    )
}

/// More lines for a node's `http:` and `proxy:` sections.
#[derive(Clone, Copy, Default)]
struct Extra<'a> {
    http: &'a str,
    proxy: &'a str,
}

/// A node, its application and its proxy.
struct Site {
    app: App,
    proxy: String,
    // Dropped after the application, which has files open in the mount.
    node: Node,
}

impl Site {
    /// A node on a static lease advertising `advertise_url` (its own on the primary), with
    /// `extra` lines in its `http:` and `proxy:` sections.
    fn start(http_port: u16, advertise_url: &str, candidate: bool, extra: Extra<'_>) -> Site {
        let lease = format!(
            "  type: static\n  hostname: primary-host\n  advertise-url: {advertise_url}\n  reconnect-delay: 50ms\n  candidate: {candidate}\n"
        );
        Site::with_lease(http_port, advertise_url, &lease, extra)
    }

    /// A node with the `lease:` section `lease`.
    fn with_lease(http_port: u16, advertise_url: &str, lease: &str, extra: Extra<'_>) -> Site {
        let (proxy_port, app_port) = (free_port(), free_port());
        let node = Node::configured(
            &format!("127.0.0.1:{http_port}"),
            extra.http,
            advertise_url,
            lease,
            &proxy_section(proxy_port, app_port, extra.proxy),
            None,
        );
        let app = App::start(app_port, &node.mnt);
        Site {
            app,
            proxy: format!("127.0.0.1:{proxy_port}"),
            node,
        }
    }

    fn post(&self, value: &str) -> Answer {
        request(&self.proxy, "POST", "/items", None, value).unwrap()
    }

    fn count(&self, value: &str, cookie: Option<&str>) -> Answer {
        request(&self.proxy, "GET", &format!("/items/{value}"), cookie, "").unwrap()
    }
}

/// A primary and a replica over `scheme` with `http_extra` in both nodes' `http:` sections.
fn pair(scheme: &str, http_extra: &str) -> (Site, Site) {
    pair_with(
        scheme,
        Extra {
            http: http_extra,
            proxy: "",
        },
    )
}

/// [`pair`], with `extra` in both nodes' sections.
fn pair_with(scheme: &str, extra: Extra<'_>) -> (Site, Site) {
    let port = free_port();
    let url = format!("{scheme}://127.0.0.1:{port}");
    let primary = Site::start(port, &url, true, extra);
    let replica = Site::start(free_port(), &url, false, extra);
    (primary, replica)
}

/// `ltxd status --json` of a node.
fn status(node: &Node) -> serde_json::Value {
    serde_json::from_str(&node.ltxd(&["status", "--json", "--url", &node.url])).unwrap()
}

/// Writes through the replica's proxy, each read back through it with the returned cookie.
fn read_your_writes(primary: &Site, replica: &Site, tries: usize) {
    let mut stale_without_cookie = 0;
    for i in 0..tries {
        let value = format!("v{i}");
        let posted = replica.post(&value);
        assert_eq!(posted.status, 201, "{posted:?}");
        let cookie = posted.cookie().expect("a write answers with __txid");
        assert!(
            cookie.starts_with("__txid=") && cookie.len() == 7 + 16,
            "{cookie}"
        );
        if replica.count(&value, None).body.trim() != "1" {
            stale_without_cookie += 1;
        }
        let read = replica.count(&value, Some(&cookie));
        assert_eq!(
            (read.status, read.body.trim()),
            (200, "1"),
            "try {i}: the replica's read with {cookie} misses the write"
        );
    }
    eprintln!("{stale_without_cookie} of {tries} reads without the cookie were stale");
    let stored = primary
        .node
        .sqlite(DB, "SELECT count(*) FROM items WHERE value LIKE 'v%';");
    assert_eq!(
        stored.trim(),
        tries.to_string(),
        "every write is on the primary once"
    );
}

#[test]
fn replica_writes_reach_the_primary_and_reads_with_the_cookie_see_them() {
    let (primary, replica) = pair("http", "");
    read_your_writes(&primary, &replica, 300);

    // The primary's own proxy takes writes and sets the cookie too.
    let direct = primary.post("on-primary");
    assert_eq!(direct.status, 201);
    assert!(direct.cookie().is_some());

    let before = status(&replica.node)["proxy"].clone();
    assert_eq!(before["forwarded"], 300, "{before}");
    assert_eq!(before["timedOut"], 0, "{before}");

    // A cookie from the future: passthrough paths do not wait for it, other reads wait, then
    // go to the primary.
    let future = "__txid=00000000ffffffff";
    let static_answer = request(&replica.proxy, "GET", "/static/a.css", Some(future), "").unwrap();
    assert_eq!(
        (static_answer.status, static_answer.body.as_str()),
        (200, "static\n")
    );
    let after_static = status(&replica.node)["proxy"].clone();
    assert_eq!(
        after_static["waited"], before["waited"],
        "passthrough waited"
    );
    let late = replica.count("v1", Some(future));
    assert_eq!((late.status, late.body.trim()), (200, "1"));
    let after = status(&replica.node)["proxy"].clone();
    assert_eq!(after["timedOut"], 1, "{after}");
    assert_eq!(after["forwarded"], 301, "{after}");

    // A malformed cookie counts as absent.
    let odd = replica.count("v1", Some("__txid=zz; other=1"));
    assert_eq!(odd.status, 200);

    // The health check, and the counters in /metrics.
    let health = request(&replica.proxy, "GET", "/litefs/health", None, "").unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "OK\n"));
    let metrics = request(
        &replica.node.url.replace("http://", ""),
        "GET",
        "/metrics",
        None,
        "",
    )
    .unwrap()
    .body;
    assert!(
        metrics.contains("ltxd_proxy_forwarded_total 301"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ltxd_proxy_timed_out_total 1"),
        "{metrics}"
    );
}

#[test]
fn fly_replay_mode_answers_with_litefs_s_header() {
    let extra = Extra {
        http: "",
        proxy: "  mode: fly-replay\n",
    };
    let (primary, replica) = pair_with("http", extra);
    let replayed = replica.post("to-replay");
    assert_eq!(replayed.status, 200, "{replayed:?}");
    assert_eq!(replayed.header("fly-replay"), Some("instance=primary-host"));
    assert_eq!(replayed.body, "");
    // Fly's edge would now send it to the primary, whose proxy takes it.
    assert_eq!(primary.post("to-replay").status, 201);
    let stored = primary
        .node
        .sqlite(DB, "SELECT count(*) FROM items WHERE value = 'to-replay';");
    assert_eq!(stored.trim(), "1");
}

/// The status line the proxy answers `bytes` with.
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The proxy may answer and close before it has read everything.
    let _ = stream.write_all(bytes);
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn bad_requests_get_clear_errors_and_the_proxy_keeps_serving() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let site = Site::start(port, &url, true, Extra::default());
    assert!(raw(&site.proxy, b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 << 10)
    );
    assert!(raw(&site.proxy, huge_header.as_bytes()).starts_with("HTTP/1.1 431"));
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    let answer = raw(&site.proxy, many.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let too_big = b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc";
    assert!(raw(&site.proxy, too_big).starts_with("HTTP/1.1 413"));
    let posted = site.post("still-serving");
    assert_eq!(posted.status, 201, "{posted:?}");
}

#[test]
fn a_dead_application_gives_502_and_a_dead_primary_503() {
    let (mut primary, mut replica) = pair("http", "");
    assert_eq!(replica.post("first").status, 201);

    let _ = replica.app.child.kill();
    let _ = replica.app.child.wait();
    let down = replica.count("first", None);
    assert_eq!(down.status, 502, "{down:?}");
    assert_eq!(down.body.lines().count(), 1, "{down:?}");
    assert!(down.body.starts_with("proxy: target"), "{down:?}");

    let _ = primary.app.child.kill();
    let _ = primary.app.child.wait();
    let app_down = replica.post("second");
    assert_eq!(
        app_down.status, 502,
        "the primary's proxy reports its target: {app_down:?}"
    );

    primary.node.stop();
    let gone = replica.post("third");
    assert_eq!(gone.status, 503, "{gone:?}");
    assert_eq!(gone.header("retry-after"), Some("1"), "{gone:?}");
    assert_eq!(gone.body.lines().count(), 1, "{gone:?}");
    replica.node.stop();
}

/// A candidate named `hostname` on `consul`'s lease.
fn member(consul: &Consul, hostname: &str) -> Site {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let lease = format!(
        "  type: consul\n  hostname: {hostname}\n  advertise-url: {url}\n  reconnect-delay: 50ms\n  candidate: true\n  consul:\n    url: {}\n    key: ltxd/proxy\n    ttl: 2s\n    lock-delay: 100ms\n",
        consul.url()
    );
    Site::with_lease(port, &url, &lease, Extra::default())
}

/// Waits up to 20 s for `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_write_during_promote_lands_once_on_the_new_primary() {
    let consul = Consul::start();
    let old = member(&consul, "node-a");
    wait_until("node-a is primary", || old.node.is_primary());
    let new = member(&consul, "node-b");
    let first = new.post("ready");
    assert_eq!(first.status, 201, "{first:?}");
    let cookie = first.cookie().unwrap();
    wait_until("node-b has the first write", || {
        new.count("ready", Some(&cookie)).body.trim() == "1"
    });

    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut answers = Vec::new();
            for i in 0.. {
                let answer = new.post(&format!("p{i}"));
                answers.push(answer.status);
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            answers
        });
        std::thread::sleep(Duration::from_millis(300));
        new.node
            .ltxd(&["promote", "--url", &new.node.url, "--wait", "10"]);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap()
    });
    assert!(new.node.is_primary(), "node-b is primary");
    assert!(!old.node.is_primary(), "node-a stepped down");
    let rows = new
        .node
        .sqlite(DB, "SELECT value FROM items WHERE value LIKE 'p%';");
    let rows: Vec<&str> = rows.lines().collect();
    let mut acked = 0;
    for (i, status) in answers.iter().enumerate() {
        let value = format!("p{i}");
        let stored = rows.iter().filter(|row| **row == value).count();
        if *status == 201 {
            acked += 1;
            assert_eq!(
                stored, 1,
                "acknowledged write {value} is stored {stored} times"
            );
        } else {
            assert!(
                stored <= 1,
                "write {value} ({status}) is stored {stored} times"
            );
        }
    }
    let refused = answers.len() - acked;
    eprintln!("promotion: {acked} writes acknowledged, {refused} refused during the switch");
    assert!(acked > 0 && answers.last() == Some(&201), "{answers:?}");
    // node-a's proxy forwards to the new primary now.
    let after = old.post("after");
    assert_eq!(after.status, 201, "{after:?}");
    let stored = new
        .node
        .sqlite(DB, "SELECT count(*) FROM items WHERE value = 'after';");
    assert_eq!(stored.trim(), "1");
}

/// A CA and one certificate for 127.0.0.1 that serves and authenticates both nodes.
fn certificates(dir: &Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ca.key",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=ltxd test CA",
        "-days",
        "2",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "node.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "node.key",
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        "node.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "node.pem",
    ]);
    let path = |name: &str| dir.join(name).display().to_string();
    format!(
        "  cert-file: {}\n  key-file: {}\n  ca-file: {}\n  client-auth: true\n",
        path("node.pem"),
        path("node.key"),
        path("ca.pem")
    )
}

#[test]
fn over_https_with_client_certificates() {
    let certs = tempfile::Builder::new()
        .prefix("h15-proxy-tls")
        .tempdir()
        .unwrap();
    let http_extra = certificates(certs.path());
    let (primary, replica) = pair("https", &http_extra);
    read_your_writes(&primary, &replica, 100);
}
