//! The QUIC server: one task per connection, one per stream, each serving a [`Service`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ltxd_protocol::{format_node_id, ByteStream, Refusal, Service, StreamRequest};
use ltxd_transport_security::Token;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, VarInt};
use tokio::task::JoinHandle;

use crate::header::{
    encode_response, read_ack, read_handoff, read_preamble, read_subscription, HeaderError, Kind,
    Response,
};
use crate::{QuicError, QuicOptions, ALPN};

/// The stream error code sent when the service's frames fail.
const SERVICE_FAILED: VarInt = VarInt::from_u32(1);
/// The stream error code sent when a header cannot be answered.
const HEADER_FAILED: VarInt = VarInt::from_u32(2);
/// The connection close code when the server shuts down.
const SHUTTING_DOWN: VarInt = VarInt::from_u32(0);
/// How long shutdown waits for closing connections to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running server. Dropping it does not stop it; call [`QuicServer::shutdown`].
pub struct QuicServer {
    local_addr: SocketAddr,
    endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl QuicServer {
    /// The UDP address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many replica connections are open.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Stops accepting connections and closes the open ones, which ends their streams. It
    /// returns once the UDP port is free to bind again (or after a grace period of 2 s), so that
    /// a new server can take the same address at once.
    pub async fn shutdown(self) {
        self.endpoint.close(SHUTTING_DOWN, b"server shutting down");
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let _ = tokio::time::timeout_at(deadline, self.endpoint.wait_idle()).await;
        drop(self.endpoint);
        // quinn releases the socket from its driver task, after the last handle is gone.
        while std::net::UdpSocket::bind(self.local_addr).is_err()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Everything a stream's task needs.
struct Shared {
    service: Arc<dyn Service>,
    token: Option<Token>,
    header_timeout: Duration,
}

/// Serves `service` on UDP `addr` until [`QuicServer::shutdown`]. It must be called inside a
/// tokio runtime.
///
/// `tls` comes from `ltxd_transport_security::server_config`; its ALPN list is replaced by
/// [`ALPN`]. When `token` is set, every stream must present it, or it is refused with status 401.
pub fn serve(
    addr: SocketAddr,
    service: Arc<dyn Service>,
    mut tls: rustls::ServerConfig,
    token: Option<Token>,
    options: &QuicOptions,
) -> Result<QuicServer, QuicError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(options.transport(options.max_streams)?);
    let endpoint =
        Endpoint::server(config, addr).map_err(|source| QuicError::Bind { addr, source })?;
    let local_addr = endpoint
        .local_addr()
        .map_err(|source| QuicError::Bind { addr, source })?;
    let shared = Arc::new(Shared {
        service,
        token,
        header_timeout: options.handshake_timeout,
    });
    let accepting = endpoint.clone();
    let max_connections = options.max_connections;
    let task = tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            if accepting.open_connections() >= max_connections {
                // Refused before the handshake: no TLS work and no state for it.
                tracing::debug!(
                    peer = %incoming.remote_address(),
                    max_connections,
                    "QUIC connection refused: the connection limit is reached"
                );
                incoming.refuse();
                continue;
            }
            tokio::spawn(connection(incoming, Arc::clone(&shared)));
        }
    });
    Ok(QuicServer {
        local_addr,
        endpoint,
        task,
    })
}

/// Completes a handshake, then serves each stream the replica opens.
async fn connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let peer = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(err) => {
            tracing::warn!(%peer, %err, "QUIC connection refused: the handshake failed");
            return;
        }
    };
    tracing::debug!(%peer, "QUIC connection accepted");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(stream(send, recv, peer, Arc::clone(&shared)));
            }
            Err(err) => {
                tracing::debug!(%peer, %err, "QUIC connection ended");
                return;
            }
        }
    }
}

/// Answers one stream's request.
async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let deadline = tokio::time::Instant::now() + shared.header_timeout;
    let preamble = match header(deadline, read_preamble(&mut recv), &mut send, peer).await {
        Some(preamble) => preamble,
        None => return,
    };
    if let Some(expected) = &shared.token {
        let why = match &preamble.token {
            None => Some("no token presented"),
            Some(presented) if !expected.verify(presented) => Some("wrong token"),
            Some(_) => None,
        };
        if let Some(why) = why {
            tracing::warn!(%peer, why, kind = ?preamble.kind, "QUIC stream refused: unauthorized");
            return refuse_with(&mut send, &Refusal::Unauthorized(why.to_string())).await;
        }
    }
    match preamble.kind {
        Kind::Info => {
            drop(recv);
            info(send, &shared).await;
        }
        Kind::Handoff => {
            let Some(node_id) = header(deadline, read_handoff(&mut recv), &mut send, peer).await
            else {
                return;
            };
            drop(recv);
            handoff(send, node_id, peer, &shared).await;
        }
        Kind::Ack => {
            let Some((node_id, positions)) =
                header(deadline, read_ack(&mut recv), &mut send, peer).await
            else {
                return;
            };
            drop(recv);
            match shared.service.ack(node_id, positions) {
                Ok(()) => {
                    if respond(&mut send, &Response::Acked).await {
                        let _ = send.finish();
                    }
                }
                Err(refusal) => {
                    let node = format_node_id(node_id);
                    tracing::debug!(%peer, %node, %refusal, "QUIC ack refused");
                    refuse_with(&mut send, &refusal).await;
                }
            }
        }
        Kind::Subscribe => {
            let Some(request) =
                header(deadline, read_subscription(&mut recv), &mut send, peer).await
            else {
                return;
            };
            drop(recv);
            subscribe(send, request, peer, &shared).await;
        }
    }
}

/// Answers `info` with the service's node info.
async fn info(mut send: quinn::SendStream, shared: &Shared) {
    let info = match serde_json::to_vec(&shared.service.info()) {
        Ok(json) => Response::Info(json),
        Err(err) => {
            tracing::warn!(%err, "cannot encode the node info");
            let _ = send.reset(HEADER_FAILED);
            return;
        }
    };
    if respond(&mut send, &info).await {
        let _ = send.finish();
    }
}

/// Asks the service to hand the lease to `node_id`, and answers once it has (or has refused).
async fn handoff(mut send: quinn::SendStream, node_id: u64, peer: SocketAddr, shared: &Shared) {
    let node = format_node_id(node_id);
    match shared.service.handoff(node_id).await {
        Ok(()) => {
            tracing::info!(%peer, %node, "QUIC handoff under way");
            if respond(&mut send, &Response::HandedOff).await {
                let _ = send.finish();
            }
        }
        Err(refusal) => {
            tracing::info!(%peer, %node, %refusal, "QUIC handoff refused");
            refuse_with(&mut send, &refusal).await;
        }
    }
}

/// Opens a subscription with the service and pumps its frames to the stream.
async fn subscribe(
    mut send: quinn::SendStream,
    request: StreamRequest,
    peer: SocketAddr,
    shared: &Shared,
) {
    let node = format_node_id(request.node_id);
    match shared.service.subscribe(request) {
        Err(refusal) => {
            tracing::info!(%peer, %node, %refusal, "QUIC stream refused");
            refuse_with(&mut send, &refusal).await;
        }
        Ok(accepted) => {
            let response = Response::Stream {
                node_id: accepted.node_id,
                cluster_id: accepted.cluster_id,
                epoch: accepted.epoch,
                features: accepted.features,
            };
            if respond(&mut send, &response).await {
                tracing::debug!(%peer, %node, "QUIC stream open");
                pump(accepted.body, send, peer).await;
            }
        }
    }
}

/// Reads part of a request header by `deadline`. On failure it answers (400 for a malformed
/// header), logs why, and returns `None`.
async fn header<T>(
    deadline: tokio::time::Instant,
    read: impl std::future::Future<Output = Result<T, HeaderError>>,
    send: &mut quinn::SendStream,
    peer: SocketAddr,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(value)) => Some(value),
        Err(_) => {
            tracing::info!(%peer, "QUIC stream refused: no request header in time");
            let _ = send.reset(HEADER_FAILED);
            None
        }
        Ok(Err(err)) if err.is_stream_failure() => {
            tracing::debug!(%peer, %err, "QUIC stream failed before its request");
            None
        }
        Ok(Err(err)) => {
            tracing::info!(%peer, %err, "QUIC stream refused: bad request header");
            refuse(send, 400, &format!("bad request header: {err}")).await;
            None
        }
    }
}

/// Writes a response header; false if the stream cannot carry it.
async fn respond(send: &mut quinn::SendStream, response: &Response) -> bool {
    let bytes = match encode_response(response) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(%err, "cannot encode a response header");
            let _ = send.reset(HEADER_FAILED);
            return false;
        }
    };
    match send.write_all(&bytes).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, "the replica went away before the response header");
            false
        }
    }
}

/// Writes the service's refusal, with its status, and ends the stream.
async fn refuse_with(send: &mut quinn::SendStream, refusal: &Refusal) {
    refuse(send, refusal.status(), &refusal.to_string()).await;
}

/// Writes a refusal and ends the stream.
async fn refuse(send: &mut quinn::SendStream, status: u16, message: &str) {
    let refused = Response::Refused {
        status,
        message: message.to_string(),
    };
    if respond(send, &refused).await {
        let _ = send.finish();
    }
}

/// Copies the service's frames to the stream until either side ends. The body is dropped as soon
/// as the replica stops reading, so the service learns at once that its subscriber is gone.
async fn pump(mut body: ByteStream, mut send: quinn::SendStream, peer: SocketAddr) {
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)) => next,
            stopped = send.stopped() => {
                tracing::debug!(%peer, ?stopped, "the replica stopped reading");
                return;
            }
        };
        let bytes: Bytes = match next {
            None => {
                let _ = send.finish();
                return;
            }
            Some(Err(err)) => {
                tracing::warn!(%peer, %err, "the stream's frames failed; resetting the stream");
                let _ = send.reset(SERVICE_FAILED);
                return;
            }
            Some(Ok(bytes)) => bytes,
        };
        if let Err(err) = send.write_chunk(bytes).await {
            tracing::debug!(%peer, %err, "the replica went away");
            return;
        }
    }
}
