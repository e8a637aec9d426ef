//! `bigbrotr serve`: the read-only Nostr relay over a node's store, driven through the real
//! binary on loopback: NIP-01 answers checked by the conformance suite through the websocket,
//! live delivery while another process archives, NIP-11, refusals and limits, and a client that
//! never reads.

mod support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bigbrotr::protocol::Event;
use bigbrotr::query::Query;
use bigbrotr::store::{EventStore, EventStoreOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::conformance::{self, check, corpus};
use support::ns::KillOnDrop;
use support::*;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A node whose store holds `events` (written directly, as sync would), serving on a free port.
struct Served {
    node: Node,
    addr: String,
    _child: KillOnDrop,
}

impl Served {
    fn start(events: &[Event], serve_extra: &str) -> Served {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let node = Node::new(&format!(
            "[serve]\nlisten = \"{addr}\"\ndefault_limit = 5000\nmax_limit = 5000\n{serve_extra}"
        ));
        if !events.is_empty() {
            let store = EventStore::open(
                &node.data_dir().join("events"),
                &EventStoreOptions::default(),
            )
            .expect("open store");
            store
                .bind_relay(1, "wss://relay.example.org")
                .expect("bind");
            for page in events.chunks(200) {
                store
                    .write_page(1, 1, page, &vec![false; page.len()], None)
                    .expect("write");
            }
        }
        Self::serve(node, addr)
    }

    fn serve(node: Node, addr: String) -> Served {
        let child = node
            .cmd()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn serve");
        let served = Served {
            node,
            addr,
            _child: KillOnDrop(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.http_get("/health", "").is_none() {
            assert!(
                Instant::now() < deadline,
                "serve did not answer /health within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// A plain HTTP/1.1 GET: (status, body), None when nothing listens yet.
    fn http_get(&self, path: &str, accept: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let accept = if accept.is_empty() {
            String::new()
        } else {
            format!("Accept: {accept}\r\n")
        };
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{accept}Connection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let status = buf.split(' ').nth(1)?.parse().ok()?;
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    async fn ws(&self) -> Ws {
        tokio_tungstenite::connect_async(format!("ws://{}/", self.addr))
            .await
            .expect("websocket connect")
            .0
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an answer within 20 s")
        {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(t.as_str()).expect("json"))
            }
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Err(e)) => {
                eprintln!("websocket error: {e}");
                return None;
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// REQ with `filters`, collecting events up to EOSE; the closing frame (EOSE or CLOSED) too.
async fn req(ws: &mut Ws, sub: &str, filters: &[Value]) -> (Vec<Value>, Value) {
    let mut msg = vec![Value::from("REQ"), Value::from(sub)];
    msg.extend(filters.iter().cloned());
    send(ws, Value::Array(msg)).await;
    let mut events = Vec::new();
    loop {
        let v = next_json(ws).await.expect("connection open until EOSE");
        match v[0].as_str() {
            Some("EVENT") if v[1] == sub => events.push(v[2].clone()),
            Some("EOSE") | Some("CLOSED") if v[1] == sub => return (events, v),
            _ => {}
        }
    }
}

fn filter_json(f: &bigbrotr::protocol::Filter) -> Value {
    serde_json::from_str(&f.to_json()).expect("filter json")
}

fn id_of(v: &Value) -> [u8; 32] {
    hex::decode(v["id"].as_str().expect("id"))
        .expect("hex")
        .try_into()
        .expect("32")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_every_filter_as_nip01_says() {
    let events = corpus(1500, 5, 1);
    let served = Served::start(&events, "");
    let mut ws = served.ws().await;
    let handle = tokio::runtime::Handle::current();
    let mut n = 0;
    check(&events, 7, 300, false, &mut |q: &Query| {
        n += 1;
        let filters: Vec<Value> = q.filters.iter().map(filter_json).collect();
        let sub = format!("q{n}");
        let (got, end) = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let answer = req(&mut ws, &sub, &filters).await;
                send(&mut ws, serde_json::json!(["CLOSE", sub])).await;
                answer
            })
        });
        assert_eq!(end[0], "EOSE", "{end}");
        got.iter()
            .map(|v| {
                let e: Event = parse_event(v);
                assert_eq!(e.id, id_of(v));
                e
            })
            .collect()
    });
}

fn parse_event(v: &Value) -> Event {
    let hex32 = |k: &str| -> [u8; 32] {
        hex::decode(v[k].as_str().expect(k))
            .expect("hex")
            .try_into()
            .expect("32")
    };
    Event {
        id: hex32("id"),
        pubkey: hex32("pubkey"),
        created_at: v["created_at"].as_u64().expect("created_at"),
        kind: v["kind"].as_u64().expect("kind") as u16,
        tags: serde_json::from_value(v["tags"].clone()).expect("tags"),
        content: v["content"].as_str().expect("content").to_string(),
        sig: hex::decode(v["sig"].as_str().expect("sig"))
            .expect("hex")
            .try_into()
            .expect("64"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_count_event_refusal_and_limits() {
    let events = corpus(300, 3, 2);
    let served = Served::start(
        &events,
        "max_subscriptions = 3\nmax_filters = 2\nheader_timeout_secs = 1\n",
    );
    // Slowloris: request headers that never end are cut off after serve.header_timeout_secs.
    let mut slow = std::net::TcpStream::connect(&served.addr).expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a connection with unfinished headers was held {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, body) = served
        .http_get("/", "application/nostr+json")
        .expect("nip11");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("nip11 json");
    assert_eq!(doc["supported_nips"], serde_json::json!([1, 11, 45, 77]));
    assert_eq!(doc["limitation"]["max_subscriptions"], 3);
    assert_eq!(doc["limitation"]["restricted_writes"], true);

    let mut ws = served.ws().await;
    // COUNT (NIP-45): every kind-1 event, latest versions only is the same for kind 1.
    let kind1 = events.iter().filter(|e| e.kind == 1).count();
    send(&mut ws, serde_json::json!(["COUNT", "c", {"kinds": [1]}])).await;
    let v = next_json(&mut ws).await.expect("count");
    assert_eq!(v, serde_json::json!(["COUNT", "c", {"count": kind1}]));
    // EVENT is refused, naming why.
    let id = hex::encode(events[0].id);
    send(
        &mut ws,
        serde_json::json!([
            "EVENT",
            serde_json::from_str::<Value>(&events[0].to_json()).expect("ev")
        ]),
    )
    .await;
    let v = next_json(&mut ws).await.expect("ok");
    assert_eq!(
        v,
        serde_json::json!(["OK", id, false, "blocked: read-only archive"])
    );
    // Too many filters, an unknown filter field: CLOSED with the reason.
    let (_, end) = req(
        &mut ws,
        "f",
        &[
            serde_json::json!({}),
            serde_json::json!({}),
            serde_json::json!({}),
        ],
    )
    .await;
    assert_eq!(end[0], "CLOSED");
    assert!(
        end[2]
            .as_str()
            .expect("reason")
            .starts_with("invalid: 3 filters"),
        "{end}"
    );
    let (_, end) = req(&mut ws, "g", &[serde_json::json!({"search": "x"})]).await;
    assert!(end[2].as_str().expect("reason").contains("search"), "{end}");
    // A list with no values matches nothing.
    let (got, end) = req(&mut ws, "h", &[serde_json::json!({"authors": []})]).await;
    assert!(got.is_empty() && end[0] == "EOSE", "{end}");
    // Subscriptions per connection: 3 open (h is open after its EOSE), the 4th is refused,
    // re-using an open id replaces it.
    let (_, e1) = req(&mut ws, "s1", &[serde_json::json!({"limit": 1})]).await;
    let (_, e2) = req(&mut ws, "s2", &[serde_json::json!({"limit": 1})]).await;
    assert_eq!(
        (e1[0].as_str(), e2[0].as_str()),
        (Some("EOSE"), Some("EOSE"))
    );
    let (_, e3) = req(&mut ws, "s3", &[serde_json::json!({"limit": 1})]).await;
    assert_eq!(e3[0], "CLOSED");
    assert!(
        e3[2].as_str().expect("reason").starts_with("blocked:"),
        "{e3}"
    );
    let (_, again) = req(&mut ws, "s1", &[serde_json::json!({"limit": 2})]).await;
    assert_eq!(again[0], "EOSE");
    send(&mut ws, serde_json::json!(["CLOSE", "h"])).await;
    let (_, e4) = req(&mut ws, "s4", &[serde_json::json!({"limit": 1})]).await;
    assert_eq!(e4[0], "EOSE", "a CLOSE frees a slot");
    // Not JSON: a NOTICE, and the connection stays usable.
    ws.send(Message::text("{nope")).await.expect("send");
    let v = next_json(&mut ws).await.expect("notice");
    assert_eq!(v[0], "NOTICE");
    assert!(v[1].as_str().expect("text").starts_with("invalid:"), "{v}");
    // Other routes.
    assert_eq!(served.http_get("/nope", "").expect("404").0, 404);
    let (status, page) = served.http_get("/", "text/html").expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("read-only Nostr relay"), "{page}");
    assert!(
        page.contains(&format!("events stored<b>{}</b>", events.len())),
        "{page}"
    );
}

/// `bigbrotr run` with `[serve] enabled`: a subscription open before the node archives a relay
/// gets every matching event live. `run` syncs its registered relays, so this runs in a
/// loopback-only network namespace.
#[test]
fn events_archived_while_subscribed_arrive_live() {
    support::ns::in_netns(async {
        let authors = keys(3);
        let relay = local_relay(&[], RelayOpts::default()).await;
        let addr = format!("127.0.0.1:{}", free_port());
        let node = Node::new(&format!(
            "[serve]\nenabled = true\nlisten = \"{addr}\"\n[monitor]\nenabled = false\n[finder]\nenabled = false\n[sync]\nlive_turn_secs = 1\nbackoff_min_secs = 1\n"
        ));
        node.seed_with(&[&relay.url]);
        let child = KillOnDrop(Some(node.cmd().arg("run").spawn().expect("spawn run")));
        let served = Served {
            node,
            addr,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.http_get("/health", "").is_none() {
            assert!(
                Instant::now() < deadline,
                "run did not serve /health within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ws = served.ws().await;
        let (got, end) = req(&mut ws, "live", &[serde_json::json!({"kinds": [1]})]).await;
        assert!(got.is_empty() && end[0] == "EOSE", "{end}");
        // Published to the relay now, dated now: the node's live subscription or its next pass
        // archives them, serve delivers them.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let notes = notes(300, &authors, |i| now + (i as u64) / 100);
        for ev in &notes {
            relay.add(ev).await;
        }
        let mut ids = std::collections::HashSet::new();
        while ids.len() < 300 {
            let v = next_json(&mut ws).await.expect("live events");
            assert_eq!(v[0], "EVENT", "{v}");
            assert_eq!(v[1], "live");
            ids.insert(v[2]["id"].as_str().expect("id").to_string());
        }
        let want: std::collections::HashSet<String> = notes.iter().map(|e| e.id.to_hex()).collect();
        assert_eq!(ids, want);
        // The status page lists the relay, in the relays table and in sync progress.
        let (status, page) = served.http_get("/", "text/html").expect("page");
        assert_eq!(status, 200);
        let relays = page.split("id=\"relays\"").nth(1).expect("relays table");
        assert!(relays.contains(&relay.url), "{page}");
        let sync = page.split("id=\"sync\"").nth(1).expect("sync table");
        assert!(sync.contains(&relay.url), "{page}");
        // The relays over REST, as `relays list --json` and `relays show --json` give them.
        let (status, body) = rest_get(&served, "/v1/status", &[]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["events_stored"], 300, "{body}");
        assert_eq!(body["relays_known"], 1, "{body}");
        let (status, body) = rest_get(&served, "/v1/relays", &[]);
        assert_eq!(status, 200, "{body}");
        let urls: Vec<&str> = body["relays"]
            .as_array()
            .expect("relays")
            .iter()
            .filter_map(|r| r["url"].as_str())
            .collect();
        assert_eq!(urls, vec![relay.url.as_str()]);
        let (status, body) = rest_get(&served, "/v1/relay", &[("url", relay.url.clone())]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["health"]["url"], relay.url.as_str());
        assert!(
            body["daily"].is_array() && body["history"].is_array(),
            "{body}"
        );
        let (status, _) = rest_get(
            &served,
            "/v1/relay",
            &[("url", "wss://not.registered.example".into())],
        );
        assert_eq!(status, 404);
        let (status, body) = rest_get(&served, "/v1/relay", &[]);
        assert_eq!(status, 400);
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("url is required"),
            "{body}"
        );
        // The node keeps its store: a second writer is refused with the fix.
        let other = format!("127.0.0.1:{}", free_port());
        let out = served.node.run(&["serve", "--listen", &other]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("[serve] enabled = true"),
            "{}",
            stderr(&out)
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_others_are_served() {
    // 3,000 events of 8 KB: ~25 MB of answer, far more than the socket buffers hold.
    let k = keys(1);
    let big = "x".repeat(8 << 10);
    let events: Vec<Event> = (0..3000)
        .map(|i| {
            let raw =
                raw_event::sign_event(&k[0], 1_700_000_000 + i, 1, vec![], &format!("{i}{big}"));
            parse_event(&serde_json::from_str(&raw.to_json()).expect("json"))
        })
        .collect();
    let served = Served::start(&events, "outbound_buffer_kb = 64\nwrite_timeout_secs = 2\n");
    let mut stalled = served.ws().await;
    send(&mut stalled, serde_json::json!(["REQ", "all", {}])).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Meanwhile another client is served.
    let mut other = served.ws().await;
    let (got, end) = req(&mut other, "one", &[serde_json::json!({"limit": 3})]).await;
    assert_eq!((got.len(), end[0].as_str()), (3, Some("EOSE")));
    // The stalled one gets what was in flight, then the connection ends: never EOSE.
    let mut n = 0;
    while let Some(v) = next_json(&mut stalled).await {
        assert_ne!(v[0], "EOSE", "a client that did not read for 5 s got the whole answer: it was buffered without bound");
        n += 1;
    }
    assert!(n < 3000, "{n}");
    assert_eq!(served.http_get("/health", "").expect("health").0, 200);
}

/// NIP-77 against the relay with the negentropy crate as the client: the reconciliation names
/// exactly the events the client lacks (and those only it has), and REQ by id fetches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negentropy_reconciliation_finds_exactly_the_missing_events() {
    use negentropy::{Id, Negentropy, NegentropyStorageVector};
    let events = corpus(1200, 4, 3);
    let served = Served::start(&events, "max_negentropy_items = 300\n");
    let kind1: Vec<&Event> = events.iter().filter(|e| e.kind == 1).collect();
    assert!(kind1.len() > 100 && kind1.len() < 300, "{}", kind1.len());
    let mut mine: Vec<(u64, [u8; 32])> = kind1
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, e)| (e.created_at, e.id))
        .collect();
    let only_mine = [
        (conformance::T0 + 5, [0xee; 32]),
        (conformance::T0 + 6, [0xef; 32]),
    ];
    mine.extend(only_mine);
    let mut storage = NegentropyStorageVector::new();
    for (t, id) in &mine {
        storage
            .insert(*t, Id::from_byte_array(*id))
            .expect("insert");
    }
    storage.seal().expect("seal");
    let mut neg = Negentropy::owned(storage, 0).expect("neg");
    let mut ws = served.ws().await;
    let init = neg.initiate().expect("initiate");
    send(
        &mut ws,
        serde_json::json!(["NEG-OPEN", "n", {"kinds": [1]}, hex::encode(init)]),
    )
    .await;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        let v = next_json(&mut ws).await.expect("neg answer");
        assert_eq!(v[0], "NEG-MSG", "{v}");
        rounds += 1;
        let msg = hex::decode(v[2].as_str().expect("hex")).expect("hex");
        match neg
            .reconcile_with_ids(&msg, &mut have, &mut need)
            .expect("reconcile")
        {
            Some(next) => {
                send(
                    &mut ws,
                    serde_json::json!(["NEG-MSG", "n", hex::encode(next)]),
                )
                .await
            }
            None => break,
        }
    }
    send(&mut ws, serde_json::json!(["NEG-CLOSE", "n"])).await;
    let mut need: Vec<[u8; 32]> = need.iter().map(|i| i.to_bytes()).collect();
    need.sort_unstable();
    let mut want: Vec<[u8; 32]> = kind1
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, e)| e.id)
        .collect();
    want.sort_unstable();
    assert_eq!(need, want, "ids the client lacks ({rounds} rounds)");
    let mut have: Vec<[u8; 32]> = have.iter().map(|i| i.to_bytes()).collect();
    have.sort_unstable();
    assert_eq!(
        have,
        vec![[0xee; 32], [0xef; 32]],
        "ids only the client has"
    );
    // Download exactly those.
    let ids: Vec<String> = need.iter().map(hex::encode).collect();
    let (got, end) = req(&mut ws, "fetch", &[serde_json::json!({"ids": ids})]).await;
    assert_eq!(end[0], "EOSE");
    let mut got: Vec<[u8; 32]> = got.iter().map(id_of).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    // A filter matching more than serve.max_negentropy_items is refused, naming the setting.
    let mut other = NegentropyStorageVector::new();
    other.seal().expect("seal");
    let mut neg = Negentropy::owned(other, 0).expect("neg");
    let init = neg.initiate().expect("initiate");
    send(
        &mut ws,
        serde_json::json!(["NEG-OPEN", "all", {"kinds": [1, 7, 1111]}, hex::encode(init)]),
    )
    .await;
    let v = next_json(&mut ws).await.expect("neg-err");
    assert_eq!(v[0], "NEG-ERR", "{v}");
    assert!(
        v[2].as_str()
            .expect("reason")
            .contains("max_negentropy_items"),
        "{v}"
    );
}

/// GET over HTTP/1.1 with the query string percent-encoded.
fn rest_get(served: &Served, path: &str, params: &[(&str, String)]) -> (u16, Value) {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let target = if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    };
    let (status, body) = served.http_get(&target, "").expect("http");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// The REST API answers the same random filters as NIP-01 says (several filters: one request
/// each, their answers united as NIP-01 unites them), pages with its `next` cursor, names bad
/// parameters, and shows where an event was seen; /metrics reports the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_answers_by_filter_and_pages_with_cursors() {
    let events = corpus(1200, 4, 8);
    let served = Served::start(&events, "");
    check(&events, 13, 150, true, &mut |q: &Query| {
        let mut all: Vec<Event> = Vec::new();
        for f in &q.filters {
            let mut params = vec![("filter", f.to_json())];
            if let Some(a) = q.after {
                params.push(("after", a.encode()));
            }
            let (status, body) = rest_get(&served, "/v1/events", &params);
            assert_eq!(status, 200, "{body}");
            all.extend(
                body["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(parse_event),
            );
        }
        all.sort_by_key(|e| bigbrotr::query::Position::of(e).order_key());
        all.dedup_by_key(|e| e.id);
        all
    });
    // Parameters instead of a JSON filter, and the next cursor to the end.
    let kind1: Vec<[u8; 32]> = {
        let q = Query {
            filters: vec![bigbrotr::protocol::Filter {
                kinds: vec![1],
                ..Default::default()
            }],
            ..Query::default()
        };
        conformance::expected(&events, &q)
    };
    let mut got = Vec::new();
    let mut params = vec![("kinds", "1".to_string()), ("limit", "25".to_string())];
    loop {
        let (status, body) = rest_get(&served, "/v1/events", &params);
        assert_eq!(status, 200, "{body}");
        got.extend(body["events"].as_array().expect("events").iter().map(id_of));
        match body["next"].as_str() {
            Some(next) => {
                params.retain(|(k, _)| *k != "after");
                params.push(("after", next.to_string()));
            }
            None => break,
        }
    }
    assert!(
        got == kind1,
        "paging by 25 gave {} events, NIP-01 says {}",
        got.len(),
        kind1.len()
    );
    let (status, body) = rest_get(&served, "/v1/count", &[("kinds", "1".into())]);
    assert_eq!(
        (status, body["count"].as_u64()),
        (200, Some(kind1.len() as u64))
    );
    // One event, with where it was seen.
    let id = hex::encode(events[0].id);
    let (status, body) = rest_get(&served, &format!("/v1/events/{id}"), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["id"], id);
    assert_eq!(
        body["seen_on"],
        serde_json::json!([{"relay": "wss://relay.example.org", "first_seen": 1}])
    );
    let (status, body) = rest_get(&served, &format!("/v1/events/{}", "0".repeat(64)), &[]);
    assert_eq!((status, body["status"].as_u64()), (404, Some(404)));
    // Mistakes are 400 problem details naming the parameter.
    let (status, body) = rest_get(&served, "/v1/events", &[("kind", "1".into())]);
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("\"kind\""),
        "{body}"
    );
    let (status, body) = rest_get(&served, "/v1/events", &[("after", "yesterday".into())]);
    assert_eq!(status, 400, "{body}");
    // Metrics: the store's counters and the queries just served.
    let (status, text) = served.http_get("/metrics", "").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!("bigbrotr_events_stored {}", events.len())),
        "{text}"
    );
    let served_queries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bigbrotr_serve_query_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("query histogram");
    assert!(served_queries > 150, "{served_queries}");
}
