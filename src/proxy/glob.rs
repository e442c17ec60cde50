//! LiteFS's path globs for `proxy.passthrough` and `proxy.always-forward`: `*` matches any run
//! of characters (including `/`), every other character matches itself, and the whole path
//! must match.

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// The literal pieces between the `*`s.
    parts: Vec<String>,
}

impl Glob {
    /// The glob `pattern`.
    pub fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern.split('*').map(str::to_string).collect(),
        }
    }

    /// True when `path` matches the whole glob.
    pub fn matches(&self, path: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return path.is_empty(),
        };
        let Some(mut tail) = path.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(at) => tail = &tail[at + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// True when any of `globs` matches `path`.
pub fn any_matches(globs: &[Glob], path: &str) -> bool {
    globs.iter().any(|glob| glob.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_globs_match_the_whole_path() {
        let glob = Glob::new("/health");
        assert!(glob.matches("/health"));
        assert!(!glob.matches("/health/x"));
        assert!(!glob.matches("/healt"));
    }

    #[test]
    fn stars_match_any_run_including_slashes() {
        let glob = Glob::new("/static/*");
        assert!(glob.matches("/static/"));
        assert!(glob.matches("/static/a/b.css"));
        assert!(!glob.matches("/api/static/a"));
        let glob = Glob::new("*.css");
        assert!(glob.matches("/a/b.css"));
        assert!(!glob.matches("/a/b.cssx"));
        let glob = Glob::new("/a/*/b/*/c");
        assert!(glob.matches("/a/1/b/2/c"));
        assert!(glob.matches("/a/1/b/b/2/c"));
        assert!(!glob.matches("/a/1/b/2/d"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("**").matches("/x"));
    }

    #[test]
    fn prefix_and_suffix_do_not_overlap() {
        assert!(!Glob::new("ab*ba").matches("aba"));
        assert!(Glob::new("ab*ba").matches("abba"));
    }
}
