//! Prometheus metrics for `GET /metrics`, under LiteFS's names so that its dashboards and alerts
//! keep working: counters the mount increments as applications write, gauges sampled from the
//! node when the endpoint is scraped, and the process collector (CPU, memory, open files).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric a node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Held while a scrape sets the gauges and encodes them, so that one scrape's reset of the
    /// per-database gauges never empties another's output.
    scrape: Mutex<()>,
    db_count: IntGauge,
    is_primary: IntGauge,
    subscriber_count: IntGauge,
    lag_seconds: Gauge,
    db_txid: IntGaugeVec,
    db_lag_seconds: GaugeVec,
    database_writes: IntCounterVec,
    journal_writes: IntCounterVec,
    wal_writes: IntCounterVec,
    shm_writes: IntCounterVec,
    commits: IntCounterVec,
}

/// One database's counters, resolved once so that counting a write is one atomic add.
#[derive(Clone, Debug)]
pub struct DatabaseCounters {
    /// Writes to the database file.
    pub database_writes: IntCounter,
    /// Writes to the rollback journal.
    pub journal_writes: IntCounter,
    /// Writes to the WAL.
    pub wal_writes: IntCounter,
    /// Writes to the WAL index (`-shm`).
    pub shm_writes: IntCounter,
    /// Transactions committed through the mount and appended to the log.
    pub commits: IntCounter,
}

/// The node's state at a scrape.
#[derive(Clone, Debug, Default)]
pub struct NodeSample {
    /// True on the primary.
    pub is_primary: bool,
    /// Replicas subscribed to this node's log.
    pub subscribers: usize,
    /// On a replica, how long ago the primary was last heard from.
    pub lag: Option<Duration>,
    /// Each database in the log.
    pub databases: Vec<DatabaseSample>,
}

/// One database's state at a scrape.
#[derive(Clone, Debug, Default)]
pub struct DatabaseSample {
    /// The database name.
    pub name: String,
    /// The TXID of its last transaction.
    pub txid: u64,
    /// On a replica, how far its last applied transaction trails the primary's clock.
    pub lag: Option<Duration>,
}

impl Metrics {
    /// The registry, for metrics other modules define (the proxy's, the backup's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// All metrics, registered; none counted yet.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let per_db = |name: &str, help: &str| {
            let counter = IntCounterVec::new(Opts::new(name, help), &["db"])
                .expect("the metric's name and label are valid");
            register(&registry, counter)
        };
        let metrics = Metrics {
            db_count: register(&registry, int_gauge("litefs_db_count", "Databases managed.")),
            is_primary: register(
                &registry,
                int_gauge("litefs_is_primary", "1 on the primary, 0 on a replica."),
            ),
            subscriber_count: register(
                &registry,
                int_gauge(
                    "litefs_subscriber_count",
                    "Replicas subscribed to this node's log.",
                ),
            ),
            lag_seconds: register(
                &registry,
                Gauge::new(
                    "litefs_lag_seconds",
                    "On a replica, seconds since the primary was last heard from; 0 on the primary.",
                )
                .expect("the metric's name is valid"),
            ),
            db_txid: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("litefs_db_txid", "The TXID of the database's last transaction."),
                    &["db"],
                )
                .expect("the metric's name and label are valid"),
            ),
            db_lag_seconds: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "litefs_db_lag_seconds",
                        "On a replica, seconds the last applied transaction trails the primary's clock; 0 on the primary.",
                    ),
                    &["db"],
                )
                .expect("the metric's name and label are valid"),
            ),
            database_writes: per_db(
                "litefs_db_database_write_count",
                "Writes to the database file.",
            ),
            journal_writes: per_db(
                "litefs_db_journal_write_count",
                "Writes to the rollback journal.",
            ),
            wal_writes: per_db("litefs_db_wal_write_count", "Writes to the WAL."),
            shm_writes: per_db(
                "litefs_db_shm_write_count",
                "Writes to the WAL index (-shm).",
            ),
            commits: per_db(
                "litefs_db_commit_count",
                "Transactions committed through the mount and appended to the log.",
            ),
            registry,
            scrape: Mutex::new(()),
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(err) = metrics.registry.register(Box::new(process)) {
            tracing::warn!(%err, "process metrics are not available");
        }
        metrics
    }

    /// The counters of database `name`.
    pub fn database(&self, name: &str) -> DatabaseCounters {
        DatabaseCounters {
            database_writes: self.database_writes.with_label_values(&[name]),
            journal_writes: self.journal_writes.with_label_values(&[name]),
            wal_writes: self.wal_writes.with_label_values(&[name]),
            shm_writes: self.shm_writes.with_label_values(&[name]),
            commits: self.commits.with_label_values(&[name]),
        }
    }

    /// Every metric in Prometheus's text format, the gauges set from `sample`.
    pub fn render(&self, sample: &NodeSample) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.db_count
            .set(i64::try_from(sample.databases.len()).unwrap_or(i64::MAX));
        self.is_primary.set(i64::from(sample.is_primary));
        self.subscriber_count
            .set(i64::try_from(sample.subscribers).unwrap_or(i64::MAX));
        self.lag_seconds
            .set(sample.lag.unwrap_or_default().as_secs_f64());
        // A database that is gone (renamed away from the data directory) leaves no stale series.
        self.db_txid.reset();
        self.db_lag_seconds.reset();
        for db in &sample.databases {
            self.db_txid
                .with_label_values(&[db.name.as_str()])
                .set(i64::try_from(db.txid).unwrap_or(i64::MAX));
            self.db_lag_seconds
                .with_label_values(&[db.name.as_str()])
                .set(db.lag.unwrap_or_default().as_secs_f64());
        }
        let mut text = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%err, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("the metric's name is valid")
}

/// Registers `metric` in `registry` and returns it.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
    }

    #[test]
    fn counters_and_samples_render_under_litefs_names() {
        let metrics = Metrics::new();
        let counters = metrics.database("app.db");
        counters.database_writes.inc_by(3);
        counters.commits.inc();
        let text = metrics.render(&NodeSample {
            is_primary: false,
            subscribers: 2,
            lag: Some(Duration::from_millis(1500)),
            databases: vec![DatabaseSample {
                name: "app.db".into(),
                txid: 42,
                lag: Some(Duration::from_millis(250)),
            }],
        });
        assert_eq!(line(&text, "litefs_db_count"), Some("litefs_db_count 1"));
        assert_eq!(
            line(&text, "litefs_is_primary"),
            Some("litefs_is_primary 0")
        );
        assert_eq!(
            line(&text, "litefs_subscriber_count"),
            Some("litefs_subscriber_count 2")
        );
        assert_eq!(
            line(&text, "litefs_lag_seconds"),
            Some("litefs_lag_seconds 1.5")
        );
        assert_eq!(
            line(&text, r#"litefs_db_txid{db="app.db"}"#),
            Some(r#"litefs_db_txid{db="app.db"} 42"#)
        );
        assert_eq!(
            line(&text, r#"litefs_db_lag_seconds{db="app.db"}"#),
            Some(r#"litefs_db_lag_seconds{db="app.db"} 0.25"#)
        );
        assert_eq!(
            line(&text, r#"litefs_db_database_write_count{db="app.db"}"#),
            Some(r#"litefs_db_database_write_count{db="app.db"} 3"#)
        );
        assert_eq!(
            line(&text, r#"litefs_db_commit_count{db="app.db"}"#),
            Some(r#"litefs_db_commit_count{db="app.db"} 1"#)
        );
        assert!(text.contains("# TYPE litefs_db_commit_count counter"));
    }

    #[test]
    fn a_database_that_is_gone_leaves_no_gauge() {
        let metrics = Metrics::new();
        let sample = |names: &[&str]| NodeSample {
            is_primary: true,
            databases: names
                .iter()
                .map(|name| DatabaseSample {
                    name: name.to_string(),
                    txid: 1,
                    lag: None,
                })
                .collect(),
            ..NodeSample::default()
        };
        assert!(metrics
            .render(&sample(&["a.db", "b.db"]))
            .contains(r#"db="b.db""#));
        let text = metrics.render(&sample(&["a.db"]));
        assert!(!text.contains(r#"litefs_db_txid{db="b.db"}"#));
        assert_eq!(
            line(&text, "litefs_is_primary"),
            Some("litefs_is_primary 1")
        );
        assert_eq!(
            line(&text, "litefs_lag_seconds"),
            Some("litefs_lag_seconds 0")
        );
    }
}
