//! The detector, step by step: hand-written sessions for each rule, then traces recorded from
//! real SQLite sessions through the mount (`fixtures/mount-traces/`), replayed operation by
//! operation with the recorded verdict checked at each step.

use super::super::trace::{self, Line};
use super::*;
use LockKind::{Read, Write};

/// SQLite's lock bytes in the database file (`os_unix.c`).
const PENDING: u64 = 0x4000_0000;
const RESERVED: u64 = PENDING + 1;
const SHARED_FIRST: u64 = PENDING + 2;
const SHARED_LAST: u64 = SHARED_FIRST + 509;
/// A read mark in the WAL index.
const READ1: u64 = 124;

fn file(kind: FileKind) -> u64 {
    names::inode(0, kind)
}

fn db() -> u64 {
    file(FileKind::Database)
}

fn journal() -> u64 {
    file(FileKind::Journal)
}

fn wal() -> u64 {
    file(FileKind::Wal)
}

fn shm_ino() -> u64 {
    file(FileKind::Shm)
}

/// A detector and the node's role, driven one operation at a time.
struct Session {
    detector: Detector,
    writable: bool,
}

impl Session {
    fn primary() -> Session {
        Session {
            detector: Detector::default(),
            writable: true,
        }
    }

    fn replica() -> Session {
        Session {
            writable: false,
            ..Session::primary()
        }
    }

    /// Decides `op`, and performs an unlock or close afterwards, as the adapter does.
    fn op(&mut self, op: Op) -> Verdict {
        let verdict = self.detector.decide(&op, self.writable);
        self.detector.release(&op);
        verdict
    }

    fn lock(&mut self, ino: u64, owner: u64, start: u64, end: u64, kind: LockKind) -> Verdict {
        self.op(Op::Lock {
            ino,
            holder: Holder { owner, pid: 1 },
            start,
            end,
            kind,
        })
    }

    fn unlock(&mut self, ino: u64, owner: u64, start: u64, end: u64) -> Verdict {
        self.op(Op::Unlock {
            ino,
            owner,
            start,
            end,
        })
    }

    fn close(&mut self, ino: u64, owner: u64) -> Verdict {
        self.op(Op::Close { ino, owner })
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Verdict {
        self.op(Op::Write {
            ino,
            offset,
            len: data.len() as u64,
            zeroes: data.iter().all(|&b| b == 0),
        })
    }

    /// SQLite's SHARED lock on the database file.
    fn shared(&mut self, owner: u64) {
        assert_eq!(
            self.lock(db(), owner, PENDING, PENDING, Read),
            Verdict::Pass
        );
        assert_eq!(
            self.lock(db(), owner, SHARED_FIRST, SHARED_LAST, Read),
            Verdict::Pass
        );
        assert_eq!(self.unlock(db(), owner, PENDING, PENDING), Verdict::Pass);
    }

    /// SQLite's RESERVED, PENDING and EXCLUSIVE locks, from SHARED.
    fn exclusive(&mut self, owner: u64) {
        for (start, end) in [
            (RESERVED, RESERVED),
            (PENDING, PENDING),
            (SHARED_FIRST, SHARED_LAST),
        ] {
            assert_eq!(self.lock(db(), owner, start, end, Write), Verdict::Pass);
        }
    }
}

const PASS: Verdict = Verdict::Pass;
const CONFLICT: Verdict = Verdict::Refuse(Refusal::Conflict {
    only_applier: false,
});
const APPLIER_ONLY: Verdict = Verdict::Refuse(Refusal::Conflict { only_applier: true });

#[test]
fn a_delete_mode_commit_is_the_unlink_of_the_journal() {
    let mut s = Session::primary();
    s.shared(1);
    s.exclusive(1);
    assert_eq!(
        s.op(Op::Open {
            kind: FileKind::Journal,
            write: true
        }),
        PASS
    );
    assert_eq!(s.write(journal(), 0, &[0xd9; 28]), PASS);
    assert_eq!(s.write(journal(), 512, &[7; 4096]), PASS);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
    assert_eq!(s.unlock(db(), 1, PENDING, SHARED_LAST), PASS);
    // Another connection reads in between.
    s.shared(2);
    assert_eq!(s.close(db(), 2), PASS);
}

#[test]
fn truncate_and_persist_commit_by_emptying_or_zeroing_the_journal_header() {
    let mut s = Session::primary();
    assert_eq!(
        s.op(Op::Truncate {
            ino: journal(),
            size: 0
        }),
        Verdict::CommitJournal
    );
    assert_eq!(
        s.op(Op::Truncate {
            ino: journal(),
            size: 512
        }),
        PASS
    );
    assert_eq!(s.write(journal(), 0, &[0; 28]), Verdict::CommitJournal);
    // Zeroes elsewhere, or a header that is not zero, are journal content.
    assert_eq!(s.write(journal(), 28, &[0; 28]), PASS);
    assert_eq!(s.write(journal(), 0, &[0; 512]), PASS);
    let mut header = [0; 28];
    header[3] = 1;
    assert_eq!(s.write(journal(), 0, &header), PASS);
}

#[test]
fn a_wal_commit_is_the_release_of_the_wal_write_lock_by_its_holder() {
    let mut s = Session::primary();
    assert_eq!(s.lock(shm_ino(), 1, READ1, READ1, Read), PASS);
    assert_eq!(
        s.lock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    assert_eq!(s.write(wal(), 0, &[1; 32]), PASS);
    assert_eq!(s.write(wal(), 32, &[2; 4120]), PASS);
    // A reader letting go of its read mark, or of a range it does not hold, commits nothing.
    assert_eq!(s.lock(shm_ino(), 2, READ1, READ1, Read), PASS);
    assert_eq!(s.unlock(shm_ino(), 2, READ1, READ1), PASS);
    assert_eq!(s.unlock(shm_ino(), 2, WAL_WRITE_LOCK, WAL_CKPT_LOCK), PASS);
    assert_eq!(
        s.unlock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK),
        Verdict::CommitWal
    );
    // Released: a second unlock is not a commit, and another writer may lock.
    assert_eq!(s.unlock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK), PASS);
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    // An unlock of a range around the write lock commits too.
    assert_eq!(s.unlock(shm_ino(), 2, 0, u64::MAX), Verdict::CommitWal);
}

#[test]
fn closing_the_wal_index_while_holding_the_write_lock_commits() {
    let mut s = Session::primary();
    assert_eq!(
        s.lock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        CONFLICT
    );
    // The lock is still held while the adapter captures.
    assert_eq!(
        s.detector.decide(
            &Op::Close {
                ino: shm_ino(),
                owner: 1
            },
            true
        ),
        Verdict::CommitWal
    );
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        CONFLICT
    );
    assert_eq!(s.close(shm_ino(), 1), Verdict::CommitWal);
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    // Closing the database file or the WAL is never a commit.
    assert_eq!(s.close(db(), 2), PASS);
    assert_eq!(s.close(wal(), 2), PASS);
}

#[test]
fn a_wal_write_without_the_write_lock_is_refused() {
    let mut s = Session::primary();
    assert_eq!(
        s.write(wal(), 0, &[1; 32]),
        Verdict::Refuse(Refusal::ExclusiveWal)
    );
    // The handoff's drain holding the lock is not a writer either.
    assert_eq!(
        s.lock(shm_ino(), APPLIER, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    assert_eq!(
        s.write(wal(), 0, &[1; 32]),
        Verdict::Refuse(Refusal::ExclusiveWal)
    );
    assert_eq!(Refusal::ExclusiveWal.errno(), libc::EPERM);
}

#[test]
fn a_checkpoint_waits_for_the_commit_in_progress() {
    let mut s = Session::primary();
    assert_eq!(
        s.lock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write),
        PASS
    );
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_CKPT_LOCK, WAL_CKPT_LOCK, Write),
        Verdict::Refuse(Refusal::CommitInProgress)
    );
    // The writer itself may checkpoint (SQLite does, at the WAL's size limit).
    assert_eq!(
        s.lock(shm_ino(), 1, WAL_CKPT_LOCK, WAL_CKPT_LOCK, Write),
        PASS
    );
    assert_eq!(s.unlock(shm_ino(), 1, WAL_CKPT_LOCK, WAL_CKPT_LOCK), PASS);
    assert_eq!(
        s.unlock(shm_ino(), 1, WAL_WRITE_LOCK, WAL_WRITE_LOCK),
        Verdict::CommitWal
    );
    assert_eq!(
        s.lock(shm_ino(), 2, WAL_CKPT_LOCK, WAL_CKPT_LOCK, Write),
        PASS
    );
    // The checkpoint lock is only special in the WAL index.
    assert_eq!(s.lock(db(), 3, WAL_WRITE_LOCK, WAL_WRITE_LOCK, Write), PASS);
    assert_eq!(s.lock(db(), 4, WAL_CKPT_LOCK, WAL_CKPT_LOCK, Write), PASS);
}

#[test]
fn a_replica_refuses_changes_but_readers_use_the_wal_index() {
    let mut s = Session::replica();
    let read_only = Verdict::Refuse(Refusal::ReadOnly);
    assert_eq!(s.write(db(), 0, &[1; 4096]), read_only);
    assert_eq!(s.write(journal(), 0, &[0; 28]), read_only);
    assert_eq!(s.write(wal(), 0, &[1; 32]), read_only);
    assert_eq!(s.write(shm_ino(), 0, &[1; 136]), PASS);
    for (kind, write, verdict) in [
        (FileKind::Database, true, read_only),
        (FileKind::Journal, true, read_only),
        (FileKind::Database, false, PASS),
        (FileKind::Wal, true, PASS),
        (FileKind::Shm, true, PASS),
    ] {
        assert_eq!(s.op(Op::Open { kind, write }), verdict, "{kind:?} {write}");
    }
    assert_eq!(
        s.op(Op::Truncate {
            ino: journal(),
            size: 0
        }),
        read_only
    );
    assert_eq!(s.op(Op::Unlink { ino: wal() }), read_only);
    assert_eq!(s.op(Op::Unlink { ino: shm_ino() }), PASS);
    assert_eq!(Refusal::ReadOnly.errno(), libc::EROFS);
}

#[test]
fn readers_blocked_only_by_the_applier_may_wait_for_it() {
    let mut s = Session::replica();
    assert_eq!(s.lock(shm_ino(), 1, READ1, READ1, Read), PASS);
    // The applier waits for the reader, who is not parked behind anything.
    assert_eq!(s.lock(shm_ino(), APPLIER, 120, 127, Write), CONFLICT);
    assert_eq!(s.unlock(shm_ino(), 1, READ1, READ1), PASS);
    assert_eq!(s.lock(shm_ino(), APPLIER, 120, 127, Write), PASS);
    assert_eq!(s.lock(shm_ino(), 1, READ1, READ1, Read), APPLIER_ONLY);
    assert_eq!(
        s.lock(shm_ino(), 1, WAL_CKPT_LOCK, WAL_CKPT_LOCK, Write),
        APPLIER_ONLY
    );
    // The applier letting go is never a commit; then the reader gets its mark.
    assert_eq!(s.close(shm_ino(), APPLIER), PASS);
    assert_eq!(s.lock(shm_ino(), 1, READ1, READ1, Read), PASS);
    // A request that another reader blocks as well cannot wait for the applier alone.
    assert_eq!(s.lock(db(), 2, PENDING, PENDING, Write), PASS);
    assert_eq!(
        s.lock(db(), APPLIER, SHARED_FIRST, SHARED_LAST, Write),
        PASS
    );
    assert_eq!(s.lock(db(), 3, PENDING, SHARED_LAST, Read), CONFLICT);
    assert_eq!(
        s.lock(db(), 3, SHARED_FIRST, SHARED_LAST, Read),
        APPLIER_ONLY
    );
}

#[test]
fn a_database_cannot_be_deleted_through_the_mount() {
    let mut s = Session::primary();
    let refused = Verdict::Refuse(Refusal::NotPermitted);
    assert_eq!(s.op(Op::Unlink { ino: db() }), refused);
    assert_eq!(
        s.op(Op::Unlink {
            ino: file(FileKind::Pos)
        }),
        refused
    );
    assert_eq!(
        s.op(Op::Truncate {
            ino: file(FileKind::Pos),
            size: 0
        }),
        refused
    );
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
    assert_eq!(s.op(Op::Unlink { ino: wal() }), Verdict::WalReset);
    assert_eq!(
        s.op(Op::Truncate {
            ino: wal(),
            size: 0
        }),
        Verdict::WalReset
    );
}

#[test]
fn the_lock_tables_are_emptied_when_every_lock_is_released() {
    let mut s = Session::primary();
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.close(db(), 1), PASS);
    assert!(s.detector.tables.is_empty());
}

/// What a replayed trace decided.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    commit_journal: usize,
    commit_wal: usize,
    wal_reset: usize,
    exclusive_wal: usize,
    read_only: usize,
    conflicts: usize,
    applier_only: usize,
    commit_in_progress: usize,
    applier_locks: usize,
}

/// Replays a recorded trace, checking each verdict against the recorded one.
fn replay(name: &str, text: &str) -> Tally {
    let lines = trace::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        lines.iter().any(|l| matches!(l, Line::Step(..))),
        "{name}: empty trace"
    );
    let mut session = Session::primary();
    let mut tally = Tally::default();
    for (step, line) in lines.iter().enumerate() {
        let (op, recorded) = match line {
            Line::Role(writable) => {
                session.writable = *writable;
                continue;
            }
            Line::Release(op) => {
                session.detector.release(op);
                continue;
            }
            Line::Step(op, verdict) => (op, *verdict),
        };
        let verdict = session.detector.decide(op, session.writable);
        assert_eq!(verdict, recorded, "{name}: line {step}: {op:?}");
        match verdict {
            Verdict::CommitJournal => tally.commit_journal += 1,
            Verdict::CommitWal => tally.commit_wal += 1,
            Verdict::WalReset => tally.wal_reset += 1,
            Verdict::Refuse(Refusal::ExclusiveWal) => tally.exclusive_wal += 1,
            Verdict::Refuse(Refusal::ReadOnly) => tally.read_only += 1,
            Verdict::Refuse(Refusal::Conflict {
                only_applier: false,
            }) => tally.conflicts += 1,
            Verdict::Refuse(Refusal::Conflict { only_applier: true }) => tally.applier_only += 1,
            Verdict::Refuse(Refusal::CommitInProgress) => tally.commit_in_progress += 1,
            Verdict::Pass | Verdict::Refuse(Refusal::NotPermitted) => {}
        }
        if matches!(op, Op::Lock { holder, .. } if holder.owner == APPLIER)
            && verdict == Verdict::Pass
        {
            tally.applier_locks += 1;
        }
    }
    tally
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/mount-traces/",
                $name,
                ".trace"
            )),
        )
    };
}

/// The number of records the recording left in the log, from the trace's header.
fn records(text: &str) -> usize {
    text.lines()
        .find_map(|l| l.strip_prefix("# records in the log: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the trace header counts the records")
}

#[test]
fn journal_modes_without_a_journal_file_commit_once_per_transaction() {
    for (name, text) in [fixture!("memory"), fixture!("off")] {
        let tally = replay(name, text);
        // The schema and three inserts; the rolled-back insert never reached the file, so
        // its end is no commit point.
        assert_eq!(records(text), 4, "{name}");
        assert_eq!(tally.commit_journal, 4, "{name}");
    }
}

#[test]
fn rollback_journal_modes_commit_once_per_transaction() {
    for (name, text) in [
        fixture!("delete"),
        fixture!("truncate"),
        fixture!("persist"),
    ] {
        let tally = replay(name, text);
        // The schema and three inserts are records; the rolled-back transaction reaches a
        // commit point too, and capture finds nothing to record.
        assert_eq!(records(text), 4, "{name}");
        assert_eq!(
            tally,
            Tally {
                commit_journal: 5,
                ..Tally::default()
            },
            "{name}"
        );
    }
}

#[test]
fn wal_mode_commits_at_each_release_of_the_write_lock() {
    let (name, text) = fixture!("wal");
    let tally = replay(name, text);
    // The switch to WAL is a rollback-journal commit; then the schema, three inserts and the
    // rollback each release the write lock, and so does the last connection's close, which
    // checkpoints and removes the WAL under EXCLUSIVE: the end of that EXCLUSIVE lock is a
    // commit point without a journal, where capture finds the log's state (no record).
    assert_eq!(records(text), 5);
    assert_eq!(tally.commit_journal, 2);
    assert_eq!(tally.commit_wal, 6);
    assert_eq!(tally.exclusive_wal + tally.read_only + tally.conflicts, 0);
}

#[test]
fn several_connections_take_turns_and_every_commit_is_seen() {
    let (name, text) = fixture!("delete-connections");
    let tally = replay(name, text);
    assert_eq!(records(text), 11);
    assert_eq!(tally.commit_journal, 11);
    assert!(tally.conflicts > 0, "the writers were meant to collide");

    let (name, text) = fixture!("wal-connections");
    let tally = replay(name, text);
    // Each writer process's last close checkpoints if it is the last connection: how many
    // commit points the closes add depends on the timing.
    assert_eq!(records(text), 12);
    assert!(tally.commit_journal + tally.commit_wal >= 12);
    assert!(tally.conflicts > 0, "the writers were meant to collide");
}

#[test]
fn checkpoints_of_every_kind_pass_through() {
    let (name, text) = fixture!("wal-checkpoints");
    let tally = replay(name, text);
    // Schema, three inserts and four more, one before each checkpoint, and the switch to WAL.
    assert_eq!(records(text), 9);
    assert!(tally.commit_journal + tally.commit_wal >= 9);
    assert_eq!(tally.exclusive_wal + tally.commit_in_progress, 0);
}

#[test]
fn exclusive_locking_mode_is_allowed_in_rollback_modes_and_refused_in_wal() {
    let (name, text) = fixture!("delete-exclusive");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: committed"));
    assert_eq!(records(text), 4);
    assert!(tally.commit_journal >= 4);

    let (name, text) = fixture!("wal-exclusive");
    let tally = replay(name, text);
    // The first WAL write of the EXCLUSIVE connection is refused, and nothing of it is logged.
    assert!(text.contains("# outcome: refused"));
    assert_eq!(tally.exclusive_wal, 1);
    assert_eq!(records(text), 3);
}

#[test]
fn a_writer_killed_mid_commit_leaves_no_commit() {
    // DELETE: pages of the killed transaction reached the database file; the kernel's close
    // of its files is no commit point; the next connection rolls the hot journal back and
    // deletes it, a commit point that restores the last committed state (no record).
    let (name, text) = fixture!("delete-crash");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: ['1', 'ok']"));
    assert_eq!(records(text), 2);
    assert_eq!(tally.commit_journal, 3);
    // WAL: frames without a commit frame reached the WAL; the close of the WAL index while
    // holding the write lock is a commit point at which capture finds no committed frame.
    let (name, text) = fixture!("wal-crash");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: ['1', 'ok']"));
    assert_eq!(records(text), 3);
    assert!(tally.commit_wal > 3);
}

#[test]
fn a_replica_applies_under_the_readers_locks_and_refuses_writers() {
    let (name, text) = fixture!("wal-replica");
    let tally = replay(name, text);
    assert!(tally.applier_locks > 0);
    // The connection that tries `PRAGMA journal_mode=DELETE` is refused the database for
    // writing; readers rebuilding the WAL index take the write lock, which commits nothing.
    assert_eq!(tally.read_only, 1);
    assert_eq!(tally.exclusive_wal, 0);
    assert_eq!(tally.commit_journal, 0);
}

#[test]
fn without_a_journal_file_the_release_of_the_exclusive_lock_commits() {
    // MEMORY and OFF: the database is written under EXCLUSIVE, with no journal file.
    let mut s = Session::primary();
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    // SQLite goes down from EXCLUSIVE to SHARED: that is the commit point.
    assert_eq!(
        s.lock(db(), 1, SHARED_FIRST, SHARED_LAST, Read),
        Verdict::CommitJournal
    );
    assert_eq!(s.unlock(db(), 1, PENDING, RESERVED), PASS);
    assert_eq!(s.unlock(db(), 1, 0, u64::MAX), PASS);
    // An unlock that ends EXCLUSIVE is one as well, and so is a close.
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.write(db(), 4096, &[2; 4096]), PASS);
    assert_eq!(s.unlock(db(), 1, 0, u64::MAX), Verdict::CommitJournal);
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.write(db(), 4096, &[3; 4096]), PASS);
    assert_eq!(s.close(db(), 1), Verdict::CommitJournal);
    // Nothing written, nothing to commit.
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.close(db(), 1), PASS);
}

#[test]
fn with_a_journal_the_release_of_the_exclusive_lock_is_no_commit() {
    // A writer killed with its pages in the database file leaves a hot journal: the kernel's
    // release of its locks is not a commit, the journal's removal by the rollback is.
    let mut s = Session::primary();
    s.shared(1);
    s.exclusive(1);
    assert_eq!(s.write(journal(), 0, &[0xd9; 28]), PASS);
    assert_eq!(s.write(journal(), 512, &[7; 4096]), PASS);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    assert_eq!(s.close(db(), 1), PASS);
    s.shared(2);
    s.exclusive(2);
    assert_eq!(s.write(db(), 0, &[0; 4096]), PASS);
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
    assert_eq!(s.close(db(), 2), PASS);
}
