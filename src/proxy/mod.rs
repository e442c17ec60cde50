//! The HTTP proxy of LiteFS's `proxy:` section, in front of the application on every node.
//!
//! On the primary every request goes to the application, and a request that may have written
//! gets LiteFS's `__txid` cookie with `proxy.db`'s position. On a replica, reads carrying that
//! cookie wait until the replica has reached it (read-your-writes) and writes go to the primary:
//! forwarded to the primary's proxy (found from its `/info`, over the cluster's HTTP security),
//! or, in `fly-replay` mode, answered with LiteFS's `fly-replay` header.
//!
//! [`route`] decides with no I/O; [`handler`](self) waits, sends and answers; the server
//! listens.

pub mod cookie;
mod counters;
pub mod glob;
mod handler;
mod headers;
mod primary;
pub mod route;
mod server;
mod upstream;

use std::sync::Arc;

use ltxd_transport_security::Token;

pub use counters::ProxyCounters;
pub use handler::{MAX_REQUEST_BODY, TXID_WAIT};
pub use server::{PeerTls, ProxyServer};

use crate::config::{ProxyConfig, ProxyMode};
use crate::log::Log;
use crate::replication::NodeState;
use glob::Glob;
use route::{Mode, Rules};

/// Why the proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `proxy.addr` cannot be listened on.
    #[error("proxy.addr: cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// `proxy.target` is not a usable address.
    #[error("proxy.target: {0}")]
    Target(String),
}

/// What the proxy uses of the node.
pub struct ProxyParts {
    /// The node's role and primary.
    pub node: Arc<NodeState>,
    /// The log, for `proxy.db`'s position.
    pub log: Arc<Log>,
    /// How this node reaches other nodes' `/info` (with the cluster's HTTP security).
    pub connector: Arc<dyn ltxd_protocol::Connector>,
    /// Where the counters are registered for `/metrics`.
    pub registry: prometheus::Registry,
    /// The cluster's HTTP token.
    pub token: Option<Token>,
    /// TLS to other nodes' proxies, when the cluster's HTTP traffic uses TLS.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS for other nodes' proxies connecting to this one.
    pub server_tls: Option<PeerTls>,
    /// `lease.advertise-url`, whose host other nodes reach this one at.
    pub advertise_url: String,
    /// `lease.hostname`, used when the advertise URL names no host.
    pub hostname: String,
    /// True when `FLY_APP_NAME` is set: `proxy.mode: auto` then means `fly-replay`.
    pub on_fly: bool,
}

/// Starts the proxy of `config` (whose `target` is set); must be called within a Tokio runtime.
pub async fn start(config: &ProxyConfig, parts: ProxyParts) -> Result<ProxyServer, ProxyError> {
    let listen = listen_address(&config.addr);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| ProxyError::Listen {
            addr: config.addr.clone(),
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| ProxyError::Listen {
            addr: config.addr.clone(),
            source,
        })?
        .port();
    let advertised = advertised_address(&config.addr, port, &parts.advertise_url, &parts.hostname);
    let counters = Arc::new(ProxyCounters::new(&advertised, &parts.registry));
    parts.node.set_proxy(Arc::clone(&counters));
    let target = upstream::Upstream::new(&config.target, None).map_err(ProxyError::Target)?;
    let settings = handler::Settings {
        rules: Rules {
            passthrough: config.passthrough.iter().map(|g| Glob::new(g)).collect(),
            always_forward: config.always_forward.iter().map(|g| Glob::new(g)).collect(),
            mode: mode(config.mode, parts.on_fly),
        },
        db: config.db.clone(),
        max_lag: config.max_lag,
        primary_redirect_timeout: config.primary_redirect_timeout,
        debug: config.debug,
        token: parts.token,
    };
    let primary = primary::PrimaryProxy::new(parts.connector, parts.client_tls);
    let proxy = Arc::new(handler::Proxy::new(
        settings, parts.node, parts.log, target, primary, counters,
    ));
    let server = server::serve(
        listener,
        proxy,
        parts.server_tls,
        config.read_header_timeout,
    )
    .map_err(|source| ProxyError::Listen {
        addr: config.addr.clone(),
        source,
    })?;
    tracing::info!(addr = %server.local_addr(), advertised, target = config.target, "proxy: serving");
    Ok(server)
}

/// The mode `proxy.mode` means here.
fn mode(configured: ProxyMode, on_fly: bool) -> Mode {
    match configured {
        ProxyMode::Forward => Mode::Forward,
        ProxyMode::FlyReplay => Mode::FlyReplay,
        ProxyMode::Auto if on_fly => Mode::FlyReplay,
        ProxyMode::Auto => Mode::Forward,
    }
}

/// A Go-style listen address (`":8080"`) as one to bind.
fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

/// `host:port` at which other nodes reach this proxy: the host of `proxy.addr` when it names
/// one, otherwise the advertise URL's host (or the hostname), with the port listened on.
fn advertised_address(addr: &str, port: u16, advertise_url: &str, hostname: &str) -> String {
    let configured = addr.rsplit_once(':').map_or("", |(host, _)| host);
    let wildcard = ["", "0.0.0.0", "[::]", "::"].contains(&configured);
    let host = if !wildcard {
        configured.to_string()
    } else {
        url_host(advertise_url)
            .filter(|host| !host.is_empty())
            .unwrap_or(hostname)
            .to_string()
    };
    format!("{host}:{port}")
}

/// The host of `scheme://host:port/path` (with brackets for IPv6).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next();
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mode_is_fly_replay_on_fly_only() {
        assert_eq!(mode(ProxyMode::Auto, true), Mode::FlyReplay);
        assert_eq!(mode(ProxyMode::Auto, false), Mode::Forward);
        assert_eq!(mode(ProxyMode::Forward, true), Mode::Forward);
        assert_eq!(mode(ProxyMode::FlyReplay, false), Mode::FlyReplay);
    }

    #[test]
    fn the_advertised_address_takes_the_advertise_url_s_host() {
        let at = |addr, url| advertised_address(addr, 8080, url, "node9");
        assert_eq!(at(":8080", "http://node1:20202"), "node1:8080");
        assert_eq!(at("0.0.0.0:0", "https://u@node1:20202/x"), "node1:8080");
        assert_eq!(at(":8080", "http://[fd00::1]:20202"), "[fd00::1]:8080");
        assert_eq!(at(":8080", ""), "node9:8080");
        assert_eq!(at("127.0.0.2:0", "http://node1:20202"), "127.0.0.2:8080");
    }
}
