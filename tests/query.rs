//! The query engine over the node's store: NIP-01 semantics against brute force (the
//! conformance suite in support/conformance.rs), counts, keyset paging, time budgets, and the
//! async stream the read side serves from.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bigbrotr::protocol::{Event, Filter};
use bigbrotr::query::local::{LocalAnswer, LocalSource};
use bigbrotr::query::{EventSource, Query, QueryError};
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
async fn the_stream_and_the_count_give_the_same_answer() {
    let events = corpus(600, 3, 5);
    let (_dir, store) = store_with(&events);
    let source = LocalSource::new(store.clone());
    let q = Query {
        filters: vec![Filter::default()],
        ..Query::default()
    };
    let mut rx = source.query(q.clone(), 8);
    let mut got = Vec::new();
    while let Some(ev) = rx.recv().await {
        got.push(ev.expect("event").id);
    }
    assert!(got == expected(&events, &q));
    assert_eq!(source.count(q).await.expect("count") as usize, got.len());
}
