//! Operation traces: the [`Op`]s the detector decided and its [`Verdict`]s, one line each, as
//! recorded from real SQLite sessions through the mount and replayed by the detector's tests.
//!
//! Recording is switched on with the environment variable `LTXD_TRACE_OPS=<file>` when the
//! mount starts (a debugging and test-fixture tool; see `fixtures/mount-traces/README.md`).
//! Lines are written in the order the detector decided them. Lock owners are numbered in order
//! of appearance (`o1`, `o2`, ...; the replica's applier is `applier`), files are
//! `db<index>.<kind>`, and a `role` line precedes the first operation and every change of role:
//!
//! ```text
//! role primary
//! lock db0.shm o1 120-120 w => pass
//! write db0.wal 0+32 => pass
//! unlock db0.shm o1 120-120 => commit-wal
//! release unlock db0.shm o1 120-120
//! unlink db0.journal => commit-journal
//! ```
//!
//! An unlock's or close's locks go when the adapter has acted on the verdict: the `release`
//! line records that moment.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;

use super::detector::{Op, Refusal, Verdict};
use super::locks::LockKind;
use super::names::{self, FileKind};
use super::parked::APPLIER;

/// The environment variable that names the trace file.
pub(super) const TRACE_ENV: &str = "LTXD_TRACE_OPS";

/// Writes a trace, one line per decision.
pub(super) struct TraceRecorder {
    out: std::io::LineWriter<std::fs::File>,
    owners: HashMap<u64, u32>,
    writable: Option<bool>,
}

impl TraceRecorder {
    /// A recorder writing to the file `LTXD_TRACE_OPS` names, if it is set.
    pub(super) fn from_env() -> Option<TraceRecorder> {
        let path = std::env::var_os(TRACE_ENV)?;
        match std::fs::File::create(&path) {
            Ok(file) => Some(TraceRecorder {
                out: std::io::LineWriter::new(file),
                owners: HashMap::new(),
                writable: None,
            }),
            Err(err) => {
                tracing::warn!(%err, path = ?path, "cannot create the operation trace");
                None
            }
        }
    }

    /// Records one decision.
    pub(super) fn record(&mut self, op: &Op, writable: bool, verdict: Verdict) {
        let mut line = String::new();
        if self.writable != Some(writable) {
            self.writable = Some(writable);
            line.push_str(if writable {
                "role primary\n"
            } else {
                "role replica\n"
            });
        }
        self.describe(&mut line, op);
        let _ = writeln!(line, " => {}", verdict_name(verdict));
        self.write(&line);
    }

    /// Records that the locks of an unlock or close were released (see
    /// [`super::detector::Detector::release`]).
    pub(super) fn record_release(&mut self, op: &Op) {
        let mut line = String::from("release ");
        self.describe(&mut line, op);
        line.push('\n');
        self.write(&line);
    }

    fn write(&mut self, line: &str) {
        if let Err(err) = self.out.write_all(line.as_bytes()) {
            tracing::warn!(%err, "cannot write the operation trace");
        }
    }

    fn describe(&mut self, line: &mut String, op: &Op) {
        let owners = &mut self.owners;
        let mut owner = |raw: u64| -> String {
            if raw == APPLIER {
                return "applier".into();
            }
            let next = owners.len() as u32 + 1;
            format!("o{}", owners.entry(raw).or_insert(next))
        };
        let _ = match *op {
            Op::Open { kind, write } => write!(
                line,
                "open {} {}",
                kind_name(kind),
                if write { "w" } else { "r" }
            ),
            Op::Write {
                ino,
                offset,
                len,
                zeroes,
            } => write!(
                line,
                "write {} {offset}+{len}{}",
                file(ino),
                if zeroes { " zero" } else { "" }
            ),
            Op::Truncate { ino, size } => write!(line, "truncate {} {size}", file(ino)),
            Op::Unlink { ino } => write!(line, "unlink {}", file(ino)),
            Op::Lock {
                ino,
                holder,
                start,
                end,
                kind,
            } => write!(
                line,
                "lock {} {} {} {}",
                file(ino),
                owner(holder.owner),
                range(start, end),
                if kind == LockKind::Write { "w" } else { "r" }
            ),
            Op::Unlock {
                ino,
                owner: who,
                start,
                end,
            } => write!(
                line,
                "unlock {} {} {}",
                file(ino),
                owner(who),
                range(start, end)
            ),
            Op::Close { ino, owner: who } => write!(line, "close {} {}", file(ino), owner(who)),
        };
    }
}

fn file(ino: u64) -> String {
    match names::from_inode(ino) {
        Some((db, kind)) => format!("db{db}.{}", kind_name(kind)),
        None => format!("ino{ino}"),
    }
}

const KINDS: [(FileKind, &str); 5] = [
    (FileKind::Database, "database"),
    (FileKind::Journal, "journal"),
    (FileKind::Wal, "wal"),
    (FileKind::Shm, "shm"),
    (FileKind::Pos, "pos"),
];

fn kind_name(kind: FileKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("?", |(_, name)| name)
}

fn range(start: u64, end: u64) -> String {
    if end == u64::MAX {
        format!("{start}-max")
    } else {
        format!("{start}-{end}")
    }
}

const VERDICTS: [(Verdict, &str); 10] = [
    (Verdict::Pass, "pass"),
    (Verdict::CommitJournal, "commit-journal"),
    (Verdict::CommitWal, "commit-wal"),
    (Verdict::WalReset, "wal-reset"),
    (Verdict::Refuse(Refusal::ReadOnly), "refuse read-only"),
    (
        Verdict::Refuse(Refusal::ExclusiveWal),
        "refuse exclusive-wal",
    ),
    (
        Verdict::Refuse(Refusal::NotPermitted),
        "refuse not-permitted",
    ),
    (
        Verdict::Refuse(Refusal::Conflict {
            only_applier: false,
        }),
        "refuse conflict",
    ),
    (
        Verdict::Refuse(Refusal::Conflict { only_applier: true }),
        "refuse conflict-applier",
    ),
    (
        Verdict::Refuse(Refusal::CommitInProgress),
        "refuse commit-in-progress",
    ),
];

fn verdict_name(verdict: Verdict) -> &'static str {
    VERDICTS
        .iter()
        .find(|(v, _)| *v == verdict)
        .map_or("?", |(_, name)| name)
}

/// One line of a trace, parsed.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// The node's role from here on: true for the primary.
    Role(bool),
    /// An operation and the verdict recorded for it.
    Step(Op, Verdict),
    /// The release of an unlock's or close's locks.
    Release(Op),
}

/// Parses a trace; owners `oN` become `N`, `applier` the applier.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Result<Vec<Line>, String> {
    use super::locks::Holder;

    let mut lines = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: cannot parse {raw:?}", number + 1);
        if let Some(role) = raw.strip_prefix("role ") {
            lines.push(Line::Role(match role {
                "primary" => true,
                "replica" => false,
                _ => return Err(bad()),
            }));
            continue;
        }
        let (op, verdict) = match raw.strip_prefix("release ") {
            Some(op) => (op, None),
            None => {
                let (op, verdict) = raw.split_once(" => ").ok_or_else(bad)?;
                let verdict = VERDICTS
                    .iter()
                    .find(|(_, name)| *name == verdict)
                    .map(|(v, _)| *v)
                    .ok_or_else(bad)?;
                (op, Some(verdict))
            }
        };
        let words: Vec<&str> = op.split(' ').collect();
        let ino = |at: usize| -> Result<u64, String> {
            let word = words.get(at).ok_or_else(bad)?;
            if let Some(n) = word.strip_prefix("ino") {
                return n.parse().map_err(|_| bad());
            }
            let (db, kind) = word
                .strip_prefix("db")
                .and_then(|w| w.split_once('.'))
                .ok_or_else(bad)?;
            let kind = KINDS
                .iter()
                .find(|(_, name)| *name == kind)
                .map(|(k, _)| *k)
                .ok_or_else(bad)?;
            Ok(names::inode(db.parse().map_err(|_| bad())?, kind))
        };
        let owner = |at: usize| -> Result<u64, String> {
            match *words.get(at).ok_or_else(bad)? {
                "applier" => Ok(APPLIER),
                w => w
                    .strip_prefix('o')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad),
            }
        };
        let number = |w: &str| -> Result<u64, String> {
            if w == "max" {
                Ok(u64::MAX)
            } else {
                w.parse().map_err(|_| bad())
            }
        };
        let pair = |at: usize, sep: char| -> Result<(u64, u64), String> {
            let (a, b) = words
                .get(at)
                .and_then(|w| w.split_once(sep))
                .ok_or_else(bad)?;
            Ok((number(a)?, number(b)?))
        };
        let op = match words[0] {
            "open" => Op::Open {
                kind: KINDS
                    .iter()
                    .find(|(_, name)| Some(name) == words.get(1))
                    .map(|(k, _)| *k)
                    .ok_or_else(bad)?,
                write: words.get(2) == Some(&"w"),
            },
            "write" => {
                let (offset, len) = pair(2, '+')?;
                Op::Write {
                    ino: ino(1)?,
                    offset,
                    len,
                    zeroes: words.get(3) == Some(&"zero"),
                }
            }
            "truncate" => Op::Truncate {
                ino: ino(1)?,
                size: number(words.get(2).ok_or_else(bad)?)?,
            },
            "unlink" => Op::Unlink { ino: ino(1)? },
            "lock" => {
                let (start, end) = pair(3, '-')?;
                Op::Lock {
                    ino: ino(1)?,
                    holder: Holder {
                        owner: owner(2)?,
                        pid: 0,
                    },
                    start,
                    end,
                    kind: match words.get(4) {
                        Some(&"w") => LockKind::Write,
                        Some(&"r") => LockKind::Read,
                        _ => return Err(bad()),
                    },
                }
            }
            "unlock" => {
                let (start, end) = pair(3, '-')?;
                Op::Unlock {
                    ino: ino(1)?,
                    owner: owner(2)?,
                    start,
                    end,
                }
            }
            "close" => Op::Close {
                ino: ino(1)?,
                owner: owner(2)?,
            },
            _ => return Err(bad()),
        };
        lines.push(match verdict {
            Some(verdict) => Line::Step(op, verdict),
            None => Line::Release(op),
        });
    }
    Ok(lines)
}
