//! The query engine: NIP-01 filters over an archive, with the same semantics whatever holds
//! the events (the node's RocksDB store here; the central PostgreSQL archive implements the
//! same [`EventSource`]).
//!
//! Semantics (NIP-01, exactly):
//! - the filters of one query are OR'd; the fields of one filter are AND'd, the values of one
//!   field OR'd; `since <= created_at <= until`;
//! - the answer is newest first, ties (same `created_at`) by id in lexical order, lowest first;
//! - `limit` applies per filter: each filter contributes at most its `limit` newest events,
//!   and the answer is the union (an event two filters match is sent once);
//! - of replaceable (0, 3, 10000-19999) and addressable (30000-39999) events only the latest
//!   version per key is served, as relays do (the archive keeps every version: `all_versions`);
//! - pagination is a keyset on (created_at, id) ([`Position`]), never an offset.
//!
//! Answers stream: memory is bounded by the filters, not by how many events match.

pub mod local;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::protocol::event::{decode_hex, EncodedEvent};
use crate::protocol::{Event, Filter};
use crate::store::StoreError;

/// A point in the answer order: everything "after" it is older, or as old with a higher id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub created_at: u64,
    pub id: [u8; 32],
}

impl Position {
    pub fn of(ev: &Event) -> Position {
        Position {
            created_at: ev.created_at,
            id: ev.id,
        }
    }

    /// The cursor form used by the REST API: `<created_at>:<id hex>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.created_at, hex::encode(self.id))
    }

    pub fn decode(s: &str) -> Result<Position, String> {
        let bad = || format!("cursor {s:?} is not <created_at>:<64 hex id>, as returned in `next`");
        let (t, id) = s.split_once(':').ok_or_else(bad)?;
        Ok(Position {
            created_at: t.parse().map_err(|_| bad())?,
            id: decode_hex::<32>(id).ok_or_else(bad)?,
        })
    }

    /// The sort key of the answer order: ascending key = newest first, lowest id first.
    pub fn order_key(&self) -> (std::cmp::Reverse<u64>, [u8; 32]) {
        (std::cmp::Reverse(self.created_at), self.id)
    }
}

/// One query: filters OR'd, optionally resumed after a position, optionally bounded in time.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filters: Vec<Filter>,
    /// Keyset cursor: only events after this position in the answer order.
    pub after: Option<Position>,
    /// Stop with [`QueryError::TimedOut`] once past this instant.
    pub deadline: Option<Instant>,
    /// Serve every stored version of replaceable and addressable events, not only the latest.
    pub all_versions: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query took longer than its time budget; narrow the filter (authors, kinds, tags, since/until) or lower its limit")]
    TimedOut,
    #[error("the event store's query indexes are not built yet; start the node once as the writer (`bigbrotr run` or `bigbrotr serve` without another node running) to build them")]
    NotReady,
    #[error("the query was cancelled")]
    Cancelled,
}

/// Events per batch of a rendered answer ([`EventSource::query_json`]).
pub const RENDER_BATCH: usize = 64;
/// A rendered batch holding at least this many bytes is handed over before it is full.
pub const RENDER_BATCH_BYTES: usize = 64 << 10;

/// What goes around each event's JSON in a rendered answer: `["EVENT","sub",` and `]` for
/// the relay, nothing and a newline for NDJSON.
#[derive(Debug, Clone, Default)]
pub struct Framing {
    pub prefix: String,
    pub suffix: &'static str,
}

/// One event of a rendered answer: its place in the answer order and its framed JSON.
#[derive(Debug)]
pub struct Rendered {
    pub position: Position,
    pub text: String,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a read side serves from: the node's store here, the central archive in PostgreSQL.
/// One conformance suite (tests/query.rs) runs against every implementation.
pub trait EventSource: Send + Sync + 'static {
    /// Stream the answer, newest first, in batches; at most `batches` batches are held ahead
    /// of the reader (a reader that stops reading stops the query). Dropping the receiver
    /// cancels it. An error ends the answer.
    fn query(
        &self,
        q: Query,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Event>, QueryError>>;

    /// Only where each event of the answer stands (NIP-77 reconciliation needs no more).
    fn query_positions(
        &self,
        q: Query,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Position>, QueryError>>;

    /// The same answer with each event already written as NIP-01 JSON between
    /// `framing.prefix` and `framing.suffix`, in batches of up to [`RENDER_BATCH`] events or
    /// about [`RENDER_BATCH_BYTES`]; at most `batches` batches are held ahead of the reader.
    /// This is the serving hot path: one hand-over per batch instead of per event, and a
    /// source may write the JSON from what it stores without building an [`Event`].
    fn query_json(
        &self,
        q: Query,
        framing: Framing,
        batches: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Rendered>, QueryError>>;

    /// How many events the filters match (NIP-45: `limit` is ignored), latest versions only
    /// unless `all_versions`.
    fn count(&self, q: Query) -> BoxFuture<'_, Result<u64, QueryError>>;
}

/// A filter compiled for matching: hex decoded once, sets for list fields.
#[derive(Debug, Clone)]
pub struct Matcher {
    ids: Option<HashSet<[u8; 32]>>,
    authors: Option<HashSet<[u8; 32]>>,
    kinds: Option<HashSet<u16>>,
    tags: BTreeMap<char, HashSet<String>>,
    since: u64,
    until: u64,
}

impl Matcher {
    pub fn new(f: &Filter) -> Matcher {
        let hexes = |v: &[String]| -> Option<HashSet<[u8; 32]>> {
            (!v.is_empty()).then(|| v.iter().filter_map(|s| decode_hex::<32>(s)).collect())
        };
        Matcher {
            ids: hexes(&f.ids),
            authors: hexes(&f.authors),
            kinds: (!f.kinds.is_empty()).then(|| f.kinds.iter().copied().collect()),
            tags: f
                .tags
                .iter()
                .map(|(k, v)| (*k, v.iter().cloned().collect()))
                .collect(),
            since: f.since.unwrap_or(0),
            until: f.until.unwrap_or(u64::MAX),
        }
    }

    pub fn matches(&self, ev: &Event) -> bool {
        self.matches_fields(&ev.id, &ev.pubkey, ev.created_at, ev.kind)
            && self.matches_tags(&ev.tags)
    }

    /// The same as [`Matcher::matches`] over a stored record; its tags are parsed only when
    /// this filter has tag conditions (a corrupt tags field matches none).
    pub fn matches_encoded(&self, ev: &EncodedEvent) -> bool {
        self.matches_fields(ev.id(), ev.pubkey(), ev.created_at(), ev.kind())
            && (self.tags.is_empty() || ev.tags().is_some_and(|t| self.matches_tags(&t)))
    }

    fn matches_fields(&self, id: &[u8; 32], pubkey: &[u8; 32], created_at: u64, kind: u16) -> bool {
        created_at >= self.since
            && created_at <= self.until
            && self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
            && self.ids.as_ref().is_none_or(|s| s.contains(id))
            && self.authors.as_ref().is_none_or(|s| s.contains(pubkey))
    }

    fn matches_tags(&self, tags: &[Vec<String>]) -> bool {
        self.tags.iter().all(|(letter, values)| {
            let mut buf = [0u8; 4];
            let name: &str = letter.encode_utf8(&mut buf);
            tags.iter().any(|t| {
                t.first().map(String::as_str) == Some(name)
                    && t.get(1).is_some_and(|v| values.contains(v))
            })
        })
    }
}
