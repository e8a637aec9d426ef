//! The built-in Tor (arti) with no Tor network: what the issue asks of it offline. Bootstrap
//! stays in the background, reports "stuck" in `bigbrotr status` and the logs, keeps its state
//! and cache in the data dir, and never delays clearnet syncing or shutdown; onion relays wait
//! (`tor_starting`) instead of being marked down.
//!
//! Nothing may leave loopback: arti is pointed at one "fallback directory" on 127.0.0.1 (a
//! listener that counts connections and drops them), and every test that runs arti runs in its
//! own network namespace that has only `lo`, so even a bug could not reach another address.
//! The node runs in a mount namespace whose resolver is a counting listener on 127.0.0.9: the
//! onion name never reaches DNS. Needs root for the namespaces, as CI has.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::ns::{counted_resolver_files, dns_counter, in_namespace, in_netns, KillOnDrop};
use support::*;

const T0: u64 = 1_720_000_000;

/// `bigbrotr --config <node> args` in a mount namespace that resolves names only through the
/// counting resolver of [`dns_counter`].
fn counted_dns_cmd(node: &Node, args: &[&str]) -> Command {
    let (hosts, resolv) = counted_resolver_files(node.dir.path());
    let mut all = vec!["--config", node.config.to_str().expect("utf8")];
    all.extend(args);
    let mut c = in_namespace(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        env!("CARGO_BIN_EXE_bigbrotr"),
        &all,
    );
    c.env_remove("BIGBROTR_CONFIG").env("RUST_LOG", "warn");
    c
}

/// The counter does see a lookup made in that namespace (so its zero means something).
fn assert_dns_counter_works(node: &Node, queries: &std::sync::atomic::AtomicU64) {
    let before = queries.load(std::sync::atomic::Ordering::SeqCst);
    let (hosts, resolv) = counted_resolver_files(node.dir.path());
    let _ = in_namespace(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        "getent",
        &["hosts", "dns-counter-self-check.example"],
    )
    .output()
    .expect("getent");
    assert!(
        queries.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the DNS counter works"
    );
}

fn onion_url() -> String {
    format!("ws://{}.onion", "b".repeat(56))
}

/// `network.overlay_connect_timeout_secs` in the `[network]` section Node::new wrote.
fn set_overlay_timeout(node: &Node, secs: u64) {
    let cfg = std::fs::read_to_string(&node.config)
        .expect("cfg")
        .replacen(
            "connect_timeout_secs = 5\n",
            &format!("connect_timeout_secs = 5\noverlay_connect_timeout_secs = {secs}\n"),
            1,
        );
    std::fs::write(&node.config, cfg).expect("cfg");
}

fn relay_row(node: &Node, url: &str) -> serde_json::Value {
    let out = node.run(&["relays", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    row_for(&list, url).unwrap_or_default()
}

#[test]
fn run_bootstraps_tor_in_the_background_without_delaying_clearnet_or_shutdown() {
    in_netns(async {
        let dir_listener = CountingListener::start();
        let queries = dns_counter();
        let authors = keys(2);
        let events = notes(60, &authors, |i| T0 + i as u64);
        let relay = local_relay(&events, RelayOpts::default()).await;
        let onion = onion_url();
        let node = Node::new(&format!(
            "[sync]\nbackoff_min_secs = 1\nlive_turn_secs = 2\n[monitor]\nwrite_test = false\ncheck_timeout_secs = 3\n{}",
            tor_loopback_config(dir_listener.port)
        ));
        node.seed_with(&[&relay.url, &onion]);

        let log = node.dir.path().join("run.log");
        let child = counted_dns_cmd(&node, &["run"])
            .env("RUST_LOG", "info")
            // As under systemd's DynamicUser: arti must not need a home directory.
            .env_remove("HOME")
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let mut child = KillOnDrop(Some(child));

        // Clearnet: the whole history arrives while Tor is stuck at bootstrap.
        let want = ids_of(&events);
        let t = Instant::now();
        loop {
            let st = node.status();
            if st["events_stored"].as_u64() == Some(want.len() as u64) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "clearnet sync: {st}\nlog: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let synced_after = t.elapsed();

        // Tor: bootstrapping in the background, never ready (nothing answers at the fallback),
        // shown in `status` with arti's own summary; the fallback on loopback was tried. Whether
        // arti calls itself "stuck" or still "bootstrapping" at a given instant is its own
        // heuristic (it flips between them on every retry), so either is accepted.
        let t = Instant::now();
        let tor = loop {
            let st = node.status();
            let tor = st["tor"].clone();
            let state = tor["status"]["state"].as_str().unwrap_or("");
            if (state == "stuck" || state == "bootstrapping") && dir_listener.count() > 0 {
                break tor;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "tor status: {tor}, fallback connections: {}",
                dir_listener.count()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(tor["route"], "builtin", "{tor}");
        assert!(
            tor["status"]["percent"].as_u64().expect("percent") < 100,
            "{tor}"
        );
        let summary = tor["status"]["summary"].as_str().expect("summary");
        assert!(summary.contains('%'), "arti's summary: {summary}");
        let human = stdout(&node.run(&["status"]));
        assert!(
            human.contains("tor:            built-in, stuck")
                || human.contains("tor:            built-in, bootstrapping"),
            "{human}"
        );

        // The onion relay waits for Tor: neither offline nor silently dropped.
        let t = Instant::now();
        loop {
            let row = relay_row(&node, &onion);
            if row["status"] == "tor_starting" {
                let err = row["last_error"].as_str().unwrap_or("");
                assert!(err.contains("built-in Tor is not ready yet"), "{row}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "onion row: {row}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The clearnet relay's check ran meanwhile (not waiting for Tor either).
        let t = Instant::now();
        while relay_row(&node, &relay.url)["status"] != "online" {
            let row = relay_row(&node, &relay.url);
            assert!(t.elapsed() < Duration::from_secs(20), "clearnet row: {row}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The synchronizer defers it too, without blaming the relay: not offline.
        let t = Instant::now();
        loop {
            let st = node.status();
            let row = row_for(&st["relays"], &onion).expect("onion row");
            if row["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("built-in Tor is not ready yet")
            {
                assert_ne!(row["status"], "offline", "{row}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "sync row: {row}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        // State and directory cache live in the data dir, private to the node.
        for d in ["tor/state", "tor/cache"] {
            let p = node.data_dir().join(d);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&p).expect(d).permissions(),
            );
            assert_eq!(mode & 0o077, 0, "{d} is private: {mode:o}");
        }

        // Shutdown does not wait for a bootstrap that will never finish.
        stop_gracefully(child.0.take().expect("child"), Duration::from_secs(30)).await;
        let logs = std::fs::read_to_string(&log).expect("log");
        assert!(
            logs.contains("built-in Tor: bootstrapping in the background"),
            "{logs}"
        );
        assert_eq!(
            queries.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the onion name never reached DNS"
        );
        assert_dns_counter_works(&node, &queries);
        assert!(
            logs.contains("built-in Tor: ")
                && logs.contains("percent=")
                && !logs.contains('\u{1b}'),
            "progress is logged, in plain text (no terminal colours in a log file): {logs}"
        );
        eprintln!(
            "clearnet history archived {synced_after:?} after start; {} connection(s) to the loopback fallback",
            dir_listener.count()
        );
    });
}

#[test]
fn one_shot_sync_of_an_onion_relay_waits_for_tor_then_fails_clearly() {
    in_netns(async {
        let dir_listener = CountingListener::start();
        let queries = dns_counter();
        let node = Node::new(&tor_loopback_config(dir_listener.port));
        set_overlay_timeout(&node, 8);
        let t = Instant::now();
        let url = onion_url();
        let mut cmd = counted_dns_cmd(
            &node,
            &["sync", "--relay", &url, "--once", "--retries", "0"],
        );
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
            .await
            .expect("join");
        let took = t.elapsed();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("built-in Tor is not ready yet"), "{err}");
        assert!(
            err.contains("built-in Tor is not ready yet (stuck")
                || err.contains("built-in Tor is not ready yet (bootstrapping"),
            "arti's state is shown: {err}"
        );
        // It waited for Tor once (network.overlay_connect_timeout_secs), not once per dial
        // (NIP-11, then the websocket) and not forever.
        assert!(
            took >= Duration::from_secs(8) && took < Duration::from_secs(16),
            "took {took:?}"
        );
        assert!(dir_listener.count() > 0, "the bootstrap was started");
        assert_eq!(
            queries.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the onion name never reached DNS"
        );
        assert_dns_counter_works(&node, &queries);
    });
}

#[test]
fn clearnet_commands_never_start_tor() {
    in_netns(async {
        let dir_listener = CountingListener::start();
        let events = notes(5, &keys(1), |i| T0 + i as u64);
        let relay = local_relay(&events, RelayOpts::default()).await;
        let node = Node::new(&tor_loopback_config(dir_listener.port));
        let out = node.sync_once(&relay.url).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            !node.data_dir().join("tor").exists(),
            "no Tor state for a clearnet sync"
        );
        assert_eq!(dir_listener.count(), 0);
    });
}

#[test]
fn without_a_tor_route_onion_relays_are_skipped_with_the_fix_named() {
    // No arti here (tor.enabled = false): no namespace needed.
    let node = Node::new("[tor]\nenabled = false\n");
    let out = node.run(&["sync", "--relay", &onion_url(), "--once", "--retries", "0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no route to the tor network"), "{err}");
    assert!(err.contains("[tor] enabled = true"), "{err}");
    assert!(err.contains("network.tor_proxy"), "{err}");
    assert!(!node.data_dir().join("tor").exists());
    let st = node.run(&["status"]);
    assert!(
        stdout(&st).contains("tor:            off"),
        "{}",
        stdout(&st)
    );
}

#[test]
fn bad_tor_settings_are_refused_at_load_with_the_key_named() {
    for (extra, key) in [
        ("[tor]\nmemory_max_mb = 0\n", "tor.memory_max_mb"),
        (
            "[tor]\n[tor.arti.tor_network]\nfallback_caches = \"nowhere\"\n",
            "tor.arti",
        ),
        // A typo would otherwise mean arti's defaults: the real network's fallbacks.
        (
            "[tor]\n[tor.arti.tor_netwrok]\nfallback_caches = []\n",
            "tor.arti.tor_netwrok",
        ),
    ] {
        let node = Node::new(extra);
        let out = node.run(&["status"]);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr(&out).contains(key), "{extra}: {}", stderr(&out));
    }
    let node = Node::new("");
    set_overlay_timeout(&node, 0);
    let out = node.run(&["status"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("network.overlay_connect_timeout_secs"),
        "{}",
        stderr(&out)
    );
}
