//! [`SyncGate`]: the primary's [`AckWaits`] behind a lock, with a timer thread for
//! `sync-timeout`, the log lines and the metrics. The mount hands it each commit's answer to
//! the application ([`crate::mount::CommitGate`]); the replication service feeds it the
//! replicas' streams and acknowledgements.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use ltxd_protocol::{Pos, SyncInfo};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::waits::{AckWaits, Outcome, Released};
use crate::config::SyncMode;
use crate::ltx::TxId;

/// What answers the application once its commit is released.
type Done = Box<dyn FnOnce() + Send>;

/// How long the timer thread sleeps when nothing waits, before it checks that the gate lives.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The weight of the newest wait in the moving average `ltxd status` shows.
const AVERAGE_WEIGHT: f64 = 0.1;

/// Synchronous replication on the primary: commits wait here for the replicas'
/// acknowledgements.
pub struct SyncGate {
    state: Mutex<State>,
    /// Signalled when a commit starts waiting, so the timer thread sees its deadline.
    waiting: Condvar,
    metrics: Option<SyncMetrics>,
}

struct State {
    waits: AckWaits<Done>,
    /// A moving average of acknowledged waits, in microseconds.
    average_wait_us: f64,
    /// Whether the last log line said degraded.
    reported_degraded: bool,
}

impl std::fmt::Debug for SyncGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncGate")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl SyncGate {
    /// A gate for `mode`, with its metrics in `registry` if given. With a mode other than
    /// `off`, a thread releases commits that wait longer than `timeout`; it ends with the gate.
    pub fn new(mode: SyncMode, timeout: Duration, registry: Option<&Registry>) -> Arc<SyncGate> {
        let gate = Arc::new(SyncGate {
            state: Mutex::new(State {
                waits: AckWaits::new(mode, timeout),
                average_wait_us: 0.0,
                reported_degraded: false,
            }),
            waiting: Condvar::new(),
            metrics: registry.map(|registry| SyncMetrics::new(registry, mode)),
        });
        if mode != SyncMode::Off {
            let weak = Arc::downgrade(&gate);
            if let Err(err) = std::thread::Builder::new()
                .name("sync-timeout".into())
                .spawn(move || timer(weak))
            {
                tracing::error!(%err, "cannot start the sync-timeout thread: commits that wait are released only by acknowledgements");
            }
        }
        gate
    }

    /// The configured mode.
    pub fn mode(&self) -> SyncMode {
        self.state().waits.mode()
    }

    /// True when commits wait for replicas, so streams should offer acknowledgements.
    pub fn offers_acks(&self) -> bool {
        self.mode() != SyncMode::Off
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts replica `node`'s acknowledging stream until the returned guard is dropped.
    pub fn stream_opened(self: &Arc<Self>, node: u64) -> AckStream {
        self.state().waits.stream_opened(node);
        AckStream {
            gate: Arc::clone(self),
            node,
        }
    }

    /// Replica `node` has `positions` in its log.
    pub fn acked(&self, node: u64, positions: &BTreeMap<String, Pos>) {
        let now = Instant::now();
        let mut released = Vec::new();
        {
            let mut state = self.state();
            for (db, pos) in positions {
                released.extend(state.waits.acked(node, db, pos.txid, now));
            }
        }
        self.release(released);
    }

    /// Calls `done` once commit `txid` of `db`, now in the local log, may be acknowledged to
    /// the application: at once when nothing needs to be waited for.
    pub fn after_commit(&self, db: &str, txid: TxId, done: Done) {
        let now = Instant::now();
        let ready = {
            let mut state = self.state();
            state.waits.committed(db, txid, done, now)
        };
        match ready {
            Some(released) => self.release(vec![released]),
            None => self.waiting.notify_one(),
        }
    }

    /// The state for `/info`.
    pub fn info(&self) -> SyncInfo {
        let state = self.state();
        let status = state.waits.status(Instant::now());
        SyncInfo {
            mode: status.mode.as_str().to_string(),
            degraded: status.degraded,
            degraded_ms: status.degraded_total.as_millis() as u64,
            replicas: status.replicas,
            waiting: status.waiting,
            ack_wait_us: state.average_wait_us.round() as u64,
        }
    }

    /// Brings the metrics that depend on time up to date (before a scrape).
    pub fn refresh_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            let status = self.state().waits.status(Instant::now());
            metrics.degraded.set(i64::from(status.degraded));
            metrics
                .degraded_ms
                .set(status.degraded_total.as_millis() as i64);
            metrics.replicas.set(status.replicas as i64);
        }
    }

    /// Answers released commits, outside the lock, records their waits, and logs the start or
    /// the end of a degradation.
    fn release(&self, released: Vec<Released<Done>>) {
        let degraded = {
            let mut state = self.state();
            for r in released
                .iter()
                .filter(|r| r.outcome == Outcome::Acknowledged)
            {
                let us = r.waited.as_secs_f64() * 1e6;
                state.average_wait_us = if state.average_wait_us == 0.0 {
                    us
                } else {
                    state.average_wait_us * (1.0 - AVERAGE_WEIGHT) + us * AVERAGE_WEIGHT
                };
            }
            let degraded = state.waits.status(Instant::now()).degraded;
            let changed = degraded != state.reported_degraded;
            state.reported_degraded = degraded;
            changed.then_some(degraded)
        };
        match degraded {
            Some(true) => tracing::warn!(
                "synchronous replication degraded: no acknowledgement within replication.sync-timeout; commits return without waiting until a replica has caught up"
            ),
            Some(false) => {
                tracing::info!("synchronous replication resumed: a replica has caught up")
            }
            None => {}
        }
        if let (Some(metrics), Some(degraded)) = (&self.metrics, degraded) {
            metrics.degraded.set(i64::from(degraded));
        }
        for r in released {
            if let Some(metrics) = &self.metrics {
                metrics.observe(&r);
            }
            (r.token)();
        }
    }

    /// Releases commits whose deadline has passed.
    fn expire(&self) {
        let released = self.state().waits.expire(Instant::now());
        self.release(released);
    }
}

impl crate::mount::CommitGate for SyncGate {
    fn after_commit(&self, db: &str, txid: TxId, done: Box<dyn FnOnce() + Send>) {
        SyncGate::after_commit(self, db, txid, done);
    }
}

/// A replica's acknowledging stream, counted while it lives.
pub struct AckStream {
    gate: Arc<SyncGate>,
    node: u64,
}

impl Drop for AckStream {
    fn drop(&mut self) {
        let released = self
            .gate
            .state()
            .waits
            .stream_closed(self.node, Instant::now());
        self.gate.release(released);
    }
}

/// Runs until the gate is dropped: sleeps until the next deadline (or a new waiter) and
/// releases what timed out.
fn timer(gate: Weak<SyncGate>) {
    loop {
        let Some(gate) = gate.upgrade() else {
            return;
        };
        gate.expire();
        // The deadline is read under the lock the wait releases, so a commit that starts
        // waiting after it is read wakes the thread.
        let state = gate.state();
        let wait = state.waits.next_deadline().map_or(IDLE_TICK, |at| {
            at.saturating_duration_since(Instant::now()).min(IDLE_TICK)
        });
        if !wait.is_zero() {
            drop(
                gate.waiting
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// `ltxd_sync_*`.
struct SyncMetrics {
    degraded: IntGauge,
    degraded_ms: IntGauge,
    replicas: IntGauge,
    waits: Histogram,
    commits: IntCounterVec,
}

impl SyncMetrics {
    fn new(registry: &Registry, mode: SyncMode) -> SyncMetrics {
        fn register<C: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            collector: C,
        ) -> C {
            if let Err(err) = registry.register(Box::new(collector.clone())) {
                tracing::warn!(%err, "cannot register a sync metric");
            }
            collector
        }
        let gauge = |name: &str, help: &str| {
            register(
                registry,
                IntGauge::new(name, help).expect("the metric's name is valid"),
            )
        };
        let modes = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "ltxd_sync_mode",
                    "replication.sync: 1 for the configured mode.",
                ),
                &["mode"],
            )
            .expect("the metric's name and label are valid"),
        );
        modes.with_label_values(&[mode.as_str()]).set(1);
        let buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0,
        ];
        SyncMetrics {
            degraded: gauge(
                "ltxd_sync_degraded",
                "1 while synchronous replication is degraded to asynchronous after a sync-timeout.",
            ),
            degraded_ms: gauge(
                "ltxd_sync_degraded_milliseconds_total",
                "Time spent degraded to asynchronous replication since the node started.",
            ),
            replicas: gauge(
                "ltxd_sync_replicas",
                "Replicas connected with an acknowledging stream.",
            ),
            waits: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ltxd_sync_ack_wait_seconds",
                        "How long acknowledged commits waited for the replicas.",
                    )
                    .buckets(buckets),
                )
                .expect("the metric's name and buckets are valid"),
            ),
            commits: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "ltxd_sync_commits_total",
                        "Commits by how their wait ended: acknowledged, timed_out, not_required.",
                    ),
                    &["outcome"],
                )
                .expect("the metric's name and label are valid"),
            ),
        }
    }

    fn observe(&self, released: &Released<Done>) {
        let outcome = match released.outcome {
            Outcome::Acknowledged => {
                self.waits.observe(released.waited.as_secs_f64());
                "acknowledged"
            }
            Outcome::TimedOut => "timed_out",
            Outcome::NotRequired => "not_required",
        };
        self.commits.with_label_values(&[outcome]).inc();
    }
}
