//! Retention for a node that ships upstream (the design's "buffer" role): the bodies of events
//! the archive has acknowledged are evicted once they have been stored `storage.keep_shipped_days`,
//! oldest first, and sooner while free disk is below twice `storage.min_free_disk_mb`. Ids,
//! signatures and sightings stay (65 + 44 bytes per event), so an event seen again is a
//! sighting, not a new event, and is never downloaded into the store or shipped twice. An event
//! not yet acknowledged is never evicted (it is not in the shipped queue). A node without
//! `[upstream]` evicts nothing: it keeps every event and pauses at its free-disk floor.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::{EventStore, StoreError};

/// Events per atomic eviction step: each step holds the store's write lock for milliseconds.
const CHUNK: usize = 500;
/// Events evicted per sweep under disk pressure, whatever their age: space comes back only as
/// RocksDB compacts, so free disk lags behind; this bounds how far a sweep can overshoot.
const PRESSURE_PER_SWEEP: u64 = 20_000;

/// What retention keeps (from `[storage]`).
#[derive(Debug, Clone)]
pub struct Retention {
    pub keep: Duration,
    pub data_dir: PathBuf,
    pub min_free_disk_mb: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub events: u64,
    /// Event bytes freed (before compression; on disk about half, once compacted).
    pub bytes: u64,
    /// Free disk was below twice the floor: shipped events were evicted whatever their age.
    pub under_pressure: bool,
}

impl Retention {
    /// Free disk is low enough that shipped events go whatever their age.
    fn pressed(&self) -> bool {
        crate::store::free_disk_mb(&self.data_dir)
            .is_some_and(|free| free < self.min_free_disk_mb.saturating_mul(2))
    }

    /// One sweep at unix time `now`, in short atomic steps (blocking: run it off the async
    /// workers).
    pub fn sweep(&self, events: &EventStore, now: u64) -> Result<Swept, StoreError> {
        let mut out = Swept::default();
        let before = now.saturating_sub(self.keep.as_secs());
        loop {
            let (n, bytes) = events.evict_shipped(before, CHUNK)?;
            out.events += n;
            out.bytes += bytes;
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut pressed = 0u64;
        while pressed < PRESSURE_PER_SWEEP && self.pressed() {
            out.under_pressure = true;
            let (n, bytes) = events.evict_shipped(u64::MAX, CHUNK)?;
            if n == 0 {
                break;
            }
            pressed += n;
            out.events += n;
            out.bytes += bytes;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::event::Event;
    use crate::store::EventStoreOptions;

    fn ev(n: u8) -> Event {
        Event {
            id: [n; 32],
            pubkey: [1; 32],
            created_at: 1_000 + n as u64,
            kind: 1,
            tags: vec![],
            content: format!("event {n}"),
            sig: [n; 64],
        }
    }

    fn retention(dir: &std::path::Path, keep_days: u64, min_free_disk_mb: u64) -> Retention {
        Retention {
            keep: Duration::from_secs(keep_days * 86_400),
            data_dir: dir.to_path_buf(),
            min_free_disk_mb,
        }
    }

    /// Ids of the events whose bodies are still readable.
    fn readable(s: &EventStore) -> Vec<u8> {
        (1..=6u8)
            .filter(|n| s.get(&[*n; 32]).unwrap().is_some())
            .collect()
    }

    #[test]
    fn only_acknowledged_events_are_evicted_by_age_or_disk_pressure() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(
            dir.path(),
            &EventStoreOptions {
                spool: true,
                track_shipped: true,
                ..EventStoreOptions::default()
            },
        )
        .unwrap();
        let day = 86_400;
        s.write_page(1, 10 * day, &[ev(1), ev(2)], &[], None)
            .unwrap();
        s.write_page(1, 20 * day, &[ev(3), ev(4)], &[], None)
            .unwrap();
        s.write_page(1, 30 * day, &[ev(5), ev(6)], &[], None)
            .unwrap();
        // The archive acknowledged the first four spool entries only.
        s.spool_ack(3).unwrap();
        let now = 35 * day;
        let calm = retention(dir.path(), 20, 0);
        assert_eq!(
            calm.sweep(&s, now).unwrap().events,
            2,
            "stored > 20 days ago"
        );
        assert_eq!(readable(&s), vec![3, 4, 5, 6]);
        // What dedup needs stays: the id is known and its signature still compares.
        assert!(s.contains(&[1; 32]).unwrap());
        assert_eq!(s.stored_sig(&[1; 32]).unwrap(), Some([1; 64]));
        assert_eq!(s.sightings(&[1; 32]).unwrap(), vec![(1, 10 * day)]);
        let again = s.write_page(2, now, &[ev(1)], &[], None).unwrap();
        assert_eq!((again.new_events, again.new_sightings), (0, 1));
        assert_eq!(s.counters().evicted, 2);
        // Time-ordered reads skip evicted events.
        let mut seen = vec![];
        s.scan_time(0, u64::MAX, |e| {
            seen.push(e.id[0]);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![3, 4, 5, 6]);

        // Free disk below twice the floor: acknowledged events go whatever their age, and
        // still never an unacknowledged one.
        let free = crate::store::free_disk_mb(dir.path()).unwrap();
        let pressed = retention(dir.path(), 20, free * 2 / 3);
        let swept = pressed.sweep(&s, now).unwrap();
        assert!(swept.under_pressure);
        assert_eq!(swept.events, 2);
        assert_eq!(
            readable(&s),
            vec![5, 6],
            "unshipped events are never evicted"
        );
        // Acknowledged later, they go too; a reopened store remembers the count.
        s.spool_ack(6).unwrap();
        assert_eq!(pressed.sweep(&s, now).unwrap().events, 2);
        assert!(readable(&s).is_empty());
        drop(s);
        let s = EventStore::open(dir.path(), &EventStoreOptions::default()).unwrap();
        assert_eq!(s.counters().evicted, 6);
        assert_eq!(s.counters().events, 6);
    }

    #[test]
    fn a_store_that_does_not_track_shipping_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(
            dir.path(),
            &EventStoreOptions {
                spool: true,
                ..EventStoreOptions::default()
            },
        )
        .unwrap();
        s.write_page(1, 10, &[ev(1), ev(2)], &[], None).unwrap();
        s.spool_ack(1).unwrap();
        let free = crate::store::free_disk_mb(dir.path()).unwrap();
        assert_eq!(
            retention(dir.path(), 0, free * 2 / 3)
                .sweep(&s, 1_000)
                .unwrap()
                .events,
            0
        );
        assert_eq!(readable(&s), vec![1, 2]);
    }
}
