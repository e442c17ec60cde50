//! Default values of the configuration keys; they match LiteFS's `NewConfig`.
//!
//! Keys not listed here default to false, zero, an empty string or an empty list.

use std::time::Duration;

/// `data.dir`: where the store keeps its databases and LTX files.
pub const DATA_DIR: &str = "/var/lib/litefs";
/// `data.compress`: whether LTX files are written compressed.
pub const DATA_COMPRESS: bool = true;
/// `data.retention`: how long LTX files are kept after they are no longer needed.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);
/// `data.retention-monitor-interval`: how often retention is enforced.
pub const RETENTION_MONITOR_INTERVAL: Duration = Duration::from_secs(60);
/// `backup.retention`: point-in-time history kept in the bucket (an ltxd extension).
pub const BACKUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `replication.sync-timeout`: how long a commit waits for replicas' acknowledgements (an
/// ltxd extension).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// `fuse.dir`: the FUSE mount point.
pub const FUSE_DIR: &str = "/litefs";
/// `http.addr`: the replication API's listen address.
pub const HTTP_ADDR: &str = ":20202";
/// `http.header-read-timeout`: how long a client may take to send a request header.
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `http.idle-timeout`: how long a connection may stay open with no request in flight.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `http.max-streams-per-peer`: the most `/stream` subscriptions of one peer address.
pub const HTTP_MAX_STREAMS_PER_PEER: usize = 64;
/// `http.max-subscriptions`: the most replica streams a node serves at once (HTTP and QUIC).
pub const HTTP_MAX_SUBSCRIPTIONS: usize = 256;
/// `proxy.max-lag`: replication lag beyond which the proxy's health check fails.
pub const PROXY_MAX_LAG: Duration = Duration::from_secs(10);
/// `proxy.primary-redirect-timeout`: how long a write waits for a known primary.
pub const PROXY_PRIMARY_REDIRECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `proxy.read-header-timeout`.
pub const PROXY_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `proxy.idle-timeout`.
pub const PROXY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `lease.candidate`: whether this node may become primary.
pub const LEASE_CANDIDATE: bool = true;
/// `lease.reconnect-delay`: wait before reconnecting to the primary.
pub const LEASE_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// `lease.demote-delay`: how long a demoted primary waits before it tries for the lease again.
pub const LEASE_DEMOTE_DELAY: Duration = Duration::from_secs(10);
/// `lease.consul.ttl` and `lease.etcd.ttl`: the lease's time to live.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// `lease.consul.lock-delay`: Consul's lock delay after a session is invalidated.
pub const CONSUL_LOCK_DELAY: Duration = Duration::from_secs(1);
/// `exit-on-error`: whether the process exits when a run error occurs.
pub const EXIT_ON_ERROR: bool = true;
/// `tracing.enabled`.
pub const TRACING_ENABLED: bool = true;
/// `tracing.max-size`, in megabytes.
pub const TRACING_MAX_SIZE_MB: u64 = 64;
/// `tracing.max-count`: rotated trace files kept.
pub const TRACING_MAX_COUNT: u32 = 8;
/// `tracing.compress`: whether rotated trace files are compressed.
pub const TRACING_COMPRESS: bool = true;

/// `quic.keep-alive-interval`.
pub const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// `quic.idle-timeout`.
pub const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `quic.max-connections`: the most replica connections a QUIC server holds open at once.
pub const QUIC_MAX_CONNECTIONS: usize = 256;
/// `quic.max-streams`: the most streams one replica connection may have open at once.
pub const QUIC_MAX_STREAMS: u32 = 1024;
