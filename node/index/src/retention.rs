//! Change-feed retention: consumers record their position (a named cursor with the time they
//! last moved it); the feed is trimmed below the oldest position of a live consumer, keeping
//! at least a configured number of recent records, and never the newest record (the next
//! sequence number is derived from it at open).

use rocksdb::{IteratorMode, WriteBatch};

use crate::{codec, Index, Result, CF_FEED, CF_STATS};

const CURSOR: &str = "cursor:";
const CURSOR_AT: &str = "cursor_at:";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Index {
    /// Record that consumer `name` has applied every change up to `seq`, now.
    pub fn consumer_at(&self, name: &str, seq: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATS), format!("{CURSOR}{name}"), seq.to_be_bytes());
        batch.put_cf(self.cf(CF_STATS), format!("{CURSOR_AT}{name}"), now_ms().to_be_bytes());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Consumers with their position and when they last moved it (unix ms; 0 unknown).
    pub fn consumers(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut out = Vec::new();
        let start = CURSOR.as_bytes();
        for item in self.db.iterator_cf(self.cf(CF_STATS), IteratorMode::From(start, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(start) {
                break;
            }
            let name = String::from_utf8_lossy(&k[start.len()..]).into_owned();
            let seq = codec::u64_from(&v).unwrap_or(0);
            let at = self
                .db
                .get_pinned_cf(self.cf(CF_STATS), format!("{CURSOR_AT}{name}"))?
                .and_then(|v| codec::u64_from(&v))
                .unwrap_or(0);
            out.push((name, seq, at));
        }
        Ok(out)
    }

    /// The oldest sequence still in the feed (the next one when the feed is empty).
    pub fn first_sequence(&self) -> Result<u64> {
        match self.db.iterator_cf(self.cf(CF_FEED), IteratorMode::Start).next() {
            Some(item) => Ok(codec::seq_from_key(&item?.0).unwrap_or(1)),
            None => Ok(self.next_sequence()),
        }
    }

    /// Delete feed records below the oldest position any consumer seen within
    /// `consumer_timeout_ms` still needs, keeping at least the newest `retain` records (and
    /// always the newest one). Returns the new first sequence.
    pub fn trim_feed(&self, retain: u64, consumer_timeout_ms: u64) -> Result<u64> {
        let head = self.next_sequence().saturating_sub(1);
        if head == 0 {
            return Ok(1);
        }
        let mut below = head.saturating_sub(retain.max(1)) + 1;
        let live_after = now_ms().saturating_sub(consumer_timeout_ms);
        for (_, seq, at) in self.consumers()? {
            if at >= live_after {
                below = below.min(seq + 1);
            }
        }
        let first = self.first_sequence()?;
        if below > first {
            self.db.delete_range_cf(self.cf(CF_FEED), first.to_be_bytes(), below.to_be_bytes())?;
            return Ok(below);
        }
        Ok(first)
    }
}
