//! Mapping between lines of a YAML file and key paths such as `lease.consul.url` or
//! `exec[1].cmd`, for error messages.
//!
//! The YAML parser reports a line and column; serde reports no path. This module reads the block
//! structure of the text (indentation, `- ` items and `key:` prefixes) to name the key at a line,
//! and checks the result against [`SCHEMA`] so that it never names a key the configuration does
//! not have. Flow collections (`{...}`, `[...]`) and multi-line scalars are not looked into; a
//! path is then reported for the enclosing key, or not at all.

/// Every section (by key path; `exec[]` for an `exec` entry) and the keys it holds, in the order
/// the structs declare them.
pub(super) const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "exit-on-error",
            "skip-sync",
            "strict-verify",
            "exec",
            "data",
            "fuse",
            "http",
            "quic",
            "proxy",
            "lease",
            "backup",
            "replication",
            "log",
            "tracing",
        ],
    ),
    ("exec[]", &["cmd", "if-candidate"]),
    (
        "data",
        &["dir", "compress", "retention", "retention-monitor-interval"],
    ),
    ("fuse", &["dir", "allow-other", "debug", "busy-poll"]),
    (
        "http",
        &[
            "addr",
            "snapshot-timeout",
            "cert-file",
            "key-file",
            "ca-file",
            "client-auth",
            "insecure-dev",
            "token",
            "token-env",
            "insecure-cleartext",
            "header-read-timeout",
            "idle-timeout",
            "max-connections",
            "max-streams-per-peer",
            "max-subscriptions",
        ],
    ),
    (
        "quic",
        &[
            "addr",
            "cert-file",
            "key-file",
            "ca-file",
            "client-auth",
            "insecure-dev",
            "token",
            "token-env",
            "keep-alive-interval",
            "idle-timeout",
            "max-connections",
            "max-streams",
        ],
    ),
    (
        "proxy",
        &[
            "addr",
            "target",
            "db",
            "max-lag",
            "debug",
            "passthrough",
            "always-forward",
            "primary-redirect-timeout",
            "read-timeout",
            "read-header-timeout",
            "write-timeout",
            "idle-timeout",
            "mode",
        ],
    ),
    (
        "lease",
        &[
            "type",
            "hostname",
            "advertise-url",
            "candidate",
            "promote",
            "reconnect-delay",
            "demote-delay",
            "databases",
            "consul",
            "etcd",
        ],
    ),
    ("lease.consul", &["url", "key", "ttl", "lock-delay"]),
    (
        "lease.etcd",
        &[
            "endpoints",
            "key",
            "ttl",
            "username",
            "password",
            "ca-file",
            "cert-file",
            "key-file",
        ],
    ),
    (
        "backup",
        &[
            "type",
            "path",
            "bucket",
            "endpoint",
            "region",
            "force-path-style",
            "retention",
            "url",
            "cluster",
            "auth-token",
        ],
    ),
    ("replication", &["sync", "sync-timeout"]),
    ("log", &["format", "timestamp", "debug"]),
    (
        "tracing",
        &["enabled", "path", "max-size", "max-count", "compress"],
    ),
];

/// Keys whose value is a list; an index after any other key is dropped.
const LISTS: &[&str] = &[
    "exec",
    "proxy.passthrough",
    "proxy.always-forward",
    "lease.databases",
    "lease.etcd.endpoints",
];

/// The section whose key set is exactly `fields` (serde's "expected one of" list).
pub(super) fn section_with_fields(fields: &[&str]) -> Option<&'static str> {
    SCHEMA
        .iter()
        .find(|(_, keys)| keys.len() == fields.len() && keys.iter().all(|k| fields.contains(k)))
        .map(|(section, _)| *section)
}

/// One segment of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The dotted key path, with list indexes as `[N]`.
fn render(segs: &[Seg]) -> String {
    join(segs, |i| format!("[{i}]"))
}

/// The path with list indexes replaced by `[]`, as [`SCHEMA`] spells sections.
fn normalized(segs: &[Seg]) -> String {
    join(segs, |_| "[]".to_string())
}

fn join(segs: &[Seg], index: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&index(*i)),
        }
    }
    out
}

/// Whether `section` (normalized) is a section of the schema.
fn is_section(section: &str) -> bool {
    SCHEMA.iter().any(|(s, _)| *s == section)
}

/// Whether `section.key` is a key of the schema.
fn is_key(section: &str, key: &str) -> bool {
    SCHEMA
        .iter()
        .any(|(s, keys)| *s == section && keys.contains(&key))
}

/// Splits a rendered normalized path into its section and last key.
fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The block structure of one line.
struct Shape<'a> {
    /// Leading spaces.
    indent: usize,
    /// Columns (0-based) of `- ` sequence-item markers.
    dashes: Vec<usize>,
    /// Column (0-based) and text of a `key:` on this line.
    key: Option<(usize, &'a str)>,
    /// Column of the first character after the indentation and markers.
    content: usize,
    /// Empty, or a comment only.
    blank: bool,
}

fn shape(line: &str) -> Shape<'_> {
    let b = line.as_bytes();
    let indent = b.iter().take_while(|&&c| c == b' ').count();
    let mut p = indent;
    let mut dashes = Vec::new();
    while p < b.len() && b[p] == b'-' && (p + 1 == b.len() || b[p + 1] == b' ') {
        dashes.push(p);
        p += 1;
        while p < b.len() && b[p] == b' ' {
            p += 1;
        }
    }
    let rest = &line[p..];
    let blank = dashes.is_empty() && (rest.trim().is_empty() || rest.starts_with('#'));
    Shape {
        indent,
        dashes,
        key: key_of(rest).map(|k| (p, k)),
        content: p,
        blank,
    }
}

/// The key of a `key: value` (or `key:`) line, with quotes removed.
fn key_of(rest: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        if let Some(inner) = rest.strip_prefix(quote) {
            let end = inner.find(quote)?;
            let after = &inner[end + 1..];
            return is_key_end(after.trim_start_matches(' ')).then(|| &inner[..end]);
        }
    }
    let first = rest.chars().next()?;
    if "{[#&*!|>%@`,?:".contains(first) {
        return None;
    }
    let colon = rest.find(':')?;
    let key = rest[..colon].trim_end();
    (!key.is_empty() && !key.contains(" #") && is_key_end(&rest[colon..])).then_some(key)
}

/// Whether `s` starts with `:` followed by a space, a comment or the end of the line.
fn is_key_end(s: &str) -> bool {
    match s.strip_prefix(':') {
        Some(after) => after.is_empty() || after.starts_with(' ') || after.starts_with('\t'),
        None => false,
    }
}

/// The key path of the node on 1-based `line`: the key on that line, or the list item there,
/// with its parents. `None` if the line holds neither, or the structure cannot be followed.
fn path_at(lines: &[&str], line: usize) -> Option<Vec<Seg>> {
    let mut i = line.checked_sub(1)?;
    let first = shape(lines.get(i)?);
    if first.blank {
        return None;
    }
    let mut segs = Vec::new();
    let mut col = match first.key {
        Some((kc, k)) => {
            segs.push(Seg::Key(k.to_string()));
            kc
        }
        None => first.content,
    };
    loop {
        let here = shape(lines[i]);
        let enclosing: Vec<usize> = here.dashes.iter().copied().filter(|&d| d < col).collect();
        if enclosing.len() > 1 {
            return None;
        }
        if let Some(&dash) = enclosing.first() {
            // The node is inside a list item at column `dash`: count the items above it, then
            // find the key that holds the list.
            let mut index = 0;
            let mut j = i;
            let parent = loop {
                j = j.checked_sub(1)?;
                let s = shape(lines[j]);
                if s.blank || s.indent > dash {
                    continue;
                }
                if s.indent == dash && s.dashes.first() == Some(&dash) {
                    index += 1;
                    continue;
                }
                break j;
            };
            segs.push(Seg::Index(index));
            let (kc, k) = shape(lines[parent]).key?;
            if kc > dash {
                return None;
            }
            segs.push(Seg::Key(k.to_string()));
            col = kc;
            i = parent;
            continue;
        }
        if col == 0 {
            break;
        }
        // The nearest line above that is indented less than the node encloses it.
        let mut j = i;
        let (above, s) = loop {
            j = j.checked_sub(1)?;
            let s = shape(lines[j]);
            if !s.blank && s.indent < col {
                break (j, s);
            }
        };
        match s.key {
            Some((kc, k)) if kc < col => {
                segs.push(Seg::Key(k.to_string()));
                col = kc;
            }
            // A sibling key in the same list item: the item's marker is on that line.
            Some((kc, _)) if kc == col => {}
            None if s.dashes.iter().any(|&d| d < col) => {}
            _ => return None,
        }
        i = above;
    }
    segs.reverse();
    Some(segs)
}

/// Drops list indexes after keys that are not lists (a sequence given where a scalar or a
/// mapping was expected), so the path names the key.
fn tidy(mut segs: Vec<Seg>) -> Vec<Seg> {
    let mut k = 0;
    while k < segs.len() {
        if matches!(segs[k], Seg::Index(_)) && !LISTS.contains(&normalized(&segs[..k]).as_str()) {
            segs.remove(k);
        } else {
            k += 1;
        }
    }
    segs
}

/// The key at 1-based `line` of `text`, if it is a key of the schema (`exec[0].cmd`,
/// `lease.candidate`, `lease.databases[2]`).
pub(super) fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let segs = tidy(path_at(&lines, line)?);
    let norm = normalized(&segs);
    let base = norm.trim_end_matches("[]");
    let (section, key) = split_last(base);
    (is_key(section, key) || is_section(base)).then(|| render(&segs))
}

/// The section holding the node at 1-based `line` (the key's parent), in rendered form with
/// indexes, and whether it is the schema section `expected`.
pub(super) fn parent_at(text: &str, line: usize, expected: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut segs = tidy(path_at(&lines, line)?);
    segs.pop();
    (normalized(&segs) == expected).then(|| render(&segs))
}

/// The 1-based line where `key` (a rendered path) is written, or where its nearest written
/// ancestor is; `None` if no part of it is written.
pub(super) fn line_of(text: &str, key: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut target = key.to_string();
    loop {
        for n in 1..=lines.len() {
            if shape(lines[n - 1]).key.is_some()
                && path_at(&lines, n).map(|s| render(&tidy(s))).as_deref() == Some(&target)
            {
                return Some(n as u64);
            }
        }
        // Try the parent: drop a trailing index, else the last key.
        if let Some(stripped) = target.strip_suffix(']') {
            target = stripped[..stripped.rfind('[')?].to_string();
        } else {
            let (parent, _) = split_last(&target);
            if parent.is_empty() {
                return None;
            }
            target = parent.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
fuse:
  dir: /litefs   # trailing
data:
  dir: /var/lib/litefs
exec:
  - cmd: migrate
    if-candidate: true

  - cmd: \"serve\"
lease:
  type: consul
  \"candidate\": true
  consul:
    url: http://consul:8500
    key: litefs/app
  databases:
  - a.db
  - b.db
proxy: {addr: ':8080'}
";

    #[test]
    fn keys_at_lines() {
        let at = |n| key_at(TEXT, n);
        assert_eq!(at(1), None);
        assert_eq!(at(2).as_deref(), Some("fuse"));
        assert_eq!(at(3).as_deref(), Some("fuse.dir"));
        assert_eq!(at(5).as_deref(), Some("data.dir"));
        assert_eq!(at(7).as_deref(), Some("exec[0].cmd"));
        assert_eq!(at(8).as_deref(), Some("exec[0].if-candidate"));
        assert_eq!(at(9), None);
        assert_eq!(at(10).as_deref(), Some("exec[1].cmd"));
        assert_eq!(at(12).as_deref(), Some("lease.type"));
        assert_eq!(at(13).as_deref(), Some("lease.candidate"));
        assert_eq!(at(16).as_deref(), Some("lease.consul.key"));
        assert_eq!(at(18).as_deref(), Some("lease.databases[0]"));
        assert_eq!(at(19).as_deref(), Some("lease.databases[1]"));
        assert_eq!(at(20).as_deref(), Some("proxy"));
        assert_eq!(at(99), None);
    }

    #[test]
    fn unknown_keys_are_not_named() {
        assert_eq!(key_at("lease:\n  nope: 1\n", 2), None);
        assert_eq!(key_at("nope:\n  dir: 1\n", 2), None);
    }

    #[test]
    fn sequence_where_a_scalar_belongs_names_the_key() {
        assert_eq!(
            key_at("fuse:\n  dir:\n    - a\n", 3).as_deref(),
            Some("fuse.dir")
        );
    }

    #[test]
    fn parents() {
        assert_eq!(parent_at(TEXT, 13, "lease").as_deref(), Some("lease"));
        assert_eq!(parent_at(TEXT, 8, "exec[]").as_deref(), Some("exec[0]"));
        assert_eq!(parent_at(TEXT, 8, "lease"), None);
        assert_eq!(
            parent_at("lease:\n  bogus: 1\n", 2, "lease").as_deref(),
            Some("lease")
        );
    }

    #[test]
    fn lines_of_keys() {
        assert_eq!(line_of(TEXT, "lease.consul.url"), Some(15));
        assert_eq!(line_of(TEXT, "exec[1].cmd"), Some(10));
        // Missing keys fall back to their nearest written ancestor.
        assert_eq!(line_of(TEXT, "lease.advertise-url"), Some(11));
        assert_eq!(line_of(TEXT, "lease.etcd.key"), Some(11));
        assert_eq!(line_of(TEXT, "backup.path"), None);
    }

    #[test]
    fn schema_sections_match_fields() {
        assert_eq!(
            section_with_fields(&["dir", "allow-other", "debug", "busy-poll"]),
            Some("fuse")
        );
        assert_eq!(
            section_with_fields(&["if-candidate", "cmd"]),
            Some("exec[]")
        );
        assert_eq!(section_with_fields(&["dir"]), None);
    }
}
