//! The HTTP server: `POST /stream`, `POST /ack`, `GET /info` and `GET /metrics` over a [`Service`], in
//! cleartext or TLS, with an optional token.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ltxd_protocol::wire::decode_positions;
use ltxd_protocol::{
    format_node_id, parse_node_id, Features, Pos, Promotion, Refusal, Service, StreamRequest,
    StreamResponse, CLUSTER_ID_HEADER, EPOCH_HEADER, FEATURES_HEADER, NODE_ID_HEADER,
};
use ltxd_transport_security::{ServerTls, Token};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::body::{Guarded, StreamingBody};
use crate::limits::{AcceptBackoff, HttpLimits, IdleClock, RateLimitedWarning, WARNING_INTERVAL};

/// The largest position map accepted (bytes).
const MAX_REQUEST_BODY: usize = 16 << 20;
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection whose TLS handshake failed is kept open so that the client reads why.
const LINGER: Duration = Duration::from_secs(1);
/// How many bytes of a response HTTP/2 buffers per stream beyond what the socket takes: a
/// replica that stops reading holds this much, on top of the service's own buffer.
const SEND_BUFFER: usize = 128 << 10;
/// The ALPN protocols the server offers over TLS, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The `Content-Type` of `GET /metrics`: Prometheus's text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How a server secures its connections: TLS, a token, both, or neither.
///
/// The default is neither, LiteFS's cleartext mode; whether that is allowed is the caller's
/// decision.
#[derive(Clone, Debug, Default)]
pub struct HttpSecurity {
    /// TLS on every connection, from `ltxd_transport_security::server_config`. Its ALPN list is
    /// replaced by `h2` and `http/1.1`; when it demands client certificates (mTLS), a client
    /// without one fails the handshake. `None` serves cleartext HTTP/1.1 and HTTP/2 (prior
    /// knowledge).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The token every request must present as `Authorization: Bearer <token>`. A request
    /// without it, or with another, is refused with 401 before it reaches the service.
    pub token: Option<Token>,
    /// True when `tls` was built to refuse clients without a verified certificate
    /// ([`ServerTls::verifies_clients`]). Ignored without `tls`.
    pub tls_verifies_clients: bool,
}

impl HttpSecurity {
    /// TLS from `ltxd_transport_security::server_tls` (if any) and a token (if any).
    pub fn new(tls: Option<ServerTls>, token: Option<Token>) -> Self {
        let tls_verifies_clients = tls.as_ref().is_some_and(|tls| tls.verifies_clients);
        HttpSecurity {
            tls: tls.map(|tls| Arc::new(tls.config)),
            token,
            tls_verifies_clients,
        }
    }

    /// True when every request is authenticated by what the server actually runs: a token, or
    /// TLS that verifies client certificates. A flag in a configuration file that built no
    /// TLS authenticates nothing.
    pub fn authenticates(&self) -> bool {
        self.token.is_some() || (self.tls.is_some() && self.tls_verifies_clients)
    }
}

/// A running server. Dropping it does not stop it; call [`HttpServer::shutdown`].
pub struct HttpServer {
    local_addr: SocketAddr,
    open: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many client connections are open (including those still in their TLS handshake).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Stops accepting connections and closes the open ones, which ends their streams. It
    /// returns once every connection is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Everything a connection's task needs.
struct Shared {
    service: Arc<dyn Service>,
    tls: Option<TlsAcceptor>,
    token: Option<Token>,
    limits: HttpLimits,
    /// How many `/stream` subscriptions each peer address holds open.
    streams: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One `/stream` subscription of a peer, counted while it lives.
struct PeerStream {
    streams: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl PeerStream {
    /// Counts a new subscription of `peer`, unless it holds `max` already.
    fn take(shared: &Shared, peer: IpAddr) -> Option<PeerStream> {
        let mut streams = shared.streams.lock().unwrap_or_else(|e| e.into_inner());
        let count = streams.entry(peer).or_insert(0);
        if *count >= shared.limits.max_streams_per_peer {
            return None;
        }
        *count += 1;
        Some(PeerStream {
            streams: Arc::clone(&shared.streams),
            peer,
        })
    }
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = streams.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                streams.remove(&self.peer);
            }
        }
    }
}

/// A connection's [`IdleClock`], shared by its requests and its watchdog.
type Clock = Arc<Mutex<IdleClock>>;

/// A request in flight on a connection, until its response is sent in full or dropped.
struct InFlight(Clock);

impl InFlight {
    fn start(clock: &Clock) -> InFlight {
        clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request_started();
        InFlight(Arc::clone(clock))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request_ended(Instant::now());
    }
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `service` on `listener` until [`HttpServer::shutdown`], secured as `security` says,
/// with the default [`HttpLimits`]. It must be called inside a tokio runtime.
pub fn serve(
    listener: TcpListener,
    service: Arc<dyn Service>,
    security: HttpSecurity,
) -> std::io::Result<HttpServer> {
    serve_with_limits(listener, service, security, HttpLimits::default())
}

/// [`serve`] with `limits` on what clients may hold.
pub fn serve_with_limits(
    listener: TcpListener,
    service: Arc<dyn Service>,
    security: HttpSecurity,
    limits: HttpLimits,
) -> std::io::Result<HttpServer> {
    let local_addr = listener.local_addr()?;
    let tls = security.tls.map(|config| {
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shared = Arc::new(Shared {
        service,
        tls,
        token: security.token,
        limits,
        streams: Arc::default(),
    });
    let open = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let counter = Arc::clone(&open);
    let task = tokio::spawn(accept_loop(listener, shared, slots, counter, stopped));
    Ok(HttpServer {
        local_addr,
        open,
        stop,
        task,
    })
}

/// Accepts connections until `stopped`, at most as many at once as `slots` has permits, and
/// serves each on a task of its own.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    counter: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    let mut accept_warning = RateLimitedWarning::new(WARNING_INTERVAL);
    let mut full_warning = RateLimitedWarning::new(WARNING_INTERVAL);
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(times) = full_warning.hit(Instant::now()) {
                    tracing::warn!(
                        limit = shared.limits.max_connections,
                        times,
                        "HTTP connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                    _ = stopped.changed() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.accepted();
                    accepted
                }
                Err(err) => {
                    let wait = backoff.failed(&err);
                    if let Some(times) = accept_warning.hit(Instant::now()) {
                        tracing::warn!(%err, times, ?wait, "accept failed");
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = stopped.changed() => break,
                        }
                    }
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let open = OpenConnection::new(&counter);
        let stopped = stopped.clone();
        connections.spawn(guarded_connection(
            stream,
            peer,
            shared,
            stopped,
            (open, permit),
        ));
    }
    // Every connection's task sees the stop too; wait until each has closed its socket.
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends, the server stops, or it has no request in flight for
/// longer than the limits allow. `held` is released when it closes.
async fn guarded_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    held: (OpenConnection, OwnedSemaphorePermit),
) {
    let clock: Clock = Arc::new(Mutex::new(IdleClock::new(Instant::now())));
    let limits = shared.limits.clone();
    tokio::select! {
        () = connection(stream, peer, shared, Arc::clone(&clock)) => {}
        () = idle_watchdog(&clock, &limits) => {
            tracing::debug!(%peer, "closing a connection with no request in flight");
        }
        _ = stopped.changed() => {}
    }
    drop(held);
}

/// Returns once the connection has had no request in flight for longer than `limits` allow.
async fn idle_watchdog(clock: &Clock, limits: &HttpLimits) {
    loop {
        let deadline = clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deadline(limits);
        match deadline {
            Some(deadline) if deadline <= Instant::now() => return,
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            // A request's end moves the deadline to at least `idle_timeout` from now.
            None => tokio::time::sleep(limits.idle_timeout).await,
        }
    }
}

/// Completes the TLS handshake, if any, then serves the connection's requests.
async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, clock: Clock) {
    let Some(acceptor) = &shared.tls else {
        return serve_connection(stream, peer, shared, clock).await;
    };
    let accepting = acceptor.accept(stream).into_fallible();
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accepting).await {
        Err(_) => {
            tracing::warn!(%peer, "TLS connection refused: no handshake in time");
        }
        Ok(Err((err, stream))) => {
            tracing::warn!(%peer, %err, "TLS connection refused: the handshake failed");
            linger(stream).await;
        }
        Ok(Ok(stream)) => {
            tracing::debug!(%peer, "TLS connection accepted");
            serve_connection(stream, peer, shared, clock).await;
        }
    }
}

/// Closes a connection whose TLS handshake failed without resetting it. Under TLS 1.3 a client
/// sends its certificate after its handshake is done on its side, so it may already be sending
/// requests when the server's alert leaves; closing at once would make its kernel discard the
/// alert on the reset. Reading and dropping its bytes for a moment lets it read why it was
/// refused.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut discard = [0; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection.
async fn serve_connection<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, clock: Clock)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout = shared.limits.header_read_timeout;
    let handler = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let in_flight = InFlight::start(&clock);
        async move {
            let response = route(&shared, peer, request).await;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Guarded::new(body, in_flight).boxed_unsync()),
            )
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(SEND_BUFFER);
    if let Err(err) = builder
        .serve_connection(TokioIo::new(stream), handler)
        .await
    {
        tracing::debug!(%peer, %err, "connection ended with an error");
    }
}

/// Why `headers` do not carry `expected`, if they do not.
fn unauthorized(expected: &Token, headers: &HeaderMap) -> Option<&'static str> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()));
    match presented {
        None => Some("no token presented"),
        Some(presented) if !expected.verify(presented) => Some("wrong token"),
        Some(_) => None,
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(6)?;
    let token = token.strip_prefix(b" ")?.trim_ascii_start();
    (scheme.eq_ignore_ascii_case(b"Bearer") && !token.is_empty()).then_some(token)
}

async fn route(shared: &Shared, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    if let Some(why) = shared
        .token
        .as_ref()
        .and_then(|expected| unauthorized(expected, request.headers()))
    {
        tracing::warn!(
            %peer,
            why,
            method = %request.method(),
            path = request.uri().path(),
            "HTTP request refused: unauthorized"
        );
        let mut response = refused(&Refusal::Unauthorized(why.to_string()));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let service = &*shared.service;
    let info = service.info();
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::POST, "/stream") => match PeerStream::take(shared, peer.ip()) {
            Some(slot) => stream(service, request)
                .await
                .map(|body| Guarded::new(body, slot).boxed_unsync()),
            None => {
                tracing::info!(%peer, "stream refused: too many streams from this peer");
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many streams from this peer",
                )
            }
        },
        (&Method::GET, "/info") => {
            let mut json = serde_json::to_string_pretty(&info).unwrap_or_default();
            json.push('\n');
            let mut response = Response::new(full(json));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full(service.metrics()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            response
        }
        (&Method::POST, "/handoff") => handoff(service, request.uri().query()).await,
        (&Method::POST, "/ack") => ack(service, request).await,
        (&Method::POST, "/promote") => match service.promote().await {
            Ok(Promotion::AlreadyPrimary) => Response::new(full("already primary\n".into())),
            Ok(Promotion::HandedOff) => Response::new(full("handed off\n".into())),
            Err(refusal) => {
                tracing::info!(%refusal, "promotion refused");
                refused(&refusal)
            }
        },
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    if let Some(cluster_id) = info
        .cluster_id
        .and_then(|id| header::HeaderValue::from_str(&id).ok())
    {
        response.headers_mut().insert(CLUSTER_ID_HEADER, cluster_id);
    }
    response
}

async fn stream(service: &dyn Service, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let node_id = match headers
        .get(NODE_ID_HEADER)
        .map(|v| v.to_str().ok().and_then(parse_node_id))
    {
        None => 0,
        Some(Some(id)) => id,
        Some(None) => return error(StatusCode::BAD_REQUEST, "invalid Litefs-Id"),
    };
    let features = headers
        .get(FEATURES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or(Features::NONE, Features::from_header);
    let filter = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("filter="))
            .map(StreamRequest::parse_filter)
    });
    let positions = match position_map(request.into_body()).await {
        Ok(positions) => positions,
        Err(response) => return response,
    };
    let request = StreamRequest {
        node_id,
        filter,
        positions,
        features,
    };
    match service.subscribe(request) {
        Ok(accepted) => streaming(accepted),
        Err(refusal) => {
            tracing::info!(node = format_node_id(node_id), %refusal, "stream refused");
            refused(&refusal)
        }
    }
}

/// The position map a `/stream` or `/ack` request carries as its body, or the 400 response
/// that says why it cannot be read.
async fn position_map(body: Incoming) -> Result<BTreeMap<String, Pos>, Response<Body>> {
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {err}"),
            ))
        }
    };
    decode_positions(&body)
        .map_err(|err| error(StatusCode::BAD_REQUEST, &format!("bad position map: {err}")))
}

/// `POST /handoff?nodeID=<hex>`: hands the lease to that replica.
async fn handoff(service: &dyn Service, query: Option<&str>) -> Response<Body> {
    let node_id = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("nodeID="))
            .and_then(parse_node_id)
    });
    let Some(node_id) = node_id else {
        return error(StatusCode::BAD_REQUEST, "invalid nodeID");
    };
    match service.handoff(node_id).await {
        Ok(()) => Response::new(full(String::new())),
        Err(refusal) => {
            tracing::info!(node = format_node_id(node_id), %refusal, "handoff refused");
            refused(&refusal)
        }
    }
}

/// `POST /ack`: replica `Litefs-Id` has the databases of the position map in its body durably
/// in its log (synchronous replication, an ltxd extension).
async fn ack(service: &dyn Service, request: Request<Incoming>) -> Response<Body> {
    let node_id = request
        .headers()
        .get(NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_node_id);
    let Some(node_id) = node_id else {
        return error(StatusCode::BAD_REQUEST, "invalid Litefs-Id");
    };
    let positions = match position_map(request.into_body()).await {
        Ok(positions) => positions,
        Err(response) => return response,
    };
    match service.ack(node_id, positions) {
        Ok(()) => Response::new(full(String::new())),
        Err(refusal) => {
            tracing::debug!(node = format_node_id(node_id), %refusal, "ack refused");
            refused(&refusal)
        }
    }
}

/// A refusal as a plain-text error with its status.
fn refused(refusal: &Refusal) -> Response<Body> {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, &refusal.to_string())
}

fn streaming(accepted: StreamResponse) -> Response<Body> {
    let mut response = Response::new(StreamingBody(accepted.body).boxed_unsync());
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(NODE_ID_HEADER, format_node_id(accepted.node_id));
    set(FEATURES_HEADER, accepted.features.to_header());
    if let Some(epoch) = accepted.epoch {
        set(EPOCH_HEADER, epoch.to_string());
    }
    if let Some(cluster_id) = accepted.cluster_id {
        set(CLUSTER_ID_HEADER, cluster_id);
    }
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text error, as Go's `http.Error` writes it.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_value() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"bearer   s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"BEARER \xff\x00"), Some(&b"\xff\x00"[..]));
        for refused in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer    ",
            b"Bearers3cret",
            b"Basic czNjcmV0",
            b"Bear s3cret",
        ] {
            assert_eq!(bearer_token(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn unauthorized_says_why() {
        let token = Token::new("s3cret").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(unauthorized(&token, &headers), Some("no token presented"));
        headers.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert_eq!(unauthorized(&token, &headers), Some("no token presented"));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert_eq!(unauthorized(&token, &headers), Some("wrong token"));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert_eq!(unauthorized(&token, &headers), None);
    }
}
