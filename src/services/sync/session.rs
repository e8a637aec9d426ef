//! One relay's synchronization: complete backfill by passes, then a live subscription.
//!
//! Invariant 4 is kept here too: before every page, [`SyncContext::pause_reason`] checks the
//! spool quota and free disk; when either is exhausted syncing pauses (the relays keep the
//! events, nothing stored is dropped) and resumes when there is room.
//!
//! Invariant 2 is kept here: a relay's cursor moves only past a window proven complete, and only
//! after the events of that window are durable (`EventStore::write_page` returns after the
//! batch is in the WAL; the cursor is written to SQLite after that).
//!
//! How a window is proven complete (PROTOCOL.md, "the pagination trap"). A pass fills
//! `(done_until, pass_top]` top-down with `REQ {since, until: frontier, limit: L}`. NIP-01 answers
//! newest first, so whatever the relay's silent clamp, an answer whose oldest matching event is at
//! second `m < frontier` proves `(m, frontier]` complete: the frontier moves to `m` (the events at
//! `m` itself are asked again, which costs a few duplicates, not 4x). The oldest answered time
//! counts every event the relay sent inside the window, invalid ones included: the relay ranked
//! its answer by them. Only an empty answer proves the rest of the window; a short one does not,
//! because relays drop events after applying the limit (expired, deleted, hidden without AUTH).
//! An answer entirely inside one second `s` may be a saturated second: more events share `s` than
//! the relay returns at once. If the answer is smaller than both the asked limit and the largest
//! answer this relay gave in this session (counting every frame received, since invalid ones
//! occupy answer slots too, while the learned size counts only valid matching events), the relay
//! had room and `s` is all there is. It is resolved by NIP-77 negentropy where the relay speaks it, else
//! by narrowing the second by author and kind and checking the union against an exact NIP-45
//! COUNT. A second that cannot be proven is recorded in `unproven_second` and never reported
//! complete; the frontier moves past it so the rest of history is still archived.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr::Keys;

use super::ingest::{ingest, Matched, PageResult};
use super::link::{Answer, Link, LinkError};
use crate::config::SyncConfig;
use crate::net::dialer::Dialer;
use crate::protocol::url::RelayUrl;
use crate::protocol::{ClientMessage, EventLimits, Filter};
use crate::shutdown::Shutdown;
use crate::store::state::RelayCaps;
use crate::store::{Cursor, StateError, StoreError, Stores};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("shutting down")]
    Shutdown,
    /// The relay's answers cannot prove anything (the pass is not advanced).
    #[error("{0}")]
    Untrustworthy(String),
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// Counters for `status` and logs, shared by every session of a node.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub received: AtomicU64,
    pub new_events: AtomicU64,
    pub invalid: AtomicU64,
    pub verified: AtomicU64,
    pub pages: AtomicU64,
}

/// Everything a session needs; cheap to clone.
#[derive(Clone)]
pub struct SyncContext {
    pub stores: Stores,
    pub dialer: Dialer,
    pub cfg: SyncConfig,
    pub limits: EventLimits,
    pub max_message_bytes: usize,
    pub keys: Option<Keys>,
    pub shutdown: Shutdown,
    pub stats: Arc<SyncStats>,
    /// Event bytes buffered at once across all sessions, one permit per byte (`sync.max_pages_in_flight` x
    /// `sync.max_page_mb`): memory is bounded by this, not by the number of relays connected.
    /// A page takes permits for the frames it actually buffered, as they arrive, and gives them
    /// back once stored; a relay that is slow, drips, or never sends EOSE holds only what it
    /// sent, not a slot others wait for.
    pub buffer_budget: Arc<tokio::sync::Semaphore>,
    /// Invariant 4: syncing pauses at this spool depth (`None`: spool disabled).
    pub spool_max: Option<u64>,
    /// Invariant 4: syncing pauses below this much free disk (MiB) on the data dir's disk.
    pub min_free_disk_mb: u64,
    pub data_dir: std::path::PathBuf,
}

impl SyncContext {
    /// Why syncing must pause now (spool full or disk nearly full), if it must.
    pub fn pause_reason(&self) -> Option<String> {
        let depth = self.stores.events.counters().spool_depth;
        if let Some(max) = self.spool_max.filter(|m| depth >= *m) {
            return Some(format!(
                "spool holds {depth} entries (spool.max_entries = {max}); waiting for the shipper"
            ));
        }
        match crate::store::free_disk_mb(&self.data_dir) {
            Some(free) if free < self.min_free_disk_mb => Some(format!(
                "only {free} MiB free (storage.min_free_disk_mb = {}); free disk space",
                self.min_free_disk_mb
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Finish the pass whatever it takes, no live subscription (`sync --once`).
    Once,
    /// A bounded turn: at most `max_pages_per_turn` pages, then live for `live_turn_secs`.
    Turn,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub pass_complete: bool,
    pub unproven: Vec<(u64, String)>,
    /// Unproven seconds past the per-relay cap: counted, not listed (never "complete").
    pub unproven_dropped: u64,
    pub received: u64,
    pub new_events: u64,
    /// Events refused: malformed, over a size cap, wrong id or bad signature.
    pub refused: u64,
}

/// How often a relay's NIP-11 document is fetched again, seconds.
const NIP11_REFRESH_SECS: i64 = 86_400;

/// Events over the message size limit one session gets past before it gives up (each costs
/// about 40 reconnections).
const MAX_OVERSIZED_PER_SESSION: u32 = 16;

/// Unproven seconds re-tried at the start of one session.
const MAX_UNPROVEN_RETRIES: usize = 16;

/// A page boundary second holding at least 1/this of the relay's answer size is checked with an
/// exact COUNT before the next page re-sends it (`page_boundary`).
const BOUNDARY_PROBE_SHARE: u64 = 4;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Session<'a> {
    ctx: &'a SyncContext,
    relay: u32,
    url: &'a RelayUrl,
    link: Link,
    /// The page limit before it was halved to get past an event over the message size limit.
    saved_limit: Option<u64>,
    /// Events over the message size limit got past in this session.
    oversized: u32,
    /// Limit asked per page: `sync.page_limit`, lowered to NIP-11 `max_limit`.
    limit: u64,
    /// Largest matching answer this relay gave in this session: a lower bound of its real clamp.
    /// Not persisted: a relay may lower its clamp between sessions.
    seen_cap: u64,
    caps: RelayCaps,
    /// COUNT / NIP-77 went unanswered in this session: not asked again until the next one
    /// (silence is not a lasting verdict; a refusal is, see `RelayCaps`).
    count_silent: bool,
    neg_silent: bool,
    /// Window width for a relay caught out of order (`careful_step`).
    window: Option<u64>,
    /// Largest answer (events inside the window) such a relay gave in this session.
    careful_max: u64,
    /// Requests sent in this session (pages, probes, narrowing, ids): what a turn budgets.
    requests: u64,
    outcome: Outcome,
}

/// A protocol session with `url`, as configured.
async fn connect(ctx: &SyncContext, url: &RelayUrl) -> Result<Link, SyncError> {
    let keys = if ctx.cfg.auth { ctx.keys.clone() } else { None };
    Ok(Link::connect(
        &ctx.dialer,
        url,
        ctx.max_message_bytes,
        keys,
        Duration::from_secs(ctx.cfg.page_timeout_secs),
        ctx.cfg.max_page_mb << 20,
        ctx.buffer_budget.clone(),
    )
    .await?)
}

/// An event over `network.max_message_bytes` broke the websocket.
fn too_large(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Link(LinkError::Ws(crate::net::ws::WsError::TooLarge(_)))
    )
}

/// Synchronize one relay. Registers nothing: `relay` must be in the registry.
pub async fn run(
    ctx: &SyncContext,
    relay: u32,
    url: &RelayUrl,
    mode: Mode,
) -> Result<Outcome, SyncError> {
    // An onion relay while the built-in Tor is still bootstrapping: not tried at all (no NIP-11
    // attempt is stamped either).
    if let Some(reason) = ctx.dialer.tor_not_ready(url.network()) {
        return Err(SyncError::Link(super::link::LinkError::Ws(
            crate::net::ws::WsError::Dial(crate::net::dialer::DialError::TorNotReady {
                url: url.to_string(),
                reason,
            }),
        )));
    }
    // Before any sighting refers to this id (see `EventStore::bind_relay`).
    ctx.stores.events.bind_relay(relay, url.as_str())?;
    // NIP-11 max_limit lowers the page limit; the document is fetched at most once a day.
    let mut caps = ctx.stores.state.caps(relay)?;
    let stale = caps
        .nip11_checked_at
        .is_none_or(|t| now() as i64 - t >= NIP11_REFRESH_SECS);
    if stale {
        // 5 s on clearnet; overlay circuits get their own (longer) connect timeout.
        let t = match url.network() {
            crate::protocol::url::Network::Clearnet => {
                Duration::from_secs(5).min(ctx.dialer.timeout())
            }
            n => ctx.dialer.timeout_for(n),
        };
        caps.max_limit = match crate::net::nip11::fetch(&ctx.dialer, url, t).await {
            Ok(info) => info.limitation.max_limit.filter(|m| *m > 0),
            Err(e) => {
                tracing::debug!(relay = %url, error = %e, "no NIP-11 document");
                None
            }
        };
        caps.nip11_checked_at = Some(now() as i64);
        ctx.stores.state.set_caps(relay, &caps)?;
    }
    let limit = caps
        .max_limit
        .map_or(ctx.cfg.page_limit, |m| ctx.cfg.page_limit.min(m));
    let link = connect(ctx, url).await?;
    let mut s = Session {
        ctx,
        relay,
        url,
        link,
        saved_limit: None,
        oversized: 0,
        limit,
        seen_cap: 0,
        caps,
        count_silent: false,
        neg_silent: false,
        window: None,
        careful_max: 0,
        requests: 0,
        outcome: Outcome::default(),
    };
    let result = s.drive(mode).await;
    let notices = s.link.notices;
    s.link.close().await;
    if notices > 0 {
        tracing::info!(relay = %url, notices, "relay sent NOTICE messages");
    }
    result?;
    s.outcome.unproven = ctx.stores.state.unproven(relay)?;
    s.outcome.unproven_dropped = ctx.stores.state.unproven_dropped(relay)?;
    Ok(s.outcome)
}

impl Session<'_> {
    async fn drive(&mut self, mode: Mode) -> Result<(), SyncError> {
        self.retry_unproven().await?;
        // A turn is bounded by requests (every one counts: pages, probes, narrowing of
        // saturated seconds) and by wall time, so no relay keeps a session slot for hours.
        let (budget, deadline) = match mode {
            Mode::Once => (u64::MAX, None),
            Mode::Turn => (
                self.ctx.cfg.max_pages_per_turn,
                Some(tokio::time::Instant::now() + Duration::from_secs(self.ctx.cfg.max_turn_secs)),
            ),
        };
        while self.requests < budget && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
            if self.ctx.shutdown.is_triggered() {
                return Err(SyncError::Shutdown);
            }
            if let Some(reason) = self.ctx.pause_reason() {
                // Relays keep the events; nothing stored is dropped. Resume when there is room.
                tracing::warn!(reason = %reason, "synchronization paused");
                if mode == Mode::Turn {
                    return Ok(());
                }
                if self.ctx.shutdown.sleep(Duration::from_secs(5)).await {
                    return Err(SyncError::Shutdown);
                }
                continue;
            }
            if self.step().await? {
                self.outcome.pass_complete = true;
                break;
            }
        }
        if mode == Mode::Turn && self.outcome.pass_complete {
            self.live().await?;
        }
        Ok(())
    }

    /// Run one page of the current pass; true when the pass is complete.
    async fn step(&mut self) -> Result<bool, SyncError> {
        let state = &self.ctx.stores.state;
        let mut cur = state.cursor(self.relay)?;
        // A new pass re-checks `overlap_secs` below the last complete point: relays accept
        // events dated a little in the past, and those arrive after the window was proven.
        let floor = cur.done_until.map_or(0, |d| {
            d.saturating_add(1)
                .saturating_sub(self.ctx.cfg.overlap_secs)
        });
        let (top, frontier) = match (cur.pass_top, cur.pass_frontier) {
            (Some(t), Some(f)) => (t, f),
            _ => {
                let t = now();
                if cur.done_until.is_some_and(|d| d >= t) {
                    return Ok(true);
                }
                cur.pass_top = Some(t);
                cur.pass_frontier = Some(t);
                state.set_cursor(self.relay, &cur, 0, 0)?;
                (t, t)
            }
        };
        if self.caps.misordered_at.is_some() {
            return self.careful_step(cur, floor, top, frontier).await;
        }
        let mut res = match self.fetch_window(floor, frontier).await {
            Err(e) if too_large(&e) => return self.past_oversized(cur, floor, top, frontier).await,
            other => other?,
        };
        // `received` (every frame, junk included) bounds what the relay answered from above;
        // `n` (valid, in-window, distinct) from below. The learned cap grows only from the
        // lower bound, and "the relay had room" needs the upper bound below it, since invalid
        // or ephemeral events occupy answer slots too.
        let n = res.matching.len() as u64;
        let had_room = self.seen_cap > 0 && res.received < self.limit.min(self.seen_cap);
        self.seen_cap = self.seen_cap.max(n);
        let done = if res.answered.is_empty() {
            self.refuse_window_ignored(&res)?;
            // Nothing inside the window: only an empty answer proves the rest of it (a short
            // one does not: relays drop events after applying the limit, e.g. expired, deleted
            // or hidden without AUTH). Events outside the window (NIP-01 lets relays send them)
            // are stored and otherwise ignored, so an answer of only those counts as empty.
            true
        } else {
            // What an honest newest-first answer can prove: at most `limit` events, so nothing
            // below the limit-th newest; and no hole the relay skipped (checked below).
            let bulk = &res.answered[..res.answered.len().min(self.limit as usize)];
            if let Some((above, below, kept)) = suspicious_gap(bulk) {
                if self.gap_holds_events(floor, below, above).await? {
                    // The relay left out events newer than ones it sent: its order cannot be
                    // trusted, so this page proves nothing. From now on its windows are
                    // narrowed until answers are short (see `careful_step`).
                    self.caps.misordered_at = Some(now() as i64);
                    self.caps.misordered_cap = Some(kept as u64);
                    self.ctx.stores.state.set_caps(self.relay, &self.caps)?;
                    tracing::warn!(
                        relay = self.relay,
                        above,
                        below,
                        "relay sent events older than ones it left out; narrowing its windows"
                    );
                    state.set_cursor(self.relay, &cur, res.received, res.write.new_events)?;
                    return Ok(false);
                }
            }
            let m = bulk.last().copied().unwrap_or(frontier);
            if m < frontier {
                self.page_boundary(&mut cur, &res, m, floor).await?
            } else {
                // The whole answer sits in one second. If the relay had room for more, that
                // second is all there is; otherwise it may be saturated and must be proven.
                if !had_room {
                    self.resolve_second(frontier, std::mem::take(&mut res.matching), None)
                        .await?;
                }
                if frontier <= floor {
                    true
                } else {
                    cur.pass_frontier = Some(frontier - 1);
                    false
                }
            }
        };
        // The page's events are durable (fetch -> ingest -> write_page returned): now the cursor.
        self.save_cursor(cur, done, top, &res)
    }

    /// One page for a relay caught answering out of order: no order is assumed. A window
    /// `[since, frontier]` is proven only by an answer shorter than the relay's clamp (then it
    /// held everything the relay has there, in whatever order); a full answer halves the
    /// window, a proven one doubles it. A full answer for one second is a saturated second.
    async fn careful_step(
        &mut self,
        cur: Cursor,
        floor: u64,
        top: u64,
        frontier: u64,
    ) -> Result<bool, SyncError> {
        let span = frontier.saturating_sub(floor) + 1;
        let window = self.window.unwrap_or(span).clamp(1, span);
        let since = frontier + 1 - window;
        let mut res = match self.fetch_window(since, frontier).await {
            Err(e) if too_large(&e) => {
                self.reconnect().await?;
                if window > 1 {
                    self.window = Some(window / 2);
                    return Ok(false);
                }
                self.record_oversized(frontier)?;
                return self.advance(cur, Some(frontier), floor, top, &PageResult::default());
            }
            other => other?,
        };
        if res.answered.is_empty() {
            self.refuse_window_ignored(&res)?;
        }
        // Short = below the clamp recorded when the relay was caught AND below the largest
        // answer it gave in this session (a relay may lower its clamp; the first answer of a
        // session is never taken as short).
        let k = res.answered.len() as u64;
        let cap = self
            .caps
            .misordered_cap
            .unwrap_or(self.limit)
            .min(self.limit)
            .min(self.careful_max);
        self.careful_max = self.careful_max.max(k);
        let short = k < cap && res.received < self.limit;
        let proven_to = if short {
            self.window = Some(window.saturating_mul(2));
            Some(since)
        } else if window == 1 {
            self.resolve_second(frontier, std::mem::take(&mut res.matching), None)
                .await?;
            Some(frontier)
        } else {
            self.window = Some(window / 2);
            None
        };
        self.advance(cur, proven_to, floor, top, &res)
    }

    /// After a page that proved everything down to second `proven_to` (if anything): the pass
    /// is done once that reaches `floor`, else its frontier moves just below; then the cursor.
    fn advance(
        &mut self,
        mut cur: Cursor,
        proven_to: Option<u64>,
        floor: u64,
        top: u64,
        res: &PageResult,
    ) -> Result<bool, SyncError> {
        let done = match proven_to {
            Some(p) if p <= floor => true,
            Some(p) => {
                cur.pass_frontier = Some(p - 1);
                false
            }
            None => false,
        };
        if done {
            self.window = None;
        }
        self.save_cursor(cur, done, top, res)
    }

    /// The page `[floor, frontier]` broke the connection with an event over
    /// `network.max_message_bytes` (a relay would send it again forever at the same point).
    /// Smaller pages first (halving the limit) get the events before it; once the limit is 1,
    /// the newest event at or below the frontier is the big one: its second is found by
    /// bisection (a window reaching down to that second breaks the connection, one above it
    /// does not), recorded as unproven with the reason, and the pass goes on below it.
    async fn past_oversized(
        &mut self,
        cur: Cursor,
        floor: u64,
        top: u64,
        frontier: u64,
    ) -> Result<bool, SyncError> {
        self.reconnect().await?;
        if self.limit > 1 {
            self.saved_limit.get_or_insert(self.limit);
            self.limit = (self.limit / 2).max(1);
            return Ok(false);
        }
        // A relay that breaks every request (an oversized frame before each answer, say) has
        // no such event to get past: a request that matches nothing tells, and the session
        // fails as it did. So does a session that met too many of them.
        self.oversized += 1;
        let nothing = Filter {
            ids: vec!["00".repeat(32)],
            limit: Some(1),
            ..Filter::default()
        };
        self.fetch(vec![nothing.clone()], Some(nothing)).await?;
        if self.oversized > MAX_OVERSIZED_PER_SESSION {
            return Err(SyncError::Untrustworthy(format!(
                "more than {MAX_OVERSIZED_PER_SESSION} events over network.max_message_bytes in one session"
            )));
        }
        let (mut lo, mut hi) = (floor, frontier + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let probe = Filter {
                since: Some(mid),
                until: Some(frontier),
                limit: Some(1),
                ..Filter::default()
            };
            match self.fetch(vec![probe.clone()], Some(probe)).await {
                Err(e) if too_large(&e) => {
                    self.reconnect().await?;
                    lo = mid;
                }
                Err(e) => return Err(e),
                Ok(_) => hi = mid,
            }
        }
        self.record_oversized(lo)?;
        if let Some(l) = self.saved_limit.take() {
            self.limit = l;
        }
        self.advance(cur, Some(lo), floor, top, &PageResult::default())
    }

    fn record_oversized(&self, second: u64) -> Result<(), SyncError> {
        tracing::warn!(
            relay = self.relay,
            second,
            "an event over network.max_message_bytes; its second is recorded as unproven"
        );
        self.ctx.stores.state.record_unproven(
            self.relay,
            second,
            &format!(
                "an event here is larger than network.max_message_bytes ({} bytes)",
                self.ctx.max_message_bytes
            ),
        )?;
        Ok(())
    }

    /// A new websocket after the relay broke the last one.
    async fn reconnect(&mut self) -> Result<(), SyncError> {
        let link = connect(self.ctx, self.url).await?;
        let old = std::mem::replace(&mut self.link, link);
        self.link.notices = old.notices;
        Ok(())
    }

    /// Write the cursor after a page (its events are durable): a finished pass makes
    /// `done_until` its top.
    fn save_cursor(
        &self,
        cur: Cursor,
        done: bool,
        top: u64,
        res: &PageResult,
    ) -> Result<bool, SyncError> {
        let cur = if done {
            Cursor {
                done_until: Some(top),
                pass_top: None,
                pass_frontier: None,
            }
        } else {
            cur
        };
        self.ctx
            .stores
            .state
            .set_cursor(self.relay, &cur, res.received, res.write.new_events)?;
        Ok(done)
    }

    /// A full answer with not one event inside the asked window: the relay ignores
    /// `since`/`until`, so no answer of it can prove a window (an empty-looking one would end
    /// the pass early and skip its whole history).
    fn refuse_window_ignored(&self, res: &PageResult) -> Result<(), SyncError> {
        let full =
            res.received >= self.limit || (self.seen_cap >= 10 && res.received >= self.seen_cap);
        if full {
            return Err(SyncError::Untrustworthy(format!(
                "relay ignores since/until: a full answer of {} events held none inside the asked window",
                res.received
            )));
        }
        Ok(())
    }

    /// Whether the relay holds events strictly between `below` and `above` (a gap its answer
    /// claimed empty), asked directly.
    async fn gap_holds_events(
        &mut self,
        floor: u64,
        below: u64,
        above: u64,
    ) -> Result<bool, SyncError> {
        match self.fetch_window((below + 1).max(floor), above - 1).await {
            // The hole holds an event too large to receive: it is not empty.
            Err(e) if too_large(&e) => {
                self.reconnect().await?;
                Ok(true)
            }
            other => Ok(!other?.answered.is_empty()),
        }
    }

    /// One page of `[since, until]` at the session's limit; only its events count as matching.
    async fn fetch_window(&mut self, since: u64, until: u64) -> Result<PageResult, SyncError> {
        let f = Filter {
            since: Some(since),
            until: Some(until),
            limit: Some(self.limit),
            ..Filter::default()
        };
        self.fetch(vec![f.clone()], Some(f)).await
    }

    /// REQ -> ingest on a blocking thread -> counters.
    async fn fetch(
        &mut self,
        filters: Vec<Filter>,
        matching: Option<Filter>,
    ) -> Result<PageResult, SyncError> {
        self.requests += 1;
        let mut filters = filters;
        let mut reserved = None;
        let raw = loop {
            match self
                .link
                .request_with(filters.clone(), reserved.take())
                .await
            {
                Err(LinkError::PageTooLarge(max, fitted)) if self.limit > 1 => {
                    // Big events: ask for fewer per page so one page fits the memory budget
                    // (the lowered limit is used for the rest of the session): at most half,
                    // and no more than the frames that fitted before the page overflowed.
                    self.limit = (self.limit / 2).min(fitted as u64).max(1);
                    for f in &mut filters {
                        f.limit = f.limit.map(|l| l.min(self.limit));
                    }
                    tracing::info!(
                        relay = self.relay,
                        max_page_bytes = max,
                        limit = self.limit,
                        "page too large; lowering limit"
                    );
                }
                Err(LinkError::Busy) => {
                    // Not the relay's doing: other pages hold the memory. Wait in line for a
                    // whole page's worth, then ask again with it reserved: pages that each hold
                    // a part cannot keep waiting for each other.
                    let whole = self.ctx.cfg.max_page_mb << 20;
                    let shutdown = self.ctx.shutdown.clone();
                    reserved = tokio::select! {
                        r = super::link::take_budget(&self.ctx.buffer_budget, whole) => Some(r?),
                        _ = shutdown.wait() => return Err(SyncError::Shutdown),
                    };
                }
                other => break other?,
            }
        };
        let store = self.ctx.stores.events.clone();
        let limits = self.ctx.limits;
        let relay = self.relay;
        // The page's buffer permits go back once it is stored (or dropped).
        let res = tokio::task::spawn_blocking(move || {
            ingest(
                &store,
                relay,
                now(),
                &raw.frames,
                matching.as_ref(),
                &limits,
            )
        })
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
        let st = &self.ctx.stats;
        st.pages.fetch_add(1, Ordering::Relaxed);
        st.received.fetch_add(res.received, Ordering::Relaxed);
        st.new_events
            .fetch_add(res.write.new_events, Ordering::Relaxed);
        st.invalid.fetch_add(res.invalid, Ordering::Relaxed);
        st.verified.fetch_add(res.verified, Ordering::Relaxed);
        self.outcome.received += res.received;
        self.outcome.new_events += res.write.new_events;
        self.outcome.refused += res.invalid;
        Ok(res)
    }

    /// Re-try seconds recorded as unproven in earlier sessions (a relay may have gained NIP-77).
    async fn retry_unproven(&mut self) -> Result<(), SyncError> {
        // Nothing can prove a second on a relay known to offer neither NIP-77 nor COUNT. Those
        // verdicts expire (`VERDICT_TTL_SECS`), and then its unproven seconds are tried again.
        if self.caps.supports_negentropy == Some(false) && self.caps.supports_count == Some(false) {
            return Ok(());
        }
        // Bounded per session: the newest few, so one relay's backlog cannot eat every turn.
        let mut pending = self.ctx.stores.state.unproven(self.relay)?;
        pending.reverse();
        pending.truncate(MAX_UNPROVEN_RETRIES);
        for (second, _) in pending {
            if self.ctx.pause_reason().is_some() || self.ctx.shutdown.is_triggered() {
                return Ok(());
            }
            let res = match self.fetch_window(second, second).await {
                // Still holds an event over the size limit: it stays recorded as it is.
                Err(e) if too_large(&e) => {
                    self.reconnect().await?;
                    continue;
                }
                other => other?,
            };
            self.resolve_second(second, res.matching, None).await?;
        }
        Ok(())
    }

    /// Prove second `s` complete (or record why it cannot be), given what the relay sent for it.
    /// An event over the message size limit in it breaks the connection: the second is then
    /// recorded as unproven for that reason, on a new connection.
    /// `count`: an exact COUNT of the second already asked for, if any.
    async fn resolve_second(
        &mut self,
        s: u64,
        known: Vec<Matched>,
        count: Option<u64>,
    ) -> Result<(), SyncError> {
        match self.prove_second(s, known, count).await {
            Err(e) if too_large(&e) => {
                self.reconnect().await?;
                self.record_oversized(s)
            }
            other => other,
        }
    }

    /// A page of `[floor, ..]` ended inside second `m` (it may hold only part of it), so the
    /// next page is anchored at `m` and re-sends what this one holds of it; when `m` turns out
    /// saturated, that anchored page is `limit` events of `m` again before narrowing starts.
    /// When this page already holds a good part of the relay's answer size in `m` (rare in
    /// ordinary traffic: seconds hold a few events), an exact COUNT of `m` decides first: all
    /// of `m` held, or at least one answer's worth (saturated: narrowed at once, the held part
    /// passed on), settle `m` here and the pass moves below it. True when that completes the
    /// pass. COUNT is trusted here exactly as in `prove_second`.
    async fn page_boundary(
        &mut self,
        cur: &mut Cursor,
        res: &PageResult,
        m: u64,
        floor: u64,
    ) -> Result<bool, SyncError> {
        let clamp = self.limit.min(self.seen_cap.max(1));
        let at_m: Vec<Matched> = res
            .matching
            .iter()
            .filter(|x| x.created_at == m)
            .copied()
            .collect();
        let held = at_m.iter().map(|x| x.id).collect::<HashSet<_>>().len() as u64;
        if held * BOUNDARY_PROBE_SHARE >= clamp {
            if let Some(n) = self.exact_count(m).await? {
                // A COUNT below what the relay just sent is wrong (some relays answer 0): the
                // anchored page decides then, as without COUNT.
                if n == held || n >= clamp.max(held + 1) {
                    if n > held {
                        self.resolve_second(m, at_m, Some(n)).await?;
                    }
                    if m <= floor {
                        return Ok(true);
                    }
                    cur.pass_frontier = Some(m - 1);
                    return Ok(false);
                }
            }
        }
        cur.pass_frontier = Some(m);
        Ok(false)
    }

    /// An exact NIP-45 COUNT of second `s`, unless the relay refuses, stays silent or answers
    /// approximately (the verdicts are recorded as for any COUNT).
    async fn exact_count(&mut self, s: u64) -> Result<Option<u64>, SyncError> {
        if self.caps.supports_count == Some(false) || self.count_silent {
            return Ok(None);
        }
        let second = Filter {
            since: Some(s),
            until: Some(s),
            ..Filter::default()
        };
        self.requests += 1;
        match self.link.count(second).await? {
            Answer::Answered((n, approximate)) => {
                self.set_caps(|c| c.set_count(true))?;
                Ok((!approximate).then_some(n))
            }
            Answer::Refused => {
                self.set_caps(|c| c.set_count(false))?;
                Ok(None)
            }
            Answer::Silent => {
                self.count_silent = true;
                Ok(None)
            }
        }
    }

    async fn prove_second(
        &mut self,
        s: u64,
        known: Vec<Matched>,
        count: Option<u64>,
    ) -> Result<(), SyncError> {
        let mut got: HashSet<[u8; 32]> = known.iter().map(|m| m.id).collect();
        let second = Filter {
            since: Some(s),
            until: Some(s),
            ..Filter::default()
        };
        // Ids per REQ: within what the relay has shown it answers (100 when nothing is known
        // yet); a chunk it clamps anyway leaves ids missing, which is recorded, not hidden.
        let known_cap = if self.seen_cap > 0 {
            self.seen_cap
        } else {
            100
        };
        let chunk = self.limit.min(known_cap).max(1) as usize;
        let state = self.ctx.stores.state.clone();

        // 1. NIP-77: the exact set difference in a few round trips.
        if self.caps.supports_negentropy != Some(false) && !self.neg_silent {
            let items: Vec<(u64, [u8; 32])> = got.iter().map(|id| (s, *id)).collect();
            match self.link.negentropy(second.clone(), &items).await? {
                Answer::Answered(need) => {
                    self.set_caps(|c| c.set_negentropy(true))?;
                    for ids in need.chunks(chunk) {
                        let f = Filter {
                            ids: ids.iter().map(hex::encode).collect(),
                            limit: Some(ids.len() as u64),
                            ..second.clone()
                        };
                        let res = self.fetch(vec![f.clone()], Some(f)).await?;
                        got.extend(res.matching.iter().map(|m| m.id));
                    }
                    if need.iter().all(|id| got.contains(id)) {
                        state.clear_unproven(self.relay, s)?;
                        return Ok(());
                    }
                    let reason = "negentropy listed events the relay then did not serve";
                    state.record_unproven(self.relay, s, reason)?;
                    return Ok(());
                }
                Answer::Refused => self.set_caps(|c| c.set_negentropy(false))?,
                Answer::Silent => self.neg_silent = true,
            }
        }

        // 2. An exact COUNT, to know when narrowing has found everything.
        let count = match count {
            Some(n) => Some(n),
            None => self.exact_count(s).await?,
        };

        // 3. Narrow by kind, author, and author+kind, discovering new values from each answer.
        #[derive(Clone, PartialEq, Eq, Hash)]
        enum Subset {
            Kind(u16),
            Author([u8; 32]),
            AuthorKind([u8; 32], u16),
        }
        let mut queue: VecDeque<Subset> = VecDeque::new();
        let mut queued: HashSet<Subset> = HashSet::new();
        fn enqueue(queue: &mut VecDeque<Subset>, queued: &mut HashSet<Subset>, m: &Matched) {
            for sub in [Subset::Kind(m.kind), Subset::Author(m.pubkey)] {
                if queued.insert(sub.clone()) {
                    queue.push_back(sub);
                }
            }
        }
        // A full answer for the second whose events all share a kind (or an author) is already
        // what that subset's query would return: the relay ranks ties by id, so the first
        // `limit` (or the relay's silent clamp) of the second ARE the first of the subset. Asking again would only
        // send them twice (500 frames per saturated second of one kind).
        let clamp = self.limit.min(self.seen_cap.max(1));
        if known.len() as u64 >= clamp {
            if let Some(first) = known.first() {
                if known.iter().all(|m| m.kind == first.kind) {
                    queued.insert(Subset::Kind(first.kind));
                }
                if known.iter().all(|m| m.pubkey == first.pubkey) {
                    queued.insert(Subset::Author(first.pubkey));
                }
            }
        }
        // With the second's exact size known, a kind whose share of the known events says it
        // fills a whole answer by itself is asked for last: its answer would be the lowest ids
        // of the kind, mostly held already, while the authors' answers may finish the second.
        let mut deferred: VecDeque<Subset> = VecDeque::new();
        if let (Some(c), false) = (count, known.is_empty()) {
            let mut per_kind: HashMap<u16, u64> = HashMap::new();
            for m in &known {
                *per_kind.entry(m.kind).or_default() += 1;
            }
            for m in &known {
                let share = per_kind[&m.kind];
                let sub = Subset::Kind(m.kind);
                if c.saturating_mul(share) / known.len() as u64 >= clamp
                    && queued.insert(sub.clone())
                {
                    deferred.push_back(sub);
                }
            }
        }
        for m in &known {
            enqueue(&mut queue, &mut queued, m);
        }
        let mut saturated_leaf = false;
        let mut queries = 0;
        while let Some(sub) = queue.pop_front().or_else(|| deferred.pop_front()) {
            if count.is_some_and(|c| got.len() as u64 >= c) {
                break;
            }
            if queries >= self.ctx.cfg.max_narrowing_queries {
                saturated_leaf = true;
                break;
            }
            queries += 1;
            let mut f = second.clone();
            f.limit = Some(self.limit);
            match &sub {
                Subset::Kind(k) => f.kinds = vec![*k],
                Subset::Author(a) => f.authors = vec![hex::encode(a)],
                Subset::AuthorKind(a, k) => {
                    f.authors = vec![hex::encode(a)];
                    f.kinds = vec![*k];
                }
            }
            let res = self.fetch(vec![f.clone()], Some(f)).await?;
            got.extend(res.matching.iter().map(|m| m.id));
            let saturated = res.matching.len() as u64 >= self.limit.min(self.seen_cap.max(1));
            for m in &res.matching {
                enqueue(&mut queue, &mut queued, m);
            }
            if saturated {
                match sub {
                    Subset::Author(a) => {
                        let kinds: HashSet<u16> = res.matching.iter().map(|m| m.kind).collect();
                        for k in kinds {
                            let s = Subset::AuthorKind(a, k);
                            if queued.insert(s.clone()) {
                                queue.push_back(s);
                            }
                        }
                    }
                    Subset::AuthorKind(..) => saturated_leaf = true,
                    Subset::Kind(_) => {}
                }
            }
        }
        match count {
            Some(c) if got.len() as u64 >= c => {
                state.clear_unproven(self.relay, s)?;
            }
            Some(c) => {
                let reason = format!(
                    "COUNT reports {c} events in this second, narrowing found {}",
                    got.len()
                );
                state.record_unproven(self.relay, s, &reason)?;
            }
            None => {
                let reason = if saturated_leaf {
                    "saturated even narrowed to one author and kind; relay offers no NIP-77 or exact COUNT"
                } else {
                    "relay offers no NIP-77 or exact COUNT to prove the narrowed second complete"
                };
                state.record_unproven(self.relay, s, reason)?;
            }
        }
        Ok(())
    }

    fn set_caps(&mut self, f: impl FnOnce(&mut RelayCaps)) -> Result<(), SyncError> {
        f(&mut self.caps);
        self.ctx.stores.state.set_caps(self.relay, &self.caps)?;
        Ok(())
    }

    /// Live subscription for new events until the turn ends or shutdown. Events are stored in
    /// small batches; they never move the cursor (the next pass proves the window).
    async fn live(&mut self) -> Result<(), SyncError> {
        let sub = self.link.new_sub("live");
        self.link
            .send(&ClientMessage::Req {
                sub: sub.clone(),
                filters: vec![Filter {
                    since: Some(now()),
                    ..Filter::default()
                }],
            })
            .await?;
        let prefix = format!("[\"EVENT\",\"{sub}\",");
        let end = tokio::time::Instant::now() + Duration::from_secs(self.ctx.cfg.live_turn_secs);
        let idle = Duration::from_secs(self.ctx.cfg.idle_timeout_secs);
        let mut buf: Vec<String> = Vec::new();
        let mut last_flush = tokio::time::Instant::now();
        // Last time anything arrived or a ping went out: a quiet relay is pinged once per idle
        // period, not once per second.
        let mut last_activity = tokio::time::Instant::now();
        loop {
            let now_i = tokio::time::Instant::now();
            if now_i >= end || self.ctx.shutdown.is_triggered() {
                break;
            }
            let wait = idle.min(end - now_i).min(Duration::from_secs(1));
            let shutdown = self.ctx.shutdown.clone();
            let next = tokio::select! {
                r = self.link.recv_live(wait) => r?,
                _ = shutdown.wait() => None,
            };
            if next.is_some() {
                last_activity = tokio::time::Instant::now();
            }
            match next {
                Some(text) if crate::protocol::message::is_event_for(&text, &prefix, &sub) => {
                    buf.push(text)
                }
                Some(text) => {
                    if text.starts_with("[\"CLOSED\"") && text.contains(&sub) {
                        break;
                    }
                    self.link.handle_side(&text).await?;
                }
                None => {
                    if last_activity.elapsed() >= idle {
                        self.link.ping().await?;
                        last_activity = tokio::time::Instant::now();
                    }
                }
            }
            let buffered: usize = buf.iter().map(String::len).sum();
            if buf.len() >= 200
                || buffered >= 1 << 20
                || (!buf.is_empty() && last_flush.elapsed() >= Duration::from_secs(1))
            {
                self.flush_live(std::mem::take(&mut buf)).await?;
                last_flush = tokio::time::Instant::now();
                // Invariant 4 holds in live mode too: stop storing when the disk or spool is
                // full. Checked per flush (at most ~1/s), not per frame: it costs a statvfs.
                if self.ctx.pause_reason().is_some() {
                    break;
                }
            }
        }
        self.flush_live(buf).await?;
        let _ = self.link.send(&ClientMessage::Close { sub }).await;
        Ok(())
    }

    async fn flush_live(&mut self, frames: Vec<String>) -> Result<(), SyncError> {
        if frames.is_empty() {
            return Ok(());
        }
        let bytes: usize = frames.iter().map(String::len).sum();
        let _permits = super::link::take_budget(&self.ctx.buffer_budget, bytes).await?;
        let store = self.ctx.stores.events.clone();
        let limits = self.ctx.limits;
        let relay = self.relay;
        let res = tokio::task::spawn_blocking(move || {
            ingest(&store, relay, now(), &frames, None, &limits)
        })
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
        self.ctx
            .stats
            .received
            .fetch_add(res.received, Ordering::Relaxed);
        self.ctx
            .stats
            .new_events
            .fetch_add(res.write.new_events, Ordering::Relaxed);
        self.outcome.received += res.received;
        self.outcome.new_events += res.write.new_events;
        Ok(())
    }
}

/// In a newest-first list of answered `created_at` values, a hole that dwarfs the span of the
/// answer above it (twice that span and more than a minute): `(above, below, kept)` with the
/// times either side and how many values lie above. Relays with unsorted storage, buggy
/// ordering or stale caches add a few much older events to a correct answer; the hole between
/// is where the events they left out would be, so it is asked for directly before the answer
/// is believed. An honest relay's hole is empty and costs one empty answer.
fn suspicious_gap(times: &[u64]) -> Option<(u64, u64, usize)> {
    let (j, gap) = times
        .windows(2)
        .enumerate()
        .map(|(j, w)| (j + 1, w[0] - w[1]))
        .max_by_key(|&(_, g)| g)?;
    let above_span = times[0] - times[j - 1];
    (gap > 60 && gap > 2 * above_span).then(|| (times[j - 1], times[j], j))
}

#[cfg(test)]
mod tests {
    use super::suspicious_gap;

    #[test]
    fn a_far_older_tail_is_suspicious_and_a_dense_answer_is_not() {
        // 5 events in one minute, then 2 from a day earlier.
        let t = [10_000, 9_990, 9_980, 9_970, 9_960, 1_000, 900];
        assert_eq!(suspicious_gap(&t), Some((9_960, 1_000, 5)));
        // Evenly spread: no hole stands out.
        let even: Vec<u64> = (0..100).map(|i| 100_000 - i * 1_000).collect();
        assert_eq!(suspicious_gap(&even), None);
        // Small holes (a few seconds) are never probed.
        assert_eq!(suspicious_gap(&[100, 100, 99, 40]), None);
        // All in one second, one stray: probed.
        assert_eq!(suspicious_gap(&[500, 500, 500, 100]), Some((500, 100, 3)));
        assert_eq!(suspicious_gap(&[500]), None);
    }
}
