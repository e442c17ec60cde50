//! Test harness: `ltxd mount` processes on temporary directories, cleaned up even when a test
//! fails, and the sqlite3 CLI run against their mounts.

#![allow(dead_code)]

pub mod leases;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A file under `fixtures/ltx`, the reference tools' LTX files, databases and outputs.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ltx")
        .join(rel)
}

/// The `.ltx` files of fixture directory `dir` (`v1` or `v3`), sorted by name.
pub fn ltx_fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixture(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
        .collect();
    files.sort();
    files
}

/// One `ltxd mount` process with its own data and mount directories.
pub struct Node {
    pub root: tempfile::TempDir,
    pub mnt: PathBuf,
    pub data: PathBuf,
    config: PathBuf,
    /// The URL of this node's HTTP server.
    pub url: String,
    /// The URL in this node's `lease.advertise-url`: its own on a primary, the primary's on a
    /// static replica.
    pub advertise_url: String,
    launcher: Option<Launcher>,
    child: Option<Child>,
    /// The application given to `ltxd mount` after `--`.
    application: Vec<String>,
}

/// Starts a node's daemon process some other way than `Command::spawn`.
pub type Launcher = Box<dyn Fn(Command) -> std::io::Result<Child> + Send + Sync>;

/// How replicas reach the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/2 in cleartext, LiteFS's dialect.
    Http,
    /// QUIC with a self-signed certificate (`quic.insecure-dev`).
    Quic,
}

/// Waits until `done` holds, failing with `what` and the daemons' logs after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, nodes: &[&Node], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.daemon_log()).collect();
            panic!("timed out waiting until {what}\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `<db>-pos` file of a node's mount, or empty while it does not exist.
pub fn pos(node: &Node, db: &str) -> String {
    std::fs::read_to_string(node.path(&format!("{db}-pos"))).unwrap_or_default()
}

/// Runs `ltxd` with `args`, returning stdout; panics with stdout and stderr on failure.
pub fn ltxd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ltxd {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.as_str()))
}

/// Whether a `stat` of `dir` fails with ENOTCONN (a mount whose server is gone) within
/// `patience`. The `stat` runs on a thread of its own, left behind if it never returns: a
/// server that is stuck (a killed daemon whose own thread waits on its mount) must not hang
/// the test that looks.
fn answers_enotconn_within(dir: &Path, patience: Duration) -> bool {
    let (sender, receiver) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let dead = std::fs::metadata(&dir).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        let _ = sender.send(dead);
    });
    receiver.recv_timeout(patience).unwrap_or(false)
}

/// Aborts the FUSE connection of the newest mount at `dir`, as an operator would after a
/// daemon was killed: a request the daemon's own threads had in flight on its mount then fails
/// instead of keeping the killed process alive forever.
fn abort_connection(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    let minor = mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(4) == Some(&dir.as_str())).then(|| fields.get(2).copied())?
        })
        .and_then(|device| device.split_once(':').map(|(_, minor)| minor.to_string()));
    if let Some(minor) = minor {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

/// Whether the file system at `dir` has a live server: `statfs` always reaches it, and a dead
/// one gives ENOTCONN.
fn server_answers(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path and `stats` a properly sized out-parameter.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut stats) == 0 }
}

fn detach(dir: &Path) {
    if is_mounted(dir) {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Detaches the mounts that earlier test runs killed by a signal left behind: `ltxd` mounts
/// under the temporary directory whose daemon is gone (the kernel answers ENOTCONN). Once per
/// test process.
fn sweep_dead_mounts() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let tmp = std::env::temp_dir();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [source, dir, fstype, ..] = fields.as_slice() else {
                continue;
            };
            let dir = Path::new(dir);
            if !(*source == "ltxd" && fstype.starts_with("fuse") && dir.starts_with(&tmp)) {
                continue;
            }
            let dead = answers_enotconn_within(dir, Duration::from_secs(1));
            if dead {
                eprintln!("detaching {}, left by a killed test run", dir.display());
                detach(dir);
            }
        }
    });
}

impl Node {
    /// A primary on a static lease.
    pub fn primary() -> Node {
        Node::primary_over(Transport::Http)
    }

    /// A primary on a static lease that replicas follow over `transport`.
    pub fn primary_over(transport: Transport) -> Node {
        let port = free_port();
        match transport {
            Transport::Http => Node::build(
                port,
                &format!("http://127.0.0.1:{port}"),
                "candidate: true",
                "",
            ),
            Transport::Quic => {
                let quic = free_udp_port();
                Node::build(
                    port,
                    &format!("quic://127.0.0.1:{quic}"),
                    "candidate: true",
                    &format!("quic:\n  addr: 127.0.0.1:{quic}\n  insecure-dev: true\n"),
                )
            }
        }
    }

    /// A replica on a static lease that follows `primary`, over the transport its advertise URL
    /// names.
    pub fn replica_of(primary: &Node) -> Node {
        let quic = if primary.advertise_url.starts_with("quic://") {
            "quic:\n  insecure-dev: true\n"
        } else {
            ""
        };
        Node::build(
            free_port(),
            &primary.advertise_url,
            "candidate: false",
            quic,
        )
    }

    /// A node whose `lease:` section ends with `lease_tail` (after `type: static`), advertising
    /// its own URL.
    pub fn with_lease(lease_tail: &str) -> Node {
        let port = free_port();
        Node::build(port, &format!("http://127.0.0.1:{port}"), lease_tail, "")
    }

    /// A cluster member named `hostname` with its own HTTP port and advertise URL, whose
    /// `lease:` section is `lease_body` (indented lines), for leases with a real backend.
    pub fn cluster_member(hostname: &str, lease_body: &str) -> Node {
        Node::cluster_member_over(hostname, lease_body, Transport::Http)
    }

    /// A cluster member as [`Node::cluster_member`], that others follow over `transport`.
    pub fn cluster_member_over(hostname: &str, lease_body: &str, transport: Transport) -> Node {
        let port = free_port();
        let (advertise_url, extra) = match transport {
            Transport::Http => (format!("http://127.0.0.1:{port}"), String::new()),
            Transport::Quic => {
                let quic = free_udp_port();
                (
                    format!("quic://127.0.0.1:{quic}"),
                    format!("quic:\n  addr: 127.0.0.1:{quic}\n  insecure-dev: true\n"),
                )
            }
        };
        let body = format!(
            "  hostname: {hostname}\n  advertise-url: {advertise_url}\n  reconnect-delay: 50ms\n{lease_body}"
        );
        Node::build_with_lease(port, &advertise_url, &body, &extra)
    }

    fn build(port: u16, advertise_url: &str, lease_tail: &str, extra: &str) -> Node {
        let body = format!(
            "  type: static\n  hostname: primary-host\n  advertise-url: {advertise_url}\n  reconnect-delay: 50ms\n  {lease_tail}\n"
        );
        Node::build_with_lease(port, advertise_url, &body, extra)
    }

    fn build_with_lease(port: u16, advertise_url: &str, lease_body: &str, extra: &str) -> Node {
        Node::configured(
            &format!("127.0.0.1:{port}"),
            "",
            advertise_url,
            lease_body,
            extra,
            None,
        )
    }

    /// A node listening for HTTP at `http_addr` (with further `http:` lines `http_extra`), with
    /// the `lease:` section `lease_body`, further top-level YAML `extra`, and its daemon started
    /// by `launcher` (for example in a network namespace) instead of directly.
    pub fn configured(
        http_addr: &str,
        http_extra: &str,
        advertise_url: &str,
        lease_body: &str,
        extra: &str,
        launcher: Option<Launcher>,
    ) -> Node {
        let root = tempfile::tempdir().unwrap();
        let mnt = root.path().join("mnt");
        let data = root.path().join("data");
        let config = root.path().join("ltxd.yml");
        let text = format!(
            "fuse:\n  dir: {}\ndata:\n  dir: {}\nhttp:\n  addr: {http_addr}\n{http_extra}lease:\n{lease_body}{extra}",
            mnt.display(),
            data.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut node = Node {
            root,
            mnt,
            data,
            config,
            url: format!("http://{http_addr}"),
            advertise_url: advertise_url.to_string(),
            launcher,
            child: None,
            application: Vec::new(),
        };
        node.start();
        node
    }

    /// True when this node's `/info` says it is the primary.
    pub fn is_primary(&self) -> bool {
        let out = Command::new(env!("CARGO_BIN_EXE_ltxd"))
            .args(["status", "--json", "--url", &self.url])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|info| info["isPrimary"] == true)
    }

    /// True while the daemon process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the daemon and waits until the mount is up.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("ltxd.log"))
            .unwrap();
        sweep_dead_mounts();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ltxd"));
        // The daemon dies with the test process, even one killed by a signal (the test thread
        // that starts a node outlives it).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.args(["mount", "-config"]).arg(&self.config);
        if !self.application.is_empty() {
            command.arg("--").args(&self.application);
        }
        command
            .env(
                "LTXD_LOG",
                std::env::var("LTXD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        let child = match &self.launcher {
            Some(launch) => launch(command),
            None => command.spawn(),
        }
        .unwrap();
        self.child = Some(child);
        // Generous: a start may rebuild a large database from the log (a debug build on a
        // loaded 2-core machine writes a 256 MiB one in well over 20 s).
        let deadline = Instant::now() + Duration::from_secs(120);
        // A crash leaves a stale entry in /proc/mounts, whose root a `stat` may still find in the
        // kernel's attribute cache: wait for a mount whose server answers.
        while !(is_mounted(&self.mnt) && server_answers(&self.mnt)) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ltxd mount exited with {status}:\n{}", self.daemon_log());
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Rewrites this node's configuration with `edit`; it takes effect at the next start.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
    }

    /// Runs `application` after `--` from the next start: `ltxd mount -config FILE -- APP`.
    pub fn set_application(&mut self, application: &[&str]) {
        self.application = application.iter().map(|a| a.to_string()).collect();
    }

    /// The daemon's stderr so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("ltxd.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL, as a crash would, and aborts its FUSE connection (see
    /// [`abort_connection`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            abort_connection(&self.mnt);
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and checks that it unmounted and exited cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "ltxd exited with {status}:\n{}",
                self.daemon_log()
            );
            assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself, and returns its exit status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("the daemon is not running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ltxd did not exit:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process ID of the daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The path of a file in the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Runs `sql` with the sqlite3 CLI against `db` in the mount, returning stdout.
    pub fn sqlite(&self, db: &str, sql: &str) -> String {
        let out = self.sqlite_result(db, sql);
        match out {
            Ok(stdout) => stdout,
            Err(stderr) => panic!(
                "sqlite3 failed on {sql:?}: {stderr}\ndaemon log:\n{}",
                self.daemon_log()
            ),
        }
    }

    /// Runs `sql` with the sqlite3 CLI, returning stdout or stderr.
    pub fn sqlite_result(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut child = Command::new("timeout")
            .args(["60", "sqlite3", "-batch", "-bail"])
            .arg(self.path(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!(".timeout 10000\n{sql}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The backing database file in the data directory.
    pub fn backing_db(&self, db: &str) -> PathBuf {
        self.data.join("dbs").join(db).join("database")
    }

    /// Runs `ltxd` with `args`, returning stdout; panics on failure.
    pub fn ltxd(&self, args: &[&str]) -> String {
        ltxd(args)
    }

    /// With the daemon stopped: the log verifies, a restore at the head is byte-identical to the
    /// database file, and the head's checksum is the database's checksum.
    pub fn check_log_matches_database(&self, db: &str) {
        assert!(self.child.is_none(), "stop the node first");
        let data = self.data.to_str().unwrap();
        let verify = self.ltxd(&["log", "verify", "--data-dir", data]);
        assert!(
            !verify.contains("fault") && verify.contains(&format!("{db}: ok")),
            "{verify}"
        );
        let restored = self.root.path().join(format!("{db}.restored"));
        self.ltxd(&[
            "restore",
            "--data-dir",
            data,
            "--db",
            db,
            "-o",
            restored.to_str().unwrap(),
        ]);
        let backing = std::fs::read(self.backing_db(db)).unwrap();
        assert!(
            std::fs::read(&restored).unwrap() == backing,
            "{db}: restore differs from the database"
        );
        let checksum = self.ltxd(&["ltx", "checksum", self.backing_db(db).to_str().unwrap()]);
        let json: serde_json::Value = serde_json::from_str(&self.ltxd(&[
            "log",
            "list",
            "--json",
            "--data-dir",
            data,
            "--db",
            db,
        ]))
        .unwrap();
        let last = json.as_array().unwrap().last().unwrap();
        assert_eq!(
            last["post_apply_checksum"].as_str().unwrap(),
            checksum.trim()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        detach(&self.mnt);
    }
}
