//! Picks the transport from the primary's URL: `quic://` over QUIC, `http://` over HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use ltxd_protocol::{
    BoxFuture, ConnectError, Connector, NodeInfo, Pos, StreamRequest, StreamResponse,
};

/// A connector that hands each URL to the transport its scheme names.
pub struct SchemeConnector {
    http: Arc<dyn Connector>,
    quic: Option<Arc<dyn Connector>>,
}

impl SchemeConnector {
    /// Dispatches `quic://` URLs to `quic` (when this node has QUIC client settings) and the
    /// rest to `http`.
    pub fn new(http: Arc<dyn Connector>, quic: Option<Arc<dyn Connector>>) -> SchemeConnector {
        SchemeConnector { http, quic }
    }

    /// True when `url` is a QUIC URL.
    pub fn is_quic(url: &str) -> bool {
        url.starts_with("quic://")
    }

    fn pick(&self, url: &str) -> Result<&Arc<dyn Connector>, ConnectError> {
        if !Self::is_quic(url) {
            return Ok(&self.http);
        }
        self.quic.as_ref().ok_or_else(|| {
            ConnectError::BadUrl(format!(
                "{url}: following over QUIC needs quic.ca-file (or quic.insecure-dev) on this node"
            ))
        })
    }
}

impl Connector for SchemeConnector {
    fn subscribe<'a>(
        &'a self,
        url: &'a str,
        request: &'a StreamRequest,
    ) -> BoxFuture<'a, Result<StreamResponse, ConnectError>> {
        match self.pick(url) {
            Ok(connector) => connector.subscribe(url, request),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    fn info<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<NodeInfo, ConnectError>> {
        match self.pick(url) {
            Ok(connector) => connector.info(url),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    fn handoff<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        match self.pick(url) {
            Ok(connector) => connector.handoff(url, node_id),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    fn ack<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
        positions: &'a BTreeMap<String, Pos>,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        match self.pick(url) {
            Ok(connector) => connector.ack(url, node_id, positions),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}
