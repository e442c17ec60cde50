//! The log as the primary's stream state machine sees it.

use ltxd_protocol::primary::LogView;
use ltxd_protocol::{Pos, TxId};

use crate::log::{Log, ReadFrom};

/// A [`LogView`] over a node's log.
pub struct LogReader<'a>(pub &'a Log);

impl LogView for LogReader<'_> {
    fn databases(&self) -> Vec<String> {
        self.0.database_names()
    }

    fn head(&self, db: &str) -> Option<Pos> {
        let log = self.0.existing(db).ok()?;
        let head = log.head();
        (head.txid != TxId::ZERO).then_some(head)
    }

    fn next_record(&self, db: &str, after: Pos) -> Option<(TxId, TxId)> {
        let log = self.0.existing(db).ok()?;
        if log.read_from(after) != ReadFrom::Records {
            return None;
        }
        log.range_after(after.txid)
    }
}
