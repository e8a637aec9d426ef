//! Appliance benchmarks (docs/BENCHMARKS.md, issue 5): what a Raspberry Pi owner cares about.
//!
//! 1. Start to first relay connection: `bigbrotr run` with one registered relay (the in-repo test
//!    relay, which counts connections), from spawn until the relay sees the node connect. Goal
//!    < 1 s. Baseline in the same run: spawn-to-exit of `bigbrotr --version` (the process start
//!    floor).
//!    Measured with Tor off and with the built-in Tor bootstrapping (it must not delay clearnet).
//! 2. Idle peak RSS: `bigbrotr run` with nothing to do (no relays) for 10 s, VmHWM, with Tor off
//!    and with the built-in Tor bootstrapping. There is no Tor network here (and nothing may
//!    leave loopback): arti is pointed at a loopback "fallback directory" that drops every
//!    connection, so this is Tor's cost while stuck, not with a downloaded consensus.
//! 3. Stripped binary sizes: the host release binary and any cross builds present in the target
//!    dir, with Tor (the default build) and without (`bigbrotr-no-tor`, made by
//!    `scripts/cross-build --no-tor`). Goal with Tor <= 30 MB.
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

/// Tor off unless `extra` has a `[tor]` section (then arti bootstraps against a loopback
/// listener: the real Tor network is never contacted).
fn config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    let tor = if extra.contains("[tor]") {
        ""
    } else {
        "[tor]\nenabled = false\n"
    };
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[log]\nlevel = \"warn\"\n[seeder]\nenabled = false\n{tor}{extra}",
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

async fn first_connection(rounds: usize, tor: Option<&str>) {
    let mut start_ms = Vec::new();
    let mut base_ms = Vec::new();
    for _ in 0..rounds {
        let relay = HostileRelay::start(vec![], Options::default()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(
            dir.path(),
            &format!(
                "[finder]\nenabled = false\n[monitor]\nenabled = false\n{}",
                tor.unwrap_or("")
            ),
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
    let which = if tor.is_some() {
        "with the built-in Tor bootstrapping"
    } else {
        "Tor off"
    };
    println!(
        "start to first relay connection ({which}): median {s:.0} ms over {rounds} rounds (goal < 1000 ms; min {:.0}, max {:.0}); baseline `bigbrotr --version` {b:.1} ms; ratio {:.1}x",
        start_ms.iter().cloned().fold(f64::MAX, f64::min),
        start_ms.iter().cloned().fold(0.0, f64::max),
        s / b.max(0.001)
    );
}

/// Peak RSS (VmHWM) of `bigbrotr run` with nothing to do, after 10 s; `wrap` runs it under a
/// program such as qemu-user.
async fn idle_hwm_mb(bin: &Path, wrap: &[&str], extra: &str) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), extra);
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

async fn idle_rss(tor: Option<&str>) {
    let off = idle_hwm_mb(Path::new(BIN), &[], "").await;
    println!(
        "idle `bigbrotr run` (no relays, 10 s), Tor off: peak RSS {off:.1} MB (goal <= 50 MB without Tor)"
    );
    if let Some(tor) = tor {
        let on = idle_hwm_mb(Path::new(BIN), &[], tor).await;
        println!(
            "idle `bigbrotr run` (no relays, 10 s), built-in Tor bootstrapping (no Tor network reachable): peak RSS {on:.1} MB; Tor's own cost here {:+.1} MB",
            on - off
        );
    }
    // The same under qemu-user with the ARM builds, when scripts/cross-build made them (the
    // figure includes qemu's own translation cache: an upper bound for a real Pi).
    for (triple, qemu, sysroot) in [
        (
            "aarch64-unknown-linux-gnu",
            "qemu-aarch64-static",
            "/usr/aarch64-linux-gnu",
        ),
        (
            "armv7-unknown-linux-gnueabihf",
            "qemu-arm-static",
            "/usr/arm-linux-gnueabihf",
        ),
    ] {
        let arm = PathBuf::from(BIN)
            .ancestors()
            .nth(2)
            .map(|t| t.join(triple).join("release/bigbrotr"))
            .filter(|p| p.exists());
        if let Some(arm) = arm {
            println!(
                "idle `bigbrotr run` {triple} under qemu-user (10 s), Tor off: peak RSS {:.1} MB, qemu included",
                idle_hwm_mb(&arm, &[qemu, "-L", sysroot], "").await
            );
        }
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
        let dir = target_dir.join(t).join("release");
        rows.push((t.to_string(), dir.join("bigbrotr")));
        rows.push((format!("{t} no-tor"), dir.join("bigbrotr-no-tor")));
    }
    rows.push((
        "x86_64 no-tor".to_string(),
        target_dir.join("release").join("bigbrotr-no-tor"),
    ));
    for (name, path) in rows {
        match std::fs::metadata(&path) {
            Ok(m) => println!(
                "binary {name}: {:.1} MB stripped{} (goal with Tor <= 30 MB)",
                m.len() as f64 / 1_048_576.0,
                if name.ends_with("no-tor") {
                    ", without Tor"
                } else {
                    ", default build (with Tor)"
                }
            ),
            Err(_) => println!("binary {name}: not built (scripts/cross-build makes it)"),
        }
    }
}

/// Put the whole bench in a network namespace with only loopback (root only): the Tor rounds
/// point arti at loopback anyway, and this makes sure nothing else could be reached.
fn loopback_only_netns() -> bool {
    // SAFETY: unshare(2) on the calling (main) thread before any other thread exists.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let isolated = loopback_only_netns();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // arti's bootstrap goes to one "fallback directory" on loopback that accepts and drops.
    let fallback = support::CountingListener::start();
    let tor = support::tor_loopback_config(fallback.port);
    rt.block_on(async {
        first_connection(rounds, None).await;
        if isolated {
            first_connection(rounds, Some(&tor)).await;
        } else {
            println!("not root: no network namespace, so the built-in Tor rounds are skipped");
        }
        idle_rss(isolated.then_some(tor.as_str())).await;
    });
    if isolated {
        assert!(fallback.count() > 0, "the Tor runs did bootstrap");
    }
    sizes();
}
