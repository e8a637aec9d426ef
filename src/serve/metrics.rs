//! `/metrics`: the whole node in Prometheus' text format (version 0.0.4). Read from the stores
//! (counters kept exactly in RocksDB's `meta`, service state in SQLite) and from the read side's
//! own counters, so it says the same whether `serve` runs inside `run` or alone.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ServeStats;
use crate::store::Stores;

/// Upper bounds (seconds) of the query latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A Prometheus histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 9],
    count: AtomicU64,
    /// Microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn json_u64(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0) as f64
}

/// The text of `/metrics`. Blocking (SQLite and RocksDB reads): call it off the async workers.
pub fn render(stores: &Stores, serve: &ServeStats, now: u64) -> String {
    let mut out = String::with_capacity(8 << 10);
    let c = stores.events.counters();
    metric(
        &mut out,
        "bigbrotr_events_stored",
        "gauge",
        "Events stored (verified), evicted ones included.",
        &[("", c.events as f64)],
    );
    metric(
        &mut out,
        "bigbrotr_sightings",
        "gauge",
        "(event, relay) sightings recorded.",
        &[("", c.sightings as f64)],
    );
    metric(
        &mut out,
        "bigbrotr_events_evicted",
        "gauge",
        "Shipped events whose bodies retention removed.",
        &[("", c.evicted as f64)],
    );
    metric(
        &mut out,
        "bigbrotr_spool_depth",
        "gauge",
        "Spool entries not yet acknowledged by the archive.",
        &[("", c.spool_depth as f64)],
    );
    metric(
        &mut out,
        "bigbrotr_quarantined_records",
        "gauge",
        "Store records that failed to decode, set aside.",
        &[("", c.quarantined as f64)],
    );
    metric(
        &mut out,
        "bigbrotr_ship_rejected",
        "gauge",
        "Spool entries the archive refused, set aside.",
        &[("", c.ship_rejected as f64)],
    );
    let lag = stores
        .events
        .spool_oldest_seen_at()
        .ok()
        .flatten()
        .map_or(0, |t| now.saturating_sub(t));
    metric(
        &mut out,
        "bigbrotr_ship_lag_seconds",
        "gauge",
        "Age of the oldest unshipped spool entry (0 when empty).",
        &[("", lag as f64)],
    );

    let state = |svc: &str, key: &str| -> serde_json::Value {
        stores
            .state
            .get_state(svc, key)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let sync = state("synchronizer", "stats");
    metric(
        &mut out,
        "bigbrotr_sync_frames_received_total",
        "counter",
        "EVENT frames received from relays (as of the node's last report, every 5 s).",
        &[("", json_u64(&sync, "received"))],
    );
    metric(
        &mut out,
        "bigbrotr_sync_events_new_total",
        "counter",
        "Events stored for the first time.",
        &[("", json_u64(&sync, "new_events"))],
    );
    metric(
        &mut out,
        "bigbrotr_sync_events_verified_total",
        "counter",
        "Signatures verified.",
        &[("", json_u64(&sync, "verified"))],
    );
    metric(
        &mut out,
        "bigbrotr_sync_events_refused_total",
        "counter",
        "Events refused, by reason.",
        &[("reason=\"invalid\"", json_u64(&sync, "invalid"))],
    );
    metric(
        &mut out,
        "bigbrotr_sync_pages_total",
        "counter",
        "Pages (REQ answers) stored.",
        &[("", json_u64(&sync, "pages"))],
    );

    if let Ok(health) = stores.state.health(now as i64 - 7 * 86_400) {
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        for h in &health {
            *by.entry(h.status.to_string()).or_default() += 1;
        }
        let labels: Vec<(String, f64)> = by
            .iter()
            .map(|(s, n)| {
                (
                    format!("status=\"{}\"", s.replace(['"', '\\', '\n'], "_")),
                    *n as f64,
                )
            })
            .collect();
        let samples: Vec<(&str, f64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            &mut out,
            "bigbrotr_relays",
            "gauge",
            "Registered relays by health status.",
            &samples,
        );
    }
    let monitor = state("monitor", "stats");
    if let serde_json::Value::Object(m) = &monitor {
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                let name = format!(
                    "bigbrotr_monitor_{}",
                    k.chars()
                        .map(|c| if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        })
                        .collect::<String>()
                );
                metric(
                    &mut out,
                    &name,
                    "gauge",
                    "Monitor statistic (as the monitor last reported it).",
                    &[("", n as f64)],
                );
            }
        }
    }
    let tor = state("tor", "status");
    let tor_state = tor.get("state").and_then(serde_json::Value::as_str);
    let percent = tor.get("percent").and_then(serde_json::Value::as_u64);
    metric(
        &mut out,
        "bigbrotr_tor_enabled",
        "gauge",
        "1 when the built-in Tor client is in use.",
        &[("", f64::from(u8::from(!tor.is_null())))],
    );
    metric(
        &mut out,
        "bigbrotr_tor_ready",
        "gauge",
        "1 once the built-in Tor client is bootstrapped (state ready).",
        &[("", f64::from(u8::from(tor_state == Some("ready"))))],
    );
    metric(
        &mut out,
        "bigbrotr_tor_bootstrap_percent",
        "gauge",
        "The built-in Tor client's bootstrap progress.",
        &[("", percent.unwrap_or(0) as f64)],
    );

    let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    metric(
        &mut out,
        "bigbrotr_serve_connections",
        "gauge",
        "Open websocket connections.",
        &[("", l(&serve.connections))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_http_requests_total",
        "counter",
        "HTTP requests served (websocket upgrades included).",
        &[("", l(&serve.http_requests))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_messages_total",
        "counter",
        "Messages received from websocket clients.",
        &[("", l(&serve.messages))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_requests_total",
        "counter",
        "Relay requests, by type.",
        &[
            ("type=\"req\"", l(&serve.reqs)),
            ("type=\"count\"", l(&serve.counts)),
            ("type=\"neg\"", l(&serve.negs)),
        ],
    );
    metric(
        &mut out,
        "bigbrotr_serve_events_sent_total",
        "counter",
        "Stored events sent to clients (live ones not included).",
        &[("", l(&serve.events_sent))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_slow_disconnects_total",
        "counter",
        "Clients disconnected for not reading.",
        &[("", l(&serve.slow_disconnects))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_rate_limited_total",
        "counter",
        "Requests and websocket messages refused by the per-address rate limits.",
        &[("", l(&serve.rate_limited))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_unauthorized_total",
        "counter",
        "Requests with a wrong API key or NIP-98 event (401).",
        &[("", l(&serve.unauthorized))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_exports_total",
        "counter",
        "Streaming exports started.",
        &[("", l(&serve.exports))],
    );
    metric(
        &mut out,
        "bigbrotr_serve_exported_events_total",
        "counter",
        "Events sent by streaming exports.",
        &[("", l(&serve.exported))],
    );
    serve.query_seconds.write(
        &mut out,
        "bigbrotr_serve_query_seconds",
        "Time to answer a query (REQ to EOSE, COUNT, REST).",
    );
    out
}
