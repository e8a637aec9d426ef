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
    child: KillOnDrop,
}

impl Served {
    fn start(events: &[Event], serve_extra: &str) -> Served {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        // Rate limits are off unless the test is about them: the suites ask hundreds of queries.
        let limits = if serve_extra.contains("rate_limit_per_minute") {
            ""
        } else {
            "rate_limit_per_minute = 0\n"
        };
        let node = Node::new(&format!(
            "[serve]\nlisten = \"{addr}\"\ndefault_limit = 5000\nmax_limit = 5000\n{limits}{serve_extra}"
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
            child: KillOnDrop(Some(child)),
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

    /// `bigbrotr run` archiving the relay at `relay_url` and serving itself (`[serve] enabled`,
    /// plus `serve_extra`), monitor and Finder off, with `env` set; returns once it listens.
    /// `run` syncs: call it inside a loopback-only network namespace.
    fn running(relay_url: &str, serve_extra: &str, env: &[(&str, &str)]) -> Served {
        let addr = format!("127.0.0.1:{}", free_port());
        let node = Node::new(&format!(
            "[serve]\nenabled = true\nlisten = \"{addr}\"\n{serve_extra}[monitor]\nenabled = false\n[finder]\nenabled = false\n[sync]\nlive_turn_secs = 1\nbackoff_min_secs = 1\n"
        ));
        node.seed_with(&[relay_url]);
        let mut cmd = node.cmd();
        cmd.arg("run");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = KillOnDrop(Some(cmd.spawn().expect("spawn run")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "run did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Served { node, addr, child }
    }

    /// The process serving.
    fn pid(&self) -> u32 {
        self.child.0.as_ref().map_or(0, |c| c.id())
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
        let served = Served::running(&relay.url, "", &[]);
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

/// One HTTP/1.1 GET with extra headers: status, headers (lower-case names), the body with any
/// chunked framing removed, and whether the body ended as HTTP says a whole one ends (the
/// last chunk of a chunked body; a cut stream ends without it).
fn http_full(
    addr: &str,
    target: &str,
    headers: &[(&str, String)],
) -> (u16, Vec<(String, String)>, Vec<u8>, bool) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut complete = true;
    if chunked {
        let (mut out, mut rest, mut ended) = (Vec::new(), &body[..], false);
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .expect("chunk size");
            if size == 0 {
                ended = true;
                break;
            }
            if rest.len() < eol + 2 + size + 2 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
        complete = ended;
    }
    (status, hdrs, body, complete)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A NIP-98 `Authorization` value for GET `url`, signed by `keys`, dated `at`.
fn nip98(keys: &nostr::Keys, url: &str, at: u64) -> String {
    use base64::Engine as _;
    let ev = support::raw_event::sign_event(
        keys,
        at,
        27235,
        vec![
            vec!["u".into(), url.into()],
            vec!["method".into(), "GET".into()],
        ],
        "",
    );
    format!(
        "Nostr {}",
        base64::engine::general_purpose::STANDARD.encode(ev.to_json())
    )
}

/// Per-address token buckets: past the burst a request is answered 429 with Retry-After and a
/// websocket REQ is CLOSED "rate-limited:"; an API key or a NIP-98 event from a trusted pubkey
/// lifts the limit; a wrong credential is 401, never silently downgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_and_keys_or_trusted_nip98_lift_them() {
    let events = corpus(60, 2, 3);
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let keys_file = keys_dir.path().join("api-keys");
    std::fs::write(
        &keys_file,
        "# operators\nsecret-key-one\n\nsecret-key-two\n",
    )
    .expect("keys");
    let trusted = nostr::Keys::generate();
    let stranger = nostr::Keys::generate();
    // 6 tokens, refilled at 1 a minute: nothing comes back while the test runs. The /health
    // poll of start() spends one.
    let served = Served::start(
        &events,
        &format!(
            "rate_limit_per_minute = 1\nrate_limit_burst = 6\napi_keys_file = \"{}\"\ntrusted_pubkeys = [\"{}\"]\n",
            keys_file.display(),
            trusted.public_key().to_hex()
        ),
    );
    let mut ws = served.ws().await; // 1 token: 4 left
    let (status, _, _, _) = http_full(&served.addr, "/v1/count?kinds=1", &[]); // 2: 2 left
    assert_eq!(status, 200);
    let (status, _, _, _) = http_full(&served.addr, "/v1/count?kinds=1", &[]); // 2: 0 left
    assert_eq!(status, 200);
    let (status, hdrs, body, _) = http_full(&served.addr, "/v1/count?kinds=1", &[]);
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    let wait: u64 = header(&hdrs, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((60..=120).contains(&wait), "Retry-After {wait}");
    let problem: Value = serde_json::from_slice(&body).expect("problem json");
    assert_eq!(problem["status"], 429);
    assert_eq!(
        header(&hdrs, "content-type"),
        Some("application/problem+json")
    );
    // The open websocket is limited too.
    let (got, end) = req(&mut ws, "s", &[serde_json::json!({"kinds": [1]})]).await;
    assert!(got.is_empty());
    assert_eq!(end[0], "CLOSED", "{end}");
    assert!(
        end[2]
            .as_str()
            .expect("reason")
            .starts_with("rate-limited:"),
        "{end}"
    );
    // An API key lifts the limit.
    for key in ["secret-key-one", "secret-key-two"] {
        let (status, _, body, _) = http_full(
            &served.addr,
            "/v1/count?kinds=1",
            &[("Authorization", format!("Bearer {key}"))],
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // A wrong one is 401 with what to do, and the challenge header.
    let (status, hdrs, body, _) = http_full(
        &served.addr,
        "/v1/count?kinds=1",
        &[("Authorization", "Bearer secret-key-three".into())],
    );
    assert_eq!(status, 401);
    assert!(header(&hdrs, "www-authenticate").is_some());
    assert!(
        String::from_utf8_lossy(&body).contains("api_keys_file"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // NIP-98 from the trusted pubkey, for this exact URL and method.
    let now = now_secs();
    let url = format!("http://{}/v1/count?kinds=1", served.addr);
    let (status, _, body, _) = http_full(
        &served.addr,
        "/v1/count?kinds=1",
        &[("Authorization", nip98(&trusted, &url, now))],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // ... but not for another URL, nor an old one: 401 naming why.
    for (auth, why) in [
        (
            nip98(
                &trusted,
                &format!("http://{}/v1/count?kinds=2", served.addr),
                now,
            ),
            "not this request's URL",
        ),
        (nip98(&trusted, &url, now - 600), "created_at"),
    ] {
        let (status, _, body, _) = http_full(
            &served.addr,
            "/v1/count?kinds=1",
            &[("Authorization", auth)],
        );
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains(why), "{body}");
    }
    // A valid event from a pubkey nobody trusts is served as anonymous: still limited.
    let (status, _, _, _) = http_full(
        &served.addr,
        "/v1/count?kinds=1",
        &[("Authorization", nip98(&stranger, &url, now))],
    );
    assert_eq!(status, 429);
    // The refusals are counted.
    let (status, _, text, _) = http_full(
        &served.addr,
        "/metrics",
        &[("Authorization", "Bearer secret-key-one".into())],
    );
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&text);
    let limited: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bigbrotr_serve_rate_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rate_limited metric");
    assert!(limited >= 3, "{limited}");
}

/// `/v1/export` streams every match as NDJSON, newest first, as one well-ended chunked body;
/// resumed after any line it gives exactly the rest; `versions=all` gives every version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_streams_every_match_and_resumes_after_a_cut() {
    let events = corpus(1500, 4, 21);
    let served = Served::start(&events, "");
    let lines = |target: &str| -> Vec<Event> {
        let (status, hdrs, body, complete) = http_full(&served.addr, target, &[]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(header(&hdrs, "content-type"), Some("application/x-ndjson"));
        assert!(
            complete,
            "the export of {target} did not end as a whole body"
        );
        String::from_utf8(body)
            .expect("utf8")
            .lines()
            .map(|l| parse_event(&serde_json::from_str(l).expect("a JSON event per line")))
            .collect()
    };
    let query = |f: bigbrotr::protocol::Filter, all: bool| Query {
        filters: vec![f],
        all_versions: all,
        ..Query::default()
    };
    // Everything (more than one 64 KiB chunk), latest versions.
    let all = lines("/v1/export");
    let want = conformance::expected(&events, &query(Default::default(), false));
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    // Every version.
    let every = lines("/v1/export?versions=all");
    assert_eq!(every.len(), events.len());
    assert!(every.len() > all.len(), "the corpus has replaced versions");
    // Resumed after any line: exactly the rest, nothing skipped or repeated.
    for at in [0, all.len() / 3, all.len() - 2] {
        let cut = bigbrotr::query::Position::of(&all[at]).encode();
        let rest = lines(&format!("/v1/export?after={cut}"));
        assert_eq!(
            rest.iter().map(|e| e.id).collect::<Vec<_>>(),
            want[at + 1..].to_vec()
        );
    }
    // A filter, and a limit capping the whole export.
    let kind1 = lines("/v1/export?kinds=1");
    let want1 = conformance::expected(
        &events,
        &query(
            bigbrotr::protocol::Filter {
                kinds: vec![1],
                ..Default::default()
            },
            false,
        ),
    );
    assert_eq!(kind1.iter().map(|e| e.id).collect::<Vec<_>>(), want1);
    assert_eq!(lines("/v1/export?kinds=1&limit=7").len(), 7);
    // Bad input is a problem, not a stream.
    let (status, _, body, _) = http_full(&served.addr, "/v1/export?kinds=x", &[]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

/// `/v1/stats`: events per kind and per day as written (every stored version, each once), and
/// relays by status, software, network and NIP from the monitor's records; the status page
/// shows events per day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_events_per_kind_and_day_and_relays_by_what_they_run() {
    let mut events = corpus(500, 3, 5);
    let now = now_secs();
    // A few dated today, so the default 30 days hold some.
    let today: Vec<Event> = corpus(40, 2, 6)
        .into_iter()
        .map(|e| {
            let raw = support::raw_event::sign_event(
                &nostr::Keys::parse(&format!("{:064x}", 9)).expect("key"),
                now - 10,
                1,
                Vec::new(),
                &format!("today {}", hex::encode(e.id)),
            );
            parse_event(&serde_json::from_str(&raw.to_json()).expect("json"))
        })
        .collect();
    events.extend(today.iter().cloned());
    let served = served_with_relays(&events, now);
    let (status, body) = rest_get(&served, "/v1/stats", &[("days", "3660".into())]);
    assert_eq!(status, 200, "{body}");
    let mut per_kind = std::collections::BTreeMap::<u64, u64>::new();
    let mut per_day = std::collections::BTreeMap::<u64, u64>::new();
    for e in &events {
        *per_kind.entry(u64::from(e.kind)).or_default() += 1;
        *per_day.entry(e.created_at / 86_400).or_default() += 1;
    }
    let got_kinds: std::collections::BTreeMap<u64, u64> = body["events"]["per_kind"]
        .as_array()
        .expect("per_kind")
        .iter()
        .map(|r| {
            (
                r["kind"].as_u64().expect("kind"),
                r["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(got_kinds, per_kind);
    assert_eq!(body["events"]["total"], events.len());
    let got_days: Vec<u64> = body["events"]["per_day"]
        .as_array()
        .expect("per_day")
        .iter()
        .map(|r| r["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(got_days, per_day.values().copied().collect::<Vec<_>>());
    let relays = &body["relays"];
    assert_eq!(relays["total"], 5, "{relays}");
    assert_eq!(
        relays["by_software"],
        serde_json::json!([{"software": "strfry", "count": 2}, {"software": "unknown", "count": 2}, {"software": "nostr-rs-relay", "count": 1}])
    );
    assert_eq!(
        relays["by_nip"],
        serde_json::json!([{"nip": 1, "count": 3}, {"nip": 11, "count": 2}, {"nip": 77, "count": 1}])
    );
    let networks: Vec<(String, u64)> = relays["by_network"]
        .as_array()
        .expect("by_network")
        .iter()
        .map(|r| {
            (
                r["network"].as_str().expect("net").to_string(),
                r["count"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        networks,
        vec![("clearnet".to_string(), 4), ("tor".to_string(), 1)]
    );
    // The default window (30 days) holds only today's events.
    let (status, body) = rest_get(&served, "/v1/stats", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        body["events"]["per_day"],
        serde_json::json!([{"day": bigbrotr::timefmt::date((now / 86_400) as i64), "count": today.len()}])
    );
    let (status, _) = rest_get(&served, "/v1/stats", &[("days", "0".into())]);
    assert_eq!(status, 400);
    // The status page shows today's count in its events-per-day table.
    let (status, page) = served.http_get("/", "text/html").expect("page");
    assert_eq!(status, 200);
    let table = page.split("id=\"per-day\"").nth(1).expect("per-day table");
    assert!(
        table.contains(&format!(
            "<td>{}</td><td>{}</td>",
            bigbrotr::timefmt::date((now / 86_400) as i64),
            today.len()
        )),
        "{table}"
    );
}

/// A node whose store holds `events` (from two relays never checked) and whose state knows
/// three more relays (two clearnet strfry, one onion nostr-rs-relay, only the first online)
/// with their NIP-11 checks, serving.
fn served_with_relays(events: &[Event], now: u64) -> Served {
    use bigbrotr::store::health::{CheckKind, CheckOutcome, Schedule};
    let addr = format!("127.0.0.1:{}", free_port());
    let node = Node::new(&format!(
        "[serve]\nlisten = \"{addr}\"\nrate_limit_per_minute = 0\nname = \"Test <node> & co\"\n"
    ));
    std::fs::create_dir_all(node.data_dir()).expect("data dir");
    let state = bigbrotr::store::State::open(&node.data_dir().join("state.sqlite")).expect("state");
    let policy = bigbrotr::protocol::url::UrlPolicy {
        allow_local: true,
        ..Default::default()
    };
    {
        // Two relays the events came from (never checked by the monitor: status unknown),
        // bound to the same ids in the event store as in the registry.
        let store = EventStore::open(
            &node.data_dir().join("events"),
            &EventStoreOptions::default(),
        )
        .expect("store");
        let mut ids = Vec::new();
        for url in ["wss://relay.example.org", "wss://relay2.example.org"] {
            let u = bigbrotr::protocol::url::parse_relay_url(url, &policy).expect("url");
            let (id, _) = state.add_relay(&u, "test").expect("add");
            store.bind_relay(id, url).expect("bind");
            ids.push(id);
        }
        for page in events.chunks(200) {
            store
                .write_page(ids[0], 1, page, &vec![false; page.len()], None)
                .expect("write");
        }
        // The same events from the second relay are sightings, not new events.
        let n = events.len().min(100);
        store
            .write_page(ids[1], 2, &events[..n], &vec![false; n], None)
            .expect("write");
    }
    let sched = Schedule {
        open_secs: 300,
        nip11_secs: 3600,
        nip66_secs: 7200,
        failure_threshold: 3,
        max_backoff_secs: 86_400,
    };
    for (url, software, nips) in [
        (
            "wss://a.example.org",
            "strfry",
            serde_json::json!([1, 11, 77]),
        ),
        ("wss://b.example.org", "strfry", serde_json::json!([1, 11])),
        (
            "ws://c2v4r5ts7icalkvxpqzyfxdqqm3lbw7rakupaedkimizcftubpifweqd.onion",
            "nostr-rs-relay",
            serde_json::json!([1]),
        ),
    ] {
        let u = bigbrotr::protocol::url::parse_relay_url(url, &policy).expect("url");
        let (id, _) = state.add_relay(&u, "test").expect("add");
        let nip11 = CheckOutcome {
            ok: true,
            software: Some(software.into()),
            document: serde_json::json!({"software": software, "supported_nips": nips}),
            ..Default::default()
        };
        state
            .record_check(id, CheckKind::Nip11, now as i64 - 60, &nip11, &sched)
            .expect("record");
        let open = CheckOutcome {
            ok: url.starts_with("wss://a"),
            open_ms: Some(42),
            document: serde_json::json!({}),
            ..Default::default()
        };
        state
            .record_check(id, CheckKind::Open, now as i64 - 30, &open, &sched)
            .expect("record");
    }
    drop(state);
    Served::serve(node, addr)
}

/// The REST API against its own OpenAPI document, with schemathesis (PyPI; scripts/bootstrap
/// installs it): generated requests for every route, valid and invalid, and no answer may be a
/// 5xx, an undocumented status, content type or header, or a body outside its schema, and
/// every request outside the schema must be refused.
#[test]
fn the_rest_api_answers_as_its_openapi_document_says() {
    let Some(tool) = web_tool("BIGBROTR_SCHEMATHESIS") else {
        return;
    };
    support::ns::in_netns(async move {
        let now = now_secs();
        let served = served_with_relays(&corpus(300, 3, 17), now);
        // The document itself first: every route, OpenAPI 3.1.
        let (status, doc) = rest_get(&served, "/v1/openapi.json", &[]);
        assert_eq!(status, 200);
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/v1/events",
            "/v1/events/{id}",
            "/v1/count",
            "/v1/export",
            "/v1/stats",
            "/v1/status",
            "/v1/relays",
            "/v1/relay",
            "/health",
            "/metrics",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path} missing");
        }
        let out = std::process::Command::new(tool)
            .args([
                "run",
                &format!("http://{}/v1/openapi.json", served.addr),
                "--url",
                &format!("http://{}", served.addr),
                // Every check but one: a filter is given whole (`filter=`) or as parameters,
                // not both, which OpenAPI cannot say, so "schema-valid" requests that give
                // both are rightly refused.
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "40",
                "--workers",
                "2",
                "--seed",
                "12",
                "--no-color",
            ])
            .current_dir(std::env::temp_dir())
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env(
                "HYPOTHESIS_STORAGE_DIRECTORY",
                std::env::temp_dir().join("bigbrotr-hypothesis"),
            )
            .output()
            .expect("run schemathesis");
        let report = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "schemathesis found problems:\n{report}"
        );
        assert!(report.contains("passed"), "{report}");
        eprintln!("{report}");
    });
}

/// The status page in a real headless Chromium (Debian's `chromium`): the DOM it built shows
/// the relays, the figures and events per day, with the relay-controlled text escaped; a
/// phone-sized screenshot is kept as a test artifact.
#[test]
fn the_status_page_renders_in_a_real_browser() {
    let Some(browser) = web_tool("BIGBROTR_CHROMIUM") else {
        return;
    };
    support::ns::in_netns(async move {
        let now = now_secs();
        let served = served_with_relays(&corpus(200, 2, 4), now);
        let profile = tempfile::tempdir().expect("profile");
        let chromium = |extra: &[&str]| {
            std::process::Command::new(&browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=412,1400",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(extra)
                .arg(format!("http://{}/", served.addr))
                .output()
                .expect("run chromium")
        };
        let out = chromium(&["--dump-dom"]);
        let dom = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && dom.contains("</html>"),
            "chromium: {}\n{dom}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The name, escaped by the server, is text in the DOM (a parsed <node> would be an element).
        assert!(dom.contains("<h1>Test &lt;node&gt; &amp; co</h1>"), "{dom}");
        let relays = dom.split("id=\"relays\"").nth(1).expect("relays table");
        for url in ["wss://a.example.org", "wss://b.example.org", ".onion"] {
            assert!(relays.contains(url), "{url} not on the page");
        }
        assert!(relays.contains("class=\"online\""), "a is online");
        let figures = dom.split("id=\"figures\"").nth(1).expect("figures");
        assert!(
            figures.contains("<b>200</b>") || figures.contains(">200<"),
            "events stored: {figures}"
        );
        assert!(figures.contains("1 of 5"), "relays online: {figures}");
        assert!(dom.contains("id=\"per-day\""), "events per day");
        assert!(dom.contains("http-equiv=\"refresh\""), "refreshes itself");
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let _ = std::fs::remove_file(&shot);
        let out = chromium(&[&format!("--screenshot={}", shot.display())]);
        let png = std::fs::read(&shot).unwrap_or_else(|e| {
            panic!(
                "no screenshot ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "a real image, {} bytes",
            png.len()
        );
        eprintln!("status page screenshot: {}", shot.display());
    });
}

/// A program the web tests need, from `var` (scripts/test sets it). Without it they skip,
/// loudly, unless `BIGBROTR_REQUIRE_WEB_TOOLS` says they must run (as in CI).
fn web_tool(var: &str) -> Option<std::path::PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(p.into()),
        _ => {
            assert!(
                std::env::var_os("BIGBROTR_REQUIRE_WEB_TOOLS").is_none(),
                "BIGBROTR_REQUIRE_WEB_TOOLS is set but {var} is not (scripts/test sets it)"
            );
            eprintln!("skipped: {var} is not set (scripts/test sets it)");
            None
        }
    }
}

/// A real client library (rust-nostr's nostr-sdk) against a node serving itself while it
/// archives a relay: it fetches (REQ) exactly what the node archived, COUNTs it (NIP-45),
/// receives new events live, and a NIP-77 reconciliation from a client that holds half of
/// them downloads exactly the other half. `run` syncs, so this runs in a loopback-only
/// network namespace.
#[test]
fn a_real_nostr_client_fetches_counts_follows_and_reconciles() {
    use nostr_sdk::prelude::{
        Client, Filter as SdkFilter, Kind, MemoryDatabase, MemoryDatabaseOptions,
        RelayPoolNotification, SyncDirection, SyncOptions,
    };
    support::ns::in_netns(async {
        let authors = keys(4);
        let now = now_secs();
        let stored = notes(400, &authors, |i| now - 5_000 + i as u64 * 3);
        let relay = local_relay(&stored, RelayOpts::default()).await;
        let served = Served::running(&relay.url, "", &[]);
        // Wait until the node has archived the relay's 400 events.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = served.http_get("/v1/count?kinds=1", "") {
                if body.contains("\"count\":400") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the node did not archive 400 events in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let url = format!("ws://{}", served.addr);
        let ids = |evs: &[nostr::Event]| -> std::collections::BTreeSet<String> {
            evs.iter().map(|e| e.id.to_hex()).collect()
        };
        // A client holding `held`, connected to the node.
        let client_with = |held: &'static [nostr::Event]| {
            let url = url.clone();
            async move {
                let db = MemoryDatabase::with_opts(MemoryDatabaseOptions {
                    events: true,
                    max_events: None,
                });
                let client = Client::builder().database(db).build();
                for ev in held {
                    client.database().save_event(ev).await.expect("save");
                }
                client.add_relay(url.as_str()).await.expect("add relay");
                let connected = client.try_connect(Duration::from_secs(10)).await;
                assert!(connected.failed.is_empty(), "{:?}", connected.failed);
                client
            }
        };
        let older: &'static [nostr::Event] = Vec::leak(stored[..200].to_vec());
        let client = client_with(older).await;
        let kind1 = SdkFilter::new().kind(Kind::TextNote);
        // REQ: everything the node archived.
        let fetched = client
            .fetch_events(kind1.clone(), Duration::from_secs(20))
            .await
            .expect("fetch");
        let fetched: Vec<nostr::Event> = fetched.into_iter().collect();
        assert_eq!(ids(&fetched), ids(&stored));
        // COUNT.
        let r = client.relay(url.as_str()).await.expect("relay");
        let n = r
            .count_events(kind1.clone(), Duration::from_secs(10))
            .await
            .expect("count");
        assert_eq!(n, 400);
        // NIP-77 with a second client that holds the older half only.
        let half = client_with(older).await;
        let opts = SyncOptions::default()
            .direction(SyncDirection::Down)
            .initial_timeout(Duration::from_secs(10));
        let out = half.sync(kind1.clone(), &opts).await.expect("sync");
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        let received: std::collections::BTreeSet<String> =
            out.received.iter().map(|id| id.to_hex()).collect();
        assert_eq!(received, ids(&stored[200..]), "exactly the missing half");
        assert!(
            out.local.is_empty(),
            "the node has everything the client has"
        );
        let local = half.database().count(kind1.clone()).await.expect("count");
        assert_eq!(local, 400);
        half.shutdown().await;
        // Live: subscribed from now, new events published to the relay arrive through the node.
        let mut notifications = client.notifications();
        let sub = client
            .subscribe(
                SdkFilter::new()
                    .kind(Kind::TextNote)
                    .since(nostr::Timestamp::from(now)),
                None,
            )
            .await
            .expect("subscribe")
            .val;
        let fresh = notes(50, &authors, |i| now + 1 + i as u64 / 10);
        for ev in &fresh {
            relay.add(ev).await;
        }
        let want = ids(&fresh);
        let mut got = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "live: {} of {} arrived in 60 s",
                got.len(),
                want.len()
            );
            match tokio::time::timeout(left, notifications.recv()).await {
                Ok(Ok(RelayPoolNotification::Event {
                    subscription_id,
                    event,
                    ..
                })) if subscription_id == sub => {
                    got.insert(event.id.to_hex());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("notifications: {e}"),
                Err(_) => {}
            }
        }
        assert_eq!(got, want);
        client.shutdown().await;
    });
}

/// Hostile clients at scale against a node serving itself while it syncs: thousands of
/// subscriptions, huge filters and messages, a reader that never reads, slowloris, a request
/// flood. Every answer is a refusal (CLOSED, 429) or a closed connection, the node's memory
/// stays bounded, and meanwhile it archives everything its relay publishes and answers a
/// client with an API key. `run` syncs, so this runs in a loopback-only network namespace.
#[test]
fn hostile_clients_are_refused_while_the_node_keeps_syncing() {
    support::ns::in_netns(async {
        let authors = keys(3);
        let now = now_secs();
        let relay = local_relay(&[], RelayOpts::default()).await;
        let served = Served::running(
            &relay.url,
            "max_connections = 400\nmax_subscriptions = 20\nrate_limit_per_minute = 600\nrate_limit_burst = 300\nheader_timeout_secs = 2\nwrite_timeout_secs = 2\noutbound_buffer_kb = 64\n",
            &[("BIGBROTR_API_KEYS", "honest-key")],
        );
        let pid = served.pid();
        let key = [("Authorization", "Bearer honest-key".to_string())];
        let addr = served.addr.clone();

        // 1. Thousands of subscriptions: 40 connections x 60 REQs.
        let subs = tokio::spawn({
            let url = format!("ws://{addr}/");
            async move {
                let mut tasks = Vec::new();
                for c in 0..40 {
                    let url = url.clone();
                    tasks.push(tokio::spawn(async move {
                        // The upgrade itself may find the address's bucket empty: 429.
                        let mut ws = match tokio_tungstenite::connect_async(&url).await {
                            Ok((ws, _)) => ws,
                            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                                assert_eq!(r.status(), 429, "upgrade refused with {}", r.status());
                                return None;
                            }
                            Err(e) => panic!("ws: {e}"),
                        };
                        for i in 0..60 {
                            send(&mut ws, serde_json::json!(["REQ", format!("c{c}s{i}"), {"kinds": [1], "limit": 1}])).await;
                        }
                        let (mut eose, mut closed) = (0, 0);
                        while eose + closed < 60 {
                            let Some(v) = next_json(&mut ws).await else { break };
                            match v[0].as_str() {
                                Some("EOSE") => eose += 1,
                                Some("CLOSED") => {
                                    let why = v[2].as_str().unwrap_or("");
                                    assert!(why.starts_with("blocked:") || why.starts_with("rate-limited:"), "{v}");
                                    closed += 1
                                }
                                _ => {}
                            }
                        }
                        Some((eose, closed))
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("subscriber"));
                }
                out
            }
        });
        // 2. Huge filters and messages (with the API key: the filter limits refuse them, not
        // the rate limit).
        // A websocket opened with the API key.
        let keyed = |addr: String| async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{addr}/")
                .into_client_request()
                .expect("request");
            request.headers_mut().insert(
                "authorization",
                "Bearer honest-key".parse().expect("header"),
            );
            tokio_tungstenite::connect_async(request)
                .await
                .expect("ws")
                .0
        };
        let huge = {
            let opened = keyed(addr.clone());
            async move {
                let mut ws = opened.await;
                let values: Vec<String> = (0..1500).map(|i| format!("v{i}")).collect();
                send(&mut ws, serde_json::json!(["REQ", "wide", {"#t": values}])).await;
                let v = next_json(&mut ws).await.expect("an answer");
                assert_eq!(v[0], "CLOSED", "{v}");
                assert!(v[2].as_str().unwrap_or("").starts_with("invalid:"), "{v}");
                let filters: Vec<Value> = (0..50).map(|_| serde_json::json!({})).collect();
                let mut msg = vec![Value::from("REQ"), Value::from("many")];
                msg.extend(filters);
                send(&mut ws, Value::Array(msg)).await;
                let v = next_json(&mut ws).await.expect("an answer");
                assert_eq!(v[0], "CLOSED", "{v}");
                // 300 KB in one message: the connection is closed.
                let _ = ws
                    .send(Message::text(format!(
                        "[\"REQ\",\"x\",{{\"#t\":[\"{}\"]}}]",
                        "y".repeat(300 << 10)
                    )))
                    .await;
                assert!(
                    next_json(&mut ws).await.is_none(),
                    "an oversized message closes the connection"
                );
            }
        };
        // 3. A reader that never reads: asks for everything, reads nothing, holds on (with the
        // API key, so the rate limit cannot refuse it first).
        let mut stalled = keyed(addr.clone()).await;
        send(
            &mut stalled,
            serde_json::json!(["REQ", "all", {"limit": 5000}]),
        )
        .await;
        // 4. Slowloris: 100 connections that start a request and never finish it.
        let slow = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || {
                let mut conns: Vec<std::net::TcpStream> = (0..100)
                    .map(|_| {
                        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                            .expect("write");
                        s.set_read_timeout(Some(Duration::from_secs(15)))
                            .expect("timeout");
                        s
                    })
                    .collect();
                // Each is cut off by serve.header_timeout_secs (2 s), never answered.
                for s in &mut conns {
                    let mut buf = [0u8; 256];
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => {}
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]).to_string();
                            assert!(
                                text.starts_with("HTTP/1.1 408") || text.is_empty(),
                                "{text}"
                            );
                        }
                    }
                }
            }
        });
        // 5. A request flood from one address.
        let flood = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || {
                let (mut ok, mut limited) = (0, 0);
                for _ in 0..1500 {
                    let (status, hdrs, _, _) = http_full(&addr, "/v1/count?kinds=1", &[]);
                    match status {
                        200 => ok += 1,
                        429 => {
                            assert!(header(&hdrs, "retry-after").is_some());
                            limited += 1
                        }
                        other => panic!("flood answered {other}"),
                    }
                }
                (ok, limited)
            }
        });
        // Meanwhile the relay publishes: the node must archive all of it.
        let fresh = notes(300, &authors, |i| now + i as u64 / 50);
        for ev in &fresh {
            relay.add(ev).await;
        }
        huge.await;
        let per_conn: Vec<(usize, usize)> = subs
            .await
            .expect("subscribers")
            .into_iter()
            .flatten()
            .collect();
        for (eose, closed) in &per_conn {
            assert_eq!(eose + closed, 60, "every REQ answered");
            assert!(*eose <= 20, "at most serve.max_subscriptions open: {eose}");
        }
        slow.await.expect("slowloris");
        let (ok, limited) = flood.await.expect("flood");
        assert!(limited > 1000, "flood: {ok} served, {limited} limited");
        let opened: usize = per_conn.iter().map(|c| c.0).sum();
        eprintln!(
            "hostile: {} of 40 subscribing connections upgraded (the rest 429), {opened} subscriptions opened, the rest CLOSED; flood {ok} served, {limited} answered 429",
            per_conn.len()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _, body, _) = http_full(&served.addr, "/v1/count?kinds=1", &key);
            assert_eq!(status, 200, "the API key lifts the limit even now");
            let n: Value = serde_json::from_slice(&body).expect("json");
            if n["count"] == 300 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node archived {n} of 300 while under attack"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let hwm = support::bench::vm_hwm_kib(pid);
        eprintln!("node peak RSS under attack: {} MiB", hwm >> 10);
        assert!(hwm < 256 << 10, "peak RSS {} MiB", hwm >> 10);
        drop(stalled);
    });
}
