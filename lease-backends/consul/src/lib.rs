//! The Consul lease, with LiteFS's semantics and key layout, over a thin HTTP client.
//!
//! - **Acquire**: create a session (`TTL`, `LockDelay`, `Behavior: delete`, no health checks),
//!   then `PUT <key>?acquire=<session>` with the node's [`PrimaryInfo`] as JSON. If the lock is
//!   held elsewhere the session is destroyed and the answer is [`LeaseError::PrimaryExists`].
//! - **Epoch**: the key's `ModifyIndex` read right after the acquire, with the key's `Session`
//!   checked to be ours. Consul's indexes come from one Raft log and only grow, and every
//!   acquire, by any node, is a new write to the key, so each tenure's index exceeds every
//!   earlier one's. (`LockIndex` would not do: `Behavior: delete` deletes the key when a session
//!   dies, and a recreated key counts its locks from 1 again. `CreateIndex` would not do either:
//!   a key released cleanly stays, so the next holder would get the same one.)
//! - **Renew**: `PUT /v1/session/renew/<session>` (404 means [`LeaseError::Expired`]), then a
//!   read of the key, which must still carry this session and this epoch.
//! - **Release**: `PUT <key>?release=<session>`, then destroy the session. A lease whose key no
//!   longer carries its epoch is not released, so a holder that handed off cannot release the
//!   new holder's lease.
//! - **Primary info**: `GET <key>`; the key names a primary only while a session holds it.
//! - **Watch**: blocking queries on the key (`?index=&wait=`).
//! - **Cluster ID**: `PUT <key>/clusterid?cas=0`, the raw ID as the value, so it is set once.
//! - **Handoff**: the new holder renews the old holder's session and acquires the key again
//!   with it (the same session may re-acquire its own lock), writing its own info; the write
//!   gives a new, greater `ModifyIndex`, which is its epoch.
//!
//! The URL may carry the ACL token as its password and a key prefix as its path, as LiteFS
//! reads it (`https://:token@consul.example.com/prefix/`); an explicit token wins. The token
//! travels in `X-Consul-Token`.

mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ltxd_lease::{BoxFuture, Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};
use reqwest::Url;

use crate::http::{Consul, Pair, Put};

/// LiteFS's default session TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// LiteFS's default lock delay.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(1);
/// The name of the sessions the lease creates.
pub const SESSION_NAME: &str = "ltxd";
/// The key under the lease key that holds the cluster ID (LiteFS's layout).
pub const CLUSTER_ID_SUFFIX: &str = "clusterid";

/// How to reach Consul and what to publish there.
#[derive(Clone)]
pub struct ConsulConfig {
    /// Consul's URL, `http://` or `https://`. Its password, if any, is the ACL token; its path,
    /// if any, is a prefix for the key (`lease.consul.url`).
    pub url: String,
    /// The lease key, one per cluster (`lease.consul.key`).
    pub key: String,
    /// The session TTL (`lease.consul.ttl`). Consul accepts 10 s to 24 h.
    pub ttl: Duration,
    /// How long Consul keeps the key locked after a holder's session dies
    /// (`lease.consul.lock-delay`).
    pub lock_delay: Duration,
    /// The ACL token; `None` takes it from the URL's password, if there is one.
    pub token: Option<String>,
    /// This node's hostname, published while it is primary (`lease.hostname`).
    pub hostname: String,
    /// This node's advertise URL, published while it is primary (`lease.advertise-url`).
    pub advertise_url: String,
    /// How long one request may take (a blocking query: this plus its wait).
    pub request_timeout: Duration,
    /// How long one blocking query of a watch waits before asking again.
    pub watch_wait: Duration,
}

impl ConsulConfig {
    /// A configuration with LiteFS's defaults for everything else: TTL 10 s, lock delay 1 s,
    /// no token beyond the URL's, requests of at most 5 s, blocking queries of 1 minute.
    pub fn new(
        url: impl Into<String>,
        key: impl Into<String>,
        hostname: impl Into<String>,
        advertise_url: impl Into<String>,
    ) -> ConsulConfig {
        ConsulConfig {
            url: url.into(),
            key: key.into(),
            ttl: DEFAULT_TTL,
            lock_delay: DEFAULT_LOCK_DELAY,
            token: None,
            hostname: hostname.into(),
            advertise_url: advertise_url.into(),
            request_timeout: Duration::from_secs(5),
            watch_wait: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = redact_url(&self.url);
        f.debug_struct("ConsulConfig")
            .field("url", &url)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("lock_delay", &self.lock_delay)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("hostname", &self.hostname)
            .field("advertise_url", &self.advertise_url)
            .field("request_timeout", &self.request_timeout)
            .field("watch_wait", &self.watch_wait)
            .finish()
    }
}

/// The URL with any credentials replaced, for debug output.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() || !parsed.username().is_empty() => {
            // Neither can fail on a URL that has a host, which one with credentials does.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(Some("hidden"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<not a URL>".to_string(),
    }
}

/// A Consul lease for one node. Cheap to clone; clones share one HTTP client.
#[derive(Clone, Debug)]
pub struct ConsulLeaser {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    consul: Consul,
    /// The full lease key, with the URL's prefix.
    key: String,
    /// `<key>/clusterid`.
    cluster_id_key: String,
    ttl: Duration,
    lock_delay: Duration,
    watch_wait: Duration,
    hostname: String,
    advertise_url: String,
    /// The JSON of this node's [`PrimaryInfo`].
    value: Vec<u8>,
}

impl ConsulLeaser {
    /// A leaser for `config`. This does no I/O: an unreachable Consul shows up as
    /// [`LeaseError::Backend`] from the operations. Fails with [`LeaseError::Config`] if the
    /// URL is not an `http` or `https` URL, or the key, hostname or advertise URL is empty.
    pub fn new(config: ConsulConfig) -> Result<ConsulLeaser, LeaseError> {
        let url = Url::parse(&config.url).map_err(|e| {
            LeaseError::Config(format!(
                "lease.consul.url {:?}: {e}",
                redact_url(&config.url)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(LeaseError::Config(format!(
                "lease.consul.url {:?}: must be an http:// or https:// URL with a host",
                redact_url(&config.url)
            )));
        }
        let token = match config.token {
            Some(token) => Some(token),
            None => url
                .password()
                .map(|password| {
                    percent_decode(password).ok_or_else(|| {
                        LeaseError::Config("lease.consul.url: the token is not UTF-8".into())
                    })
                })
                .transpose()?,
        }
        .filter(|token| !token.is_empty());
        let prefix = percent_decode(url.path())
            .ok_or_else(|| LeaseError::Config("lease.consul.url: the path is not UTF-8".into()))?;
        let key = join_key(&prefix, &config.key);
        if config.key.trim_matches('/').is_empty() {
            return Err(LeaseError::Config("lease.consul.key is empty".into()));
        }
        if config.hostname.is_empty() || config.advertise_url.is_empty() {
            return Err(LeaseError::Config(
                "the Consul lease needs this node's hostname and advertise URL".into(),
            ));
        }
        if config.ttl.is_zero() {
            return Err(LeaseError::Config("lease.consul.ttl is zero".into()));
        }
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        // Cannot fail: the URL has a host.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let value = serde_json::to_vec(&PrimaryInfo {
            hostname: config.hostname.clone(),
            advertise_url: config.advertise_url.clone(),
        })
        .map_err(|e| LeaseError::Config(format!("primary info: {e}")))?;
        Ok(ConsulLeaser {
            inner: Arc::new(Inner {
                consul: Consul::new(base, token, config.request_timeout)?,
                cluster_id_key: format!("{key}/{CLUSTER_ID_SUFFIX}"),
                key,
                ttl: config.ttl,
                lock_delay: config.lock_delay,
                watch_wait: config.watch_wait.max(Duration::from_secs(1)),
                hostname: config.hostname,
                advertise_url: config.advertise_url,
                value,
            }),
        })
    }

    /// The full lease key in Consul's KV store (the URL's prefix, then `lease.consul.key`).
    pub fn key(&self) -> &str {
        &self.inner.key
    }
}

/// Joins a key prefix and a key with single slashes and no leading or trailing one.
fn join_key(prefix: &str, key: &str) -> String {
    prefix
        .split('/')
        .chain(key.split('/'))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The primary a KV entry names: only a key held by a session, with a value, names one.
fn primary_of(pair: Option<&Pair>) -> Result<Option<PrimaryInfo>, LeaseError> {
    match pair {
        Some(pair) if pair.session.is_some() && !pair.value.is_empty() => {
            serde_json::from_slice(&pair.value).map(Some).map_err(|e| {
                LeaseError::Backend(format!("the lease key holds no valid primary info: {e}"))
            })
        }
        _ => Ok(None),
    }
}

impl Inner {
    /// Takes the lock with `session` and reads the epoch. On any failure the caller destroys a
    /// session it created.
    async fn take(&self, session: &str) -> Result<u64, LeaseError> {
        let acquired = self
            .consul
            .put(&self.key, self.value.clone(), Put::Acquire(session))
            .await?;
        if !acquired {
            return Err(LeaseError::PrimaryExists);
        }
        let (pair, _) = self.consul.get(&self.key, None).await?;
        match pair {
            Some(pair) if pair.session.as_deref() == Some(session) => Ok(pair.modify_index),
            // Lost between the two requests.
            _ => Err(LeaseError::Expired),
        }
    }

    /// The key's entry if it still carries `session` at `epoch`.
    async fn holds(&self, session: &str, epoch: u64) -> Result<Option<Pair>, LeaseError> {
        let (pair, _) = self.consul.get(&self.key, None).await?;
        Ok(pair.filter(|p| p.session.as_deref() == Some(session) && p.modify_index == epoch))
    }
}

impl Leaser for ConsulLeaser {
    fn kind(&self) -> &'static str {
        "consul"
    }

    fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    fn advertise_url(&self) -> &str {
        &self.inner.advertise_url
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Box<dyn Lease>, LeaseError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let session = inner
                .consul
                .create_session(SESSION_NAME, inner.ttl, inner.lock_delay)
                .await?;
            match inner.take(&session).await {
                Ok(epoch) => Ok(Box::new(ConsulLease {
                    inner: Arc::clone(inner),
                    session,
                    epoch,
                }) as Box<dyn Lease>),
                Err(e) => {
                    // Best effort: the session holds nothing, and its TTL ends it anyway.
                    let _ = inner.consul.destroy_session(&session).await;
                    Err(e)
                }
            }
        })
    }

    fn acquire_existing<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Lease>, LeaseError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if !http::is_session_id(id) {
                return Err(LeaseError::Expired);
            }
            if !inner.consul.renew_session(id).await? {
                return Err(LeaseError::Expired);
            }
            let (pair, _) = inner.consul.get(&inner.key, None).await?;
            if pair.and_then(|pair| pair.session).as_deref() != Some(id) {
                return Err(LeaseError::Expired);
            }
            let epoch = match inner.take(id).await {
                Err(LeaseError::PrimaryExists) => return Err(LeaseError::Expired),
                other => other?,
            };
            Ok(Box::new(ConsulLease {
                inner: Arc::clone(inner),
                session: id.to_string(),
                epoch,
            }) as Box<dyn Lease>)
        })
    }

    fn primary_info(&self) -> BoxFuture<'_, Result<PrimaryInfo, LeaseError>> {
        Box::pin(async move {
            let (pair, _) = self.inner.consul.get(&self.inner.key, None).await?;
            primary_of(pair.as_ref())?.ok_or(LeaseError::NoPrimary)
        })
    }

    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn PrimaryWatch>, LeaseError>> {
        let watch: Box<dyn PrimaryWatch> = Box::new(ConsulWatch {
            inner: Arc::clone(&self.inner),
            last: None,
            index: 0,
        });
        Box::pin(std::future::ready(Ok(watch)))
    }

    fn cluster_id(&self) -> BoxFuture<'_, Result<Option<String>, LeaseError>> {
        Box::pin(async move {
            let (pair, _) = self
                .inner
                .consul
                .get(&self.inner.cluster_id_key, None)
                .await?;
            cluster_id_of(pair)
        })
    }

    fn set_cluster_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            if id.is_empty() {
                return Err(LeaseError::Config("the cluster ID is empty".into()));
            }
            let inner = &self.inner;
            let key = &inner.cluster_id_key;
            // Only a delete between our write and our read (which nothing here does) could make
            // this go round more than once.
            for _ in 0..3 {
                if inner
                    .consul
                    .put(key, id.as_bytes().to_vec(), Put::Cas(0))
                    .await?
                {
                    return Ok(());
                }
                let (pair, _) = inner.consul.get(key, None).await?;
                match cluster_id_of(pair)? {
                    Some(existing) if existing == id => return Ok(()),
                    Some(existing) => return Err(LeaseError::ClusterIdMismatch { existing }),
                    None => {}
                }
            }
            Err(LeaseError::Backend(
                "the cluster ID key keeps changing under us".into(),
            ))
        })
    }
}

/// The cluster ID in a KV entry; an empty value counts as none (as in LiteFS).
fn cluster_id_of(pair: Option<Pair>) -> Result<Option<String>, LeaseError> {
    match pair {
        Some(pair) if !pair.value.is_empty() => String::from_utf8(pair.value)
            .map(Some)
            .map_err(|_| LeaseError::Backend("the cluster ID is not UTF-8".into())),
        _ => Ok(None),
    }
}

/// A tenure: a session that holds the key, and the key's `ModifyIndex` when it took it.
#[derive(Debug)]
pub struct ConsulLease {
    inner: Arc<Inner>,
    session: String,
    epoch: u64,
}

impl Lease for ConsulLease {
    fn id(&self) -> &str {
        &self.session
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    fn renew(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async move {
            if !self.inner.consul.renew_session(&self.session).await? {
                return Err(LeaseError::Expired);
            }
            match self.inner.holds(&self.session, self.epoch).await? {
                Some(_) => Ok(()),
                None => Err(LeaseError::Expired),
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (pair, _) = inner.consul.get(&inner.key, None).await?;
            let ours = pair.as_ref().and_then(|p| p.session.as_deref()) == Some(&self.session);
            match pair {
                Some(pair) if ours && pair.modify_index == self.epoch => {
                    inner
                        .consul
                        .put(&inner.key, Vec::new(), Put::Release(&self.session))
                        .await?;
                    inner.consul.destroy_session(&self.session).await
                }
                // Handed off: the session is the new holder's now.
                Some(_) if ours => Ok(()),
                // Lost: the session holds nothing (if it still exists at all).
                _ => inner.consul.destroy_session(&self.session).await,
            }
        })
    }
}

/// A watch of the lease key by blocking queries.
#[derive(Debug)]
struct ConsulWatch {
    inner: Arc<Inner>,
    /// The value last returned; `None` before the first.
    last: Option<Option<PrimaryInfo>>,
    /// The `X-Consul-Index` to wait past; 0 makes the next query return at once.
    index: u64,
}

impl PrimaryWatch for ConsulWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<PrimaryInfo>, LeaseError>> {
        Box::pin(async move {
            let wait = self.inner.watch_wait;
            loop {
                let block = (self.last.is_some() && self.index > 0).then_some((self.index, wait));
                let started = Instant::now();
                let (pair, index) = self.inner.consul.get(&self.inner.key, block).await?;
                let index = index.ok_or_else(|| {
                    LeaseError::Backend("consul kv get: no X-Consul-Index header".into())
                })?;
                // Consul's rules for blocking queries: start over if the index went backwards.
                let progressed = index > self.index;
                self.index = if index < self.index { 0 } else { index };
                let primary = primary_of(pair.as_ref())?;
                if self.last.as_ref() != Some(&primary) {
                    self.last = Some(primary.clone());
                    return Ok(primary);
                }
                if block.is_some() && !progressed && started.elapsed() < wait / 2 {
                    // A server that answers a blocking query at once without progress would
                    // have us spin; pace it.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_carries_the_token_and_a_key_prefix() {
        let config = ConsulConfig::new(
            "https://:s3cr%40t@consul.example.com/my-app/",
            "litefs/app",
            "node-a",
            "http://node-a:20202",
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        let leaser = ConsulLeaser::new(config).unwrap();
        assert_eq!(leaser.key(), "my-app/litefs/app");
        assert_eq!(leaser.inner.cluster_id_key, "my-app/litefs/app/clusterid");
        assert_eq!(leaser.inner.consul.token(), Some("s3cr@t"));
        let debug = format!("{leaser:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let config = |url: &str, key: &str| ConsulConfig::new(url, key, "h", "http://h:1");
        for (url, key) in [
            ("consul:8500", "k"),
            ("ftp://consul:8500", "k"),
            ("http://consul:8500", ""),
            ("http://consul:8500", "//"),
        ] {
            assert!(
                matches!(
                    ConsulLeaser::new(config(url, key)),
                    Err(LeaseError::Config(_))
                ),
                "{url} {key}"
            );
        }
        let mut no_host = config("http://consul:8500", "k");
        no_host.hostname.clear();
        assert!(ConsulLeaser::new(no_host).is_err());
    }

    #[test]
    fn keys_join_with_single_slashes() {
        assert_eq!(join_key("/", "/litefs/app"), "litefs/app");
        assert_eq!(join_key("/p//q/", "k/"), "p/q/k");
    }

    #[test]
    fn only_a_held_key_names_a_primary() {
        let value = br#"{"hostname":"a","advertise-url":"http://a:1"}"#.to_vec();
        let held = Pair {
            value: value.clone(),
            session: Some("s".into()),
            modify_index: 3,
        };
        assert_eq!(
            primary_of(Some(&held)).unwrap().unwrap().hostname,
            "a".to_string()
        );
        let free = Pair {
            session: None,
            ..held.clone()
        };
        assert_eq!(primary_of(Some(&free)), Ok(None));
        let garbage = Pair {
            value: b"{".to_vec(),
            ..held
        };
        assert!(matches!(
            primary_of(Some(&garbage)),
            Err(LeaseError::Backend(_))
        ));
    }
}
