//! The query conformance suite: NIP-01 filter semantics checked against a brute-force
//! evaluation over the same events. Every [`bigbrotr::query::EventSource`] runs it (the node's
//! store here; the central archive too), and so does every interface over one (websocket, REST).
//!
//! The corpus is built to hit the hard cases: many events per second (ties ordered by id),
//! replaceable and addressable events with several versions (only the latest is served), tags
//! with hex values, short values, an uppercase spelling of a hex value and values over 200
//! bytes, events repeating a tag. Filters are random from a fixed seed, several per query.

use std::collections::BTreeMap;

use bigbrotr::protocol::{Event, Filter};
use bigbrotr::query::{Position, Query};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::raw_event::sign_event;

pub const T0: u64 = 1_700_000_000;
const KINDS: [u16; 7] = [0, 1, 3, 7, 1111, 10002, 30023];

/// `n` signed events by `authors` keys, from a fixed seed.
pub fn corpus(n: usize, authors: usize, seed: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<nostr::Keys> = (0..authors)
        .map(|i| nostr::Keys::parse(&format!("{:064x}", i + 1)).expect("key"))
        .collect();
    let hexes: Vec<String> = (0..8).map(|i| format!("{:064x}", 0xabc000 + i)).collect();
    let long = "w".repeat(300);
    let words = ["nostr", "rust", "pi", "Pi", "bitcoin", long.as_str()];
    (0..n)
        .map(|i| {
            let kind = *KINDS.choose(&mut rng).expect("kinds");
            let mut tags: Vec<Vec<String>> = Vec::new();
            for _ in 0..rng.gen_range(0..4) {
                let tag = match rng.gen_range(0..5) {
                    0 => vec!["e".into(), hexes.choose(&mut rng).expect("hex").clone()],
                    1 => vec!["p".into(), hexes.choose(&mut rng).expect("hex").clone()],
                    2 => vec!["p".into(), hexes[0].to_uppercase()],
                    _ => vec![
                        "t".into(),
                        words.choose(&mut rng).expect("word").to_string(),
                    ],
                };
                tags.push(tag);
            }
            if kind == 30023 && rng.gen_bool(0.8) {
                tags.push(vec![
                    "d".into(),
                    ["a", "b", ""].choose(&mut rng).expect("d").to_string(),
                ]);
            }
            let created_at = T0 + rng.gen_range(0..40);
            let raw = sign_event(
                &keys[rng.gen_range(0..authors)],
                created_at,
                kind,
                tags,
                &format!("e{i}"),
            );
            Event {
                id: hex_32(&raw.id),
                pubkey: hex_32(&raw.pubkey),
                created_at: raw.created_at,
                kind: raw.kind,
                tags: raw.tags,
                content: raw.content,
                sig: hex::decode(&raw.sig).expect("sig").try_into().expect("64"),
            }
        })
        .collect()
}

fn hex_32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32")
}

/// A random query over `events`: 1-3 filters mixing every field.
pub fn random_query(rng: &mut StdRng, events: &[Event]) -> Query {
    let n = rng.gen_range(1..=3);
    let authors: Vec<[u8; 32]> = {
        let mut a: Vec<_> = events.iter().map(|e| e.pubkey).collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    let filters = (0..n)
        .map(|_| {
            let mut f = Filter::default();
            if rng.gen_bool(0.15) {
                for _ in 0..rng.gen_range(1..5) {
                    f.ids.push(hex::encode(events.choose(rng).expect("ev").id));
                }
                f.ids.push(format!("{:064x}", 7));
            }
            if rng.gen_bool(0.4) {
                for _ in 0..rng.gen_range(1..3) {
                    f.authors
                        .push(hex::encode(authors.choose(rng).expect("author")));
                }
            }
            if rng.gen_bool(0.5) {
                for _ in 0..rng.gen_range(1..3) {
                    f.kinds.push(*KINDS.choose(rng).expect("kind"));
                }
            }
            if rng.gen_bool(0.35) {
                let ev = events.choose(rng).expect("ev");
                if let Some(t) = ev.tags.choose(rng) {
                    let letter = t[0].chars().next().expect("letter");
                    let mut values = vec![t[1].clone()];
                    if rng.gen_bool(0.3) {
                        values.push("nostr".into());
                    }
                    f.tags.insert(letter, values);
                }
            }
            if rng.gen_bool(0.3) {
                f.since = Some(T0 + rng.gen_range(0..40));
            }
            if rng.gen_bool(0.3) {
                f.until = Some(T0 + rng.gen_range(0..40));
            }
            if rng.gen_bool(0.6) {
                f.limit = Some(rng.gen_range(0..60));
            }
            f
        })
        .collect();
    Query {
        filters,
        ..Query::default()
    }
}

/// The ids of the latest version of every replaceable / addressable key, and of every other event.
fn latest(events: &[Event]) -> std::collections::HashSet<[u8; 32]> {
    let mut best: BTreeMap<Vec<u8>, (u64, [u8; 32])> = BTreeMap::new();
    let mut out = std::collections::HashSet::new();
    for e in events {
        let key = if e.kind == 0 || e.kind == 3 || (10_000..20_000).contains(&e.kind) {
            let mut k = e.pubkey.to_vec();
            k.extend_from_slice(&e.kind.to_be_bytes());
            k
        } else if (30_000..40_000).contains(&e.kind) {
            let d = e
                .tags
                .iter()
                .find(|t| t[0] == "d")
                .map_or("", |t| t[1].as_str());
            let mut k = e.pubkey.to_vec();
            k.extend_from_slice(&e.kind.to_be_bytes());
            k.extend_from_slice(d.as_bytes());
            k.push(0xff);
            k
        } else {
            out.insert(e.id);
            continue;
        };
        let cand = (e.created_at, e.id);
        best.entry(key)
            .and_modify(|b| {
                if cand.0 > b.0 || (cand.0 == b.0 && cand.1 < b.1) {
                    *b = cand;
                }
            })
            .or_insert(cand);
    }
    out.extend(best.values().map(|(_, id)| *id));
    out
}

/// What NIP-01 says the answer to `q` over `events` is, by brute force.
pub fn expected(events: &[Event], q: &Query) -> Vec<[u8; 32]> {
    let live = latest(events);
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter(|e| q.all_versions || live.contains(&e.id))
        .filter(|e| {
            q.after
                .is_none_or(|a| Position::of(e).order_key() > a.order_key())
        })
        .collect();
    sorted.sort_by_key(|e| Position::of(e).order_key());
    let mut out: Vec<&Event> = Vec::new();
    for f in &q.filters {
        let limit = f.limit.unwrap_or(u64::MAX) as usize;
        out.extend(sorted.iter().filter(|e| f.matches(e)).take(limit));
    }
    out.sort_by_key(|e| Position::of(e).order_key());
    out.dedup_by_key(|e| e.id);
    out.into_iter().map(|e| e.id).collect()
}

/// Run `queries` random queries (and keyset paging over each) through `answer`; panic with
/// the first query whose answer differs from NIP-01's.
/// `paging`: also page through answers with keyset cursors (`Query::after`), where the
/// interface has them (not NIP-01's websocket).
pub fn check(
    events: &[Event],
    seed: u64,
    queries: usize,
    paging: bool,
    answer: &mut dyn FnMut(&Query) -> Vec<Event>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nonempty = 0;
    for n in 0..queries {
        let q = random_query(&mut rng, events);
        let want = expected(events, &q);
        let got: Vec<[u8; 32]> = answer(&q).iter().map(|e| e.id).collect();
        assert_eq!(
            got.len(),
            want.len(),
            "query {n}: {} answered {} events, NIP-01 says {}",
            describe(&q),
            got.len(),
            want.len()
        );
        assert!(
            got == want,
            "query {n}: {} answered the right number in the wrong order or set",
            describe(&q)
        );
        nonempty += usize::from(!want.is_empty());
        // Keyset paging of a single-filter query without limit, 7 per page: the pages
        // concatenated are the whole answer.
        if paging && n % 5 == 0 {
            let mut f = q.filters[0].clone();
            f.limit = None;
            let whole = expected(
                events,
                &Query {
                    filters: vec![f.clone()],
                    ..Query::default()
                },
            );
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let page_q = Query {
                    filters: vec![Filter {
                        limit: Some(7),
                        ..f.clone()
                    }],
                    after,
                    ..Query::default()
                };
                let page = answer(&page_q);
                let Some(last) = page.last() else { break };
                after = Some(Position::of(last));
                pages.extend(page.iter().map(|e| e.id));
                assert!(
                    pages.len() <= whole.len(),
                    "paging {}: more than the whole answer",
                    describe(&page_q)
                );
            }
            assert!(
                pages == whole,
                "query {n}: paging {} by 7 gave {} events, the whole answer is {}",
                describe(&q),
                pages.len(),
                whole.len()
            );
        }
    }
    assert!(
        nonempty * 2 > queries,
        "the random queries should mostly match something ({nonempty} of {queries})"
    );
}

pub fn describe(q: &Query) -> String {
    let fs: Vec<String> = q.filters.iter().map(Filter::to_json).collect();
    format!("[{}] after {:?}", fs.join(","), q.after.map(|p| p.encode()))
}
