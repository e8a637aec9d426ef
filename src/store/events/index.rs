//! Query indexes of the event store: every NIP-01 filter field is a range scan, newest first.
//!
//! Column family `index`, values empty, keys ending in `created_at (u64 BE) + id (32)` so one
//! prefix holds one index entry per event in (created_at, id) order:
//! - `a` pubkey(32)                        by author
//! - `k` kind(u16)                         by kind
//! - `c` pubkey(32) kind(u16)              by author and kind (also: latest replaceable version)
//! - `t` letter(1) value                   by single-letter tag (`#e`, `#p`, `#t`, `#d`, ...)
//! - `d` pubkey(32) kind(u16) value        addressable events (30000-39999) by `d` tag: latest
//!   version
//!
//! A tag `value` is encoded self-delimiting, so no value's key is a prefix of another's:
//! `0x00` + 32 bytes for 64 lowercase hex characters (ids and pubkeys, most tags); `0x01` +
//! len(u8) + bytes for other values up to 200 bytes; `0x02` + SHA-256 for longer ones. Every
//! candidate is matched against the whole filter after it is read, so a hashed value can never
//! return a wrong event. The `by_time` column family is the index for filters without any of
//! these fields.
//!
//! Entries are written in the same `WriteBatch` as the event ([`EventStore::write_page`]) and
//! removed with its body ([`EventStore::evict_shipped`]). A store from before the indexes builds
//! them at its first writer open, resumably ([`EventStore::build_indexes`]).

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use sha2::{Digest, Sha256};

use super::{EventStore, StoreError, CF_BY_TIME, CF_EVENTS, CF_META};
use crate::protocol::event::{decode_hex, EncodedEvent};
use crate::protocol::Event;

pub(super) const CF_INDEX: &str = "index";
/// meta: the index layout the store's entries are complete for (absent = none built).
const META_INDEX_VERSION: &[u8] = b"index_version";
/// meta: while building, the last event id whose entries are written (the resume point).
const META_INDEX_RESUME: &[u8] = b"index_resume";
/// 1: the query indexes; 2: and the event statistics ([`super::stats`]), counted in the same
/// pass (a store at 1 re-puts its index entries, which changes nothing, and counts).
const INDEX_VERSION: u64 = 2;
/// Events per atomic step while building (and between progress reports).
const BUILD_CHUNK: usize = 20_000;

const P_AUTHOR: u8 = b'a';
const P_KIND: u8 = b'k';
const P_AUTHOR_KIND: u8 = b'c';
const P_TAG: u8 = b't';
const P_ADDRESS: u8 = b'd';

/// The `by_time` value of a replaceable or addressable version that a newer stored version
/// superseded (set in the same write as the newer one, never cleared: versions are only ever
/// added). The time scan skips these without reading their bodies. Other entries are empty.
pub(super) const SUPERSEDED: &[u8] = &[1];

/// Longest tag value kept verbatim in a key; longer ones are hashed.
const MAX_RAW_VALUE: usize = 200;

/// NIP-01: kinds of which a relay keeps only the latest event per (pubkey, kind).
pub fn is_replaceable(kind: u16) -> bool {
    kind == 0 || kind == 3 || (10_000..20_000).contains(&kind)
}

/// NIP-01: kinds of which a relay keeps only the latest event per (pubkey, kind, `d` tag).
pub fn is_addressable(kind: u16) -> bool {
    (30_000..40_000).contains(&kind)
}

/// Append the self-delimiting encoding of a tag value (see the module docs).
pub fn push_tag_value(out: &mut Vec<u8>, value: &str) {
    if let Some(raw) =
        decode_hex::<32>(value).filter(|_| value.bytes().all(|b| !b.is_ascii_uppercase()))
    {
        out.push(0);
        out.extend_from_slice(&raw);
    } else if value.len() <= MAX_RAW_VALUE {
        out.push(1);
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(2);
        out.extend_from_slice(&Sha256::digest(value.as_bytes()));
    }
}

/// Index key prefixes (everything before created_at + id) for one filter field value.
pub struct Prefix;

/// The key layouts, each appended to a buffer: the one place they are spelled out, shared by
/// the writes ([`for_each_key`], one reused buffer per event) and the scans ([`Prefix`]).
fn push_author(k: &mut Vec<u8>, pubkey: &[u8; 32]) {
    k.push(P_AUTHOR);
    k.extend_from_slice(pubkey);
}

fn push_kind(k: &mut Vec<u8>, kind: u16) {
    k.push(P_KIND);
    k.extend_from_slice(&kind.to_be_bytes());
}

fn push_author_kind(k: &mut Vec<u8>, pubkey: &[u8; 32], kind: u16) {
    k.push(P_AUTHOR_KIND);
    k.extend_from_slice(pubkey);
    k.extend_from_slice(&kind.to_be_bytes());
}

fn push_tag(k: &mut Vec<u8>, letter: u8, value: &str) {
    k.push(P_TAG);
    k.push(letter);
    push_tag_value(k, value);
}

fn push_address(k: &mut Vec<u8>, pubkey: &[u8; 32], kind: u16, d: &str) {
    k.push(P_ADDRESS);
    k.extend_from_slice(pubkey);
    k.extend_from_slice(&kind.to_be_bytes());
    push_tag_value(k, d);
}

fn built(capacity: usize, push: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut k = Vec::with_capacity(capacity);
    push(&mut k);
    k
}

impl Prefix {
    pub fn author(pubkey: &[u8; 32]) -> Vec<u8> {
        built(33, |k| push_author(k, pubkey))
    }

    pub fn kind(kind: u16) -> Vec<u8> {
        built(3, |k| push_kind(k, kind))
    }

    pub fn author_kind(pubkey: &[u8; 32], kind: u16) -> Vec<u8> {
        built(35, |k| push_author_kind(k, pubkey, kind))
    }

    pub fn tag(letter: u8, value: &str) -> Vec<u8> {
        built(36, |k| push_tag(k, letter, value))
    }

    fn address(pubkey: &[u8; 32], kind: u16, d: &str) -> Vec<u8> {
        built(70, |k| push_address(k, pubkey, kind, d))
    }

    /// Where the versions of a replaceable or addressable event are indexed; `None` for the
    /// other kinds (every event is its own).
    pub fn versions(ev: &Event) -> Option<Vec<u8>> {
        if is_replaceable(ev.kind) {
            Some(Self::author_kind(&ev.pubkey, ev.kind))
        } else if is_addressable(ev.kind) {
            Some(Self::address(&ev.pubkey, ev.kind, d_tag(ev)))
        } else {
            None
        }
    }

    /// [`Prefix::versions`] of a stored record (its tags are parsed only for an addressable
    /// kind); `None` also when they are corrupt.
    pub fn versions_encoded(ev: &EncodedEvent) -> Option<Option<Vec<u8>>> {
        let kind = ev.kind();
        if is_replaceable(kind) {
            Some(Some(Self::author_kind(ev.pubkey(), kind)))
        } else if is_addressable(kind) {
            let tags = ev.tags()?;
            Some(Some(Self::address(ev.pubkey(), kind, first_d(&tags))))
        } else {
            Some(None)
        }
    }
}

/// The first `d` tag's value ("" when there is none), as NIP-01 addresses events by it.
fn d_tag(ev: &Event) -> &str {
    first_d(&ev.tags)
}

fn first_d(tags: &[Vec<String>]) -> &str {
    tags.iter()
        .find(|t| t.first().map(String::as_str) == Some("d"))
        .and_then(|t| t.get(1))
        .map_or("", String::as_str)
}

/// Visit every index key of one event (tags deduplicated: an event listing the same `p` twice
/// has one entry for it). One buffer is reused for all keys: this runs for every stored event.
pub(super) fn for_each_key(ev: &Event, mut visit: impl FnMut(&[u8])) {
    let mut tail = [0u8; 40];
    tail[..8].copy_from_slice(&ev.created_at.to_be_bytes());
    tail[8..].copy_from_slice(&ev.id);
    let mut key = Vec::with_capacity(128);
    let emit = |key: &mut Vec<u8>, visit: &mut dyn FnMut(&[u8])| {
        key.extend_from_slice(&tail);
        visit(key);
        key.clear();
    };
    push_author(&mut key, &ev.pubkey);
    emit(&mut key, &mut visit);
    push_kind(&mut key, ev.kind);
    emit(&mut key, &mut visit);
    push_author_kind(&mut key, &ev.pubkey, ev.kind);
    emit(&mut key, &mut visit);
    if is_addressable(ev.kind) {
        push_address(&mut key, &ev.pubkey, ev.kind, d_tag(ev));
        emit(&mut key, &mut visit);
    }
    let mut tags: Vec<(u8, &str)> = ev
        .tags
        .iter()
        .filter_map(|t| match (t.first().map(String::as_bytes), t.get(1)) {
            (Some([letter]), Some(v)) if letter.is_ascii_alphabetic() => {
                Some((*letter, v.as_str()))
            }
            _ => None,
        })
        .collect();
    if tags.len() > 1 {
        tags.sort_unstable();
        tags.dedup();
    }
    for (letter, value) in tags {
        push_tag(&mut key, letter, value);
        emit(&mut key, &mut visit);
    }
}

/// The index keys of a page's new events, collected so they can be put in key order: the
/// memtable's skip list inserts a run of ascending keys near where the last one went, while
/// the same keys in arrival order (random authors, tags) each cost a descent through the list
/// with its cache misses.
#[derive(Default)]
pub(super) struct PageKeys {
    bytes: Vec<u8>,
    /// (start, end) of each key in `bytes`.
    spans: Vec<(usize, usize)>,
}

impl PageKeys {
    pub(super) fn add(&mut self, ev: &Event) {
        for_each_key(ev, |key| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(key);
            self.spans.push((start, self.bytes.len()));
        });
    }

    /// Visit the keys in ascending order.
    pub(super) fn sorted(&self, mut visit: impl FnMut(&[u8])) {
        let mut order: Vec<&[u8]> = self.spans.iter().map(|&(a, b)| &self.bytes[a..b]).collect();
        order.sort_unstable();
        for key in order {
            visit(key);
        }
    }
}

/// (created_at, id) from the last 40 bytes of an index key with the given prefix length.
fn split_tail(key: &[u8], prefix_len: usize) -> Option<(u64, [u8; 32])> {
    if key.len() != prefix_len + 40 {
        return None;
    }
    let ts = u64::from_be_bytes(key[prefix_len..prefix_len + 8].try_into().ok()?);
    let id: [u8; 32] = key[prefix_len + 8..].try_into().ok()?;
    Some((ts, id))
}

/// One index range, read newest first, one second at a time with the second's ids in
/// ascending order (NIP-01: ties by id, lowest first). Memory: the ids of one second.
pub struct IndexScan<'a> {
    it: rocksdb::DBRawIteratorWithThreadMode<'a, rocksdb::DB>,
    prefix: Vec<u8>,
    since: u64,
    /// Entries at `skip_at` with ids up to `skip_to` (inclusive) are skipped: a keyset cursor.
    after: Option<(u64, [u8; 32])>,
    second: Vec<[u8; 32]>,
    second_at: u64,
    done: bool,
    /// Skip `by_time` entries marked superseded ([`SUPERSEDED`]).
    skip_superseded: bool,
    /// Keys read from RocksDB so far (what a time budget is charged for).
    pub read: u64,
}

impl<'a> IndexScan<'a> {
    /// Leave out the versions of replaceable and addressable events that a newer stored
    /// version superseded when it was written (only the `by_time` scan knows them; every
    /// answer still checks the latest version of what it returns).
    pub fn without_superseded(mut self) -> Self {
        self.skip_superseded = self.prefix.is_empty();
        self
    }

    /// Ids of the current second not returned yet, the next one last: what a reader can fetch
    /// ahead in one batch.
    pub fn pending(&self) -> &[[u8; 32]] {
        &self.second
    }

    pub fn next_entry(&mut self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        loop {
            if let Some(id) = self.second.pop() {
                return Ok(Some((self.second_at, id)));
            }
            if self.done {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Read the next (older) second into `second`, highest id first (popped lowest first).
    fn fill(&mut self) -> Result<(), StoreError> {
        let mut at = None;
        loop {
            if !self.it.valid() {
                self.it.status()?;
                self.done = true;
                break;
            }
            let Some(key) = self.it.key() else {
                self.done = true;
                break;
            };
            if !key.starts_with(&self.prefix) {
                self.done = true;
                break;
            }
            self.read += 1;
            let Some((ts, id)) = split_tail(key, self.prefix.len()) else {
                // A longer prefix sharing this one (cannot happen with self-delimiting keys).
                self.it.prev();
                continue;
            };
            if ts < self.since {
                self.done = true;
                break;
            }
            match at {
                None => at = Some(ts),
                Some(a) if a != ts => break,
                _ => {}
            }
            let skipped = self.after.is_some_and(|(c, cid)| ts == c && id <= cid)
                || (self.skip_superseded && self.it.value() == Some(SUPERSEDED));
            if !skipped {
                self.second.push(id);
            }
            self.it.prev();
        }
        // Read in descending id order, so pop() yields the second's lowest id first.
        if let Some(a) = at {
            self.second_at = a;
        }
        Ok(())
    }
}

/// Finds the latest version of replaceable and addressable keys with one RocksDB iterator,
/// made at the first question and re-seeked for the next ones: making an iterator (a merging
/// iterator over every memtable and level) costs several times a seek, and a time scan over
/// profiles and lists asks once per key. The iterator reads the store as it was when made, as
/// the scans of the same query do.
pub struct VersionProbe<'a> {
    store: &'a EventStore,
    it: Option<rocksdb::DBRawIteratorWithThreadMode<'a, rocksdb::DB>>,
}

impl VersionProbe<'_> {
    /// The newest version indexed under `prefix` ([`Prefix::versions`]): the latest
    /// `created_at`, and at it the lowest id (NIP-01).
    pub fn latest(&mut self, prefix: &[u8]) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.latest_at(prefix)?.map(|(_, id)| id))
    }

    /// [`VersionProbe::latest`] with its `created_at`.
    pub fn latest_at(&mut self, prefix: &[u8]) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let store = self.store;
        let it = self
            .it
            .get_or_insert_with(|| store.db.raw_iterator_cf(store.cf(CF_INDEX)));
        let mut seek = Vec::with_capacity(prefix.len() + 40);
        seek.extend_from_slice(prefix);
        seek.extend_from_slice(&[0xff; 40]);
        it.seek_for_prev(&seek);
        // Walking back through the newest second: the last id read there is its lowest.
        let mut found: Option<(u64, [u8; 32])> = None;
        while let Some(key) = it.key().filter(|k| k.starts_with(prefix)) {
            let Some((ts, id)) = split_tail(key, prefix.len()) else {
                it.prev();
                continue;
            };
            if found.is_some_and(|(at, _)| at != ts) {
                break;
            }
            found = Some((ts, id));
            it.prev();
        }
        it.status()?;
        Ok(found)
    }
}

impl EventStore {
    /// Scan one index prefix (`None`: the `by_time` index of every event) over
    /// `since..=until`, newest first; `after` resumes behind a keyset cursor.
    pub fn index_scan(
        &self,
        prefix: Option<Vec<u8>>,
        since: u64,
        until: u64,
        after: Option<(u64, [u8; 32])>,
    ) -> IndexScan<'_> {
        let (cf, prefix) = match prefix {
            Some(p) => (CF_INDEX, p),
            None => (CF_BY_TIME, Vec::new()),
        };
        let until = after.map_or(until, |(c, _)| until.min(c));
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        let mut seek = prefix.clone();
        seek.extend_from_slice(&until.to_be_bytes());
        seek.extend_from_slice(&[0xff; 32]);
        it.seek_for_prev(&seek);
        IndexScan {
            it,
            prefix,
            since,
            after,
            second: Vec::new(),
            second_at: 0,
            skip_superseded: false,
            done: since > until,
            read: 0,
        }
    }

    /// The newest version of the replaceable or addressable event indexed under `prefix`
    /// ([`Prefix::versions`]): the latest `created_at`, and at it the lowest id (NIP-01).
    pub fn latest_version(&self, prefix: &[u8]) -> Result<Option<[u8; 32]>, StoreError> {
        self.version_probe().latest(prefix)
    }

    /// A [`VersionProbe`]: for a reader that asks [`EventStore::latest_version`] many times.
    pub fn version_probe(&self) -> VersionProbe<'_> {
        VersionProbe {
            store: self,
            it: None,
        }
    }

    /// True unless `ev` is a replaceable or addressable event with a newer version stored.
    pub fn is_latest(&self, ev: &Event) -> Result<bool, StoreError> {
        match Prefix::versions(ev) {
            None => Ok(true),
            Some(p) => Ok(self.latest_version(&p)?.is_none_or(|id| id == ev.id)),
        }
    }

    /// `created_at` of a stored event whose body is still here (not evicted, not corrupt).
    pub fn stored_created_at(&self, id: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_EVENTS), id)?
            .and_then(|raw| Event::encoded_created_at(&raw)))
    }

    /// Put a page's index keys in key order (see [`PageKeys`]).
    pub(super) fn put_index_sorted(&self, batch: &mut WriteBatch, keys: &PageKeys) {
        let cf = self.cf(CF_INDEX);
        keys.sorted(|key| batch.put_cf(cf, key, []));
    }

    pub(super) fn put_index(&self, batch: &mut WriteBatch, ev: &Event) {
        let cf = self.cf(CF_INDEX);
        for_each_key(ev, |key| batch.put_cf(cf, key, []));
    }

    /// Remove an evicted event's index entries, except where it is indexed as a version
    /// ([`Prefix::versions`]): that entry stays, so the latest version of its key is still
    /// the evicted one (served by the archive upstream), never an older version that it had
    /// superseded (which the `by_time` scan skips for good).
    pub(super) fn delete_index(&self, batch: &mut WriteBatch, ev: &Event) {
        let cf = self.cf(CF_INDEX);
        let keep = Prefix::versions(ev).map(|mut p| {
            p.extend_from_slice(&ev.created_at.to_be_bytes());
            p.extend_from_slice(&ev.id);
            p
        });
        for_each_key(ev, |key| {
            if keep.as_deref() != Some(key) {
                batch.delete_cf(cf, key)
            }
        });
    }

    /// Are the query indexes complete for every stored event?
    pub fn indexes_ready(&self) -> Result<bool, StoreError> {
        // A reader opened before an upgrade created the column family cannot see it.
        if self.db.cf_handle(CF_INDEX).is_none() {
            return Ok(false);
        }
        Ok(self.meta(META_INDEX_VERSION)? >= INDEX_VERSION)
    }

    /// Build the query indexes of a store made before them: every stored event, in id order,
    /// [`BUILD_CHUNK`] at a time, each chunk one atomic write with its resume point, so an
    /// interrupted build goes on where it stopped. Pages written meanwhile index themselves.
    /// `progress(done, total)` is called after each chunk. Returns the events indexed.
    pub fn build_indexes(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64, StoreError> {
        if self.read_only || self.indexes_ready()? {
            return Ok(0);
        }
        let total = self.events.load(std::sync::atomic::Ordering::Relaxed);
        let mut resume: Option<Vec<u8>> = self
            .db
            .get_cf(self.cf(CF_META), META_INDEX_RESUME)?
            .filter(|v| v.len() == 32);
        let mut done = 0u64;
        loop {
            let mode = match &resume {
                Some(k) => IteratorMode::From(k, Direction::Forward),
                None => IteratorMode::Start,
            };
            let mut batch = WriteBatch::default();
            if resume.is_none() {
                // Counts start from nothing: a build that starts over never counts twice.
                self.clear_stats(&mut batch);
            }
            let mut tally = super::stats::Tally::default();
            let mut n = 0usize;
            let mut last = None;
            for item in self.db.iterator_cf(self.cf(CF_EVENTS), mode) {
                let (k, v) = item?;
                if resume.as_deref() == Some(&k[..]) {
                    continue;
                }
                let Ok(id) = <[u8; 32]>::try_from(&k[..]) else {
                    continue;
                };
                // Evicted or corrupt records have no body to serve, so no entries.
                if let Some(ev) = Event::decode(id, &v) {
                    self.put_index(&mut batch, &ev);
                    tally.add(&ev, 1);
                }
                last = Some(id);
                n += 1;
                if n >= BUILD_CHUNK {
                    break;
                }
            }
            let Some(last) = last else { break };
            tally.write(self, &mut batch);
            batch.put_cf(self.cf(CF_META), META_INDEX_RESUME, last);
            let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.db.write(batch)?;
            drop(_guard);
            done += n as u64;
            progress(done, total);
            resume = Some(last.to_vec());
            if n < BUILD_CHUNK {
                break;
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            META_INDEX_VERSION,
            INDEX_VERSION.to_be_bytes(),
        );
        batch.delete_cf(self.cf(CF_META), META_INDEX_RESUME);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(done)
    }

    /// Mark the indexes complete without a build: a new, empty store.
    pub(super) fn mark_indexes_ready(&self) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_META),
            META_INDEX_VERSION,
            INDEX_VERSION.to_be_bytes(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventStoreOptions;

    fn ev(n: u8, created_at: u64, kind: u16, tags: &[(&str, &str)]) -> Event {
        Event {
            id: [n; 32],
            pubkey: [9; 32],
            created_at,
            kind,
            tags: tags
                .iter()
                .map(|(k, v)| vec![k.to_string(), v.to_string()])
                .collect(),
            content: format!("event {n}"),
            sig: [n; 64],
        }
    }

    fn open(dir: &std::path::Path) -> EventStore {
        EventStore::open(dir, &EventStoreOptions::default()).unwrap()
    }

    /// A store that spools and tracks shipped events (what retention evicts from).
    fn open_shipping(dir: &std::path::Path) -> EventStore {
        let opts = EventStoreOptions {
            spool: true,
            track_shipped: true,
            ..EventStoreOptions::default()
        };
        EventStore::open(dir, &opts).unwrap()
    }

    fn scan_all(store: &EventStore, prefix: Vec<u8>) -> Vec<(u64, [u8; 32])> {
        let mut s = store.index_scan(Some(prefix), 0, u64::MAX, None);
        let mut out = Vec::new();
        while let Some(x) = s.next_entry().unwrap() {
            out.push(x);
        }
        out
    }

    #[test]
    fn tag_values_never_prefix_each_other() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_tag_value(&mut a, "ab");
        push_tag_value(&mut b, "abc");
        assert!(!b.starts_with(&a));
        let hex = "ab".repeat(32);
        let (mut h, mut upper) = (Vec::new(), Vec::new());
        push_tag_value(&mut h, &hex);
        push_tag_value(&mut upper, &hex.to_uppercase());
        assert_eq!(
            h.len(),
            33,
            "64 lowercase hex characters are stored as 32 bytes"
        );
        assert_ne!(h, upper, "an uppercase spelling is another value");
        let long = "x".repeat(500);
        let mut l = Vec::new();
        push_tag_value(&mut l, &long);
        assert_eq!(l.len(), 33, "long values are hashed");
    }

    #[test]
    fn scans_are_newest_first_with_ties_by_lowest_id_and_resume_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let evs = [
            ev(5, 100, 1, &[("t", "x")]),
            ev(3, 100, 1, &[("t", "x")]),
            ev(4, 100, 1, &[("t", "y")]),
            ev(1, 90, 1, &[("t", "x"), ("t", "x")]),
            ev(7, 110, 7, &[("t", "x")]),
        ];
        store.write_page(1, 1, &evs, &[false; 5], None).unwrap();
        let tx = scan_all(&store, Prefix::tag(b't', "x"));
        assert_eq!(
            tx,
            vec![
                (110, [7; 32]),
                (100, [3; 32]),
                (100, [5; 32]),
                (90, [1; 32])
            ]
        );
        let k1 = scan_all(&store, Prefix::kind(1));
        assert_eq!(
            k1,
            vec![
                (100, [3; 32]),
                (100, [4; 32]),
                (100, [5; 32]),
                (90, [1; 32])
            ]
        );
        // After (100, [3]): the rest of second 100, then older.
        let mut s = store.index_scan(Some(Prefix::kind(1)), 0, u64::MAX, Some((100, [3; 32])));
        assert_eq!(s.next_entry().unwrap(), Some((100, [4; 32])));
        assert_eq!(s.next_entry().unwrap(), Some((100, [5; 32])));
        assert_eq!(s.next_entry().unwrap(), Some((90, [1; 32])));
        assert_eq!(s.next_entry().unwrap(), None);
        // since/until are inclusive.
        let mut s = store.index_scan(Some(Prefix::author(&[9; 32])), 95, 100, None);
        let mut got = Vec::new();
        while let Some(x) = s.next_entry().unwrap() {
            got.push(x);
        }
        assert_eq!(got, vec![(100, [3; 32]), (100, [4; 32]), (100, [5; 32])]);
        // The time index (no prefix) reads the same way.
        let mut s = store.index_scan(None, 0, 105, None);
        assert_eq!(s.next_entry().unwrap(), Some((100, [3; 32])));
    }

    #[test]
    fn the_latest_version_is_the_newest_then_the_lowest_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let older = ev(1, 100, 0, &[]);
        let newer_high = ev(9, 200, 0, &[]);
        let newer_low = ev(8, 200, 0, &[]);
        let addr_a = ev(2, 300, 30023, &[("d", "a")]);
        let addr_b_old = ev(3, 100, 30023, &[("d", "b")]);
        let note = ev(4, 1, 1, &[]);
        let all = [
            older.clone(),
            newer_high.clone(),
            newer_low.clone(),
            addr_a.clone(),
            addr_b_old.clone(),
            note.clone(),
        ];
        store.write_page(1, 1, &all, &[false; 6], None).unwrap();
        assert!(!store.is_latest(&older).unwrap());
        assert!(!store.is_latest(&newer_high).unwrap());
        assert!(store.is_latest(&newer_low).unwrap());
        // Addressable: per d tag, so an older event with another d is still the latest of its own.
        assert!(store.is_latest(&addr_a).unwrap());
        assert!(store.is_latest(&addr_b_old).unwrap());
        assert!(store.is_latest(&note).unwrap());

        // One probe asked about many keys, in any order, gives each key's own answer: an
        // absent key next to present ones, a key asked again, keys before and after it.
        let mut probe = store.version_probe();
        let key = |e: &Event| Prefix::versions(e).unwrap();
        let absent = Prefix::author_kind(&[9; 32], 10_002);
        let missing_d = Prefix::address(&[9; 32], 30023, "c");
        for p in [
            key(&addr_b_old),
            absent.clone(),
            key(&older),
            key(&addr_a),
            missing_d.clone(),
            key(&older),
            key(&addr_b_old),
        ] {
            let want = if p == key(&older) {
                Some(newer_low.id)
            } else if p == key(&addr_a) {
                Some(addr_a.id)
            } else if p == key(&addr_b_old) {
                Some(addr_b_old.id)
            } else {
                None
            };
            assert_eq!(probe.latest(&p).unwrap(), want, "{}", hex::encode(&p));
        }
        // It reads the store as it was when made, like the scans of the same query.
        let newest = ev(7, 201, 0, &[]);
        store
            .write_page(1, 2, std::slice::from_ref(&newest), &[false], None)
            .unwrap();
        assert_eq!(probe.latest(&key(&older)).unwrap(), Some(newer_low.id));
        assert_eq!(
            store.version_probe().latest(&key(&older)).unwrap(),
            Some(newest.id)
        );
    }

    #[test]
    fn a_store_from_before_the_indexes_builds_them_at_open_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let evs: Vec<Event> = (0..50u8)
            .map(|n| ev(n, 1000 + n as u64 % 7, 1, &[("p", "z")]))
            .collect();
        {
            let store = open(dir.path());
            store.write_page(1, 1, &evs, &[false; 50], None).unwrap();
            // What a store written before the indexes looks like: no entries, no version.
            let mut b = WriteBatch::default();
            b.delete_range_cf(
                store.cf(CF_INDEX),
                [0u8].as_slice(),
                [0xffu8; 80].as_slice(),
            );
            b.delete_cf(store.cf(CF_META), META_INDEX_VERSION);
            store.clear_stats(&mut b);
            store.db.write(b).unwrap();
            assert!(scan_all(&store, Prefix::tag(b'p', "z")).is_empty());
            assert!(store.event_stats(0, u32::MAX).unwrap().kinds.is_empty());
            assert!(!store.indexes_ready().unwrap());
            // An interrupted build: resume point in the middle (ids are [n; 32]).
            store
                .db
                .put_cf(store.cf(CF_META), META_INDEX_RESUME, [24u8; 32])
                .unwrap();
            let mut b = WriteBatch::default();
            let mut tally = super::super::stats::Tally::default();
            for e in evs.iter().take(25) {
                store.put_index(&mut b, e);
                tally.add(e, 1);
            }
            tally.write(&store, &mut b);
            store.db.write(b).unwrap();
        }
        let store = open(dir.path());
        assert!(store.indexes_ready().unwrap());
        assert_eq!(scan_all(&store, Prefix::tag(b'p', "z")).len(), 50);
        assert_eq!(scan_all(&store, Prefix::author_kind(&[9; 32], 1)).len(), 50);
        // The statistics were counted by the same build, each event once.
        let stats = store.event_stats(0, u32::MAX).unwrap();
        assert_eq!(stats.kinds, vec![(1, 50)]);
        assert_eq!(stats.days.iter().map(|d| d.1).sum::<u64>(), 50);
        // Building again does nothing.
        let mut calls = 0;
        assert_eq!(store.build_indexes(|_, _| calls += 1).unwrap(), 0);
        assert_eq!(calls, 0);
    }

    #[test]
    fn eviction_removes_the_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_shipping(dir.path());
        let evs = [ev(1, 10, 1, &[("e", &"cd".repeat(32))]), ev(2, 11, 1, &[])];
        store.write_page(1, 5, &evs, &[false; 2], None).unwrap();
        assert_eq!(store.event_stats(0, 0).unwrap().kinds, vec![(1, 2)]);
        let through = store.spool_peek(10).unwrap().last().unwrap().0;
        store.spool_ack(through).unwrap();
        assert_eq!(store.evict_shipped(u64::MAX, 10).unwrap().0, 2);
        // The statistics count what is held: the evicted bodies leave them.
        assert_eq!(store.event_stats(0, 0).unwrap(), Default::default());
        assert!(scan_all(&store, Prefix::kind(1)).is_empty());
        assert!(scan_all(&store, Prefix::tag(b'e', &"cd".repeat(32))).is_empty());
        assert!(scan_all(&store, Prefix::author(&[9; 32])).is_empty());
    }

    /// Ids a `by_time` scan yields, newest first.
    fn time_scan(store: &EventStore, skip: bool) -> Vec<u8> {
        let s = store.index_scan(None, 0, u64::MAX, None);
        let mut s = if skip { s.without_superseded() } else { s };
        let mut out = Vec::new();
        while let Some((_, id)) = s.next_entry().unwrap() {
            out.push(id[0]);
        }
        out
    }

    #[test]
    fn a_newer_version_marks_the_older_superseded_whatever_the_order_they_arrive_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_shipping(dir.path());
        // Kind 0 of one author: 1 stored first; then 3, 2 and 4 in one page, 4 tying with 3
        // in its second (the lower id, 3, is the latest); then an older one, 5, alone.
        store
            .write_page(1, 1, &[ev(1, 100, 0, &[])], &[false], None)
            .unwrap();
        let page = [ev(3, 300, 0, &[]), ev(2, 200, 0, &[]), ev(4, 300, 0, &[])];
        store.write_page(1, 2, &page, &[false; 3], None).unwrap();
        store
            .write_page(1, 3, &[ev(5, 50, 0, &[])], &[false], None)
            .unwrap();
        // Addressable versions per d tag, and a note: none superseded.
        let others = [
            ev(6, 10, 30023, &[("d", "a")]),
            ev(7, 20, 30023, &[("d", "b")]),
            ev(8, 5, 1, &[]),
            ev(9, 30, 30023, &[("d", "a")]),
        ];
        store.write_page(1, 4, &others, &[false; 4], None).unwrap();
        assert_eq!(time_scan(&store, false), vec![3, 4, 2, 1, 5, 9, 7, 6, 8]);
        assert_eq!(time_scan(&store, true), vec![3, 9, 7, 8]);

        // Evicting the latest version keeps it the latest: the older ones stay unserved on
        // every path (the time scan skips them, the others ask for the latest version).
        let through = store.spool_peek(100).unwrap().last().unwrap().0;
        store.spool_ack(through).unwrap();
        let mut evicted = 0;
        // Retention goes oldest-acked first; evict everything, then look at kind 0's key.
        while let (n @ 1.., _) = store.evict_shipped(u64::MAX, 100).unwrap() {
            evicted += n;
        }
        assert_eq!(evicted, 9);
        assert_eq!(
            store
                .latest_version(&Prefix::author_kind(&[9; 32], 0))
                .unwrap(),
            Some([3; 32])
        );
        assert!(time_scan(&store, true).is_empty());
        assert!(scan_all(&store, Prefix::kind(0)).is_empty());
    }
}
