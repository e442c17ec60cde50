//! Operation traces: the [`Op`]s the detector decided and its [`Verdict`]s, one line each, as
//! recorded from real SQLite sessions through the mount and replayed by the detector's tests.
//!
//! Recording is switched on with the environment variable `LTXD_TRACE_OPS=<file>` when the
//! mount starts (a debugging and test-fixture tool; see `fixtures/mount-traces/README.md`).
//! Lines are written in the order the detector decided them. Files are `db<index>.<kind>`, and
//! a `role` line precedes the first operation and every change of role. A write's flag is
//! `commit` on the WAL (a commit frame's header) and `wal` on the database (a WAL exists); an
//! open by the daemon itself ends in `daemon`:
//!
//! ```text
//! role primary
//! write db0.wal 0+32 => pass
//! write db0.wal 32+24 commit => pass
//! write db0.wal 56+4096 => commit-wal
//! write db0.database 0+4096 wal => pass
//! unlink db0.journal => commit-journal
//! ```

use std::fmt::Write as _;
use std::io::Write as _;

use super::detector::{Op, Refusal, Verdict};
use super::names::{self, FileKind};

/// The environment variable that names the trace file.
pub(super) const TRACE_ENV: &str = "LTXD_TRACE_OPS";

/// Writes a trace, one line per decision.
pub(super) struct TraceRecorder {
    out: std::io::LineWriter<std::fs::File>,
    writable: Option<bool>,
}

impl TraceRecorder {
    /// A recorder writing to the file `LTXD_TRACE_OPS` names, if it is set.
    pub(super) fn from_env() -> Option<TraceRecorder> {
        let path = std::env::var_os(TRACE_ENV)?;
        match std::fs::File::create(&path) {
            Ok(file) => Some(TraceRecorder {
                out: std::io::LineWriter::new(file),
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

    fn write(&mut self, line: &str) {
        if let Err(err) = self.out.write_all(line.as_bytes()) {
            tracing::warn!(%err, "cannot write the operation trace");
        }
    }

    fn describe(&mut self, line: &mut String, op: &Op) {
        let _ = match *op {
            Op::Open {
                kind,
                write,
                daemon,
            } => write!(
                line,
                "open {} {}{}",
                kind_name(kind),
                if write { "w" } else { "r" },
                if daemon { " daemon" } else { "" }
            ),
            Op::Write {
                ino,
                offset,
                len,
                zeroes,
                flag,
            } => {
                let flag = match (flag, names::from_inode(ino)) {
                    (true, Some((_, FileKind::Wal))) => " commit",
                    (true, _) => " wal",
                    (false, _) => "",
                };
                write!(
                    line,
                    "write {} {offset}+{len}{}{flag}",
                    file(ino),
                    if zeroes { " zero" } else { "" }
                )
            }
            Op::Truncate { ino, size } => write!(line, "truncate {} {size}", file(ino)),
            Op::Unlink { ino } => write!(line, "unlink {}", file(ino)),
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

const VERDICTS: [(Verdict, &str); 7] = [
    (Verdict::Pass, "pass"),
    (Verdict::CommitJournal, "commit-journal"),
    (Verdict::CommitWal, "commit-wal"),
    (Verdict::WalReset, "wal-reset"),
    (Verdict::Refuse(Refusal::ReadOnly), "refuse read-only"),
    (Verdict::Refuse(Refusal::NoJournal), "refuse no-journal"),
    (
        Verdict::Refuse(Refusal::NotPermitted),
        "refuse not-permitted",
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
}

/// Parses a trace.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Result<Vec<Line>, String> {
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
        let (op, verdict) = raw.split_once(" => ").ok_or_else(bad)?;
        let verdict = VERDICTS
            .iter()
            .find(|(_, name)| *name == verdict)
            .map(|(v, _)| *v)
            .ok_or_else(bad)?;
        let words: Vec<&str> = op.split(' ').collect();
        let has = |word: &str| words.iter().skip(2).any(|w| *w == word);
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
        let number = |w: &str| -> Result<u64, String> { w.parse().map_err(|_| bad()) };
        let op = match words[0] {
            "open" => Op::Open {
                kind: KINDS
                    .iter()
                    .find(|(_, name)| Some(name) == words.get(1))
                    .map(|(k, _)| *k)
                    .ok_or_else(bad)?,
                write: words.get(2) == Some(&"w"),
                daemon: has("daemon"),
            },
            "write" => {
                let (offset, len) = words
                    .get(2)
                    .and_then(|w| w.split_once('+'))
                    .ok_or_else(bad)?;
                Op::Write {
                    ino: ino(1)?,
                    offset: number(offset)?,
                    len: number(len)?,
                    zeroes: has("zero"),
                    flag: has("commit") || has("wal"),
                }
            }
            "truncate" => Op::Truncate {
                ino: ino(1)?,
                size: number(words.get(2).ok_or_else(bad)?)?,
            },
            "unlink" => Op::Unlink { ino: ino(1)? },
            _ => return Err(bad()),
        };
        lines.push(Line::Step(op, verdict));
    }
    Ok(lines)
}
