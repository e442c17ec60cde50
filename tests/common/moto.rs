//! A real S3 server for tests: moto's `moto_server` on 127.0.0.1, from the virtual environment
//! `.ci/run` installs (`/opt/ltxd-venv`, or `LTXD_MOTO_VENV`). It is killed when dropped.
//!
//! Without the environment a test is skipped with a message, except under `CI=true`, where a
//! missing server is a failure.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server with one bucket.
pub struct Moto {
    child: Child,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `moto_server` executable, if installed.
fn executable() -> Option<PathBuf> {
    let venv = std::env::var_os("LTXD_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ltxd-venv"));
    let exe = venv.join("bin/moto_server");
    exe.is_file().then_some(exe)
}

/// Sets the AWS environment the daemons and the CLI inherit (moto accepts any keys).
fn set_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    });
}

/// A raw HTTP/1.1 request to 127.0.0.1:`port`; the status code, or `None` if it failed.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1)?.parse().ok()
}

impl Moto {
    /// Starts a server with bucket `bucket`; `None` (and a message) when moto is not installed
    /// outside CI.
    pub fn start(bucket: &str) -> Option<Moto> {
        let Some(exe) = executable() else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "moto_server is missing: .ci/run installs it into /opt/ltxd-venv"
            );
            eprintln!(
                "SKIPPED: moto_server is not installed (python3 -m venv /opt/ltxd-venv && \
                 /opt/ltxd-venv/bin/pip install 'moto[server]')"
            );
            return None;
        };
        set_credentials();
        let dir = tempfile::Builder::new()
            .prefix("h16-moto-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("moto.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(exe);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap());
        // The server dies with the test process, even one killed by a signal.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        let mut moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(port, "GET", "/").is_none() {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited with {status}:\n{}", moto.logs());
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in 30 s:\n{}",
                moto.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = http(port, "PUT", &format!("/{bucket}"));
        assert_eq!(status, Some(200), "create bucket:\n{}", moto.logs());
        Some(moto)
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// A `backup:` section for a node's configuration.
    pub fn backup_config(&self, prefix: &str) -> String {
        format!(
            "backup:\n  type: s3\n  bucket: {}\n  path: {prefix}\n  endpoint: {}\n  force-path-style: true\n",
            self.bucket, self.endpoint
        )
    }

    /// The server's output so far.
    pub fn logs(&self) -> String {
        let tail = |p: PathBuf| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let start = text.len().saturating_sub(4000);
            text[text.floor_char_boundary_compat(start)..].to_string()
        };
        format!(
            "{}{}",
            tail(self.log.clone()),
            tail(self.log.with_file_name("moto.err"))
        )
    }
}

/// `str::floor_char_boundary` for the stable toolchain.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
