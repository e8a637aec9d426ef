//! Event statistics kept as events are written, so that no question about them rescans the
//! store: events per kind and per UTC day of `created_at`.
//!
//! Column family `stats`, values signed 64-bit little-endian counts combined by an "add" merge
//! operator: a page adds its counts with merges in the same `WriteBatch` as its events (exact
//! after a crash, no read before the write), and eviction subtracts. So the figures are the
//! events whose bodies this node holds. Keys:
//! - `k` kind(u16 BE)
//! - `d` day(u32 BE, `created_at / 86400`, saturating)
//!
//! A store from before them counts them with the query indexes' build
//! ([`EventStore::build_indexes`], index layout 2).

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode, MergeOperands, WriteBatch};

use super::{EventStore, StoreError};
use crate::protocol::Event;

pub(super) const CF_STATS: &str = "stats";

const P_KIND: u8 = b'k';
const P_DAY: u8 = b'd';

/// The "add" merge operator of the `stats` column family.
pub(super) fn add_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let read = |b: &[u8]| <[u8; 8]>::try_from(b).map(i64::from_le_bytes).unwrap_or(0);
    let mut sum = existing.map_or(0, read);
    for op in operands {
        sum = sum.wrapping_add(read(op));
    }
    Some(sum.to_le_bytes().to_vec())
}

/// Counts of a batch of events, written as one merge per key.
#[derive(Default)]
pub(super) struct Tally {
    kinds: BTreeMap<u16, i64>,
    days: BTreeMap<u32, i64>,
}

impl Tally {
    pub fn add(&mut self, ev: &Event, n: i64) {
        *self.kinds.entry(ev.kind).or_default() += n;
        *self.days.entry(day_of(ev.created_at)).or_default() += n;
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn write(&self, store: &EventStore, batch: &mut WriteBatch) {
        let cf = store.cf(CF_STATS);
        for (kind, n) in &self.kinds {
            batch.merge_cf(cf, kind_key(*kind), n.to_le_bytes());
        }
        for (day, n) in &self.days {
            batch.merge_cf(cf, day_key(*day), n.to_le_bytes());
        }
    }
}

fn day_of(created_at: u64) -> u32 {
    u32::try_from(created_at / 86_400).unwrap_or(u32::MAX)
}

fn kind_key(kind: u16) -> [u8; 3] {
    let k = kind.to_be_bytes();
    [P_KIND, k[0], k[1]]
}

fn day_key(day: u32) -> [u8; 5] {
    let d = day.to_be_bytes();
    [P_DAY, d[0], d[1], d[2], d[3]]
}

/// Events held per kind and per day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventStats {
    /// (kind, events), by kind; kinds with none are left out.
    pub kinds: Vec<(u16, u64)>,
    /// (day since 1970-01-01 UTC, events), by day, within the days asked for.
    pub days: Vec<(u32, u64)>,
}

impl EventStore {
    /// Events per kind (all of them) and per day for days `first_day..=last_day`.
    pub fn event_stats(&self, first_day: u32, last_day: u32) -> Result<EventStats, StoreError> {
        let mut out = EventStats::default();
        let Some(cf) = self.db.cf_handle(CF_STATS) else {
            return Ok(out);
        };
        let count = |v: &[u8]| {
            <[u8; 8]>::try_from(v)
                .map(i64::from_le_bytes)
                .unwrap_or(0)
                .max(0) as u64
        };
        let start = kind_key(0);
        for item in self
            .db
            .iterator_cf(&cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if k.first() != Some(&P_KIND) {
                break;
            }
            let Ok(kind) = <[u8; 2]>::try_from(&k[1..]) else {
                continue;
            };
            let n = count(&v);
            if n > 0 {
                out.kinds.push((u16::from_be_bytes(kind), n));
            }
        }
        let start = day_key(first_day);
        for item in self
            .db
            .iterator_cf(&cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if k.first() != Some(&P_DAY) {
                break;
            }
            let Ok(day) = <[u8; 4]>::try_from(&k[1..]) else {
                continue;
            };
            let day = u32::from_be_bytes(day);
            if day > last_day {
                break;
            }
            let n = count(&v);
            if n > 0 {
                out.days.push((day, n));
            }
        }
        Ok(out)
    }

    /// Forget every count (a rebuild starts over), in `batch`.
    pub(super) fn clear_stats(&self, batch: &mut WriteBatch) {
        batch.delete_range_cf(self.cf(CF_STATS), [0u8].as_slice(), [0xffu8; 8].as_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::EventStoreOptions;

    fn ev(n: u8, created_at: u64, kind: u16) -> Event {
        Event {
            id: [n; 32],
            pubkey: [7; 32],
            created_at,
            kind,
            tags: Vec::new(),
            content: String::new(),
            sig: [0; 64],
        }
    }

    #[test]
    fn counts_follow_writes_duplicates_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EventStoreOptions::default();
        let day = 20_000u64 * 86_400;
        {
            let store = EventStore::open(dir.path(), &opts).unwrap();
            let page = [ev(1, day, 1), ev(2, day + 10, 1), ev(3, day + 86_400, 7)];
            store.write_page(1, 0, &page, &[false; 3], None).unwrap();
            // The same events again (another relay): counted once.
            store.write_page(2, 0, &page, &[false; 3], None).unwrap();
            store
                .write_page(1, 0, &[ev(4, day + 5, 30_023)], &[false], None)
                .unwrap();
        }
        let store = EventStore::open(dir.path(), &opts).unwrap();
        let s = store.event_stats(0, u32::MAX).unwrap();
        assert_eq!(s.kinds, vec![(1, 2), (7, 1), (30_023, 1)]);
        assert_eq!(s.days, vec![(20_000, 3), (20_001, 1)]);
        // A window of days.
        let s = store.event_stats(20_001, 20_001).unwrap();
        assert_eq!(s.days, vec![(20_001, 1)]);
    }

    #[test]
    fn the_merge_adds_signed_counts() {
        // Checked through the store: an add, a subtraction and a reopen.
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), &EventStoreOptions::default()).unwrap();
        let mut batch = WriteBatch::default();
        let mut t = Tally::default();
        t.add(&ev(1, 0, 5), 3);
        t.add(&ev(1, 0, 5), -1);
        t.write(&store, &mut batch);
        store.db.write(batch).unwrap();
        let s = store.event_stats(0, 0).unwrap();
        assert_eq!(s.kinds, vec![(5, 2)]);
        assert_eq!(s.days, vec![(0, 2)]);
        let mut batch = WriteBatch::default();
        store.clear_stats(&mut batch);
        store.db.write(batch).unwrap();
        assert_eq!(store.event_stats(0, 0).unwrap(), EventStats::default());
    }
}
