//! The chain in a bucket: which objects count, fenced by lease epoch, and which of them rebuild a
//! database at a TXID. No I/O.
//!
//! Fencing: a primary of lease epoch `E` writes the marker `epochs/E-S` before its first object,
//! `S` being the first TXID it uploads. An object of epoch `E` counts only if its last TXID lies
//! before the start of every newer epoch. So once a new primary has written its marker, nothing a
//! deposed primary uploads at or after that TXID is ever part of the chain, whatever the order
//! the uploads land in: the two histories never interleave.

use std::collections::BTreeMap;

use super::layout::{EpochMarker, ObjectName, LEVEL_RECORDS, LEVEL_SNAPSHOT};
use crate::ltx::TxId;

/// The objects of one database in a bucket, fenced.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Objects that count, by (min, max, level).
    valid: Vec<ObjectName>,
    /// Objects written by a deposed primary at or after a newer epoch's start.
    superseded: Vec<ObjectName>,
}

/// Why a TXID cannot be rebuilt from the bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No snapshot (or chain start) at or before the TXID.
    #[error("the bucket holds no snapshot at or before TXID {0}")]
    NoBase(TxId),
    /// The objects after some TXID are missing, or end past the target.
    #[error("the bucket holds no object that starts at TXID {next} and ends by TXID {target}")]
    Gap {
        /// The TXID no object starts at.
        next: TxId,
        /// The target.
        target: TxId,
    },
}

impl Chain {
    /// The chain made of `objects`, fenced by `markers`.
    pub fn build(objects: &[ObjectName], markers: &[EpochMarker]) -> Chain {
        let mut starts: BTreeMap<u64, TxId> = BTreeMap::new();
        for m in markers {
            let s = starts.entry(m.epoch).or_insert(m.start);
            *s = (*s).min(m.start);
        }
        for o in objects.iter().filter(|o| o.level == LEVEL_RECORDS) {
            starts.entry(o.epoch).or_insert(o.min);
        }
        // For each epoch, the smallest start of any newer epoch.
        let mut fence: BTreeMap<u64, TxId> = BTreeMap::new();
        let mut newer_min = TxId(u64::MAX);
        for (&epoch, &start) in starts.iter().rev() {
            fence.insert(epoch, newer_min);
            newer_min = newer_min.min(start);
        }
        let mut chain = Chain::default();
        for o in objects {
            let limit = fence.get(&o.epoch).copied().unwrap_or(TxId(u64::MAX));
            if o.max < limit {
                chain.valid.push(*o);
            } else {
                chain.superseded.push(*o);
            }
        }
        chain
            .valid
            .sort_by_key(|o| (o.min, o.max, o.level, o.epoch));
        chain.valid.dedup_by_key(|o| (o.min, o.max, o.level));
        chain.superseded.sort();
        chain
    }

    /// The objects that count, by TXID.
    pub fn valid(&self) -> &[ObjectName] {
        &self.valid
    }

    /// The objects a deposed primary wrote past a newer epoch's start.
    pub fn superseded(&self) -> &[ObjectName] {
        &self.superseded
    }

    /// True for an object a restore can start from: a snapshot, or a record from TXID 1.
    fn is_base(o: &ObjectName) -> bool {
        o.min == TxId(1)
    }

    /// The objects that rebuild the database at exactly `target`, fewest first: a snapshot,
    /// then records, each starting right after the previous one ends. A breadth-first search
    /// backwards from `target`, since a record the log compacted may span several uploaded
    /// ones.
    pub fn plan(&self, target: TxId) -> Result<Vec<ObjectName>, PlanError> {
        let mut ending: BTreeMap<TxId, Vec<ObjectName>> = BTreeMap::new();
        for o in &self.valid {
            ending.entry(o.max).or_default().push(*o);
        }
        // For each end point reached, the object that reached it (towards `target`).
        let mut via: BTreeMap<TxId, Option<ObjectName>> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([target]);
        via.insert(target, None);
        while let Some(end) = queue.pop_front() {
            let objects = ending.get(&end).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(base) = objects
                .iter()
                .filter(|o| Chain::is_base(o))
                .max_by_key(|o| o.level == LEVEL_SNAPSHOT)
            {
                let mut plan = vec![*base];
                let mut at = end;
                while let Some(Some(next)) = via.get(&at) {
                    plan.push(*next);
                    at = next.max;
                }
                return Ok(plan);
            }
            for o in objects.iter().filter(|o| o.level == LEVEL_RECORDS) {
                let Some(before) = o.min.prev() else { continue };
                if let std::collections::btree_map::Entry::Vacant(e) = via.entry(before) {
                    e.insert(Some(*o));
                    queue.push_back(before);
                }
            }
        }
        if via.len() == 1 && !ending.contains_key(&target) {
            return Err(PlanError::NoBase(target));
        }
        let next = via.keys().next().copied().unwrap_or(target);
        Err(PlanError::Gap {
            next: next.next().unwrap_or(next),
            target,
        })
    }

    /// Every TXID the chain can rebuild, in order.
    fn reachable(&self) -> Vec<TxId> {
        let mut starting: BTreeMap<TxId, Vec<TxId>> = BTreeMap::new();
        for o in self.valid.iter().filter(|o| o.level == LEVEL_RECORDS) {
            starting.entry(o.min).or_default().push(o.max);
        }
        let mut reached: std::collections::BTreeSet<TxId> = self
            .valid
            .iter()
            .filter(|o| Chain::is_base(o))
            .map(|o| o.max)
            .collect();
        let mut work: Vec<TxId> = reached.iter().copied().collect();
        while let Some(end) = work.pop() {
            let Some(next) = end.next() else { continue };
            for &max in starting.get(&next).map(Vec::as_slice).unwrap_or(&[]) {
                if reached.insert(max) {
                    work.push(max);
                }
            }
        }
        reached.into_iter().collect()
    }

    /// The last object on the way to the newest TXID the chain can rebuild: the position a
    /// primary resumes after. `None` for an empty chain.
    pub fn tip(&self) -> Option<ObjectName> {
        let last = *self.reachable().last()?;
        self.plan(last).ok()?.last().copied()
    }

    /// The TXIDs the chain can rebuild, as inclusive runs of consecutive TXIDs.
    pub fn restorable(&self) -> Vec<(TxId, TxId)> {
        let mut ranges: Vec<(TxId, TxId)> = Vec::new();
        for t in self.reachable() {
            match ranges.last_mut() {
                Some((_, end)) if end.next() == Some(t) => *end = t,
                _ => ranges.push((t, t)),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(min: u64, max: u64, epoch: u64) -> ObjectName {
        ObjectName {
            min: TxId(min),
            max: TxId(max),
            epoch,
            level: LEVEL_RECORDS,
        }
    }

    fn snap(max: u64, epoch: u64) -> ObjectName {
        ObjectName {
            level: LEVEL_SNAPSHOT,
            ..rec(1, max, epoch)
        }
    }

    fn marker(epoch: u64, start: u64) -> EpochMarker {
        EpochMarker {
            epoch,
            start: TxId(start),
        }
    }

    #[test]
    fn a_plan_starts_at_the_newest_snapshot_and_ends_at_the_target() {
        let objects = [
            rec(1, 1, 0),
            rec(2, 2, 0),
            rec(3, 5, 0),
            snap(3, 0),
            rec(4, 4, 0),
        ];
        let chain = Chain::build(&objects, &[marker(0, 1)]);
        assert_eq!(chain.plan(TxId(2)).unwrap(), [rec(1, 1, 0), rec(2, 2, 0)]);
        assert_eq!(chain.plan(TxId(4)).unwrap(), [snap(3, 0), rec(4, 4, 0)]);
        assert_eq!(
            chain.plan(TxId(5)).unwrap(),
            [rec(1, 1, 0), rec(2, 2, 0), rec(3, 5, 0)]
        );
        assert_eq!(chain.tip(), Some(rec(3, 5, 0)));
        assert_eq!(chain.restorable(), [(TxId(1), TxId(5))]);
        assert!(chain.plan(TxId(6)).is_err());
        assert_eq!(chain.plan(TxId(0)), Err(PlanError::NoBase(TxId(0))));
    }

    #[test]
    fn a_deposed_primary_never_interleaves_with_the_new_one() {
        // Epoch 1 claimed TXID 4 on; epoch 0 kept uploading 4 and 5 after that.
        let objects = [
            rec(1, 3, 0),
            rec(4, 4, 0),
            rec(5, 5, 0),
            rec(4, 4, 1),
            rec(5, 6, 1),
            snap(5, 0),
        ];
        let chain = Chain::build(&objects, &[marker(0, 1), marker(1, 4)]);
        assert_eq!(chain.superseded(), [snap(5, 0), rec(4, 4, 0), rec(5, 5, 0)]);
        assert_eq!(
            chain.plan(TxId(6)).unwrap(),
            [rec(1, 3, 0), rec(4, 4, 1), rec(5, 6, 1)]
        );
        assert_eq!(chain.tip(), Some(rec(5, 6, 1)));
        // The marker alone fences, before the new primary has uploaded anything.
        let chain = Chain::build(&objects[..3], &[marker(0, 1), marker(1, 4)]);
        assert_eq!(chain.tip(), Some(rec(1, 3, 0)));
    }
}
