//! Monitor sweep benchmark (docs/BENCHMARKS.md): `bigbrotr monitor` (the service, default
//! concurrency) checking 1,000 local relays: NIP-11 plus the NIP-66 open/read/write round trips
//! each. Half are real relay software (rust-nostr's LocalRelay: accepts the write test and serves
//! it back), half the in-repo test relay serving a NIP-11 document (refuses writes).
//!
//! Prints the wall time until every relay has its NIP-11 and NIP-66 check recorded, and the
//! node's peak RSS (VmHWM) at that moment, against the issue's goals (<= 60 s, <= 64 MB), and a
//! baseline measured in the same run: the bench process itself opening and closing a TCP
//! connection to every relay at the same concurrency (the floor no monitor can beat).
//!
//! Run: `cargo bench --bench monitor` (BENCH_RELAYS to resize, BENCH_ROUNDS for repeats).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::bench::{env_usize, raise_fd_limit, vm_hwm_kib};
use support::hostile::HostileRelay;

const BIN: &str = env!("CARGO_BIN_EXE_bigbrotr");

/// What the sweep recorded: relays online, with a read RTT, with a write RTT, with NIP-11.
fn recorded(state: &std::path::Path) -> (i64, i64, i64, i64) {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return (0, 0, 0, 0);
    };
    conn.query_row(
        "SELECT sum(status = 'online'), count(read_ms), count(write_ms), count(nip11_at)
         FROM relay_health",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap_or((0, 0, 0, 0))
}

/// Relays with both their NIP-11 and NIP-66 check recorded.
fn checked(state: &std::path::Path) -> usize {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        state,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM relay_health WHERE next_nip11_at > 0 AND next_nip66_at > 0",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .unwrap_or(0)
}

/// The floor: TCP connect + close to every relay, `concurrency` at a time, from this process.
async fn baseline(urls: &[String], concurrency: usize) -> Duration {
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("ws://").to_string())
        .collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for a in addrs {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        set.spawn(async move {
            let _s = tokio::net::TcpStream::connect(a).await;
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
    t.elapsed()
}

async fn sweep_once(urls: &[String]) -> (Duration, u64, usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let seeds = dir.path().join("seeds.txt");
    std::fs::write(&seeds, urls.join("\n")).expect("seeds");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[tor]\nenabled = false\n[log]\nlevel = \"warn\"\n[seeder]\nfile = \"{}\"\n[monitor]\ncheck_timeout_secs = 10\n",
            dir.path().join("data").display(),
            seeds.display()
        ),
    )
    .expect("config");
    let init = Command::new(BIN)
        .args(["--config", cfg.to_str().expect("utf8"), "init"])
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let state = dir.path().join("data").join("state.sqlite");
    let mut child = Command::new(BIN)
        .args(["--config", cfg.to_str().expect("utf8"), "monitor"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        done = checked(&state);
        if done >= urls.len() {
            break;
        }
    }
    let wall = start.elapsed();
    let hwm = vm_hwm_kib(pid);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let (online, read, write, nip11) = recorded(&state);
    println!("    recorded: {online} online, {read} with read RTT, {write} with write RTT, {nip11} with a NIP-11 document");
    (wall, hwm, done)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_fd_limit();
    let n = env_usize("BENCH_RELAYS", 1000);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let concurrency = 32; // monitor.max_concurrent default
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut real = Vec::new();
        let mut hostile = Vec::new();
        let mut urls = Vec::new();
        let doc = r#"{"name":"bench","software":"bench","version":"1","supported_nips":[1,11,66],"limitation":{"max_limit":500}}"#;
        for i in 0..n {
            if i % 2 == 0 {
                let r = support::local_relay(&[], support::RelayOpts::default()).await;
                urls.push(r.url.clone());
                real.push(r);
            } else {
                let r = HostileRelay::serving_nip11(doc).await;
                urls.push(r.url());
                hostile.push(r);
            }
        }
        println!("monitor sweep: {n} local relays ({} LocalRelay, {} test relays with NIP-11), monitor.max_concurrent = {concurrency}", real.len(), hostile.len());
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let base = baseline(&urls, concurrency).await;
            let (wall, hwm, done) = sweep_once(&urls).await;
            assert_eq!(done, n, "every relay checked within 600 s");
            let ratio = wall.as_secs_f64() / base.as_secs_f64().max(1e-6);
            ratios.push(ratio);
            println!(
                "  round {round}: sweep {:.2} s (goal <= 60 s), peak RSS {:.1} MB (goal <= 64 MB); baseline TCP connect sweep {:.3} s; sweep/baseline {:.1}x",
                wall.as_secs_f64(),
                hwm as f64 / 1024.0,
                base.as_secs_f64(),
                ratio
            );
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        println!("  median sweep/baseline: {:.1}x", ratios[ratios.len() / 2]);
    });
}
