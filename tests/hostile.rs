//! Synchronization against a hostile relay: what no real relay does on demand.

mod support;

use std::time::{Duration, Instant};

use support::hostile::{sign_event, HostileRelay, Options, RawEvent};
use support::*;

const T0: u64 = 1_690_000_000;

fn raw_notes(n: usize, authors: &[nostr::Keys], at: impl Fn(usize) -> u64) -> Vec<RawEvent> {
    (0..n)
        .map(|i| {
            sign_event(
                &authors[i % authors.len()],
                at(i),
                1,
                vec![],
                &format!("hostile {i}"),
            )
        })
        .collect()
}

fn ids(evs: &[RawEvent]) -> std::collections::BTreeSet<String> {
    evs.iter().map(|e| e.id.clone()).collect()
}

/// `sync --once` succeeds and the store then holds exactly `want`.
async fn archives_completely(node: &Node, url: &str, want: &std::collections::BTreeSet<String>) {
    let out = node.sync_once(url).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_ids(&node.exported_ids(), want);
}

fn fast_node() -> Node {
    Node::new("[sync]\npage_timeout_secs = 3\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_and_wrong_ids_are_never_stored() {
    let authors = keys(3);
    let good = raw_notes(60, &authors, |i| T0 + i as u64);
    let mut served = good.clone();
    let forged: Vec<RawEvent> = raw_notes(10, &authors, |i| T0 + 100 + i as u64)
        .iter()
        .map(RawEvent::with_bad_sig)
        .collect();
    let wrong: Vec<RawEvent> = raw_notes(10, &authors, |i| T0 + 200 + i as u64)
        .iter()
        .map(RawEvent::with_wrong_id)
        .collect();
    served.extend(forged.iter().cloned());
    served.extend(wrong.iter().cloned());
    let relay = HostileRelay::start(served, Options::default()).await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&good)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_heavy_content_keeps_its_nip01_id() {
    let k = keys(1);
    let nasty = [
        "ctrl \u{1}\u{2}\u{1f} end",
        "slash / and \\ backslash",
        "quote \" newline \n tab \t cr \r bs \u{8} ff \u{c}",
        "non-ascii: é ü 日本 🎉 \u{2028}",
        "nul \u{0} inside",
    ];
    let events: Vec<RawEvent> = nasty
        .iter()
        .enumerate()
        .map(|(i, c)| {
            sign_event(
                &k[0],
                T0 + i as u64,
                1,
                vec![vec!["t".into(), c.to_string()]],
                c,
            )
        })
        .collect();
    let relay = HostileRelay::start(events.clone(), Options::default()).await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&events)).await;
    let export = stdout(&node.run(&["events", "export"]));
    for (line, ev) in export.lines().zip(events.iter()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            v["content"],
            ev.content.as_str(),
            "content survives export byte for byte"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_eose_fails_within_the_page_timeout_and_moves_no_cursor() {
    let events = raw_notes(20, &keys(1), |i| T0 + i as u64);
    let relay = HostileRelay::start(
        events,
        Options {
            never_eose: true,
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    let t = Instant::now();
    let out = node.sync_no_retry(&relay.url()).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("EOSE"), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "bounded by the page timeout"
    );
    let st = node.status();
    assert!(
        st["relays"][0]["done_until"].is_null(),
        "no cursor may claim completeness: {st}"
    );
    assert_eq!(
        st["relays"][0]["pass_frontier"],
        st["relays"][0]["pass_top"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dripping_bytes_costs_one_timeout() {
    let events = raw_notes(5, &keys(1), |i| T0 + i as u64);
    let relay = HostileRelay::start(
        events,
        Options {
            drip: Some(Duration::from_millis(500)),
            ..Options::default()
        },
    )
    .await;
    let node = Node::new("[sync]\npage_timeout_secs = 2\n");
    let t = Instant::now();
    let out = node.sync_no_retry(&relay.url()).await;
    assert!(!out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(node.exported_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_page_keeps_what_arrived_complete_and_retries() {
    let events = raw_notes(300, &keys(4), |i| T0 + i as u64);
    // Every connection dies after 120 events: a 500-event page never completes.
    let relay = HostileRelay::start(
        events.clone(),
        Options {
            disconnect_after: Some(120),
            ..Options::default()
        },
    )
    .await;
    let node = Node::new("[sync]\npage_timeout_secs = 3\npage_limit = 100\n");
    let out = node.sync_once(&relay.url()).await;
    // With 100-event pages each connection completes a page before dying, and --once reconnects.
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_ids(&node.exported_ids(), &ids(&events));
    assert!(
        relay.connections() >= 3,
        "it reconnected ({} connections)",
        relay.connections()
    );

    let relay2 = HostileRelay::start(
        events.clone(),
        Options {
            disconnect_after: Some(50),
            ..Options::default()
        },
    )
    .await;
    let node2 = Node::new("[sync]\npage_timeout_secs = 3\npage_limit = 100\n");
    let out = node2.sync_once(&relay2.url()).await;
    assert!(
        !out.status.success(),
        "a page can never complete: must not report success"
    );
    assert!(node2.status()["relays"][0]["done_until"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_floods_and_events_outside_the_filter_do_not_break_completeness() {
    let authors = keys(2);
    let events = raw_notes(200, &authors, |i| T0 + i as u64);
    // Valid events dated in 2096, sent with every answer although no window asked reaches them.
    let outside = raw_notes(5, &authors, |i| 4_000_000_000 + i as u64);
    let relay = HostileRelay::start(
        events.clone(),
        Options {
            notice_flood: 50,
            outside_filter: outside.clone(),
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    let out = node.sync_once(&relay.url()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut all = ids(&events);
    all.extend(ids(&outside));
    // Outside-filter events are stored when valid.
    assert_same_ids(&node.exported_ids(), &all);
    // ...but they never moved the cursor: the pass top is below them, and everything in the
    // relay's real history is present.
    let done = node.status()["relays"][0]["done_until"]
        .as_u64()
        .expect("complete");
    assert!(done < 4_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clamp_and_saturated_second_resolved_by_narrowing_and_count() {
    let authors = keys(10);
    // 1,000 events in one second, 100 per author, spread over 4 kinds; the relay caps at 100,
    // has no NIP-77, but answers COUNT exactly.
    let mut events: Vec<RawEvent> = (0..1000)
        .map(|i| {
            sign_event(
                &authors[i % 10],
                T0 + 50,
                [1u16, 7, 30, 1111][(i / 10) % 4],
                vec![],
                &format!("sat {i}"),
            )
        })
        .collect();
    events.extend(raw_notes(200, &authors, |i| T0 + i as u64 / 4));
    synced_completely(
        &events,
        Options {
            clamp: 100,
            ..Options::default()
        },
    )
    .await;
}

/// A saturated second of one kind: the full answer for the second is already what the kind's
/// query would return (ties rank by id), so narrowing goes straight to authors and nothing is
/// sent twice beyond what narrowing by author must re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_a_one_kind_second_does_not_ask_for_the_same_page_again() {
    let authors = keys(6);
    // 480 events in one second, 80 per author, all kind 1; clamp 100, COUNT exact, no NIP-77.
    let events: Vec<RawEvent> = (0..480)
        .map(|i| {
            sign_event(
                &authors[i % 6],
                T0 + 50,
                1,
                vec![],
                &format!("one kind {i}"),
            )
        })
        .collect();
    let (relay, _node) = synced_completely(
        &events,
        Options {
            clamp: 100,
            ..Options::default()
        },
    )
    .await;
    // The first page (100, all in that second), then each author's 80: 580. The first page
    // ends inside that second and holds a whole answer of it, so an exact COUNT (480) shows it
    // saturated at once; a page anchored at it re-sent the same 100 first (680), and asking for
    // kind 1 as well sent them once more (780).
    assert_eq!(relay.events_sent(), 580, "events sent for 480 unique");
}

/// A page that ends inside a second holding all of it: an exact COUNT of that second proves it,
/// so the next page starts below it instead of re-sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_count_settles_a_page_boundary_second_without_re_sending_it() {
    // Clamp 100: 60 events at T0+20, 40 at T0+10 (the first page ends exactly there), 100 at T0+5.
    let events = in_seconds(&[(T0 + 20, 60), (T0 + 10, 40), (T0 + 5, 100)]);
    let (relay, node) = synced_completely(
        &events,
        Options {
            clamp: 100,
            ..Options::default()
        },
    )
    .await;
    // 100 + 100, each event once. Anchoring the second page at T0+10 re-sent its 40, and the
    // third page at T0+5 its 100 (300).
    assert_eq!(relay.events_sent(), 200, "events sent for 200 unique");
    assert_eq!(node.status()["relays"][0]["unproven_seconds"], 0);
}

/// A relay whose COUNT says less than it just sent (some answer 0 to every COUNT) proves
/// nothing at a page boundary: the next page re-asks that second, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_below_what_was_sent_is_not_taken_as_proof() {
    let events = in_seconds(&[(T0 + 20, 60), (T0 + 10, 70), (T0 + 5, 30)]);
    synced_completely(
        &events,
        Options {
            clamp: 100,
            count_zero: true,
            ..Options::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprovable_second_is_never_reported_complete() {
    let k = keys(1);
    // 300 events by ONE author of ONE kind in one second, cap 100, no COUNT, no NIP-77.
    let events: Vec<RawEvent> = (0..300)
        .map(|i| sign_event(&k[0], T0, 1, vec![], &format!("x {i}")))
        .collect();
    let relay = HostileRelay::start(
        events,
        Options {
            clamp: 100,
            count: false,
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    let out = node.sync_once(&relay.url()).await;
    assert!(!out.status.success(), "must not claim completeness");
    assert!(
        stderr(&out).contains("could not be proven complete"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.status()["relays"][0]["unproven_seconds"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_rate_limits_are_clear_failures() {
    let events = raw_notes(5, &keys(1), |i| T0 + i as u64);
    let big = HostileRelay::start(
        events.clone(),
        Options {
            oversized_frame: Some(2 << 20),
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    let out = node.sync_no_retry(&big.url()).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("too long") || stderr(&out).contains("size"),
        "{}",
        stderr(&out)
    );

    let limited = HostileRelay::start(
        events,
        Options {
            closed_reason: Some("rate-limited: slow down".into()),
            ..Options::default()
        },
    )
    .await;
    let out = node.sync_no_retry(&limited.url()).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rate-limit"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_big_events_stay_within_the_memory_budget() {
    let k = keys(2);
    // 120 events of ~100 KB: one 500-event page would buffer 12 MB; the budget is 1 MiB.
    let events: Vec<RawEvent> = (0..120)
        .map(|i| {
            sign_event(
                &k[i % 2],
                T0 + i as u64,
                30023,
                vec![],
                &format!("{i}{}", "x".repeat(100_000)),
            )
        })
        .collect();
    let relay = HostileRelay::start(events.clone(), Options::default()).await;
    let node = Node::new("[sync]\nmax_page_mb = 1\npage_timeout_secs = 5\n");
    archives_completely(&node, &relay.url(), &ids(&events)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_full_of_invalid_events_still_advance_by_their_claimed_time() {
    let authors = keys(2);
    let good = raw_notes(200, &authors, |i| T0 + i as u64);
    // The newest 300 events, spread over 300 seconds, all carry broken signatures.
    let forged: Vec<RawEvent> = raw_notes(300, &authors, |i| T0 + 1_000 + i as u64)
        .iter()
        .map(RawEvent::with_bad_sig)
        .collect();
    let mut served = good.clone();
    served.extend(forged);
    let relay = HostileRelay::start(
        served,
        Options {
            clamp: 100,
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&good)).await;
    // Pages advance by the answered events' time, not one second per request.
    assert!(
        relay.reqs() < 40,
        "{} REQs for 500 events in pages of 100",
        relay.reqs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_answers_never_end_a_pass_early() {
    let authors = keys(3);
    // The newest 150 events are all visible, so the first page is full (the node learns the
    // clamp, 100); below them every 5th event is hidden, so later pages come back ~20% short
    // although older events exist. A "shorter than the learned clamp = done" rule would stop
    // after the second page.
    let events: Vec<RawEvent> = (0..750)
        .map(|i| {
            let hide = i % 5 == 0 && i < 600;
            let content = if hide {
                format!("hidden {i}")
            } else {
                format!("shown {i}")
            };
            sign_event(&authors[i % 3], T0 + i as u64, 1, vec![], &content)
        })
        .collect();
    let shown: Vec<RawEvent> = events
        .iter()
        .filter(|e| e.content.starts_with("shown"))
        .cloned()
        .collect();
    let relay = HostileRelay::start(
        events,
        Options {
            clamp: 100,
            hide_after_limit: Some("hidden".into()),
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&shown)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_max_limit_lowers_the_page_limit() {
    let events = raw_notes(300, &keys(2), |i| T0 + i as u64);
    let relay = HostileRelay::start(
        events.clone(),
        Options {
            nip11: Some(r#"{"name":"hostile","limitation":{"max_limit":"40"}}"#.into()),
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&events)).await;
    assert_eq!(
        relay.max_limit_asked(),
        40,
        "pages ask for NIP-11 max_limit, not 500"
    );
}

/// 3,000 events on a relay that adds the 3 oldest it left out to every answer.
async fn stray_relay() -> (Vec<RawEvent>, HostileRelay) {
    let events = raw_notes(3_000, &keys(3), |i| T0 + i as u64);
    let opts = Options {
        stray_older: 3,
        ..Options::default()
    };
    (events.clone(), HostileRelay::start(events, opts).await)
}

/// A relay whose answers are correct newest-first but carry a few matching events from far
/// older (unsorted storage, stale caches). The oldest event of a page then proves nothing: a
/// pass that trusted it skipped everything between and still said "complete" (seen: 4,393 of
/// 19,999 events). With the node asking exactly the clamp, the limit-th newest bounds the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_old_events_never_let_a_pass_skip_history() {
    let (events, relay) = stray_relay().await;
    let node = fast_node();
    archives_completely(&node, &relay.url(), &ids(&events)).await;
}

/// The same relay behind a silent clamp below the asked limit (no NIP-11): the limit-th
/// newest does not help, so the hole between the answer and its strays is asked for directly,
/// the relay is caught, and its windows are narrowed until answers are short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_old_events_behind_a_silent_clamp_mark_the_relay_misordered() {
    let (events, relay) = stray_relay().await;
    let node = Node::new("[sync]\npage_timeout_secs = 3\npage_limit = 1000\n");
    archives_completely(&node, &relay.url(), &ids(&events)).await;
    let misordered =
        node.sqlite("SELECT misordered_cap FROM relay WHERE misordered_at IS NOT NULL");
    assert_eq!(
        misordered.as_deref(),
        Some("500"),
        "the relay is recorded as misordered, with its honest answer size"
    );
    // The careful mode costs requests, but not one per event.
    assert!(relay.reqs() < 200, "{} REQs for 3,000 events", relay.reqs());
}

/// A relay that ignores since/until answers every page with the same newest events; once the
/// frontier is below them, a full page holds nothing inside the window. That is no proof that
/// the window is empty: the pass must not be reported complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_ignoring_the_window_never_completes_a_pass() {
    let events = raw_notes(1_200, &keys(3), |i| T0 + i as u64);
    let newest: Vec<RawEvent> = events[events.len() - 500..].to_vec();
    // Every answer: the 500 newest events, whatever the window asked.
    let relay = HostileRelay::start(
        Vec::new(),
        Options {
            outside_filter: newest,
            ..Options::default()
        },
    )
    .await;
    let node = fast_node();
    let out = node.sync_no_retry(&relay.url()).await;
    assert!(
        !out.status.success(),
        "a relay that ignores since/until was reported complete: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("ignores since/until"),
        "the error names the cause: {}",
        stderr(&out)
    );
}

/// An event larger than `network.max_message_bytes` breaks the websocket. The relay used to be
/// retried at the same point forever, so its older history was never archived. Now one
/// session gets past it: every other event is stored, the second holding it is recorded as
/// unproven with the reason, and `sync --once` reports it instead of "complete".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_message_limit_is_passed_and_its_second_recorded() {
    let authors = keys(2);
    // Ordinary events on even seconds, the big one alone on an odd second in the middle.
    let events = raw_notes(1_200, &authors, |i| T0 + 2 * i as u64);
    let big_at = T0 + 2 * 700 + 1;
    let big = sign_event(&authors[0], big_at, 1, vec![], &"x".repeat(100_000));
    let mut served = events.clone();
    served.push(big);
    let relay = HostileRelay::start(served, Options::default()).await;
    let node = fast_node();
    let cfg = std::fs::read_to_string(&node.config).unwrap().replacen(
        "connect_timeout_secs = 5\n",
        "connect_timeout_secs = 5\nmax_message_bytes = 65536\n",
        1,
    );
    std::fs::write(&node.config, cfg).unwrap();
    let out = node.sync_no_retry(&relay.url()).await;
    assert!(
        !out.status.success(),
        "a pass with an unproven second is not complete"
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("archived completely"), "{text}");
    assert_same_ids(&node.exported_ids(), &ids(&events));
    assert_eq!(
        node.sqlite("SELECT second || ' ' || reason FROM unproven_second")
            .as_deref(),
        Some(
            format!(
                "{big_at} an event here is larger than network.max_message_bytes (65536 bytes)"
            )
            .as_str()
        )
    );
}

/// Events by four authors in the given seconds: (second, how many).
fn in_seconds(spec: &[(u64, usize)]) -> Vec<RawEvent> {
    let k = keys(4);
    spec.iter()
        .flat_map(|&(second, n)| {
            let k = k.clone();
            (0..n).map(move |i| sign_event(&k[i % 4], second, 1, vec![], &format!("{second} {i}")))
        })
        .collect()
}

/// `sync --once` of a hostile relay holding `events`: it must succeed and store every one.
async fn synced_completely(events: &[RawEvent], opts: Options) -> (HostileRelay, Node) {
    let relay = HostileRelay::start(events.to_vec(), opts).await;
    let node = fast_node();
    let out = node.sync_once(&relay.url()).await;
    assert!(out.status.success(), "{} {}", stderr(&out), stdout(&out));
    assert_same_ids(&node.exported_ids(), &ids(events));
    (relay, node)
}
