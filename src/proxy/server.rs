//! The proxy's listener: HTTP/1.1 with keep-alive, header limits and a header timeout. When the
//! cluster's HTTP traffic uses TLS, a connection that opens with a TLS handshake is served over
//! TLS with the node's certificate: that is how other nodes' proxies reach this one, while
//! clients keep speaking cleartext HTTP on the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::handler::{Connection, Proxy};

/// The largest request head (request line and headers) accepted, in bytes.
const MAX_HEAD: usize = 64 << 10;
/// The most headers a request may carry.
const MAX_HEADERS: usize = 100;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// TLS for connections from other nodes' proxies.
#[derive(Clone)]
pub struct PeerTls {
    /// The node's HTTP server configuration.
    pub acceptor: TlsAcceptor,
    /// True when it verifies client certificates (mTLS).
    pub verifies_clients: bool,
}

/// The running listener. Dropping it stops accepting.
pub struct ProxyServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ProxyServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `proxy` on `listener`; must be called within a Tokio runtime.
pub fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<PeerTls>,
    read_header_timeout: Duration,
) -> std::io::Result<ProxyServer> {
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (proxy, tls) = (Arc::clone(&proxy), tls.clone());
            tokio::spawn(async move {
                if let Err(err) = connection(stream, peer, proxy, tls, read_header_timeout).await {
                    tracing::debug!(%err, %peer, "proxy: connection ended");
                }
            });
        }
    });
    Ok(ProxyServer { local_addr, task })
}

/// Serves one connection, over TLS when it opens with a handshake and TLS is configured.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    tls: Option<PeerTls>,
    read_header_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let opens_tls = match &tls {
        Some(_) => {
            let peeked = tokio::time::timeout(read_header_timeout, stream.peek(&mut first)).await;
            matches!(peeked, Ok(Ok(1))) && first[0] == TLS_HANDSHAKE
        }
        None => false,
    };
    match tls {
        Some(tls) if opens_tls => {
            let accepted = tokio::time::timeout(read_header_timeout, tls.acceptor.accept(stream))
                .await
                .map_err(|_| "the TLS handshake timed out")??;
            let connection = Connection {
                peer,
                tls: true,
                verified_peer: tls.verifies_clients,
            };
            serve_http(
                TokioIo::new(accepted),
                proxy,
                connection,
                read_header_timeout,
            )
            .await
        }
        _ => {
            let connection = Connection {
                peer,
                tls: false,
                verified_peer: false,
            };
            serve_http(TokioIo::new(stream), proxy, connection, read_header_timeout).await
        }
    }
}

async fn serve_http<I>(
    io: TokioIo<I>,
    proxy: Arc<Proxy>,
    connection: Connection,
    read_header_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, connection).await) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        .serve_connection(io, service)
        .await?;
    Ok(())
}
