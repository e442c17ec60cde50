//! Lease backends for tests: a real etcd-server and the Consul stand-in, each stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A real etcd on loopback ports with a temporary data directory, killed on drop.
pub struct Etcd {
    child: Child,
    /// The client URL.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it is healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(std::env::var("LTXD_ETCD").unwrap_or_else(|_| "etcd".into()))
            .arg("--name=failover")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=failover={peer_url}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd-server must be installed (Debian: apt install etcd-server)");
        let etcd = Etcd {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{}/health", etcd.endpoint);
        while !Command::new("curl")
            .args(["-sf", &health])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Consul stand-in, in process: TTLs from 1 s and sessions invalidated after one TTL (real
/// Consul allows up to two).
pub struct Consul {
    runtime: tokio::runtime::Runtime,
    standin: Option<ltxd_consul_standin::Standin>,
}

impl Consul {
    /// Starts the stand-in on a free loopback port.
    pub fn start() -> Consul {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let options = ltxd_consul_standin::Options {
            min_ttl: Duration::from_secs(1),
            ttl_multiplier: 1,
            ..ltxd_consul_standin::Options::default()
        };
        let standin = runtime
            .block_on(ltxd_consul_standin::Standin::start(
                "127.0.0.1:0".parse().unwrap(),
                options,
            ))
            .unwrap();
        Consul {
            runtime,
            standin: Some(standin),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        self.standin.as_ref().map(|s| s.url()).unwrap_or_default()
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.standin.take();
    }
}
