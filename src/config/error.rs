//! [`ConfigError`] and its construction from YAML and validation failures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::locate;

/// Why the configuration could not be loaded. Each message names the file, and where it
/// applies the key (`lease.candidate`) and the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No path was given and none of the searched files exists.
    #[error("no config file found; searched {}", list_paths(searched))]
    NotFound {
        /// The files tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The file could not be read.
    /// Its message leaves the cause to the error chain (`source`), which prints it once.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML or does not fit the schema: an unknown key, a value of the
    /// wrong type or form, or a missing required key.
    #[error("{}", display_parse(path, key.as_deref(), message))]
    Parse {
        /// The file (or the name given to [`super::Config::parse`]).
        path: PathBuf,
        /// The key at fault (`lease.candidate`, `exec[1].cmd`), when it could be determined.
        key: Option<String>,
        /// The 1-based line in the expanded text, when known.
        line: Option<u64>,
        /// The 1-based column, when known.
        column: Option<u64>,
        /// The parser's message: `line N column M: what`, then a snippet of the text.
        message: String,
    },
    /// The file parsed, but a value is not allowed (alone or with another key's value).
    #[error("{}", display_invalid(path, key, *line, message))]
    Invalid {
        /// The file; empty when the error came from [`super::Config::validate`].
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// The 1-based line of the key, or of its nearest ancestor written in the file.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The key at fault, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The 1-based line of the error, if known.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Parse { line, .. } | ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("{} (give one with --config)", names.join(", "))
}

fn display_parse(path: &Path, key: Option<&str>, message: &str) -> String {
    let mut out = format!("{}: ", path.display());
    if let Some(key) = key {
        let _ = write!(out, "key `{key}`: ");
    }
    out.push_str(message);
    out
}

fn display_invalid(path: &Path, key: &str, line: Option<u64>, message: &str) -> String {
    let mut out = String::new();
    if !path.as_os_str().is_empty() {
        let _ = write!(out, "{}: ", path.display());
    }
    let _ = write!(out, "key `{key}`");
    if let Some(line) = line {
        let _ = write!(out, " (line {line})");
    }
    let _ = write!(out, ": {message}");
    out
}

/// A validation failure in `text` (the expanded file), with the line of its key.
pub(super) fn invalid(source: &Path, text: &str, key: String, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: source.to_path_buf(),
        line: locate::line_of(text, &key),
        key,
        message,
    }
}

/// A serde-saphyr error on `text` (the expanded file), with the key it concerns.
pub(super) fn from_yaml(err: &serde_saphyr::Error, text: &str, source: &Path) -> ConfigError {
    let location = err.location();
    let line = location.map(|l| l.line()).filter(|&l| l > 0);
    let column = location.map(|l| l.column()).filter(|&c| c > 0);
    let key = line.and_then(|line| key_for(err, text, line as usize));
    let name = source.display().to_string();
    let rendered = err.render_with_options(serde_saphyr::render_options! {
        source_name: Some(name.as_str()),
    });
    // The YAML library's advice to its own users means nothing to someone editing a file.
    let message = rendered
        .strip_prefix("error: ")
        .unwrap_or(&rendered)
        .trim_end()
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    ConfigError::Parse {
        path: source.to_path_buf(),
        key,
        line,
        column,
        message,
    }
}

/// Names the key an error at `line` is about.
fn key_for(err: &serde_saphyr::Error, text: &str, line: usize) -> Option<String> {
    use serde_saphyr::Error as E;
    match err.without_snippet() {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            // The unknown key is at the error's line; its section is the one whose keys serde
            // listed. Prefer the indexed form the text gives (`exec[1]`).
            let section = locate::section_with_fields(expected)?;
            let parent =
                locate::parent_at(text, line, section).unwrap_or_else(|| section.replace("[]", ""));
            Some(join(&parent, field))
        }
        E::SerdeMissingField { field, .. } => {
            // Serde points somewhere inside the mapping that lacks the key; only three keys are
            // required.
            match *field {
                "type" | "lease" => Some("lease.type".to_string()),
                "cmd" => {
                    let parent = locate::parent_at(text, line, "exec[]")
                        .unwrap_or_else(|| "exec[]".to_string());
                    Some(join(&parent, "cmd"))
                }
                other => Some(other.to_string()),
            }
        }
        // Errors about a value: the key is the one written at the error's line.
        E::Message { .. }
        | E::Unexpected { .. }
        | E::InvalidScalar { .. }
        | E::InvalidBooleanStrict { .. }
        | E::NullIntoString { .. }
        | E::NonFiniteFloat { .. }
        | E::QuotingRequired { .. }
        | E::TaggedScalarCannotDeserializeIntoString { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. }
        | E::SerdeInvalidLength { .. }
        | E::SerdeUnknownVariant { .. }
        | E::SerdeVariantId { .. }
        | E::DuplicateMappingKey { .. } => locate::key_at(text, line),
        // Syntax errors: the line is where the parser noticed, which may not be the key at
        // fault, so no key is named.
        _ => None,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
