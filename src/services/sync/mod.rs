//! The Synchronizer service: keeps every registered relay's archive complete and current.
//!
//! A scheduler loop hands due relays (SQLite `next_attempt_at`) to sessions, at most
//! `sync.max_relays` at once (a semaphore: it bounds sockets and memory). A session runs a bounded
//! turn ([`session::Mode::Turn`]): backfill pages, then a live subscription; afterwards the relay
//! is due again at once, or after a backoff (exponential with jitter, capped) if it failed.
//! Relays on networks without a configured route are skipped with a clear status.

pub mod ingest;
pub mod link;
pub mod session;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;

pub use session::{Mode, Outcome, SyncContext, SyncError, SyncStats};

use crate::protocol::url::normalize;

/// Backoff after `failures` consecutive failures: min * 2^(failures-1), capped, with +-25% jitter.
pub fn backoff_secs(failures: i64, min: u64, max: u64) -> i64 {
    let exp = failures.clamp(1, 30) as u32 - 1;
    let base = min.saturating_mul(1u64 << exp.min(40)).min(max) as f64;
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    (base * jitter).round().max(1.0) as i64
}

/// Marks a relay as having a session; unmarks it on drop (normal end or panic).
struct Running {
    set: Arc<Mutex<HashSet<u32>>>,
    id: u32,
    /// The count of sessions with never-reached relays, if this is one.
    new: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if let Some(n) = &self.new {
            n.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How soon a relay is tried again after a local storage error (not its fault).
const LOCAL_ERROR_RETRY_SECS: i64 = 60;

/// How soon an onion relay is tried again while the built-in Tor is still bootstrapping.
const TOR_NOT_READY_RETRY_SECS: i64 = 60;

/// Run the synchronizer until shutdown.
pub async fn run(ctx: SyncContext) -> Result<(), SyncError> {
    let slots = Arc::new(Semaphore::new(ctx.cfg.max_relays));
    let running: Arc<Mutex<HashSet<u32>>> = Arc::new(Mutex::new(HashSet::new()));
    let new_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut paused = false;
    loop {
        if ctx.shutdown.is_triggered() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        if let Some(reason) = ctx.pause_reason() {
            // Checked every second (a counter and a statvfs), so syncing resumes as soon as
            // the shipper made room; logged once per pause.
            if !paused {
                tracing::warn!(reason = %reason, "synchronization paused");
                paused = true;
            }
            if ctx.shutdown.sleep(Duration::from_secs(1)).await {
                break;
            }
            continue;
        }
        if paused {
            tracing::info!("synchronization resumed");
            paused = false;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // Off the async workers: the state connection may be busy with a prune chunk.
        let (state, max) = (ctx.stores.state.clone(), ctx.cfg.max_relays * 4);
        let due = tokio::task::spawn_blocking(move || state.due_relays(now, max))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
        let mut started = 0;
        // Relays the Finder found that never answered get at most a quarter of the sessions:
        // registered junk (a flood, dead names) cannot take the slots of relays known to
        // answer. Seed and operator-added relays are trusted to be worth a slot.
        let new_cap = (ctx.cfg.max_relays / 4).max(1);
        for row in due {
            if running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&row.id)
            {
                continue;
            }
            let never_reached = row.last_success_at.is_none() && row.source == "finder";
            if never_reached && new_running.load(std::sync::atomic::Ordering::Relaxed) >= new_cap {
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let Ok(url) = normalize(&row.url) else {
                ctx.stores.state.record_failure(
                    row.id,
                    "registered URL no longer normalizes",
                    86_400,
                )?;
                continue;
            };
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.id);
            // Removes the relay from `running` even if the session panics.
            let guard = Running {
                set: running.clone(),
                id: row.id,
                new: never_reached.then(|| {
                    new_running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    new_running.clone()
                }),
            };
            started += 1;
            let ctx2 = ctx.clone();
            tasks.spawn(async move {
                let result = session::run(&ctx2, row.id, &url, Mode::Turn).await;
                let state = &ctx2.stores.state;
                let recorded = match &result {
                    // A short pause between turns: a relay that closes our live subscription
                    // at once must not be reconnected in a tight loop.
                    Ok(_) => state.record_success(row.id, ctx2.cfg.backoff_min_secs as i64),
                    Err(SyncError::Shutdown) => Ok(()),
                    // Not the relay's fault: look again soon, Tor may be ready by then; no
                    // failure is counted and its status stays as it was.
                    Err(SyncError::Link(link::LinkError::Ws(crate::net::ws::WsError::Dial(
                        crate::net::dialer::DialError::TorNotReady { reason, .. },
                    )))) => state.defer(
                        row.id,
                        reason,
                        TOR_NOT_READY_RETRY_SECS.min(ctx2.cfg.backoff_max_secs as i64),
                    ),
                    // Our own disk or store failed, not the relay: no failure is counted
                    // against it (a full or broken disk must not mark every relay offline and
                    // back them all off); it is tried again in a minute.
                    Err(e @ (SyncError::Store(_) | SyncError::State(_) | SyncError::Task(_))) => {
                        tracing::error!(relay = %url, error = %e, "local storage error during sync");
                        state.defer(row.id, &format!("local storage error: {e}"), LOCAL_ERROR_RETRY_SECS)
                    }
                    Err(e) => {
                        let failures = state.failures(row.id).unwrap_or(0) + 1;
                        let dial = match e {
                            SyncError::Link(link::LinkError::Ws(crate::net::ws::WsError::Dial(d))) => Some(d),
                            _ => None,
                        };
                        let wait = if dial.is_some_and(|d| d.is_not_tried()) {
                            ctx2.cfg.backoff_max_secs as i64
                        } else {
                            backoff_secs(failures, ctx2.cfg.backoff_min_secs, ctx2.cfg.backoff_max_secs)
                        };
                        tracing::info!(relay = %url, error = %e, retry_in_secs = wait, "sync session failed");
                        state.record_failure(row.id, &e.to_string(), wait)
                    }
                };
                if let Err(e) = recorded {
                    tracing::error!(relay = %url, error = %e, "cannot record sync result");
                }
                drop(guard);
                drop(permit);
            });
        }
        let pause = if started > 0 { 200 } else { 1_000 };
        if ctx.shutdown.sleep(Duration::from_millis(pause)).await {
            break;
        }
    }
    // Graceful: sessions notice shutdown between pages; the batch in flight completes.
    while tasks.join_next().await.is_some() {}
    Ok(())
}
