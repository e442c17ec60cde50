//! The detector, step by step: hand-written sessions for each rule, then traces recorded from
//! real SQLite sessions through the mount (`fixtures/mount-traces/`), replayed operation by
//! operation with the recorded verdict checked at each step.

use super::super::trace::{self, Line};
use super::*;

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

    fn op(&mut self, op: Op) -> Verdict {
        self.detector.decide(&op, self.writable)
    }

    /// A write of `data` at `offset`, with the adapter's flag: a commit frame's header on the
    /// WAL, a WAL beside the database on the database file.
    fn write_flagged(&mut self, ino: u64, offset: u64, data: &[u8], flag: bool) -> Verdict {
        self.op(Op::Write {
            ino,
            offset,
            len: data.len() as u64,
            zeroes: data.iter().all(|&b| b == 0),
            flag,
        })
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Verdict {
        self.write_flagged(ino, offset, data, false)
    }

    /// One WAL frame of a 4096-byte page at frame index `index`, as SQLite writes it: the
    /// header, then the page. Returns the verdict on the page.
    fn frame(&mut self, index: u64, commit: bool) -> Verdict {
        let offset = 32 + index * (24 + 4096);
        assert_eq!(self.write_flagged(wal(), offset, &[1; 24], commit), PASS);
        self.write(wal(), offset + 24, &[2; 4096])
    }
}

const PASS: Verdict = Verdict::Pass;

#[test]
fn a_delete_mode_commit_is_the_unlink_of_the_journal() {
    let mut s = Session::primary();
    assert_eq!(
        s.op(Op::Open {
            kind: FileKind::Journal,
            write: true,
            daemon: false,
        }),
        PASS
    );
    assert_eq!(s.write(journal(), 0, &[0xd9; 28]), PASS);
    assert_eq!(s.write(journal(), 512, &[7; 4096]), PASS);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
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
fn a_wal_commit_is_the_write_that_completes_the_commit_frame() {
    let mut s = Session::primary();
    assert_eq!(s.write(wal(), 0, &[1; 32]), PASS);
    // A transaction of three frames: only the page of the last, the commit frame, commits.
    assert_eq!(s.frame(0, false), PASS);
    assert_eq!(s.frame(1, false), PASS);
    assert_eq!(s.frame(2, true), Verdict::CommitWal);
    // The next transaction, of one frame.
    assert_eq!(s.frame(3, true), Verdict::CommitWal);
    // Writes of the WAL index never commit.
    assert_eq!(s.write(shm_ino(), 0, &[1; 136]), PASS);
}

#[test]
fn a_commit_frame_header_is_forgotten_when_another_header_or_a_reset_follows() {
    let mut s = Session::primary();
    // A writer killed between a commit frame's header and its page: the next writer
    // overwrites the header with one of its own, and its page is no commit.
    let offset = 32 + 24 + 4096;
    assert_eq!(s.write_flagged(wal(), offset, &[1; 24], true), PASS);
    assert_eq!(s.write_flagged(wal(), offset, &[1; 24], false), PASS);
    assert_eq!(s.write(wal(), offset + 24, &[2; 4096]), PASS);
    // A WAL emptied or removed forgets it too.
    assert_eq!(s.write_flagged(wal(), offset, &[1; 24], true), PASS);
    assert_eq!(
        s.op(Op::Truncate {
            ino: wal(),
            size: 0
        }),
        Verdict::WalReset
    );
    assert_eq!(s.write(wal(), offset + 24, &[2; 4096]), PASS);
    assert_eq!(s.write_flagged(wal(), offset, &[1; 24], true), PASS);
    assert_eq!(s.op(Op::Unlink { ino: wal() }), Verdict::WalReset);
    assert_eq!(s.write(wal(), offset + 24, &[2; 4096]), PASS);
}

#[test]
fn a_database_write_without_a_journal_or_a_wal_is_refused() {
    let mut s = Session::primary();
    let refused = Verdict::Refuse(Refusal::NoJournal);
    // Journal modes MEMORY and OFF: no commit point the mount can see.
    assert_eq!(s.write(db(), 0, &[1; 4096]), refused);
    assert_eq!(Refusal::NoJournal.errno(), libc::EPERM);
    // A checkpoint writes the database while the WAL exists.
    assert_eq!(s.write_flagged(db(), 0, &[1; 4096], true), PASS);
    // A rollback-journal transaction writes its journal first, up to its commit point.
    assert_eq!(s.write(journal(), 0, &[0xd9; 28]), PASS);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    assert_eq!(s.write(db(), 4096, &[1; 4096]), PASS);
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
    assert_eq!(s.write(db(), 0, &[1; 4096]), refused);
    // A writer killed mid-commit leaves a hot journal: the next connection's rollback
    // writes the database before it deletes the journal, and that is allowed.
    assert_eq!(s.write(journal(), 0, &[0xd9; 28]), PASS);
    assert_eq!(s.write(db(), 0, &[1; 4096]), PASS);
    assert_eq!(s.write(db(), 0, &[0; 4096]), PASS);
    assert_eq!(s.op(Op::Unlink { ino: journal() }), Verdict::CommitJournal);
}

#[test]
fn a_replica_refuses_changes_but_readers_use_the_wal_index() {
    let mut s = Session::replica();
    let read_only = Verdict::Refuse(Refusal::ReadOnly);
    assert_eq!(s.write(db(), 0, &[1; 4096]), read_only);
    assert_eq!(s.write(journal(), 0, &[0; 28]), read_only);
    assert_eq!(s.write(wal(), 0, &[1; 32]), read_only);
    assert_eq!(s.write(shm_ino(), 0, &[1; 136]), PASS);
    for (kind, write, daemon, verdict) in [
        (FileKind::Database, true, false, read_only),
        (FileKind::Journal, true, false, read_only),
        (FileKind::Database, false, false, PASS),
        (FileKind::Wal, true, false, PASS),
        (FileKind::Shm, true, false, PASS),
        // The applier's own descriptor, to take SQLite's locks.
        (FileKind::Database, true, true, PASS),
    ] {
        assert_eq!(
            s.op(Op::Open {
                kind,
                write,
                daemon
            }),
            verdict,
            "{kind:?} {write} {daemon}"
        );
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
}

/// What a replayed trace decided.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    commit_journal: usize,
    commit_wal: usize,
    wal_reset: usize,
    read_only: usize,
    no_journal: usize,
    daemon_opens: usize,
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
            Line::Step(op, verdict) => (op, *verdict),
        };
        let verdict = session.detector.decide(op, session.writable);
        assert_eq!(verdict, recorded, "{name}: line {step}: {op:?}");
        match verdict {
            Verdict::CommitJournal => tally.commit_journal += 1,
            Verdict::CommitWal => tally.commit_wal += 1,
            Verdict::WalReset => tally.wal_reset += 1,
            Verdict::Refuse(Refusal::ReadOnly) => tally.read_only += 1,
            Verdict::Refuse(Refusal::NoJournal) => tally.no_journal += 1,
            Verdict::Pass | Verdict::Refuse(Refusal::NotPermitted) => {}
        }
        if matches!(op, Op::Open { daemon: true, .. }) {
            tally.daemon_opens += 1;
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
fn journal_modes_without_a_journal_file_are_refused_at_their_first_write() {
    for (name, text) in [fixture!("memory"), fixture!("off")] {
        let tally = replay(name, text);
        // The schema's first write to the database is refused, so nothing changed.
        assert!(text.contains("# outcome: refused"), "{name}");
        assert_eq!(records(text), 0, "{name}");
        assert!(tally.no_journal >= 1, "{name}");
        assert_eq!(tally.commit_journal + tally.commit_wal, 0, "{name}");
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
fn wal_mode_commits_at_each_commit_frame() {
    let (name, text) = fixture!("wal");
    let tally = replay(name, text);
    // The switch to WAL is a rollback-journal commit; then the schema and three inserts each
    // write a commit frame (the rollback writes none). The last connection's close
    // checkpoints (database writes beside the WAL) and removes the WAL.
    assert_eq!(records(text), 5);
    assert_eq!(tally.commit_journal, 1);
    assert_eq!(tally.commit_wal, 4);
    assert_eq!(tally.read_only + tally.no_journal, 0);
}

#[test]
fn several_connections_take_turns_and_every_commit_is_seen() {
    let (name, text) = fixture!("delete-connections");
    let tally = replay(name, text);
    assert_eq!(records(text), 11);
    assert_eq!(tally.commit_journal, 11);

    let (name, text) = fixture!("wal-connections");
    let tally = replay(name, text);
    // The switch to WAL, then the schema and ten inserts, each a commit frame.
    assert_eq!(records(text), 12);
    assert_eq!(tally.commit_journal, 1);
    assert_eq!(tally.commit_wal, 11);
}

#[test]
fn checkpoints_of_every_kind_pass_through() {
    let (name, text) = fixture!("wal-checkpoints");
    let tally = replay(name, text);
    // The switch to WAL, then the schema, three inserts and four more, one before each
    // checkpoint.
    assert_eq!(records(text), 9);
    assert_eq!(tally.commit_journal, 1);
    assert_eq!(tally.commit_wal, 8);
    assert_eq!(tally.no_journal, 0);
}

#[test]
fn exclusive_locking_mode_commits_in_rollback_modes_and_in_wal() {
    let (name, text) = fixture!("delete-exclusive");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: committed"));
    assert_eq!(records(text), 4);
    assert!(tally.commit_journal >= 4);

    // The WAL index lives in the connection's memory, but every commit still writes a
    // commit frame.
    let (name, text) = fixture!("wal-exclusive");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: committed"));
    assert_eq!(records(text), 5);
    assert_eq!(tally.commit_wal, 4);
}

#[test]
fn a_writer_killed_mid_commit_leaves_no_commit() {
    // DELETE: pages of the killed transaction reached the database file; the next connection
    // rolls the hot journal back and deletes it, a commit point that restores the last
    // committed state (no record).
    let (name, text) = fixture!("delete-crash");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: ['1', 'ok']"));
    assert_eq!(records(text), 2);
    assert_eq!(tally.commit_journal, 3);
    // WAL: frames without a commit frame reached the WAL: no commit point.
    let (name, text) = fixture!("wal-crash");
    let tally = replay(name, text);
    assert!(text.contains("# outcome: ['1', 'ok']"));
    assert_eq!(records(text), 3);
    assert_eq!(tally.commit_wal, 2);
}

#[test]
fn a_replica_refuses_writers_and_its_applier_opens_the_database_to_lock() {
    let (name, text) = fixture!("wal-replica");
    let tally = replay(name, text);
    // The connection that tries `PRAGMA journal_mode=DELETE` is refused the database for
    // writing.
    assert_eq!(tally.read_only, 1);
    assert_eq!(tally.commit_journal + tally.commit_wal, 0);
}
