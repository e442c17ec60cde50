//! The backup's metrics, `ltxd_backup_*`, registered in the node's registry.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Per-database gauges and counters of the uploader.
#[derive(Clone, Debug)]
pub struct BackupMetrics {
    position: IntGaugeVec,
    lag_txids: IntGaugeVec,
    lag_seconds: GaugeVec,
    uploaded_bytes: IntCounterVec,
    uploaded_objects: IntCounterVec,
    errors: IntCounterVec,
}

/// One database's backup state, for `ltxd status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupStatus {
    /// The last TXID in the bucket.
    pub txid: u64,
    /// TXIDs committed but not yet in the bucket.
    pub lag_txids: u64,
    /// Age of the oldest transaction not yet in the bucket, in milliseconds (0 when caught up).
    pub lag_ms: u64,
}

impl BackupMetrics {
    /// The metrics, registered in `registry` (a registration failure is logged, not fatal).
    pub fn new(registry: &Registry) -> BackupMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["db"])
                .expect("the metric's name and label are valid");
            if let Err(err) = registry.register(Box::new(g.clone())) {
                tracing::warn!(%err, name, "cannot register a backup metric");
            }
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["db"])
                .expect("the metric's name and label are valid");
            if let Err(err) = registry.register(Box::new(c.clone())) {
                tracing::warn!(%err, name, "cannot register a backup metric");
            }
            c
        };
        BackupMetrics {
            position: gauge(
                "ltxd_backup_txid",
                "The last TXID of the database in the backup bucket.",
            ),
            lag_txids: gauge(
                "ltxd_backup_lag_txids",
                "TXIDs committed to the log but not yet in the backup bucket.",
            ),
            lag_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "ltxd_backup_lag_seconds",
                        "Age of the oldest transaction not yet in the backup bucket; 0 when caught up.",
                    ),
                    &["db"],
                )
                .expect("the metric's name and label are valid");
                if let Err(err) = registry.register(Box::new(g.clone())) {
                    tracing::warn!(%err, "cannot register a backup metric");
                }
                g
            },
            uploaded_bytes: counter(
                "ltxd_backup_uploaded_bytes_total",
                "Bytes of LTX uploaded to the backup bucket.",
            ),
            uploaded_objects: counter(
                "ltxd_backup_uploaded_objects_total",
                "LTX objects uploaded to the backup bucket.",
            ),
            errors: counter(
                "ltxd_backup_errors_total",
                "Failed backup passes (the next pass retries).",
            ),
        }
    }

    /// Sets database `db`'s position and lag.
    pub fn set(&self, db: &str, status: &BackupStatus) {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.position.with_label_values(&[db]).set(i(status.txid));
        self.lag_txids
            .with_label_values(&[db])
            .set(i(status.lag_txids));
        self.lag_seconds
            .with_label_values(&[db])
            .set(status.lag_ms as f64 / 1000.0);
    }

    /// Counts one uploaded object of `bytes` bytes.
    pub fn uploaded(&self, db: &str, bytes: u64) {
        self.uploaded_objects.with_label_values(&[db]).inc();
        self.uploaded_bytes.with_label_values(&[db]).inc_by(bytes);
    }

    /// Counts one failed pass.
    pub fn error(&self, db: &str) {
        self.errors.with_label_values(&[db]).inc();
    }
}
