//! NIP-66 publishing: a signed kind 30166 per checked relay and a kind 10166 announcement of
//! this monitor, sent to `monitor.publish_relays`.
//!
//! Events are built from what this node measured, once per NIP-66 check. Publishing is best
//! effort (the SQLite history is the record): a bounded queue feeds one task that keeps one
//! websocket per target relay, reconnects after a failure, and waits for every OK within the
//! check timeout. A full queue drops the newest event and counts it.
//!
//! `R` tags combine the NIP-11 document's `limitation` (advertised) with the answers the relay
//! actually gave to the read and write checks (observed): an observed `auth-required:` wins over
//! an advertised `auth_required: false`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr::{Event, EventBuilder, JsonUtil, Keys, Kind, Tag};
use tokio::sync::mpsc;

use super::rtt::RttReport;
use crate::config::MonitorConfig;
use crate::net::dialer::Dialer;
use crate::net::ws::WsConnection;
use crate::protocol::nip11::RelayInfo;
use crate::protocol::url::RelayUrl;

pub const KIND_RELAY_DISCOVERY: u16 = 30166;
pub const KIND_MONITOR_ANNOUNCEMENT: u16 = 10166;
/// Most `N` tags in one 30166 (a relay's NIP-11 may list any number of NIPs).
pub const MAX_NIP_TAGS: usize = 200;
/// Events waiting to be published; beyond this they are dropped (and counted).
const QUEUE: usize = 256;

fn tag(parts: &[&str]) -> Option<Tag> {
    Tag::parse(parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).ok()
}

/// The NIP-66 tags for one relay from one NIP-66 check (and its latest NIP-11 document).
pub fn discovery_tags(
    url: &RelayUrl,
    rtt: &RttReport,
    nip11: Option<&RelayInfo>,
    geohash: Option<&str>,
) -> Vec<Tag> {
    let mut tags: Vec<Tag> = Vec::new();
    let mut push = |parts: &[&str]| {
        if let Some(t) = tag(parts) {
            tags.push(t);
        }
    };
    push(&["d", url.as_str()]);
    push(&["n", url.network().as_str()]);
    for (name, v) in [
        ("rtt-open", rtt.open_ms),
        ("rtt-read", rtt.read_ms),
        ("rtt-write", rtt.write_ms),
    ] {
        if let Some(ms) = v {
            push(&[name, &ms.to_string()]);
        }
    }
    let lim = nip11.map(|i| &i.limitation);
    let nips = nip11.map(|i| i.supported_nips.as_slice()).unwrap_or(&[]);
    for nip in nips.iter().take(MAX_NIP_TAGS) {
        push(&["N", &nip.to_string()]);
    }
    let answered =
        |p: &str| rtt.read_policy.as_deref() == Some(p) || rtt.write_policy.as_deref() == Some(p);
    let wrote = rtt.write_ms.is_some();
    // (requirement, observed true, advertised)
    let auth = answered("auth-required") || lim.and_then(|l| l.auth_required) == Some(true);
    let payment =
        answered("payment-required") || lim.and_then(|l| l.payment_required) == Some(true);
    let pow = answered("pow")
        || lim
            .and_then(|l| l.min_pow_difficulty)
            .is_some_and(|d| d > 0);
    let writes = answered("restricted")
        || answered("blocked")
        || (!wrote && lim.and_then(|l| l.restricted_writes) == Some(true));
    let known =
        |observed: bool, advertised: Option<bool>| observed || advertised.is_some() || wrote;
    for (name, on, is_known) in [
        ("auth", auth, known(auth, lim.and_then(|l| l.auth_required))),
        (
            "payment",
            payment,
            known(payment, lim.and_then(|l| l.payment_required)),
        ),
        (
            "writes",
            writes,
            known(writes, lim.and_then(|l| l.restricted_writes)),
        ),
        (
            "pow",
            pow,
            known(pow, lim.and_then(|l| l.min_pow_difficulty).map(|d| d > 0)),
        ),
    ] {
        if on {
            push(&["R", name]);
        } else if is_known {
            push(&["R", &format!("!{name}")]);
        }
    }
    if let Some(g) = geohash {
        push(&["g", g]);
    }
    tags
}

/// A signed kind 30166; content is the relay's NIP-11 document when one was fetched.
pub fn discovery_event(
    keys: &Keys,
    url: &RelayUrl,
    rtt: &RttReport,
    nip11: Option<&RelayInfo>,
    geohash: Option<&str>,
) -> Result<Event, String> {
    // The NIP-11 document as content, unless it is larger than what the history keeps.
    let content = nip11
        .filter(|i| i.raw.len() <= super::MAX_KEPT_NIP11_BYTES)
        .map(|i| i.raw.clone())
        .unwrap_or_default();
    EventBuilder::new(Kind::from(KIND_RELAY_DISCOVERY), content)
        .tags(discovery_tags(url, rtt, nip11, geohash))
        .sign_with_keys(keys)
        .map_err(|e| e.to_string())
}

/// A signed kind 10166: how often this monitor publishes, its timeouts and its checks.
pub fn announcement_event(keys: &Keys, cfg: &MonitorConfig, geo: bool) -> Result<Event, String> {
    let ms = (cfg.check_timeout_secs * 1000).to_string();
    let mut tags = vec![tag(&["frequency", &cfg.nip66_interval_secs.to_string()])];
    let mut checks = vec!["open", "read"];
    if cfg.write_test {
        checks.push("write");
    }
    checks.extend(["nip11", "dns", "ssl"]);
    if geo {
        checks.push("geo");
    }
    // NIP-66's example writes ["timeout", <check>, <ms>]; its prose numbers the indexes the
    // other way round. We follow the example (what clients parse), one per check.
    for c in ["open", "read", "write", "nip11"] {
        if c != "write" || cfg.write_test {
            tags.push(tag(&["timeout", c, &ms]));
        }
    }
    for c in checks {
        tags.push(tag(&["c", c]));
    }
    EventBuilder::new(Kind::from(KIND_MONITOR_ANNOUNCEMENT), "")
        .tags(tags.into_iter().flatten())
        .sign_with_keys(keys)
        .map_err(|e| e.to_string())
}

/// Publishing counters.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The handle services use to publish; cloning shares the queue.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Event>,
    pub stats: Arc<PublishStats>,
    local_targets: bool,
}

impl Publisher {
    /// Start the publishing task. It ends when every `Publisher` clone is dropped and the queue
    /// is drained; await the handle to know everything queued was sent (or failed).
    pub fn start(
        dialer: Dialer,
        targets: Vec<RelayUrl>,
        max_message_bytes: usize,
        timeout: Duration,
    ) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(PublishStats::default());
        // Relays the default address policy refuses (loopback, LAN) are published only to
        // targets that are themselves local: a private deployment's relay URLs stay private.
        let public = |u: &RelayUrl| {
            crate::protocol::url::parse_relay_url(u.as_str(), &Default::default()).is_ok()
        };
        let local_targets = !targets.iter().any(public);
        let handle = tokio::spawn(publish_loop(
            dialer,
            targets,
            max_message_bytes,
            timeout,
            rx,
            stats.clone(),
        ));
        (
            Publisher {
                tx,
                stats,
                local_targets,
            },
            handle,
        )
    }

    /// Whether a 30166 about `url` may be published: public relays always; loopback/private
    /// ones only when every target is local too.
    pub fn may_publish(&self, url: &RelayUrl) -> bool {
        self.local_targets
            || crate::protocol::url::parse_relay_url(url.as_str(), &Default::default()).is_ok()
    }

    /// Queue an event; never waits (a full queue drops it and counts it).
    pub fn send(&self, ev: Event) {
        if self.tx.try_send(ev).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One target relay: its connection, and while unreachable, when to try it again.
struct Target {
    url: RelayUrl,
    conn: Option<WsConnection>,
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
}

async fn publish_loop(
    dialer: Dialer,
    targets: Vec<RelayUrl>,
    max_message_bytes: usize,
    timeout: Duration,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<PublishStats>,
) {
    let mut targets: Vec<Target> = targets
        .into_iter()
        .map(|url| Target {
            url,
            conn: None,
            retry_at: None,
            backoff: Duration::from_secs(30),
        })
        .collect();
    while let Some(ev) = rx.recv().await {
        let json = ev.as_json();
        let id = ev.id.to_hex();
        for t in targets.iter_mut() {
            // An unreachable target is skipped until its backoff ends (the queue keeps moving).
            if t.retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
            {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A kept connection may have been closed by the relay while idle: on failure,
            // reconnect and try once more before giving up on this event.
            let mut sent = false;
            for attempt in 0..2 {
                if t.conn.is_none() {
                    match WsConnection::connect(&dialer, &t.url, max_message_bytes).await {
                        Ok(ws) => t.conn = Some(ws),
                        Err(e) => {
                            tracing::warn!(relay = %t.url, error = %e, retry_in_secs = t.backoff.as_secs(),
                                "cannot publish: relay unreachable");
                            t.retry_at = Some(tokio::time::Instant::now() + t.backoff);
                            t.backoff = (t.backoff * 2).min(Duration::from_secs(3600));
                            break;
                        }
                    }
                }
                let Some(ws) = t.conn.as_mut() else { break };
                match super::rtt::publish(ws, json.clone(), &id, timeout).await {
                    Ok((accepted, reason)) => {
                        t.retry_at = None;
                        t.backoff = Duration::from_secs(30);
                        if accepted {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tracing::warn!(relay = %t.url, kind = ev.kind.as_u16(), reason = %reason,
                                "published event refused");
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        if let Some(ws) = t.conn.take() {
                            ws.close().await;
                        }
                        if attempt == 1 {
                            tracing::warn!(relay = %t.url, error = %e, "publishing failed");
                        }
                    }
                }
            }
            if !sent {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for t in targets {
        if let Some(ws) = t.conn {
            ws.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nip11::parse_relay_info;
    use crate::protocol::url::parse_relay_url;

    fn tags_of(ev: &Event) -> Vec<Vec<String>> {
        ev.tags.iter().map(|t| t.as_slice().to_vec()).collect()
    }

    #[test]
    fn discovery_event_carries_the_nip66_tags() {
        let keys = Keys::generate();
        let url = parse_relay_url("wss://relay.example.org/", &Default::default()).unwrap();
        let info = parse_relay_info(
            br#"{"supported_nips":[1,11,42],"limitation":{"auth_required":false,"payment_required":true}}"#,
        )
        .unwrap();
        let rtt = RttReport {
            open_ms: Some(120),
            read_ms: Some(80),
            write_policy: Some("auth-required".into()),
            ..Default::default()
        };
        let ev = discovery_event(&keys, &url, &rtt, Some(&info), Some("u33dc0")).unwrap();
        ev.verify().unwrap();
        assert_eq!(ev.kind.as_u16(), 30166);
        let tags = tags_of(&ev);
        let has = |t: &[&str]| tags.iter().any(|x| x == t);
        assert_eq!(tags[0], ["d", "wss://relay.example.org"]);
        assert!(has(&["n", "clearnet"]));
        assert!(has(&["rtt-open", "120"]) && has(&["rtt-read", "80"]));
        assert!(!tags.iter().any(|t| t[0] == "rtt-write"));
        assert!(has(&["N", "1"]) && has(&["N", "11"]) && has(&["N", "42"]));
        // Observed auth-required beats the advertised auth_required: false.
        assert!(has(&["R", "auth"]) && !has(&["R", "!auth"]));
        assert!(has(&["R", "payment"]));
        assert!(has(&["g", "u33dc0"]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ev.content).unwrap()["supported_nips"][2],
            42
        );
    }

    #[test]
    fn accepted_write_proves_open_writes() {
        let keys = Keys::generate();
        let url = parse_relay_url("wss://relay.example.org", &Default::default()).unwrap();
        let rtt = RttReport {
            open_ms: Some(1),
            read_ms: Some(1),
            write_ms: Some(1),
            ..Default::default()
        };
        let tags = tags_of(&discovery_event(&keys, &url, &rtt, None, None).unwrap());
        assert!(
            !tags.iter().any(|t| t[0] == "g"),
            "no geo without a database"
        );
        for r in ["!auth", "!payment", "!writes", "!pow"] {
            assert!(tags.iter().any(|t| t == &["R", r]), "{r} missing: {tags:?}");
        }
        assert!(tags.iter().any(|t| t == &["rtt-write", "1"]));
    }

    #[test]
    fn announcement_lists_frequency_timeouts_and_checks() {
        let keys = Keys::generate();
        let cfg = MonitorConfig::default();
        let ev = announcement_event(&keys, &cfg, false).unwrap();
        ev.verify().unwrap();
        assert_eq!(ev.kind.as_u16(), 10166);
        let tags = tags_of(&ev);
        assert!(tags.iter().any(|t| t == &["frequency", "7200"]));
        assert!(tags.iter().any(|t| t == &["timeout", "open", "20000"]));
        for c in ["open", "read", "write", "nip11", "dns", "ssl"] {
            assert!(tags.iter().any(|t| t == &["c", c]), "{c}");
        }
        assert!(!tags.iter().any(|t| t == &["c", "geo"]));
        let with_geo = announcement_event(&keys, &cfg, true).unwrap();
        assert!(with_geo.tags.iter().any(|t| t.as_slice() == ["c", "geo"]));
    }
}
