//! Appliance benchmarks (docs/BENCHMARKS.md, issue 5): what a Raspberry Pi owner cares about.
//!
//! 1. Start to first relay connection: `bigbrotr run` with one registered relay (the in-repo test
//!    relay, which counts connections), from spawn until the relay sees the node connect. Goal
//!    < 1 s. Baseline in the same run: spawn-to-exit of `bigbrotr --version` (the process start
//!    floor).
//! 2. Idle peak RSS: `bigbrotr run` with nothing to do (no relays) for 10 s, VmHWM.
//! 3. Stripped binary sizes: the host release binary and any cross builds present in the target
//!    dir (scripts/cross-build makes them). Goal with Tor <= 30 MB (Tor is not built in yet).
//!
//! Run: `cargo bench --bench appliance` (BENCH_ROUNDS, default 5).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::bench::vm_hwm_kib;
use support::hostile::{HostileRelay, Options};

const BIN: &str = env!("CARGO_BIN_EXE_bigbrotr");

fn config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[log]\nlevel = \"warn\"\n[seeder]\nenabled = false\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("config");
    cfg
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn first_connection(rounds: usize) {
    let mut start_ms = Vec::new();
    let mut base_ms = Vec::new();
    for _ in 0..rounds {
        let relay = HostileRelay::start(vec![], Options::default()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(
            dir.path(),
            "[finder]\nenabled = false\n[monitor]\nenabled = false\n",
        );
        let cfg_s = cfg.to_str().expect("utf8");
        let add = Command::new(BIN)
            .args(["--config", cfg_s, "relays", "add", &relay.url()])
            .output()
            .expect("relays add");
        assert!(add.status.success());
        // `init` first, as the systemd unit does (ExecStartPre): the node key and stores exist.
        let init = Command::new(BIN)
            .args(["--config", cfg_s, "init"])
            .output()
            .expect("init");
        assert!(init.status.success());

        let t = Instant::now();
        let v = Command::new(BIN)
            .arg("--version")
            .output()
            .expect("version");
        assert!(v.status.success());
        base_ms.push(t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["--config", cfg_s, "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        while relay.connections() == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no connection in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        start_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    let (s, b) = (median(start_ms.clone()), median(base_ms.clone()));
    println!(
        "start to first relay connection: median {s:.0} ms over {rounds} rounds (goal < 1000 ms; min {:.0}, max {:.0}); baseline `bigbrotr --version` {b:.1} ms; ratio {:.1}x",
        start_ms.iter().cloned().fold(f64::MAX, f64::min),
        start_ms.iter().cloned().fold(0.0, f64::max),
        s / b.max(0.001)
    );
}

/// Peak RSS (VmHWM) of `bigbrotr run` with nothing to do, after 10 s; `wrap` runs it under a
/// program such as qemu-user.
async fn idle_hwm_mb(bin: &Path, wrap: &[&str]) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "");
    let mut cmd = match wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(["--config", cfg.to_str().expect("utf8"), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let hwm = vm_hwm_kib(child.id());
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    hwm as f64 / 1024.0
}

async fn idle_rss() {
    println!(
        "idle `bigbrotr run` (no relays, 10 s): peak RSS {:.1} MB (goal <= 50 MB without Tor)",
        idle_hwm_mb(Path::new(BIN), &[]).await
    );
    // The same under qemu-user with the aarch64 build, when scripts/cross-build made it (the
    // figure includes qemu's own translation cache: an upper bound for a real Pi).
    let arm = PathBuf::from(BIN)
        .ancestors()
        .nth(2)
        .map(|t| t.join("aarch64-unknown-linux-gnu/release/bigbrotr"))
        .filter(|p| p.exists());
    if let Some(arm) = arm {
        let qemu = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"];
        println!(
            "idle `bigbrotr run` aarch64 under qemu-user (10 s): peak RSS {:.1} MB, qemu included",
            idle_hwm_mb(&arm, &qemu).await
        );
    }
}

fn sizes() {
    let host = PathBuf::from(BIN);
    let target_dir = host
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rows = vec![("x86_64 (host)".to_string(), host.clone())];
    for t in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
        rows.push((
            t.to_string(),
            target_dir.join(t).join("release").join("bigbrotr"),
        ));
    }
    for (name, path) in rows {
        match std::fs::metadata(&path) {
            Ok(m) => println!(
                "binary {name}: {:.1} MB stripped, without Tor (goal with Tor <= 30 MB)",
                m.len() as f64 / 1_048_576.0
            ),
            Err(_) => println!("binary {name}: not built (scripts/cross-build makes it)"),
        }
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        first_connection(rounds).await;
        idle_rss().await;
    });
    sizes();
}
