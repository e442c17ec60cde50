//! A set of byte ranges: the parts of a file written since its last sync.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent byte ranges, merged as they are added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    /// Start to end (exclusive).
    spans: BTreeMap<u64, u64>,
}

impl Ranges {
    /// Adds `range`, merging it with the ranges it overlaps or touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        let touching: Vec<u64> = self
            .spans
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, _)| s)
            .collect();
        for s in touching {
            let e = self.spans.remove(&s).unwrap_or(s);
            start = start.min(s);
            end = end.max(e);
        }
        self.spans.insert(start, end);
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.spans.iter().map(|(&s, &e)| s..e)
    }

    /// True when no range is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Forgets every range.
    pub fn clear(&mut self) {
        self.spans.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(r: &Ranges) -> Vec<Range<u64>> {
        r.iter().collect()
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let mut r = Ranges::default();
        r.insert(10..20);
        r.insert(30..40);
        assert_eq!(of(&r), vec![10..20, 30..40]);
        r.insert(20..25);
        assert_eq!(of(&r), vec![10..25, 30..40]);
        r.insert(5..35);
        assert_eq!(of(&r), vec![5..40]);
        r.insert(50..50);
        assert_eq!(of(&r), vec![5..40]);
        r.insert(0..1);
        assert_eq!(of(&r), vec![0..1, 5..40]);
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn a_range_inside_another_changes_nothing() {
        let mut r = Ranges::default();
        r.insert(0..100);
        r.insert(10..20);
        assert_eq!(of(&r), vec![0..100]);
    }
}
