//! The Finder service: discovers relays from archived events.
//!
//! It reads the event store's ingest log after its watermark (`service_state` finder/watermark),
//! extracts relay URL candidates ([`extract`]), normalizes them and applies the URL policy, and
//! registers the new ones. Each batch's new relays and the advanced watermark are written in ONE
//! SQLite transaction, so a crash neither loses relays nor re-reads from the start.

pub mod extract;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::protocol::url::{parse_relay_url, RelayUrl, UrlPolicy};
use crate::shutdown::Shutdown;
use crate::store::Stores;

const SERVICE: &str = "finder";
const WATERMARK: &str = "watermark";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FinderRun {
    pub events_scanned: u64,
    pub relays_added: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FinderError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    State(#[from] crate::store::StateError),
}

/// Scan everything after the watermark, `batch` events per atomic step.
pub fn scan(stores: &Stores, policy: &UrlPolicy, batch: usize) -> Result<FinderRun, FinderError> {
    let mut run = FinderRun::default();
    loop {
        let watermark = stores
            .state
            .get_state(SERVICE, WATERMARK)?
            .and_then(|v| v.parse::<u64>().ok());
        let entries = stores.events.ingest_after(watermark, batch)?;
        let Some(&(last, _)) = entries.last() else {
            return Ok(run);
        };
        let mut found: BTreeSet<RelayUrl> = BTreeSet::new();
        for (_, id) in &entries {
            if let Some(ev) = stores.events.get(id)? {
                for raw in extract::candidates(&ev) {
                    if let Ok(url) = parse_relay_url(raw, policy) {
                        found.insert(url);
                    }
                }
            }
        }
        let urls: Vec<RelayUrl> = found.into_iter().collect();
        let added = stores.state.register_with_watermark(
            &urls,
            "finder",
            SERVICE,
            WATERMARK,
            &last.to_string(),
        )?;
        run.events_scanned += entries.len() as u64;
        run.relays_added += added as u64;
        if entries.len() < batch {
            return Ok(run);
        }
    }
}

/// Run the Finder every `interval` until shutdown.
pub async fn run(
    stores: Stores,
    policy: UrlPolicy,
    batch: usize,
    interval: Duration,
    shutdown: Shutdown,
) -> Result<(), FinderError> {
    loop {
        let (s, p) = (stores.clone(), policy.clone());
        let result = tokio::task::spawn_blocking(move || scan(&s, &p, batch))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "finder task panicked");
                Ok(FinderRun::default())
            })?;
        if result.events_scanned > 0 {
            tracing::info!(
                events = result.events_scanned,
                relays_added = result.relays_added,
                "finder scan"
            );
        }
        if shutdown.sleep(interval).await {
            return Ok(());
        }
    }
}
