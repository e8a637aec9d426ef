//! [`EventSource`] over the node's RocksDB store: each filter is planned onto index scans
//! (`store::events::index`), the scans of one filter are merged newest first, every candidate
//! is matched against the whole filter, and the filters' answers are merged into one stream.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::{
    BoxFuture, EventSource, Framing, Matcher, Position, Query, QueryError, Rendered, RENDER_BATCH,
    RENDER_BATCH_BYTES,
};
use crate::protocol::event::{decode_hex, EncodedEvent};
use crate::protocol::{Event, Filter};
use crate::store::events::index::{IndexScan, Prefix, VersionProbe};
use crate::store::EventStore;

/// Author x kind pairs up to which a filter with both scans the (author, kind) index; above,
/// the author index with kinds matched afterwards.
const MAX_PAIR_SCANS: usize = 256;
/// The clock is read once per this many candidates.
const CLOCK_EVERY: u32 = 64;
/// Bodies read in one batch ahead of the answer: RocksDB's `MultiGet` works in batches of 32
/// keys and insertion-sorts each batch; 64 read 5-10% slower per event than 24-32 in the
/// serve bench, 256 15% slower (docs/BENCHMARKS.md, "Serving").
const PREFETCH: usize = 32;
/// Keys whose latest version one query remembers (then it starts over).
const MAX_LATEST_CACHED: usize = 4096;

type Key = (Reverse<u64>, [u8; 32]);

fn key(created_at: u64, id: [u8; 32]) -> Key {
    (Reverse(created_at), id)
}

/// Where one filter's candidates come from.
enum Head<'a> {
    Scan(Box<IndexScan<'a>>),
    /// Ids looked up directly (an `ids` filter), in answer order, reversed for pop().
    List(Vec<(u64, [u8; 32])>),
}

impl Head<'_> {
    fn next(&mut self) -> Result<Option<(u64, [u8; 32])>, QueryError> {
        match self {
            Head::Scan(s) => Ok(s.next_entry()?),
            Head::List(v) => Ok(v.pop()),
        }
    }
}

/// One filter's answer, newest first, each event at most once, at most `limit`.
struct FilterRun<'a> {
    store: &'a EventStore,
    matcher: Matcher,
    heads: Vec<Head<'a>>,
    heap: BinaryHeap<Reverse<(Key, usize)>>,
    remaining: u64,
    last: Option<Key>,
    all_versions: bool,
    /// Latest version per replaceable/addressable key, as found during this query.
    latest: HashMap<Vec<u8>, Option<[u8; 32]>>,
    /// Asks the index for the latest versions the map does not hold yet.
    probe: VersionProbe<'a>,
    /// Bodies fetched ahead of the heap ([`FilterRun::body`]).
    bodies: HashMap<[u8; 32], Option<EncodedEvent>>,
}

impl<'a> FilterRun<'a> {
    fn new(
        store: &'a EventStore,
        f: &Filter,
        after: Option<Position>,
        all_versions: bool,
    ) -> Result<Self, QueryError> {
        let since = f.since.unwrap_or(0);
        let until = f.until.unwrap_or(u64::MAX);
        let after_pair = after.map(|p| (p.created_at, p.id));
        let scan = |prefix: Option<Vec<u8>>| {
            let s = store.index_scan(prefix, since, until, after_pair);
            Head::Scan(Box::new(if all_versions {
                s
            } else {
                s.without_superseded()
            }))
        };
        let hexes = |v: &[String]| -> Vec<[u8; 32]> {
            let mut out: Vec<[u8; 32]> = v.iter().filter_map(|s| decode_hex::<32>(s)).collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        let mut kinds = f.kinds.clone();
        kinds.sort_unstable();
        kinds.dedup();
        let heads: Vec<Head> = if !f.ids.is_empty() {
            let mut found = Vec::new();
            for id in hexes(&f.ids) {
                if let Some(t) = store.stored_created_at(&id)? {
                    let pos = Position { created_at: t, id };
                    let in_range = t >= since && t <= until;
                    if in_range && after.is_none_or(|a| pos.order_key() > a.order_key()) {
                        found.push((t, id));
                    }
                }
            }
            // pop() from the end yields the first in answer order.
            found.sort_unstable_by_key(|(t, id)| Reverse(key(*t, *id)));
            vec![Head::List(found)]
        } else if !f.authors.is_empty() {
            let authors = hexes(&f.authors);
            if !kinds.is_empty() && authors.len() * kinds.len() <= MAX_PAIR_SCANS {
                authors
                    .iter()
                    .flat_map(|a| kinds.iter().map(move |k| (a, *k)))
                    .map(|(a, k)| scan(Some(Prefix::author_kind(a, k))))
                    .collect()
            } else {
                authors
                    .iter()
                    .map(|a| scan(Some(Prefix::author(a))))
                    .collect()
            }
        } else if let Some((letter, values)) = f
            .tags
            .iter()
            .filter(|(l, _)| l.is_ascii_alphabetic())
            .min_by_key(|(_, v)| v.len())
        {
            let mut values = values.clone();
            values.sort_unstable();
            values.dedup();
            values
                .iter()
                .map(|v| scan(Some(Prefix::tag(*letter as u8, v))))
                .collect()
        } else if !kinds.is_empty() {
            kinds.iter().map(|k| scan(Some(Prefix::kind(*k)))).collect()
        } else {
            vec![scan(None)]
        };
        let mut run = FilterRun {
            store,
            matcher: Matcher::new(f),
            heads,
            heap: BinaryHeap::new(),
            remaining: f.limit.unwrap_or(u64::MAX),
            last: None,
            all_versions,
            latest: HashMap::new(),
            probe: store.version_probe(),
            bodies: HashMap::new(),
        };
        if run.remaining > 0 {
            for i in 0..run.heads.len() {
                run.refill(i)?;
            }
        }
        Ok(run)
    }

    /// The body of `id`: fetched ahead, or now together with the ids the scans will return
    /// next (up to [`PREFETCH`], one `MultiGet`).
    fn body(&mut self, id: [u8; 32]) -> Result<Option<EncodedEvent>, QueryError> {
        if let Some(b) = self.bodies.remove(&id) {
            return Ok(b);
        }
        let mut ids = vec![id];
        for h in &self.heads {
            if let Head::Scan(s) = h {
                let room = PREFETCH - ids.len();
                ids.extend(s.pending().iter().rev().take(room));
            }
            if ids.len() >= PREFETCH {
                break;
            }
        }
        let mut got = self.store.get_many_encoded(&ids)?.into_iter();
        let first = got.next().flatten();
        if self.bodies.len() > 4 * PREFETCH {
            // Fetched ahead and never asked for (duplicates across scans): start over.
            self.bodies.clear();
        }
        for (pid, ev) in ids.into_iter().skip(1).zip(got) {
            self.bodies.insert(pid, ev);
        }
        Ok(first)
    }

    /// Is `ev` the latest version of its replaceable or addressable key? One index seek per
    /// key per query: versions of one key recur within an answer (a profile's versions in a
    /// time window), and the answer is over one snapshot of "latest" anyway.
    fn is_latest(&mut self, ev: &EncodedEvent) -> Result<bool, QueryError> {
        let prefix = match Prefix::versions_encoded(ev) {
            Some(Some(p)) => p,
            Some(None) => return Ok(true),
            // Corrupt tags: not served.
            None => return Ok(false),
        };
        let latest = match self.latest.get(&prefix) {
            Some(l) => *l,
            None => {
                let l = self.probe.latest(&prefix)?;
                if self.latest.len() >= MAX_LATEST_CACHED {
                    self.latest.clear();
                }
                self.latest.insert(prefix, l);
                l
            }
        };
        Ok(latest.is_none_or(|id| id == *ev.id()))
    }

    fn refill(&mut self, i: usize) -> Result<(), QueryError> {
        if let Some((t, id)) = self.heads[i].next()? {
            self.heap.push(Reverse((key(t, id), i)));
        }
        Ok(())
    }

    /// The next event of this filter's answer.
    fn next(
        &mut self,
        deadline: Option<Instant>,
        tick: &mut u32,
    ) -> Result<Option<EncodedEvent>, QueryError> {
        while self.remaining > 0 {
            let Some(Reverse((k, i))) = self.heap.pop() else {
                return Ok(None);
            };
            self.refill(i)?;
            if self.last == Some(k) {
                continue;
            }
            self.last = Some(k);
            *tick += 1;
            if tick.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() > d) {
                return Err(QueryError::TimedOut);
            }
            // Evicted (shipped upstream) or corrupt bodies are not served.
            let Some(ev) = self.body(k.1)? else {
                continue;
            };
            if !self.matcher.matches_encoded(&ev) {
                continue;
            }
            if !self.all_versions && !self.is_latest(&ev)? {
                continue;
            }
            self.remaining -= 1;
            return Ok(Some(ev));
        }
        Ok(None)
    }
}

/// A whole query's answer over the local store, as a blocking iterator.
pub struct LocalAnswer<'a> {
    runs: Vec<(FilterRun<'a>, Option<EncodedEvent>)>,
    deadline: Option<Instant>,
    tick: u32,
    primed: bool,
}

impl<'a> LocalAnswer<'a> {
    pub fn new(store: &'a EventStore, q: &Query) -> Result<Self, QueryError> {
        if !store.indexes_ready()? {
            return Err(QueryError::NotReady);
        }
        let runs = q
            .filters
            .iter()
            .map(|f| Ok((FilterRun::new(store, f, q.after, q.all_versions)?, None)))
            .collect::<Result<Vec<_>, QueryError>>()?;
        Ok(LocalAnswer {
            runs,
            deadline: q.deadline,
            tick: 0,
            primed: false,
        })
    }

    fn next_event(&mut self) -> Result<Option<EncodedEvent>, QueryError> {
        if !self.primed {
            self.primed = true;
            for (run, pending) in &mut self.runs {
                *pending = run.next(self.deadline, &mut self.tick)?;
            }
        }
        // Filters per query are few: a linear pick of the first in answer order.
        let best = self
            .runs
            .iter()
            .enumerate()
            .filter_map(|(i, (_, p))| p.as_ref().map(|e| (position(e).order_key(), i)))
            .min();
        let Some((k, _)) = best else {
            return Ok(None);
        };
        let mut out = None;
        for (run, pending) in &mut self.runs {
            if pending
                .as_ref()
                .is_some_and(|e| position(e).order_key() == k)
            {
                let ev = pending.take();
                *pending = run.next(self.deadline, &mut self.tick)?;
                out = out.or(ev);
            }
        }
        Ok(out)
    }
}

fn position(e: &EncodedEvent) -> Position {
    Position {
        created_at: e.created_at(),
        id: *e.id(),
    }
}

impl Iterator for LocalAnswer<'_> {
    type Item = Result<EncodedEvent, QueryError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// The node's store as an [`EventSource`]. Queries run on blocking threads.
#[derive(Clone)]
pub struct LocalSource {
    pub store: Arc<EventStore>,
}

impl LocalSource {
    pub fn new(store: Arc<EventStore>) -> Self {
        LocalSource { store }
    }

    /// Count on the calling thread (blocking).
    pub fn count_blocking(store: &EventStore, mut q: Query) -> Result<u64, QueryError> {
        for f in &mut q.filters {
            f.limit = None;
        }
        let mut n = 0;
        for ev in LocalAnswer::new(store, &q)? {
            ev?;
            n += 1;
        }
        Ok(n)
    }

    /// Run a query on a blocking thread, handing over what `each` makes of every event
    /// (`None`: skip it) in batches of `batch` items (or once they weigh `max_bytes`), over a
    /// channel of `buffer` batches.
    fn stream<T: Send + 'static>(
        &self,
        q: Query,
        buffer: usize,
        batch: usize,
        max_bytes: usize,
        each: impl Fn(EncodedEvent) -> Option<(T, usize)> + Send + 'static,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<T>, QueryError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let answer = match LocalAnswer::new(&store, &q) {
                Ok(a) => a,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut out = Vec::with_capacity(batch);
            let mut bytes = 0;
            for item in answer {
                match item {
                    Ok(ev) => {
                        let Some((t, n)) = each(ev) else { continue };
                        out.push(t);
                        bytes += n;
                        if out.len() >= batch || bytes >= max_bytes {
                            // The reader went away: stop reading the store.
                            if tx.blocking_send(Ok(std::mem::take(&mut out))).is_err() {
                                return;
                            }
                            out.reserve(batch);
                            bytes = 0;
                        }
                    }
                    Err(e) => {
                        if !out.is_empty() && tx.blocking_send(Ok(out)).is_err() {
                            return;
                        }
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if !out.is_empty() {
                let _ = tx.blocking_send(Ok(out));
            }
        });
        rx
    }
}

impl EventSource for LocalSource {
    fn query(
        &self,
        q: Query,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Event>, QueryError>> {
        self.stream(q, batches, RENDER_BATCH, RENDER_BATCH_BYTES, |enc| {
            let n = enc.len();
            // Stored tags that are not JSON: not served, as any corrupt record.
            enc.decode().map(|ev| (ev, n))
        })
    }

    fn query_positions(
        &self,
        q: Query,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Position>, QueryError>> {
        self.stream(q, batches, 1024, usize::MAX, |enc| {
            Some((position(&enc), 0))
        })
    }

    fn query_json(
        &self,
        q: Query,
        framing: Framing,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Rendered>, QueryError>> {
        self.stream(q, batches, RENDER_BATCH, RENDER_BATCH_BYTES, move |ev| {
            let text = ev.framed_json(&framing.prefix, framing.suffix);
            let n = text.len();
            let position = position(&ev);
            Some((Rendered { position, text }, n))
        })
    }

    fn count(&self, q: Query) -> BoxFuture<'_, Result<u64, QueryError>> {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::count_blocking(&store, q))
                .await
                .map_err(|_| QueryError::Cancelled)?
        })
    }
}
