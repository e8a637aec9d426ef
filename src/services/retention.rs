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

    /// A store with the spool on, queueing acked events for retention if `track_shipped`.
    fn store(dir: &std::path::Path, track_shipped: bool) -> EventStore {
        EventStore::open(
            dir,
            &EventStoreOptions {
                spool: true,
                track_shipped,
                ..EventStoreOptions::default()
            },
        )
        .unwrap()
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
        let s = store(dir.path(), true);
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

    /// An event the archive refused is done with shipping too: it must not pin its blob file
    /// forever, so it is evicted like a shipped one (its spool record stays in quarantine).
    #[test]
    fn events_set_aside_by_the_archive_are_evicted_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), true);
        s.write_page(1, 10, &[ev(1), ev(2)], &[], None).unwrap();
        let refused = s.spool_peek(1).unwrap().remove(0);
        s.spool_settle(&[(refused.0, refused.1, "NUL in content".into())], Some(1))
            .unwrap();
        assert_eq!(
            retention(dir.path(), 0, 0).sweep(&s, 100).unwrap().events,
            2
        );
        assert!(readable(&s).is_empty());
        assert_eq!(s.counters().ship_rejected, 1);
    }

    /// Bytes of event bodies in blob files under `dir`.
    fn blob_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "blob"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    /// Event bodies live in blob files (no blob GC): evicting every body of a file must make
    /// RocksDB delete it, or retention would free nothing on disk.
    #[test]
    fn evicted_bodies_leave_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), true);
        let body = |n: u32| Event {
            id: {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.to_be_bytes());
                id
            },
            pubkey: [1; 32],
            created_at: 1_000 + n as u64,
            kind: 1,
            tags: vec![],
            // Pseudo-random letters: LZ4 cannot shrink them, so the blob files hold ~20 MB.
            content: {
                let mut x = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                (0..2_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (b'a' + (x % 26) as u8) as char
                    })
                    .collect()
            },
            sig: [7; 64],
        };
        for chunk in 0..20u32 {
            let page: Vec<Event> = (0..500).map(|i| body(chunk * 500 + i)).collect();
            s.write_page(1, 10, &page, &[], None).unwrap();
        }
        s.compact_all().unwrap();
        let before = blob_bytes(dir.path());
        assert!(
            before > 10 << 20,
            "bodies are in blob files ({before} bytes)"
        );
        s.spool_ack(9_999).unwrap();
        assert_eq!(
            retention(dir.path(), 0, 0).sweep(&s, 100).unwrap().events,
            10_000
        );
        s.compact_all().unwrap();
        let after = blob_bytes(dir.path());
        assert!(
            after < before / 20,
            "blob files left: {after} of {before} bytes"
        );
    }

    #[test]
    fn a_store_that_does_not_track_shipping_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), false);
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
