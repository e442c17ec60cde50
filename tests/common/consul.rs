//! The Consul stand-in (`lease-backends/consul-standin`) run in the test process, for tests that
//! need a lease that fails over or that `ltxd promote` can move. No real Consul server can be
//! installed here; see docs/leases.md for what the stand-in does not cover.

use std::time::Duration;

/// The stand-in on a port of 127.0.0.1, with TTLs from 1 s and sessions invalidated after one
/// TTL (real Consul allows up to two). Stopped when dropped.
pub struct Consul {
    runtime: tokio::runtime::Runtime,
    standin: Option<ltxd_consul_standin::Standin>,
}

impl Consul {
    /// Starts the stand-in.
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

    /// The stand-in's URL, for `lease.consul.url`.
    pub fn url(&self) -> String {
        self.standin.as_ref().unwrap().url().to_string()
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.standin.take();
    }
}
