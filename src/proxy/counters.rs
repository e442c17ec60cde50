//! The proxy's counters, in `/metrics` and in `/info` (`ltxd status`).

use ltxd_protocol::ProxyStatus;
use prometheus::{IntCounter, Registry};

/// What the proxy counts since the node started.
#[derive(Debug)]
pub struct ProxyCounters {
    addr: String,
    /// Requests sent on to the primary's proxy.
    pub forwarded: IntCounter,
    /// Reads that waited for the node to reach their `__txid`.
    pub waited: IntCounter,
    /// Reads whose wait ran out.
    pub timed_out: IntCounter,
}

impl ProxyCounters {
    /// Counters for the proxy that other nodes reach at `addr`, registered in `registry`.
    pub fn new(addr: &str, registry: &Registry) -> ProxyCounters {
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("the metric's name is valid");
            if let Err(err) = registry.register(Box::new(counter.clone())) {
                tracing::warn!(%err, name, "metrics: cannot register");
            }
            counter
        };
        ProxyCounters {
            addr: addr.to_string(),
            forwarded: counter(
                "ltxd_proxy_forwarded_total",
                "Requests the proxy sent on to the primary's proxy.",
            ),
            waited: counter(
                "ltxd_proxy_waited_total",
                "Reads the proxy held until the node reached their __txid cookie.",
            ),
            timed_out: counter(
                "ltxd_proxy_timed_out_total",
                "Reads whose wait for their __txid ran out.",
            ),
        }
    }

    /// The counters as `/info` reports them.
    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            addr: self.addr.clone(),
            forwarded: self.forwarded.get(),
            waited: self.waited.get(),
            timed_out: self.timed_out.get(),
        }
    }
}
