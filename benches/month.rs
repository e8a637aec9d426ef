//! A month of state (docs/BENCHMARKS.md, issue 11): every periodic job of a node timed on a
//! state database holding a month of history for 1,000 relays, against the same job on the same
//! registry with no history, in the same run (the ratio is the cost of the month).
//!
//! The month: 1,000 relays (registry, health rows, sync cursors), 100,000 distinct check
//! documents, 3,000,000 observations spread over 30 days, 30 days of uptime per relay: what
//! ~300 online relays produce in a month (issue 11) on a registry three times that size.
//!
//! Jobs, each the median of several runs: the prune (every 10 minutes, cutting the oldest ten
//! minutes, as it does in steady state), the synchronizer's due-relay query, the monitor's due-check query, the
//! `relays list` health query, the `status` observation count, and the Finder's lookup of 64
//! candidate URLs. Then a 100 ms heartbeat task on a 2-worker runtime while the jobs run on
//! blocking threads (a whole day pruned at once included): its longest gap (goal < 200 ms; the
//! watchdog ping is such a task).
//!
//! Run: `cargo bench --bench month` (BENCH_OBS, BENCH_DOCS, BENCH_RELAYS to resize).

#[path = "../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench_support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::env_usize;
use bigbrotr::protocol::url::normalize;
use bigbrotr::store::State;
use rusqlite::{params, Connection};

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A state database with `relays` registered (health and cursor rows), and, if `month`, the
/// history: `docs` documents, `obs` observations over 30 days, 30 days of uptime per relay.
fn build(path: &Path, relays: usize, docs: usize, obs: usize, month: bool, at: i64) {
    drop(State::open(path).unwrap());
    let mut c = Connection::open(path).unwrap();
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut r = tx
            .prepare(
                "INSERT INTO relay (id, url, network, source, discovered_at, status,
                    last_success_at, next_attempt_at) VALUES (?1, ?2, 'clearnet', 'finder', ?3,
                    'online', ?4, ?5)",
            )
            .unwrap();
        let mut h = tx
            .prepare(
                "INSERT OR REPLACE INTO relay_health (relay_id, status, checked_at, next_open_at,
                    next_nip11_at, next_nip66_at, nip11_id, nip66_id)
                 VALUES (?1, 'online', ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        let mut cur = tx
            .prepare(
                "INSERT INTO sync_cursor (relay_id, done_until, updated_at) VALUES (?1, ?2, ?2)",
            )
            .unwrap();
        for i in 0..relays as i64 {
            // Spread schedules so a few relays are due at any moment, as in a running node.
            let due = at + (i * 7) % 600 - 5;
            r.execute(params![
                i + 1,
                format!("wss://relay{i}.example.com"),
                at - 40 * DAY,
                at - 60,
                due
            ])
            .unwrap();
            let (n11, n66) = if month {
                (
                    Some(format!("doc{}", i * 2)),
                    Some(format!("doc{}", i * 2 + 1)),
                )
            } else {
                (None, None)
            };
            h.execute(params![
                i + 1,
                at - 60,
                due,
                due + 3_000,
                due + 1_200,
                n11,
                n66
            ])
            .unwrap();
            cur.execute(params![i + 1, at - 120]).unwrap();
        }
    }
    if month {
        let mut d = tx
            .prepare("INSERT INTO monitor_document (id, data) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..docs {
            d.execute(params![
                format!("doc{i}"),
                format!(
                    r#"{{"rtt_open":{},"n":{i},"software":"strfry","pad":"{}"}}"#,
                    i % 900,
                    "x".repeat(200)
                )
            ])
            .unwrap();
        }
        let mut o = tx
            .prepare(
                "INSERT INTO observation (relay_id, checked_at, type, ok, rtt_open, document_id)
                 VALUES (?1, ?2, ?3, 1, 40, ?4)",
            )
            .unwrap();
        let span = 30 * DAY;
        for i in 0..obs as i64 {
            let t = at - span + i * span / obs as i64;
            let kind = ["open", "open", "open", "nip66", "nip11"][(i % 5) as usize];
            o.execute(params![
                i % relays as i64 + 1,
                t,
                kind,
                format!("doc{}", i % docs as i64)
            ])
            .unwrap();
        }
        let mut u = tx
            .prepare(
                "INSERT INTO uptime_day (relay_id, day, up_secs, down_secs) VALUES (?1, ?2, 80000, 6400)",
            )
            .unwrap();
        for r in 0..relays as i64 {
            for day in 0..30 {
                u.execute(params![r + 1, at / DAY - day]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
    c.execute_batch("ANALYZE").unwrap();
}

/// Median wall time of `runs` runs of `job` (ms), each run given its index.
fn median_ms(runs: usize, mut job: impl FnMut(usize)) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|i| {
            let s = Instant::now();
            job(i);
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[runs / 2]
}

fn jobs(st: &State, at: i64, relays: usize) -> Vec<(&'static str, f64)> {
    let candidates: Vec<_> = (0..64)
        .map(|i| normalize(&format!("wss://relay{}.example.com", i * 17 % (relays * 2))).unwrap())
        .collect();
    let none = HashSet::new();
    vec![
        (
            "prune (oldest 10 minutes)",
            median_ms(5, |i| {
                let before = at - 30 * DAY + (i as i64 + 1) * 600;
                st.prune_history(before, None).unwrap();
            }),
        ),
        (
            "due relays (sync)",
            median_ms(21, |_| {
                st.due_relays(at, 64).unwrap();
            }),
        ),
        (
            "due checks (monitor)",
            median_ms(21, |_| {
                st.due_checks(at, 16, &none).unwrap();
            }),
        ),
        (
            "relays list (health, 7-day uptime)",
            median_ms(5, |_| {
                st.health(at - 7 * DAY).unwrap();
            }),
        ),
        (
            "status (observation count)",
            median_ms(5, |_| {
                st.observation_count().unwrap();
            }),
        ),
        (
            "finder (64 candidate lookups)",
            median_ms(21, |_| {
                st.unknown_urls(&candidates).unwrap();
            }),
        ),
    ]
}

/// Longest gap of a 100 ms ticker on a 2-worker runtime while `work` runs on a blocking thread.
/// Each tick also reads a sync cursor through the state connection, as the sync path does after
/// every page: the gap shows whether the state connection is held for long.
fn heartbeat_gap(st: Arc<State>, work: impl FnOnce() + Send + 'static) -> (Duration, Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let ticker = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut last = Instant::now();
            while !d2.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = st.clone();
                tokio::task::spawn_blocking(move || s.cursor(1).unwrap())
                    .await
                    .unwrap();
                worst = worst.max(last.elapsed());
                last = Instant::now();
            }
            worst
        });
        let started = Instant::now();
        tokio::task::spawn_blocking(work).await.unwrap();
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (ticker.await.unwrap(), took)
    })
}

fn main() {
    let relays = env_usize("BENCH_RELAYS", 1_000);
    let docs = env_usize("BENCH_DOCS", 100_000).max(relays * 2);
    let obs = env_usize("BENCH_OBS", 3_000_000);
    let dir = tempfile::tempdir().unwrap();
    let at = now();
    let (empty_path, month_path) = (
        dir.path().join("empty.sqlite"),
        dir.path().join("month.sqlite"),
    );
    let t = Instant::now();
    build(&empty_path, relays, docs, obs, false, at);
    build(&month_path, relays, docs, obs, true, at);
    println!(
        "month of state: {relays} relays, {docs} documents, {obs} observations over 30 days \
         (built in {:.0} s, {} MB)",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&month_path).unwrap().len() >> 20
    );
    let empty = State::open(&empty_path).unwrap();
    let month = Arc::new(State::open(&month_path).unwrap());
    let base = jobs(&empty, at, relays);
    let full = jobs(&month, at, relays);
    println!(
        "{:<38} {:>12} {:>12} {:>8}",
        "job", "empty ms", "month ms", "ratio"
    );
    let mut worst: f64 = 0.0;
    for ((name, b), (_, f)) in base.iter().zip(&full) {
        worst = worst.max(*f);
        println!("{name:<38} {b:>12.3} {f:>12.3} {:>8.1}", f / b.max(0.001));
    }
    println!("slowest job at a month's size: {worst:.1} ms (goal < 100 ms)");
    // A whole day pruned at once (a node that was off for a day) plus the per-second queries,
    // while a heartbeat ticks on the async workers.
    let m = month.clone();
    let (gap, took) = heartbeat_gap(month.clone(), move || {
        let (o, d) = m.prune_history(at - 29 * DAY + 3_600, None).unwrap();
        for _ in 0..50 {
            m.due_relays(at, 64).unwrap();
            m.due_checks(at, 16, &HashSet::new()).unwrap();
        }
        println!("  (a day's prune in the heartbeat run: {o} observations, {d} documents)");
    });
    println!(
        "heartbeat (100 ms ticker) longest gap while a day is pruned and queries run: {:.0} ms \
         over {:.1} s (goal < 200 ms)",
        gap.as_secs_f64() * 1e3,
        took.as_secs_f64()
    );
}
