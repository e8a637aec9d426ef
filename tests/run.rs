//! `bigbrotr run`: Seeder -> Synchronizer -> Finder -> Synchronizer, under the supervisor, and a
//! graceful stop on SIGTERM. Every relay involved listens on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use nostr::prelude::*;
use support::*;

const T0: u64 = 1_710_000_000;

/// Discovery runs in a loopback-only network namespace: a bug cannot send real traffic.
#[test]
fn run_discovers_relays_from_events_and_stops_gracefully() {
    support::ns::in_netns(discovers_and_stops());
}

async fn discovers_and_stops() {
    let authors = keys(3);
    let b_events = notes(80, &authors, |i| T0 + 1_000 + i as u64);
    let b = local_relay(&b_events, RelayOpts::default()).await;
    // Relay A holds notes plus a NIP-65 list naming B, a hint to a closed loopback port and an
    // onion relay (no route configured: must be registered but never dialed).
    let mut a_events = notes(40, &authors, |i| T0 + i as u64);
    let onion = format!("ws://{}.onion", "a".repeat(56));
    a_events.push(
        EventBuilder::new(Kind::RelayList, "")
            .tags([
                Tag::parse(["r", &b.url]).expect("tag"),
                Tag::parse(["r", &onion]).expect("tag"),
            ])
            .custom_created_at(Timestamp::from(T0 + 500))
            .sign_with_keys(&authors[0])
            .expect("sign"),
    );
    a_events.push(
        EventBuilder::text_note("hint")
            .tags([Tag::parse(["e", &"0".repeat(64), "ws://127.0.0.1:1"]).expect("tag")])
            .custom_created_at(Timestamp::from(T0 + 501))
            .sign_with_keys(&authors[1])
            .expect("sign"),
    );
    let a = local_relay(&a_events, RelayOpts::default()).await;

    let node = Node::new(
                // No write test here: the monitor's test event would be archived too and change counts.
        "[finder]\ninterval_secs = 1\n[sync]\nlive_turn_secs = 2\nbackoff_min_secs = 1\n[monitor]\nwrite_test = false\ncheck_timeout_secs = 3\n",
    );
    // A seed file naming only A.
    node.seed_with(&[&a.url]);

    let child = node.cmd().arg("run").spawn().expect("spawn");
    let want: std::collections::BTreeSet<String> = ids_of(&a_events)
        .union(&ids_of(&b_events))
        .cloned()
        .collect();
    let start = Instant::now();
    let mut status = serde_json::Value::Null;
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        status = node.status();
        if status["events_stored"].as_u64() == Some(want.len() as u64) {
            break;
        }
    }
    assert_eq!(
        status["events_stored"].as_u64(),
        Some(want.len() as u64),
        "status: {status}"
    );
    let urls: Vec<&str> = status["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .filter_map(|r| r["url"].as_str())
        .collect();
    assert!(urls.contains(&b.url.as_str()), "B discovered: {urls:?}");
    assert!(urls.contains(&onion.as_str()), "onion registered: {urls:?}");
    assert!(
        urls.contains(&"ws://127.0.0.1:1"),
        "hint registered: {urls:?}"
    );

    // The monitor checks every relay it knows while running: A and B come online; the onion
    // relay is not checked (no route, so no false downtime).
    let list_status = |node: &Node| {
        let out = node.run(&["relays", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let of = |u: &str| {
            row_for(&list, u)
                .map(|r| r["status"].as_str().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        (of(&a.url), of(&b.url), of(&onion))
    };
    let start = Instant::now();
    let mut seen = list_status(&node);
    while seen.0 != "online" || seen.1 != "online" || seen.2 != "no_route" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "monitor: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        seen = list_status(&node);
    }

    // SIGTERM: finish in-flight work and exit 0 promptly.
    stop_gracefully(child, Duration::from_secs(30)).await;
    assert_same_ids(&node.exported_ids(), &want);
    let st = node.status();
    assert_eq!(st["services"]["synchronizer"]["state"], "stopped");
    assert_eq!(st["services"]["finder"]["state"], "stopped");
    assert_eq!(st["services"]["monitor"]["state"], "stopped");
    let onion_row = row_for(&st["relays"], &onion).expect("onion row");
    assert!(
        onion_row["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no route"),
        "{onion_row}"
    );
}

/// A flood of listed relays, end to end (issue 11): kind-3 content maps and kind-10002 lists
/// naming ~147,000 unique relays, served beside ordinary events. The registry stays within the
/// Finder's hourly limit, and every ordinary event on the seeded relay and on the one relay an
/// honest list names is archived. (Before the Finder was bounded, every listed URL was
/// registered, and junk relays competed with the real ones for every sync slot.)
#[test]
fn a_flood_of_listed_relays_stays_bounded_and_real_relays_are_archived() {
    support::ns::in_netns(async {
        let authors = keys(4);
        let b_events = notes(3_000, &authors, |i| T0 + 50_000 + i as u64);
        let b = local_relay(&b_events, RelayOpts::default()).await;
        let mut a_events = notes(5_000, &authors, |i| T0 + i as u64);
        // Kind 3 and 10002 are replaceable: one flooder key per pair, or the relay keeps one.
        for e in 0..30u64 {
            let flooder = Keys::generate();
            let map: Vec<String> = (0..3_000)
                .map(|i| format!(r#""wss://r{e}x{i}.flood{}.test":{{"read":true}}"#, i % 50))
                .collect();
            a_events.push(
                EventBuilder::new(Kind::ContactList, format!("{{{}}}", map.join(",")))
                    .custom_created_at(Timestamp::from(T0 + 10_000 + e))
                    .sign_with_keys(&flooder)
                    .expect("sign"),
            );
            let tags: Vec<Tag> = (0..1_900)
                .map(|i| {
                    Tag::parse(["r", &format!("wss://q{e}x{i}.flood{}.test", i % 50)]).expect("tag")
                })
                .collect();
            a_events.push(
                EventBuilder::new(Kind::RelayList, "")
                    .tags(tags)
                    .custom_created_at(Timestamp::from(T0 + 20_000 + e))
                    .sign_with_keys(&flooder)
                    .expect("sign"),
            );
        }
        a_events.push(
            EventBuilder::new(Kind::RelayList, "")
                .tags([Tag::parse(["r", &b.url]).expect("tag")])
                .custom_created_at(Timestamp::from(T0 + 30_000))
                .sign_with_keys(&authors[0])
                .expect("sign"),
        );
        let a = local_relay(&a_events, RelayOpts::default()).await;
        let node = Node::new(
            "[finder]\ninterval_secs = 1\n[sync]\nlive_turn_secs = 2\nbackoff_min_secs = 1\n[monitor]\nenabled = false\n",
        );
        node.seed_with(&[&a.url]);
        let child = support::ns::KillOnDrop(Some(node.cmd().arg("run").spawn().expect("spawn")));
        let want = ids_of(&a_events).union(&ids_of(&b_events)).count() as u64;
        let start = Instant::now();
        let mut status = serde_json::Value::Null;
        while start.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            status = node.status();
            if status["events_stored"].as_u64() == Some(want) {
                break;
            }
        }
        let known = status["relays_known"].as_u64().unwrap_or(u64::MAX);
        eprintln!(
            "flood: {known} relays registered, all events stored after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        assert_eq!(
            status["events_stored"].as_u64(),
            Some(want),
            "every ordinary event archived ({known} relays registered)"
        );
        let urls: Vec<&str> = status["relays"]
            .as_array()
            .expect("relays")
            .iter()
            .filter_map(|r| r["url"].as_str())
            .collect();
        assert!(urls.contains(&b.url.as_str()), "B discovered");
        // The seeded relay, B, and at most `finder.max_new_per_hour` (500) others.
        assert!(
            known <= 502,
            "{known} relays registered from a flood of ~147,000"
        );
        let mut child = child;
        stop_gracefully(child.0.take().expect("child"), Duration::from_secs(30)).await;
    });
}
