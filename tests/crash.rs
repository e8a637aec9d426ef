//! Crash safety (invariants 2 and 5): kill -9 the node repeatedly while it syncs; after every
//! kill, no cursor covers an event that is not stored, and a final run archives everything.

mod support;

use std::collections::HashSet;

use bigbrotr::store::{EventStore, EventStoreOptions, State};
use support::*;

const T0: u64 = 1_650_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_never_loses_acknowledged_events() {
    let authors = keys(8);
    // 40,000 events in 20-event pages: ~2,000 fsynced pages, seconds of work to interrupt.
    let events = notes(40_000, &authors, |i| T0 + (i as u64) / 3);
    let relay = local_relay(&events, RelayOpts::default()).await;
    let node = Node::new("[sync]\npage_limit = 20\n");
    let mut kills = 0;
    for round in 0..10u64 {
        let before = cursor_mark(&node);
        let mut child = node
            .cmd()
            .args(["sync", "--relay", &relay.url, "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Killed once this round has moved the cursor (a page is stored, more are in flight).
        let end = kill_after_progress(&mut child, round, || {
            let now = cursor_mark(&node);
            now.is_some() && now != before
        });
        if end == Round::Killed {
            kills += 1;
        }
        check_cursor_never_passes_unstored(&node, &events, round);
        if end == Round::Finished {
            break;
        }
    }
    eprintln!("killed {kills} times mid-work");
    assert!(
        kills >= 3,
        "the node must actually be killed mid-sync ({kills} kills)"
    );
    let out = node.sync_once(&relay.url).await;
    assert!(out.status.success(), "final sync failed: {}", stderr(&out));
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
}

/// The sync cursor as a string; `None` before the node created it.
fn cursor_mark(node: &Node) -> Option<String> {
    node.sqlite("SELECT group_concat(relay_id || ':' || ifnull(done_until, '') || ':' || ifnull(pass_top, '') || ':' || ifnull(pass_frontier, ''), ' ') FROM sync_cursor")
        .filter(|m| !m.is_empty())
}

fn check_cursor_never_passes_unstored(node: &Node, events: &[nostr::Event], round: u64) {
    let data = node.data_dir();
    if !data.join("state.sqlite").exists() {
        return;
    }
    let state = State::open(&data.join("state.sqlite")).expect("state opens after a crash");
    let store = EventStore::open(&data.join("events"), &EventStoreOptions::default())
        .expect("event store opens after a crash without repair");
    let Some(id) = state.relays().expect("relays").first().map(|r| r.id) else {
        return;
    };
    let c = state.cursor(id).expect("cursor");
    let covered = |t: u64| {
        c.done_until.is_some_and(|d| t <= d)
            || matches!((c.pass_frontier, c.pass_top), (Some(f), Some(top)) if t > f && t <= top)
    };
    let mut missing = HashSet::new();
    let mut covered_n = 0;
    for ev in events {
        let t = ev.created_at.as_secs();
        if covered(t) {
            covered_n += 1;
            let id: [u8; 32] = ev.id.to_bytes();
            if !store.contains(&id).expect("lookup") {
                missing.insert(ev.id.to_hex());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "round {round}: cursor {c:?} covers {covered_n} events but {} are not stored",
        missing.len()
    );
}
