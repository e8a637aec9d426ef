//! The Monitor: relay health from this node's vantage point, kept as history, published, and
//! shipped upstream.
//!
//! Per relay, three checks on their own schedules ([`crate::config::MonitorConfig`]): a cheap
//! open (websocket handshake), the NIP-11 document, and the full NIP-66 round trips (open, read,
//! write) with DNS and network facts. Results go to SQLite ([`crate::store::health`]): current
//! status, consecutive failures with backoff, history, content-addressed documents. The shipper
//! sends the history upstream; with `monitor.publish` each NIP-66 check is also published as a
//! signed kind 30166.
//!
//! Bounds (invariant 6): at most `monitor.max_concurrent` relays are checked at once, each check
//! holds one socket at a time, every wait is bounded by `monitor.check_timeout_secs`, and each
//! check as a whole by four times that (so a relay answering just in time at every step, or
//! trickling NOTICEs, still cannot hold a slot).

pub mod facts;
pub mod geo;
pub mod publish;
pub mod rtt;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr::Keys;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::config::MonitorConfig;
use crate::net::dialer::Dialer;
use crate::net::ws::WsConnection;
use crate::protocol::nip11::{parse_relay_info, RelayInfo};
use crate::protocol::url::parse_relay_url;
use crate::shutdown::Shutdown;
use crate::store::health::{unix_now, CheckKind, CheckOutcome, DueRelay, Schedule};
use crate::store::{State, StateError};

use self::publish::Publisher;
use self::rtt::RttReport;

pub struct MonitorContext {
    pub state: Arc<State>,
    pub dialer: Dialer,
    pub keys: Keys,
    pub cfg: MonitorConfig,
    pub max_message_bytes: usize,
    pub shutdown: Shutdown,
    pub publisher: Option<Publisher>,
    /// An upstream archive is configured: history the shipper has not sent is never pruned.
    pub upstream: bool,
    /// Operator-supplied MaxMind-format databases (possibly none).
    pub geo: geo::GeoDb,
    /// Where the state lives, and the free-disk floor below which no check is recorded
    /// (`storage.min_free_disk_mb`): checks pause until space is freed.
    pub data_dir: std::path::PathBuf,
    pub min_free_disk_mb: u64,
}

impl MonitorContext {
    pub fn schedule(&self) -> Schedule {
        let c = &self.cfg;
        Schedule {
            open_secs: c.open_interval_secs as i64,
            nip11_secs: c.nip11_interval_secs as i64,
            nip66_secs: c.nip66_interval_secs as i64,
            failure_threshold: c.failure_threshold as i64,
            max_backoff_secs: c.max_backoff_secs as i64,
        }
    }

    /// Every single wait (a connect, an answer, a document) is bounded by this.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.check_timeout_secs)
    }

    /// One check as a whole (its steps in sequence) is bounded by this: a relay answering
    /// just inside every step's timeout still cannot hold a slot longer.
    fn deadline(&self) -> Duration {
        self.timeout() * 4
    }
}

/// What checking one relay found (printed by `bigbrotr monitor --once`).
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    pub url: String,
    pub network: String,
    /// Status after this check (online, offline, unknown), or `skipped` with the reason.
    pub status: String,
    pub nip11: Option<Value>,
    pub nip11_error: Option<String>,
    pub rtt: Option<RttReport>,
    pub facts: Option<facts::Facts>,
    pub error: Option<String>,
}

/// Check one relay: the checks `due` asks for (all three when `all`), recorded in SQLite and
/// published when configured.
pub async fn check_relay(ctx: &MonitorContext, due: &DueRelay, all: bool) -> RelayReport {
    let mut report = RelayReport {
        url: due.url.clone(),
        network: String::new(),
        status: due.status.clone(),
        nip11: None,
        nip11_error: None,
        rtt: None,
        facts: None,
        error: None,
    };
    let sched = ctx.schedule();
    let url = match parse_relay_url(&due.url, ctx.dialer.policy()) {
        Ok(u) => u,
        Err(e) => {
            // The policy changed since the relay was registered (e.g. allow_local turned off).
            let msg = format!("refused by the address policy: {e}; not checked");
            let _ =
                ctx.state
                    .mark_skipped(due.id, "refused", unix_now(), sched.max_backoff_secs, &msg);
            report.status = "skipped".into();
            report.error = Some(msg);
            return report;
        }
    };
    report.network = url.network().as_str().to_string();
    if !ctx.dialer.has_route(url.network()) {
        let msg = format!(
            "no route to the {} network is configured; not checked",
            url.network().as_str()
        );
        let _ =
            ctx.state
                .mark_skipped(due.id, "no_route", unix_now(), sched.max_backoff_secs, &msg);
        report.status = "skipped".into();
        report.error = Some(msg);
        return report;
    }
    if let Some(why) = ctx.dialer.tor_not_ready(url.network()) {
        // Says nothing about the relay: look again once Tor has had time to bootstrap.
        let _ = ctx
            .state
            .mark_skipped(due.id, "tor_starting", unix_now(), 60, &why);
        report.status = "skipped".into();
        report.error = Some(why);
        return report;
    }
    let (step, deadline) = (ctx.timeout(), ctx.deadline());
    let mut nip11_info: Option<RelayInfo> = None;
    if all || due.nip11_due {
        let at = unix_now();
        let fetched = tokio::time::timeout(
            deadline,
            crate::net::nip11::fetch_following(&ctx.dialer, &url, step),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::net::nip11::Nip11Error::Document {
                url: url.to_string(),
                reason: format!("no complete answer within {} s", deadline.as_secs()),
            })
        });
        let out = match fetched {
            Ok(info) => {
                report.nip11 = Some(nip11_summary(&info));
                let out = CheckOutcome {
                    ok: true,
                    software: info.software.clone(),
                    version: info.version.clone(),
                    document: bounded_document(&info),
                    ..Default::default()
                };
                nip11_info = Some(info);
                out
            }
            Err(e) => {
                report.nip11_error = Some(e.to_string());
                CheckOutcome {
                    error: Some(e.to_string()),
                    document: json!({ "error": e.to_string() }),
                    ..Default::default()
                }
            }
        };
        record_at(ctx, due.id, CheckKind::Nip11, at, out, &sched).await;
        if ctx.shutdown.is_triggered() {
            return report;
        }
    }
    if all || due.nip66_due {
        let at = unix_now();
        let keys = ctx.cfg.write_test.then_some(&ctx.keys);
        // One deadline for the whole check: every step gets at most what is left of it, and
        // what earlier steps found is kept when a later one runs out of time.
        let until = Instant::now() + deadline;
        let facts = facts::gather(&ctx.dialer, &ctx.geo, &url, step, until).await;
        let rtt =
            rtt::round_trips(&ctx.dialer, &url, keys, ctx.max_message_bytes, step, until).await;
        let out = nip66_outcome(&rtt, &facts);
        record_at(ctx, due.id, CheckKind::Nip66, at, out, &sched).await;
        let publishable = ctx
            .publisher
            .as_ref()
            .filter(|p| rtt.open_ms.is_some() && p.may_publish(&url));
        if let Some(p) = publishable {
            let info = nip11_info.clone().or_else(|| latest_nip11(ctx, &due.url));
            let geohash = facts.geo.as_ref().and_then(|g| g.geohash.as_deref());
            match publish::discovery_event(&ctx.keys, &url, &rtt, info.as_ref(), geohash) {
                Ok(ev) => p.send(ev),
                Err(e) => tracing::warn!(relay = %url, error = %e, "cannot sign kind 30166"),
            }
        }
        report.rtt = Some(rtt);
        report.facts = Some(facts);
    } else if due.open_due {
        let at = unix_now();
        let t = Instant::now();
        let opened = tokio::time::timeout(
            step,
            WsConnection::connect(&ctx.dialer, &url, ctx.max_message_bytes),
        )
        .await;
        let out = match opened {
            Ok(Ok(ws)) => {
                let ms = t.elapsed().as_millis() as u64;
                ws.close().await;
                CheckOutcome {
                    ok: true,
                    open_ms: Some(ms),
                    document: json!({ "rtt_open": ms }),
                    ..Default::default()
                }
            }
            Ok(Err(e)) => failed_open(e.to_string()),
            Err(_) => failed_open(format!("open: not done within {} s", step.as_secs())),
        };
        report.error = out.error.clone();
        record_at(ctx, due.id, CheckKind::Open, at, out, &sched).await;
    }
    report.status = status_of(ctx, &due.url);
    report
}

fn failed_open(msg: String) -> CheckOutcome {
    CheckOutcome {
        error: Some(msg.clone()),
        document: json!({ "error": msg }),
        ..Default::default()
    }
}

/// The NIP-66 result as recorded: the round trips, the policy facts and the network facts.
fn nip66_outcome(rtt: &RttReport, facts: &facts::Facts) -> CheckOutcome {
    CheckOutcome {
        ok: rtt.open_ms.is_some(),
        open_ms: rtt.open_ms,
        read_ms: rtt.read_ms,
        write_ms: rtt.write_ms,
        read_policy: rtt.read_policy.clone(),
        write_policy: rtt.write_policy.clone(),
        error: (!rtt.errors.is_empty()).then(|| rtt.errors.join("; ")),
        document: json!({
            "rtt_open": rtt.open_ms,
            "rtt_read": rtt.read_ms,
            "rtt_write": rtt.write_ms,
            "read_policy": rtt.read_policy,
            "write_policy": rtt.write_policy,
            "write_read_back": rtt.write_read_back,
            "errors": rtt.errors,
            "network": facts.network,
            "dns": facts.dns,
            "tls": facts.tls,
            "geo": facts.geo,
        }),
        ..Default::default()
    }
}

/// Largest NIP-11 document kept as is in the history (and published as 30166 content). A relay
/// could otherwise make every hourly fetch store (and ship) a fresh 1 MiB document.
pub const MAX_KEPT_NIP11_BYTES: usize = 64 * 1024;

/// The document as served if it is at most [`MAX_KEPT_NIP11_BYTES`], else a summary of its
/// typed fields marked `"truncated": true`.
fn bounded_document(info: &RelayInfo) -> Value {
    let size = info.raw.len();
    if size <= MAX_KEPT_NIP11_BYTES {
        // At most 64 KiB of text: its tree stays small.
        if let Ok(v) = serde_json::from_str(&info.raw) {
            return v;
        }
    }
    let cap = |s: &Option<String>| s.as_ref().map(|s| s.chars().take(1000).collect::<String>());
    json!({
        "truncated": true,
        "bytes": size,
        "name": cap(&info.name),
        "software": cap(&info.software),
        "version": cap(&info.version),
        "supported_nips": info.supported_nips.iter().take(publish::MAX_NIP_TAGS).collect::<Vec<_>>(),
        "limitation": info.limitation,
    })
}

fn nip11_summary(info: &RelayInfo) -> Value {
    json!({
        "name": info.name,
        "software": info.software,
        "version": info.version,
        "supported_nips": info.supported_nips,
        "limitation": info.limitation,
    })
}

/// The relay's latest stored NIP-11 document, parsed again.
fn latest_nip11(ctx: &MonitorContext, url: &str) -> Option<RelayInfo> {
    let (_, h) = ctx.state.health_of(url).ok()??;
    let doc = ctx.state.document(h.nip11_id.as_deref()?).ok()??;
    parse_relay_info(doc.as_bytes()).ok()
}

fn status_of(ctx: &MonitorContext, url: &str) -> String {
    match ctx.state.health_of(url) {
        Ok(Some((_, h))) => h.status,
        _ => "unknown".into(),
    }
}

/// Record a check on a blocking thread: the SQLite transaction may wait (busy timeout) for
/// another process writing the same file, and must not stall the runtime's workers meanwhile.
async fn record_at(
    ctx: &MonitorContext,
    id: u32,
    kind: CheckKind,
    at: i64,
    out: CheckOutcome,
    s: &Schedule,
) {
    let (state, s) = (ctx.state.clone(), *s);
    let done =
        tokio::task::spawn_blocking(move || state.record_check(id, kind, at, &out, &s)).await;
    let err = match done {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(relay_id = id, check = kind.as_str(), error = %err, "cannot record a check");
}

/// Counters of one sweep or of the service so far.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct MonitorStats {
    pub state: String,
    pub relays_checked: u64,
    pub online: u64,
    pub failed: u64,
    pub skipped: u64,
    pub in_flight: u64,
    pub last_check_at: Option<i64>,
    pub pruned_observations: u64,
    /// Observations pruned before the archive took them (older than `max_unshipped_days`).
    pub pruned_unshipped: u64,
}

fn tally(stats: &mut MonitorStats, r: &RelayReport) {
    stats.relays_checked += 1;
    match r.status.as_str() {
        "online" => stats.online += 1,
        "skipped" => stats.skipped += 1,
        _ => stats.failed += 1,
    }
    stats.last_check_at = Some(unix_now());
}

fn save(ctx: &MonitorContext, stats: &MonitorStats) {
    if let Ok(v) = serde_json::to_string(stats) {
        let _ = ctx.state.set_state("monitor", "stats", &v);
    }
}

/// Check every registered relay once, all checks, `max_concurrent` at a time (`bigbrotr
/// monitor --once` without `--relay`). Returns the reports in completion order.
pub async fn sweep(ctx: Arc<MonitorContext>) -> (MonitorStats, Vec<RelayReport>) {
    let relays = ctx.state.relays().unwrap_or_default();
    let mut todo = relays.into_iter().map(|r| DueRelay {
        id: r.id,
        url: r.url,
        status: r.status,
        open_due: true,
        nip11_due: true,
        nip66_due: true,
    });
    let mut set = JoinSet::new();
    let mut stats = MonitorStats::default();
    let mut reports = Vec::new();
    loop {
        while set.len() < ctx.cfg.max_concurrent && !ctx.shutdown.is_triggered() {
            let Some(due) = todo.next() else { break };
            let c = ctx.clone();
            set.spawn(async move { check_relay(&c, &due, true).await });
        }
        match set.join_next().await {
            Some(Ok(r)) => {
                tally(&mut stats, &r);
                reports.push(r);
            }
            Some(Err(e)) => tracing::error!(error = %e, "a relay check panicked"),
            None => break,
        }
    }
    stats.state = "done".into();
    // Its own key: a one-off sweep must not overwrite the running service's counters.
    if let Ok(v) = serde_json::to_string(&stats) {
        let _ = ctx.state.set_state("monitor", "sweep", &v);
    }
    (stats, reports)
}

/// The service: hand out due checks until shutdown, keep history pruned, announce (10166).
pub async fn run(ctx: Arc<MonitorContext>) -> anyhow::Result<()> {
    let _ = ctx.state.clear_skipped();
    let mut stats: MonitorStats = ctx
        .state
        .get_state("monitor", "stats")
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    stats.state = "running".into();
    let mut set: JoinSet<RelayReport> = JoinSet::new();
    // Relays in flight, by the task checking them (a panicked task still frees its relay).
    let mut tasks: HashMap<tokio::task::Id, u32> = HashMap::new();
    let mut busy: HashSet<u32> = HashSet::new();
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    let mut pruning: Option<tokio::task::JoinHandle<PruneResult>> = None;
    let mut last_announce: Option<Instant> = None;
    let mut last_save = Instant::now();
    let mut last_disk_check = Instant::now() - Duration::from_secs(60);
    let mut disk_low = false;
    loop {
        if ctx.shutdown.is_triggered() {
            break;
        }
        if let Some(p) = &ctx.publisher {
            if last_announce.is_none_or(|t| t.elapsed() >= Duration::from_secs(86_400)) {
                match publish::announcement_event(&ctx.keys, &ctx.cfg, ctx.geo.is_configured()) {
                    Ok(ev) => p.send(ev),
                    Err(e) => tracing::warn!(error = %e, "cannot sign kind 10166"),
                }
                last_announce = Some(Instant::now());
            }
        }
        // The prune (every 10 minutes) runs on a blocking thread, in short chunks: a month of history must
        // not hold this loop (or the async workers) while it is cut.
        if pruning.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = pruning.take() {
                match h.await {
                    Ok(r) => tally_prune(&mut stats, r),
                    Err(e) => tracing::error!(error = %e, "prune task failed"),
                }
            }
        }
        if pruning.is_none() && last_prune.elapsed() >= PRUNE_EVERY {
            let c = ctx.clone();
            pruning = Some(tokio::task::spawn_blocking(move || prune(&c)));
            last_prune = Instant::now();
        }
        // Below the free-disk floor no check starts (each one writes): paused, and said so.
        if last_disk_check.elapsed() >= Duration::from_secs(10) {
            last_disk_check = Instant::now();
            let low = crate::store::free_disk_mb(&ctx.data_dir)
                .filter(|free| *free < ctx.min_free_disk_mb);
            match (low, disk_low) {
                (Some(free), false) => {
                    tracing::warn!(
                        free_mib = free,
                        min_mib = ctx.min_free_disk_mb,
                        "monitor paused: free disk below storage.min_free_disk_mb; free some space"
                    );
                    stats.state = format!(
                        "paused: only {free} MiB free (storage.min_free_disk_mb = {}); free disk space",
                        ctx.min_free_disk_mb
                    );
                }
                (None, true) => {
                    tracing::info!("monitor resumed: free disk above the floor again");
                    stats.state = "running".into();
                }
                _ => {}
            }
            disk_low = low.is_some();
        }
        let free = ctx.cfg.max_concurrent.saturating_sub(set.len());
        if free > 0 && !disk_low {
            let (state, b) = (ctx.state.clone(), busy.clone());
            let due = tokio::task::spawn_blocking(move || state.due_checks(unix_now(), free, &b))
                .await
                .unwrap_or_else(|e| Err(StateError::Task(e.to_string())));
            match due {
                Ok(due) => {
                    for d in due {
                        busy.insert(d.id);
                        let (c, id) = (ctx.clone(), d.id);
                        let handle = set.spawn(async move { check_relay(&c, &d, false).await });
                        tasks.insert(handle.id(), id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read due checks"),
            }
        }
        stats.in_flight = set.len() as u64;
        if last_save.elapsed() >= Duration::from_secs(5) {
            save(&ctx, &stats);
            last_save = Instant::now();
        }
        // Wait for a check to finish, or a second to pass (new relays, checks falling due).
        tokio::select! {
            done = set.join_next_with_id(), if !set.is_empty() => match done {
                Some(Ok((task, r))) => {
                    if let Some(id) = tasks.remove(&task) {
                        busy.remove(&id);
                    }
                    tally(&mut stats, &r);
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "a relay check panicked");
                    if let Some(id) = tasks.remove(&e.id()) {
                        busy.remove(&id);
                    }
                }
                None => {}
            },
            _ = ctx.shutdown.sleep(Duration::from_secs(1)) => {}
        }
    }
    // Let the checks in flight finish for a moment, then stop them: a check that never
    // recorded simply runs again after the restart.
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(Ok(r)) => tally(&mut stats, &r),
                Some(Err(_)) => {}
                None => break,
            },
            _ = &mut grace => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        }
    }
    stats.state = "stopped".into();
    stats.in_flight = 0;
    save(&ctx, &stats);
    Ok(())
}

/// How often the check history is pruned: often enough that each run cuts only a few minutes of
/// history (a few thousand rows on a large node, well under 100 ms).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn tally_prune(stats: &mut MonitorStats, r: PruneResult) {
    match r {
        Ok((obs, docs, unshipped)) => {
            stats.pruned_observations += obs as u64;
            stats.pruned_unshipped += unshipped as u64;
            if obs > 0 {
                tracing::info!(observations = obs, documents = docs, "pruned check history");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot prune check history"),
    }
}

/// (observations, documents, unshipped observations) pruned.
type PruneResult = Result<(usize, usize, usize), StateError>;

fn prune(ctx: &MonitorContext) -> PruneResult {
    let before = unix_now() - (ctx.cfg.history_days as i64) * 86_400;
    let keep_after = ctx.upstream.then(|| {
        ctx.state
            .get_state("shipper", "observation_watermark")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    });
    let (mut obs, mut docs) = ctx.state.prune_history(before, keep_after)?;
    // Unshipped history has a limit too: an archive unreachable for months must not fill the
    // disk. What is cut this way is counted and said.
    let mut unshipped = 0;
    if keep_after.is_some() {
        let days = ctx.cfg.max_unshipped_days.max(ctx.cfg.history_days) as i64;
        let (o, d) = ctx.state.prune_history(unix_now() - days * 86_400, None)?;
        if o > 0 {
            tracing::warn!(
                observations = o,
                days,
                "observations the archive never took were older than monitor.max_unshipped_days and were pruned (is the archive reachable?)"
            );
        }
        (obs, docs, unshipped) = (obs + o, docs + d, o);
    }
    Ok((obs, docs, unshipped))
}
