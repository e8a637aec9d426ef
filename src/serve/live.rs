//! Live delivery: newly archived events, in the order they were stored, to every open
//! subscription. The feed tails the event store's ingest log (the same log the Finder reads),
//! in the one process that holds the store (`bigbrotr run` with `[serve] enabled`, or
//! `bigbrotr serve` alone).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::protocol::Event;
use crate::shutdown::Shutdown;
use crate::store::EventStore;

/// One newly archived event, and whether it is the latest version of its replaceable or
/// addressable key (an archive often stores old versions late: those are not served).
#[derive(Debug)]
pub struct LiveEvent {
    pub event: Event,
    pub latest: bool,
}

/// Events held for subscribers that have not taken them yet; a connection further behind
/// than this loses its live subscriptions (it is told so).
pub const FEED_CAPACITY: usize = 4096;
/// Ingest-log entries read per poll.
const BATCH: usize = 1000;

/// Tail the ingest log every `poll`, sending each newly stored event (with a body) to `tx`.
/// Starts after the newest entry at start-up: live delivery is what arrives from now on.
pub async fn run(
    store: Arc<EventStore>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    poll: Duration,
    shutdown: Shutdown,
) -> Result<(), crate::store::StoreError> {
    let s = store.clone();
    let mut watermark = tokio::task::spawn_blocking(move || s.last_ingest_seq())
        .await
        .map_err(|_| crate::store::StoreError::Closed)??;
    loop {
        if shutdown.sleep(poll).await {
            return Ok(());
        }
        loop {
            let s = store.clone();
            let w = watermark;
            let (events, last, full) = tokio::task::spawn_blocking(move || {
                let entries = s.ingest_after(w, BATCH)?;
                let last = entries.last().map(|(seq, _)| *seq);
                let mut events = Vec::with_capacity(entries.len());
                for (_, id) in &entries {
                    if let Some(event) = s.get(id)? {
                        let latest = s.is_latest(&event)?;
                        events.push(Arc::new(LiveEvent { event, latest }));
                    }
                }
                Ok::<_, crate::store::StoreError>((events, last, entries.len() >= BATCH))
            })
            .await
            .map_err(|_| crate::store::StoreError::Closed)??;
            let Some(last) = last else { break };
            watermark = Some(last);
            for ev in events {
                // No receiver is not an error: nobody is subscribed right now.
                let _ = tx.send(ev);
            }
            if !full {
                break;
            }
        }
    }
}
