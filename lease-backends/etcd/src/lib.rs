//! The etcd lease (an ltxd extension: LiteFS has none), on etcd-client.
//!
//! - **Acquire**: grant an etcd lease with the TTL, then one transaction: if the key's
//!   `create_revision` is 0 (the key does not exist), put the node's [`PrimaryInfo`] as JSON
//!   under the key, attached to the lease. If the key exists, the lease is revoked and the
//!   answer is [`LeaseError::PrimaryExists`]. The key lives only as long as the lease.
//! - **Epoch**: the revision of that transaction, which is the key's `mod_revision`. etcd's
//!   revision is one counter for the whole store, raised by every write, so a later tenure's
//!   put always has a greater revision than an earlier tenure's, whoever held it.
//! - **Renew**: one keep-alive of the lease (a lease etcd no longer knows means
//!   [`LeaseError::Expired`]), then a read of the key, which must still carry this lease at this
//!   epoch.
//! - **Release**: one transaction that deletes the key if it still carries this lease at this
//!   epoch, then a revoke of the lease. A lease that was handed off is left alone.
//! - **Primary info**: a read of the key. **Watch**: an etcd watch of the key, started at the
//!   revision of a first read, so no change between the two is missed.
//! - **Cluster ID**: `<key>/clusterid`, written in a transaction only if it does not exist.
//! - **Handoff**: the new holder keeps the same etcd lease alive and, in a transaction that
//!   checks the key is attached to that lease, writes its own info; the write's revision is its
//!   epoch.
//!
//! The client connects on first use, so a leaser can be made while etcd is down. Every request
//! has a timeout; watches are kept alive with HTTP/2 pings and require an etcd leader.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetResponse, Identity,
    KeyValue, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
    WatchStream,
};
use ltxd_lease::{BoxFuture, Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};
use tokio::sync::OnceCell;

/// The default lease TTL (`lease.etcd.ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The key under the lease key that holds the cluster ID.
pub const CLUSTER_ID_SUFFIX: &str = "clusterid";

/// How to reach etcd and what to publish there.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd cluster, such as `http://etcd-0:2379` (`lease.etcd.endpoints`).
    /// `https://` URLs use TLS.
    pub endpoints: Vec<String>,
    /// The lease key, one per cluster (`lease.etcd.key`).
    pub key: String,
    /// The lease TTL, rounded up to whole seconds (`lease.etcd.ttl`). etcd may grant more: its
    /// shortest TTL is about 1.5 × its election timeout (2 s with etcd's defaults).
    pub ttl: Duration,
    /// This node's hostname, published while it is primary (`lease.hostname`).
    pub hostname: String,
    /// This node's advertise URL, published while it is primary (`lease.advertise-url`).
    pub advertise_url: String,
    /// User name for etcd authentication (`lease.etcd.username`).
    pub username: Option<String>,
    /// Its password (`lease.etcd.password`); `None` with a user name means an empty one.
    pub password: Option<String>,
    /// PEM file of the CA that signs the servers' certificates; `None` trusts the system's
    /// roots (`lease.etcd.ca-file`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`lease.etcd.cert-file`); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (`lease.etcd.key-file`).
    pub key_file: Option<PathBuf>,
    /// How long one request (or connecting) may take.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// A configuration with defaults for everything else: TTL 10 s, no authentication, no
    /// client certificate, system roots, requests of at most 5 s.
    pub fn new(
        endpoints: Vec<String>,
        key: impl Into<String>,
        hostname: impl Into<String>,
        advertise_url: impl Into<String>,
    ) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            key: key.into(),
            ttl: DEFAULT_TTL,
            hostname: hostname.into(),
            advertise_url: advertise_url.into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("hostname", &self.hostname)
            .field("advertise_url", &self.advertise_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// An etcd lease for one node. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdLeaser {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdLeaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLeaser")
            .field("endpoints", &self.inner.endpoints)
            .field("key", &self.inner.key)
            .field("hostname", &self.inner.hostname)
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoints: Vec<String>,
    options: ConnectOptions,
    client: OnceCell<Client>,
    key: String,
    cluster_id_key: String,
    /// The TTL asked for, in whole seconds.
    ttl_secs: i64,
    hostname: String,
    advertise_url: String,
    /// The JSON of this node's [`PrimaryInfo`].
    value: Vec<u8>,
    timeout: Duration,
}

impl EtcdLeaser {
    /// A leaser for `config`. Reads the TLS files, but does not connect: an unreachable etcd
    /// shows up as [`LeaseError::Backend`] from the operations. Fails with
    /// [`LeaseError::Config`] if there is no endpoint, the key, hostname or advertise URL is
    /// empty, a TLS file cannot be read, TLS files are given without an `https://` endpoint,
    /// `http://` and `https://` endpoints are mixed, a password is given without a user name, or
    /// only one of the certificate and key is given.
    pub fn new(config: EtcdConfig) -> Result<EtcdLeaser, LeaseError> {
        if config.endpoints.is_empty() || config.endpoints.iter().any(|e| e.is_empty()) {
            return Err(LeaseError::Config(
                "lease.etcd.endpoints needs at least one URL, and no empty ones".into(),
            ));
        }
        if config.key.is_empty() {
            return Err(LeaseError::Config("lease.etcd.key is empty".into()));
        }
        if config.hostname.is_empty() || config.advertise_url.is_empty() {
            return Err(LeaseError::Config(
                "the etcd lease needs this node's hostname and advertise URL".into(),
            ));
        }
        if config.ttl.is_zero() {
            return Err(LeaseError::Config("lease.etcd.ttl is zero".into()));
        }
        let timeout = config.request_timeout.max(Duration::from_millis(100));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(timeout, timeout)
            .with_require_leader(true);
        match (&config.username, &config.password) {
            (Some(user), password) => {
                // etcd's auth tokens expire; fetch a new one rather than fail.
                options = options
                    .with_user(user.clone(), password.clone().unwrap_or_default())
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            (None, Some(_)) => {
                return Err(LeaseError::Config(
                    "lease.etcd.password is set without lease.etcd.username".into(),
                ))
            }
        }
        if let Some(tls) = tls_options(&config)? {
            options = options.with_tls(tls);
        }
        let ttl_secs = i64::try_from(config.ttl.as_secs().max(1))
            .map_err(|_| LeaseError::Config("lease.etcd.ttl is too long".into()))?
            + i64::from(config.ttl.subsec_nanos() > 0);
        let value = serde_json::to_vec(&PrimaryInfo {
            hostname: config.hostname.clone(),
            advertise_url: config.advertise_url.clone(),
        })
        .map_err(|e| LeaseError::Config(format!("primary info: {e}")))?;
        Ok(EtcdLeaser {
            inner: Arc::new(Inner {
                endpoints: config.endpoints,
                options,
                client: OnceCell::new(),
                cluster_id_key: format!("{}/{CLUSTER_ID_SUFFIX}", config.key),
                key: config.key,
                ttl_secs,
                hostname: config.hostname,
                advertise_url: config.advertise_url,
                value,
                timeout,
            }),
        })
    }

    /// The lease key in etcd.
    pub fn key(&self) -> &str {
        &self.inner.key
    }
}

/// The TLS settings, if any endpoint is `https://`.
fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>, LeaseError> {
    let https = config.endpoints.iter().any(|e| e.starts_with("https://"));
    let files = config.ca_file.is_some() || config.cert_file.is_some() || config.key_file.is_some();
    if !https {
        if files {
            return Err(LeaseError::Config(
                "lease.etcd TLS files are set, but no endpoint is https://".into(),
            ));
        }
        return Ok(None);
    }
    if config.endpoints.iter().any(|e| e.starts_with("http://")) {
        return Err(LeaseError::Config(
            "lease.etcd.endpoints mixes http:// and https://".into(),
        ));
    }
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| LeaseError::Config(format!("lease.etcd.{what} {}: {e}", path.display())))
    };
    let mut tls = TlsOptions::new();
    tls = match &config.ca_file {
        Some(path) => tls.ca_certificate(Certificate::from_pem(read(path, "ca-file")?)),
        None => tls.with_native_roots(),
    };
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(read(cert, "cert-file")?, read(key, "key-file")?);
            tls = tls.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(LeaseError::Config(
                "lease.etcd.cert-file and lease.etcd.key-file go together".into(),
            ))
        }
    }
    Ok(Some(tls))
}

/// An etcd error as a lease error.
fn backend(what: &str, error: etcd_client::Error) -> LeaseError {
    LeaseError::Backend(format!("etcd {what}: {}", ltxd_lease::error_chain(&error)))
}

/// The primary that a value under the lease key names.
fn primary_of(value: &[u8]) -> Result<PrimaryInfo, LeaseError> {
    serde_json::from_slice(value)
        .map_err(|e| LeaseError::Backend(format!("the lease key holds no valid primary info: {e}")))
}

/// A transaction's revision: the revision of its writes, if it made any.
fn revision(response: &TxnResponse) -> Result<u64, LeaseError> {
    response
        .header()
        .and_then(|header| u64::try_from(header.revision()).ok())
        .filter(|revision| *revision > 0)
        .ok_or_else(|| LeaseError::Backend("etcd txn: the answer has no revision".into()))
}

/// The key-value of the first `get` among a transaction's answers.
fn txn_get(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

impl Inner {
    /// The client, connecting on first use.
    async fn client(&self) -> Result<Client, LeaseError> {
        self.client
            .get_or_try_init(|| async {
                let connect = Client::connect(&self.endpoints, Some(self.options.clone()));
                match tokio::time::timeout(self.timeout, connect).await {
                    Ok(result) => result.map_err(|e| backend("connect", e)),
                    Err(_) => Err(LeaseError::Backend(format!(
                        "etcd connect: no answer within {:?}",
                        self.timeout
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// Runs one request with the timeout.
    async fn call<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| backend(what, e)),
            Err(_) => Err(LeaseError::Backend(format!(
                "etcd {what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn get(&self, key: &str) -> Result<GetResponse, LeaseError> {
        let mut client = self.client().await?;
        self.call("get", client.get(key, None)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, LeaseError> {
        let mut client = self.client().await?;
        self.call("txn", client.txn(txn)).await
    }

    /// Revokes a lease, as a best effort: a lease etcd has forgotten is already gone, and one
    /// whose revoke fails ends with its TTL.
    async fn revoke(&self, id: i64) {
        if let Ok(mut client) = self.client().await {
            let _ = self.call("lease revoke", client.lease_revoke(id)).await;
        }
    }

    /// Keeps a lease alive once. [`LeaseError::Expired`] if etcd no longer knows it.
    async fn keep_alive(&self, id: i64) -> Result<(), LeaseError> {
        let mut client = self.client().await?;
        match tokio::time::timeout(self.timeout, client.lease_keep_alive(id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
                // etcd answers a keep-alive of an unknown lease with a TTL of 0, which the
                // client reports as this error; but a broken stream gives it too, so ask.
                let live = self
                    .call("lease ttl", client.lease_time_to_live(id, None))
                    .await?;
                if live.ttl() <= 0 {
                    Err(LeaseError::Expired)
                } else {
                    Err(LeaseError::Backend(format!("etcd lease keep-alive: {e}")))
                }
            }
            Ok(Err(e)) => Err(backend("lease keep-alive", e)),
            Err(_) => Err(LeaseError::Backend(format!(
                "etcd lease keep-alive: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Whether the key carries lease `id` at revision `epoch`.
    async fn holds(&self, id: i64, epoch: u64) -> Result<bool, LeaseError> {
        let response = self.get(&self.key).await?;
        Ok(response.kvs().first().is_some_and(|kv| {
            kv.lease() == id && u64::try_from(kv.mod_revision()).ok() == Some(epoch)
        }))
    }

    fn lease(self: &Arc<Inner>, id: i64, epoch: u64, ttl: Duration) -> Box<dyn Lease> {
        Box::new(EtcdLease {
            inner: Arc::clone(self),
            id,
            id_text: format!("{id:x}"),
            epoch,
            ttl,
        })
    }
}

impl Leaser for EtcdLeaser {
    fn kind(&self) -> &'static str {
        "etcd"
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
            let mut client = inner.client().await?;
            let grant = inner
                .call("lease grant", client.lease_grant(inner.ttl_secs, None))
                .await?;
            let id = grant.id();
            let ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0).max(1));
            let put = TxnOp::put(
                inner.key.as_str(),
                inner.value.clone(),
                Some(PutOptions::new().with_lease(id)),
            );
            let txn = Txn::new()
                .when([Compare::create_revision(
                    inner.key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([put]);
            let result = match inner.txn(txn).await {
                Ok(response) if response.succeeded() => revision(&response),
                Ok(_) => Err(LeaseError::PrimaryExists),
                Err(e) => Err(e),
            };
            match result {
                Ok(epoch) => Ok(inner.lease(id, epoch, ttl)),
                Err(e) => {
                    // The lease holds nothing (or, if a failed answer hid a success, the key,
                    // which the revoke deletes).
                    inner.revoke(id).await;
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
            let Some(id) = i64::from_str_radix(id, 16).ok().filter(|id| *id > 0) else {
                return Err(LeaseError::Expired);
            };
            inner.keep_alive(id).await?;
            let mut client = inner.client().await?;
            let live = inner
                .call("lease ttl", client.lease_time_to_live(id, None))
                .await?;
            let put = TxnOp::put(
                inner.key.as_str(),
                inner.value.clone(),
                Some(PutOptions::new().with_lease(id)),
            );
            let txn = Txn::new()
                .when([Compare::lease(inner.key.as_str(), CompareOp::Equal, id)])
                .and_then([put]);
            let response = inner.txn(txn).await?;
            if !response.succeeded() {
                return Err(LeaseError::Expired);
            }
            let ttl = Duration::from_secs(u64::try_from(live.granted_ttl()).unwrap_or(0).max(1));
            Ok(inner.lease(id, revision(&response)?, ttl))
        })
    }

    fn primary_info(&self) -> BoxFuture<'_, Result<PrimaryInfo, LeaseError>> {
        Box::pin(async move {
            let response = self.inner.get(&self.inner.key).await?;
            match response.kvs().first() {
                Some(kv) => primary_of(kv.value()),
                None => Err(LeaseError::NoPrimary),
            }
        })
    }

    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn PrimaryWatch>, LeaseError>> {
        let watch: Box<dyn PrimaryWatch> = Box::new(EtcdWatch {
            inner: Arc::clone(&self.inner),
            last: None,
            stream: None,
        });
        Box::pin(std::future::ready(Ok(watch)))
    }

    fn cluster_id(&self) -> BoxFuture<'_, Result<Option<String>, LeaseError>> {
        Box::pin(async move {
            let response = self.inner.get(&self.inner.cluster_id_key).await?;
            response.kvs().first().map(cluster_id_of).transpose()
        })
    }

    fn set_cluster_id<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            if id.is_empty() {
                return Err(LeaseError::Config("the cluster ID is empty".into()));
            }
            let key = self.inner.cluster_id_key.as_str();
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, id, None)])
                .or_else([TxnOp::get(key, None)]);
            let response = self.inner.txn(txn).await?;
            if response.succeeded() {
                return Ok(());
            }
            let existing = txn_get(&response)
                .as_ref()
                .map(cluster_id_of)
                .transpose()?
                .ok_or_else(|| LeaseError::Backend("etcd: the cluster ID vanished".into()))?;
            if existing == id {
                Ok(())
            } else {
                Err(LeaseError::ClusterIdMismatch { existing })
            }
        })
    }
}

fn cluster_id_of(kv: &KeyValue) -> Result<String, LeaseError> {
    String::from_utf8(kv.value().to_vec())
        .map_err(|_| LeaseError::Backend("the cluster ID is not UTF-8".into()))
}

/// A tenure: an etcd lease that holds the key, and the revision at which it took it.
pub struct EtcdLease {
    inner: Arc<Inner>,
    id: i64,
    /// The ID in hex, as etcdctl shows it.
    id_text: String,
    epoch: u64,
    ttl: Duration,
}

impl std::fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLease")
            .field("id", &self.id_text)
            .field("epoch", &self.epoch)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Lease for EtcdLease {
    fn id(&self) -> &str {
        &self.id_text
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn renew(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async move {
            self.inner.keep_alive(self.id).await?;
            if self.inner.holds(self.id, self.epoch).await? {
                Ok(())
            } else {
                Err(LeaseError::Expired)
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let key = inner.key.as_str();
            let epoch = i64::try_from(self.epoch)
                .map_err(|_| LeaseError::Backend("the epoch is out of etcd's range".into()))?;
            let txn = Txn::new()
                .when([
                    Compare::lease(key, CompareOp::Equal, self.id),
                    Compare::mod_revision(key, CompareOp::Equal, epoch),
                ])
                .and_then([TxnOp::delete(key, None)])
                .or_else([TxnOp::get(key, None)]);
            let response = inner.txn(txn).await?;
            let handed_off =
                !response.succeeded() && txn_get(&response).is_some_and(|kv| kv.lease() == self.id);
            if !handed_off {
                inner.revoke(self.id).await;
            }
            Ok(())
        })
    }
}

/// A watch of the lease key: a read, then an etcd watch from the revision after it.
struct EtcdWatch {
    inner: Arc<Inner>,
    /// The value last returned; `None` before the first.
    last: Option<Option<PrimaryInfo>>,
    /// The etcd watch; `None` before the first call and after an error.
    stream: Option<WatchStream>,
}

impl EtcdWatch {
    /// Reads the key and starts a watch from the revision after the read.
    async fn start(&mut self) -> Result<Option<PrimaryInfo>, LeaseError> {
        let response = self.inner.get(&self.inner.key).await?;
        let revision = response
            .header()
            .map(|header| header.revision())
            .ok_or_else(|| LeaseError::Backend("etcd get: the answer has no revision".into()))?;
        let primary = response
            .kvs()
            .first()
            .map(|kv| primary_of(kv.value()))
            .transpose()?;
        let mut client = self.inner.client().await?;
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let stream = self
            .inner
            .call(
                "watch",
                client.watch(self.inner.key.as_str(), Some(options)),
            )
            .await?;
        self.stream = Some(stream);
        Ok(primary)
    }

    /// The primary after the next batch of events, or `None` if the batch changed nothing;
    /// drops the stream when etcd ends or cancels it.
    async fn receive(&mut self) -> Result<Option<Option<PrimaryInfo>>, LeaseError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                self.stream = None;
                return Err(LeaseError::Backend("etcd watch: the stream ended".into()));
            }
            Err(e) => {
                self.stream = None;
                return Err(backend("watch", e));
            }
        };
        if message.canceled() {
            // Compacted past our revision, or cancelled by the server: read and watch again.
            self.stream = None;
            return Ok(None);
        }
        let mut primary = None;
        for event in message.events() {
            primary = Some(match (event.event_type(), event.kv()) {
                (EventType::Put, Some(kv)) => Some(primary_of(kv.value())?),
                _ => None,
            });
        }
        Ok(primary)
    }
}

impl PrimaryWatch for EtcdWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<PrimaryInfo>, LeaseError>> {
        Box::pin(async move {
            loop {
                let primary = if self.stream.is_none() {
                    Some(self.start().await?)
                } else {
                    self.receive().await?
                };
                if let Some(primary) = primary {
                    if self.last.as_ref() != Some(&primary) {
                        self.last = Some(primary.clone());
                        return Ok(primary);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EtcdConfig {
        EtcdConfig::new(
            vec!["http://127.0.0.1:2379".into()],
            "/ltxd/lease",
            "node-a",
            "http://node-a:20202",
        )
    }

    #[test]
    fn good_configurations_make_leasers_without_connecting() {
        let leaser = EtcdLeaser::new(config()).unwrap();
        assert_eq!(leaser.key(), "/ltxd/lease");
        assert_eq!(leaser.inner.cluster_id_key, "/ltxd/lease/clusterid");
        assert_eq!(leaser.inner.ttl_secs, 10);
        let mut fractional = config();
        fractional.ttl = Duration::from_millis(2500);
        assert_eq!(EtcdLeaser::new(fractional).unwrap().inner.ttl_secs, 3);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let refused = |change: &dyn Fn(&mut EtcdConfig)| {
            let mut config = config();
            change(&mut config);
            matches!(EtcdLeaser::new(config), Err(LeaseError::Config(_)))
        };
        assert!(refused(&|c| c.endpoints.clear()));
        assert!(refused(&|c| c.endpoints.push(String::new())));
        assert!(refused(&|c| c.key.clear()));
        assert!(refused(&|c| c.hostname.clear()));
        assert!(refused(&|c| c.ttl = Duration::ZERO));
        assert!(refused(&|c| c.password = Some("p".into())));
        assert!(refused(&|c| c.ca_file = Some("/ca.pem".into())));
        assert!(refused(&|c| {
            c.endpoints = vec!["https://etcd:2379".into()];
            c.ca_file = Some("/nonexistent/ca.pem".into());
        }));
        assert!(refused(&|c| {
            c.endpoints = vec!["https://etcd:2379".into(), "http://etcd:2379".into()];
        }));
        assert!(refused(&|c| {
            c.endpoints = vec!["https://etcd:2379".into()];
            c.cert_file = Some("/cert.pem".into());
        }));
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let mut config = config();
        config.username = Some("user".into());
        config.password = Some("s3cret".into());
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
