//! Node benchmarks (docs/BENCHMARKS.md). Each prints a ratio against a baseline measured in the
//! same run, never an absolute pass/fail: these machines are shared and noisy.
//!
//! 1. Verified ingest: events archived per CPU-second of the node process (`bigbrotr sync --once`
//!    from a local relay into RocksDB) against the raw libsecp256k1 BIP-340 verification ceiling
//!    (pubkey parse + verify per CPU-second on the same events, this process, one thread).
//! 2. Wire efficiency: events received over the wire / unique events archived, from a relay that
//!    silently clamps `limit` to 500.
//! 3. Peak RSS of `bigbrotr run` syncing 100 local relays at once.
//! 4. Write amplification: bytes the node process wrote to disk (kernel I/O accounting, less
//!    what was deleted before it reached the disk) per byte of event JSON archived, while
//!    `sync --once` archives a large history; baseline: the same JSON written once to a file in
//!    page-sized fsynced chunks, measured the same way in the same run.
//!
//! Run: `cargo bench --bench ingest` (env BENCH_EVENTS, BENCH_RELAYS, BENCH_PER_RELAY to resize).

#[path = "../tests/support/mod.rs"]
mod support;

use support::bench::{env_usize, vm_hwm_kib};
use support::hostile;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nostr::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_bigbrotr");

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spawn and wait, returning (exit ok, user+sys CPU, peak RSS KiB) of the child alone.
fn run_measured(mut cmd: Command) -> (bool, Duration, i64) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bigbrotr");
    wait_measured(child)
}

fn wait_measured(child: std::process::Child) -> (bool, Duration, i64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are valid out-parameters.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec * 1000) as u32);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        if let Some(mut e) = child.stderr {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            eprintln!("bigbrotr failed: {s}");
        }
    }
    (ok, tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss)
}

fn node_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[tor]\nenabled = false\n[log]\nlevel = \"warn\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("config");
    cfg
}

/// `cmd --config CFG sync --relay URL --once`.
fn sync_once(mut cmd: Command, cfg: &Path, url: &str) -> Command {
    cmd.args(["--config", cfg.to_str().expect("utf8")])
        .args(["sync", "--relay", url, "--once"]);
    cmd
}

async fn local_relay(events: &[Event], clamp: Option<usize>) -> (support::TestRelay, String) {
    let relay = support::local_relay(
        events,
        support::RelayOpts {
            clamp,
            auth_read: false,
        },
    )
    .await;
    let url = relay.url.clone();
    (relay, url)
}

fn sign_all(n: usize, authors: usize, at: impl Fn(usize) -> u64 + Sync) -> Vec<Event> {
    let keys: Vec<Keys> = (0..authors).map(|_| Keys::generate()).collect();
    (0..n)
        .map(|i| {
            EventBuilder::text_note(format!("benchmark note {i} {}", "x".repeat(i % 200)))
                .tag(Tag::hashtag("bench"))
                .custom_created_at(Timestamp::from(at(i)))
                .sign_with_keys(&keys[i % authors])
                .expect("sign")
        })
        .collect()
}

/// Verifications per CPU-second of this thread with the same `secp256k1` crate as the node:
/// (x-only pubkey parse + Schnorr verify per event, Schnorr verify alone with every key parsed
/// beforehand). The node parses each author's key once per page (`PubkeyCache`), so with 50
/// authors its ceiling is the second figure; the first is what the earlier bench used.
fn ceiling(events: &[Event]) -> (f64, f64) {
    use nostr::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
    let secp = Secp256k1::verification_only();
    let items: Vec<([u8; 32], [u8; 32], [u8; 64])> = events
        .iter()
        .map(|e| (e.pubkey.to_bytes(), e.id.to_bytes(), e.sig.serialize()))
        .collect();
    let t = thread_cpu();
    let mut ok = 0usize;
    for (pk, id, sig) in &items {
        let pk = XOnlyPublicKey::from_slice(pk).expect("pk");
        let sig = schnorr::Signature::from_slice(sig).expect("sig");
        if secp
            .verify_schnorr(&sig, &Message::from_digest(*id), &pk)
            .is_ok()
        {
            ok += 1;
        }
    }
    let with_parse = items.len() as f64 / (thread_cpu() - t).as_secs_f64();
    let parsed: Vec<(XOnlyPublicKey, Message, schnorr::Signature)> = items
        .iter()
        .map(|(pk, id, sig)| {
            (
                XOnlyPublicKey::from_slice(pk).expect("pk"),
                Message::from_digest(*id),
                schnorr::Signature::from_slice(sig).expect("sig"),
            )
        })
        .collect();
    let t = thread_cpu();
    for (pk, msg, sig) in &parsed {
        if secp.verify_schnorr(sig, msg, pk).is_ok() {
            ok += 1;
        }
    }
    let verify_only = items.len() as f64 / (thread_cpu() - t).as_secs_f64();
    assert_eq!(ok, 2 * items.len());
    (with_parse, verify_only)
}

/// The ceiling alone: the same events, no relay, no node, nothing else in this process.
fn bench_ceiling() {
    let n = env_usize("BENCH_EVENTS", 40_000);
    let t0 = 1_700_000_000u64;
    let events = sign_all(n, 50, |i| t0 + (i as u64 * 13) % (n as u64 * 2));
    for round in 0..env_usize("BENCH_ROUNDS", 5) {
        let (p, v) = ceiling(&events);
        println!("ceiling alone round {round}: {n} events, parse+verify {p:.0}/CPU-s, verify only {v:.0}/CPU-s");
    }
}

async fn bench_ingest() {
    let n = env_usize("BENCH_EVENTS", 40_000);
    let rounds = env_usize("BENCH_ROUNDS", 5);
    let t0 = 1_700_000_000u64;
    let events = sign_all(n, 50, |i| t0 + (i as u64 * 13) % (n as u64 * 2));
    let (_relay, url) = local_relay(&events, None).await;
    // Alternate ceiling and node runs and report the median ratio: one run of each is at the
    // mercy of whatever else the shared machine is doing in those seconds.
    let mut ratios = Vec::new();
    let mut old_ratios = Vec::new();
    // BENCH_BASE_BIN: another build run in every round too (order alternating), e.g. the
    // commit before a change, for a same-run A/B.
    let base = std::env::var("BENCH_BASE_BIN").ok();
    let mut base_ratios = Vec::new();
    for round in 0..rounds {
        if let Some(base) = &base {
            let before = ceiling(&events);
            let dir = tempfile::tempdir().expect("tmp");
            let cfg = node_config(dir.path(), "[seeder]\nenabled = false\n");
            let cmd = sync_once(wrapped(base), &cfg, &url);
            let (ok, cpu, _) = tokio::task::spawn_blocking(move || run_measured(cmd))
                .await
                .expect("join");
            assert!(ok, "base sync failed");
            let after = ceiling(&events);
            let ceil = (before.1 + after.1) / 2.0;
            let rate = n as f64 / cpu.as_secs_f64();
            println!(
                "  base build round {round}: node {rate:.0} events/CPU-s, ceiling {ceil:.0}, ratio {:.2}",
                rate / ceil
            );
            base_ratios.push(rate / ceil);
        }
        let before = ceiling(&events);
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = node_config(dir.path(), "[seeder]\nenabled = false\n");
        let cmd = sync_once(wrapped(&node_bin()), &cfg, &url);
        let wall = Instant::now();
        let (ok, cpu, _) = tokio::task::spawn_blocking(move || run_measured(cmd))
            .await
            .expect("join");
        let wall = wall.elapsed();
        assert!(ok, "sync failed");
        // The ceiling measured right before and right after the node ran, averaged: this
        // machine's CPU speed drifts by tens of percent within seconds.
        let after = ceiling(&events);
        let (parse_ceil, ceil) = ((before.0 + after.0) / 2.0, (before.1 + after.1) / 2.0);
        let rate = n as f64 / cpu.as_secs_f64();
        println!(
            "verified ingest round {round}: {n} events, node {rate:.0} events/CPU-s (CPU {:.2} s, wall {:.2} s), ceiling {ceil:.0} verifies/CPU-s (keys parsed; {parse_ceil:.0} parsing each), ratio {:.2} ({:.2} against parse+verify)",
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            rate / ceil,
            rate / parse_ceil
        );
        ratios.push(rate / ceil);
        old_ratios.push(rate / parse_ceil);
        if round == 0 {
            print_disk_per_event(&dir.path().join("data").join("events"), n);
        }
    }
    ratios.sort_by(f64::total_cmp);
    old_ratios.sort_by(f64::total_cmp);
    if !base_ratios.is_empty() {
        base_ratios.sort_by(f64::total_cmp);
        println!(
            "  base build: median {:.2}x of the ceiling (range {:.2}-{:.2}); this build / base = {:.2}",
            base_ratios[base_ratios.len() / 2],
            base_ratios[0],
            base_ratios[base_ratios.len() - 1],
            ratios[ratios.len() / 2] / base_ratios[base_ratios.len() / 2]
        );
    }
    println!(
        "  ratio: median {:.2}x of the verify-only ceiling over {rounds} rounds (range {:.2}-{:.2}; goal >= 0.70); {:.2}x of parse+verify",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        old_ratios[old_ratios.len() / 2]
    );
}

/// Bytes on disk per event, per column family, of a store a node just wrote and flushed.
fn print_disk_per_event(events_dir: &Path, n: usize) {
    let store = match bigbrotr::store::EventStore::open_read_only(
        events_dir,
        &bigbrotr::store::EventStoreOptions::default(),
    ) {
        Ok(s) => s,
        Err(e) => {
            println!("  (store sizes not read: {e})");
            return;
        }
    };
    let sizes = store.disk_bytes_per_cf();
    let total: u64 = sizes.iter().map(|(_, b)| b).sum();
    let parts: Vec<String> = sizes
        .iter()
        .filter(|(_, b)| *b > 0)
        .map(|(name, b)| format!("{name} {:.0}", *b as f64 / n as f64))
        .collect();
    println!(
        "  on disk per event: {:.0} bytes ({})",
        total as f64 / n as f64,
        parts.join(", ")
    );
}

/// The node binary: `BENCH_NODE_BIN` (e.g. the aarch64 build, with
/// `BENCH_WRAP="qemu-aarch64-static -L /usr/aarch64-linux-gnu"`), else the host build.
fn node_bin() -> String {
    std::env::var("BENCH_NODE_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// `BENCH_WRAP="perf record -g -o /tmp/perf.data"` runs the node under a profiler.
fn wrapped(bin: &str) -> Command {
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    match wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

async fn bench_wire() {
    let n = env_usize("BENCH_EVENTS", 30_000);
    let k = Keys::generate();
    let t0 = 1_700_000_000u64;
    // Bursty history: most seconds hold 0-3 events, some hold dozens. BENCH_WIRE_SATURATED=S
    // puts the first S x 3 events into three seconds of S events each (S > 500: seconds fuller
    // than the relay's clamp, which the node must narrow).
    let saturated = env_usize("BENCH_WIRE_SATURATED", 0);
    // The saturated seconds have 20 authors (a relay-wide second with one author and one kind
    // can only be proven by NIP-77 or ids).
    let burst_keys: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    let events: Vec<hostile::RawEvent> = (0..n)
        .map(|i| {
            let ts = if i < saturated * 3 {
                t0 + 1_000 + (i / saturated.max(1)) as u64 * 5_000
            } else if i % 10 == 0 {
                t0 + (i as u64 / 40) * 40
            } else {
                t0 + (i as u64 * 7919) % (n as u64)
            };
            let key = if i < saturated * 3 {
                &burst_keys[i % burst_keys.len()]
            } else {
                &k
            };
            hostile::sign_event(key, ts, 1, vec![], &format!("wire {i}"))
        })
        .collect();
    let relay = hostile::HostileRelay::start(
        events,
        hostile::Options {
            clamp: 500,
            // BENCH_WIRE_COUNT=0: a relay without COUNT (saturated seconds are then narrowed
            // by other means, at a wire cost).
            count: std::env::var("BENCH_WIRE_COUNT").map_or(true, |v| v != "0"),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = node_config(
        dir.path(),
        "[seeder]\nenabled = false\n[sync]\npage_limit = 1000\n",
    );
    let cmd = sync_once(Command::new(BIN), &cfg, &relay.url());
    let (ok, _, _) = tokio::task::spawn_blocking(move || run_measured(cmd))
        .await
        .expect("join");
    assert!(ok, "sync failed");
    let sent = relay.events_sent();
    println!(
        "wire efficiency: relay clamps limit to 500 (node asks 1000), {n} unique events ({saturated} in each of 3 seconds when > 0), COUNT {}",
        if std::env::var("BENCH_WIRE_COUNT").is_ok_and(|v| v == "0") {
            "refused"
        } else {
            "answered"
        }
    );
    println!("  received over the wire / unique archived = {sent} / {n} = {:.3} (goal <= 1.05; Python BigBrotr 4.1)", sent as f64 / n as f64);
}

async fn bench_rss() {
    let relays = env_usize("BENCH_RELAYS", 100);
    let per = env_usize("BENCH_PER_RELAY", 1_000);
    let t0 = 1_700_000_000u64;
    let shared = sign_all(per / 2, 20, |i| t0 + i as u64);
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    let mut unique = shared.len();
    for r in 0..relays {
        let mut evs = shared.clone();
        evs.extend(sign_all(per - per / 2, 5, |i| {
            t0 + 10_000 + (r * per + i) as u64
        }));
        unique += per - per / 2;
        let (relay, url) = local_relay(&evs, None).await;
        servers.push(relay);
        urls.push(url);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let seeds = dir.path().join("seeds.txt");
    std::fs::write(&seeds, urls.join("\n")).expect("seeds");
    let cfg = node_config(
        dir.path(),
        &format!(
            "[seeder]\nfile = \"{}\"\n[finder]\nenabled = false\n[monitor]\nenabled = false\n[sync]\nmax_relays = {relays}\nlive_turn_secs = 3600\n{}",
            seeds.display(),
            std::env::var("BENCH_SYNC_EXTRA").unwrap_or_default().replace("\\n", "\n")
        ),
    );
    let child = wrapped(&node_bin())
        .args(["--config", cfg.to_str().expect("utf8"), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let start = Instant::now();
    let cfg2 = cfg.clone();
    let done = tokio::task::spawn_blocking(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let out = Command::new(BIN)
            .args(["--config", cfg2.to_str().expect("utf8"), "status", "--json"])
            .output();
        if let Ok(o) = out {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
                let complete = v["relays"]
                    .as_array()
                    .map(|a| a.iter().filter(|r| !r["done_until"].is_null()).count())
                    .unwrap_or(0);
                if v["events_stored"].as_u64() == Some(unique as u64) && complete == relays {
                    return true;
                }
            }
        }
        if start.elapsed() > Duration::from_secs(600) {
            return false;
        }
    })
    .await
    .expect("join");
    let wall = start.elapsed();
    // Peak RSS of the node itself (VmHWM, not wait4's ru_maxrss: see support/bench.rs).
    let hwm_kib = vm_hwm_kib(pid);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let (ok, cpu, _) = tokio::task::spawn_blocking(move || wait_measured(child))
        .await
        .expect("join");
    assert!(done, "the node did not archive every relay within 600 s");
    println!("100-relay sync: {relays} relays x {per} events ({unique} unique), all complete in {:.1} s wall, {:.1} CPU-s, clean stop: {ok}", wall.as_secs_f64(), cpu.as_secs_f64());
    println!(
        "  peak RSS (VmHWM, until all relays complete): {:.1} MB (goal <= 50 MB)",
        hwm_kib as f64 / 1024.0
    );
}

/// (write_bytes, cancelled_write_bytes) from /proc/PID/io.
fn proc_io(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("cancelled_write_bytes:"))
}

/// Run to exit and read the child's whole-life I/O accounting before reaping it (a zombie's
/// /proc/PID/io holds the totals of every thread it had).
fn run_io_measured(mut cmd: Command) -> (bool, u64, u64) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bigbrotr");
    let pid = child.id() as libc::pid_t;
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our child's exit without reaping it (WNOWAIT).
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(rc, 0, "waitid");
    let (written, cancelled) = proc_io(&pid.to_string());
    let (ok, _, _) = wait_measured(child);
    (ok, written, cancelled)
}

async fn bench_write_amp() {
    let n = env_usize("BENCH_WA_EVENTS", 200_000);
    let t0 = 1_600_000_000u64;
    // Notes of 0-2.4 KB (mean ~1.4 KB of JSON, as measured on the network), over months. The
    // text is pseudo-random letters, which LZ4 cannot shrink: real notes compress about 2x, so
    // this is the worst case for what flushes and compactions write.
    let keys: Vec<Keys> = (0..50).map(|_| Keys::generate()).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let body: String = (0..(i * 7919) % 2400)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    match rng % 32 {
                        0..=25 => (b'a' + (rng % 32) as u8) as char,
                        _ => ' ',
                    }
                })
                .collect();
            EventBuilder::text_note(format!("note {i} {body}"))
                .tag(Tag::hashtag("bench"))
                .custom_created_at(Timestamp::from(t0 + (i as u64 * 7_777) % (n as u64 * 60)))
                .sign_with_keys(&keys[i % keys.len()])
                .expect("sign")
        })
        .collect();
    let json: Vec<String> = events.iter().map(|e| e.as_json()).collect();
    let bytes: u64 = json.iter().map(|j| j.len() as u64).sum();
    let (_relay, url) = local_relay(&events, None).await;
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DISK_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .expect("a temp dir on a real disk (not tmpfs: it has no I/O accounting)");

    // Baseline: the JSON written once, in ~700 KB fsynced chunks (a page of 500 events).
    let (w0, c0) = proc_io("self");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("corpus.jsonl")).expect("file");
        let mut chunk = Vec::with_capacity(1 << 20);
        for j in &json {
            chunk.extend_from_slice(j.as_bytes());
            chunk.push(b'\n');
            if chunk.len() >= 700 << 10 {
                f.write_all(&chunk).expect("write");
                f.sync_data().expect("fsync");
                chunk.clear();
            }
        }
        f.write_all(&chunk).expect("write");
        f.sync_data().expect("fsync");
    }
    let (w1, c1) = proc_io("self");
    let base = (w1 - w0).saturating_sub(c1 - c0) as f64 / bytes as f64;

    let cfg = node_config(dir.path(), "[seeder]\nenabled = false\n");
    let cmd = sync_once(Command::new(BIN), &cfg, &url);
    let (ok, written, cancelled) = tokio::task::spawn_blocking(move || run_io_measured(cmd))
        .await
        .expect("join");
    assert!(ok, "sync failed");
    let net = written.saturating_sub(cancelled);
    let du = dir_bytes(&dir.path().join("data"));
    println!(
        "write amplification: {n} events, {:.1} MB of event JSON archived by `sync --once`",
        bytes as f64 / 1e6
    );
    println!(
        "  node wrote {:.1} MB ({:.1} MB dirtied, {:.1} MB deleted before writeback); on disk after: {:.1} MB",
        net as f64 / 1e6,
        written as f64 / 1e6,
        cancelled as f64 / 1e6,
        du as f64 / 1e6
    );
    println!(
        "  bytes written per event byte: node {:.2}x, baseline (the JSON written once) {base:.2}x; node/baseline {:.2} (goal <= 4x)",
        net as f64 / bytes as f64,
        net as f64 / bytes as f64 / base
    );
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| name.contains(w.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if run("ingest") {
            bench_ingest().await;
        }
        if run("wire") {
            bench_wire().await;
        }
        if run("rss") {
            bench_rss().await;
        }
        if which.iter().any(|w| w == "ceiling") {
            bench_ceiling();
        }
        if run("write") {
            bench_write_amp().await;
        }
    });
}
