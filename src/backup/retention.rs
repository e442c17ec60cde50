//! Retention in the bucket by age: objects that no restore inside the window needs are deleted.
//!
//! The base is the newest snapshot (or chain start) uploaded before the window began: every
//! point in the window is rebuilt from it or from a newer base, so the objects that end at or
//! before it are not needed. Objects a deposed primary wrote, older than the window, go too.

use std::time::Duration;

use super::chain::Chain;
use super::store::Remote;
use super::BackupError;
use crate::ltx::TxId;

/// Deletes what no restore inside `retention` before `now_ms` needs; returns how many objects.
pub async fn enforce(
    remote: &Remote,
    db: &str,
    retention: Duration,
    now_ms: i64,
) -> Result<usize, BackupError> {
    let listing = remote.list(db).await?;
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let chain = Chain::build(&listing.names(), &listing.markers);
    let uploaded = |name| {
        listing
            .objects
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(i64::MAX, |(_, _, t)| *t)
    };
    let dead = dead_objects(&chain, cutoff, uploaded);
    for name in &dead {
        remote.delete(db, *name).await?;
    }
    Ok(dead.len())
}

/// The objects to delete: see the module documentation. `uploaded` gives an object's upload
/// time in ms.
pub fn dead_objects(
    chain: &Chain,
    cutoff_ms: i64,
    uploaded: impl Fn(super::ObjectName) -> i64,
) -> Vec<super::ObjectName> {
    let base = chain
        .valid()
        .iter()
        .filter(|o| o.min == TxId(1) && uploaded(**o) < cutoff_ms)
        .filter(|o| chain.plan(o.max).is_ok())
        .max_by_key(|o| o.max)
        .copied();
    let mut dead: Vec<_> = chain
        .superseded()
        .iter()
        .filter(|o| uploaded(**o) < cutoff_ms)
        .copied()
        .collect();
    if let Some(base) = base {
        dead.extend(
            chain
                .valid()
                .iter()
                .filter(|o| o.max <= base.max && **o != base),
        );
    }
    dead
}

#[cfg(test)]
mod tests {
    use super::super::layout::{EpochMarker, ObjectName, LEVEL_RECORDS, LEVEL_SNAPSHOT};
    use super::*;

    fn rec(min: u64, max: u64) -> ObjectName {
        ObjectName {
            min: TxId(min),
            max: TxId(max),
            epoch: 0,
            level: LEVEL_RECORDS,
        }
    }

    #[test]
    fn only_what_precedes_the_last_base_before_the_window_goes() {
        let snap = |max| ObjectName {
            level: LEVEL_SNAPSHOT,
            ..rec(1, max)
        };
        let objects = [rec(1, 1), rec(2, 2), rec(3, 3), snap(2), rec(4, 4), snap(4)];
        let chain = Chain::build(
            &objects,
            &[EpochMarker {
                epoch: 0,
                start: TxId(1),
            }],
        );
        // Uploaded at time = max TXID * 10.
        let at = |o: ObjectName| o.max.0 as i64 * 10;
        // Window starts at 25: snap(2) is the last base before it; 3 and later stay.
        let mut dead = dead_objects(&chain, 25, at);
        dead.sort();
        assert_eq!(dead, [rec(1, 1), rec(2, 2)]);
        for t in 2..=4 {
            let plan = chain.plan(TxId(t)).unwrap();
            assert!(plan.iter().all(|o| !dead.contains(o)), "{t}");
        }
        // Nothing before the window: nothing goes.
        assert!(dead_objects(&chain, 5, at).is_empty());
    }
}
