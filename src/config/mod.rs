//! The node configuration file: LiteFS's `litefs.yml` schema, extended.
//!
//! Every key LiteFS accepts is accepted here with the same type and default, so an existing
//! `litefs.yml` can be used unchanged. ltxd adds `lease.type: etcd` with its `lease.etcd`
//! section. `docs/configuration.md` lists every key and says which ones ltxd acts on today.
//!
//! Loading has three steps, as in LiteFS:
//!
//! 1. Find the file ([`Config::load`]): an explicit path, or the first of [`search_paths`] that
//!    exists.
//! 2. Expand environment variables in the raw text ([`expand_env`]), unless
//!    [`LoadOptions::no_expand_env`] is set. If `HOSTNAME` is unset, the machine's hostname
//!    ([`machine_hostname`]) is used for it.
//! 3. Parse the YAML strictly (an unknown key is an error) and check the values
//!    ([`Config::validate`]).
//!
//! Every error names the file and, where it can, the key (`lease.candidate`) and the line.
//!
//! ```
//! use std::path::Path;
//! use ltxd::config::{Config, LeaseType};
//!
//! let text = "lease:\n  type: static\n  candidate: ${ ROLE == 'primary' }\n";
//! let env = |name: &str| (name == "ROLE").then(|| "primary".to_string());
//! let config = Config::parse(text, Path::new("litefs.yml"), &env).unwrap();
//! assert_eq!(config.lease.kind, LeaseType::Static);
//! assert!(config.lease.candidate);
//! assert_eq!(config.fuse.dir, "/litefs");
//! ```

mod de;
pub mod defaults;
mod duration;
mod effective;
mod env;
mod error;
mod locate;
pub mod unacted;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use duration::{parse_go_duration, DurationError};
pub use env::{expand_env, machine_hostname, process_env, Env};
pub use error::ConfigError;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Exit the process when a run error occurs, instead of staying up for debugging.
    /// Default true.
    #[serde(default = "default_true", deserialize_with = "de::bool_true")]
    pub exit_on_error: bool,
    /// Start the `exec` commands without waiting for the node to become primary or to sync with
    /// the primary.
    #[serde(default, deserialize_with = "de::or_default")]
    pub skip_sync: bool,
    /// Recompute the full database checksum after every commit (a testing aid).
    #[serde(default, deserialize_with = "de::or_default")]
    pub strict_verify: bool,
    /// Commands to run once the node is ready. All but the last run to completion in order; the
    /// last one runs for the node's lifetime. In YAML, a single string or a list of
    /// `{cmd, if-candidate}` entries.
    #[serde(default, deserialize_with = "de::exec")]
    pub exec: Vec<ExecConfig>,
    /// The store's on-disk data.
    #[serde(default, deserialize_with = "de::or_default")]
    pub data: DataConfig,
    /// The FUSE mount.
    #[serde(default, deserialize_with = "de::or_default")]
    pub fuse: FuseConfig,
    /// The replication HTTP API.
    #[serde(default, deserialize_with = "de::or_default")]
    pub http: HttpConfig,
    /// The QUIC transport (an ltxd extension).
    #[serde(default, deserialize_with = "de::or_default")]
    pub quic: QuicConfig,
    /// LiteFS's HTTP proxy for consistent reads. Accepted, not yet acted on.
    #[serde(default, deserialize_with = "de::or_default")]
    pub proxy: ProxyConfig,
    /// Leader election. Required: `lease.type` has no default.
    pub lease: LeaseConfig,
    /// Backups (LiteFS Cloud or a directory). Accepted, not yet acted on.
    #[serde(default, deserialize_with = "de::or_default")]
    pub backup: BackupConfig,
    /// Synchronous replication (an ltxd extension).
    #[serde(default, deserialize_with = "de::or_default")]
    pub replication: ReplicationConfig,
    /// Process log output.
    #[serde(default, deserialize_with = "de::or_default")]
    pub log: LogConfig,
    /// The rolling trace log.
    #[serde(default, deserialize_with = "de::or_default")]
    pub tracing: TracingConfig,
}

/// One `exec` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExecConfig {
    /// The command line, split into words shell-style (no shell is run).
    pub cmd: String,
    /// Run this command only on lease candidates (for example, migrations).
    #[serde(default, deserialize_with = "de::or_default")]
    pub if_candidate: bool,
}

/// Splits an `exec` command line into words as a POSIX shell would (quotes and backslashes),
/// without expanding anything; `None` if a quote is not closed or a backslash ends the line.
pub fn split_command(cmd: &str) -> Option<Vec<String>> {
    shlex::split(cmd)
}

impl ExecConfig {
    /// An entry that runs `cmd` on every node.
    pub fn new(cmd: impl Into<String>) -> Self {
        Self {
            cmd: cmd.into(),
            if_candidate: false,
        }
    }
}

/// `data`: the store's on-disk data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataConfig {
    /// Directory of the store (databases, LTX files). Must differ from `fuse.dir`.
    #[serde(deserialize_with = "de::data_dir")]
    pub dir: String,
    /// Write LTX files compressed (the LZ4 flag).
    #[serde(deserialize_with = "de::bool_true")]
    pub compress: bool,
    /// How long LTX files are kept after they are no longer needed.
    #[serde(deserialize_with = "de::retention")]
    pub retention: Duration,
    /// How often retention is enforced; zero disables enforcement.
    #[serde(deserialize_with = "de::retention_monitor_interval")]
    pub retention_monitor_interval: Duration,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: defaults::DATA_DIR.to_string(),
            compress: defaults::DATA_COMPRESS,
            retention: defaults::RETENTION,
            retention_monitor_interval: defaults::RETENTION_MONITOR_INTERVAL,
        }
    }
}

/// `fuse`: the FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FuseConfig {
    /// The mount point applications open their databases under.
    #[serde(deserialize_with = "de::fuse_dir")]
    pub dir: String,
    /// Let other users access the mount (needs `user_allow_other` in `/etc/fuse.conf`).
    #[serde(deserialize_with = "de::or_default")]
    pub allow_other: bool,
    /// Log every FUSE operation.
    #[serde(deserialize_with = "de::or_default")]
    pub debug: bool,
    /// How long the FUSE device is polled without blocking after a request (an ltxd
    /// extension); zero, the default, blocks.
    #[serde(deserialize_with = "de::duration")]
    pub busy_poll: Duration,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            dir: defaults::FUSE_DIR.to_string(),
            allow_other: false,
            debug: false,
            busy_poll: Duration::ZERO,
        }
    }
}

/// `http`: the replication HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Listen address, Go style: `":20202"` means every interface, port 20202.
    #[serde(deserialize_with = "de::http_addr")]
    pub addr: String,
    /// How long building a snapshot for a replica may take; zero means `data.retention`.
    #[serde(deserialize_with = "de::duration")]
    pub snapshot_timeout: Duration,
    /// The node's certificate chain (PEM); enables TLS.
    #[serde(deserialize_with = "de::or_default")]
    pub cert_file: String,
    /// The certificate's private key (PEM).
    #[serde(deserialize_with = "de::or_default")]
    pub key_file: String,
    /// CA certificates (PEM) that verify peers.
    #[serde(deserialize_with = "de::or_default")]
    pub ca_file: String,
    /// Demand a client certificate that chains to `ca-file` (mTLS).
    #[serde(deserialize_with = "de::or_default")]
    pub client_auth: bool,
    /// Development only: a self-signed certificate, and any server certificate accepted.
    #[serde(deserialize_with = "de::or_default")]
    pub insecure_dev: bool,
    /// A shared token that every request must present.
    #[serde(deserialize_with = "de::or_default")]
    pub token: String,
    /// The name of an environment variable holding the token.
    #[serde(deserialize_with = "de::or_default")]
    pub token_env: String,
    /// Serve the HTTP API without authentication on every interface, as LiteFS does (an
    /// explicit opt-in). Without it, and unless the server built authenticates (a token, or TLS
    /// with `client-auth`), the API listens on loopback only.
    #[serde(deserialize_with = "de::or_default")]
    pub insecure_cleartext: bool,
    /// How long a client may take to send a complete request header, from its connection (or
    /// the end of its last request); an ltxd extension.
    #[serde(deserialize_with = "de::http_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight; an ltxd extension.
    #[serde(deserialize_with = "de::http_idle_timeout")]
    pub idle_timeout: Duration,
    /// The most client connections open at once; zero, the default, means 1,024 or half the
    /// process's descriptor limit, whichever is lower. An ltxd extension.
    #[serde(deserialize_with = "de::or_default")]
    pub max_connections: usize,
    /// The most `/stream` subscriptions one peer address may hold open at once; an ltxd
    /// extension.
    #[serde(deserialize_with = "de::http_max_streams_per_peer")]
    pub max_streams_per_peer: usize,
    /// The most replica streams this node serves at once, over HTTP and QUIC together; an ltxd
    /// extension.
    #[serde(deserialize_with = "de::http_max_subscriptions")]
    pub max_subscriptions: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: defaults::HTTP_ADDR.to_string(),
            snapshot_timeout: Duration::ZERO,
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            client_auth: false,
            insecure_dev: false,
            token: String::new(),
            token_env: String::new(),
            insecure_cleartext: false,
            header_read_timeout: defaults::HTTP_HEADER_READ_TIMEOUT,
            idle_timeout: defaults::HTTP_IDLE_TIMEOUT,
            max_connections: 0,
            max_streams_per_peer: defaults::HTTP_MAX_STREAMS_PER_PEER,
            max_subscriptions: defaults::HTTP_MAX_SUBSCRIPTIONS,
        }
    }
}

/// TLS and authentication settings, the same keys under `http.` and `quic.` (ltxd
/// extensions); see [`HttpConfig::security`] and [`QuicConfig::security`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `cert-file`.
    pub cert_file: String,
    /// `key-file`.
    pub key_file: String,
    /// `ca-file`.
    pub ca_file: String,
    /// `client-auth`.
    pub client_auth: bool,
    /// `insecure-dev`.
    pub insecure_dev: bool,
    /// `token`.
    pub token: String,
    /// `token-env`.
    pub token_env: String,
}

/// Defines `security()` for a section with the TLS and authentication keys.
macro_rules! security_of {
    ($($section:ty),*) => {$(
        impl $section {
            /// The section's TLS and authentication settings.
            pub fn security(&self) -> SecurityConfig {
                SecurityConfig {
                    cert_file: self.cert_file.clone(),
                    key_file: self.key_file.clone(),
                    ca_file: self.ca_file.clone(),
                    client_auth: self.client_auth,
                    insecure_dev: self.insecure_dev,
                    token: self.token.clone(),
                    token_env: self.token_env.clone(),
                }
            }
        }
    )*};
}

security_of!(HttpConfig, QuicConfig);

/// `quic`: the QUIC transport (an ltxd extension). A node serves QUIC when `addr` is set, and
/// follows a primary over QUIC when the primary's advertise URL is `quic://host:port`. QUIC
/// refuses to start without TLS material unless `insecure-dev` is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuicConfig {
    /// Listen address (`host:port`, or `:port` for every interface); empty disables QUIC.
    #[serde(deserialize_with = "de::or_default")]
    pub addr: String,
    /// The node's certificate chain (PEM); enables TLS.
    #[serde(deserialize_with = "de::or_default")]
    pub cert_file: String,
    /// The certificate's private key (PEM).
    #[serde(deserialize_with = "de::or_default")]
    pub key_file: String,
    /// CA certificates (PEM) that verify peers.
    #[serde(deserialize_with = "de::or_default")]
    pub ca_file: String,
    /// Demand a client certificate that chains to `ca-file` (mTLS).
    #[serde(deserialize_with = "de::or_default")]
    pub client_auth: bool,
    /// Development only: a self-signed certificate, and any server certificate accepted.
    #[serde(deserialize_with = "de::or_default")]
    pub insecure_dev: bool,
    /// A shared token that every request must present.
    #[serde(deserialize_with = "de::or_default")]
    pub token: String,
    /// The name of an environment variable holding the token.
    #[serde(deserialize_with = "de::or_default")]
    pub token_env: String,
    /// How often an idle connection sends a keep-alive.
    #[serde(deserialize_with = "de::quic_keep_alive")]
    pub keep_alive_interval: Duration,
    /// How long a connection may hear nothing before it is dead.
    #[serde(deserialize_with = "de::quic_idle_timeout")]
    pub idle_timeout: Duration,
    /// The most replica connections the server holds open at once.
    #[serde(deserialize_with = "de::quic_max_connections")]
    pub max_connections: usize,
    /// The most streams one replica connection may have open at once.
    #[serde(deserialize_with = "de::quic_max_streams")]
    pub max_streams: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            addr: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            client_auth: false,
            insecure_dev: false,
            token: String::new(),
            token_env: String::new(),
            keep_alive_interval: defaults::QUIC_KEEP_ALIVE,
            idle_timeout: defaults::QUIC_IDLE_TIMEOUT,
            max_connections: defaults::QUIC_MAX_CONNECTIONS,
            max_streams: defaults::QUIC_MAX_STREAMS,
        }
    }
}

/// `proxy`: LiteFS's HTTP proxy, which holds reads until the replica has caught up with the
/// client's last write and redirects writes to the primary. Accepted, not yet acted on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProxyConfig {
    /// Listen address of the proxy. Required when `target` is set.
    #[serde(deserialize_with = "de::or_default")]
    pub addr: String,
    /// `host:port` of the application; empty disables the proxy.
    #[serde(deserialize_with = "de::or_default")]
    pub target: String,
    /// Database whose position is tracked for read consistency. Required when `target` is set.
    #[serde(deserialize_with = "de::or_default")]
    pub db: String,
    /// Replication lag beyond which the health check fails; zero disables the check.
    #[serde(deserialize_with = "de::proxy_max_lag")]
    pub max_lag: Duration,
    /// Log every proxied request.
    #[serde(deserialize_with = "de::or_default")]
    pub debug: bool,
    /// Path globs (`*` only) proxied without consistency handling.
    #[serde(deserialize_with = "de::or_default")]
    pub passthrough: Vec<String>,
    /// Path globs (`*` only) of GET/HEAD requests treated as writes.
    #[serde(deserialize_with = "de::or_default")]
    pub always_forward: Vec<String>,
    /// How long a write waits for a primary to be known.
    #[serde(deserialize_with = "de::proxy_primary_redirect_timeout")]
    pub primary_redirect_timeout: Duration,
    /// Server read timeout; zero means none.
    #[serde(deserialize_with = "de::duration")]
    pub read_timeout: Duration,
    /// Server read-header timeout.
    #[serde(deserialize_with = "de::proxy_read_header_timeout")]
    pub read_header_timeout: Duration,
    /// Server write timeout; zero means none.
    #[serde(deserialize_with = "de::duration")]
    pub write_timeout: Duration,
    /// Server idle-connection timeout.
    #[serde(deserialize_with = "de::proxy_idle_timeout")]
    pub idle_timeout: Duration,
    /// How replicas send writes to the primary (an ltxd extension).
    #[serde(deserialize_with = "de::or_default")]
    pub mode: ProxyMode,
}

/// `proxy.mode`: how a replica's proxy sends writes to the primary (an ltxd extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// `fly-replay` when `FLY_APP_NAME` is set (on Fly.io), `forward` elsewhere.
    #[default]
    Auto,
    /// Forward the request to the primary's proxy.
    Forward,
    /// Answer with LiteFS's `fly-replay` header.
    FlyReplay,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            addr: String::new(),
            target: String::new(),
            db: String::new(),
            max_lag: defaults::PROXY_MAX_LAG,
            debug: false,
            passthrough: Vec::new(),
            always_forward: Vec::new(),
            primary_redirect_timeout: defaults::PROXY_PRIMARY_REDIRECT_TIMEOUT,
            read_timeout: Duration::ZERO,
            read_header_timeout: defaults::PROXY_READ_HEADER_TIMEOUT,
            write_timeout: Duration::ZERO,
            idle_timeout: defaults::PROXY_IDLE_TIMEOUT,
            mode: ProxyMode::Auto,
        }
    }
}

/// `lease.type`: how the primary is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseType {
    /// A fixed primary: the node with `candidate: true`.
    Static,
    /// A lease held in Consul (LiteFS's dynamic election).
    Consul,
    /// A lease held in etcd (an ltxd extension).
    Etcd,
}

impl LeaseType {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseType::Static => "static",
            LeaseType::Consul => "consul",
            LeaseType::Etcd => "etcd",
        }
    }
}

impl std::fmt::Display for LeaseType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `lease`: leader election.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaseConfig {
    /// `lease.type`; required.
    #[serde(rename = "type")]
    pub kind: LeaseType,
    /// This node's name as other nodes see it. For a static replica, the primary's hostname.
    /// Empty means the machine's hostname (Consul, etcd).
    #[serde(default, deserialize_with = "de::or_default")]
    pub hostname: String,
    /// URL other nodes use to reach this node's HTTP API; for a static replica, the primary's
    /// URL. Empty means `http://<hostname>:<http port>` (Consul, etcd); required on static
    /// replicas.
    #[serde(default, deserialize_with = "de::or_default")]
    pub advertise_url: String,
    /// Whether this node may become primary. With a static lease, true means "is the primary".
    #[serde(default = "default_true", deserialize_with = "de::bool_true")]
    pub candidate: bool,
    /// After syncing, ask the current primary to hand the lease to this node.
    #[serde(default, deserialize_with = "de::or_default")]
    pub promote: bool,
    /// Wait before reconnecting to the primary after the stream breaks.
    #[serde(
        default = "default_reconnect_delay",
        deserialize_with = "de::reconnect_delay"
    )]
    pub reconnect_delay: Duration,
    /// How long a demoted primary waits before trying for the lease again.
    #[serde(
        default = "default_demote_delay",
        deserialize_with = "de::demote_delay"
    )]
    pub demote_delay: Duration,
    /// Replicate only these databases (names); empty means all. Not allowed on candidates.
    #[serde(default, deserialize_with = "de::or_default")]
    pub databases: Vec<String>,
    /// Consul settings, used when `type` is `consul`.
    #[serde(default, deserialize_with = "de::or_default")]
    pub consul: ConsulConfig,
    /// etcd settings, used when `type` is `etcd` (an ltxd extension).
    #[serde(default, deserialize_with = "de::or_default")]
    pub etcd: EtcdConfig,
}

impl LeaseConfig {
    /// A lease section of the given type with every other key at its default.
    pub fn new(kind: LeaseType) -> Self {
        Self {
            kind,
            hostname: String::new(),
            advertise_url: String::new(),
            candidate: defaults::LEASE_CANDIDATE,
            promote: false,
            reconnect_delay: defaults::LEASE_RECONNECT_DELAY,
            demote_delay: defaults::LEASE_DEMOTE_DELAY,
            databases: Vec::new(),
            consul: ConsulConfig::default(),
            etcd: EtcdConfig::default(),
        }
    }
}

/// `lease.consul`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsulConfig {
    /// Consul's URL; it may carry an ACL token and a key prefix. Required for Consul.
    #[serde(deserialize_with = "de::or_default")]
    pub url: String,
    /// The lease key, unique per cluster. Required for Consul.
    #[serde(deserialize_with = "de::or_default")]
    pub key: String,
    /// Session TTL; zero (or negative) keeps the default.
    #[serde(deserialize_with = "de::lease_ttl")]
    pub ttl: Duration,
    /// Lock delay after a session is invalidated; zero (or negative) keeps the default.
    #[serde(deserialize_with = "de::lock_delay")]
    pub lock_delay: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key: String::new(),
            ttl: defaults::LEASE_TTL,
            lock_delay: defaults::CONSUL_LOCK_DELAY,
        }
    }
}

/// `lease.etcd` (an ltxd extension; LiteFS has no etcd lease). Its `Debug` output hides the
/// password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    /// Client URLs of the etcd cluster, such as `http://etcd-0:2379`. At least one is required
    /// for etcd.
    #[serde(deserialize_with = "de::or_default")]
    pub endpoints: Vec<String>,
    /// The lease key, unique per cluster. Required for etcd.
    #[serde(deserialize_with = "de::or_default")]
    pub key: String,
    /// Lease TTL; zero (or negative) keeps the default.
    #[serde(deserialize_with = "de::lease_ttl")]
    pub ttl: Duration,
    /// User name for etcd authentication; empty means none.
    #[serde(deserialize_with = "de::or_default")]
    pub username: String,
    /// Password for etcd authentication.
    #[serde(deserialize_with = "de::or_default")]
    pub password: String,
    /// PEM file of the CA that signs the servers' certificates; empty means system roots.
    #[serde(deserialize_with = "de::or_default")]
    pub ca_file: String,
    /// PEM client certificate for mutual TLS; requires `key-file`.
    #[serde(deserialize_with = "de::or_default")]
    pub cert_file: String,
    /// PEM private key of `cert-file`.
    #[serde(deserialize_with = "de::or_default")]
    pub key_file: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            key: String::new(),
            ttl: defaults::LEASE_TTL,
            username: String::new(),
            password: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

/// `backup.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackupType {
    /// LTX files written under a local directory (`backup.path`).
    File,
    /// LiteFS Cloud (`litefs-cloud`).
    LitefsCloud,
    /// An S3 bucket or S3-compatible service (`s3`, an ltxd extension).
    S3,
}

/// `backup`: continuous backup from the primary to a directory (`file`) or an S3 bucket (`s3`);
/// `litefs-cloud` is accepted, not acted on. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// `backup.type`: `file`, `s3`, `litefs-cloud`, or empty (`None`) for no backup.
    #[serde(rename = "type", deserialize_with = "de::backup_type")]
    pub kind: Option<BackupType>,
    /// Directory for `file` backups (required), key prefix for `s3` ones.
    #[serde(deserialize_with = "de::or_default")]
    pub path: String,
    /// `s3`: the bucket. Required for `s3`.
    #[serde(deserialize_with = "de::or_default")]
    pub bucket: String,
    /// `s3`: the service URL; empty means AWS, or `AWS_ENDPOINT_URL`.
    #[serde(deserialize_with = "de::or_default")]
    pub endpoint: String,
    /// `s3`: the region; empty means `AWS_REGION`, or `us-east-1`.
    #[serde(deserialize_with = "de::or_default")]
    pub region: String,
    /// `s3`: address the bucket in the URL path, not the host name (MinIO, moto, most others).
    #[serde(deserialize_with = "de::or_default")]
    pub force_path_style: bool,
    /// How long point-in-time history is kept in the bucket (default 7 days).
    #[serde(deserialize_with = "de::backup_retention")]
    pub retention: Duration,
    /// LiteFS Cloud URL; empty means LiteFS's default service.
    #[serde(deserialize_with = "de::or_default")]
    pub url: String,
    /// LiteFS Cloud cluster name.
    #[serde(deserialize_with = "de::or_default")]
    pub cluster: String,
    /// LiteFS Cloud authorization token.
    #[serde(deserialize_with = "de::or_default")]
    pub auth_token: String,
}

/// `replication.sync`: how many replicas must hold a commit in their own log before the
/// application sees it succeed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// Asynchronous replication, as in LiteFS: a commit returns once it is in the local log.
    #[default]
    Off,
    /// At least one candidate replica.
    One,
    /// A majority of the candidates, the primary included (at least one replica).
    Quorum,
    /// Every candidate replica connected (at least one).
    All,
}

impl SyncMode {
    /// The value as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Off => "off",
            SyncMode::One => "one",
            SyncMode::Quorum => "quorum",
            SyncMode::All => "all",
        }
    }
}

/// `replication`: synchronous replication (an ltxd extension; see `docs/replication.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReplicationConfig {
    /// `off` (default), `one`, `quorum` or `all`.
    #[serde(deserialize_with = "de::sync_mode")]
    pub sync: SyncMode,
    /// How long a commit waits for acknowledgements before the primary stops waiting and
    /// replicates asynchronously (degraded) until a replica has caught up again.
    #[serde(deserialize_with = "de::sync_timeout")]
    pub sync_timeout: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            sync: SyncMode::Off,
            sync_timeout: defaults::SYNC_TIMEOUT,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log`: process log output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(deserialize_with = "de::or_default")]
    pub format: LogFormat,
    /// Include timestamps (off by default, for systems whose log collector adds them).
    #[serde(deserialize_with = "de::or_default")]
    pub timestamp: bool,
    /// Log at debug level.
    #[serde(deserialize_with = "de::or_default")]
    pub debug: bool,
}

/// `tracing`: a rolling, size-limited trace log of internal events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TracingConfig {
    /// Whether tracing is on; it only takes effect when `path` is set.
    #[serde(deserialize_with = "de::bool_true")]
    pub enabled: bool,
    /// File to write the trace log to; empty disables it.
    #[serde(deserialize_with = "de::or_default")]
    pub path: String,
    /// Size in megabytes at which the file is rotated.
    #[serde(deserialize_with = "de::tracing_max_size")]
    pub max_size: u64,
    /// Rotated files kept.
    #[serde(deserialize_with = "de::tracing_max_count")]
    pub max_count: u32,
    /// Compress rotated files.
    #[serde(deserialize_with = "de::bool_true")]
    pub compress: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::TRACING_ENABLED,
            path: String::new(),
            max_size: defaults::TRACING_MAX_SIZE_MB,
            max_count: defaults::TRACING_MAX_COUNT,
            compress: defaults::TRACING_COMPRESS,
        }
    }
}

/// Shows whether a secret is set, never its value.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            kind: None,
            path: String::new(),
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            force_path_style: false,
            retention: defaults::BACKUP_RETENTION,
            url: String::new(),
            cluster: String::new(),
            auth_token: String::new(),
        }
    }
}

impl std::fmt::Debug for BackupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("retention", &self.retention)
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .field("auth_token", &redacted(&self.auth_token))
            .finish()
    }
}

fn default_true() -> bool {
    true
}

fn default_reconnect_delay() -> Duration {
    defaults::LEASE_RECONNECT_DELAY
}

fn default_demote_delay() -> Duration {
    defaults::LEASE_DEMOTE_DELAY
}

/// How [`Config::load_with`] and [`Config::parse_with`] treat the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Do not expand environment variables in the file (LiteFS's `-no-expand-env`).
    pub no_expand_env: bool,
}

/// The files [`Config::load`] tries when no path is given, in order: `./ltxd.yml`,
/// `./litefs.yml`, `~/litefs.yml` (only when `HOME` is set in `env`), `/etc/litefs.yml`.
pub fn search_paths(env: Env<'_>) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("./ltxd.yml"), PathBuf::from("./litefs.yml")];
    if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
        paths.push(Path::new(&home).join("litefs.yml"));
    }
    paths.push(PathBuf::from("/etc/litefs.yml"));
    paths
}

impl Config {
    /// A configuration with the given lease type and every other key at its default.
    pub fn new(lease_type: LeaseType) -> Self {
        Self {
            exit_on_error: defaults::EXIT_ON_ERROR,
            skip_sync: false,
            strict_verify: false,
            exec: Vec::new(),
            data: DataConfig::default(),
            fuse: FuseConfig::default(),
            http: HttpConfig::default(),
            quic: QuicConfig::default(),
            proxy: ProxyConfig::default(),
            lease: LeaseConfig::new(lease_type),
            backup: BackupConfig::default(),
            replication: ReplicationConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
        }
    }

    /// Finds, reads, expands, parses and validates the configuration file.
    ///
    /// With `explicit`, that file is read; otherwise the first of [`search_paths`] that exists
    /// is, and [`ConfigError::NotFound`] lists them all if none does. Returns the configuration
    /// and the path it came from. `env` supplies environment variables for expansion (pass
    /// [`process_env`] in production).
    pub fn load(explicit: Option<&Path>, env: Env<'_>) -> Result<(Config, PathBuf), ConfigError> {
        Self::load_with(explicit, env, &LoadOptions::default())
    }

    /// [`Config::load`] with options (for example, no environment expansion).
    pub fn load_with(
        explicit: Option<&Path>,
        env: Env<'_>,
        options: &LoadOptions,
    ) -> Result<(Config, PathBuf), ConfigError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let searched = search_paths(env);
                match searched.iter().find(|p| p.exists()) {
                    Some(path) => path.clone(),
                    None => return Err(ConfigError::NotFound { searched }),
                }
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = Self::parse_with(&text, &path, env, options)?;
        Ok((config, path))
    }

    /// Expands, parses and validates configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        Self::parse_with(text, source, env, &LoadOptions::default())
    }

    /// [`Config::parse`] with options.
    pub fn parse_with(
        text: &str,
        source: &Path,
        env: Env<'_>,
        options: &LoadOptions,
    ) -> Result<Config, ConfigError> {
        let expanded;
        let text = if options.no_expand_env {
            text
        } else {
            // LiteFS sets HOSTNAME from the machine when it is unset or empty.
            let with_hostname = |name: &str| match env(name) {
                Some(value) if name == "HOSTNAME" && value.is_empty() => machine_hostname(),
                None if name == "HOSTNAME" => machine_hostname(),
                value => value,
            };
            expanded = expand_env(text, &with_hostname);
            &expanded
        };
        if is_empty_document(text) {
            // LiteFS reads an empty file as an empty mapping, which lacks the required lease.
            return Err(ConfigError::Parse {
                path: source.to_path_buf(),
                key: Some("lease.type".to_string()),
                line: None,
                column: None,
                message: "the file is empty, but the key is required".to_string(),
            });
        }
        let mut config: Config =
            serde_saphyr::from_str(text).map_err(|err| error::from_yaml(&err, text, source))?;
        config.normalize();
        config.fill_lease_identity();
        config
            .check()
            .map_err(|(key, message)| error::invalid(source, text, key, message))?;
        Ok(config)
    }

    /// Checks that the values are consistent: `data.dir` differs from `fuse.dir`; a Consul lease
    /// has `lease.consul.url` and `.key`; an etcd lease has an endpoint and a key; a static
    /// replica has `lease.advertise-url`; `lease.databases` is not set on a candidate; and a few
    /// more (see `docs/configuration.md`). [`Config::parse`] calls this; call it again after
    /// changing a configuration in code. The error has no file path or line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(key, message)| ConfigError::Invalid {
            path: PathBuf::new(),
            key,
            line: None,
            message,
        })
    }

    /// LiteFS keeps its default for a Consul TTL or lock delay that is not positive; so do we
    /// (and for etcd's TTL).
    fn normalize(&mut self) {
        if self.lease.consul.ttl.is_zero() {
            self.lease.consul.ttl = defaults::LEASE_TTL;
        }
        if self.lease.consul.lock_delay.is_zero() {
            self.lease.consul.lock_delay = defaults::CONSUL_LOCK_DELAY;
        }
        if self.lease.etcd.ttl.is_zero() {
            self.lease.etcd.ttl = defaults::LEASE_TTL;
        }
    }
}

/// Whether the text holds no YAML document: only blank lines, comments and document markers.
fn is_empty_document(text: &str) -> bool {
    text.lines().all(|line| {
        let t = line.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

#[cfg(test)]
mod tests;
