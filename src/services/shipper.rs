//! The Shipper: drains the RocksDB spool into the central archive, in batches.
//!
//! Invariant 3 (ARCHITECTURE.md), kept here: a spool entry leaves the spool only after the
//! archive's COMMIT that contains it. Each batch is ONE call of `ingest_batch` (one statement,
//! hence one transaction) carrying the batch's relays, events and sightings as arrays; entries are
//! acked (deleted) only after that call returned. A crash or lost connection at any instant
//! replays the batch, which the archive's ON CONFLICT DO NOTHING makes harmless.
//!
//! Failures:
//! - transient (archive or PgBouncer down, restart, deadlock, timeout): retried with exponential
//!   backoff and jitter, forever in `run`, up to `upstream.give_up_secs` without progress in
//!   `ship --once`. The node keeps collecting meanwhile; the synchronizer pauses at the spool
//!   quota (`spool.max_entries`).
//! - a row the archive cannot take (U+0000 in text, a size limit): the batch is split in halves
//!   until the offending entries are found; they are set aside in the store's quarantine and
//!   counted (`ship_rejected`), and the rest ships. One bad row never blocks the spool.
//! - a sighting of an event the archive lacks (the spool was enabled after events were stored):
//!   the batch is resent with those events.
//! - setup problems (wrong password, schema not migrated, missing grant): retried slowly, with
//!   the operator's next step in the log and in `bigbrotr status`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio_postgres::types::Type;

use crate::archive::{ArchiveError, Failure, Pool};
use crate::config::UpstreamConfig;
use crate::protocol::Event;
use crate::shutdown::Shutdown;
use crate::store::events::{SPOOL_EVENT, SPOOL_SEEN};
use crate::store::health::ShipObservation;
use crate::store::state::RelayRow;
use crate::store::Stores;

/// Registry relays sent per batch (relays no event was seen on yet).
const REGISTRY_PER_BATCH: usize = 1000;
/// Monitor observations sent per `ingest_observations` call.
const OBSERVATIONS_PER_CALL: usize = 500;
/// Statement failures on the same batch head after which any refusal (not only a data error)
/// makes the shipper split the batch to find the entries that cause it.
const SUSPECT_AFTER: u32 = 3;

pub struct ShipContext {
    pub stores: Stores,
    pub pool: Arc<Pool>,
    /// The node's public key: its identity in the archive's `node` table.
    pub node_key: [u8; 32],
    pub cfg: UpstreamConfig,
    /// Evict shipped events (see [`super::retention`]); `None` keeps everything.
    pub retention: Option<super::retention::Retention>,
    pub shutdown: Shutdown,
}

/// How often retention sweeps while the shipper runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Start a retention sweep on a blocking thread when one is due and none is running; log the
/// one that finished.
async fn tend_retention(
    ctx: &ShipContext,
    sweeping: &mut Option<tokio::task::JoinHandle<Result<super::retention::Swept, String>>>,
    last: &mut Option<Instant>,
    force: bool,
) {
    let Some(r) = &ctx.retention else {
        return;
    };
    if sweeping.as_ref().is_some_and(|h| !h.is_finished()) && !force {
        return;
    }
    if let Some(h) = sweeping.take() {
        log_sweep(h.await.map_err(|e| e.to_string()).and_then(|r| r));
    }
    if !force && last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    let (r, events) = (r.clone(), ctx.stores.events.clone());
    let h = tokio::task::spawn_blocking(move || r.sweep(&events, now()).map_err(|e| e.to_string()));
    if force {
        log_sweep(h.await.map_err(|e| e.to_string()).and_then(|r| r));
    } else {
        *sweeping = Some(h);
    }
}

fn log_sweep(r: Result<super::retention::Swept, String>) {
    match r {
        Ok(s) if s.events > 0 => tracing::info!(
            events = s.events,
            mib = s.bytes >> 20,
            under_disk_pressure = s.under_pressure,
            "evicted shipped events (ids and sightings kept)"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "retention sweep failed"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("the archive stayed unreachable for {secs} s: {last}")]
    GaveUp { secs: u64, last: String },
    #[error("local store: {0}")]
    Store(String),
}

/// What `bigbrotr status` shows (service_state shipper/stats).
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ShipStats {
    pub state: String,
    pub batches: u64,
    pub events_sent: u64,
    pub events_new: u64,
    pub sightings_sent: u64,
    pub sightings_new: u64,
    pub rejected: u64,
    pub observations_sent: u64,
    pub observations_rejected: u64,
    pub retries: u64,
    pub last_ok_at: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub archive: String,
}

/// One spool entry, resolved for shipping.
struct Item {
    seq: u64,
    rec: Vec<u8>,
    id: [u8; 32],
    relay: u32,
    seen_at: u64,
    /// The event for an `E` entry (and for an `S` entry once the archive asked for it).
    event: Option<Event>,
}

#[derive(Clone)]
struct RelayInfo {
    url: String,
    network: String,
    discovered_at: i64,
}

#[derive(Default)]
struct Outcome {
    events_sent: u64,
    events_new: u64,
    sightings_sent: u64,
    sightings_new: u64,
    rejected: Vec<(u64, Vec<u8>, String)>,
}

impl Outcome {
    /// Add one `ingest_batch` call's (events new, sightings new, events sent, sightings sent).
    fn count(&mut self, (en, sn, es, ss): (u64, u64, u64, u64)) {
        self.events_new += en;
        self.sightings_new += sn;
        self.events_sent += es;
        self.sightings_sent += ss;
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drain the spool. `once`: return Ok when it is empty (and every registry relay was sent);
/// otherwise run until shutdown.
pub async fn run(ctx: &ShipContext, once: bool) -> Result<ShipStats, ShipError> {
    let state = &ctx.stores.state;
    let mut stats: ShipStats = state
        .get_state("shipper", "stats")
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    stats.archive = ctx.pool.target().shown.clone();
    let mut relay_wm: u32 = state
        .get_state("shipper", "relay_watermark")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut obs_wm: i64 = state
        .get_state("shipper", "observation_watermark")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut relays: HashMap<u32, RelayInfo> = HashMap::new();
    let mut failing_since: Option<Instant> = None;
    let mut attempt: u32 = 0;
    let mut last_report = Instant::now() - Duration::from_secs(60);
    // Entries per batch: halved while the archive refuses batches, doubled back on success.
    let mut batch_limit = ctx.cfg.batch_size;
    // (head seq of the failing batch, consecutive statement failures on it)
    let mut stuck: (Option<u64>, u32) = (None, 0);
    let (mut sweeping, mut last_sweep) = (None, None);
    loop {
        tend_retention(ctx, &mut sweeping, &mut last_sweep, false).await;
        if ctx.shutdown.is_triggered() {
            stats.state = "stopped".into();
            save(ctx, &stats);
            return Ok(stats);
        }
        let store_err = |e: &dyn std::fmt::Display| ShipError::Store(e.to_string());
        let entries = ctx
            .stores
            .events
            .spool_peek(batch_limit * ctx.cfg.connections)
            .map_err(|e| store_err(&e))?;
        let registry = state
            .relays_after(relay_wm, REGISTRY_PER_BATCH)
            .map_err(|e| store_err(&e))?;
        let observations = state
            .observations_after(obs_wm, OBSERVATIONS_PER_CALL, ctx.cfg.batch_max_mb << 20)
            .map_err(|e| store_err(&e))?;
        if entries.is_empty() && registry.is_empty() && observations.is_empty() {
            if once {
                // Everything is shipped: evict what retention lets go before exiting.
                tend_retention(ctx, &mut sweeping, &mut last_sweep, true).await;
                stats.state = "idle".into();
                save(ctx, &stats);
                return Ok(stats);
            }
            if stats.state != "idle" || last_report.elapsed() > Duration::from_secs(10) {
                stats.state = "idle".into();
                save(ctx, &stats);
                last_report = Instant::now();
            }
            ctx.shutdown
                .sleep(Duration::from_secs(ctx.cfg.poll_secs))
                .await;
            continue;
        }
        let (mut items, mut rejected, last_seq) = resolve(
            &ctx.stores,
            entries,
            &mut relays,
            (ctx.cfg.batch_max_mb << 20) * ctx.cfg.connections,
        )
        .map_err(|e| store_err(&e))?;
        for r in &registry {
            relays.entry(r.id).or_insert_with(|| info_of(r));
        }
        let head = last_seq.map(|_| items.first().map_or(0, |i| i.seq));
        let suspect = stuck.0 == head && stuck.1 >= SUSPECT_AFTER;
        let result = match ship_parallel(ctx, &mut items, &relays, suspect).await {
            Ok(mut out) => {
                rejected.append(&mut out.rejected);
                for (seq, _, reason) in &rejected {
                    tracing::warn!(seq, reason = %reason, "spool entry rejected by the archive; set aside");
                }
                ctx.stores
                    .events
                    .spool_settle(&rejected, last_seq)
                    .map_err(|e| store_err(&e))?;
                stats.batches += u64::from(last_seq.is_some());
                stats.events_sent += out.events_sent;
                stats.events_new += out.events_new;
                stats.sightings_sent += out.sightings_sent;
                stats.sightings_new += out.sightings_new;
                stats.rejected += rejected.len() as u64;
                stuck = (None, 0);
                batch_limit = (batch_limit * 2).min(ctx.cfg.batch_size);
                match ship_registry(ctx, &registry, &relays).await {
                    Ok(()) => ship_observations(ctx, &observations).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(refused) => {
                if let Some(last) = observations.last() {
                    obs_wm = last.id;
                    state
                        .set_state("shipper", "observation_watermark", &obs_wm.to_string())
                        .map_err(|e| store_err(&e))?;
                    stats.observations_sent += (observations.len() - refused) as u64;
                    stats.observations_rejected += refused as u64;
                }
                if let Some(max) = registry.iter().map(|r| r.id).max() {
                    relay_wm = max;
                    state
                        .set_state("shipper", "relay_watermark", &relay_wm.to_string())
                        .map_err(|e| store_err(&e))?;
                }
                stats.last_ok_at = Some(now());
                stats.state = "shipping".into();
                if failing_since.take().is_some() {
                    tracing::info!(archive = %stats.archive, "archive reachable again; shipping");
                }
                attempt = 0;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    save(ctx, &stats);
                    last_report = Instant::now();
                }
            }
            Err(e) => {
                if e.is_refusal() || e.is_timeout() {
                    // The archive refused or timed out on this batch: smaller batches next.
                    batch_limit = (batch_limit / 2).max(1);
                }
                if e.is_refusal() {
                    // After a few refusals of the same head, hunt for the entries that cause it.
                    stuck = if stuck.0 == head {
                        (head, stuck.1 + 1)
                    } else {
                        (head, 1)
                    };
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                let msg = match e.hint() {
                    Some(h) => format!("{e} ({h})"),
                    None => e.to_string(),
                };
                stats.retries += 1;
                stats.last_error = Some(msg.clone());
                stats.last_error_at = Some(now());
                stats.state = "retrying".into();
                save(ctx, &stats);
                last_report = Instant::now();
                if once && since.elapsed() >= Duration::from_secs(ctx.cfg.give_up_secs) {
                    return Err(ShipError::GaveUp {
                        secs: since.elapsed().as_secs(),
                        last: msg,
                    });
                }
                let delay = backoff(&ctx.cfg, attempt, e.failure());
                attempt = attempt.saturating_add(1);
                tracing::warn!(archive = %stats.archive, error = %msg,
                    retry_in_ms = delay.as_millis() as u64, "shipping failed; will retry");
                ctx.pool.clear();
                ctx.shutdown.sleep(delay).await;
            }
        }
    }
}

/// Ship `items` as up to `upstream.connections` batches at once, one transaction each (the
/// archive has more than one core; one stream leaves it idle half the time). All or nothing
/// for the caller: if any batch fails, nothing is acked and the batches that did commit are
/// replayed later, harmlessly.
async fn ship_parallel(
    ctx: &ShipContext,
    items: &mut [Item],
    relays: &HashMap<u32, RelayInfo>,
    suspect: bool,
) -> Result<Outcome, ArchiveError> {
    // Group by event id, so an event and its other sightings travel in the same transaction
    // (a sighting in another, uncommitted batch would fail its foreign key check at once).
    let n = ctx.cfg.connections.max(1);
    items.sort_by_key(|it| (it.id[0] as usize % n, it.seq));
    let mut chunks: Vec<&mut [Item]> = Vec::with_capacity(n);
    let mut rest = items;
    for k in 0..n {
        let len = rest
            .iter()
            .take_while(|it| it.id[0] as usize % n == k)
            .count();
        let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(len);
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        rest = tail;
    }
    let results = futures_util::future::join_all(
        chunks
            .into_iter()
            .map(|chunk| ship_all(ctx, chunk, relays, suspect)),
    )
    .await;
    let mut out = Outcome::default();
    for r in results {
        let mut o = r?;
        out.count((
            o.events_new,
            o.sightings_new,
            o.events_sent,
            o.sightings_sent,
        ));
        out.rejected.append(&mut o.rejected);
    }
    Ok(out)
}

/// Registry relays no event mentioned yet, in a call of their own (so a refused relay never
/// blames an event). A relay the archive refuses as data is skipped: it will arrive with the
/// first event seen on it.
async fn ship_registry(
    ctx: &ShipContext,
    registry: &[RelayRow],
    relays: &HashMap<u32, RelayInfo>,
) -> Result<(), ArchiveError> {
    if registry.is_empty() {
        return Ok(());
    }
    match call(ctx, &[], registry, relays).await {
        Ok(_) => Ok(()),
        Err(e) if e.failure() == Failure::Data => {
            tracing::warn!(error = %e, "registry relays refused by the archive; skipped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Monitor observations (relay health per check, from this vantage node) in one
/// `ingest_observations` call. If the archive refuses the call as data, each observation is
/// sent alone and the refused ones are skipped (logged and counted): one odd document never
/// blocks the history behind it. Returns how many were refused.
async fn ship_observations(
    ctx: &ShipContext,
    obs: &[ShipObservation],
) -> Result<usize, ArchiveError> {
    if obs.is_empty() {
        return Ok(0);
    }
    match call_observations(ctx, obs).await {
        Ok(()) => Ok(0),
        Err(e) if e.failure() == Failure::Data => {
            let mut refused = 0;
            for o in obs {
                match call_observations(ctx, std::slice::from_ref(o)).await {
                    Ok(()) => {}
                    Err(e) if e.failure() == Failure::Data => {
                        tracing::warn!(relay = %o.url, check = %o.kind, error = %e,
                            "observation refused by the archive; skipped");
                        refused += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(refused)
        }
        Err(e) => Err(e),
    }
}

async fn call_observations(ctx: &ShipContext, obs: &[ShipObservation]) -> Result<(), ArchiveError> {
    let url: Vec<&str> = obs.iter().map(|o| o.url.as_str()).collect();
    let net: Vec<&str> = obs.iter().map(|o| o.network.as_str()).collect();
    let at: Vec<i64> = obs.iter().map(|o| o.checked_at).collect();
    let kind: Vec<&str> = obs.iter().map(|o| o.kind.as_str()).collect();
    let data: Vec<&str> = obs.iter().map(|o| o.data.as_str()).collect();
    let node = &ctx.node_key[..];
    let mut conn = ctx.pool.get().await?;
    conn.query_typed(
        "SELECT ingest_observations($1, $2, $3, $4, $5, $6)",
        &[
            (&node, Type::BYTEA),
            (&url, Type::TEXT_ARRAY),
            (&net, Type::TEXT_ARRAY),
            (&at, Type::INT8_ARRAY),
            (&kind, Type::TEXT_ARRAY),
            (&data, Type::TEXT_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

fn save(ctx: &ShipContext, stats: &ShipStats) {
    if let Ok(v) = serde_json::to_string(stats) {
        let _ = ctx.stores.state.set_state("shipper", "stats", &v);
    }
}

/// Exponential backoff with jitter (a random 50-100 % of the step); setup problems start at
/// the maximum's quarter, since someone has to fix them first.
fn backoff(cfg: &UpstreamConfig, attempt: u32, failure: Failure) -> Duration {
    let min = cfg.retry_min_secs.max(1) as f64;
    let max = cfg.retry_max_secs.max(cfg.retry_min_secs) as f64;
    let mut step = min * 2f64.powi(attempt.min(30) as i32);
    if failure == Failure::Setup {
        step = step.max(max / 4.0);
    }
    let step = step.min(max);
    Duration::from_secs_f64(step * rand::thread_rng().gen_range(0.5..=1.0))
}

fn info_of(r: &RelayRow) -> RelayInfo {
    RelayInfo {
        url: r.url.clone(),
        network: r.network.clone(),
        discovered_at: r.discovered_at,
    }
}

/// Decode spool records, load their events and relay URLs, until about `max_bytes` of events.
/// Entries that cannot be shipped at all (malformed record, event gone from the store, unknown
/// relay, values PostgreSQL cannot hold) come back as rejected with the reason. Returns the
/// last seq taken (items and rejected), the point to ack through.
#[allow(clippy::type_complexity)]
fn resolve(
    stores: &Stores,
    entries: Vec<(u64, Vec<u8>)>,
    relays: &mut HashMap<u32, RelayInfo>,
    max_bytes: usize,
) -> Result<(Vec<Item>, Vec<(u64, Vec<u8>, String)>, Option<u64>), Box<dyn std::error::Error>> {
    let mut items = Vec::with_capacity(entries.len());
    let mut rejected = Vec::new();
    let mut bytes = 0usize;
    let mut last_seq = None;
    for (seq, rec) in entries {
        if bytes >= max_bytes && !items.is_empty() {
            break;
        }
        last_seq = Some(seq);
        let parsed =
            (rec.len() == 45 && (rec[0] == SPOOL_EVENT || rec[0] == SPOOL_SEEN)).then(|| {
                let id: [u8; 32] = rec[1..33].try_into().unwrap_or([0; 32]);
                let relay = u32::from_be_bytes(rec[33..37].try_into().unwrap_or([0; 4]));
                let seen_at = u64::from_be_bytes(rec[37..45].try_into().unwrap_or([0; 8]));
                (rec[0], id, relay, seen_at)
            });
        let Some((tag, id, relay, seen_at)) = parsed else {
            rejected.push((seq, rec, "malformed spool record".into()));
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(v) = relays.entry(relay) {
            match stores.state.relay_by_id(relay)? {
                Some(r) => {
                    v.insert(info_of(&r));
                }
                None => {
                    rejected.push((seq, rec, format!("relay #{relay} is not in the registry")));
                    continue;
                }
            }
        }
        let event = if tag == SPOOL_EVENT {
            match stores.events.get(&id)? {
                Some(ev) => Some(ev),
                None => {
                    rejected.push((
                        seq,
                        rec,
                        "event is no longer in the store (evicted after shipping, or quarantined as corrupt)".into(),
                    ));
                    continue;
                }
            }
        } else {
            None
        };
        if let Some(reason) = event.as_ref().and_then(unstorable) {
            rejected.push((seq, rec, reason));
            continue;
        }
        bytes += 200
            + event.as_ref().map_or(0, |e| {
                e.content.len() + e.tags.iter().flatten().map(|t| t.len() + 4).sum::<usize>()
            });
        items.push(Item {
            seq,
            rec,
            id,
            relay,
            seen_at,
            event,
        });
    }
    Ok((items, rejected, last_seq))
}

/// Why PostgreSQL cannot store this event faithfully, if it cannot: `text` and `jsonb` have no
/// U+0000, and `bigint` ends at 2^63. (Everything else a verified event holds, it can.)
fn unstorable(ev: &Event) -> Option<String> {
    if i64::try_from(ev.created_at).is_err() {
        return Some("created_at beyond PostgreSQL bigint".into());
    }
    let nul_in_tags = ev.tags.iter().flatten().any(|s| s.contains('\0'));
    (ev.content.contains('\0') || nul_in_tags)
        .then(|| "contains U+0000, which PostgreSQL text cannot store".to_string())
}

/// Ship `items`, splitting around rows the archive refuses. A data error (or, when `suspect`,
/// any refusal of the statement) splits the range in halves; a single entry is set aside only
/// if an empty batch then succeeds, proving the archive itself works and the entry is the cause.
async fn ship_all(
    ctx: &ShipContext,
    items: &mut [Item],
    relays: &HashMap<u32, RelayInfo>,
    suspect: bool,
) -> Result<Outcome, ArchiveError> {
    let mut out = Outcome::default();
    if items.is_empty() {
        return Ok(out);
    }
    // A stack of ranges still to ship.
    let mut todo = vec![(0usize, items.len())];
    let mut loaded_sighting_events = false;
    while let Some((a, b)) = todo.pop() {
        let e = match call(ctx, &items[a..b], &[], relays).await {
            Ok(counts) => {
                out.count(counts);
                continue;
            }
            Err(e) => e,
        };
        if e.failure() == Failure::MissingEvent && !loaded_sighting_events {
            // Sightings of events the archive never got: send those events too.
            for it in items.iter_mut().filter(|i| i.event.is_none()) {
                it.event = ctx
                    .stores
                    .events
                    .get(&it.id)
                    .map_err(|e| ArchiveError::Other(format!("local store: {e}")))?
                    .filter(|ev| unstorable(ev).is_none());
            }
            loaded_sighting_events = true;
            todo.push((a, b));
            continue;
        }
        // Under suspicion, any refusal (a trigger raising, say) splits too. A timeout, restart,
        // deadlock or lost connection never does: those are retried whole, so no entry is
        // blamed for the archive's trouble.
        let split = matches!(e.failure(), Failure::Data | Failure::MissingEvent)
            || (suspect && e.is_refusal());
        if !split || !e.is_refusal() {
            return Err(e);
        }
        if b - a > 1 {
            let mid = a + (b - a) / 2;
            todo.push((mid, b));
            todo.push((a, mid));
            continue;
        }
        // One entry refused: is it the entry, or the archive? An empty batch must pass, and
        // the entry must then be refused again the same way.
        call(ctx, &[], &[], relays).await?;
        match call(ctx, &items[a..b], &[], relays).await {
            Ok(counts) => out.count(counts),
            Err(again) if again.is_refusal() && again.code() == e.code() => {
                let it = &items[a];
                out.rejected
                    .push((it.seq, it.rec.clone(), again.to_string()));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(out)
}

/// One `ingest_batch` call. Returns (events new, sightings new, events sent, sightings sent).
async fn call(
    ctx: &ShipContext,
    items: &[Item],
    registry: &[RelayRow],
    relays: &HashMap<u32, RelayInfo>,
) -> Result<(u64, u64, u64, u64), ArchiveError> {
    let mut relay_seen: HashSet<&str> = HashSet::new();
    let (mut r_url, mut r_net, mut r_found) = (Vec::new(), Vec::new(), Vec::new());
    let mentioned = registry
        .iter()
        .filter_map(|r| relays.get(&r.id))
        .chain(items.iter().filter_map(|it| relays.get(&it.relay)));
    for info in mentioned {
        if relay_seen.insert(info.url.as_str()) {
            r_url.push(info.url.as_str());
            r_net.push(info.network.as_str());
            r_found.push(info.discovered_at);
        }
    }
    let mut ev_seen: HashSet<&[u8; 32]> = HashSet::new();
    let n = items.len();
    let (mut id, mut pk, mut ca, mut kind) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut tags, mut content, mut sig) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut s_id, mut s_url, mut s_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for it in items {
        let Some(info) = relays.get(&it.relay) else {
            continue;
        };
        if let Some(ev) = &it.event {
            if ev_seen.insert(&ev.id) {
                id.push(&ev.id[..]);
                pk.push(&ev.pubkey[..]);
                ca.push(ev.created_at as i64);
                kind.push(ev.kind as i32);
                tags.push(serde_json::to_string(&ev.tags).unwrap_or_else(|_| "[]".into()));
                content.push(ev.content.as_str());
                sig.push(&ev.sig[..]);
            }
        }
        s_id.push(&it.id[..]);
        s_url.push(info.url.as_str());
        s_at.push(it.seen_at as i64);
    }
    let node = &ctx.node_key[..];
    let mut conn = ctx.pool.get().await?;
    let rows = conn
        .query_typed(
            "SELECT events_new, sightings_new FROM ingest_batch(\
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                (&node, Type::BYTEA),
                (&r_url, Type::TEXT_ARRAY),
                (&r_net, Type::TEXT_ARRAY),
                (&r_found, Type::INT8_ARRAY),
                (&id, Type::BYTEA_ARRAY),
                (&pk, Type::BYTEA_ARRAY),
                (&ca, Type::INT8_ARRAY),
                (&kind, Type::INT4_ARRAY),
                (&tags, Type::TEXT_ARRAY),
                (&content, Type::TEXT_ARRAY),
                (&sig, Type::BYTEA_ARRAY),
                (&s_id, Type::BYTEA_ARRAY),
                (&s_url, Type::TEXT_ARRAY),
                (&s_at, Type::INT8_ARRAY),
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| ArchiveError::Other("ingest_batch returned no row".into()))?;
    let en: i64 = row.get(0);
    let sn: i64 = row.get(1);
    Ok((en as u64, sn as u64, id.len() as u64, s_id.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cfg = UpstreamConfig {
            retry_min_secs: 1,
            retry_max_secs: 60,
            ..Default::default()
        };
        for _ in 0..50 {
            let d0 = backoff(&cfg, 0, Failure::Transient).as_secs_f64();
            assert!((0.5..=1.0).contains(&d0), "{d0}");
            let d3 = backoff(&cfg, 3, Failure::Transient).as_secs_f64();
            assert!((4.0..=8.0).contains(&d3), "{d3}");
            let d30 = backoff(&cfg, 30, Failure::Transient).as_secs_f64();
            assert!((30.0..=60.0).contains(&d30), "{d30}");
            let s0 = backoff(&cfg, 0, Failure::Setup).as_secs_f64();
            assert!((7.5..=15.0).contains(&s0), "{s0}");
        }
    }

    #[test]
    fn nul_text_is_unstorable() {
        let mut ev = Event {
            id: [1; 32],
            pubkey: [2; 32],
            created_at: 1,
            kind: 1,
            tags: vec![vec!["t".into(), "ok".into()]],
            content: "fine".into(),
            sig: [3; 64],
        };
        assert!(unstorable(&ev).is_none());
        ev.content = "a\0b".into();
        assert!(unstorable(&ev).is_some());
        ev.content = "ok".into();
        ev.tags.push(vec!["e".into(), "\0".into()]);
        assert!(unstorable(&ev).is_some());
    }
}
