//! Finding the primary's proxy: the primary's `/info` (over the node-to-node connector, with
//! its TLS and token) names the address its proxy is reached at; the upstream built from it is
//! kept until the primary changes or fails.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ltxd_protocol::Connector;

use super::upstream::Upstream;

/// The primary's proxy, resolved from its `/info`.
pub struct PrimaryProxy {
    connector: Arc<dyn Connector>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The primary's advertise URL and the upstream to its proxy.
    cached: Mutex<Option<(String, Arc<Upstream>)>>,
}

impl PrimaryProxy {
    /// Resolves primaries through `connector`, and reaches their proxies over TLS with `tls`
    /// when the cluster's HTTP traffic uses TLS.
    pub fn new(
        connector: Arc<dyn Connector>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> PrimaryProxy {
        PrimaryProxy {
            connector,
            tls,
            cached: Mutex::new(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<(String, Arc<Upstream>)>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The proxy of the primary at `primary_url`, asking it within `within` when not known.
    pub async fn upstream(
        &self,
        primary_url: &str,
        within: Duration,
    ) -> Result<Arc<Upstream>, String> {
        if let Some((url, upstream)) = self.cached().as_ref() {
            if url == primary_url {
                return Ok(Arc::clone(upstream));
            }
        }
        let info = tokio::time::timeout(within, self.connector.info(primary_url))
            .await
            .map_err(|_| format!("{primary_url}: no answer to /info within {within:?}"))?
            .map_err(|err| format!("{primary_url}: {err}"))?;
        let addr = info
            .proxy
            .map(|proxy| proxy.addr)
            .ok_or_else(|| format!("{primary_url} runs no proxy"))?;
        let upstream = Arc::new(Upstream::new(&addr, self.tls.clone())?);
        *self.cached() = Some((primary_url.to_string(), Arc::clone(&upstream)));
        Ok(upstream)
    }

    /// Forgets the primary's proxy after it failed, so that the next request asks again.
    pub fn forget(&self) {
        *self.cached() = None;
    }
}
