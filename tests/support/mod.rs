//! Shared test support: real relay software on loopback (rust-nostr's LocalRelay), the in-repo
//! hostile relay, and a throwaway node (data dir + config) driven through the real binary.
#![allow(dead_code)]

pub mod bench;
pub mod conformance;
pub mod hostile;
pub mod mmdb;
pub mod ns;
pub mod pg;
pub mod raw_event;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use nostr::prelude::*;
use nostr_relay_builder::prelude::*;

/// A LocalRelay with its limits configured away for tests: no write rate limit, no memory cap.
pub struct TestRelay {
    pub relay: LocalRelay,
    pub url: String,
    pub db: Arc<MemoryDatabase>,
}

#[derive(Default)]
pub struct RelayOpts {
    /// Silent cap on answers (LocalRelay's `max_filter_limit`).
    pub clamp: Option<usize>,
    /// Require NIP-42 AUTH to read.
    pub auth_read: bool,
}

pub async fn local_relay(events: &[Event], opts: RelayOpts) -> TestRelay {
    let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    }));
    for ev in events {
        db.save_event(ev).await.expect("save event");
    }
    let mut builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().expect("ip"))
        .database(db.clone())
        .rate_limit(RateLimit {
            max_reqs: 100_000,
            notes_per_minute: u32::MAX,
        });
    if let Some(c) = opts.clamp {
        builder = builder.max_filter_limit(c).default_filter_limit(c);
    }
    if opts.auth_read {
        builder = builder.nip42(RelayBuilderNip42 {
            mode: RelayBuilderNip42Mode::Read,
        });
    }
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("relay runs");
    let url = relay
        .url()
        .await
        .to_string()
        .trim_end_matches('/')
        .to_string();
    TestRelay { relay, url, db }
}

impl TestRelay {
    /// Store an event in the relay's database (as if published, without the write path).
    pub async fn add(&self, ev: &Event) {
        self.db.save_event(ev).await.expect("save event");
    }
}

/// `n` signed text notes by `authors` keys round-robin, created at `at(i)`.
pub fn notes(n: usize, authors: &[Keys], at: impl Fn(usize) -> u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            EventBuilder::text_note(format!("note {i}"))
                .custom_created_at(Timestamp::from(at(i)))
                .sign_with_keys(&authors[i % authors.len()])
                .expect("sign")
        })
        .collect()
}

pub fn keys(n: usize) -> Vec<Keys> {
    (0..n).map(|_| Keys::generate()).collect()
}

/// A node: temp data dir and a config file with `allow_local = true`, no seed relays and no
/// built-in Tor (tests must never register a public relay: nothing may leave loopback).
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Node {
    pub fn new(extra: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        // The built-in Tor would bootstrap from the real Tor network's fallback directories:
        // off unless the test configures it (tests/tor.rs points it at loopback).
        let tor = if extra.contains("[tor]") {
            ""
        } else {
            "[tor]\nenabled = false\n"
        };
        let text = format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\nconnect_timeout_secs = 5\n[seeder]\nenabled = false\n{tor}{extra}",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).expect("write config");
        Node { dir, config }
    }

    /// Turn the seeder on with a seed file naming exactly `urls` (replaces the test config's
    /// `[seeder] enabled = false`).
    pub fn seed_with(&self, urls: &[&str]) {
        let seeds = self.dir.path().join("seeds.txt");
        std::fs::write(&seeds, format!("# test seeds\n{}\n", urls.join("\n"))).expect("seeds");
        let cfg = std::fs::read_to_string(&self.config).expect("cfg").replace(
            "[seeder]\nenabled = false\n",
            &format!("[seeder]\nenabled = true\nfile = \"{}\"\n", seeds.display()),
        );
        std::fs::write(&self.config, cfg).expect("cfg");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bigbrotr"));
        c.arg("--config")
            .arg(&self.config)
            .env_remove("BIGBROTR_CONFIG")
            .env("RUST_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run bigbrotr")
    }

    /// Run `sync --relay URL --once` on a blocking thread (tests drive relays on their runtime).
    pub async fn sync_once(&self, url: &str) -> Output {
        let mut c = self.cmd();
        c.args(["sync", "--relay", url, "--once"]);
        tokio::task::spawn_blocking(move || c.output().expect("run bigbrotr"))
            .await
            .expect("join")
    }

    /// `sync --relay URL --once --retries 0`: the first failure is the answer.
    pub async fn sync_no_retry(&self, url: &str) -> Output {
        let mut c = self.cmd();
        c.args(["sync", "--relay", url, "--once", "--retries", "0"]);
        tokio::task::spawn_blocking(move || c.output().expect("run bigbrotr"))
            .await
            .expect("join")
    }

    /// Ids of every stored event, via `events export`.
    pub fn exported_ids(&self) -> std::collections::BTreeSet<String> {
        let out = self.run(&["events", "export"]);
        assert!(out.status.success(), "export failed: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["id"].as_str().expect("id").to_string()
            })
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// `sql` on the node's state.sqlite, read the way an operator would (the sqlite3 shell,
    /// read-only, safe beside a running node): its trimmed output, or `None` before the node
    /// created its state or when sqlite3 fails.
    pub fn sqlite(&self, sql: &str) -> Option<String> {
        let db = self.data_dir().join("state.sqlite");
        if !db.exists() {
            return None;
        }
        let out = Command::new("sqlite3")
            .args(["-readonly", "-cmd", ".timeout 2000"])
            .arg(&db)
            .arg(sql)
            .output()
            .expect("sqlite3 (installed by scripts/bootstrap)");
        out.status
            .success()
            .then(|| stdout(&out).trim().to_string())
    }
}

/// How a round of a kill -9 test ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    Killed,
    /// The child exited on its own: the work was done.
    Finished,
}

/// SIGKILL `child` mid-work whatever the machine's speed: once `progressed()` says this round got
/// somewhere (more work is then in flight), plus a different 0-40 ms for each `round`. Polls
/// every 5 ms and fails after 60 s without progress. The child is reaped either way.
pub fn kill_after_progress(
    child: &mut std::process::Child,
    round: u64,
    mut progressed: impl FnMut() -> bool,
) -> Round {
    let t = std::time::Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return Round::Finished;
        }
        if progressed() {
            std::thread::sleep(std::time::Duration::from_millis(round * 13 % 41));
            // SIGKILL: no shutdown path runs.
            let killed = child.try_wait().expect("try_wait").is_none() && child.kill().is_ok();
            let _ = child.wait();
            return if killed {
                Round::Killed
            } else {
                Round::Finished
            };
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "round {round}: no progress in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert two id sets are equal, printing counts and a few differences (not thousands of ids).
#[track_caller]
pub fn assert_same_ids(
    got: &std::collections::BTreeSet<String>,
    want: &std::collections::BTreeSet<String>,
) {
    let missing: Vec<&String> = want.difference(got).take(3).collect();
    let extra: Vec<&String> = got.difference(want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored {} events, expected {}: missing {} (e.g. {missing:?}), unexpected {} (e.g. {extra:?})",
        got.len(),
        want.len(),
        want.difference(got).count(),
        got.difference(want).count()
    );
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn ids_of(events: &[Event]) -> std::collections::BTreeSet<String> {
    events.iter().map(|e| e.id.to_hex()).collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The aarch64 release binary that scripts/test builds (`BIGBROTR_AARCH64_BIN`). Without it the
/// ARM tests skip, loudly, unless `BIGBROTR_REQUIRE_ARM` says they must run (as in CI).
pub fn aarch64_bin() -> Option<std::ffi::OsString> {
    let bin = std::env::var_os("BIGBROTR_AARCH64_BIN");
    if bin.is_none() {
        assert!(
            std::env::var_os("BIGBROTR_REQUIRE_ARM").is_none(),
            "BIGBROTR_REQUIRE_ARM is set but BIGBROTR_AARCH64_BIN is not"
        );
        eprintln!("skipped: BIGBROTR_AARCH64_BIN is not set (scripts/test builds and sets it)");
    }
    bin
}

/// A `[tor]` section that turns the built-in Tor on with arti's bootstrap pointed at ONE fallback
/// directory on 127.0.0.1:`port` (the real network's fallbacks are never contacted; no Tor
/// network exists here, so the bootstrap stays stuck, as it would offline).
pub fn tor_loopback_config(port: u16) -> String {
    format!(
        "[tor]\nenabled = true\nmemory_max_mb = 16\n[tor.arti.tor_network]\nfallback_caches = [{{ rsa_identity = \"0102030405060708090a0b0c0d0e0f1011121314\", ed_identity = \"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\", orports = [\"127.0.0.1:{port}\"] }}]\n"
    )
}

/// A TCP listener on 127.0.0.1 that accepts and drops connections, counting them (a "Tor
/// directory" that never answers).
pub struct CountingListener {
    pub port: u16,
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingListener {
    pub fn start() -> CountingListener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if s.is_ok() {
                    a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        CountingListener { port, accepted }
    }

    pub fn count(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// SIGTERM a running node and assert it exits 0 within `within` (a graceful stop finishes the
/// work in flight and never waits on anything unbounded).
pub async fn stop_gracefully(mut child: std::process::Child, within: std::time::Duration) {
    let t = std::time::Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
    assert!(t.elapsed() < within, "stop took {:?}", t.elapsed());
}

/// The row for `url` in a JSON array of relay rows (`relays list --json`, `status --json`'s
/// `relays`, `monitor --once --json` reports).
pub fn row_for(rows: &serde_json::Value, url: &str) -> Option<serde_json::Value> {
    rows.as_array()?.iter().find(|r| r["url"] == url).cloned()
}

/// Mode 0600, as the node demands of a secret file.
pub fn set_owner_only(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
