//! What a replica asks for when it subscribes, and the extensions both sides may agree on.

use std::collections::{BTreeMap, BTreeSet};

use crate::Pos;

/// The HTTP header (and QUIC field) carrying the caller's node ID, as `%016X`.
pub const NODE_ID_HEADER: &str = "Litefs-Id";
/// The header carrying the cluster ID.
pub const CLUSTER_ID_HEADER: &str = "Litefs-Cluster-Id";
/// The header in which each side lists the extensions it supports (comma-separated).
pub const FEATURES_HEADER: &str = "Ltxd-Features";
/// The header in which the primary states its lease epoch.
pub const EPOCH_HEADER: &str = "Ltxd-Epoch";

/// Extensions to LiteFS's `/stream` protocol. Each is used only when both sides list it, so a
/// LiteFS peer, which lists none, gets LiteFS's protocol exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The primary may send an LTX file covering several transactions (a compacted range)
    /// instead of a snapshot. LiteFS only ever serves single-transaction files.
    pub range_files: bool,
    /// The LTX frame's size field holds the file's real length instead of 0.
    pub frame_lengths: bool,
    /// The replica acknowledges each transaction once it is durable in its own log
    /// ([`crate::Service::ack`]), for synchronous replication. A replica offers it only when it
    /// is a lease candidate; a primary only when it waits for acknowledgements.
    pub acks: bool,
}

impl Features {
    /// Every extension this implementation supports.
    pub const ALL: Features = Features {
        range_files: true,
        frame_lengths: true,
        acks: true,
    };
    /// LiteFS's protocol, with no extension.
    pub const NONE: Features = Features {
        range_files: false,
        frame_lengths: false,
        acks: false,
    };

    /// The extensions in both sets.
    pub fn intersect(self, other: Features) -> Features {
        Features {
            range_files: self.range_files && other.range_files,
            frame_lengths: self.frame_lengths && other.frame_lengths,
            acks: self.acks && other.acks,
        }
    }

    /// These extensions without acknowledgements.
    pub fn without_acks(self) -> Features {
        Features {
            acks: false,
            ..self
        }
    }

    /// The header value: the names of the extensions, comma-separated.
    pub fn to_header(self) -> String {
        let mut names = Vec::new();
        if self.range_files {
            names.push("range-files");
        }
        if self.frame_lengths {
            names.push("frame-lengths");
        }
        if self.acks {
            names.push("acks");
        }
        names.join(",")
    }

    /// Parses a header value; names this implementation does not know are ignored.
    pub fn from_header(value: &str) -> Features {
        let mut features = Features::NONE;
        for name in value.split(',').map(str::trim) {
            match name {
                "range-files" => features.range_files = true,
                "frame-lengths" => features.frame_lengths = true,
                "acks" => features.acks = true,
                _ => {}
            }
        }
        features
    }
}

/// A replica's subscription: who it is, which databases it wants, and where each one stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// The replica's node ID.
    pub node_id: u64,
    /// Only these databases, when set (LiteFS's `filter` query parameter).
    pub filter: Option<BTreeSet<String>>,
    /// The replica's position in each database it has.
    pub positions: BTreeMap<String, Pos>,
    /// The extensions the replica supports.
    pub features: Features,
}

impl StreamRequest {
    /// The query string for the filter (`filter=a,b`), if there is one.
    pub fn filter_query(&self) -> Option<String> {
        self.filter.as_ref().map(|names| {
            format!(
                "filter={}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
    }

    /// Parses a filter query value (`a,b`).
    pub fn parse_filter(value: &str) -> BTreeSet<String> {
        value
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// True when the filter lets `db` through.
    pub fn wants(&self, db: &str) -> bool {
        self.filter.as_ref().is_none_or(|names| names.contains(db))
    }
}

/// Formats a node ID as LiteFS does: 16 uppercase hex digits.
pub fn format_node_id(id: u64) -> String {
    format!("{id:016X}")
}

/// Parses a node ID: any hex string of up to 16 digits.
pub fn parse_node_id(text: &str) -> Option<u64> {
    // `from_str_radix` alone would also take a leading `+`.
    (!text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_and_ignore_unknown_names() {
        assert_eq!(
            Features::from_header(&Features::ALL.to_header()),
            Features::ALL
        );
        assert_eq!(Features::from_header(""), Features::NONE);
        assert_eq!(
            Features::from_header("frame-lengths, future-thing"),
            Features {
                frame_lengths: true,
                ..Features::NONE
            }
        );
    }

    #[test]
    fn node_ids_are_uppercase_hex() {
        assert_eq!(format_node_id(0xab), "00000000000000AB");
        assert_eq!(parse_node_id("00000000000000ab"), Some(0xab));
        assert_eq!(parse_node_id(""), None);
        assert_eq!(parse_node_id("zz"), None);
        assert_eq!(parse_node_id("11112222333344445"), None);
        assert_eq!(parse_node_id("+1"), None);
    }
}
