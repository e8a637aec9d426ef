//! Read-side benchmarks (docs/BENCHMARKS.md, issue 12), against the release `bigbrotr serve`
//! over a store of BENCH_EVENTS signed events (default 20,000; the conformance corpus: many
//! authors' notes, replaceable and addressable versions, e/p/t tags, ties in one second).
//!
//! 1. `shapes`: for each query shape (an id lookup, an author+kind query, a tag query, a time
//!    scan with no indexed field) BENCH_QUERIES REQs (default 400) one after another on one
//!    websocket: p50/p99 latency (REQ to EOSE) and events per CPU-second of the server process
//!    (its threads' CPU time from /proc/PID/task/*/schedstat, in nanoseconds, so the client's
//!    own work is not counted).
//! 2. `idle`: RSS per idle websocket connection: BENCH_CONNS connections (default 1,000), each
//!    with one live subscription, VmRSS after minus before, per connection. Goal <= 50 KB.
//! 3. `export`: peak RSS while 100 clients stream `/v1/export` of the whole store at once
//!    (VmHWM during, against VmRSS idle before), and their total throughput.
//!
//! Run: `cargo bench --bench serve -- [shapes] [idle] [export]` (all by default).
//! BENCH_NODE_BIN=<path> measures another build of the binary.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::bench::{env_usize, raise_fd_limit, status_kib, vm_hwm_kib};
use tokio_tungstenite::tungstenite::Message;

fn node_bin() -> String {
    std::env::var("BENCH_NODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bigbrotr").into())
}

/// CPU time of each thread of a process, nanoseconds (the first field of
/// `/proc/PID/task/TID/schedstat`). utime + stime from `/proc/PID/stat` count in 10 ms ticks,
/// too coarse for a shape that the server answers in a few hundredths of a CPU-second.
fn thread_cpu_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, stat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// CPU seconds a process spent between two [`thread_cpu_ns`] readings: threads started in
/// between count in full; a thread that ended in between is not counted (servers keep their
/// worker threads; tokio's blocking threads live 10 s idle, longer than a shape runs).
fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    let ns: u64 = after
        .iter()
        .map(|(tid, t)| t.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    ns as f64 / 1e9
}

/// A free loopback address.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

/// Wait until something listens on `addr` (`what` names it in the failure).
fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(events: &[bigbrotr::protocol::Event], extra: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let data = dir.path().join("data");
    {
        let store = bigbrotr::store::EventStore::open(
            &data.join("events"),
            &bigbrotr::store::EventStoreOptions::default(),
        )
        .expect("store");
        store
            .bind_relay(1, "wss://relay.example.org")
            .expect("bind");
        for page in events.chunks(500) {
            store
                .write_page(1, 1, page, &vec![false; page.len()], None)
                .expect("write");
        }
    }
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[log]\nlevel = \"warn\"\n[seeder]\nenabled = false\n[tor]\nenabled = false\n[serve]\nlisten = \"{addr}\"\nrate_limit_per_minute = 0\nmax_connections = 5000\nmax_exports = 200\nmax_limit = 5000\n{extra}",
            data.display()
        ),
    )
    .expect("config");
    let child = Command::new(node_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    wait_listening(&addr, "bigbrotr serve");
    Server {
        child,
        addr,
        _dir: dir,
    }
}

/// A websocket with TCP_NODELAY: a REQ written right after a CLOSE must not wait for the
/// server's delayed ACK (Nagle), which would add ~40 ms to every query measured.
async fn ws_connect(
    url: &str,
) -> (
    Ws,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("ws")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// REQ to EOSE (then CLOSE: some relays keep a subscription open after EOSE): events received.
async fn req(ws: &mut Ws, sub: &str, filter: &Value) -> usize {
    ws.send(Message::text(json!(["REQ", sub, filter]).to_string()))
        .await
        .expect("send");
    let mut n = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.starts_with("[\"EVENT\"") {
                    n += 1;
                } else if t.starts_with("[\"EOSE\"") || t.starts_with("[\"CLOSED\"") {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => panic!("no EOSE for {filter} within 30 s"),
        }
    }
    ws.send(Message::text(json!(["CLOSE", sub]).to_string()))
        .await
        .expect("send");
    n
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One shape's figures on one server.
struct ShapeRun {
    p50: f64,
    p99: f64,
    events: usize,
    per_cpu: f64,
}

/// The four query shapes against the relay at `addr` (process `pid`), the same queries in the
/// same order for every server.
async fn run_shapes(
    addr: &str,
    pid: u32,
    events: &[bigbrotr::protocol::Event],
) -> Vec<(&'static str, ShapeRun)> {
    let queries = env_usize("BENCH_QUERIES", 400);
    let (mut ws, _) = ws_connect(&format!("ws://{addr}/")).await;
    let mut rng_i = 0usize;
    let mut pick = |n: usize| {
        rng_i = rng_i
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng_i >> 33) % n
    };
    // Ids of kind-1 notes (never replaced: every relay holds them all).
    let notes: Vec<String> = events
        .iter()
        .filter(|e| e.kind == 1)
        .map(|e| hex::encode(e.id))
        .collect();
    let authors: Vec<String> = {
        let mut a: Vec<String> = events.iter().map(|e| hex::encode(e.pubkey)).collect();
        a.sort();
        a.dedup();
        a
    };
    let (t_min, t_max) = (
        events.iter().map(|e| e.created_at).min().unwrap_or(0),
        events.iter().map(|e| e.created_at).max().unwrap_or(0),
    );
    let mut out = Vec::new();
    let mut sub = 0u64;
    for shape in ["id", "author+kind", "tag", "time scan"] {
        let mut lat = Vec::with_capacity(queries);
        let mut got = 0usize;
        let cpu0 = thread_cpu_ns(pid);
        for _ in 0..queries {
            let f = match shape {
                "id" => json!({"ids": [notes[pick(notes.len())]]}),
                "author+kind" => {
                    json!({"authors": [authors[pick(authors.len())]], "kinds": [1], "limit": 100})
                }
                "tag" => {
                    let t = ["nostr", "rust", "pi", "bitcoin"][pick(4)];
                    json!({"#t": [t], "limit": 100})
                }
                _ => {
                    let since = t_min + pick((t_max - t_min).max(1) as usize) as u64;
                    json!({"since": since, "until": since + 3600, "limit": 500})
                }
            };
            sub += 1;
            let t = Instant::now();
            got += req(&mut ws, &format!("q{sub}"), &f).await;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let cpu = cpu_between(&cpu0, &thread_cpu_ns(pid)).max(1e-6);
        lat.sort_by(|a, b| a.total_cmp(b));
        out.push((
            shape,
            ShapeRun {
                p50: pct(&lat, 0.5),
                p99: pct(&lat, 0.99),
                events: got,
                per_cpu: got as f64 / cpu,
            },
        ));
    }
    out
}

/// nostr-rs-relay (BENCH_BASE_RELAY=<its binary>) loaded with the same events over its
/// websocket (it verifies each, as it would from a client), at most 64 unacknowledged.
async fn start_base(
    bin: &str,
    events: &[bigbrotr::protocol::Event],
) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let port = addr.rsplit_once(':').map_or("", |x| x.1).to_string();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).expect("db dir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[info]\nrelay_url = \"ws://127.0.0.1:{port}/\"\nname = \"bench\"\n[database]\nengine = \"sqlite\"\ndata_directory = \"{}\"\n[network]\naddress = \"127.0.0.1\"\nport = {port}\n[limits]\nmax_event_bytes = 131072\nmax_ws_message_bytes = 131072\nmax_ws_frame_bytes = 131072\nlimit_scrapers = false\n[authorization]\nnip42_auth = false\n[verified_users]\nmode = \"disabled\"\n[pay_to_relay]\nenabled = false\n",
            db.display()
        ),
    )
    .expect("config");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nostr-rs-relay");
    wait_listening(&addr, "nostr-rs-relay");
    let (mut ws, _) = ws_connect(&format!("ws://{addr}/")).await;
    let mut pending = 0usize;
    let mut acked = 0usize;
    for ev in events {
        ws.send(Message::text(format!("[\"EVENT\",{}]", ev.to_json())))
            .await
            .expect("send");
        pending += 1;
        while pending >= 64 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                if t.starts_with("[\"OK\"") {
                    pending -= 1;
                    acked += 1;
                }
            }
        }
    }
    while pending > 0 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with("[\"OK\"") => {
                pending -= 1;
                acked += 1;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    eprintln!(
        "nostr-rs-relay: {acked} of {} events acknowledged",
        events.len()
    );
    (child, addr, dir)
}

async fn shapes(events: &[bigbrotr::protocol::Event]) {
    let server = start(events, "");
    let base = match std::env::var("BENCH_BASE_RELAY") {
        Ok(bin) if !bin.is_empty() => Some(start_base(&bin, events).await),
        _ => None,
    };
    let rounds = env_usize("BENCH_ROUNDS", 3);
    println!(
        "serve shapes over {} events, {} queries per shape and round, {rounds} rounds alternating servers (one websocket, one query after another); medians over rounds:",
        events.len(),
        env_usize("BENCH_QUERIES", 400)
    );
    let mut ours: Vec<Vec<(&str, ShapeRun)>> = Vec::new();
    let mut theirs: Vec<Vec<(&str, ShapeRun)>> = Vec::new();
    for _ in 0..rounds {
        ours.push(run_shapes(&server.addr, server.child.id(), events).await);
        if let Some((child, addr, _)) = &base {
            theirs.push(run_shapes(addr, child.id(), events).await);
        }
    }
    let med = |runs: &[Vec<(&str, ShapeRun)>], i: usize, f: fn(&ShapeRun) -> f64| -> f64 {
        let mut v: Vec<f64> = runs.iter().map(|r| f(&r[i].1)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "  {:<12} {:>8} {:>8} {:>8} {:>12} | {:>8} {:>8} {:>12} | {:>9} {:>9}",
        "shape",
        "events",
        "p50 ms",
        "p99 ms",
        "ev/CPU-s",
        "base p50",
        "base p99",
        "base ev/CPU-s",
        "CPU ratio",
        "p50 ratio"
    );
    for (i, (shape, r)) in ours[0].iter().enumerate() {
        let (p50, p99, cpu) = (
            med(&ours, i, |r| r.p50),
            med(&ours, i, |r| r.p99),
            med(&ours, i, |r| r.per_cpu),
        );
        if theirs.is_empty() {
            println!(
                "  {:<12} {:>8} {:>8.3} {:>8.3} {:>12.0}",
                shape, r.events, p50, p99, cpu
            );
        } else {
            let (bp50, bp99, bcpu) = (
                med(&theirs, i, |r| r.p50),
                med(&theirs, i, |r| r.p99),
                med(&theirs, i, |r| r.per_cpu),
            );
            println!(
                "  {:<12} {:>8} {:>8.3} {:>8.3} {:>12.0} | {:>8.3} {:>8.3} {:>12.0} | {:>8.2}x {:>8.2}x   (base answered {} events)",
                shape, r.events, p50, p99, cpu, bp50, bp99, bcpu, cpu / bcpu, bp50 / p50, theirs[0][i].1.events
            );
        }
    }
    if let Some((mut child, _, _)) = base {
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn idle(events: &[bigbrotr::protocol::Event]) {
    let server = start(events, "");
    let pid = server.child.id();
    let conns = env_usize("BENCH_CONNS", 1000);
    // One connection and one query first, so what every connection shares (buffers, caches,
    // threads) is in the "before".
    let (mut first, _) = ws_connect(&format!("ws://{}/", server.addr)).await;
    req(&mut first, "warm", &json!({"kinds": [1], "limit": 10})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status_kib(pid, "VmRSS:");
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (mut ws, _) = ws_connect(&format!("ws://{}/", server.addr)).await;
        // One live subscription each: nothing matches, so it stays open and idle.
        ws.send(Message::text(
            json!(["REQ", "live", {"kinds": [1], "since": 4_000_000_000u64}]).to_string(),
        ))
        .await
        .expect("send");
        held.push(ws);
    }
    for ws in &mut held {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(&m, Message::Text(t) if t.starts_with("[\"EOSE\"")) {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status_kib(pid, "VmRSS:");
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
    println!(
        "serve idle connections: {conns} websockets with one live subscription each: RSS {} -> {} MiB, {:.1} KB per connection (goal <= 50 KB)",
        before >> 10,
        after >> 10,
        per / 1000.0
    );
    drop(held);
}

fn export(events: &[bigbrotr::protocol::Event]) {
    let server = start(events, "");
    let pid = server.child.id();
    // Warm the store and the allocator once, then measure.
    let one = |addr: &str| -> usize {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET /v1/export HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    };
    one(&server.addr);
    let idle = status_kib(pid, "VmRSS:");
    let clients = env_usize("BENCH_EXPORTS", 100);
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || one(&addr))
        })
        .collect();
    let bytes: usize = handles.into_iter().map(|h| h.join().expect("client")).sum();
    let secs = t.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib(pid);
    println!(
        "serve export: {clients} clients streaming all {} events at once: {:.0} MB in {secs:.1} s; RSS idle {} MiB, peak {} MiB ({:.0} KB per stream above idle)",
        events.len(),
        bytes as f64 / 1e6,
        idle >> 10,
        hwm >> 10,
        (hwm.saturating_sub(idle)) as f64 * 1.024 / clients as f64
    );
}

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |m: &str| args.is_empty() || args.iter().any(|a| a == m);
    let n = env_usize("BENCH_EVENTS", 20_000);
    let events = support::conformance::corpus(n, 200, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if want("shapes") {
        rt.block_on(shapes(&events));
    }
    if want("idle") {
        rt.block_on(idle(&events));
    }
    if want("export") {
        export(&events);
    }
}
