//! One request through the proxy: [`route`](super::route) decides, this module waits, sends
//! and answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use ltxd_transport_security::Token;

use super::counters::ProxyCounters;
use super::primary::PrimaryProxy;
use super::route::{self, Action, NodeFacts, RequestFacts, Rules};
use super::upstream::{PooledBody, Upstream};
use super::{cookie, headers};
use crate::log::Log;
use crate::replication::NodeState;

/// The largest request body the proxy passes on (bytes); a larger one gets 413.
pub const MAX_REQUEST_BODY: usize = 64 << 20;

/// How long a read carrying `__txid` waits for the node to reach it, as LiteFS's
/// `DefaultPollTXIDTimeout`.
pub const TXID_WAIT: Duration = Duration::from_secs(5);

/// How often a forwarded write looks for a primary while none is known.
const PRIMARY_POLL: Duration = Duration::from_millis(20);

/// A response body: the upstream's, streamed, or one the proxy wrote.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// The settings a request is handled with, from `proxy.*`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How requests are routed.
    pub rules: Rules,
    /// `proxy.db`.
    pub db: String,
    /// `proxy.max-lag`; zero disables the check.
    pub max_lag: Duration,
    /// `proxy.primary-redirect-timeout`: how long a write waits for a primary.
    pub primary_redirect_timeout: Duration,
    /// `proxy.debug`.
    pub debug: bool,
    /// The cluster's HTTP token, sent to the primary's proxy with forwarded requests.
    pub token: Option<Token>,
}

/// The connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// True over TLS.
    pub tls: bool,
    /// True over TLS with a client certificate verified against the cluster's CA (mTLS).
    pub verified_peer: bool,
}

/// Everything the proxy shares between requests.
pub struct Proxy {
    settings: Settings,
    node: Arc<NodeState>,
    log: Arc<Log>,
    target: Arc<Upstream>,
    primary: PrimaryProxy,
    counters: Arc<ProxyCounters>,
}

impl Proxy {
    /// The proxy in front of `target`.
    pub fn new(
        settings: Settings,
        node: Arc<NodeState>,
        log: Arc<Log>,
        target: Upstream,
        primary: PrimaryProxy,
        counters: Arc<ProxyCounters>,
    ) -> Proxy {
        Proxy {
            settings,
            node,
            log,
            target: Arc::new(target),
            primary,
            counters,
        }
    }

    /// Answers `request`. Every failure becomes a response; nothing here panics on input.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: Connection,
    ) -> Response<ProxyBody> {
        let too_large = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .is_some_and(|length| length > MAX_REQUEST_BODY as u64);
        if too_large {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "proxy: request body too large",
            );
        }
        let trusted = self.trusts(&request, connection);
        let (mut parts, body) = request.into_parts();
        let hops = headers::hops(&parts.headers);
        headers::forward_request(
            &mut parts.headers,
            connection.peer.ip(),
            connection.tls,
            trusted,
        );
        let request = Request::from_parts(parts, Limited::new(body, MAX_REQUEST_BODY));
        let txid = cookie::txid(request.headers());
        let facts = RequestFacts {
            method: request.method(),
            path: request.uri().path(),
            txid,
            hops,
        };
        let mut action = route::decide(&self.settings.rules, &facts, &self.node_facts(txid));
        if let Action::WaitFor(txid) = action {
            self.counters.waited.inc();
            let reached = self.wait_for(txid).await;
            if !reached {
                self.counters.timed_out.inc();
            }
            let facts = RequestFacts {
                method: request.method(),
                path: request.uri().path(),
                txid: Some(txid),
                hops,
            };
            action = route::after_wait(&self.settings.rules, &facts, reached);
        }
        if self.settings.debug {
            tracing::info!(method = %request.method(), path = request.uri().path(), ?action, "proxy");
        }
        match action {
            Action::Health => self.health(),
            Action::Target { set_cookie } => self.to_target(request, set_cookie).await,
            Action::Forward => self.forward(request, hops).await,
            Action::FlyReplay => self.fly_replay(request).await,
            Action::TooManyHops | Action::WaitFor(_) => {
                retry_later("proxy: forwarded too many times; no primary takes the request")
            }
        }
    }

    /// True when the request comes from another node's proxy, authenticated: with the
    /// cluster's token, or over mTLS.
    fn trusts(&self, request: &Request<Incoming>, connection: Connection) -> bool {
        if connection.verified_peer {
            return true;
        }
        match (&self.settings.token, request.headers().get(&headers::TOKEN)) {
            (Some(token), Some(presented)) => token.verify(presented.as_bytes()),
            _ => false,
        }
    }

    fn local_txid(&self) -> u64 {
        self.log
            .existing(&self.settings.db)
            .map_or(0, |db| db.head().txid.0)
    }

    fn lag(&self) -> Option<Duration> {
        let lag_ms = self.node.lag_ms(crate::mount::now_ms())?;
        Some(Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)))
    }

    fn lagging(&self) -> bool {
        let max = self.settings.max_lag;
        !max.is_zero() && self.lag().is_some_and(|lag| lag > max)
    }

    /// The node's state, as far as a request with the cookie `txid` needs it: the position and
    /// lag are read on a replica only, and the position only for a request with a cookie.
    fn node_facts(&self, txid: Option<u64>) -> NodeFacts {
        let is_primary = self.node.is_primary();
        NodeFacts {
            is_primary,
            local_txid: if is_primary || txid.is_none() {
                0
            } else {
                self.local_txid()
            },
            lagging: !is_primary && self.lagging(),
        }
    }

    /// Waits until `proxy.db` reaches `txid`, for at most [`TXID_WAIT`].
    async fn wait_for(&self, txid: u64) -> bool {
        let mut changes = self.log.changes();
        let deadline = tokio::time::Instant::now() + TXID_WAIT;
        loop {
            changes.borrow_and_update();
            if self.local_txid() >= txid || self.node.is_primary() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.local_txid() >= txid,
            }
        }
    }

    /// `GET /litefs/health`: 200 unless a replica lags more than `max-lag`.
    fn health(&self) -> Response<ProxyBody> {
        if self.lagging() {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy: replication lag too high",
            );
        }
        let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(b"OK\n"))));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    }

    /// Sends the request to the local application.
    async fn to_target(
        &self,
        request: Request<Limited<Incoming>>,
        set_cookie: bool,
    ) -> Response<ProxyBody> {
        match self.target.send(request).await {
            Ok(response) => {
                let mut response = response.map(Either::Left);
                headers::strip_hop_by_hop(response.headers_mut());
                if set_cookie {
                    self.add_cookie(&mut response);
                }
                response
            }
            Err(err) => {
                self.target.clear();
                tracing::warn!(%err, "proxy: the target failed");
                plain(StatusCode::BAD_GATEWAY, &format!("proxy: target {err}"))
            }
        }
    }

    /// Adds `__txid` with `proxy.db`'s position, when the database exists.
    fn add_cookie(&self, response: &mut Response<ProxyBody>) {
        let Ok(db) = self.log.existing(&self.settings.db) else {
            return;
        };
        let value = cookie::set_cookie(db.head().txid.0, SystemTime::now());
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }

    /// Sends the request to the primary's proxy, waiting up to `primary-redirect-timeout` for a
    /// primary to be known. When this node becomes the primary meanwhile, the local application
    /// takes it.
    async fn forward(
        &self,
        mut request: Request<Limited<Incoming>>,
        hops: u32,
    ) -> Response<ProxyBody> {
        let deadline = Instant::now() + self.settings.primary_redirect_timeout;
        let upstream = loop {
            if self.node.is_primary() {
                let set_cookie =
                    route::may_write(&self.settings.rules, request.method(), request.uri().path());
                return self.to_target(request, set_cookie).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(url) = self.node.primary_url() {
                match self.primary.upstream(&url, left.max(PRIMARY_POLL)).await {
                    Ok(upstream) => break upstream,
                    Err(err) => tracing::debug!(%err, "proxy: the primary's proxy is unknown"),
                }
            }
            if left.is_zero() {
                return retry_later("proxy: no primary is known");
            }
            tokio::time::sleep(PRIMARY_POLL.min(left)).await;
        };
        let map = request.headers_mut();
        map.insert(headers::HOPS, HeaderValue::from(hops + 1));
        if let Some(token) = &self.settings.token {
            if let Ok(value) = HeaderValue::from_bytes(token.as_bytes()) {
                map.insert(headers::TOKEN, value);
            }
        }
        self.counters.forwarded.inc();
        match upstream.send(request).await {
            Ok(response) => {
                let mut response = response.map(Either::Left);
                headers::strip_hop_by_hop(response.headers_mut());
                response
            }
            Err(err) => {
                self.primary.forget();
                tracing::warn!(%err, "proxy: the primary's proxy failed");
                retry_later(&format!("proxy: primary unreachable: {err}"))
            }
        }
    }

    /// LiteFS's answer on a replica: `fly-replay: instance=<primary>`, for Fly.io's edge. When
    /// this node becomes the primary while waiting for one, its application takes the request.
    async fn fly_replay(&self, request: Request<Limited<Incoming>>) -> Response<ProxyBody> {
        let deadline = Instant::now() + self.settings.primary_redirect_timeout;
        let hostname = loop {
            if self.node.is_primary() {
                let set_cookie =
                    route::may_write(&self.settings.rules, request.method(), request.uri().path());
                return self.to_target(request, set_cookie).await;
            }
            if let Some(hostname) = self.node.primary_hostname() {
                break hostname;
            }
            if Instant::now() >= deadline {
                return retry_later("proxy: no primary is known");
            }
            tokio::time::sleep(PRIMARY_POLL).await;
        };
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        if let Ok(value) = HeaderValue::from_str(&format!("instance={hostname}")) {
            response.headers_mut().insert("fly-replay", value);
        }
        response
    }
}

/// A one-line plain-text answer.
fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 503 with `Retry-After: 1`.
fn retry_later(message: &str) -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
