//! The conformance suite that every lease backend passes: one set of checks, run against the
//! static lease, etcd and Consul alike.
//!
//! A backend's tests describe the backend as a [`Cluster`]: something that makes [`Leaser`]s for
//! numbered nodes sharing one lease key, with the backend's [`Timing`] and [`Capabilities`].
//! Each check in [`CHECKS`] takes a fresh cluster and panics, with a message that says what went
//! wrong, if the backend breaks the contract of the `ltxd-lease` traits. A check that needs a
//! capability the backend lacks (expiry, say, for the static lease) returns
//! [`Outcome::Skipped`] without calling it.
//!
//! [`suite!`] writes one `#[test]` per check; [`run`] runs a single check with its own tokio
//! runtime.
//!
//! The checks: exactly one of many racing candidates wins; a dead holder's lease expires within
//! its bound; a released lease is taken over at once; renewal keeps the lease past several
//! TTLs; every node sees the primary, and so does a watch; the cluster ID is set once; epochs
//! strictly grow across tenures; renewing a lost lease fails with [`LeaseError::Expired`]; a
//! handoff moves the lease to another node with a greater epoch.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ltxd_lease::{BoxFuture, Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};
use tokio::task::JoinSet;

/// A backend under test: leasers for numbered nodes that contend for one key.
pub trait Cluster: Send + Sync {
    /// The backend's name, for messages.
    fn backend(&self) -> &str;

    /// A leaser for node `node`. Leasers for different nodes have different hostnames and
    /// advertise URLs (except on the static lease, where replicas name the primary); calling
    /// this twice with one number gives two leasers for the same node.
    fn leaser(&self, node: usize) -> BoxFuture<'_, Result<Box<dyn Leaser>, LeaseError>>;

    /// How long things take on this backend.
    fn timing(&self) -> Timing;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
}

/// How long things take on a backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The lease TTL the leasers use. Renewal checks renew every third of it. (A backend without
    /// expiry gives a short nominal value, which only sets the pace of those checks.)
    pub ttl: Duration,
    /// How long after its last renewal a lease that is not renewed is certain to be gone, so
    /// that another node can acquire it: the TTL plus the backend's own grace (Consul takes up
    /// to twice the TTL, then the lock delay).
    pub expiry_bound: Duration,
    /// Extra time allowed on top of every bound, for a loaded machine.
    pub slack: Duration,
}

/// What a backend under test can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Leases expire, can be released and then won by another node (not the static lease).
    pub elections: bool,
    /// The cluster ID is stored with the lease (not the static lease).
    pub cluster_id: bool,
    /// A lease can be handed to another node with [`Leaser::acquire_existing`].
    pub handoff: bool,
}

/// How a check ended, when it did not panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The check does not apply to this backend, or the backend is unavailable and the tests
    /// were told to skip it, for the reason given.
    Skipped(String),
}

/// A backend that cannot be tested here and that the tests were told to skip (for example,
/// etcd is not installed and `LTXD_SKIP_ETCD=1`), with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// One conformance check.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's name, which is also the name of the test [`suite!`] writes for it.
    pub name: &'static str,
    /// Runs the check against a fresh cluster.
    pub run: for<'a> fn(&'a dyn Cluster) -> BoxFuture<'a, Outcome>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Every check, in the order [`suite!`] lists them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "exactly_one_of_many_candidates_wins",
        run: exactly_one_of_many_candidates_wins,
    },
    Check {
        name: "a_dead_holders_lease_expires",
        run: a_dead_holders_lease_expires,
    },
    Check {
        name: "a_released_lease_is_taken_over_at_once",
        run: a_released_lease_is_taken_over_at_once,
    },
    Check {
        name: "renewal_keeps_the_lease",
        run: renewal_keeps_the_lease,
    },
    Check {
        name: "others_see_the_primary",
        run: others_see_the_primary,
    },
    Check {
        name: "the_watch_follows_the_primary",
        run: the_watch_follows_the_primary,
    },
    Check {
        name: "the_cluster_id_is_set_once",
        run: the_cluster_id_is_set_once,
    },
    Check {
        name: "epochs_grow_across_tenures",
        run: epochs_grow_across_tenures,
    },
    Check {
        name: "renew_after_loss_is_expired",
        run: renew_after_loss_is_expired,
    },
    Check {
        name: "handoff_moves_the_lease",
        run: handoff_moves_the_lease,
    },
];

/// Runs the check called `name` (one of [`CHECKS`]) against the cluster `make` builds, on a tokio
/// runtime of its own, and returns its outcome. A skip is printed with its reason. Panics if the
/// check fails or no check has that name.
pub fn run<M, F>(name: &str, make: M) -> Outcome
where
    M: FnOnce() -> F,
    F: Future<Output = Result<Box<dyn Cluster>, Unavailable>>,
{
    let check = CHECKS
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no conformance check is called {name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance check");
    runtime.block_on(async {
        let cluster = match make().await {
            Ok(cluster) => cluster,
            Err(Unavailable(reason)) => {
                println!("conformance check {} skipped: {reason}", check.name);
                return Outcome::Skipped(reason);
            }
        };
        let outcome = (check.run)(&*cluster).await;
        if let Outcome::Skipped(reason) = &outcome {
            println!(
                "conformance check {} skipped for the {} lease: {reason}",
                check.name,
                cluster.backend()
            );
        }
        outcome
    })
}

/// Writes one `#[test]` for each conformance check. The argument is an async function (or any
/// expression callable with no arguments that returns a future) giving a fresh
/// `Result<Box<dyn Cluster>, Unavailable>` for each test.
#[macro_export]
macro_rules! suite {
    ($make:expr) => {
        $crate::suite!(@tests $make;
            exactly_one_of_many_candidates_wins,
            a_dead_holders_lease_expires,
            a_released_lease_is_taken_over_at_once,
            renewal_keeps_the_lease,
            others_see_the_primary,
            the_watch_follows_the_primary,
            the_cluster_id_is_set_once,
            epochs_grow_across_tenures,
            renew_after_loss_is_expired,
            handoff_moves_the_lease,
        );
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::run(stringify!($name), $make);
            }
        )*
    };
}

/// How long one lease operation may take before a check gives up on it.
const OPERATION_LIMIT: Duration = Duration::from_secs(10);

/// How long a watch must stay quiet to count as "no change".
const QUIET: Duration = Duration::from_millis(400);

/// How often a check retries while it waits for a lease to expire.
const POLL: Duration = Duration::from_millis(100);

/// Awaits `future`, or panics after `limit` naming `what`.
async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {limit:?}"),
    }
}

/// A leaser for `node`, or a panic.
async fn leaser(cluster: &dyn Cluster, node: usize) -> Arc<dyn Leaser> {
    let leaser = within("create a leaser", OPERATION_LIMIT, cluster.leaser(node))
        .await
        .unwrap_or_else(|e| panic!("create a leaser for node {node}: {e}"));
    Arc::from(leaser)
}

/// The info a leaser publishes while it holds the lease.
fn info_of(leaser: &dyn Leaser) -> PrimaryInfo {
    PrimaryInfo {
        hostname: leaser.hostname().to_string(),
        advertise_url: leaser.advertise_url().to_string(),
    }
}

/// Acquires the lease, or panics.
async fn acquire(leaser: &dyn Leaser, what: &str) -> Box<dyn Lease> {
    within(what, OPERATION_LIMIT, leaser.acquire())
        .await
        .unwrap_or_else(|e| panic!("{what}: acquire failed: {e}"))
}

/// A lease operation's result, for a failure message.
fn describe(result: &Result<Box<dyn Lease>, LeaseError>) -> String {
    match result {
        Ok(lease) => format!("a lease (ID {}, epoch {})", lease.id(), lease.epoch()),
        Err(e) => format!("the error {e:?}"),
    }
}

/// Asserts that `leaser` cannot acquire the lease because another node holds it.
async fn assert_held_elsewhere(leaser: &dyn Leaser, what: &str) {
    match within(what, OPERATION_LIMIT, leaser.acquire()).await {
        Err(LeaseError::PrimaryExists) => {}
        Ok(lease) => panic!(
            "{what}: {} acquired a lease another node holds (epoch {})",
            leaser.hostname(),
            lease.epoch()
        ),
        Err(e) => panic!("{what}: expected PrimaryExists, got {e}"),
    }
}

/// The primary as `leaser` sees it, or a panic on a backend error.
async fn primary(leaser: &dyn Leaser, what: &str) -> Option<PrimaryInfo> {
    match within(what, OPERATION_LIMIT, leaser.primary_info()).await {
        Ok(info) => Some(info),
        Err(LeaseError::NoPrimary) => None,
        Err(e) => panic!("{what}: primary_info failed: {e}"),
    }
}

/// The next value of a watch within `limit`, or a panic.
async fn next(watch: &mut dyn PrimaryWatch, what: &str, limit: Duration) -> Option<PrimaryInfo> {
    within(what, limit, watch.next())
        .await
        .unwrap_or_else(|e| panic!("{what}: the watch failed: {e}"))
}

/// Asserts that a watch reports nothing for [`QUIET`].
async fn assert_quiet(watch: &mut dyn PrimaryWatch, what: &str) {
    if let Ok(value) = tokio::time::timeout(QUIET, watch.next()).await {
        panic!("{what}: the watch reported {value:?} although nothing changed");
    }
}

/// Polls `leaser.acquire()` until it succeeds, or panics at `deadline`.
async fn acquire_by(leaser: &dyn Leaser, deadline: Instant, what: &str) -> Box<dyn Lease> {
    loop {
        match within(what, OPERATION_LIMIT, leaser.acquire()).await {
            Ok(lease) => return lease,
            Err(LeaseError::PrimaryExists) => {}
            Err(e) => panic!("{what}: acquire failed: {e}"),
        }
        if Instant::now() >= deadline {
            panic!("{what}: the lease was still held at the deadline");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Many candidates race for the lease; exactly one wins, and the rest learn who. With
/// elections, three rounds, each after the winner releases, with growing epochs.
pub fn exactly_one_of_many_candidates_wins(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        const NODES: usize = 8;
        let caps = cluster.capabilities();
        let mut leasers = Vec::new();
        for node in 0..NODES {
            leasers.push(leaser(cluster, node).await);
        }
        let rounds = if caps.elections { 3 } else { 1 };
        let mut last_epoch = None;
        for round in 0..rounds {
            let mut race = JoinSet::new();
            for (node, leaser) in leasers.iter().enumerate() {
                let leaser = Arc::clone(leaser);
                race.spawn(async move {
                    let result = within("race", OPERATION_LIMIT, leaser.acquire()).await;
                    (node, result)
                });
            }
            let mut winners = Vec::new();
            while let Some(joined) = race.join_next().await {
                let (node, result) = joined.expect("a racing candidate panicked");
                match result {
                    Ok(lease) => winners.push((node, lease)),
                    Err(LeaseError::PrimaryExists) => {}
                    Err(e) => panic!("round {round}: node {node} failed to race: {e}"),
                }
            }
            let nodes: Vec<usize> = winners.iter().map(|(node, _)| *node).collect();
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one candidate must win, but nodes {nodes:?} did"
            );
            let (winner, lease) = winners.pop().expect("one winner");
            let expected = info_of(&*leasers[winner]);
            for (node, leaser) in leasers.iter().enumerate() {
                if node == winner && !caps.elections {
                    // The static primary does not report itself as primary.
                    continue;
                }
                let seen = primary(&**leaser, "primary after the race").await;
                assert_eq!(
                    seen.as_ref(),
                    Some(&expected),
                    "round {round}: node {node} must see the winner, node {winner}"
                );
            }
            if caps.elections {
                if let Some(last) = last_epoch {
                    assert!(
                        lease.epoch() > last,
                        "round {round}: epoch {} does not exceed the last round's {last}",
                        lease.epoch()
                    );
                }
                last_epoch = Some(lease.epoch());
                within("release", OPERATION_LIMIT, lease.release())
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: release failed: {e}"));
            }
        }
        Outcome::Passed
    })
}

/// A holder that stops renewing (it drops its lease without releasing it) loses the lease
/// within the backend's expiry bound, and not before the TTL; then another node wins it with a
/// greater epoch.
pub fn a_dead_holders_lease_expires(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        if !cluster.capabilities().elections {
            return Outcome::Skipped("leases never expire".into());
        }
        let timing = cluster.timing();
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let started = Instant::now();
        let lease = acquire(&*a, "node 0 acquires").await;
        let ttl = lease.ttl();
        let dead_epoch = lease.epoch();
        drop(lease);
        if started.elapsed() < ttl / 2 {
            assert_held_elsewhere(&*b, "node 1 tries while node 0's lease is fresh").await;
        }
        let deadline = started + timing.expiry_bound + timing.slack;
        let lease = acquire_by(&*b, deadline, "node 1 waits for node 0's lease to expire").await;
        let took = started.elapsed();
        assert!(
            took >= ttl.mul_f64(0.9),
            "node 0's lease of TTL {ttl:?} was gone after only {took:?}"
        );
        assert!(
            lease.epoch() > dead_epoch,
            "the new tenure's epoch {} does not exceed the dead one's {dead_epoch}",
            lease.epoch()
        );
        assert_eq!(
            primary(&*a, "node 0 looks for the primary").await,
            Some(info_of(&*b)),
            "node 0 must see node 1 as primary"
        );
        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 1 releases");
        Outcome::Passed
    })
}

/// After a clean release, another node acquires at the first attempt.
pub fn a_released_lease_is_taken_over_at_once(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        if !cluster.capabilities().elections {
            return Outcome::Skipped("the lease is never released to another node".into());
        }
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let lease = acquire(&*a, "node 0 acquires").await;
        assert_held_elsewhere(&*b, "node 1 tries while node 0 holds it").await;
        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 0 releases");
        let lease = acquire(&*b, "node 1 acquires right after the release").await;
        assert_eq!(
            primary(&*a, "node 0 looks for the primary").await,
            Some(info_of(&*b))
        );
        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 1 releases");
        assert_eq!(primary(&*a, "after the last release").await, None);
        Outcome::Passed
    })
}

/// A holder that renews every third of the TTL keeps the lease well past its expiry bound, and
/// nobody else acquires it meanwhile.
pub fn renewal_keeps_the_lease(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        let timing = cluster.timing();
        let caps = cluster.capabilities();
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let lease = acquire(&*a, "node 0 acquires").await;
        let interval = timing.ttl / 3;
        let hold_for = (timing.expiry_bound * 2).max(timing.ttl * 3);
        let started = Instant::now();
        let mut renewals = 0;
        while started.elapsed() < hold_for {
            tokio::time::sleep(interval).await;
            within("renew", OPERATION_LIMIT, lease.renew())
                .await
                .unwrap_or_else(|e| panic!("renewal {renewals} failed: {e}"));
            renewals += 1;
            assert_held_elsewhere(&*b, "node 1 tries while node 0 renews").await;
        }
        if caps.elections {
            assert_eq!(
                primary(&*b, "node 1 looks for the primary").await,
                Some(info_of(&*a))
            );
            within("release", OPERATION_LIMIT, lease.release())
                .await
                .expect("node 0 releases");
        }
        Outcome::Passed
    })
}

/// Every node sees the primary's hostname and advertise URL; with elections, nobody is
/// primary before the first acquire or after the release.
pub fn others_see_the_primary(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        let caps = cluster.capabilities();
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let c = leaser(cluster, 2).await;
        if caps.elections {
            assert_eq!(primary(&*b, "before any acquire").await, None);
        }
        let lease = acquire(&*a, "node 0 acquires").await;
        let expected = Some(info_of(&*a));
        assert_eq!(primary(&*b, "node 1 looks").await, expected);
        assert_eq!(primary(&*c, "node 2 looks").await, expected);
        if caps.elections {
            assert_eq!(primary(&*a, "the primary looks").await, expected);
            within("release", OPERATION_LIMIT, lease.release())
                .await
                .expect("node 0 releases");
            assert_eq!(primary(&*b, "after the release").await, None);
        }
        Outcome::Passed
    })
}

/// A watch starts with the current primary and then reports each change: an acquire, a
/// release, a new primary, and an expiry. It stays quiet while nothing changes.
pub fn the_watch_follows_the_primary(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        let timing = cluster.timing();
        let change = OPERATION_LIMIT;
        if !cluster.capabilities().elections {
            for node in 0..3 {
                let leaser = leaser(cluster, node).await;
                let mut watch = within("watch", OPERATION_LIMIT, leaser.watch())
                    .await
                    .expect("start a watch");
                let first = next(&mut *watch, "the watch's first value", change).await;
                assert_eq!(first, primary(&*leaser, "primary_info").await);
                assert_quiet(&mut *watch, "a primary that never changes").await;
            }
            return Outcome::Passed;
        }
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let c = leaser(cluster, 2).await;
        let mut watch = within("watch", OPERATION_LIMIT, b.watch())
            .await
            .expect("start a watch");
        assert_eq!(next(&mut *watch, "first value", change).await, None);

        let lease = acquire(&*a, "node 0 acquires").await;
        assert_eq!(
            next(&mut *watch, "after node 0 acquires", change).await,
            Some(info_of(&*a))
        );
        within("renew", OPERATION_LIMIT, lease.renew())
            .await
            .expect("node 0 renews");
        assert_quiet(&mut *watch, "node 0 only renewed").await;

        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 0 releases");
        assert_eq!(
            next(&mut *watch, "after node 0 releases", change).await,
            None
        );

        let lease = acquire(&*c, "node 2 acquires").await;
        assert_eq!(
            next(&mut *watch, "after node 2 acquires", change).await,
            Some(info_of(&*c))
        );
        let mut late = within("watch", OPERATION_LIMIT, a.watch())
            .await
            .expect("start a second watch");
        assert_eq!(
            next(&mut *late, "a watch started under node 2", change).await,
            Some(info_of(&*c))
        );

        drop(lease);
        let expiry = timing.expiry_bound + timing.slack;
        assert_eq!(
            next(&mut *watch, "after node 2's lease expires", expiry).await,
            None
        );
        assert_eq!(
            next(&mut *late, "the second watch, after the expiry", change).await,
            None
        );
        Outcome::Passed
    })
}

/// Racing nodes set different cluster IDs: exactly one wins, the others learn it, and it never
/// changes, not even across tenures.
pub fn the_cluster_id_is_set_once(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        const NODES: usize = 5;
        let caps = cluster.capabilities();
        if !caps.cluster_id {
            return Outcome::Skipped("the cluster ID is not stored with the lease".into());
        }
        let mut leasers = Vec::new();
        for node in 0..NODES {
            leasers.push(leaser(cluster, node).await);
        }
        let id = within("cluster_id", OPERATION_LIMIT, leasers[0].cluster_id())
            .await
            .expect("read the cluster ID");
        assert_eq!(id, None, "a new cluster has no ID");

        let mut race = JoinSet::new();
        for (node, leaser) in leasers.iter().enumerate() {
            let leaser = Arc::clone(leaser);
            race.spawn(async move {
                let id = format!("cluster-{node}");
                let result = within("set", OPERATION_LIMIT, leaser.set_cluster_id(&id)).await;
                (id, result)
            });
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        while let Some(joined) = race.join_next().await {
            let (id, result) = joined.expect("a racing node panicked");
            match result {
                Ok(()) => winners.push(id),
                Err(LeaseError::ClusterIdMismatch { existing }) => losers.push(existing),
                Err(e) => panic!("setting cluster ID {id} failed: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one ID must win: {winners:?}");
        let winner = winners.pop().expect("one winner");
        assert!(
            losers.iter().all(|existing| *existing == winner),
            "the losers must be told the winner, {winner}: {losers:?}"
        );
        for leaser in &leasers {
            let id = within("cluster_id", OPERATION_LIMIT, leaser.cluster_id())
                .await
                .expect("read the cluster ID");
            assert_eq!(id.as_deref(), Some(winner.as_str()));
        }
        within("set", OPERATION_LIMIT, leasers[1].set_cluster_id(&winner))
            .await
            .expect("setting the ID that is set succeeds");
        match within("set", OPERATION_LIMIT, leasers[1].set_cluster_id("other")).await {
            Err(LeaseError::ClusterIdMismatch { existing }) => assert_eq!(existing, winner),
            other => panic!("setting another ID must fail with a mismatch, got {other:?}"),
        }
        if caps.elections {
            let lease = acquire(&*leasers[2], "node 2 acquires").await;
            within("release", OPERATION_LIMIT, lease.release())
                .await
                .expect("node 2 releases");
            let id = within("cluster_id", OPERATION_LIMIT, leasers[3].cluster_id())
                .await
                .expect("read the cluster ID");
            assert_eq!(id.as_deref(), Some(winner.as_str()), "a tenure changed it");
        }
        Outcome::Passed
    })
}

/// Tenures by different nodes, and by the same node twice in a row, have strictly growing
/// epochs.
pub fn epochs_grow_across_tenures(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        if !cluster.capabilities().elections {
            return Outcome::Skipped("there is only one tenure".into());
        }
        let mut leasers = Vec::new();
        for node in 0..3 {
            leasers.push(leaser(cluster, node).await);
        }
        let mut last: Option<u64> = None;
        for (turn, node) in [0, 1, 0, 0, 2, 1].into_iter().enumerate() {
            let lease = acquire(&*leasers[node], "acquire in turn").await;
            if let Some(last) = last {
                assert!(
                    lease.epoch() > last,
                    "turn {turn} (node {node}): epoch {} does not exceed {last}",
                    lease.epoch()
                );
            }
            last = Some(lease.epoch());
            within("release", OPERATION_LIMIT, lease.release())
                .await
                .unwrap_or_else(|e| panic!("turn {turn}: release failed: {e}"));
        }
        Outcome::Passed
    })
}

/// A holder whose lease expired gets [`LeaseError::Expired`] when it renews; its release
/// then does nothing and succeeds, and the new holder keeps the lease.
pub fn renew_after_loss_is_expired(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        if !cluster.capabilities().elections {
            return Outcome::Skipped("leases are never lost".into());
        }
        let timing = cluster.timing();
        let a = leaser(cluster, 0).await;
        let b = leaser(cluster, 1).await;
        let c = leaser(cluster, 2).await;
        let started = Instant::now();
        let stale = acquire(&*a, "node 0 acquires").await;
        let deadline = started + timing.expiry_bound + timing.slack;
        let lease = acquire_by(&*b, deadline, "node 1 waits for node 0's lease to expire").await;
        match within("renew", OPERATION_LIMIT, stale.renew()).await {
            Err(LeaseError::Expired) => {}
            other => panic!("renewing a lost lease must fail with Expired, got {other:?}"),
        }
        within("release", OPERATION_LIMIT, stale.release())
            .await
            .expect("releasing a lost lease succeeds");
        assert_eq!(
            primary(&*c, "after the old holder's release").await,
            Some(info_of(&*b)),
            "the old holder's release must not disturb the new holder"
        );
        within("renew", OPERATION_LIMIT, lease.renew())
            .await
            .expect("the new holder renews");
        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 1 releases");
        Outcome::Passed
    })
}

/// A primary hands its lease to another node: the new holder has a greater epoch and is seen
/// as primary; the old holder's renew fails with Expired and its release does nothing; a
/// released lease cannot be taken over.
pub fn handoff_moves_the_lease(cluster: &dyn Cluster) -> BoxFuture<'_, Outcome> {
    Box::pin(async move {
        let a = leaser(cluster, 0).await;
        if !cluster.capabilities().handoff {
            match within("handoff", OPERATION_LIMIT, a.acquire_existing("any")).await {
                Err(LeaseError::Unsupported { .. }) => return Outcome::Passed,
                other => panic!(
                    "a backend without handoff must say Unsupported, not {}",
                    describe(&other)
                ),
            }
        }
        let b = leaser(cluster, 1).await;
        let c = leaser(cluster, 2).await;
        let old = acquire(&*a, "node 0 acquires").await;
        let new = within("handoff", OPERATION_LIMIT, b.acquire_existing(old.id()))
            .await
            .unwrap_or_else(|e| panic!("node 1 takes over lease {}: {e}", old.id()));
        assert!(
            new.epoch() > old.epoch(),
            "the handed-off epoch {} does not exceed the old {}",
            new.epoch(),
            old.epoch()
        );
        assert_eq!(primary(&*c, "after the handoff").await, Some(info_of(&*b)));
        match within("renew", OPERATION_LIMIT, old.renew()).await {
            Err(LeaseError::Expired) => {}
            other => panic!("the old holder's renew must fail with Expired, got {other:?}"),
        }
        within("release", OPERATION_LIMIT, old.release())
            .await
            .expect("the old holder's release succeeds");
        assert_eq!(
            primary(&*c, "after the old holder's release").await,
            Some(info_of(&*b)),
            "the old holder's release must not disturb the new holder"
        );
        within("renew", OPERATION_LIMIT, new.renew())
            .await
            .expect("the new holder renews");
        assert_held_elsewhere(&*c, "node 2 tries after the handoff").await;

        let id = new.id().to_string();
        within("release", OPERATION_LIMIT, new.release())
            .await
            .expect("node 1 releases");
        match within("handoff", OPERATION_LIMIT, c.acquire_existing(&id)).await {
            Err(LeaseError::Expired) => {}
            Ok(lease) => panic!("took over a released lease (epoch {})", lease.epoch()),
            Err(e) => panic!("taking over a released lease must fail with Expired: {e}"),
        }
        match within("handoff", OPERATION_LIMIT, c.acquire_existing("0")).await {
            Err(LeaseError::Expired) => {}
            other => panic!(
                "taking over a made-up lease must fail with Expired, not {}",
                describe(&other)
            ),
        }
        let lease = acquire(&*c, "node 2 acquires").await;
        within("release", OPERATION_LIMIT, lease.release())
            .await
            .expect("node 2 releases");
        Outcome::Passed
    })
}
