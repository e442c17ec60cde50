//! The QUIC client: one cached connection per primary, one stream per call.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use ltxd_protocol::{
    BoxFuture, ConnectError, Connector, NodeInfo, Pos, StreamRequest, StreamResponse,
};
use ltxd_transport_security::Token;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::OnceCell;

use crate::body::RecvBody;
use crate::header::{encode_request, read_response, HeaderError, Request, Response};
use crate::{QuicError, QuicOptions, ALPN, SCHEME};

/// The connection close code when a primary stops answering.
const UNRESPONSIVE: VarInt = VarInt::from_u32(1);

/// Reaches primaries over QUIC (`quic://host:port`).
///
/// It keeps one connection per primary, opened on first use and reused by every later call;
/// a connection that has closed (idle timeout, primary restart) is replaced on the next call.
/// Each subscription, `info` call and handoff is its own stream on that connection.
pub struct QuicConnector {
    config: quinn::ClientConfig,
    token: Option<Token>,
    options: QuicOptions,
    endpoint: OnceCell<Endpoint>,
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl std::fmt::Debug for QuicConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConnector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The primary a URL names.
struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// Parses `quic://host:port` (an IPv6 host in brackets); a trailing `/` is allowed.
    fn parse(url: &str) -> Result<Target, ConnectError> {
        let bad = |why: &str| ConnectError::BadUrl(format!("{url}: {why}"));
        let rest = url
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix("://"))
            .ok_or_else(|| bad("the QUIC transport takes quic:// URLs"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, port) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed '['"))?;
                (host, port.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@', '[', ']']) {
            return Err(bad("a host is required, and nothing but host:port"));
        }
        let port = port
            .ok_or_else(|| bad("a port is required"))?
            .parse()
            .map_err(|_| bad("bad port"))?;
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, with an IPv6 host in brackets.
    fn key(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

impl QuicConnector {
    /// A connector. `tls` comes from `ltxd_transport_security::client_config`; its ALPN list is
    /// replaced by [`ALPN`]. `token`, when set, is presented on every stream.
    pub fn new(
        mut tls: rustls::ClientConfig,
        token: Option<Token>,
        options: QuicOptions,
    ) -> Result<QuicConnector, QuicError> {
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(options.transport(0)?);
        Ok(QuicConnector {
            config,
            token,
            options,
            endpoint: OnceCell::new(),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// The local UDP endpoint, bound on first use: dual-stack when the host allows, else IPv4.
    async fn endpoint(&self) -> Result<&Endpoint, ConnectError> {
        self.endpoint
            .get_or_try_init(|| async {
                Endpoint::client(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
                    .or_else(|_| Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
                    .map_err(|err| ConnectError::Io(format!("cannot bind a UDP socket: {err}")))
            })
            .await
    }

    /// The connection to `target`: the cached one while it is open, else a new one.
    async fn connection(&self, target: &Target) -> Result<Connection, ConnectError> {
        let slot = Arc::clone(
            self.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(target.key())
                .or_default(),
        );
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
            tracing::debug!(
                primary = target.key(),
                "QUIC connection closed; reconnecting"
            );
        }
        let connection = self.connect(target).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn connect(&self, target: &Target) -> Result<Connection, ConnectError> {
        let endpoint = self.endpoint().await?;
        let name = target.key();
        let addresses = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| ConnectError::Io(format!("resolving {name}: {err}")))?;
        let v4_only = endpoint.local_addr().is_ok_and(|local| local.is_ipv4());
        let address = addresses
            .into_iter()
            .find(|address| !v4_only || address.is_ipv4())
            .ok_or_else(|| ConnectError::Io(format!("{name} has no usable address")))?;
        let connecting = endpoint
            .connect_with(self.config.clone(), address, &target.host)
            .map_err(|err| ConnectError::Io(format!("connecting to {name}: {err}")))?;
        match tokio::time::timeout(self.options.handshake_timeout, connecting).await {
            Err(_) => Err(ConnectError::Io(format!("connecting to {name} timed out"))),
            Ok(Err(err)) => Err(ConnectError::Io(format!(
                "QUIC handshake with {name} failed: {err}"
            ))),
            Ok(Ok(connection)) => {
                tracing::debug!(primary = name, %address, "QUIC connection open");
                Ok(connection)
            }
        }
    }

    /// Opens a stream to the primary at `url`, sends `request`, and reads the response header.
    /// A refusal is returned as [`ConnectError::Refused`].
    async fn call(
        &self,
        url: &str,
        request: Request<'_>,
    ) -> Result<(Response, quinn::RecvStream), ConnectError> {
        let target = Target::parse(url)?;
        let header = encode_request(self.token.as_ref().map(Token::as_bytes), request)
            .map_err(|err| ConnectError::Protocol(format!("cannot send the request: {err}")))?;
        let mut connection = self.connection(&target).await?;
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(err) => {
                // The connection died after the check; one fresh connection is worth a try.
                tracing::debug!(primary = target.key(), %err, "QUIC connection lost; reconnecting");
                connection = self.connection(&target).await?;
                connection
                    .open_bi()
                    .await
                    .map_err(|err| ConnectError::Io(format!("{}: {err}", target.key())))?
            }
        };
        // A stream error says only "connection lost"; the connection knows why.
        let io = |err: &dyn std::fmt::Display| match connection.close_reason() {
            Some(reason) => ConnectError::Io(format!("{}: {err}: {reason}", target.key())),
            None => ConnectError::Io(format!("{}: {err}", target.key())),
        };
        match send.write_all(&header).await {
            // The primary stopped reading early: it refused the request, and its answer follows.
            Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
            Err(err) => return Err(io(&err)),
        }
        let _ = send.finish();
        let response = match tokio::time::timeout(
            self.options.handshake_timeout,
            read_response(&mut recv, request.kind()),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(HeaderError::Io(err))) => return Err(io(&err)),
            Ok(Err(err)) => {
                return Err(ConnectError::Protocol(format!(
                    "{}: bad response header: {err}",
                    target.key()
                )))
            }
            Err(_) => {
                // A live primary answers at once; this connection is broken.
                connection.close(UNRESPONSIVE, b"no response header in time");
                return Err(ConnectError::Io(format!(
                    "{}: no response header in time",
                    target.key()
                )));
            }
        };
        if let Response::Refused { status, message } = response {
            return Err(ConnectError::Refused {
                status,
                message: message.trim().to_string(),
            });
        }
        Ok((response, recv))
    }
}

impl Connector for QuicConnector {
    fn subscribe<'a>(
        &'a self,
        url: &'a str,
        request: &'a StreamRequest,
    ) -> BoxFuture<'a, Result<StreamResponse, ConnectError>> {
        Box::pin(async move {
            let (response, recv) = self.call(url, Request::Subscribe(request)).await?;
            match response {
                Response::Stream {
                    node_id,
                    cluster_id,
                    epoch,
                    features,
                } => Ok(StreamResponse {
                    node_id,
                    cluster_id,
                    epoch,
                    features,
                    body: Box::pin(RecvBody::new(recv)),
                }),
                _ => Err(ConnectError::Protocol(
                    "the primary answered a subscription with something else".to_string(),
                )),
            }
        })
    }

    fn info<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<NodeInfo, ConnectError>> {
        Box::pin(async move {
            match self.call(url, Request::Info).await? {
                (Response::Info(json), _) => serde_json::from_slice(&json)
                    .map_err(|err| ConnectError::Protocol(format!("bad node info: {err}"))),
                _ => Err(ConnectError::Protocol(
                    "the primary answered info with something else".to_string(),
                )),
            }
        })
    }

    fn handoff<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(async move {
            match self.call(url, Request::Handoff(node_id)).await? {
                (Response::HandedOff, _) => Ok(()),
                _ => Err(ConnectError::Protocol(
                    "the primary answered a handoff with something else".to_string(),
                )),
            }
        })
    }

    fn ack<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
        positions: &'a BTreeMap<String, Pos>,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(async move {
            match self.call(url, Request::Ack(node_id, positions)).await? {
                (Response::Acked, _) => Ok(()),
                _ => Err(ConnectError::Protocol(
                    "the primary answered an ack with something else".to_string(),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_host_and_port() {
        let t = Target::parse("quic://node-a:20202").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("node-a", 20202));
        let t = Target::parse("quic://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.key(), "[::1]:9");
        for bad in [
            "http://node-a:1",
            "quic://node-a",
            "quic://:1",
            "quic://node-a:x",
            "quic://node-a:70000",
            "quic://[::1:1",
            "quic://node-a:1/stream",
            "quic://user@node-a:1",
            "quic://",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(ConnectError::BadUrl(_))),
                "{bad}"
            );
        }
    }
}
