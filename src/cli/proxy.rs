//! Starting the proxy from `ltxd mount` when `proxy.target` is set, with the cluster's HTTP
//! security for the traffic between nodes' proxies.

use std::sync::Arc;

use anyhow::Context;
use ltxd::config::Config;
use ltxd::log::Log;
use ltxd::proxy::{PeerTls, ProxyParts, ProxyServer};
use ltxd::replication::NodeState;
use ltxd_transport_security::{client_config, server_tls};

use super::mount::{tls_files, token};

/// ALPN for the connections between proxies.
const ALPN: &[u8] = b"http/1.1";

/// Starts the proxy when `proxy.target` is set.
pub fn start(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    node: &Arc<NodeState>,
    log: &Arc<Log>,
    connector: &Arc<dyn ltxd_protocol::Connector>,
    registry: prometheus::Registry,
) -> anyhow::Result<Option<ProxyServer>> {
    if config.proxy.target.is_empty() {
        return Ok(None);
    }
    let security = config.http.security();
    let files = tls_files(&security);
    let client_tls = if security.ca_file.is_empty() && !security.insecure_dev {
        None
    } else {
        let mut tls = client_config(&files).context("http.ca-file")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        Some(Arc::new(tls))
    };
    let server_tls = if security.cert_file.is_empty() && !security.insecure_dev {
        None
    } else {
        let tls = server_tls(&files).context("http.cert-file")?;
        let verifies_clients = tls.verifies_clients;
        let mut config = tls.config;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Some(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            verifies_clients,
        })
    };
    let parts = ProxyParts {
        node: Arc::clone(node),
        log: Arc::clone(log),
        connector: Arc::clone(connector),
        registry,
        token: token("http", &security)?,
        client_tls,
        server_tls,
        advertise_url: config.lease.advertise_url.clone(),
        hostname: config.lease.hostname.clone(),
        on_fly: std::env::var_os("FLY_APP_NAME").is_some_and(|name| !name.is_empty()),
    };
    let server = runtime.block_on(ltxd::proxy::start(&config.proxy, parts))?;
    Ok(Some(server))
}
