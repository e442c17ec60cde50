//! POSIX byte-range locks (`fcntl` `F_SETLK`, `F_SETLKW`, `F_GETLK`) on one file.
//!
//! The kernel forwards these requests to the FUSE file system, which keeps one [`LockTable`] per
//! file. The table is a pure data structure: it does no I/O and knows nothing of FUSE; blocking
//! (`F_SETLKW`) is left to the caller, which retries [`LockTable::try_lock`] when the table
//! changes.
//!
//! Semantics follow POSIX record locks: ranges are inclusive, `end == u64::MAX` means "to end of
//! file", an owner never conflicts with itself, a new lock replaces whatever the same owner held
//! over its range (upgrade or downgrade), a read lock conflicts only with other owners' write
//! locks, and a write lock conflicts with any other owner's lock. For each owner the table keeps
//! its ranges disjoint, and merges overlapping or adjacent ranges of the same kind.
//!
//! Every method expects `start <= end`; the caller rejects other requests with `EINVAL`. An
//! inverted range is treated as empty: it locks, unlocks and conflicts with nothing.

/// A lock type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// A shared lock (`F_RDLCK`): conflicts only with other owners' write locks.
    Read,
    /// An exclusive lock (`F_WRLCK`): conflicts with any lock of another owner.
    Write,
}

/// Who holds a lock: the FUSE lock owner (one per process or open file description) and, for
/// reports, its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The FUSE lock owner; locks of the same owner never conflict with each other.
    pub owner: u64,
    /// The pid of the process that set the lock, reported to `F_GETLK`.
    pub pid: u32,
}

/// A conflicting lock found by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The kind of the conflicting lock.
    pub kind: LockKind,
    /// The first byte of the conflicting lock.
    pub start: u64,
    /// The last byte of the conflicting lock (inclusive); `u64::MAX` means to end of file.
    pub end: u64,
    /// The pid of the process holding the conflicting lock.
    pub pid: u32,
}

/// One held range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lock {
    holder: Holder,
    start: u64,
    end: u64,
    kind: LockKind,
}

impl Lock {
    /// True when the lock shares a byte with `start..=end` (never when the range is inverted).
    fn overlaps(&self, start: u64, end: u64) -> bool {
        start <= end && self.start <= end && start <= self.end
    }

    /// True when the lock shares a byte with `start..=end` or is adjacent to it.
    fn touches(&self, start: u64, end: u64) -> bool {
        self.start <= end.saturating_add(1) && start <= self.end.saturating_add(1)
    }
}

/// The POSIX locks on one file. Ranges are inclusive; `end == u64::MAX` means to end of file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockTable {
    /// The held ranges, sorted by start then owner. The ranges of one owner are disjoint, and
    /// ranges of one owner and kind are never adjacent (they are merged).
    locks: Vec<Lock>,
}

impl LockTable {
    /// F_SETLK for Read/Write: either grants the whole range or changes nothing and returns the
    /// first conflict (the conflicting lock with the lowest start).
    ///
    /// A grant replaces the locks `holder.owner` held over the range, and merges the new range
    /// with the owner's overlapping or adjacent ranges of the same kind; the merged range takes
    /// `holder.pid`.
    pub fn try_lock(
        &mut self,
        holder: Holder,
        start: u64,
        end: u64,
        kind: LockKind,
    ) -> Result<(), Conflict> {
        if start > end {
            return Ok(());
        }
        if let Some(conflict) = self.test(holder.owner, start, end, kind) {
            return Err(conflict);
        }
        self.remove(holder.owner, start, end);
        // After the removal, only the owner's ranges just before or just after the new range
        // can touch it, so one pass merges them all.
        let (mut merged_start, mut merged_end) = (start, end);
        self.locks.retain(|lock| {
            let merge =
                lock.holder.owner == holder.owner && lock.kind == kind && lock.touches(start, end);
            if merge {
                merged_start = merged_start.min(lock.start);
                merged_end = merged_end.max(lock.end);
            }
            !merge
        });
        self.insert(Lock {
            holder,
            start: merged_start,
            end: merged_end,
            kind,
        });
        Ok(())
    }

    /// F_SETLK with F_UNLCK: releases the owner's locks in the range (splitting ranges as
    /// needed). Returns true if anything changed.
    pub fn unlock(&mut self, owner: u64, start: u64, end: u64) -> bool {
        if start > end {
            return false;
        }
        self.remove(owner, start, end)
    }

    /// Releases everything the owner holds (on close/flush). Returns the ranges it held, with
    /// kinds, in order of start.
    pub fn unlock_all(&mut self, owner: u64) -> Vec<(u64, u64, LockKind)> {
        let mut released = Vec::new();
        self.locks.retain(|lock| {
            let mine = lock.holder.owner == owner;
            if mine {
                released.push((lock.start, lock.end, lock.kind));
            }
            !mine
        });
        released
    }

    /// F_GETLK: the first lock (lowest start) of another owner that would block this request, if
    /// any.
    pub fn test(&self, owner: u64, start: u64, end: u64, kind: LockKind) -> Option<Conflict> {
        self.test_ignoring(owner, owner, start, end, kind)
    }

    /// Like [`LockTable::test`], but the locks of `ignored` do not conflict either.
    pub fn test_ignoring(
        &self,
        owner: u64,
        ignored: u64,
        start: u64,
        end: u64,
        kind: LockKind,
    ) -> Option<Conflict> {
        self.locks
            .iter()
            .find(|lock| {
                lock.holder.owner != owner
                    && lock.holder.owner != ignored
                    && lock.overlaps(start, end)
                    && (kind == LockKind::Write || lock.kind == LockKind::Write)
            })
            .map(|lock| Conflict {
                kind: lock.kind,
                start: lock.start,
                end: lock.end,
                pid: lock.holder.pid,
            })
    }

    /// The kind of lock `owner` holds on byte `offset`, if any.
    pub fn held(&self, owner: u64, offset: u64) -> Option<LockKind> {
        self.locks
            .iter()
            .find(|lock| lock.holder.owner == owner && lock.overlaps(offset, offset))
            .map(|lock| lock.kind)
    }

    /// True when some owner other than `owner` holds any lock overlapping the range.
    pub fn others_hold(&self, owner: u64, start: u64, end: u64) -> bool {
        self.locks
            .iter()
            .any(|lock| lock.holder.owner != owner && lock.overlaps(start, end))
    }

    /// True when no locks are held.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Removes the owner's locks from `start..=end`, keeping the parts outside it. Returns true
    /// if anything changed.
    fn remove(&mut self, owner: u64, start: u64, end: u64) -> bool {
        let mut kept = Vec::with_capacity(self.locks.len() + 1);
        let mut changed = false;
        for lock in self.locks.drain(..) {
            if lock.holder.owner != owner || !lock.overlaps(start, end) {
                kept.push(lock);
                continue;
            }
            changed = true;
            if lock.start < start {
                kept.push(Lock {
                    end: start - 1,
                    ..lock
                });
            }
            if lock.end > end {
                kept.push(Lock {
                    start: end + 1,
                    ..lock
                });
            }
        }
        self.locks = kept;
        // Only a split right piece can be out of order.
        self.locks
            .sort_by_key(|lock| (lock.start, lock.holder.owner));
        changed
    }

    /// Inserts a lock in order.
    fn insert(&mut self, lock: Lock) {
        let key = (lock.start, lock.holder.owner);
        let at = self
            .locks
            .partition_point(|other| (other.start, other.holder.owner) < key);
        self.locks.insert(at, lock);
    }
}

#[cfg(test)]
mod tests {
    use super::LockKind::{Read, Write};
    use super::*;
    use proptest::prelude::*;

    /// SQLite's lock bytes in the database file (`os_unix.c`).
    const PENDING: u64 = 0x4000_0000;
    const RESERVED: u64 = PENDING + 1;
    const SHARED_FIRST: u64 = PENDING + 2;
    const SHARED_LAST: u64 = SHARED_FIRST + 509;

    /// SQLite's lock bytes in the `-shm` file: 8 WAL locks, then the DMS byte.
    const SHM_FIRST: u64 = 120;
    const SHM_LAST: u64 = 127;
    const SHM_DMS: u64 = 128;

    fn holder(owner: u64) -> Holder {
        Holder {
            owner,
            pid: 1000 + owner as u32,
        }
    }

    fn conflict(kind: LockKind, start: u64, end: u64, owner: u64) -> Conflict {
        Conflict {
            kind,
            start,
            end,
            pid: 1000 + owner as u32,
        }
    }

    /// SQLite's SHARED lock: read PENDING, read the SHARED range, release PENDING.
    fn sqlite_shared(table: &mut LockTable, owner: u64) -> Result<(), Conflict> {
        table.try_lock(holder(owner), PENDING, PENDING, Read)?;
        let result = table.try_lock(holder(owner), SHARED_FIRST, SHARED_LAST, Read);
        table.unlock(owner, PENDING, PENDING);
        result
    }

    #[test]
    fn empty_table() {
        let table = LockTable::default();
        assert!(table.is_empty());
        assert_eq!(table.test(1, 0, u64::MAX, Write), None);
        assert_eq!(table.held(1, 0), None);
        assert!(!table.others_hold(1, 0, u64::MAX));
    }

    #[test]
    fn readers_share_and_writers_exclude() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 9, Read).unwrap();
        table.try_lock(holder(2), 5, 14, Read).unwrap();
        assert_eq!(
            table.try_lock(holder(3), 9, 9, Write),
            Err(conflict(Read, 0, 9, 1))
        );
        assert_eq!(table.test(3, 10, 20, Write), Some(conflict(Read, 5, 14, 2)));
        assert_eq!(table.test(3, 15, 20, Write), None);
        assert_eq!(table.test(3, 0, 20, Read), None);
        assert!(table.others_hold(3, 14, 14));
        assert!(!table.others_hold(2, 10, 14));
        assert!(table.others_hold(1, 14, 14));
    }

    #[test]
    fn an_owner_never_conflicts_with_itself() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 9, Write).unwrap();
        table.try_lock(holder(1), 5, 14, Write).unwrap();
        table.try_lock(holder(1), 3, 3, Read).unwrap();
        assert_eq!(table.held(1, 2), Some(Write));
        assert_eq!(table.held(1, 3), Some(Read));
        assert_eq!(table.held(1, 4), Some(Write));
        assert_eq!(table.held(1, 14), Some(Write));
        assert_eq!(table.held(1, 15), None);
        assert_eq!(table.test(1, 0, u64::MAX, Write), None);
    }

    #[test]
    fn same_kind_ranges_merge() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 3, Read).unwrap();
        table.try_lock(holder(1), 8, 9, Read).unwrap();
        table.try_lock(holder(1), 4, 7, Read).unwrap();
        assert_eq!(table.unlock_all(1), vec![(0, 9, Read)]);
        assert!(table.is_empty());
    }

    #[test]
    fn a_failed_lock_changes_nothing() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 3, Read).unwrap();
        table.try_lock(holder(2), 10, 10, Write).unwrap();
        let before = table.clone();
        assert_eq!(
            table.try_lock(holder(1), 0, 20, Write),
            Err(conflict(Write, 10, 10, 2))
        );
        assert_eq!(table, before);
    }

    #[test]
    fn to_end_of_file() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 100, u64::MAX, Write).unwrap();
        assert_eq!(table.held(1, u64::MAX), Some(Write));
        assert_eq!(
            table.test(2, u64::MAX, u64::MAX, Read),
            Some(conflict(Write, 100, u64::MAX, 1))
        );
        assert!(table.unlock(1, 200, u64::MAX));
        assert_eq!(table.test(2, 200, u64::MAX, Write), None);
        table.try_lock(holder(1), 0, 99, Write).unwrap();
        assert_eq!(table.unlock_all(1), vec![(0, 199, Write)]);
    }

    #[test]
    fn an_inverted_range_is_empty() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 9, Write).unwrap();
        assert_eq!(table.try_lock(holder(2), 5, 4, Write), Ok(()));
        assert_eq!(table.test(2, 5, 4, Write), None);
        assert!(!table.others_hold(2, 5, 4));
        assert!(!table.unlock(1, 5, 4));
        assert_eq!(table.unlock_all(1), vec![(0, 9, Write)]);
        assert!(table.unlock_all(2).is_empty());
    }

    #[test]
    fn a_split_unlock_in_the_middle() {
        let mut table = LockTable::default();
        table.try_lock(holder(1), 0, 99, Write).unwrap();
        assert!(table.unlock(1, 40, 59));
        assert_eq!(table.held(1, 39), Some(Write));
        assert_eq!(table.held(1, 40), None);
        assert_eq!(table.held(1, 59), None);
        assert_eq!(table.held(1, 60), Some(Write));
        table.try_lock(holder(2), 40, 59, Write).unwrap();
        assert_eq!(table.test(2, 0, 99, Write), Some(conflict(Write, 0, 39, 1)));
        assert_eq!(
            table.test(2, 50, 99, Write),
            Some(conflict(Write, 60, 99, 1))
        );
        assert!(!table.unlock(1, 40, 59));
        assert_eq!(table.unlock_all(1), vec![(0, 39, Write), (60, 99, Write)]);
        assert_eq!(table.unlock_all(2), vec![(40, 59, Write)]);
        assert!(table.is_empty());
    }

    #[test]
    fn sqlite_upgrade_to_exclusive_fails_while_another_reader_holds_shared() {
        let mut table = LockTable::default();
        sqlite_shared(&mut table, 1).unwrap();
        sqlite_shared(&mut table, 2).unwrap();
        // RESERVED by owner 1.
        table
            .try_lock(holder(1), RESERVED, RESERVED, Write)
            .unwrap();
        assert_eq!(
            table.try_lock(holder(2), RESERVED, RESERVED, Write),
            Err(conflict(Write, RESERVED, RESERVED, 1))
        );
        // PENDING, then EXCLUSIVE: fails on owner 2's SHARED lock and changes nothing.
        table.try_lock(holder(1), PENDING, PENDING, Write).unwrap();
        assert_eq!(
            sqlite_shared(&mut table, 3),
            Err(conflict(Write, PENDING, RESERVED, 1))
        );
        let before = table.clone();
        assert_eq!(
            table.try_lock(holder(1), SHARED_FIRST, SHARED_LAST, Write),
            Err(conflict(Read, SHARED_FIRST, SHARED_LAST, 2))
        );
        assert_eq!(table, before);
        assert_eq!(table.held(1, SHARED_FIRST), Some(Read));
        // Once owner 2 releases, the upgrade succeeds.
        assert_eq!(table.unlock_all(2), vec![(SHARED_FIRST, SHARED_LAST, Read)]);
        table
            .try_lock(holder(1), SHARED_FIRST, SHARED_LAST, Write)
            .unwrap();
        assert_eq!(
            table.test(3, SHARED_FIRST, SHARED_LAST, Read),
            Some(conflict(Write, PENDING, SHARED_LAST, 1))
        );
        // Downgrade to SHARED: keep a read lock on the SHARED range, release the rest.
        table
            .try_lock(holder(1), SHARED_FIRST, SHARED_LAST, Read)
            .unwrap();
        assert!(table.unlock(1, PENDING, RESERVED));
        sqlite_shared(&mut table, 3).unwrap();
        assert_eq!(table.unlock_all(1), vec![(SHARED_FIRST, SHARED_LAST, Read)]);
    }

    #[test]
    fn sqlite_shm_locks() {
        let mut table = LockTable::default();
        // Each connection holds a read lock on the DMS byte while it has the shm open.
        table.try_lock(holder(1), SHM_DMS, SHM_DMS, Read).unwrap();
        table.try_lock(holder(2), SHM_DMS, SHM_DMS, Read).unwrap();
        assert!(table.others_hold(1, SHM_DMS, SHM_DMS));
        // Owner 1 is the writer (WAL_WRITE_LOCK, byte 120) and reads through read mark 1.
        table
            .try_lock(holder(1), SHM_FIRST, SHM_FIRST, Write)
            .unwrap();
        table.try_lock(holder(1), 124, 124, Read).unwrap();
        // Owner 2 reads through read mark 1 too, and cannot take the writer lock.
        table.try_lock(holder(2), 124, 124, Read).unwrap();
        assert_eq!(
            table.try_lock(holder(2), SHM_FIRST, SHM_FIRST, Write),
            Err(conflict(Write, SHM_FIRST, SHM_FIRST, 1))
        );
        // A checkpoint needs CKPT (121) and then every read mark but the first.
        table.try_lock(holder(2), 121, 121, Write).unwrap();
        assert_eq!(
            table.try_lock(holder(2), 124, SHM_LAST, Write),
            Err(conflict(Read, 124, 124, 1))
        );
        // Recovery needs every lock byte exclusively, and the DMS byte exclusively.
        assert_eq!(
            table.test(3, SHM_FIRST, SHM_LAST, Write),
            Some(conflict(Write, SHM_FIRST, SHM_FIRST, 1))
        );
        assert_eq!(
            table.test(2, SHM_DMS, SHM_DMS, Write),
            Some(conflict(Read, SHM_DMS, SHM_DMS, 1))
        );
        // Owner 1 closes; owner 2 is then the last connection.
        assert_eq!(
            table.unlock_all(1),
            vec![
                (SHM_FIRST, SHM_FIRST, Write),
                (124, 124, Read),
                (SHM_DMS, SHM_DMS, Read)
            ]
        );
        table.try_lock(holder(2), SHM_DMS, SHM_DMS, Write).unwrap();
        table
            .try_lock(holder(2), SHM_FIRST, SHM_LAST, Write)
            .unwrap();
        assert_eq!(table.unlock_all(2), vec![(SHM_FIRST, SHM_DMS, Write)]);
        assert!(table.is_empty());
    }

    /// The bytes of the model: bytes 0..16, and cell 16 standing for every byte from 16 on.
    const CELLS: usize = 17;
    const OWNERS: usize = 3;

    /// The naive model: for each byte, the kind each owner holds.
    type Model = [[Option<LockKind>; OWNERS]; CELLS];

    #[derive(Debug, Clone)]
    enum Op {
        Lock(u64, u64, u64, LockKind),
        Unlock(u64, u64, u64),
        UnlockAll(u64),
        Test(u64, u64, u64, LockKind),
    }

    /// The cells of an inclusive range whose start is below 16 and whose end is below 16 or
    /// `u64::MAX`.
    fn cells(start: u64, end: u64) -> std::ops::RangeInclusive<usize> {
        start as usize..=end.min(CELLS as u64 - 1) as usize
    }

    /// The first byte of a cell, and the last.
    fn bytes(cell: usize) -> (u64, u64) {
        if cell == CELLS - 1 {
            (cell as u64, u64::MAX)
        } else {
            (cell as u64, cell as u64)
        }
    }

    /// The owner's maximal runs of one kind, in order: what the table must hold.
    fn runs(model: &Model, owner: usize) -> Vec<(u64, u64, LockKind)> {
        let mut runs: Vec<(u64, u64, LockKind)> = Vec::new();
        for (cell, kinds) in model.iter().enumerate() {
            let Some(kind) = kinds[owner] else { continue };
            let (first, last) = bytes(cell);
            match runs.last_mut() {
                Some(run) if run.2 == kind && run.1 + 1 == first => run.1 = last,
                _ => runs.push((first, last, kind)),
            }
        }
        runs
    }

    fn model_test(
        model: &Model,
        owner: u64,
        start: u64,
        end: u64,
        kind: LockKind,
    ) -> Option<Conflict> {
        (0..OWNERS as u64)
            .filter(|&other| other != owner)
            .flat_map(|other| {
                runs(model, other as usize)
                    .into_iter()
                    .map(move |run| (run, other))
            })
            .filter(|&((first, last, held), _)| {
                first <= end && start <= last && (kind == Write || held == Write)
            })
            .min_by_key(|&((first, _, _), other)| (first, other))
            .map(|((first, last, held), other)| conflict(held, first, last, other))
    }

    fn range() -> impl Strategy<Value = (u64, u64)> {
        (0..16u64, 0..16u64, any::<bool>()).prop_map(|(a, b, to_eof)| {
            let (start, end) = (a.min(b), a.max(b));
            (start, if to_eof { u64::MAX } else { end })
        })
    }

    fn kind() -> impl Strategy<Value = LockKind> {
        prop_oneof![Just(Read), Just(Write)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let owner = 0..OWNERS as u64;
        prop_oneof![
            4 => (owner.clone(), range(), kind()).prop_map(|(o, (s, e), k)| Op::Lock(o, s, e, k)),
            2 => (owner.clone(), range()).prop_map(|(o, (s, e))| Op::Unlock(o, s, e)),
            1 => owner.clone().prop_map(Op::UnlockAll),
            2 => (owner, range(), kind()).prop_map(|(o, (s, e), k)| Op::Test(o, s, e, k)),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_per_byte_model(ops in prop::collection::vec(op(), 1..64)) {
            let mut table = LockTable::default();
            let mut model: Model = [[None; OWNERS]; CELLS];
            for op in ops {
                match op {
                    Op::Lock(owner, start, end, kind) => {
                        let expected = model_test(&model, owner, start, end, kind);
                        let result = table.try_lock(holder(owner), start, end, kind);
                        prop_assert_eq!(result, expected.map_or(Ok(()), Err));
                        if expected.is_none() {
                            for cell in cells(start, end) {
                                model[cell][owner as usize] = Some(kind);
                            }
                        }
                    }
                    Op::Unlock(owner, start, end) => {
                        let mut expected = false;
                        for cell in cells(start, end) {
                            expected |= model[cell][owner as usize].take().is_some();
                        }
                        prop_assert_eq!(table.unlock(owner, start, end), expected);
                    }
                    Op::UnlockAll(owner) => {
                        let expected = runs(&model, owner as usize);
                        for kinds in model.iter_mut() {
                            kinds[owner as usize] = None;
                        }
                        prop_assert_eq!(table.unlock_all(owner), expected);
                    }
                    Op::Test(owner, start, end, kind) => {
                        prop_assert_eq!(
                            table.test(owner, start, end, kind),
                            model_test(&model, owner, start, end, kind)
                        );
                    }
                }
                // The whole state: each owner's merged ranges, byte by byte, and the queries.
                prop_assert_eq!(table.is_empty(), model.iter().flatten().all(Option::is_none));
                for owner in 0..OWNERS {
                    let (o, mut copy) = (owner as u64, table.clone());
                    prop_assert_eq!(copy.unlock_all(o), runs(&model, owner));
                    for (cell, kinds) in model.iter().enumerate() {
                        let (first, last) = bytes(cell);
                        prop_assert_eq!(table.held(o, first), kinds[owner]);
                        prop_assert_eq!(table.held(o, last), kinds[owner]);
                        let others = kinds.iter().enumerate().any(|(x, k)| x != owner && k.is_some());
                        prop_assert_eq!(table.others_hold(o, first, last), others);
                        for kind in [Read, Write] {
                            prop_assert_eq!(
                                table.test(o, first, last, kind),
                                model_test(&model, o, first, last, kind)
                            );
                        }
                    }
                }
            }
        }
    }
}
