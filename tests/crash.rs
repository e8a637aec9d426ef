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

/// Relay ids are SQLite rowids and the event store's sightings refer to them. An older
/// `state.sqlite` put back beside a newer event store (a restored backup, a card imaged
/// mid-write) lacks the relays registered after it: the relays it lacks get their ids back, so a
/// relay registered afterwards never inherits an id whose sightings are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_state_never_gives_a_stored_relay_id_to_another_url() {
    let authors = keys(2);
    let (ea, eb, ec) = (
        notes(20, &authors, |i| T0 + i as u64),
        notes(20, &authors, |i| T0 + 1_000 + i as u64),
        notes(20, &authors, |i| T0 + 2_000 + i as u64),
    );
    let (a, b, c) = (
        local_relay(&ea, RelayOpts::default()).await,
        local_relay(&eb, RelayOpts::default()).await,
        local_relay(&ec, RelayOpts::default()).await,
    );
    let node = Node::new("");
    let synced = |out: std::process::Output| {
        assert!(out.status.success(), "sync failed: {}", stderr(&out));
    };
    synced(node.sync_once(&a.url).await);
    // The backup, taken the way an operator would (consistent, WAL included).
    let data = node.data_dir();
    let backup = node.dir.path().join("state-backup.sqlite");
    let st = std::process::Command::new("sqlite3")
        .arg(data.join("state.sqlite"))
        .arg(format!(".backup '{}'", backup.display()))
        .status()
        .expect("sqlite3");
    assert!(st.success());
    synced(node.sync_once(&b.url).await);
    // Put the older state back (no WAL beside it).
    for f in ["state.sqlite-wal", "state.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    std::fs::copy(&backup, data.join("state.sqlite")).expect("restore");
    // A registry command first (it does not open the event store for writing), then a sync.
    let added = node.run(&["relays", "add", &c.url]);
    assert!(added.status.success(), "relays add: {}", stderr(&added));
    synced(node.sync_once(&c.url).await);

    let state = State::open(&data.join("state.sqlite")).expect("state");
    let store = EventStore::open_read_only(&data.join("events"), &EventStoreOptions::default())
        .expect("event store");
    for (relay, events) in [(&a, &ea), (&b, &eb), (&c, &ec)] {
        for ev in events {
            let seen = store.sightings(&ev.id.to_bytes()).expect("sightings");
            assert_eq!(seen.len(), 1, "one sighting of {}", ev.id);
            let row = state
                .relay_by_id(seen[0].0)
                .expect("registry")
                .unwrap_or_else(|| {
                    panic!(
                        "relay id {} of a stored sighting is not registered",
                        seen[0].0
                    )
                });
            assert_eq!(
                row.url, relay.url,
                "a sighting on {} is attributed to relay id {} = {}",
                relay.url, seen[0].0, row.url
            );
        }
    }
    // The restored relay is known again and says where it came from.
    let b_row = state
        .relays()
        .expect("relays")
        .into_iter()
        .find(|r| r.url == b.url)
        .expect("relay b registered again");
    assert_eq!(b_row.source, "restored");
}

/// A `state.sqlite` from another data dir gives stored ids other URLs: the node refuses to
/// start, names both stores and the fix, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_from_another_data_dir_is_refused_with_the_fix() {
    let authors = keys(1);
    let (ea, eb) = (
        notes(5, &authors, |i| T0 + i as u64),
        notes(5, &authors, |i| T0 + 100 + i as u64),
    );
    let (a, b) = (
        local_relay(&ea, RelayOpts::default()).await,
        local_relay(&eb, RelayOpts::default()).await,
    );
    let (one, other) = (Node::new(""), Node::new(""));
    assert!(one.sync_once(&a.url).await.status.success());
    assert!(other.sync_once(&b.url).await.status.success());
    let theirs = other.data_dir().join("state.sqlite");
    let st = std::process::Command::new("sqlite3")
        .arg(&theirs)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .status()
        .expect("sqlite3");
    assert!(st.success());
    let mine = one.data_dir().join("state.sqlite");
    for f in ["state.sqlite-wal", "state.sqlite-shm"] {
        let _ = std::fs::remove_file(one.data_dir().join(f));
    }
    std::fs::copy(&theirs, &mine).expect("copy");
    let before = std::fs::read(&mine).expect("read");
    let out = one.sync_once(&a.url).await;
    assert!(
        !out.status.success(),
        "a foreign state.sqlite must be refused"
    );
    let err = stderr(&out);
    assert!(
        err.contains("does not belong to this events/ directory") && err.contains(&b.url),
        "the error names the problem, the URL and the fix: {err}"
    );
    assert_eq!(
        std::fs::read(&mine).expect("read"),
        before,
        "a refused state.sqlite is left as it was"
    );
}
