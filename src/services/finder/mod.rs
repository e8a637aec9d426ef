//! The Finder service: discovers relays from archived events.
//!
//! It reads the event store's ingest log after its watermark (`service_state` finder/watermark),
//! extracts relay URL candidates ([`extract`]), normalizes them and applies the URL policy, and
//! registers the new ones. Each batch's new relays and the advanced watermark are written in ONE
//! SQLite transaction, so a crash neither loses relays nor re-reads from the start.
//!
//! Bounded against floods (anyone can sign an event naming a million relays): at most
//! [`extract::MAX_CANDIDATES_PER_EVENT`] candidates per event and [`MAX_CANDIDATES_PER_BATCH`]
//! per transaction (a batch ends early there, so its watermark still advances and a restart
//! never re-reads an unbounded batch), and new registrations are rate-limited per hour, in all
//! and per site ([`Limiter`]); candidates over a limit are dropped and counted (a real relay is
//! named again by later events). The synchronizer ranks relays never reached below known-good
//! ones, so junk that does get registered cannot delay them.

pub mod extract;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::protocol::url::{parse_relay_url, RelayUrl, UrlPolicy};
use crate::shutdown::Shutdown;
use crate::store::Stores;

const SERVICE: &str = "finder";
const WATERMARK: &str = "watermark";

/// Distinct candidates collected before a batch is committed early.
pub const MAX_CANDIDATES_PER_BATCH: usize = 10_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FinderRun {
    pub events_scanned: u64,
    pub relays_added: u64,
    /// New relays not registered because a rate limit was reached.
    pub dropped: u64,
}

/// Rate limits on new registrations, per rolling hour (kept in memory: a restart starts a new
/// hour, which a crash loop cannot exploit faster than the supervisor restarts).
#[derive(Debug)]
pub struct Limiter {
    per_hour: usize,
    per_site_per_hour: usize,
    window_start: i64,
    total: usize,
    sites: HashMap<String, usize>,
}

impl Limiter {
    pub fn new(per_hour: usize, per_site_per_hour: usize) -> Limiter {
        Limiter {
            per_hour,
            per_site_per_hour,
            window_start: 0,
            total: 0,
            sites: HashMap::new(),
        }
    }

    /// Whether one more new relay may be registered at `now` (and count it if so).
    pub fn admit(&mut self, url: &RelayUrl, now: i64) -> bool {
        if now - self.window_start >= 3600 {
            self.window_start = now;
            self.total = 0;
            self.sites.clear();
        }
        if self.total >= self.per_hour {
            return false;
        }
        let site = site_of(url.host());
        let n = self.sites.get(site).copied().unwrap_or(0);
        if n >= self.per_site_per_hour {
            return false;
        }
        self.sites.insert(site.to_string(), n + 1);
        self.total += 1;
        true
    }
}

/// The part of a host that one operator controls, roughly: an IP address, an overlay address,
/// or the last two labels of a name (`a.b.relay.example.com` -> `example.com`).
fn site_of(host: &str) -> &str {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    match host.rmatch_indices('.').nth(1) {
        Some((i, _)) => &host[i + 1..],
        None => host,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FinderError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    State(#[from] crate::store::StateError),
}

/// Scan everything after the watermark, `batch` events per atomic step.
pub fn scan(
    stores: &Stores,
    policy: &UrlPolicy,
    batch: usize,
    limiter: &mut Limiter,
) -> Result<FinderRun, FinderError> {
    let mut run = FinderRun::default();
    loop {
        let watermark = stores
            .state
            .get_state(SERVICE, WATERMARK)?
            .and_then(|v| v.parse::<u64>().ok());
        let entries = stores.events.ingest_after(watermark, batch)?;
        if entries.is_empty() {
            return Ok(run);
        }
        let mut found: BTreeSet<RelayUrl> = BTreeSet::new();
        let mut last = entries[0].0;
        let mut read = 0;
        for (seq, id) in &entries {
            if found.len() >= MAX_CANDIDATES_PER_BATCH {
                break;
            }
            if let Some(ev) = stores.events.get(id)? {
                for raw in extract::candidates(&ev) {
                    if let Ok(url) = parse_relay_url(&raw, policy) {
                        found.insert(url);
                    }
                }
            }
            last = *seq;
            read += 1;
        }
        let candidates: Vec<RelayUrl> = found.into_iter().collect();
        let now = crate::store::health::unix_now();
        let mut urls = Vec::new();
        for url in stores.state.unknown_urls(&candidates)? {
            if limiter.admit(&url, now) {
                urls.push(url);
            } else {
                run.dropped += 1;
            }
        }
        let added = stores.state.register_with_watermark(
            &urls,
            "finder",
            SERVICE,
            WATERMARK,
            &last.to_string(),
        )?;
        // The watermark is durable (the registration commits with synchronous = FULL): what
        // lies below it is never read again, so the log does not grow without bound.
        stores.events.trim_ingest(last)?;
        run.events_scanned += read as u64;
        run.relays_added += added as u64;
        if entries.len() < batch && read == entries.len() {
            return Ok(run);
        }
    }
}

/// Run the Finder every `interval` until shutdown.
pub async fn run(
    stores: Stores,
    policy: UrlPolicy,
    batch: usize,
    limits: (usize, usize),
    interval: Duration,
    shutdown: Shutdown,
) -> Result<(), FinderError> {
    let limiter = std::sync::Arc::new(std::sync::Mutex::new(Limiter::new(limits.0, limits.1)));
    loop {
        let (s, p, l) = (stores.clone(), policy.clone(), limiter.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
            scan(&s, &p, batch, &mut l)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "finder task panicked");
            Ok(FinderRun::default())
        })?;
        if result.events_scanned > 0 {
            tracing::info!(
                events = result.events_scanned,
                relays_added = result.relays_added,
                dropped_by_rate_limit = result.dropped,
                "finder scan"
            );
        }
        if shutdown.sleep(interval).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::Event;
    use crate::store::{EventStore, EventStoreOptions, State};

    fn event(n: u32, kind: u16, tags: Vec<Vec<String>>, content: String) -> Event {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        Event {
            id,
            pubkey: [1; 32],
            created_at: 1_700_000_000 + u64::from(n),
            kind,
            tags,
            content,
            sig: [0; 64],
        }
    }

    /// 60 signed-looking kind-3 events naming 5,000 unique relays each under one site, then one
    /// honest relay list: the registry gets the honest relays and at most the per-site limit of
    /// the flood; every event is scanned and the watermark passes them all.
    #[test]
    fn a_flood_of_junk_lists_is_bounded_and_real_relays_still_register() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores {
            events: Arc::new(
                EventStore::open(&dir.path().join("events"), &EventStoreOptions::default())
                    .unwrap(),
            ),
            state: Arc::new(State::open(&dir.path().join("state.sqlite")).unwrap()),
        };
        let mut evs: Vec<Event> = (0..60)
            .map(|e| {
                let map: Vec<String> = (0..5_000)
                    .map(|i| format!(r#""wss://r{e}x{i}.flood.net":{{"read":true}}"#))
                    .collect();
                event(e, 3, vec![], format!("{{{}}}", map.join(",")))
            })
            .collect();
        let honest: Vec<Vec<String>> = ["wss://relay.one.com", "wss://two.org", "wss://nos.lol"]
            .iter()
            .map(|u| vec!["r".to_string(), u.to_string()])
            .collect();
        evs.push(event(60, 10002, honest, String::new()));
        stores
            .events
            .write_page(1, 0, &evs, &vec![false; evs.len()], None)
            .unwrap();
        let mut limiter = Limiter::new(500, 20);
        let run = scan(&stores, &UrlPolicy::default(), 5_000, &mut limiter).unwrap();
        assert_eq!(run.events_scanned, 61);
        let urls: Vec<String> = stores
            .state
            .relays()
            .unwrap()
            .into_iter()
            .map(|r| r.url)
            .collect();
        for u in ["wss://relay.one.com", "wss://two.org", "wss://nos.lol"] {
            assert!(urls.iter().any(|x| x == u), "{u} registered: {urls:?}");
        }
        assert_eq!(urls.len(), 23, "20 of the flood's site, 3 honest");
        assert_eq!(
            run.dropped,
            60 * extract::MAX_CANDIDATES_PER_EVENT as u64 - 20,
            "only the per-event cap was ever read"
        );
        // Nothing is read twice, and the log keeps only its last entry (the watermark's).
        assert_eq!(
            scan(&stores, &UrlPolicy::default(), 5_000, &mut limiter).unwrap(),
            FinderRun::default()
        );
        let log = stores.events.ingest_after(None, 100).unwrap();
        assert_eq!(
            log.len(),
            1,
            "the ingest log is trimmed below the watermark"
        );
        // New events after a reopen get sequence numbers above the watermark.
        let dir_events = dir.path().join("events");
        drop(stores);
        let stores = Stores {
            events: Arc::new(EventStore::open(&dir_events, &EventStoreOptions::default()).unwrap()),
            state: Arc::new(State::open(&dir.path().join("state.sqlite")).unwrap()),
        };
        let late = event(
            61,
            10002,
            vec![vec!["r".into(), "wss://late.example.org".into()]],
            String::new(),
        );
        stores
            .events
            .write_page(1, 0, &[late], &[false], None)
            .unwrap();
        let run = scan(&stores, &UrlPolicy::default(), 5_000, &mut limiter).unwrap();
        assert_eq!((run.events_scanned, run.relays_added), (1, 1));
    }

    #[test]
    fn sites_and_the_hourly_limit() {
        assert_eq!(site_of("a.b.relay.example.com"), "example.com");
        assert_eq!(site_of("nos.lol"), "nos.lol");
        assert_eq!(site_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(site_of("[::1]"), "[::1]");
        let mut l = Limiter::new(3, 2);
        let u = |s: &str| crate::protocol::url::normalize(s).unwrap();
        assert!(l.admit(&u("wss://a.x.com"), 0));
        assert!(l.admit(&u("wss://b.x.com"), 1));
        assert!(!l.admit(&u("wss://c.x.com"), 2), "per site");
        assert!(l.admit(&u("wss://y.org"), 3));
        assert!(!l.admit(&u("wss://z.net"), 4), "per hour");
        assert!(l.admit(&u("wss://z.net"), 3_600), "a new hour");
    }
}
