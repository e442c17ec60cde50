//! Go duration strings (`"10s"`, `"1m30s"`, `"500ms"`, `"1.5h"`), as LiteFS's configuration uses
//! them, read into [`std::time::Duration`].
//!
//! The grammar follows Go's `time.ParseDuration`: an optional sign, then one or more decimal
//! numbers, each with an optional fraction and a mandatory unit (`ns`, `us`, `µs`, `μs`, `ms`,
//! `s`, `m`, `h`). The bare string `"0"` needs no unit. Go also allows negative durations; LiteFS
//! treats every duration that is not positive as "zero" (disabled, or the default), and
//! [`Duration`] cannot be negative, so a negative value is read as [`Duration::ZERO`].

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (use a Go duration such as \"10s\", \"1m30s\", \"500ms\" or \"1h\")")]
pub struct DurationError {
    /// The text that failed to parse.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The largest duration Go can represent, in nanoseconds (`1<<63 - 1`).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string such as `"1m30s"` into a [`Duration`].
///
/// Negative durations (`"-5s"`) parse, and are returned as [`Duration::ZERO`]; see the module
/// documentation.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(fail("empty duration"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let bytes = s.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(fail("expected a number"));
        }
        // Integer part.
        let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u128 = 0;
        for &b in &bytes[..int_len] {
            whole = whole * 10 + u128::from(b - b'0');
            if whole > MAX_NANOS {
                return Err(fail("value out of range"));
            }
        }
        s = &s[int_len..];
        // Fraction part: keep 18 digits, which is far below one nanosecond of an hour.
        let mut frac: u128 = 0;
        let mut frac_scale: u128 = 1;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
            for &b in &rest.as_bytes()[..frac_len] {
                if frac_scale < 1_000_000_000_000_000_000 {
                    frac = frac * 10 + u128::from(b - b'0');
                    frac_scale *= 10;
                }
            }
            s = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(fail("expected digits"));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(fail("missing unit"));
        }
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(fail("unknown unit")),
        };
        s = &s[unit_len..];
        total += whole * unit + frac * unit / frac_scale;
        if total > MAX_NANOS {
            return Err(fail("value out of range"));
        }
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    // `total` fits in i64, so both parts fit their types.
    Ok(Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
}

/// A [`Duration`] that deserializes from a Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GoDurationVisitor;

        impl Visitor<'_> for GoDurationVisitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration string such as \"10s\" or \"1m30s\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }
        }

        deserializer.deserialize_str(GoDurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_forms() {
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2h45m"), Duration::from_secs(2 * 3600 + 45 * 60));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1ns"), Duration::from_nanos(1));
        assert_eq!(ok("3us"), Duration::from_micros(3));
        assert_eq!(ok("3µs"), Duration::from_micros(3));
        assert_eq!(ok("3μs"), Duration::from_micros(3));
        assert_eq!(ok("1h1m1s1ms1us1ns"), Duration::new(3661, 1_001_001));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("0.25h"), Duration::from_secs(900));
        // Units may repeat, as in Go.
        assert_eq!(ok("1s1s"), Duration::from_secs(2));
        // The largest Go duration.
        assert_eq!(
            ok("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn negative_is_zero() {
        assert_eq!(ok("-5s"), Duration::ZERO);
        assert_eq!(ok("-1m30s"), Duration::ZERO);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "-",
            "+",
            "10",
            "1.5",
            "s",
            ".s",
            "-.s",
            ".",
            "soon",
            "10 s",
            "10S",
            "1d",
            "1m 30s",
            " 1s",
            "1s ",
            "ten seconds",
            "2562047h47m16.854775808s",
            "9999999999999999999999h",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn error_message_names_input_and_reason() {
        let err = parse_go_duration("10").unwrap_err();
        assert_eq!(err.reason, "missing unit");
        let msg = err.to_string();
        assert!(
            msg.contains("\"10\"") && msg.contains("missing unit"),
            "{msg}"
        );
        assert_eq!(parse_go_duration("5d").unwrap_err().reason, "unknown unit");
    }
}
