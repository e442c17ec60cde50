//! The lease conformance suite, and a few Consul-specific checks, against the Consul stand-in
//! (`ltxd-consul-standin`), not a real Consul: Consul cannot be installed here. The stand-in
//! follows Consul's documented semantics, including invalidation after twice the TTL and the
//! lock delay; it accepts TTLs below Consul's 10 s minimum, so that the suite runs fast.
//!
//! Every test starts its own stand-in on a free loopback port, with an ACL token, and reaches
//! it through a URL that carries the token and a key prefix, as LiteFS's Fly.io URLs do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ltxd_consul_standin::{Options, Standin};
use ltxd_lease::{BoxFuture, LeaseError, Leaser};
use ltxd_lease_conformance::{Capabilities, Cluster, Timing, Unavailable};
use ltxd_lease_consul::{ConsulConfig, ConsulLeaser};

const TTL: Duration = Duration::from_secs(1);
const LOCK_DELAY: Duration = Duration::from_millis(500);
const TOKEN: &str = "conformance-token";

/// A stand-in and the settings every node of the cluster shares.
struct ConsulCluster {
    standin: Standin,
}

impl ConsulCluster {
    async fn start() -> ConsulCluster {
        let options = Options {
            token: Some(TOKEN.to_string()),
            min_ttl: Duration::from_millis(500),
            ttl_multiplier: 2,
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("a loopback address");
        let standin = Standin::start(addr, options)
            .await
            .expect("start the Consul stand-in");
        ConsulCluster { standin }
    }

    fn config(&self, node: usize) -> ConsulConfig {
        let url = format!("http://:{TOKEN}@{}/ltxd-test/", self.standin.addr());
        let mut config = ConsulConfig::new(
            url,
            "litefs/app",
            format!("node-{node}"),
            format!("http://node-{node}:20202"),
        );
        config.ttl = TTL;
        config.lock_delay = LOCK_DELAY;
        config.watch_wait = Duration::from_secs(5);
        config
    }
}

impl Cluster for ConsulCluster {
    fn backend(&self) -> &str {
        "consul (stand-in)"
    }

    fn leaser(&self, node: usize) -> BoxFuture<'_, Result<Box<dyn Leaser>, LeaseError>> {
        let leaser = ConsulLeaser::new(self.config(node)).map(|l| Box::new(l) as Box<dyn Leaser>);
        Box::pin(std::future::ready(leaser))
    }

    fn timing(&self) -> Timing {
        Timing {
            ttl: TTL,
            // Consul invalidates a session after up to twice its TTL; then the lock delay runs.
            expiry_bound: TTL * 2 + LOCK_DELAY,
            slack: Duration::from_secs(3),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            elections: true,
            cluster_id: true,
            handoff: true,
        }
    }
}

async fn cluster() -> Result<Box<dyn Cluster>, Unavailable> {
    Ok(Box::new(ConsulCluster::start().await))
}

ltxd_lease_conformance::suite!(cluster);

/// A runtime for the Consul-specific tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_lock_delay_holds_the_key_after_a_session_dies() {
    runtime().block_on(async {
        let cluster = ConsulCluster::start().await;
        let a = ConsulLeaser::new(cluster.config(0)).unwrap();
        let b = ConsulLeaser::new(cluster.config(1)).unwrap();
        let lease = a.acquire().await.unwrap();
        let started = Instant::now();
        drop(lease);
        // The session dies after 2 × TTL; the key then stays locked for the lock delay.
        let mut gone_at = None;
        let mut won_at = None;
        while won_at.is_none() && started.elapsed() < Duration::from_secs(10) {
            if gone_at.is_none() && a.primary_info().await == Err(LeaseError::NoPrimary) {
                gone_at = Some(started.elapsed());
            }
            match b.acquire().await {
                Ok(_) => won_at = Some(started.elapsed()),
                Err(LeaseError::PrimaryExists) => {}
                Err(e) => panic!("acquire failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let gone_at = gone_at.expect("the key was deleted");
        let won_at = won_at.expect("node 1 won the lease");
        assert!(
            gone_at >= TTL * 2 - Duration::from_millis(100),
            "{gone_at:?}"
        );
        assert!(
            won_at >= gone_at + LOCK_DELAY - Duration::from_millis(100),
            "the key was free at {gone_at:?} and won at {won_at:?}, inside the lock delay"
        );
    });
}

#[test]
fn a_wrong_token_is_refused() {
    runtime().block_on(async {
        let cluster = ConsulCluster::start().await;
        let mut config = cluster.config(0);
        config.token = Some("wrong".to_string());
        let leaser = ConsulLeaser::new(config).unwrap();
        match leaser.acquire().await {
            Err(LeaseError::Backend(message)) => {
                assert!(message.contains("permission denied"), "{message}")
            }
            Ok(_) => panic!("acquired with a wrong token"),
            Err(e) => panic!("expected a backend error, got {e}"),
        }
    });
}

#[test]
fn an_unreachable_consul_is_a_backend_error() {
    runtime().block_on(async {
        let cluster = ConsulCluster::start().await;
        let config = cluster.config(0);
        drop(cluster);
        let leaser = ConsulLeaser::new(config).unwrap();
        assert!(matches!(
            leaser.primary_info().await,
            Err(LeaseError::Backend(_))
        ));
        let mut watch = leaser.watch().await.unwrap();
        assert!(matches!(watch.next().await, Err(LeaseError::Backend(_))));
    });
}

#[test]
fn a_cancelled_next_loses_no_change() {
    runtime().block_on(async {
        let cluster = ConsulCluster::start().await;
        let a = ConsulLeaser::new(cluster.config(0)).unwrap();
        let mut watch = a.watch().await.unwrap();
        assert_eq!(watch.next().await, Ok(None));
        // Drop a next() mid-query, change the primary, and ask again.
        let pending = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
        assert!(pending.is_err(), "nothing changed yet");
        let lease = a.acquire().await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the change after a cancelled next()")
            .unwrap();
        assert_eq!(seen.map(|info| info.hostname), Some("node-0".to_string()));
        lease.release().await.unwrap();
    });
}
