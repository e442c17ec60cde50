//! Deserialization helpers shared by the configuration structs.
//!
//! Go's YAML decoder leaves a field at its default when the value is null (`key:` with nothing
//! after it, `~`, `null`). That happens easily after environment expansion (`hostname: $UNSET`),
//! so every field here accepts null and keeps its default, instead of serde's usual error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::GoDuration;
use super::{BackupType, ExecConfig, SyncMode};

/// Any field whose default is `T::default()`: null means the default.
pub(super) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A duration field whose default is zero: null means zero.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    Ok(Option::<GoDuration>::deserialize(deserializer)?.map_or(Duration::ZERO, |d| d.0))
}

/// Defines a helper for a field with a non-zero default: null yields that default.
macro_rules! null_keeps_default {
    ($($name:ident: $ty:ty = $default:expr;)*) => {$(
        pub(super) fn $name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
            Ok(Option::<$ty>::deserialize(deserializer)?.unwrap_or_else(|| $default))
        }
    )*};
}

/// Defines a helper for a duration field with a non-zero default: null yields that default.
macro_rules! null_keeps_default_duration {
    ($($name:ident = $default:expr;)*) => {$(
        pub(super) fn $name<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Duration, D::Error> {
            Ok(Option::<GoDuration>::deserialize(deserializer)?.map_or($default, |d| d.0))
        }
    )*};
}

use super::defaults as dflt;

null_keeps_default! {
    bool_true: bool = true;
    data_dir: String = dflt::DATA_DIR.to_string();
    fuse_dir: String = dflt::FUSE_DIR.to_string();
    http_addr: String = dflt::HTTP_ADDR.to_string();
    http_max_streams_per_peer: usize = dflt::HTTP_MAX_STREAMS_PER_PEER;
    http_max_subscriptions: usize = dflt::HTTP_MAX_SUBSCRIPTIONS;
    quic_max_connections: usize = dflt::QUIC_MAX_CONNECTIONS;
    quic_max_streams: u32 = dflt::QUIC_MAX_STREAMS;
    tracing_max_size: u64 = dflt::TRACING_MAX_SIZE_MB;
    tracing_max_count: u32 = dflt::TRACING_MAX_COUNT;
}

null_keeps_default_duration! {
    retention = dflt::RETENTION;
    http_header_read_timeout = dflt::HTTP_HEADER_READ_TIMEOUT;
    http_idle_timeout = dflt::HTTP_IDLE_TIMEOUT;
    retention_monitor_interval = dflt::RETENTION_MONITOR_INTERVAL;
    proxy_max_lag = dflt::PROXY_MAX_LAG;
    proxy_primary_redirect_timeout = dflt::PROXY_PRIMARY_REDIRECT_TIMEOUT;
    proxy_read_header_timeout = dflt::PROXY_READ_HEADER_TIMEOUT;
    proxy_idle_timeout = dflt::PROXY_IDLE_TIMEOUT;
    reconnect_delay = dflt::LEASE_RECONNECT_DELAY;
    demote_delay = dflt::LEASE_DEMOTE_DELAY;
    lease_ttl = dflt::LEASE_TTL;
    lock_delay = dflt::CONSUL_LOCK_DELAY;
    quic_keep_alive = dflt::QUIC_KEEP_ALIVE;
    quic_idle_timeout = dflt::QUIC_IDLE_TIMEOUT;
    backup_retention = dflt::BACKUP_RETENTION;
    sync_timeout = dflt::SYNC_TIMEOUT;
}

/// `replication.sync`: `off`, `one`, `quorum` or `all`. A YAML 1.1 reader takes a bare `off` for
/// false, so false means `off` too; null keeps the default (`off`).
pub(super) fn sync_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SyncMode, D::Error> {
    struct ModeVisitor;

    impl<'a> Visitor<'a> for ModeVisitor {
        type Value = SyncMode;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("one of off, one, quorum, all")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<SyncMode, E> {
            match v {
                "off" => Ok(SyncMode::Off),
                "one" => Ok(SyncMode::One),
                "quorum" => Ok(SyncMode::Quorum),
                "all" => Ok(SyncMode::All),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<SyncMode, E> {
            match v {
                false => Ok(SyncMode::Off),
                true => Err(E::invalid_value(de::Unexpected::Bool(v), &self)),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<SyncMode, E> {
            Ok(SyncMode::Off)
        }

        fn visit_none<E: de::Error>(self) -> Result<SyncMode, E> {
            Ok(SyncMode::Off)
        }

        fn visit_some<D: Deserializer<'a>>(self, d: D) -> Result<SyncMode, D::Error> {
            d.deserialize_any(ModeVisitor)
        }
    }

    deserializer.deserialize_option(ModeVisitor)
}

/// `exec`: a single command string, or a list of `{cmd, if-candidate}` entries. Null means no
/// commands.
pub(super) fn exec<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ExecConfig>, D::Error> {
    struct ExecList(Vec<ExecConfig>);

    impl<'de> Deserialize<'de> for ExecList {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ExecVisitor).map(ExecList)
        }
    }

    struct ExecVisitor;

    impl<'de> Visitor<'de> for ExecVisitor {
        type Value = Vec<ExecConfig>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a command string or a list of `{cmd, if-candidate}` entries")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![ExecConfig::new(v)])
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = seq.next_element::<ExecConfig>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }

    Ok(Option::<ExecList>::deserialize(deserializer)?.map_or_else(Vec::new, |l| l.0))
}

/// `backup.type`: `file`, `s3`, `litefs-cloud`, or empty/null for none.
pub(super) fn backup_type<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BackupType>, D::Error> {
    const VARIANTS: &[&str] = &["file", "s3", "litefs-cloud"];
    match Option::<String>::deserialize(deserializer)?.as_deref() {
        None | Some("") => Ok(None),
        Some("file") => Ok(Some(BackupType::File)),
        Some("s3") => Ok(Some(BackupType::S3)),
        Some("litefs-cloud") => Ok(Some(BackupType::LitefsCloud)),
        Some(other) => Err(de::Error::unknown_variant(other, VARIANTS)),
    }
}
