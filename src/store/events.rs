//! The event store (RocksDB): events by id, where and when each was seen, a (created_at, id)
//! index, an ingest log for the Finder, and the upstream spool.
//!
//! Invariants kept here (ARCHITECTURE.md):
//! 1. Only verified events are written: [`EventStore::write_page`] takes [`Event`], which only
//!    `ParsedEvent::verify` (or a copy whose identical (id, sig) is already stored) produces.
//! 2. (with the synchronizer) A page's events, sightings, index entries, ingest-log and spool
//!    entries are ONE `WriteBatch`, written with the WAL (fsynced when `storage.sync_writes`)
//!    before `write_page` returns. The synchronizer moves a relay's cursor in SQLite only after
//!    that return, so a cursor never passes data that is not durable; a crash between the two
//!    replays the page, which dedup makes harmless.
//! 3. An event enters the spool in the same batch that stores it; spool entries are removed only
//!    by [`EventStore::spool_settle`] (or `spool_ack`), which the shipper calls after the archive's COMMIT.
//! 4. Every relay id a sighting or spool record refers to is bound to its URL in `meta` first
//!    ([`EventStore::bind_relay`]); `Stores::open` reconciles the SQLite registry against it.
//! 5. A record that fails to decode is moved to the `quarantine` column family and counted,
//!    never a crash loop.
//!
//! Key layout (all integers big-endian so byte order is numeric order):
//! - `events`:     id(32)                     -> `Event::encode()` (tag 1), or tag 2 + sig(64)
//!   once evicted after shipping
//! - `seen`:       id(32) relay(u32)          -> first seen, unix seconds (u64)
//! - `by_time`:    created_at(u64) id(32)     -> () or `index::SUPERSEDED` (an older version)
//! - `ingest`:     seq(u64)                   -> id(32)       (Finder reads it by watermark)
//! - `spool`:      seq(u64)                   -> tag(1) id(32) relay(u32) seen_at(u64)
//! - `meta`:       name                       -> u64 counters
//! - `meta`:       `relay/` relay(u32)        -> the relay's URL (see `bind_relay`)
//! - `quarantine`: cf name + key              -> raw value
//! - `shipped`:    seen_at(u64) id(32)        -> ()           (retention's queue of acked events)

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    Options, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use crate::protocol::event::EncodedEvent;
use crate::protocol::Event;

pub mod index;
pub mod stats;

const CF_EVENTS: &str = "events";
const CF_SEEN: &str = "seen";
const CF_BY_TIME: &str = "by_time";
const CF_INGEST: &str = "ingest";
const CF_SPOOL: &str = "spool";
const CF_META: &str = "meta";
const CF_QUARANTINE: &str = "quarantine";
/// Events shipped upstream, oldest first: seen_at (u64 BE) + id. Written when the spool entry
/// that carried the event is acked; retention evicts from here (never an unshipped event).
const CF_SHIPPED: &str = "shipped";
const ALL_CFS: [&str; 10] = [
    CF_EVENTS,
    CF_SEEN,
    CF_BY_TIME,
    CF_INGEST,
    CF_SPOOL,
    CF_META,
    CF_QUARANTINE,
    CF_SHIPPED,
    index::CF_INDEX,
    stats::CF_STATS,
];
const META_EVENTS: &[u8] = b"events";
const META_SEEN: &[u8] = b"seen";
const META_QUARANTINED: &[u8] = b"quarantined";
const META_SHIP_REJECTED: &[u8] = b"ship_rejected";
const META_EVICTED: &[u8] = b"evicted";
/// Event records at least this long go to blob files (see `open_mode`); smaller ones (short
/// notes, evicted records) stay inline.
const MIN_BLOB_BYTES: u64 = 256;
/// The record kept for an evicted event: this tag, then its signature (what dedup compares).
const EVICTED_TAG: u8 = 2;
/// `relay/` + id (u32, big-endian) -> the relay's URL: every relay id that sightings and spool
/// records refer to, written (durably) before the first of them ([`EventStore::bind_relay`]).
/// An older `state.sqlite` restored beside this store is reconciled against it at open.
const META_RELAY: &[u8] = b"relay/";

/// Spool record tags.
pub const SPOOL_EVENT: u8 = b'E';
pub const SPOOL_SEEN: u8 = b'S';

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("event store: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A blocking task reading the store ended without an answer (the runtime is shutting down).
    #[error("event store: a reading task was stopped")]
    Closed,
    /// The relay registry (`state.sqlite`) gives an id another URL than the one the event
    /// store's sightings were recorded under.
    #[error("relay id {id} is {registry} in state.sqlite but {events} in the event store: state.sqlite does not belong to this events/ directory; restore the state.sqlite of this data dir, or move events/ aside to start a new archive")]
    RelayMismatch {
        id: u32,
        registry: String,
        events: String,
    },
}

/// Tunables, from `[storage]` and `[spool]`.
#[derive(Debug, Clone)]
pub struct EventStoreOptions {
    pub block_cache_bytes: usize,
    pub write_buffer_bytes: usize,
    pub sync_writes: bool,
    pub spool: bool,
    /// Queue acked events for retention ([`EventStore::evict_shipped`]); only a node that
    /// evicts pays the 40 bytes per event.
    pub track_shipped: bool,
}

impl Default for EventStoreOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 16 << 20,
            sync_writes: true,
            spool: false,
            track_shipped: false,
        }
    }
}

/// What one page write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Events stored for the first time.
    pub new_events: u64,
    /// (event, relay) sightings recorded for the first time.
    pub new_sightings: u64,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StoreCounters {
    pub events: u64,
    pub sightings: u64,
    pub spool_depth: u64,
    pub quarantined: u64,
    /// Spool entries the archive cannot take (e.g. text with U+0000), set aside in quarantine.
    pub ship_rejected: u64,
    /// Shipped events whose bodies retention removed (their ids and sightings are kept).
    pub evicted: u64,
}

pub struct EventStore {
    db: DB,
    /// Serializes writers so the exists-check and the write of a page are atomic with respect to
    /// other pages (two relays delivering the same new event store it once, counted once).
    write_lock: Mutex<()>,
    /// Next sequence numbers for the ingest log and the spool, recovered at open from the last key
    /// (an O(1) seek, not a scan).
    next_ingest: AtomicU64,
    next_spool: AtomicU64,
    /// Oldest spool key still present (spool depth = next_spool - spool_head, when contiguous).
    spool_head: AtomicU64,
    /// Bumped by every committed page: a caller that looked ids up at generation G and finds
    /// G unchanged under the write lock knows its "not stored" answers still hold.
    generation: AtomicU64,
    events: AtomicU64,
    sightings: AtomicU64,
    quarantined: AtomicU64,
    ship_rejected: AtomicU64,
    evicted: AtomicU64,
    /// The relay ids bound to URLs in CF_META (loaded at open; a few thousand at most).
    relays: Mutex<std::collections::HashMap<u32, Box<str>>>,
    sync_writes: bool,
    spool: bool,
    track_shipped: bool,
    /// Opened read-only beside a running node (status, export): never writes, not even to
    /// quarantine a corrupt record.
    read_only: bool,
    /// Kept alive for the DB's lifetime (RocksDB holds raw pointers to them).
    _cache: Cache,
    _wbm: WriteBufferManager,
}

impl EventStore {
    pub fn open(path: &Path, opts: &EventStoreOptions) -> Result<EventStore, StoreError> {
        Self::open_mode(path, opts, false)
    }

    /// Open without taking the writer's lock, so `status` and `events export` work while
    /// `bigbrotr run` holds the store. Sees everything written (WAL included) at open time.
    pub fn open_read_only(path: &Path, opts: &EventStoreOptions) -> Result<EventStore, StoreError> {
        Self::open_mode(path, opts, true)
    }

    /// The newest ingest-log sequence number (what a live feed starts after).
    pub fn last_ingest_seq(&self) -> Result<Option<u64>, StoreError> {
        self.edge_seq(CF_INGEST, IteratorMode::End)
    }

    fn open_mode(
        path: &Path,
        opts: &EventStoreOptions,
        read_only: bool,
    ) -> Result<EventStore, StoreError> {
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        // allow_stall: writers wait for a flush instead of overshooting the memory budget.
        let wbm = WriteBufferManager::new_write_buffer_manager(opts.write_buffer_bytes, true);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        db_opts.set_max_background_jobs(2);
        db_opts.set_max_open_files(256);
        db_opts.set_keep_log_file_num(3);
        db_opts.set_max_log_file_size(4 << 20);
        db_opts.set_max_total_wal_size(64 << 20);
        // Spread writeback so an SD card never sees a burst of fsyncs at flush time.
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_wal_bytes_per_sync(1 << 20);
        let cf = |name: &str| {
            let mut block = BlockBasedOptions::default();
            block.set_block_cache(&cache);
            block.set_cache_index_and_filter_blocks(true);
            if name == CF_EVENTS || name == CF_SEEN {
                // Dedup looks every incoming id up: a bloom filter makes the miss cheap.
                block.set_bloom_filter(10.0, false);
            }
            let mut o = Options::default();
            o.set_block_based_table_factory(&block);
            if name == CF_EVENTS || name == CF_SEEN {
                // The same for the memtable: most lookups are of ids not stored yet, which a
                // small bloom filter answers without a descent through the skip list.
                o.set_memtable_prefix_bloom_ratio(0.02);
                o.set_memtable_whole_key_filtering(true);
            }
            o.set_write_buffer_size(opts.write_buffer_bytes / 4);
            o.set_max_write_buffer_number(2);
            // Event bodies are text and compress ~2x; the other families hold random ids and
            // counters, where compression costs CPU and saves nothing.
            o.set_compression_type(if name == CF_EVENTS {
                DBCompressionType::Lz4
            } else {
                DBCompressionType::None
            });
            o.set_level_compaction_dynamic_level_bytes(true);
            if name == stats::CF_STATS {
                o.set_merge_operator_associative("add", stats::add_merge);
            }
            if name == CF_EVENTS {
                // Event bodies live in blob files, written once at flush: compactions move only
                // keys and blob references. With the bodies in the LSM tree, every compaction
                // of random ids rewrote them (9.2x bytes written per event byte while syncing a
                // large history; see docs/BENCHMARKS.md). No blob GC: it relocates live blobs
                // from the oldest files on every compaction that touches them (it wrote more
                // than the data itself in the same bench). Retention evicts oldest-stored first,
                // and a blob file whose every blob was evicted is deleted without GC.
                o.set_enable_blob_files(true);
                o.set_min_blob_size(MIN_BLOB_BYTES);
                o.set_blob_compression_type(DBCompressionType::Lz4);
                o.set_enable_blob_gc(false);
                // Bodies read back (serving, export) are cached decompressed in the same LRU
                // as the blocks: a query answer is not a pread and an LZ4 pass per event.
                o.set_blob_cache(&cache);
            }
            ColumnFamilyDescriptor::new(name, o)
        };
        // A reader may come first after an upgrade added a column family: open what exists
        // (the writer creates the rest; a reader never touches them).
        let existing = if read_only {
            DB::list_cf(&db_opts, path).unwrap_or_default()
        } else {
            Vec::new()
        };
        let cfs = ALL_CFS
            .iter()
            .filter(|n| !read_only || existing.is_empty() || existing.iter().any(|e| e == *n))
            .map(|n| cf(n));
        let opened = if read_only {
            // RocksDB writes an info LOG even when read-only; keep it away from the running
            // node's own LOG, which it would otherwise truncate.
            db_opts.set_db_log_dir(std::env::temp_dir().join("bigbrotr-readers"));
            DB::open_cf_descriptors_read_only(&db_opts, path, cfs, false)
        } else {
            DB::open_cf_descriptors(&db_opts, path, cfs)
        };
        let db = opened.map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let store = EventStore {
            next_ingest: AtomicU64::new(0),
            next_spool: AtomicU64::new(0),
            spool_head: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            events: AtomicU64::new(0),
            sightings: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            ship_rejected: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            relays: Mutex::new(Default::default()),
            write_lock: Mutex::new(()),
            sync_writes: opts.sync_writes,
            spool: opts.spool,
            track_shipped: opts.track_shipped,
            read_only,
            db,
            _cache: cache,
            _wbm: wbm,
        };
        store.next_ingest.store(
            store
                .edge_seq(CF_INGEST, IteratorMode::End)?
                .map_or(0, |s| s + 1),
            Ordering::Relaxed,
        );
        let spool_next = store
            .edge_seq(CF_SPOOL, IteratorMode::End)?
            .map_or(0, |s| s + 1);
        store.next_spool.store(spool_next, Ordering::Relaxed);
        store.spool_head.store(
            store
                .edge_seq(CF_SPOOL, IteratorMode::Start)?
                .unwrap_or(spool_next),
            Ordering::Relaxed,
        );
        store
            .events
            .store(store.meta(META_EVENTS)?, Ordering::Relaxed);
        store
            .sightings
            .store(store.meta(META_SEEN)?, Ordering::Relaxed);
        store
            .quarantined
            .store(store.meta(META_QUARANTINED)?, Ordering::Relaxed);
        store
            .ship_rejected
            .store(store.meta(META_SHIP_REJECTED)?, Ordering::Relaxed);
        store
            .evicted
            .store(store.meta(META_EVICTED)?, Ordering::Relaxed);
        let bound = store.read_bound_relays()?;
        *store.relays.lock().unwrap_or_else(|p| p.into_inner()) = bound;
        if !read_only && !store.indexes_ready()? {
            let empty = store
                .db
                .iterator_cf(store.cf(CF_EVENTS), IteratorMode::Start)
                .next()
                .is_none();
            if empty {
                store.mark_indexes_ready()?;
            } else {
                store.build_query_indexes()?;
            }
        }
        Ok(store)
    }

    /// A store written before the query indexes: build them now, with progress in the log.
    fn build_query_indexes(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        tracing::info!("building the query indexes of events stored before them (once; resumes if interrupted)");
        let n = self.build_indexes(|done, total| {
            tracing::info!(
                done,
                total,
                "query indexes: {done} of about {total} events ({}%)",
                (done * 100).checked_div(total).unwrap_or(100).min(100)
            );
        })?;
        tracing::info!(
            events = n,
            secs = started.elapsed().as_secs(),
            "query indexes built"
        );
        Ok(())
    }

    fn read_bound_relays(&self) -> Result<std::collections::HashMap<u32, Box<str>>, StoreError> {
        let mut out = std::collections::HashMap::new();
        let it = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(META_RELAY, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(META_RELAY) else {
                break;
            };
            if let Ok(id) = <[u8; 4]>::try_from(id) {
                out.insert(
                    u32::from_be_bytes(id),
                    String::from_utf8_lossy(&v).into_owned().into_boxed_str(),
                );
            }
        }
        Ok(out)
    }

    /// Every relay id this store refers to, with the URL it was bound to, by id.
    pub fn bound_relays(&self) -> Vec<(u32, String)> {
        let map = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, v)| (*k, v.to_string())).collect();
        out.sort_unstable();
        out
    }

    /// Record, durably, that relay id `id` is `url`, before any sighting or spool record refers
    /// to it (a sync session calls this first). The registry's ids are SQLite rowids: if an
    /// older `state.sqlite` is ever put back, [`crate::store::Stores::open`] restores the ids it
    /// lacks from these bindings, so no id is handed to another URL. Cheap once bound.
    pub fn bind_relay(&self, id: u32, url: &str) -> Result<(), StoreError> {
        let mut map = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            Some(bound) if **bound == *url => return Ok(()),
            Some(bound) => {
                return Err(StoreError::RelayMismatch {
                    id,
                    registry: url.to_string(),
                    events: bound.to_string(),
                })
            }
            None => {}
        }
        if !self.read_only {
            let mut key = META_RELAY.to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            let mut wo = WriteOptions::default();
            wo.set_sync(self.sync_writes);
            self.db
                .put_cf_opt(self.cf(CF_META), key, url.as_bytes(), &wo)?;
        }
        map.insert(id, url.into());
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The handles exist: open() creates every column family in ALL_CFS.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} missing"))
    }

    /// The sequence number at one end (`IteratorMode::Start` or `End`) of a seq-keyed CF.
    fn edge_seq(&self, cf: &str, end: IteratorMode<'_>) -> Result<Option<u64>, StoreError> {
        let mut it = self.db.iterator_cf(self.cf(cf), end);
        Ok(match it.next().transpose()? {
            Some((k, _)) => k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
            None => None,
        })
    }

    fn meta(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), key)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// The stored signature for `id`, if the event is stored. The dedup check: a copy whose
    /// (id, sig) matches is recorded as seen without verifying it again.
    pub fn stored_sig(&self, id: &[u8; 32]) -> Result<Option<[u8; 64]>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_EVENTS), id)?
            .and_then(|v| Event::encoded_sig(&v).and_then(|s| s.try_into().ok())))
    }

    /// The current page generation; read it before looking ids up for [`EventStore::write_page`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn contains(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_EVENTS), id)?.is_some())
    }

    /// Store one page atomically: `events` (verified, or already stored) seen on `relay` at
    /// `seen_at`. `known[i]` says event i was found stored when the caller looked it up, at
    /// generation `observed` ([`EventStore::generation`]). Events not known are re-checked
    /// under the write lock unless no page was committed since `observed`, so two relays
    /// delivering the same new event at once store it once. Returns only after the batch is
    /// durable (see the module invariants).
    pub fn write_page(
        &self,
        relay: u32,
        seen_at: u64,
        events: &[Event],
        known: &[bool],
        observed: Option<u64>,
    ) -> Result<WriteStats, StoreError> {
        if events.is_empty() {
            return Ok(WriteStats::default());
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let lookups_current = observed == Some(self.generation.load(Ordering::Acquire));
        let (cf_events, cf_seen, cf_time) =
            (self.cf(CF_EVENTS), self.cf(CF_SEEN), self.cf(CF_BY_TIME));
        let mut batch = WriteBatch::default();
        let mut stats = WriteStats::default();
        let mut ingest = self.next_ingest.load(Ordering::Relaxed);
        let mut spool = self.next_spool.load(Ordering::Relaxed);
        let mut in_batch: std::collections::HashSet<[u8; 32]> = std::collections::HashSet::new();
        let mut seen_in_batch: std::collections::HashSet<[u8; 32]> =
            std::collections::HashSet::new();
        let mut tally = stats::Tally::default();
        // Keys of the random-order families are collected and put in key order (see
        // `index::PageKeys`); the ingest and spool keys are sequential already.
        let mut bodies: Vec<([u8; 32], Vec<u8>)> = Vec::new();
        let mut times: Vec<[u8; 40]> = Vec::new();
        let mut seen: Vec<[u8; 36]> = Vec::new();
        let mut index_keys = index::PageKeys::default();
        // Replaceable and addressable versions: the latest per key so far (stored, then this
        // page), and the `by_time` keys of the versions a newer one supersedes.
        let mut probe = None;
        let mut page_latest: std::collections::HashMap<Vec<u8>, (u64, [u8; 32])> =
            std::collections::HashMap::new();
        let mut superseded: Vec<[u8; 40]> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let was_known = known.get(i).copied().unwrap_or(false);
            let mut seen_key = [0u8; 36];
            seen_key[..32].copy_from_slice(&ev.id);
            seen_key[32..].copy_from_slice(&relay.to_be_bytes());
            let is_new = !was_known
                && !in_batch.contains(&ev.id)
                && (lookups_current || !self.contains(&ev.id)?);
            if is_new {
                in_batch.insert(ev.id);
                bodies.push((ev.id, ev.encode()));
                let tkey = time_key(ev.created_at, &ev.id);
                times.push(tkey);
                if let Some(p) = index::Prefix::versions(ev) {
                    let current = match page_latest.get(&p) {
                        Some(c) => Some(*c),
                        None => probe
                            .get_or_insert_with(|| self.version_probe())
                            .latest_at(&p)?,
                    };
                    let new = (ev.created_at, ev.id);
                    match current {
                        // NIP-01: the latest created_at, then the lowest id.
                        Some(c)
                            if (c.0, std::cmp::Reverse(c.1))
                                > (new.0, std::cmp::Reverse(new.1)) =>
                        {
                            superseded.push(tkey)
                        }
                        Some(c) => {
                            superseded.push(time_key(c.0, &c.1));
                            page_latest.insert(p, new);
                        }
                        None => {
                            page_latest.insert(p, new);
                        }
                    }
                }
                index_keys.add(ev);
                tally.add(ev, 1);
                batch.put_cf(self.cf(CF_INGEST), ingest.to_be_bytes(), ev.id);
                ingest += 1;
                stats.new_events += 1;
            }
            let new_sighting = seen_in_batch.insert(ev.id)
                && (is_new || self.db.get_pinned_cf(cf_seen, seen_key)?.is_none());
            if new_sighting {
                seen.push(seen_key);
                stats.new_sightings += 1;
                if self.spool {
                    let mut rec = [0u8; 45];
                    rec[0] = if is_new { SPOOL_EVENT } else { SPOOL_SEEN };
                    rec[1..33].copy_from_slice(&ev.id);
                    rec[33..37].copy_from_slice(&relay.to_be_bytes());
                    rec[37..].copy_from_slice(&seen_at.to_be_bytes());
                    batch.put_cf(self.cf(CF_SPOOL), spool.to_be_bytes(), rec);
                    spool += 1;
                }
            }
        }
        if stats.new_sightings == 0 {
            return Ok(stats);
        }
        bodies.sort_unstable_by_key(|b| b.0);
        for (id, body) in &bodies {
            batch.put_cf(cf_events, id, body);
        }
        times.sort_unstable();
        for k in &times {
            batch.put_cf(cf_time, k, []);
        }
        // After the page's own time keys: a version this page wrote and superseded is marked.
        superseded.sort_unstable();
        for k in &superseded {
            batch.put_cf(cf_time, k, index::SUPERSEDED);
        }
        seen.sort_unstable();
        let at = seen_at.to_be_bytes();
        for k in &seen {
            batch.put_cf(cf_seen, k, at);
        }
        self.put_index_sorted(&mut batch, &index_keys);
        if !tally.is_empty() {
            tally.write(self, &mut batch);
        }
        let events_total = self.events.load(Ordering::Relaxed) + stats.new_events;
        let seen_total = self.sightings.load(Ordering::Relaxed) + stats.new_sightings;
        batch.put_cf(self.cf(CF_META), META_EVENTS, events_total.to_be_bytes());
        batch.put_cf(self.cf(CF_META), META_SEEN, seen_total.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(batch, &wo)?;
        self.generation.fetch_add(1, Ordering::Release);
        self.next_ingest.store(ingest, Ordering::Relaxed);
        self.next_spool.store(spool, Ordering::Relaxed);
        self.events.store(events_total, Ordering::Relaxed);
        self.sightings.store(seen_total, Ordering::Relaxed);
        Ok(stats)
    }

    /// Read an event; a corrupt record is quarantined and reported as absent.
    pub fn get(&self, id: &[u8; 32]) -> Result<Option<Event>, StoreError> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_EVENTS), id)? else {
            return Ok(None);
        };
        if raw.first() == Some(&EVICTED_TAG) {
            return Ok(None);
        }
        match Event::decode(*id, &raw) {
            Some(ev) => Ok(Some(ev)),
            None => {
                let raw = raw.to_vec();
                self.quarantine(CF_EVENTS, id, &raw)?;
                Ok(None)
            }
        }
    }

    /// Stored records of many events in one RocksDB `MultiGet` (cheaper per key than one lookup
    /// each), in the order of `ids`, undecoded (the serving path writes their JSON from the
    /// stored bytes); `None` for an absent, evicted or corrupt record (a corrupt one is
    /// quarantined).
    pub fn get_many_encoded(
        &self,
        ids: &[[u8; 32]],
    ) -> Result<Vec<Option<EncodedEvent>>, StoreError> {
        let found = self
            .db
            .batched_multi_get_cf(self.cf(CF_EVENTS), ids.iter(), false);
        let mut out = Vec::with_capacity(ids.len());
        for (id, raw) in ids.iter().zip(found) {
            let Some(raw) = raw? else {
                out.push(None);
                continue;
            };
            if raw.first() == Some(&EVICTED_TAG) {
                out.push(None);
                continue;
            }
            match EncodedEvent::new(*id, raw.to_vec()) {
                Some(ev) => out.push(Some(ev)),
                None => {
                    let raw = raw.to_vec();
                    self.quarantine(CF_EVENTS, id, &raw)?;
                    out.push(None);
                }
            }
        }
        Ok(out)
    }

    fn quarantine(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.read_only {
            tracing::warn!(cf, key = %hex::encode(key), "corrupt record skipped (read-only)");
            return Ok(());
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut qkey = cf.as_bytes().to_vec();
        qkey.push(0);
        qkey.extend_from_slice(key);
        let n = self.quarantined.load(Ordering::Relaxed) + 1;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_QUARANTINE), qkey, value);
        batch.delete_cf(self.cf(cf), key);
        batch.put_cf(self.cf(CF_META), META_QUARANTINED, n.to_be_bytes());
        self.db.write(batch)?;
        self.quarantined.store(n, Ordering::Relaxed);
        tracing::warn!(cf, key = %hex::encode(key), "corrupt record quarantined");
        Ok(())
    }

    /// Visit events with `since <= created_at <= until` in (created_at, id) order, ascending.
    /// The visitor returns false to stop.
    pub fn scan_time(
        &self,
        since: u64,
        until: u64,
        mut visit: impl FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        let mut start = [0u8; 40];
        start[..8].copy_from_slice(&since.to_be_bytes());
        let it = self.db.iterator_cf(
            self.cf(CF_BY_TIME),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in it {
            let (k, _) = item?;
            let Some((ts, id)) = split_time_key(&k) else {
                continue;
            };
            if ts > until {
                break;
            }
            if let Some(ev) = self.get(&id)? {
                if !visit(ev) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ingest-log entries after `watermark` (exclusive; `None` = from the start), at most `max`.
    /// Returns (seq, id) pairs in order.
    pub fn ingest_after(
        &self,
        watermark: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let start = watermark.map_or(0, |w| w + 1);
        let it = self.db.iterator_cf(
            self.cf(CF_INGEST),
            IteratorMode::From(&start.to_be_bytes(), Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it.take(max) {
            let (k, v) = item?;
            let (Some(seq), Ok(id)) = (
                k.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                <[u8; 32]>::try_from(v.as_ref()),
            ) else {
                continue;
            };
            out.push((seq, id));
        }
        Ok(out)
    }

    /// Delete the ingest log below `watermark` (entries the Finder has read and committed). The
    /// entry at the watermark stays: the next sequence number is recovered from the last key
    /// at open, and must stay above the watermark.
    pub fn trim_ingest(&self, watermark: u64) -> Result<(), StoreError> {
        if watermark == 0 || self.read_only {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_INGEST),
            0u64.to_be_bytes(),
            watermark.to_be_bytes(),
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// Relays (by registry id) an event was seen on, with the first time it was seen there.
    pub fn sightings(&self, id: &[u8; 32]) -> Result<Vec<(u32, u64)>, StoreError> {
        let it = self
            .db
            .iterator_cf(self.cf(CF_SEEN), IteratorMode::From(id, Direction::Forward));
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if k.len() != 36 || &k[..32] != id {
                break;
            }
            let relay = u32::from_be_bytes([k[32], k[33], k[34], k[35]]);
            let at = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            out.push((relay, at));
        }
        Ok(out)
    }

    /// The oldest `max` spool records: (seq, record). The shipper reads these.
    pub fn spool_peek(&self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        // Start at the head: acked entries are range tombstones an iterator from the start
        // would have to skip.
        let head = self.spool_head.load(Ordering::Relaxed);
        let it = self.db.iterator_cf(
            self.cf(CF_SPOOL),
            IteratorMode::From(&head.to_be_bytes(), Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it.take(max) {
            let (k, v) = item?;
            if let Some(seq) = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            {
                out.push((seq, v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Remove spool records up to and including `through`: only after the archive committed them.
    pub fn spool_ack(&self, through: u64) -> Result<(), StoreError> {
        self.spool_settle(&[], Some(through))
    }

    /// After a batch committed upstream: set the entries the archive cannot take aside
    /// (quarantine, with the reason, counted) and remove every entry up to and including
    /// `through`, in ONE atomic write (a crash never counts a rejection twice).
    pub fn spool_settle(
        &self,
        rejected: &[(u64, Vec<u8>, String)],
        through: Option<u64>,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.spool_head.load(Ordering::Relaxed);
        let through = through.filter(|t| *t >= head);
        if rejected.is_empty() && through.is_none() {
            return Ok(());
        }
        let n = self.ship_rejected.load(Ordering::Relaxed) + rejected.len() as u64;
        let mut batch = WriteBatch::default();
        for (seq, rec, reason) in rejected {
            // Done with shipping too: kept as long as shipped events, then evicted (an event
            // that can never ship must not pin its blob file forever).
            if let Some(key) = shipped_key(rec).filter(|_| self.track_shipped) {
                batch.put_cf(self.cf(CF_SHIPPED), key, []);
            }
            let mut qkey = CF_SPOOL.as_bytes().to_vec();
            qkey.push(0);
            qkey.extend_from_slice(&seq.to_be_bytes());
            // Sequence numbers restart at 0 once the spool is empty and the node restarts: the
            // time keeps an earlier rejection under the same number.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            qkey.extend_from_slice(&nanos.to_be_bytes());
            let mut value = rec.clone();
            value.extend_from_slice(reason.as_bytes());
            batch.put_cf(self.cf(CF_QUARANTINE), qkey, value);
        }
        if !rejected.is_empty() {
            batch.put_cf(self.cf(CF_META), META_SHIP_REJECTED, n.to_be_bytes());
        }
        if let Some(t) = through.filter(|_| self.track_shipped) {
            // The events these entries carried are shipped: retention may evict them now.
            let it = self.db.iterator_cf(
                self.cf(CF_SPOOL),
                IteratorMode::From(&head.to_be_bytes(), Direction::Forward),
            );
            for item in it {
                let (k, rec) = item?;
                match k
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                {
                    Some(seq) if seq <= t => {}
                    _ => break,
                }
                if let Some(key) = shipped_key(&rec) {
                    batch.put_cf(self.cf(CF_SHIPPED), key, []);
                }
            }
        }
        if let Some(t) = through {
            batch.delete_range_cf(self.cf(CF_SPOOL), head.to_be_bytes(), (t + 1).to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(batch, &wo)?;
        self.ship_rejected.store(n, Ordering::Relaxed);
        if let Some(t) = through {
            self.spool_head.store(t + 1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queue everything already stored for shipping: every event once (`E`) and each further
    /// relay it was seen on (`S`), as if it had just been synced. For a node that ran without
    /// `[upstream]` before (its history never entered the spool). Written in chunks of
    /// `chunk` entries; replays are harmless upstream. Returns the entries added.
    pub fn spool_backfill(&self, chunk: usize) -> Result<u64, StoreError> {
        let mut added = 0u64;
        let mut last_id: Option<[u8; 32]> = None;
        let mut from: Vec<u8> = Vec::new();
        loop {
            let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = self.next_spool.load(Ordering::Relaxed);
            let mut batch = WriteBatch::default();
            let mut n = 0usize;
            let mut resume = None;
            let it = self.db.iterator_cf(
                self.cf(CF_SEEN),
                IteratorMode::From(&from, Direction::Forward),
            );
            for item in it {
                let (k, v) = item?;
                if k.as_ref() == from.as_slice() {
                    continue; // the last key of the previous chunk
                }
                if n >= chunk {
                    resume = Some(k.to_vec());
                    break;
                }
                let (Ok(id), Some(at)) = (
                    <[u8; 32]>::try_from(&k[..k.len().min(32)]),
                    v.as_ref().try_into().ok().map(u64::from_be_bytes),
                ) else {
                    continue;
                };
                let Some(relay) = k.get(32..36) else {
                    continue;
                };
                let mut rec = [0u8; 45];
                rec[0] = if last_id == Some(id) {
                    SPOOL_SEEN
                } else {
                    SPOOL_EVENT
                };
                rec[1..33].copy_from_slice(&id);
                rec[33..37].copy_from_slice(relay);
                rec[37..].copy_from_slice(&at.to_be_bytes());
                batch.put_cf(self.cf(CF_SPOOL), next.to_be_bytes(), rec);
                next += 1;
                n += 1;
                last_id = Some(id);
                from = k.to_vec();
            }
            if n > 0 {
                let mut wo = WriteOptions::default();
                wo.set_sync(self.sync_writes);
                self.db.write_opt(batch, &wo)?;
                self.next_spool.store(next, Ordering::Relaxed);
                added += n as u64;
            }
            match resume {
                Some(_) => continue,
                None => return Ok(added),
            }
        }
    }

    /// Put every entry the archive refused back into the spool (after the operator fixed the
    /// cause: a constraint, a trigger, the database encoding). Returns how many. Entries the
    /// archive can still not take are simply set aside again by the next batch.
    pub fn spool_requeue_rejected(&self) -> Result<u64, StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut prefix = CF_SPOOL.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = WriteBatch::default();
        let mut next = self.next_spool.load(Ordering::Relaxed);
        let mut n = 0u64;
        let it = self.db.iterator_cf(
            self.cf(CF_QUARANTINE),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(rec) = v.get(..45) {
                batch.put_cf(self.cf(CF_SPOOL), next.to_be_bytes(), rec);
                next += 1;
                n += 1;
            }
            batch.delete_cf(self.cf(CF_QUARANTINE), &k);
        }
        if n == 0 {
            return Ok(0);
        }
        let left = self.ship_rejected.load(Ordering::Relaxed).saturating_sub(n);
        batch.put_cf(self.cf(CF_META), META_SHIP_REJECTED, left.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(batch, &wo)?;
        self.next_spool.store(next, Ordering::Relaxed);
        self.ship_rejected.store(left, Ordering::Relaxed);
        Ok(n)
    }

    /// Retention for a node that ships upstream: replace the bodies of up to `max` shipped
    /// events, oldest stored first, that were stored at or before `before` (unix seconds) by a
    /// 65-byte record (a tag and the signature), in ONE atomic write. What dedup needs stays:
    /// the id is still known (a copy arriving again is a sighting, not a new event), and so is
    /// every sighting. An event not yet acked by the archive is never in the shipped queue, so
    /// it is never evicted. Returns (events evicted, body bytes freed before compression).
    pub fn evict_shipped(&self, before: u64, max: usize) -> Result<(u64, u64), StoreError> {
        if self.read_only || max == 0 {
            return Ok((0, 0));
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let (mut n, mut freed) = (0u64, 0u64);
        let mut tally = stats::Tally::default();
        let it = self
            .db
            .iterator_cf(self.cf(CF_SHIPPED), IteratorMode::Start);
        for item in it.take(max) {
            let (k, _) = item?;
            let (Some(at), Ok(id)) = (
                k.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                <[u8; 32]>::try_from(k.get(8..).unwrap_or_default()),
            ) else {
                batch.delete_cf(self.cf(CF_SHIPPED), &k);
                continue;
            };
            if at > before {
                break;
            }
            batch.delete_cf(self.cf(CF_SHIPPED), &k);
            let Some(raw) = self.db.get_pinned_cf(self.cf(CF_EVENTS), id)? else {
                continue;
            };
            // Already evicted, or corrupt (quarantined when read): nothing to do.
            let (Some(sig), Some(created_at)) =
                (Event::encoded_sig(&raw), Event::encoded_created_at(&raw))
            else {
                continue;
            };
            let mut kept = [0u8; 65];
            kept[0] = EVICTED_TAG;
            kept[1..].copy_from_slice(sig);
            let tkey = time_key(created_at, &id);
            batch.put_cf(self.cf(CF_EVENTS), id, kept);
            batch.delete_cf(self.cf(CF_BY_TIME), tkey);
            if let Some(ev) = Event::decode(id, &raw) {
                self.delete_index(&mut batch, &ev);
                tally.add(&ev, -1);
            }
            freed += raw.len() as u64;
            n += 1;
        }
        if batch.is_empty() {
            return Ok((0, 0));
        }
        if !tally.is_empty() {
            tally.write(self, &mut batch);
        }
        let total = self.evicted.load(Ordering::Relaxed) + n;
        batch.put_cf(self.cf(CF_META), META_EVICTED, total.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(batch, &wo)?;
        self.evicted.store(total, Ordering::Relaxed);
        Ok((n, freed))
    }

    /// Seen-at time of the oldest spool entry (how far shipping lags), if any.
    pub fn spool_oldest_seen_at(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .spool_peek(1)?
            .first()
            .and_then(|(_, rec)| rec.get(37..45))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes))
    }

    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            events: self.events.load(Ordering::Relaxed),
            sightings: self.sightings.load(Ordering::Relaxed),
            spool_depth: self
                .next_spool
                .load(Ordering::Relaxed)
                .saturating_sub(self.spool_head.load(Ordering::Relaxed)),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            ship_rejected: self.ship_rejected.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Flush and compact everything now (tests: what retention frees shows on disk at once).
    #[cfg(test)]
    pub fn compact_all(&self) -> Result<(), StoreError> {
        self.flush()?;
        for name in ALL_CFS {
            self.db
                .compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Bytes on disk per column family (SST files, and blob files for `events`), for
    /// benchmarks and diagnostics; memtables not yet flushed are not counted.
    pub fn disk_bytes_per_cf(&self) -> Vec<(&'static str, u64)> {
        ALL_CFS
            .iter()
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                let prop = |p: &str| {
                    self.db
                        .property_int_value_cf(&cf, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                Some((
                    *name,
                    prop("rocksdb.total-sst-files-size") + prop("rocksdb.total-blob-file-size"),
                ))
            })
            .collect()
    }

    /// Flush memtables (clean shutdown; the WAL already makes every write durable).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }
}

/// The `shipped` queue key (seen_at, id) for a spool record that carried an event (`E`).
fn shipped_key(rec: &[u8]) -> Option<[u8; 40]> {
    if rec.len() != 45 || rec[0] != SPOOL_EVENT {
        return None;
    }
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&rec[37..45]);
    key[8..].copy_from_slice(&rec[1..33]);
    Some(key)
}

/// The `by_time` key: created_at (u64 BE) + id.
fn time_key(created_at: u64, id: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&created_at.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

fn split_time_key(k: &[u8]) -> Option<(u64, [u8; 32])> {
    if k.len() != 40 {
        return None;
    }
    let ts = u64::from_be_bytes(k[..8].try_into().ok()?);
    let id: [u8; 32] = k[8..].try_into().ok()?;
    Some((ts, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u8, created_at: u64) -> Event {
        Event {
            id: [n; 32],
            pubkey: [9; 32],
            created_at,
            kind: 1,
            tags: vec![vec!["t".into(), format!("{n}")]],
            content: format!("event {n}"),
            sig: [n; 64],
        }
    }

    fn open(dir: &Path, spool: bool) -> EventStore {
        EventStore::open(
            dir,
            &EventStoreOptions {
                spool,
                ..EventStoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn dedup_sightings_and_counters_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path(), true);
            let st = s
                .write_page(1, 100, &[ev(1, 10), ev(2, 20), ev(1, 10)], &[], None)
                .unwrap();
            assert_eq!(
                st,
                WriteStats {
                    new_events: 2,
                    new_sightings: 2
                }
            );
            let st = s.write_page(2, 200, &[ev(1, 10)], &[], None).unwrap();
            assert_eq!(
                st,
                WriteStats {
                    new_events: 0,
                    new_sightings: 1
                }
            );
            let st = s.write_page(2, 300, &[ev(1, 10)], &[], None).unwrap();
            assert_eq!(st, WriteStats::default());
            assert_eq!(s.sightings(&[1; 32]).unwrap(), vec![(1, 100), (2, 200)]);
            assert_eq!(s.stored_sig(&[2; 32]).unwrap(), Some([2; 64]));
            assert_eq!(s.stored_sig(&[3; 32]).unwrap(), None);
        }
        let s = open(dir.path(), true);
        let c = s.counters();
        assert_eq!((c.events, c.sightings, c.spool_depth), (2, 3, 3));
        assert_eq!(s.get(&[2; 32]).unwrap(), Some(ev(2, 20)));
        // The ingest log continues after reopen instead of overwriting.
        s.write_page(1, 400, &[ev(3, 5)], &[], None).unwrap();
        let log = s.ingest_after(None, 10).unwrap();
        assert_eq!(
            log.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(log[2].1, [3; 32]);
        assert_eq!(s.ingest_after(Some(1), 10).unwrap().len(), 1);
    }

    #[test]
    fn stale_lookups_are_rechecked_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), false);
        // Two relays looked event 1 up before either stored it.
        let seen_by_both = s.generation();
        let a = s
            .write_page(1, 10, &[ev(1, 5)], &[false], Some(seen_by_both))
            .unwrap();
        let b = s
            .write_page(2, 11, &[ev(1, 5)], &[false], Some(seen_by_both))
            .unwrap();
        assert_eq!(a.new_events, 1);
        assert_eq!(
            b,
            WriteStats {
                new_events: 0,
                new_sightings: 1
            },
            "stored once, seen twice"
        );
        assert_eq!(s.counters().events, 1);
        // A current generation lets a genuinely new event skip the re-check and still be stored.
        let now = s.generation();
        let c = s
            .write_page(1, 12, &[ev(2, 6)], &[false], Some(now))
            .unwrap();
        assert_eq!(c.new_events, 1);
        assert_eq!(s.ingest_after(None, 10).unwrap().len(), 2);
    }

    #[test]
    fn time_scan_is_ordered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), false);
        s.write_page(
            1,
            1,
            &[ev(5, 30), ev(4, 10), ev(6, 20), ev(7, 20)],
            &[],
            None,
        )
        .unwrap();
        let mut seen = Vec::new();
        s.scan_time(15, 25, |e| {
            seen.push((e.created_at, e.id[0]));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(20, 6), (20, 7)]);
        assert_eq!(s.counters().spool_depth, 0, "spool disabled writes nothing");
    }

    #[test]
    fn spool_entries_are_written_with_the_event_and_acked_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), true);
        s.write_page(1, 50, &[ev(1, 10), ev(2, 11)], &[], None)
            .unwrap();
        s.write_page(2, 60, &[ev(1, 10)], &[], None).unwrap();
        let recs = s.spool_peek(10).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].1[0], SPOOL_EVENT);
        assert_eq!(recs[2].1[0], SPOOL_SEEN);
        assert_eq!(&recs[2].1[1..33], &[1u8; 32]);
        s.spool_ack(recs[1].0).unwrap();
        assert_eq!(s.counters().spool_depth, 1);
        assert_eq!(s.spool_peek(10).unwrap()[0].0, recs[2].0);
        drop(s);
        let s = open(dir.path(), true);
        assert_eq!(s.counters().spool_depth, 1, "depth recovered at open");
    }

    #[test]
    fn settle_sets_rejected_aside_and_acks_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), true);
        s.write_page(1, 50, &[ev(1, 10), ev(2, 11), ev(3, 12)], &[], None)
            .unwrap();
        let recs = s.spool_peek(10).unwrap();
        let rejected = vec![(recs[1].0, recs[1].1.clone(), "refused".to_string())];
        s.spool_settle(&rejected, Some(recs[1].0)).unwrap();
        let c = s.counters();
        assert_eq!((c.spool_depth, c.ship_rejected), (1, 1));
        assert_eq!(s.spool_oldest_seen_at().unwrap(), Some(50));
        // Settling an already acked range again changes nothing.
        s.spool_settle(&[], Some(recs[0].0)).unwrap();
        assert_eq!(s.counters().spool_depth, 1);
        drop(s);
        let s = open(dir.path(), true);
        let c = s.counters();
        assert_eq!(
            (c.spool_depth, c.ship_rejected),
            (1, 1),
            "both survive a reopen"
        );
        let q: Vec<_> =
            s.db.iterator_cf(s.cf(CF_QUARANTINE), IteratorMode::Start)
                .map(|kv| kv.unwrap().1.to_vec())
                .collect();
        assert_eq!(q.len(), 1);
        assert!(
            q[0].ends_with(b"refused"),
            "the reason is kept with the record"
        );
        s.spool_ack(recs[2].0).unwrap();
        assert_eq!(s.spool_oldest_seen_at().unwrap(), None);
        // Requeued: back in the spool with its original record, no longer counted as rejected.
        assert_eq!(s.spool_requeue_rejected().unwrap(), 1);
        let c = s.counters();
        assert_eq!((c.spool_depth, c.ship_rejected), (1, 0));
        assert_eq!(s.spool_peek(10).unwrap()[0].1, recs[1].1);
        assert_eq!(
            s.spool_requeue_rejected().unwrap(),
            0,
            "nothing left to requeue"
        );
    }

    #[test]
    fn backfill_queues_every_event_once_and_every_other_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), false);
        s.write_page(1, 50, &[ev(1, 10), ev(2, 11), ev(3, 12)], &[], None)
            .unwrap();
        s.write_page(2, 60, &[ev(2, 11)], &[], None).unwrap();
        assert_eq!(s.counters().spool_depth, 0, "spool off");
        // A chunk of 2 makes it resume mid-way (and mid-event) twice.
        assert_eq!(s.spool_backfill(2).unwrap(), 4);
        let recs = s.spool_peek(10).unwrap();
        let got: Vec<(u8, u8, u32, u64)> = recs
            .iter()
            .map(|(_, r)| {
                (
                    r[0],
                    r[1],
                    u32::from_be_bytes(r[33..37].try_into().unwrap()),
                    u64::from_be_bytes(r[37..45].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (SPOOL_EVENT, 1, 1, 50),
                (SPOOL_EVENT, 2, 1, 50),
                (SPOOL_SEEN, 2, 2, 60),
                (SPOOL_EVENT, 3, 1, 50)
            ]
        );
    }

    #[test]
    fn corrupt_record_is_quarantined_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), false);
        s.write_page(1, 1, &[ev(1, 10)], &[], None).unwrap();
        s.db.put_cf(s.cf(CF_EVENTS), [1u8; 32], b"garbage").unwrap();
        assert_eq!(s.get(&[1; 32]).unwrap(), None);
        assert_eq!(s.counters().quarantined, 1);
        let mut n = 0;
        s.scan_time(0, u64::MAX, |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 0);
    }
}
