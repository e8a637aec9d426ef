//! `bigbrotr monitor --relay URL --once`: NIP-11 and NIP-66 round trips against real relay
//! software and the in-repo hostile relay, all on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use nostr_relay_builder::prelude::*;
use support::hostile::{HostileRelay, Options};
use support::*;

fn monitor(node: &Node, url: &str) -> (std::process::Output, serde_json::Value) {
    let out = node.run(&["monitor", "--relay", url, "--once", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_read_write_against_real_relay_software() {
    let relay = local_relay(
        &notes(3, &keys(1), |i| 1_700_000_000 + i as u64),
        RelayOpts::default(),
    )
    .await;
    let node = std::sync::Arc::new(Node::new("[sync]\npage_timeout_secs = 5\n"));
    let (n2, url) = (node.clone(), relay.url.clone());
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&n2, &url))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rtt = &v["rtt"];
    for k in ["open_ms", "read_ms", "write_ms"] {
        assert!(rtt[k].as_u64().is_some(), "{k}: {v}");
    }
    assert_eq!(rtt["write_read_back"], true, "{v}");
    assert!(rtt["errors"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        rtt["read_policy"].is_null() && rtt["write_policy"].is_null(),
        "{v}"
    );
    // Twice: the write test is addressable, so the relay keeps one test event per monitor.
    let (n3, url) = (node.clone(), relay.url.clone());
    let (out, _) = tokio::task::spawn_blocking(move || monitor(&n3, &url))
        .await
        .unwrap();
    assert!(out.status.success());
    let stored = relay
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(30078u16)))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one write-test event per monitor key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_answers_are_facts_not_failures() {
    let relay = HostileRelay::start(
        vec![],
        Options {
            closed_reason: Some("auth-required: members only".into()),
            ..Options::default()
        },
    )
    .await;
    let node = Node::new("[sync]\npage_timeout_secs = 3\n");
    let url = relay.url();
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["rtt"]["read_policy"], "auth-required", "{v}");
    assert_eq!(v["rtt"]["write_policy"], "blocked", "{v}");
    assert!(v["rtt"]["read_ms"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_times_out_and_unreachable_relay_fails() {
    let relay = HostileRelay::start(
        vec![],
        Options {
            never_eose: true,
            ..Options::default()
        },
    )
    .await;
    let node = Node::new("[sync]\npage_timeout_secs = 2\n");
    let url = relay.url();
    let t = Instant::now();
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "every wait is bounded"
    );
    assert!(out.status.success(), "open worked: {}", stderr(&out));
    let errors = v["rtt"]["errors"].to_string();
    assert!(errors.contains("read: no EOSE within 2 s"), "{v}");

    // Nothing listens on port 1: the check fails, naming the step.
    let node = Node::new("");
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, "ws://127.0.0.1:1"))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        v["rtt"]["errors"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("open:"),
        "{v}"
    );
}
