//! Connections to one upstream (the application, or the primary's proxy): HTTP/1.1 with
//! keep-alive, kept in a pool and reused once a response body has been read to its end.
//!
//! A request is sent again on a new connection only when hyper hands it back unsent (the pooled
//! connection had closed), so no request ever reaches the upstream twice.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A request body on its way upstream: the client's, streamed, with a size limit.
pub type RequestBody = Limited<Incoming>;

/// How long connecting to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most idle connections kept per upstream.
const MAX_IDLE: usize = 256;

/// Why an upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The upstream.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection failed during the exchange.
    #[error("{addr}: {source}")]
    Exchange {
        /// The upstream.
        addr: String,
        /// Why.
        source: hyper::Error,
    },
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One upstream and its idle connections.
pub struct Upstream {
    addr: String,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Upstream {
    /// The upstream at `addr` (`host:port`), over TLS with `tls` when given.
    pub fn new(addr: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Upstream, String> {
        let tls = match tls {
            None => None,
            Some(config) => {
                let host = host_of(addr);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|err| format!("{addr}: not a TLS server name: {err}"))?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(Upstream {
            addr: addr.to_string(),
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` on an idle connection, or a new one, and returns the answer. Its body
    /// gives the connection back to the pool once read to its end.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, pooled) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if let Err(source) = sender.ready().await {
                if pooled {
                    continue;
                }
                return Err(UpstreamError::Exchange {
                    addr: self.addr.clone(),
                    source,
                });
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody {
                        inner: body,
                        done: false,
                        sender: Some(sender),
                        upstream: Arc::clone(self),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if pooled => request = unsent,
                    _ => {
                        return Err(UpstreamError::Exchange {
                            addr: self.addr.clone(),
                            source: err.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// Drops every idle connection (after the upstream failed).
    pub fn clear(&self) {
        self.idle().clear();
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<RequestBody>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle();
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| failed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|err| failed(err.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), tcp);
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| failed("the TLS handshake timed out".to_string()))?
                    .map_err(|err| failed(format!("TLS: {err}")))?;
                Box::new(tls)
            }
        };
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| failed(err.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "proxy: upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// The host of `host:port` (brackets removed from an IPv6 address).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An upstream's response body. Once read to its end, dropping it returns the connection to the
/// pool; a body dropped before its end closes the connection.
pub struct PooledBody {
    inner: Incoming,
    /// True once the body has been read to its end.
    done: bool,
    sender: Option<SendRequest<RequestBody>>,
    upstream: Arc<Upstream>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.done = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.done || self.inner.is_end_stream() {
                self.upstream.checkin(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("node1:8080"), "node1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("node1"), "node1");
    }
}
