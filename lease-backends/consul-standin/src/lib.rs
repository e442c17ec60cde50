//! A stand-in for the parts of Consul's HTTP API that ltxd's Consul lease uses, so that the
//! backend can be tested where no Consul can be installed. It is not Consul: one process, no
//! Raft, no agents or health checks, state in memory. It implements, after Consul's documented
//! semantics:
//!
//! - `PUT /v1/session/create` (JSON body: `Name`, `TTL`, `LockDelay`, `Behavior`; other fields
//!   such as `NodeChecks` are accepted and ignored), `PUT /v1/session/renew/<id>` (404 once the
//!   session is gone), `PUT /v1/session/destroy/<id>`, `GET /v1/session/info/<id>`;
//! - TTL expiry after TTL × a multiplier (2 by default: Consul may take up to twice the TTL),
//!   behavior `release` or `delete`, and the lock delay after an invalidation (but not after a
//!   clean release);
//! - `PUT /v1/kv/<key>` with `?acquire=`, `?release=`, `?cas=` or none, and `?flags=`;
//!   `GET /v1/kv/<key>` (404 when missing, else a JSON array with a base64 `Value`, `Session`,
//!   `CreateIndex`, `ModifyIndex`, `LockIndex`, `Flags`); `DELETE /v1/kv/<key>` (with `?cas=`);
//! - blocking queries on `GET /v1/kv/<key>` with `?index=` and `?wait=` (default 5 minutes, at
//!   most 10), and the `X-Consul-Index` header on every KV answer;
//! - an ACL token: when one is configured, every request must carry it in `X-Consul-Token` (or
//!   `?token=`), or gets 403.
//!
//! Differences from Consul, on purpose: the minimum session TTL is configurable (Consul's is 10
//! s; tests use shorter ones); a blocking query waits exactly `wait`, without Consul's random
//! extra of up to `wait`/16; combining `cas`, `acquire` and `release` in one request is refused
//! with 400 rather than resolved; `recurse`, `keys`, `raw`, transactions, consistency modes and
//! everything else Consul has are absent.
//!
//! [`Standin::start`] runs it inside the current tokio runtime (for tests in the same process);
//! the `ltxd-consul-standin` binary runs it on its own (for tests that start processes).

mod duration;
mod state;

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

pub use duration::{format as format_duration, parse as parse_duration};
use state::{Behavior, KvWrite, Refusal, State};

/// How the stand-in behaves where Consul is configurable.
#[derive(Clone, Debug)]
pub struct Options {
    /// The ACL token every request must carry; `None` means no ACLs.
    pub token: Option<String>,
    /// The shortest session TTL accepted (Consul: 10 s).
    pub min_ttl: Duration,
    /// Sessions are invalidated when not renewed for TTL × this (Consul: 2).
    pub ttl_multiplier: u32,
}

impl Default for Options {
    /// Consul's limits: TTLs from 10 s, invalidation after twice the TTL, no ACLs.
    fn default() -> Options {
        Options {
            token: None,
            min_ttl: Duration::from_secs(10),
            ttl_multiplier: 2,
        }
    }
}

/// The longest session TTL Consul accepts.
const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Consul's longest lock delay; longer ones are cut to it.
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The lock delay of a session created without one.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Consul's limit on a KV value, and so on a request body.
const MAX_BODY: usize = 512 * 1024;
/// How long a blocking query waits without `?wait=`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest wait a blocking query may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A running stand-in. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Standin {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Standin {
    /// Listens on `addr` (port 0 picks a free one) and serves in the current tokio runtime.
    pub async fn start(addr: SocketAddr, options: Options) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options));
        let server = tokio::spawn(serve(listener, shared));
        Ok(Standin { addr, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Accepts connections and runs the expiry timer until aborted; aborting it drops the tasks it
/// owns, and so closes every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    tasks.spawn(expire_sessions(Arc::clone(&shared)));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, then go on.
                eprintln!("consul stand-in: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            // A client that goes away mid-request is no concern of the stand-in.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
}

/// Invalidates sessions as their TTLs run out.
async fn expire_sessions(shared: Arc<Shared>) {
    loop {
        let next = shared.state().next_deadline();
        let wait = next.map_or(Duration::from_secs(1), |deadline| {
            deadline.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.schedule.notified() => {}
        }
        let expired = shared.state().expire(Instant::now());
        if expired > 0 {
            shared.changed();
        }
    }
}

/// The state and what the handlers share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    options: Options,
    /// Carries the last index; blocking queries wait for it to change.
    index: watch::Sender<u64>,
    /// Wakes the expiry timer when a session with a TTL is created.
    schedule: Notify,
    /// Makes session IDs unique per server.
    ids: RandomState,
    next_id: AtomicU64,
}

impl Shared {
    fn new(options: Options) -> Shared {
        let state = State::new(options.ttl_multiplier.max(1));
        let (index, _) = watch::channel(state.index());
        Shared {
            state: Mutex::new(state),
            options,
            index,
            schedule: Notify::new(),
            ids: RandomState::new(),
            next_id: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A handler that panicked cannot leave the state half-written (every change is made
        // under one lock and none panics midway), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes blocking queries after a change.
    fn changed(&self) {
        let index = self.state().index();
        self.index.send_replace(index);
    }

    /// A new session ID, shaped like a UUID.
    fn session_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut high = self.ids.build_hasher();
        high.write_u64(n);
        let mut low = self.ids.build_hasher();
        low.write_u64(!n);
        let (high, low) = (high.finish(), low.finish());
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }
}

/// An answer: status and body.
type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json_reply(value: &serde_json::Value) -> Reply {
    let mut response = reply(StatusCode::OK, value.to_string());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn refusal(refusal: Refusal) -> Reply {
    match refusal {
        Refusal::BadRequest(message) => reply(StatusCode::BAD_REQUEST, message),
        Refusal::InvalidSession(message) => reply(StatusCode::INTERNAL_SERVER_ERROR, message),
        Refusal::NotFound(message) => reply(StatusCode::NOT_FOUND, message),
    }
}

fn with_index(mut response: Reply, index: u64) -> Reply {
    response
        .headers_mut()
        .insert("X-Consul-Index", HeaderValue::from(index));
    response
        .headers_mut()
        .insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    response
}

/// The query parameters of a request, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<u64>, Refusal> {
        self.get(name)
            .map(|text| {
                text.parse()
                    .map_err(|_| Refusal::BadRequest(format!("Invalid {name}: {text:?}")))
            })
            .transpose()
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Reply {
    let query = Query::parse(request.uri().query());
    if let Some(token) = &shared.options.token {
        let given = request
            .headers()
            .get("X-Consul-Token")
            .and_then(|value| value.to_str().ok())
            .or_else(|| query.get("token"));
        if given != Some(token.as_str()) {
            return reply(StatusCode::FORBIDDEN, "Permission denied");
        }
    }
    let path = match percent_encoding::percent_decode_str(request.uri().path()).decode_utf8() {
        Ok(path) => path.into_owned(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "path is not UTF-8"),
    };
    let method = request.method().clone();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let result = if let Some(key) = path.strip_prefix("/v1/kv/") {
        kv(shared, &method, key, &query, body).await
    } else if let Some(rest) = path.strip_prefix("/v1/session/") {
        session(shared, &method, rest, body)
    } else {
        Err(Refusal::NotFound(format!("no such endpoint: {path}")))
    };
    result.unwrap_or_else(refusal)
}

fn require(method: &Method, allowed: &[Method]) -> Result<(), Refusal> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(Refusal::BadRequest(format!("method {method} not allowed")))
    }
}

/// `PUT /v1/session/create` and the others under `/v1/session/`.
fn session(shared: &Shared, method: &Method, rest: &str, body: Bytes) -> Result<Reply, Refusal> {
    let now = Instant::now();
    let (action, id) = rest.split_once('/').unwrap_or((rest, ""));
    match action {
        "create" => {
            require(method, &[Method::PUT])?;
            let request = SessionRequest::parse(&body, &shared.options)?;
            let id = shared.session_id();
            let id = shared.state().create_session(
                id,
                request.name,
                request.ttl,
                request.lock_delay,
                request.behavior,
                now,
            );
            shared.schedule.notify_one();
            shared.changed();
            Ok(json_reply(&json!({ "ID": id })))
        }
        "renew" => {
            require(method, &[Method::PUT])?;
            let session = shared.state().renew_session(id, now)?;
            // Renewing moves a deadline later, which the expiry timer finds when it wakes.
            Ok(json_reply(&json!([session_json(&session)])))
        }
        "destroy" => {
            require(method, &[Method::PUT])?;
            shared.state().destroy_session(id, now);
            shared.changed();
            Ok(json_reply(&json!(true)))
        }
        "info" => {
            require(method, &[Method::GET])?;
            let state = shared.state();
            let sessions: Vec<_> = state.session(id).map(session_json).into_iter().collect();
            Ok(with_index(json_reply(&json!(sessions)), state.index()))
        }
        _ => Err(Refusal::NotFound(format!(
            "no such endpoint: /v1/session/{rest}"
        ))),
    }
}

fn session_json(session: &state::Session) -> serde_json::Value {
    json!({
        "ID": session.id,
        "Name": session.name,
        "LockDelay": u64::try_from(session.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "Behavior": session.behavior.name(),
        "TTL": session.ttl.map(format_duration).unwrap_or_default(),
        "CreateIndex": session.create_index,
        "ModifyIndex": session.create_index,
    })
}

/// The body of `PUT /v1/session/create`, as Consul reads it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct SessionBody {
    name: String,
    #[serde(rename = "TTL")]
    ttl: String,
    lock_delay: Option<serde_json::Value>,
    behavior: String,
}

/// A validated session request.
struct SessionRequest {
    name: String,
    ttl: Option<Duration>,
    lock_delay: Duration,
    behavior: Behavior,
}

impl SessionRequest {
    fn parse(body: &[u8], options: &Options) -> Result<SessionRequest, Refusal> {
        let body: SessionBody = if body.is_empty() {
            SessionBody::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Refusal::BadRequest(format!("Request decode failed: {e}")))?
        };
        let ttl = if body.ttl.is_empty() {
            None
        } else {
            let ttl = parse_duration(&body.ttl)
                .ok_or_else(|| Refusal::BadRequest(format!("Invalid TTL: {:?}", body.ttl)))?;
            if ttl < options.min_ttl || ttl > MAX_TTL {
                return Err(Refusal::BadRequest(format!(
                    "Invalid Session TTL '{}', must be between [{}=>{}]",
                    body.ttl,
                    format_duration(options.min_ttl),
                    format_duration(MAX_TTL)
                )));
            }
            Some(ttl)
        };
        let lock_delay = match body.lock_delay {
            None => DEFAULT_LOCK_DELAY,
            Some(serde_json::Value::String(text)) => parse_duration(&text)
                .ok_or_else(|| Refusal::BadRequest(format!("Invalid LockDelay: {text:?}")))?,
            // Consul reads a bare number below 1000 as seconds, and any other as nanoseconds.
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(n) if n < 1000 => Duration::from_secs(n),
                Some(n) => Duration::from_nanos(n),
                None => return Err(Refusal::BadRequest(format!("Invalid LockDelay: {n}"))),
            },
            Some(other) => return Err(Refusal::BadRequest(format!("Invalid LockDelay: {other}"))),
        };
        let behavior = match body.behavior.as_str() {
            "" | "release" => Behavior::Release,
            "delete" => Behavior::Delete,
            other => {
                return Err(Refusal::BadRequest(format!(
                    "Invalid Behavior setting '{other}'"
                )))
            }
        };
        Ok(SessionRequest {
            name: body.name,
            ttl,
            lock_delay: lock_delay.min(MAX_LOCK_DELAY),
            behavior,
        })
    }
}

/// `GET`, `PUT` and `DELETE` on `/v1/kv/<key>`.
async fn kv(
    shared: &Shared,
    method: &Method,
    key: &str,
    query: &Query,
    body: Bytes,
) -> Result<Reply, Refusal> {
    if key.is_empty() {
        return Err(Refusal::BadRequest("Missing key name".into()));
    }
    match *method {
        Method::GET => kv_get(shared, key, query).await,
        Method::PUT => {
            let write = kv_write(query)?;
            let flags = query.number("flags")?;
            let done = shared
                .state()
                .put(key, body.to_vec(), flags, write, Instant::now())?;
            if done {
                shared.changed();
            }
            Ok(json_reply(&json!(done)))
        }
        Method::DELETE => {
            let cas = query.number("cas")?;
            let done = shared.state().delete(key, cas);
            if done {
                shared.changed();
            }
            Ok(json_reply(&json!(done)))
        }
        _ => Err(Refusal::BadRequest(format!("method {method} not allowed"))),
    }
}

/// Which write a `PUT` asks for.
fn kv_write(query: &Query) -> Result<KvWrite, Refusal> {
    let cas = query.number("cas")?;
    let acquire = query.get("acquire");
    let release = query.get("release");
    match (cas, acquire, release) {
        (None, None, None) => Ok(KvWrite::Set),
        (Some(cas), None, None) => Ok(KvWrite::Cas(cas)),
        (None, Some(session), None) => Ok(KvWrite::Acquire(session.to_string())),
        (None, None, Some(session)) => Ok(KvWrite::Release(session.to_string())),
        _ => Err(Refusal::BadRequest(
            "the stand-in does not combine cas, acquire and release".into(),
        )),
    }
}

/// `GET /v1/kv/<key>`, blocking while `?index=` is at least the key's index.
async fn kv_get(shared: &Shared, key: &str, query: &Query) -> Result<Reply, Refusal> {
    let index = query.number("index")?.unwrap_or(0);
    let wait = match query.get("wait") {
        None => DEFAULT_WAIT,
        Some(text) => parse_duration(text)
            .ok_or_else(|| Refusal::BadRequest(format!("Invalid wait time: {text:?}")))?,
    }
    .min(MAX_WAIT);
    if index > 0 {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = shared.index.subscribe();
        while shared.state().key_index(key) <= index {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the server is shutting down: answer with what there is.
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let state = shared.state();
    let index = state.key_index(key);
    let Some(entry) = state.get(key) else {
        return Ok(with_index(reply(StatusCode::NOT_FOUND, ""), index));
    };
    let mut value = json!({
        "LockIndex": entry.lock_index,
        "Key": key,
        "Flags": entry.flags,
        "Value": if entry.value.is_empty() {
            serde_json::Value::Null
        } else {
            json!(base64::engine::general_purpose::STANDARD.encode(&entry.value))
        },
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    });
    if let Some(session) = &entry.session {
        value["Session"] = json!(session);
    }
    Ok(with_index(json_reply(&json!([value])), index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_look_like_uuids_and_differ() {
        let shared = Shared::new(Options::default());
        let a = shared.session_id();
        let b = shared.session_id();
        assert_ne!(a, b);
        let lengths: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn session_requests_follow_consul() {
        let options = Options {
            min_ttl: Duration::from_secs(1),
            ..Options::default()
        };
        let parse = |body: &str| SessionRequest::parse(body.as_bytes(), &options);
        let request = parse(
            r#"{"Name":"n","TTL":"2s","LockDelay":"500ms","Behavior":"delete","NodeChecks":[]}"#,
        )
        .unwrap();
        assert_eq!(request.ttl, Some(Duration::from_secs(2)));
        assert_eq!(request.lock_delay, Duration::from_millis(500));
        assert_eq!(request.behavior, Behavior::Delete);
        let request = parse("").unwrap();
        assert_eq!(request.ttl, None);
        assert_eq!(request.lock_delay, DEFAULT_LOCK_DELAY);
        assert_eq!(request.behavior, Behavior::Release);
        assert_eq!(
            parse(r#"{"LockDelay":5}"#).unwrap().lock_delay,
            Duration::from_secs(5)
        );
        assert!(parse(r#"{"TTL":"500ms"}"#).is_err());
        assert!(parse(r#"{"TTL":"2 days"}"#).is_err());
        assert!(parse(r#"{"Behavior":"explode"}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
