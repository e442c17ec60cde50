//! Environment-variable expansion of configuration text, with LiteFS's semantics.
//!
//! LiteFS expands the raw file text before YAML parsing, using Go's `os.Expand` with a mapping
//! that adds comparisons. This module reproduces that behaviour:
//!
//! - `$NAME` takes the longest run of `[A-Za-z0-9_]` after the `$`; `${...}` takes everything up
//!   to the first `}`. Go's shell-special names (`$1`, `$*`, `$$`, `$@`, `$!`, `$?`, `$-`, `$#`,
//!   and the same inside braces) are looked up like any other name.
//! - Inside `${...}` surrounding whitespace is trimmed.
//! - `${ A == 'text' }`, `${ A != 'text' }` (or double quotes) compare variable `A` with a literal,
//!   and `${ A == B }`, `${ A != B }` compare two variables; each becomes the text `true` or
//!   `false`. Names are `\w+`.
//! - An unset variable expands to the empty string. There is no escape for `$`: a `$` that is not
//!   followed by a name (`$ `, `$/`, a `$` at the very end) is kept as it is, while `${}` and an
//!   unterminated `${` are dropped.

/// A source of environment variables: returns the value of a variable, or `None` if it is unset.
///
/// Pass [`process_env`] for the real process environment, or a closure over a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads a variable from the process environment (`None` if unset or not valid Unicode).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The machine's hostname, from `/proc/sys/kernel/hostname`, trimmed; `None` if it cannot be
/// read or is empty.
///
/// LiteFS sets `HOSTNAME` from `os.Hostname()` when it is unset, before expanding its
/// configuration; [`crate::config::Config::parse`] does the same through this function.
pub fn machine_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Expands `$VAR`, `${VAR}` and the `${ VAR == 'lit' }` family in `text`, looking variables up
/// in `env`. See the module documentation for the exact rules.
pub fn expand_env(text: &str, env: Env<'_>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // `copied` is the start of the text not yet copied to `out`.
    let mut copied = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&lookup(name, env)),
                // Valid syntax but no name: keep the `$`.
                None if width == 0 => out.push('$'),
                // Bad syntax (`${}` or an unterminated `${`): the characters are dropped.
                None => {}
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

/// Go's `getShellName`: the name after a `$` and how many bytes it spans. `(None, 0)` means no
/// name (keep the `$`); `(None, n > 0)` means bad syntax spanning `n` bytes.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_shell_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (None, 2),
            Some(i) => (Some(&s[1..i + 1]), i + 2),
            None => (None, 1),
        };
    }
    if is_shell_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b.iter().take_while(|&&c| is_word(c)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

fn is_shell_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

/// Go regexp `\w`: ASCII letters, digits and underscore.
fn is_word(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go regexp `\s`: `[\t\n\f\r ]`.
fn is_go_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// LiteFS's mapping function: trims the name, then tries the comparison forms, then looks the
/// name up.
fn lookup(raw: &str, env: Env<'_>) -> String {
    let expr = raw.trim();
    if let Some((name, equal, rhs)) = comparison(expr) {
        let left = env(name).unwrap_or_default();
        let right = match rhs {
            Rhs::Literal(text) => text.to_string(),
            Rhs::Var(other) => env(other).unwrap_or_default(),
        };
        return ((left == right) == equal).to_string();
    }
    env(expr).unwrap_or_default()
}

/// The right-hand side of a comparison.
enum Rhs<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// Splits `NAME op RHS` where op is `==` or `!=`; the bool is true for `==`.
fn comparison(expr: &str) -> Option<(&str, bool, Rhs<'_>)> {
    let b = expr.as_bytes();
    let name_len = b.iter().take_while(|&&c| is_word(c)).count();
    if name_len == 0 {
        return None;
    }
    let mut i = name_len;
    while i < b.len() && is_go_space(b[i]) {
        i += 1;
    }
    let equal = match b.get(i..i + 2) {
        Some(b"==") => true,
        Some(b"!=") => false,
        _ => return None,
    };
    i += 2;
    while i < b.len() && is_go_space(b[i]) {
        i += 1;
    }
    let rhs = &expr[i..];
    // `'(.*)'$` then `"(.*)"$`: Go's `.` does not match a newline.
    for quote in ['\'', '"'] {
        if rhs.len() >= 2 && rhs.starts_with(quote) && rhs.ends_with(quote) {
            let inner = &rhs[1..rhs.len() - 1];
            if !inner.contains('\n') {
                return Some((&expr[..name_len], equal, Rhs::Literal(inner)));
            }
        }
    }
    if !rhs.is_empty() && rhs.bytes().all(is_word) {
        return Some((&expr[..name_len], equal, Rhs::Var(rhs)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn expand(text: &str, vars: &[(&str, &str)]) -> String {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand_env(text, &|name| map.get(name).cloned())
    }

    #[test]
    fn plain_and_braced() {
        let vars = [("A", "x"), ("B_2", "y")];
        assert_eq!(expand("$A ${B_2} ${ A } $B_2.", &vars), "x y x y.");
        assert_eq!(expand("pre$A-post", &vars), "prex-post");
        assert_eq!(expand("$Ab", &vars), "");
        assert_eq!(expand("${A}b", &vars), "xb");
        assert_eq!(expand("no vars", &vars), "no vars");
    }

    #[test]
    fn unset_is_empty() {
        assert_eq!(expand("[$NOPE][${NOPE}][${ NOPE }]", &[]), "[][][]");
    }

    #[test]
    fn dollar_edge_cases_follow_go() {
        assert_eq!(expand("cost $ 5 and $/x", &[]), "cost $ 5 and $/x");
        assert_eq!(expand("end$", &[]), "end$");
        assert_eq!(expand("a${}b", &[]), "ab");
        // Unterminated `${` drops just the two characters.
        assert_eq!(expand("a${b", &[]), "ab");
        // Shell-special names are looked up.
        assert_eq!(
            expand("$1 $$ ${*}", &[("1", "one"), ("$", "pid")]),
            "one pid "
        );
        // Non-ASCII text around a `$` is preserved.
        assert_eq!(expand("é$Aé $é", &[("A", "ü")]), "éüé $é");
    }

    #[test]
    fn comparisons() {
        let vars = [("R", "ord"), ("P", "ord"), ("Q", "lax")];
        assert_eq!(expand("${ R == 'ord' }", &vars), "true");
        assert_eq!(expand("${R=='lax'}", &vars), "false");
        assert_eq!(expand("${ R != 'lax' }", &vars), "true");
        assert_eq!(expand("${ R == \"ord\" }", &vars), "true");
        assert_eq!(expand("${ R != \"ord\" }", &vars), "false");
        assert_eq!(expand("${ R == P }", &vars), "true");
        assert_eq!(expand("${ R == Q }", &vars), "false");
        assert_eq!(expand("${ R != Q }", &vars), "true");
        // Unset variables compare as empty strings.
        assert_eq!(expand("${ NOPE == '' }", &vars), "true");
        assert_eq!(expand("${ NOPE == ALSO_NOPE }", &vars), "true");
        // Literals may contain spaces and the other quote.
        assert_eq!(expand("${ X == 'a \"b' }", &[("X", "a \"b")]), "true");
        // A malformed comparison is looked up as a name, which is unset.
        assert_eq!(expand("${ R == 'ord\" }", &vars), "");
        assert_eq!(expand("${ R = 'ord' }", &vars), "");
    }

    #[test]
    fn hostname_is_readable_here() {
        // Linux test machines expose the hostname in /proc.
        if std::path::Path::new("/proc/sys/kernel/hostname").exists() {
            assert!(machine_hostname().is_some());
        }
    }
}
