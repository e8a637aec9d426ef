//! Synchronization against real relay software (rust-nostr's LocalRelay) on loopback, driven
//! through the real binary.

mod support;

use support::*;

const T0: u64 = 1_700_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_whole_history_exactly() {
    let authors = keys(5);
    // 1,500 events over ~2 days, several per second in places.
    let events = notes(1_500, &authors, |i| T0 + (i as u64 * 97) % 170_000);
    let relay = local_relay(&events, RelayOpts::default()).await;
    let node = Node::new("[sync]\npage_limit = 200\n");
    let out = node.sync_once(&relay.url).await;
    assert!(out.status.success(), "sync failed: {}", stderr(&out));
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
    let status = node.status();
    assert_eq!(status["events_stored"], 1_500);
    let r = &status["relays"][0];
    assert_eq!(r["unproven_seconds"], 0);
    assert!(
        r["done_until"].as_u64().is_some(),
        "cursor marks history complete: {r}"
    );

    // Events published after the first run, dated up to 100 s in the past (older than the
    // point the first pass proved): the next pass's overlap picks them up.
    let now = now_secs();
    let later = notes(40, &authors, |i| now - 100 + i as u64);
    for ev in &later {
        relay.add(ev).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = node.sync_once(&relay.url).await;
    assert!(out.status.success(), "second sync failed: {}", stderr(&out));
    let mut all = ids_of(&events);
    all.extend(ids_of(&later));
    assert_same_ids(&node.exported_ids(), &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clamp_with_a_saturated_second_is_archived_completely() {
    let authors = keys(7);
    // 1,000 events in ONE second, plus 300 spread around it; the relay silently caps at 100.
    let mut events = notes(1_000, &authors, |_| T0 + 500);
    events.extend(notes(300, &authors, |i| T0 + i as u64 * 3));
    let relay = local_relay(
        &events,
        RelayOpts {
            clamp: Some(100),
            auth_read: false,
        },
    )
    .await;
    let node = Node::new("");
    let out = node.sync_once(&relay.url).await;
    assert!(
        out.status.success(),
        "sync failed: {} {}",
        stderr(&out),
        stdout(&out)
    );
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
    assert_eq!(node.status()["relays"][0]["unproven_seconds"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nip42_auth_with_the_node_key() {
    let events = notes(120, &keys(2), |i| T0 + i as u64);
    let relay = local_relay(
        &events,
        RelayOpts {
            clamp: None,
            auth_read: true,
        },
    )
    .await;
    let node = Node::new("");
    let out = node.sync_once(&relay.url).await;
    assert!(out.status.success(), "sync failed: {}", stderr(&out));
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
    // The key used was generated into the data dir with 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.data_dir().join("node.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_relays_add_only_sightings() {
    let authors = keys(3);
    let shared = notes(50, &authors, |i| T0 + i as u64);
    let only_b = notes(10, &authors, |i| T0 + 1_000 + i as u64);
    let a = local_relay(&shared, RelayOpts::default()).await;
    let mut b_events = shared.clone();
    b_events.extend(only_b.iter().cloned());
    let b = local_relay(&b_events, RelayOpts::default()).await;
    let node = Node::new("");
    assert!(node.sync_once(&a.url).await.status.success());
    assert!(node.sync_once(&b.url).await.status.success());
    let status = node.status();
    assert_eq!(status["events_stored"], 60);
    assert_eq!(status["sightings"], 110, "50 on a + 60 on b");
    let rel: Vec<(String, u64)> = status["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap_or("").to_string(),
                r["events_new"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert!(rel.contains(&(b.url.clone(), 10)), "{rel:?}");
}
