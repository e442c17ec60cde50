//! The HTTP client: subscribes to a primary's `/stream` over HTTP/2, with prior knowledge in
//! cleartext (`http://`) or negotiated by ALPN over TLS (`https://`), on one cached connection per
//! primary.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ltxd_protocol::wire::encode_positions;
use ltxd_protocol::{
    format_node_id, parse_node_id, BoxFuture, ConnectError, Connector, Features, NodeInfo, Pos,
    Promotion, StreamRequest, StreamResponse, CLUSTER_ID_HEADER, EPOCH_HEADER, FEATURES_HEADER,
    NODE_ID_HEADER,
};
use ltxd_transport_security::Token;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsConnector;

use crate::body::IncomingBytes;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a primary may take to answer a request's headers; it answers at once when alive.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection pings its primary, even when idle.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest HTTP/2 connection window: each stream is limited by its own window alone, so a
/// subscription that is not being read never holds up another on the same connection.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// How long an error waits for the connection to say why it ended.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(1);
/// The largest `/info` answer read.
const MAX_INFO_BODY: usize = 4 << 20;
/// The largest refusal message read.
const MAX_REFUSAL_BODY: usize = 64 << 10;

/// Reaches primaries over HTTP: `http://host:port` in cleartext (HTTP/2 with prior knowledge, as
/// LiteFS does), `https://host:port` over TLS (ALPN `h2`).
///
/// It keeps one HTTP/2 connection per primary, opened on first use and shared by every later
/// call; a connection that has closed (the primary restarted, keep-alive pings went unanswered)
/// is replaced on the next call. Each subscription and each `info` call is its own stream. Clones
/// share the connections.
#[derive(Clone, Default)]
pub struct HttpConnector {
    tls: Option<TlsConnector>,
    token: Option<Token>,
    connections: Arc<Mutex<HashMap<String, Slot>>>,
}

/// The cached connection to one primary; locked while it is being replaced, so that concurrent
/// calls share one new connection.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl HttpConnector {
    /// A connector for `http://` URLs, which sends no token.
    pub fn new() -> HttpConnector {
        HttpConnector::default()
    }

    /// A connector that uses `tls` for `https://` URLs and presents `token`, when set, as
    /// `Authorization: Bearer <token>` on every request.
    ///
    /// `tls` comes from `ltxd_transport_security::client_config`; its ALPN list is replaced by
    /// `h2`. With `tls` set, the connector takes only `https://` URLs, so that the token never
    /// travels in cleartext by mistake; without it, only `http://` URLs.
    pub fn with_security(tls: Option<rustls::ClientConfig>, token: Option<Token>) -> HttpConnector {
        let tls = tls.map(|mut config| {
            config.alpn_protocols = vec![b"h2".to_vec()];
            TlsConnector::from(Arc::new(config))
        });
        HttpConnector {
            tls,
            token,
            ..HttpConnector::default()
        }
    }

    /// The connection to `target`: the cached one while it is open (and is not `failed`), else a
    /// new one. The flag says whether the connection was reused.
    async fn connection(
        &self,
        target: &Target,
        failed: Option<&Connection>,
    ) -> Result<(Connection, bool), ConnectError> {
        let slot = Arc::clone(
            self.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(target.key.clone())
                .or_default(),
        );
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            let is_failed =
                failed.is_some_and(|failed| failed.driver.id() == connection.driver.id());
            if !is_failed && !connection.sender.is_closed() {
                return Ok((connection.clone(), true));
            }
            tracing::debug!(
                primary = target.key,
                "HTTP/2 connection closed; reconnecting"
            );
        }
        let connection = self.connect(target).await?;
        *slot = Some(connection.clone());
        Ok((connection, false))
    }

    /// Opens a new connection to `target`.
    async fn connect(&self, target: &Target) -> Result<Connection, ConnectError> {
        let name = &target.key;
        let address = target.address();
        let opening = async {
            let stream = TcpStream::connect(&address)
                .await
                .map_err(|err| ConnectError::Io(format!("connecting to {name}: {err}")))?;
            let _ = stream.set_nodelay(true);
            match &target.tls {
                None => Connection::handshake(stream, name).await,
                Some((tls, server_name)) => {
                    let stream = tls
                        .connect(server_name.clone(), stream)
                        .await
                        .map_err(|err| {
                            ConnectError::Io(format!("TLS handshake with {name} failed: {err}"))
                        })?;
                    Connection::handshake(stream, name).await
                }
            }
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| ConnectError::Io(format!("connecting to {name} timed out")))??;
        tracing::debug!(primary = name, "HTTP/2 connection open");
        Ok(connection)
    }

    /// Sends a request to the primary at `url` and waits for the response's headers. A refusal
    /// (any status but 200) is returned as [`ConnectError::Refused`].
    ///
    /// A request that fails on a reused connection (which may have closed just then, unseen), or
    /// that never left, is sent once more on a new connection. Every request is safe to repeat: a
    /// subscription whose connection failed has no stream left to read, and a handoff that did
    /// happen is refused the second time (the node is no longer primary).
    async fn call(
        &self,
        url: &str,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, ConnectError> {
        let target = Target::parse(url, self.tls.as_ref())?;
        let uri = target.endpoint(path_and_query)?;
        if let Some(token) = &self.token {
            headers.insert(header::AUTHORIZATION, bearer(token)?);
        }
        let request = || {
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            request
        };
        let (mut connection, mut reused) = self.connection(&target, None).await?;
        let mut retried = false;
        let response = loop {
            let sent = connection.sender.try_send_request(request());
            match tokio::time::timeout(RESPONSE_TIMEOUT, sent).await {
                Ok(Ok(response)) => break response,
                Ok(Err(err)) if !retried && (reused || err.message().is_some()) => {
                    tracing::debug!(
                        primary = target.key,
                        err = %err.error(),
                        "HTTP/2 request failed; retrying on a new connection"
                    );
                    retried = true;
                    (connection, reused) = self.connection(&target, Some(&connection)).await?;
                }
                Ok(Err(err)) => {
                    return Err(connection.explain(err.into_error(), &target.key).await)
                }
                Err(_) => {
                    // A live primary answers at once; this connection is broken.
                    connection.driver.abort();
                    return Err(ConnectError::Io(format!(
                        "{}: no response in time",
                        target.key
                    )));
                }
            }
        };
        if response.status() != StatusCode::OK {
            return Err(refusal(response).await);
        }
        Ok(response)
    }
}

/// The `Authorization` value that presents `token`, marked sensitive so that HTTP/2 never
/// indexes it.
fn bearer(token: &Token) -> Result<HeaderValue, ConnectError> {
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token.as_bytes());
    let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
        ConnectError::Protocol("the token holds bytes an HTTP header cannot carry".to_string())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The primary a URL names.
struct Target {
    /// `scheme://host:port`, with the port always present: the cache key, and the name in errors.
    key: String,
    /// The host as the URL spells it (an IPv6 address in brackets).
    host: String,
    port: u16,
    /// For `https://`: the connector's TLS settings, and the server name to verify.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Parses `http://host[:port]` or `https://host[:port]`; `https://` only when the connector
    /// has TLS settings (`tls`), and `http://` only when it has none.
    fn parse(url: &str, tls: Option<&TlsConnector>) -> Result<Target, ConnectError> {
        let bad = |why: &str| ConnectError::BadUrl(format!("{url}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let authority = uri.authority().ok_or_else(|| bad("a host is required"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let (port, server_name) = match (uri.scheme_str(), tls) {
            (Some("http"), None) => (80, None),
            (Some("https"), Some(tls)) => {
                let host = authority.host();
                let bare = host
                    .strip_prefix('[')
                    .and_then(|host| host.strip_suffix(']'))
                    .unwrap_or(host);
                let name = ServerName::try_from(bare.to_string())
                    .map_err(|_| bad("the host is not a valid TLS server name"))?;
                (443, Some((tls.clone(), name)))
            }
            (Some("http"), Some(_)) => {
                return Err(bad(
                    "this connector uses TLS, so it takes https:// URLs only",
                ))
            }
            (Some("https"), None) => {
                return Err(bad("https:// needs the connector's TLS settings"))
            }
            _ => return Err(bad("the HTTP transport takes http:// and https:// URLs")),
        };
        let host = authority.host();
        let port = match authority
            .as_str()
            .strip_prefix(host)
            .map(|rest| rest.strip_prefix(':'))
        {
            Some(None) => port,
            Some(Some(port)) => port.parse().map_err(|_| bad("bad port"))?,
            None => return Err(bad("a host is required, and nothing but host:port")),
        };
        let host = host.to_string();
        Ok(Target {
            key: format!("{}://{host}:{port}", uri.scheme_str().unwrap_or_default()),
            host,
            port,
            tls: server_name,
        })
    }

    /// The address to connect to.
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The URL of `path_and_query` on this primary.
    fn endpoint(&self, path_and_query: &str) -> Result<Uri, ConnectError> {
        format!("{}{path_and_query}", self.key)
            .parse()
            .map_err(|_| ConnectError::BadUrl(format!("{}{path_and_query}", self.key)))
    }
}

/// An open HTTP/2 connection to a primary.
#[derive(Clone)]
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The task that drives the connection; aborting it closes the connection.
    driver: AbortHandle,
    /// Why the connection ended, once it has.
    ended: watch::Receiver<Option<Arc<str>>>,
}

impl Connection {
    /// Starts HTTP/2 on `stream` and spawns the task that drives it.
    async fn handshake<S>(stream: S, name: &str) -> Result<Connection, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| {
                ConnectError::Io(format!("HTTP/2 handshake with {name}: {}", chain(&err)))
            })?;
        let (end, ended) = watch::channel(None);
        let name = name.to_string();
        let driver = tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "the connection closed".to_string(),
                Err(err) => chain(&err),
            };
            tracing::debug!(primary = name, reason, "HTTP/2 connection ended");
            end.send_replace(Some(reason.into()));
        })
        .abort_handle();
        Ok(Connection {
            sender,
            driver,
            ended,
        })
    }

    /// The error for a request that failed on this connection. A request's error often says
    /// only that the connection closed; the connection's own error says why (for example, the
    /// TLS alert of a refused client certificate), so it is waited for briefly.
    async fn explain(&self, err: hyper::Error, primary: &str) -> ConnectError {
        let request = chain(&err);
        let mut ended = self.ended.clone();
        let reason =
            tokio::time::timeout(CLOSE_REASON_WAIT, ended.wait_for(|reason| reason.is_some()))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|reason| reason.clone());
        match reason {
            Some(reason) if !request.contains(&*reason) => {
                ConnectError::Io(format!("{primary}: {request}: {reason}"))
            }
            _ => ConnectError::Io(format!("{primary}: {request}")),
        }
    }
}

/// An error and its sources, joined by `: `.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let more = err.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = err.source();
    }
    text
}

/// Reads a whole response body of at most `limit` bytes.
async fn read_body(
    response: http::Response<hyper::body::Incoming>,
    limit: usize,
) -> Result<Bytes, ConnectError> {
    Ok(http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|err| ConnectError::Io(err.to_string()))?
        .to_bytes())
}

/// Reads a refusal's status and message.
async fn refusal(response: http::Response<hyper::body::Incoming>) -> ConnectError {
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_REFUSAL_BODY)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    ConnectError::Refused {
        status,
        message: body,
    }
}

impl Connector for HttpConnector {
    fn subscribe<'a>(
        &'a self,
        url: &'a str,
        request: &'a StreamRequest,
    ) -> BoxFuture<'a, Result<StreamResponse, ConnectError>> {
        Box::pin(async move {
            let path = match request.filter_query() {
                Some(query) => format!("/stream?{query}"),
                None => "/stream".to_string(),
            };
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (NODE_ID_HEADER, format_node_id(request.node_id)),
                (FEATURES_HEADER, request.features.to_header()),
            ] {
                let value = HeaderValue::try_from(value)
                    .map_err(|err| ConnectError::Protocol(format!("{name}: {err}")))?;
                headers.insert(name, value);
            }
            let body = Bytes::from(encode_positions(&request.positions));
            let response = self.call(url, Method::POST, &path, headers, body).await?;
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let node_id = header(NODE_ID_HEADER)
                .as_deref()
                .and_then(parse_node_id)
                .unwrap_or(0);
            let cluster_id = header(CLUSTER_ID_HEADER);
            let features = header(FEATURES_HEADER)
                .as_deref()
                .map_or(Features::NONE, Features::from_header);
            let epoch = match header(EPOCH_HEADER) {
                None => None,
                Some(text) => Some(text.parse().map_err(|_| {
                    ConnectError::Protocol(format!("invalid {EPOCH_HEADER}: {text}"))
                })?),
            };
            Ok(StreamResponse {
                node_id,
                cluster_id,
                epoch,
                features,
                body: Box::pin(IncomingBytes(response.into_body())),
            })
        })
    }

    fn info<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<NodeInfo, ConnectError>> {
        Box::pin(async move {
            let response = self
                .call(url, Method::GET, "/info", HeaderMap::new(), Bytes::new())
                .await?;
            let body = read_body(response, MAX_INFO_BODY).await?;
            serde_json::from_slice(&body).map_err(|err| ConnectError::Protocol(err.to_string()))
        })
    }

    fn handoff<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(async move {
            let path = format!("/handoff?nodeID={}", format_node_id(node_id));
            self.call(url, Method::POST, &path, HeaderMap::new(), Bytes::new())
                .await
                .map(drop)
        })
    }

    fn ack<'a>(
        &'a self,
        url: &'a str,
        node_id: u64,
        positions: &'a BTreeMap<String, Pos>,
    ) -> BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(self.send_ack(url, node_id, positions))
    }
}

impl HttpConnector {
    /// `POST /ack` with the replica's node ID and its positions.
    async fn send_ack(
        &self,
        url: &str,
        node_id: u64,
        positions: &BTreeMap<String, Pos>,
    ) -> Result<(), ConnectError> {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::try_from(format_node_id(node_id))
            .map_err(|err| ConnectError::Protocol(format!("{NODE_ID_HEADER}: {err}")))?;
        headers.insert(NODE_ID_HEADER, value);
        let body = Bytes::from(encode_positions(positions));
        let response = self.call(url, Method::POST, "/ack", headers, body).await?;
        read_body(response, MAX_REFUSAL_BODY).await.map(drop)
    }

    /// Asks the node at `url` to become primary (`POST /promote`): a candidate replica asks its
    /// primary to hand the lease over.
    pub async fn promote(&self, url: &str) -> Result<Promotion, ConnectError> {
        let response = self
            .call(
                url,
                Method::POST,
                "/promote",
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        let body = read_body(response, MAX_REFUSAL_BODY).await?;
        Ok(if body.starts_with(b"already primary") {
            Promotion::AlreadyPrimary
        } else {
            Promotion::HandedOff
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connector's TLS settings (any will do: only their presence matters here).
    fn tls() -> TlsConnector {
        let files = ltxd_transport_security::TlsFiles {
            insecure_dev: true,
            ..Default::default()
        };
        let config = ltxd_transport_security::client_config(&files).unwrap();
        TlsConnector::from(Arc::new(config))
    }

    fn server_name(target: Target) -> Option<ServerName<'static>> {
        target.tls.map(|(_, name)| name)
    }

    #[test]
    fn urls_name_a_primary_and_match_the_connectors_security() {
        let t = Target::parse("http://node-a:20202", None).unwrap();
        assert_eq!(
            (t.key.as_str(), t.address().as_str()),
            ("http://node-a:20202", "node-a:20202")
        );
        assert!(t.tls.is_none());
        let t = Target::parse("http://node-a/", None).unwrap();
        assert_eq!(t.key, "http://node-a:80");
        let tls = tls();
        let t = Target::parse("https://node-a", Some(&tls)).unwrap();
        assert_eq!(t.key, "https://node-a:443");
        assert_eq!(
            server_name(t),
            Some(ServerName::try_from("node-a").unwrap())
        );
        let t = Target::parse("https://[::1]:9", Some(&tls)).unwrap();
        assert_eq!(
            (t.key.as_str(), t.address().as_str()),
            ("https://[::1]:9", "[::1]:9")
        );
        assert_eq!(
            t.endpoint("/stream?filter=a.db").unwrap(),
            "https://[::1]:9/stream?filter=a.db"
        );
        assert_eq!(server_name(t), Some(ServerName::try_from("::1").unwrap()));
        for (bad, tls) in [
            ("https://node-a:1", None),
            ("http://node-a:1", Some(&tls)),
            ("quic://node-a:1", None),
            ("quic://node-a:1", Some(&tls)),
            ("http://user@node-a:1", None),
            ("node-a:1", None),
            ("http://node-a:x", None),
            ("https://node-a:", Some(&tls)),
            ("http://", None),
            ("/stream", None),
        ] {
            assert!(
                matches!(Target::parse(bad, tls), Err(ConnectError::BadUrl(_))),
                "{bad} (tls: {})",
                tls.is_some()
            );
        }
    }

    #[test]
    fn the_token_travels_as_a_sensitive_bearer_value() {
        let value = bearer(&Token::new("s3cret").unwrap()).unwrap();
        assert_eq!(value, "Bearer s3cret");
        assert!(value.is_sensitive());
        let err = bearer(&Token::new("line\nbreak").unwrap()).unwrap_err();
        assert!(!err.to_string().contains("line"), "{err}");
    }
}
