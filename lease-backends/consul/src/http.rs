//! A thin client for the few Consul HTTP endpoints the lease uses: sessions (create, renew,
//! destroy) and KV (get, with blocking queries; put with `acquire`, `release` and `cas`).
//! Everything Consul sends back is untrusted: bodies are read up to a bound, and every field is
//! checked before use.

use std::time::Duration;

use base64::Engine as _;
use ltxd_lease::LeaseError;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

/// The most of a response body that is read. Consul's largest KV value is 512 KiB, which
/// base64 and JSON make about 700 KiB.
const MAX_BODY: usize = 1024 * 1024;

/// How much of an error body goes into an error message.
const ERROR_SNIPPET: usize = 200;

/// A Consul agent, as the lease talks to it. Its `Debug` output hides the token.
#[derive(Clone)]
pub(crate) struct Consul {
    http: reqwest::Client,
    /// `scheme://host:port/`, without credentials or path.
    base: Url,
    token: Option<String>,
    /// How long an ordinary request may take.
    timeout: Duration,
}

impl std::fmt::Debug for Consul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consul")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One KV entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pair {
    /// The value (empty when Consul has none).
    pub value: Vec<u8>,
    /// The session that holds the key's lock, if any.
    pub session: Option<String>,
    /// The index of the key's last write.
    pub modify_index: u64,
}

/// A KV entry as Consul sends it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WirePair {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    modify_index: u64,
}

/// The answer to `PUT /v1/session/create`.
#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// What a KV `PUT` does besides writing the value.
pub(crate) enum Put<'a> {
    /// Take the key's lock for this session.
    Acquire(&'a str),
    /// Give up this session's lock.
    Release(&'a str),
    /// Write only if the key's `ModifyIndex` is this (0: only if the key does not exist).
    Cas(u64),
}

/// A response: status, `X-Consul-Index`, and the body (bounded).
struct Reply {
    status: StatusCode,
    index: Option<u64>,
    body: Vec<u8>,
}

impl Consul {
    /// A client for the agent at `base`.
    pub(crate) fn new(
        base: Url,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Consul, LeaseError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| LeaseError::Config(format!("consul HTTP client: {e}")))?;
        Ok(Consul {
            http,
            base,
            token,
            timeout,
        })
    }

    /// The ACL token requests carry.
    #[cfg(test)]
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of `/v1/<segments...>/<key>`, each part percent-encoded.
    fn url(&self, segments: &[&str], key: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear()
                .push("v1")
                .extend(segments)
                .extend(key.split('/').filter(|part| !part.is_empty()));
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
        what: &str,
    ) -> Result<Reply, LeaseError> {
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(|e| failed(what, &e))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(what, &e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(LeaseError::Backend(format!(
                    "consul {what}: the response is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            index,
            body,
        })
    }

    /// Creates a session; returns its ID.
    pub(crate) async fn create_session(
        &self,
        name: &str,
        ttl: Duration,
        lock_delay: Duration,
    ) -> Result<String, LeaseError> {
        let what = "session create";
        let body = serde_json::json!({
            "Name": name,
            "TTL": go_duration(ttl),
            "LockDelay": go_duration(lock_delay),
            "Behavior": "delete",
            // No health checks: the TTL alone decides (LiteFS does the same).
            "NodeChecks": [],
        });
        let url = self.url(&["session", "create"], "");
        let reply = self
            .send(
                Method::PUT,
                url,
                Some(body.to_string().into_bytes()),
                self.timeout,
                what,
            )
            .await?;
        ok(&reply, what)?;
        let created: Created = parse(&reply.body, what)?;
        if created.id.is_empty() || !is_session_id(&created.id) {
            return Err(LeaseError::Backend(format!(
                "consul {what}: not a session ID: {:?}",
                snippet(created.id.as_bytes())
            )));
        }
        Ok(created.id)
    }

    /// Renews a session; `Ok(false)` if it no longer exists.
    pub(crate) async fn renew_session(&self, id: &str) -> Result<bool, LeaseError> {
        let what = "session renew";
        let url = self.url(&["session", "renew", id], "");
        let reply = self
            .send(Method::PUT, url, None, self.timeout, what)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        ok(&reply, what)?;
        Ok(true)
    }

    /// Destroys a session, which releases (here: deletes) the keys it holds.
    pub(crate) async fn destroy_session(&self, id: &str) -> Result<(), LeaseError> {
        let what = "session destroy";
        let url = self.url(&["session", "destroy", id], "");
        let reply = self
            .send(Method::PUT, url, None, self.timeout, what)
            .await?;
        ok(&reply, what)
    }

    /// Reads a key: `None` when it does not exist. With `block`, waits as a blocking query
    /// (`?index=&wait=`) for the key to change past that index. Also returns `X-Consul-Index`.
    pub(crate) async fn get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<Pair>, Option<u64>), LeaseError> {
        let what = "kv get";
        let mut url = self.url(&["kv"], key);
        let mut timeout = self.timeout;
        if let Some((index, wait)) = block {
            url.query_pairs_mut()
                .append_pair("index", &index.to_string())
                .append_pair("wait", &go_duration(wait));
            // Consul may add up to wait/16 to the wait.
            timeout = timeout.saturating_add(wait).saturating_add(wait / 16);
        }
        let reply = self.send(Method::GET, url, None, timeout, what).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.index));
        }
        ok(&reply, what)?;
        let pairs: Vec<WirePair> = parse(&reply.body, what)?;
        let Some(pair) = pairs.into_iter().next() else {
            return Ok((None, reply.index));
        };
        let value = match pair.value {
            None => Vec::new(),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| LeaseError::Backend(format!("consul {what}: bad value: {e}")))?,
        };
        let session = pair.session.filter(|session| !session.is_empty());
        let pair = Pair {
            value,
            session,
            modify_index: pair.modify_index,
        };
        Ok((Some(pair), reply.index))
    }

    /// Writes a key; returns Consul's verdict (`false`: the lock is held elsewhere, the lock
    /// delay runs, the session does not hold the key, or the `cas` index did not match).
    pub(crate) async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        how: Put<'_>,
    ) -> Result<bool, LeaseError> {
        let what = "kv put";
        let mut url = self.url(&["kv"], key);
        match how {
            Put::Acquire(session) => url.query_pairs_mut().append_pair("acquire", session),
            Put::Release(session) => url.query_pairs_mut().append_pair("release", session),
            Put::Cas(index) => url.query_pairs_mut().append_pair("cas", &index.to_string()),
        };
        let reply = self
            .send(Method::PUT, url, Some(value), self.timeout, what)
            .await?;
        ok(&reply, what)?;
        match std::str::from_utf8(&reply.body).map(str::trim) {
            Ok("true") => Ok(true),
            Ok("false") => Ok(false),
            _ => Err(LeaseError::Backend(format!(
                "consul {what}: expected true or false, got {:?}",
                snippet(&reply.body)
            ))),
        }
    }
}

/// Whether `id` has the shape of a Consul session ID (a UUID).
pub(crate) fn is_session_id(id: &str) -> bool {
    let lengths: Vec<usize> = id.split('-').map(str::len).collect();
    lengths == [8, 4, 4, 4, 12] && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// A duration as Go writes one, which Consul parses: `10s`, or `1500ms` when not whole seconds.
pub(crate) fn go_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis().max(1))
    }
}

fn failed(what: &str, error: &reqwest::Error) -> LeaseError {
    LeaseError::Backend(format!("consul {what}: {}", ltxd_lease::error_chain(error)))
}

fn ok(reply: &Reply, what: &str) -> Result<(), LeaseError> {
    match reply.status {
        StatusCode::OK => Ok(()),
        StatusCode::FORBIDDEN => Err(LeaseError::Backend(format!(
            "consul {what}: permission denied (is the ACL token right?): {}",
            snippet(&reply.body)
        ))),
        status => Err(LeaseError::Backend(format!(
            "consul {what}: HTTP {status}: {}",
            snippet(&reply.body)
        ))),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, LeaseError> {
    serde_json::from_slice(body).map_err(|e| {
        LeaseError::Backend(format!(
            "consul {what}: unexpected answer ({e}): {}",
            snippet(body)
        ))
    })
}

/// The start of a body, as printable text, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_SNIPPET)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consul() -> Consul {
        let base = Url::parse("http://consul:8500/").unwrap();
        Consul::new(base, None, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        let url = consul().url(&["kv"], "litefs/my app/lease");
        assert_eq!(
            url.as_str(),
            "http://consul:8500/v1/kv/litefs/my%20app/lease"
        );
        let url = consul().url(&["session", "renew", "a/b?c"], "");
        assert_eq!(
            url.as_str(),
            "http://consul:8500/v1/session/renew/a%2Fb%3Fc"
        );
    }

    #[test]
    fn durations_are_written_as_go_parses_them() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_micros(10)), "1ms");
    }

    #[test]
    fn session_ids_are_uuids() {
        assert!(is_session_id("adf4238a-882b-9ddc-4a9d-5b6758e4159e"));
        assert!(!is_session_id("0"));
        assert!(!is_session_id("adf4238a-882b-9ddc-4a9d-5b6758e4159e/x"));
        assert!(!is_session_id("zzzzzzzz-882b-9ddc-4a9d-5b6758e4159e"));
    }

    #[test]
    fn snippets_are_short_and_printable() {
        let body = [b'a'; 1000];
        assert_eq!(snippet(&body).len(), ERROR_SNIPPET);
        assert_eq!(snippet(b"bad\nthing\x00"), "bad thing");
    }
}
