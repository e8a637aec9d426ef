//! The query engine over the node's store: NIP-01 semantics against brute force (the
//! conformance suite in support/conformance.rs), counts, keyset paging, time budgets, and the
//! async stream the read side serves from.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bigbrotr::protocol::{Event, Filter};
use bigbrotr::query::local::{LocalAnswer, LocalSource};
use bigbrotr::query::{EventSource, Framing, Position, Query, QueryError, RENDER_BATCH};
use bigbrotr::store::{EventStore, EventStoreOptions};
use rand::SeedableRng;
use support::conformance::{check, corpus, describe, expected, random_query};

fn store_with(events: &[Event]) -> (tempfile::TempDir, Arc<EventStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EventStore::open(dir.path(), &EventStoreOptions::default()).expect("open");
    for page in events.chunks(100) {
        store
            .write_page(1, 1, page, &vec![false; page.len()], None)
            .expect("write");
    }
    (dir, Arc::new(store))
}

fn answer(store: &EventStore, q: &Query) -> Vec<Event> {
    LocalAnswer::new(store, q)
        .expect("plan")
        .map(|r| r.map(|enc| enc.decode().expect("stored tags decode")))
        .collect::<Result<Vec<_>, _>>()
        .expect("answer")
}

#[test]
fn the_node_store_answers_every_filter_as_nip01_says() {
    let events = corpus(1500, 5, 1);
    let (_dir, store) = store_with(&events);
    check(&events, 7, 400, true, &mut |q| answer(&store, q));
}

#[test]
fn every_version_is_there_when_asked_for() {
    let events = corpus(600, 3, 2);
    let (_dir, store) = store_with(&events);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..100 {
        let mut q = random_query(&mut rng, &events);
        q.all_versions = true;
        let got: Vec<[u8; 32]> = answer(&store, &q).iter().map(|e| e.id).collect();
        assert!(got == expected(&events, &q), "{}", describe(&q));
    }
}

#[test]
fn counts_ignore_limits_and_match_the_answer() {
    let events = corpus(800, 4, 3);
    let (_dir, store) = store_with(&events);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..100 {
        let mut q = random_query(&mut rng, &events);
        let n = LocalSource::count_blocking(&store, q.clone()).expect("count");
        for f in &mut q.filters {
            f.limit = None;
        }
        assert_eq!(n as usize, expected(&events, &q).len(), "{}", describe(&q));
    }
}

#[test]
fn a_query_past_its_time_budget_stops_with_a_clear_error() {
    let events = corpus(600, 3, 4);
    let (_dir, store) = store_with(&events);
    let q = Query {
        // Matches nothing, so every event is a candidate read and rejected.
        filters: vec![Filter {
            tags: [('q', vec!["absent".to_string()])].into(),
            kinds: vec![1],
            ..Filter::default()
        }],
        deadline: Some(Instant::now()),
        ..Query::default()
    };
    // The tag index has no entry for it: an empty answer at once, within any budget.
    assert!(answer(&store, &q).is_empty());
    let q = Query {
        filters: vec![Filter {
            ids: Vec::new(),
            since: Some(0),
            ..Filter::default()
        }],
        deadline: Some(Instant::now() - Duration::from_secs(1)),
        ..Query::default()
    };
    let res: Result<Vec<_>, _> = LocalAnswer::new(&store, &q).expect("plan").collect();
    let err = res.expect_err("a full scan past its deadline must stop");
    assert!(matches!(err, QueryError::TimedOut), "{err}");
    assert!(err.to_string().contains("narrow the filter"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_positions_json_and_count_give_the_same_answer() {
    let events = corpus(600, 3, 5);
    let (_dir, store) = store_with(&events);
    let source = LocalSource::new(store.clone());
    let q = Query {
        filters: vec![Filter::default()],
        ..Query::default()
    };
    let want = expected(&events, &q);
    let mut rx = source.query(q.clone(), 2);
    let mut got = Vec::new();
    while let Some(batch) = rx.recv().await {
        got.extend(batch.expect("events"));
    }
    assert!(got.iter().map(|e| e.id).eq(want.iter().copied()));
    let mut rx = source.query_positions(q.clone(), 2);
    let mut positions = Vec::new();
    while let Some(batch) = rx.recv().await {
        positions.extend(batch.expect("positions"));
    }
    assert!(positions.iter().map(|p| p.id).eq(want.iter().copied()));
    assert!(positions
        .iter()
        .zip(&got)
        .all(|(p, e)| p.created_at == e.created_at));
    // The JSON written from the stored bytes is exactly the event's own NIP-01 JSON.
    let framing = Framing {
        prefix: "[\"EVENT\",\"s\",".into(),
        suffix: "]",
    };
    let mut rx = source.query_json(q.clone(), framing, 2);
    let mut texts = Vec::new();
    while let Some(batch) = rx.recv().await {
        let batch = batch.expect("rendered");
        assert!(batch.len() <= RENDER_BATCH, "{}", batch.len());
        texts.extend(batch);
    }
    assert_eq!(texts.len(), got.len());
    for (r, ev) in texts.iter().zip(&got) {
        assert_eq!(r.position, Position::of(ev));
        assert_eq!(r.text, format!("[\"EVENT\",\"s\",{}]", ev.to_json()));
    }
    assert_eq!(source.count(q).await.expect("count") as usize, got.len());
}
