//! The CLI contract: config validation, init, relay registry, SSRF refusal, status.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::*;

#[test]
fn unknown_config_key_is_named_and_changes_nothing() {
    let node = Node::new("[sync]\npage_limt = 10\n");
    let out = node.run(&["status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("page_limt"), "{err}");
    assert!(
        !node.data_dir().exists(),
        "a bad config must not create state"
    );
}

#[test]
fn bad_value_is_named() {
    let node = Node::new("[sync]\nmax_relays = 0\n");
    let out = node.run(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sync.max_relays"), "{}", stderr(&out));
}

#[test]
fn two_key_config_via_env_works_and_init_creates_a_private_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    let data = dir.path().join("state");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n",
            data.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bigbrotr"))
        .arg("init")
        .env("BIGBROTR_CONFIG", &cfg)
        .env_remove("BIGBROTR_NODE_KEY")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let key = data.join("node.key");
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    // The seed list (public relays) was registered: init only registers, it never connects.
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_bigbrotr"))
        .args(["relays", "list", "--json"])
        .env("BIGBROTR_CONFIG", &cfg)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert!(v.as_array().expect("array").len() >= 20);
    // Running init again keeps the same key.
    let before = std::fs::read_to_string(&key).expect("read");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_bigbrotr"))
        .arg("init")
        .env("BIGBROTR_CONFIG", &cfg)
        .output()
        .expect("run");
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&key).expect("read"), before);
}

#[test]
fn loopback_relays_are_refused_by_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[seeder]\nenabled = false\n",
            dir.path().join("d").display()
        ),
    )
    .expect("write");
    for url in ["ws://127.0.0.1:9", "ws://localhost:9", "ws://[::1]:9"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bigbrotr"))
            .args([
                "--config",
                cfg.to_str().expect("utf8"),
                "sync",
                "--relay",
                url,
                "--once",
            ])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{url} was accepted");
        assert!(
            stderr(&out).contains("allow_local"),
            "{url}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn relays_add_normalizes_and_list_shows_it() {
    let node = Node::new("");
    let out = node.run(&["relays", "add", "WSS://Relay.Example.COM:443/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("added wss://relay.example.com"));
    let again = node.run(&["relays", "add", "wss://relay.example.com"]);
    assert!(stdout(&again).contains("already registered"));
    let bad = node.run(&["relays", "add", "https://relay.example.com"]);
    assert!(!bad.status.success());
    let list = node.run(&["relays", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(v.as_array().expect("array").len(), 1);
    assert_eq!(v[0]["url"], "wss://relay.example.com");
    assert_eq!(v[0]["network"], "clearnet");
}

#[test]
fn export_rejects_a_bad_filter_with_the_field_named() {
    let node = Node::new("");
    let out = node.run(&["events", "export", "--filter", r#"{"kind":[1]}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"kind\""), "{}", stderr(&out));
}

#[test]
fn status_json_has_the_documented_fields() {
    let node = Node::new("");
    let v = node.status();
    for key in [
        "relays_known",
        "relays_online",
        "events_stored",
        "events_evicted",
        "spool_depth",
        "relays",
    ] {
        assert!(v.get(key).is_some(), "status --json lacks {key}: {v}");
    }
    assert_eq!(v["events_stored"], 0);
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let node = Node::new("[log]\nformat = \"json\"\n");
    // Port 1 on loopback refuses the connection: one warning, one retry, then a clear failure.
    let out = node.run(&[
        "sync",
        "--relay",
        "ws://127.0.0.1:1",
        "--once",
        "--retries",
        "1",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
        .collect();
    assert!(!logs.is_empty(), "no JSON log line in {err}");
    assert_eq!(logs[0]["level"], "WARN");
    assert!(
        logs[0]["fields"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1:1"),
        "{}",
        logs[0]
    );
    assert!(
        err.lines().last().unwrap_or("").starts_with("error: "),
        "final line names the failure: {err}"
    );
}

/// Every monitor check is written to state.sqlite: below the free-disk floor `monitor --once`
/// refuses with the setting named, and records nothing.
#[test]
fn monitor_refuses_to_write_checks_below_the_disk_floor() {
    let node = Node::new("[storage]\nmin_free_disk_mb = 1000000000\n");
    let add = node.run(&["relays", "add", "ws://127.0.0.1:1"]);
    assert!(add.status.success(), "{}", stderr(&add));
    let out = node.run(&["monitor", "--once"]);
    assert!(!out.status.success(), "monitor must refuse");
    assert!(
        stderr(&out).contains("storage.min_free_disk_mb"),
        "the error names the setting: {}",
        stderr(&out)
    );
    assert_eq!(
        node.sqlite("SELECT count(*) FROM observation").as_deref(),
        Some("0")
    );
}
