//! `bigbrotr monitor --relay URL --once`: NIP-11 and NIP-66 round trips against real relay
//! software and the in-repo hostile relay, all on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use nostr_relay_builder::prelude::*;
use support::hostile::{HostileRelay, Options};
use support::*;

fn monitor(node: &Node, url: &str) -> (std::process::Output, serde_json::Value) {
    let out = node.run(&["monitor", "--relay", url, "--once", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_read_write_against_real_relay_software() {
    let relay = local_relay(
        &notes(3, &keys(1), |i| 1_700_000_000 + i as u64),
        RelayOpts::default(),
    )
    .await;
    let node = std::sync::Arc::new(Node::new("[monitor]\ncheck_timeout_secs = 5\n"));
    let (n2, url) = (node.clone(), relay.url.clone());
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&n2, &url))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rtt = &v["rtt"];
    for k in ["open_ms", "read_ms", "write_ms"] {
        assert!(rtt[k].as_u64().is_some(), "{k}: {v}");
    }
    assert_eq!(rtt["write_read_back"], true, "{v}");
    assert!(rtt["errors"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        rtt["read_policy"].is_null() && rtt["write_policy"].is_null(),
        "{v}"
    );
    // Twice: the write test is addressable, so the relay keeps one test event per monitor.
    let (n3, url) = (node.clone(), relay.url.clone());
    let (out, _) = tokio::task::spawn_blocking(move || monitor(&n3, &url))
        .await
        .unwrap();
    assert!(out.status.success());
    let stored = relay
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(30078u16)))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one write-test event per monitor key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_answers_are_facts_not_failures() {
    let relay = HostileRelay::start(
        vec![],
        Options {
            closed_reason: Some("auth-required: members only".into()),
            ..Options::default()
        },
    )
    .await;
    let node = Node::new("[monitor]\ncheck_timeout_secs = 3\n");
    let url = relay.url();
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["rtt"]["read_policy"], "auth-required", "{v}");
    assert_eq!(v["rtt"]["write_policy"], "blocked", "{v}");
    assert!(v["rtt"]["read_ms"].is_null());
}

/// A relay that accepts the websocket and never answers, and one that trickles NOTICEs byte by
/// byte and never answers: the read step ends at its bound either way, the open is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_times_out_and_unreachable_relay_fails() {
    let silent = Options {
        never_eose: true,
        ..Options::default()
    };
    let trickle = Options {
        never_eose: true,
        notice_flood: 1_000_000,
        drip: Some(Duration::from_millis(2)),
        ..Options::default()
    };
    for opts in [silent, trickle] {
        let relay = HostileRelay::start(vec![], opts).await;
        let node = Node::new("[monitor]\ncheck_timeout_secs = 2\n");
        let url = relay.url();
        let t = Instant::now();
        let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "every wait is bounded"
        );
        assert!(out.status.success(), "open worked: {}", stderr(&out));
        let errors = v["rtt"]["errors"].to_string();
        assert!(errors.contains("read: no EOSE within 2000 ms"), "{v}");
    }

    // Nothing listens on port 1: the check fails, naming the step.
    let node = Node::new("");
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, "ws://127.0.0.1:1"))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        v["rtt"]["errors"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("open:"),
        "{v}"
    );
}

/// A tiny HTTP server on `ip`: `GET /doc` answers a NIP-11 document; any other path a 301 to
/// `redirect_to` (`{port}` replaced by this server's port). Counts connections.
async fn http_server(
    ip: &str,
    redirect_to: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let hostile = |status: &str, headers: &str, body: &str| {
                    format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n{body}")
                };
                let resp = match path {
                    // 50 MiB announced and streamed: the 1 MiB cap stops it.
                    "/big" => {
                        let _ = s
                            .write_all(
                                hostile("200 OK", "Content-Length: 52428800\r\n", "").as_bytes(),
                            )
                            .await;
                        let chunk = vec![b' '; 64 * 1024];
                        for _ in 0..800 {
                            if s.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    // Headers, then a body that never finishes.
                    "/hang" => {
                        let _ = s
                            .write_all(
                                hostile("200 OK", "Content-Length: 100\r\n", "{\"name\":")
                                    .as_bytes(),
                            )
                            .await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    "/bad" => hostile("200 OK", "Content-Length: 9\r\n", "{not json"),
                    // Valid, under the 1 MiB fetch cap, over the 64 KiB the history keeps.
                    "/large" => {
                        let body = format!(
                            r#"{{"name":"large","description":"{}","supported_nips":[1,11]}}"#,
                            "x".repeat(100_000)
                        );
                        hostile(
                            "200 OK",
                            &format!("Content-Length: {}\r\n", body.len()),
                            &body,
                        )
                    }
                    "/types" => {
                        let body = r#"{"name":["x"],"supported_nips":"all","limitation":{"max_limit":"40"}}"#;
                        hostile(
                            "200 OK",
                            &format!("Content-Length: {}\r\n", body.len()),
                            body,
                        )
                    }
                    _ => String::new(),
                };
                if !resp.is_empty() {
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                    return;
                }
                let resp = if path == "/doc" {
                    let body = r#"{"name":"redirected","supported_nips":[1,11]}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/nostr+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    let to = redirect_to.replace("{port}", &port.to_string());
                    format!("HTTP/1.1 301 Moved\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                };
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_redirects_are_followed_and_rechecked_against_the_ssrf_policy() {
    use std::sync::atomic::Ordering;
    // Followed: a relative redirect on the same (allowed) host.
    let (port, _) = http_server("127.0.0.1", "/doc").await;
    let node = Node::new("");
    let url = format!("ws://127.0.0.1:{port}/");
    let (_, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert_eq!(v["nip11"]["name"], "redirected", "{v}");

    // Refused: only 127.0.0.1 is allowed; the redirect points at 127.0.0.2, which is never
    // dialed (a listener there counts connections).
    let (other, other_hits) = http_server("127.0.0.2", "/doc").await;
    let to: &'static str = Box::leak(format!("http://127.0.0.2:{other}/doc").into_boxed_str());
    let (port, _) = http_server("127.0.0.1", to).await;
    let node = Node::new("");
    let cfg = std::fs::read_to_string(&node.config).unwrap().replace(
        "allow_local = true",
        "allow_local = false\nallow_hosts = [\"127.0.0.1\"]",
    );
    std::fs::write(&node.config, cfg).unwrap();
    let url = format!("ws://127.0.0.1:{port}/");
    let (_, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    let err = v["nip11_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("redirect to") && err.contains("refused"),
        "{v}"
    );
    assert_eq!(
        other_hits.load(Ordering::Relaxed),
        0,
        "127.0.0.2 was never dialed"
    );

    // An allow-listed host, but another port on it: not followed (no local port scanning).
    let (port2, hits2) = http_server("127.0.0.1", "/doc").await;
    let to: &'static str = Box::leak(format!("http://127.0.0.1:{port2}/doc").into_boxed_str());
    let (port, _) = http_server("127.0.0.1", to).await;
    let node = Node::new("");
    let url = format!("ws://127.0.0.1:{port}/");
    let (_, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    let err = v["nip11_error"].as_str().unwrap_or_default();
    assert!(err.contains("same host and port"), "{v}");
    assert_eq!(
        hits2.load(Ordering::Relaxed),
        0,
        "the other port was never dialed"
    );

    // A redirect loop ends after a few hops.
    let (port, hits) = http_server("127.0.0.1", "/loop").await;
    let node = Node::new("");
    let url = format!("ws://127.0.0.1:{port}/");
    let (_, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(
        v["nip11_error"]
            .as_str()
            .unwrap_or_default()
            .contains("more than 3 redirects"),
        "{v}"
    );
    // 4 GETs for NIP-11 plus the websocket attempt.
    assert_eq!(hits.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nip11_documents_are_recorded_within_the_timeout() {
    let (port, _) = http_server("127.0.0.1", "/doc").await;
    for (path, want) in [
        ("big", "1048576"),
        ("hang", "within"),
        ("bad", "invalid NIP-11 document"),
    ] {
        let node = std::sync::Arc::new(Node::new("[monitor]\ncheck_timeout_secs = 2\n"));
        let url = format!("ws://127.0.0.1:{port}/{path}");
        let t = Instant::now();
        let (n2, u2) = (node.clone(), url.clone());
        let (_, v) = tokio::task::spawn_blocking(move || monitor(&n2, &u2))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{path}: bounded");
        let err = v["nip11_error"].as_str().unwrap_or_default();
        assert!(!err.is_empty() && err.contains(want), "{path}: {v}");
        // A recorded fact: the failure is in the relay's history, nothing else was stored.
        let show = json_of(&node.run(&["relays", "show", &url, "--json"]));
        let recorded = show["health"]["nip11_error"].as_str().unwrap_or_default();
        assert!(recorded.contains(want), "{path}: {show}");
        assert!(show["nip11"].is_null(), "{path}: no document kept: {show}");
        let kinds = history_kinds(&show);
        assert!(
            kinds.contains(&"nip11") && kinds.contains(&"nip66"),
            "{kinds:?}"
        );
    }
    // A large but valid document: parsed, but the history keeps a summary, not 100 KB per fetch.
    let node = Node::new("");
    let url = format!("ws://127.0.0.1:{port}/large");
    let node = tokio::task::spawn_blocking(move || {
        let (_, v) = monitor(&node, &url);
        assert_eq!(v["nip11"]["name"], "large", "{v}");
        let show = json_of(&node.run(&["relays", "show", &url, "--json"]));
        assert_eq!(show["nip11"]["truncated"], true, "{show}");
        assert_eq!(show["nip11"]["name"], "large");
        assert!(show["nip11"]["bytes"].as_u64().unwrap() > 100_000);
        assert!(
            show.to_string().len() < 20_000,
            "no 100 KB description kept"
        );
        node
    })
    .await
    .unwrap();
    drop(node);
    // Wrong field types: lenient parsing keeps what it can (max_limit served as a string).
    let node = Node::new("");
    let url = format!("ws://127.0.0.1:{port}/types");
    let (_, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(v["nip11_error"].is_null(), "{v}");
    assert_eq!(v["nip11"]["limitation"]["max_limit"], 40, "{v}");
    assert!(v["nip11"]["name"].is_null(), "{v}");
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The scheduled state: a sweep of every registered relay, history, status with a failure
/// threshold, uptime, and `relays list` / `relays show` answering from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_keep_status_history_and_uptime() {
    let real = local_relay(
        &notes(2, &keys(1), |i| 1_700_000_000 + i as u64),
        RelayOpts::default(),
    )
    .await;
    let doc = r#"{"name":"hostile but documented","software":"git+https://example.invalid/relay","version":"1.2.3","supported_nips":[1,11,66]}"#;
    let documented = HostileRelay::serving_nip11(doc).await;
    let dead = "ws://127.0.0.1:1";
    let node = std::sync::Arc::new(Node::new(
        "[monitor]\ncheck_timeout_secs = 3\nfailure_threshold = 2\n",
    ));
    for url in [real.url.as_str(), documented.url().as_str(), dead] {
        assert!(node.run(&["relays", "add", url]).status.success());
    }
    for round in 1..=3 {
        let n = node.clone();
        let out = tokio::task::spawn_blocking(move || n.run(&["monitor", "--once", "--json"]))
            .await
            .unwrap();
        let v = json_of(&out);
        let reports = v.as_array().expect("one report per relay");
        assert_eq!(reports.len(), 3, "{v}");
        let status = |u: &str| {
            row_for(&v, u)
                .map(|r| r["status"].as_str().unwrap_or("").to_string())
                .unwrap()
        };
        assert_eq!(status(&real.url), "online");
        assert_eq!(status(&documented.url()), "online");
        // Below the threshold a failing relay is not yet offline.
        assert_eq!(
            status(dead),
            if round == 1 { "unknown" } else { "offline" },
            "round {round}"
        );
        // Uptime is a share of watched time (whole seconds): let some pass between sweeps.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let list = json_of(&node.run(&["relays", "list", "--json"]));
    let row = |u: &str| row_for(&list, u).unwrap();
    let r = row(&real.url);
    assert_eq!(r["status"], "online");
    assert_eq!(r["uptime_7d"], 1.0);
    for k in ["open_ms", "read_ms", "write_ms", "checked_at"] {
        assert!(r[k].is_i64(), "{k}: {r}");
    }
    let d = row(dead);
    assert_eq!(
        (d["status"].as_str(), d["failures"].as_i64()),
        (Some("offline"), Some(3))
    );
    assert_eq!(d["uptime_7d"], 0.0);
    assert!(d["last_error"].as_str().unwrap().contains("open"), "{d}");
    assert_eq!(
        row(&documented.url())["software"],
        "git+https://example.invalid/relay"
    );

    let show = json_of(&node.run(&["relays", "show", &documented.url(), "--json"]));
    assert_eq!(show["nip11"]["name"], "hostile but documented", "{show}");
    assert_eq!(show["nip66"]["network"], "clearnet");
    assert_eq!(show["nip66"]["dns"]["literal"], true);
    assert!(show["nip66"]["rtt_open"].is_u64(), "{show}");
    let daily = show["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 1, "{show}");
    assert_eq!(
        (daily[0]["checks"].as_i64(), daily[0]["online"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(daily[0]["uptime"], 1.0, "{show}");
    assert!(daily[0]["up_secs"].as_i64().unwrap() >= 2, "{show}");
    let kinds = history_kinds(&show);
    assert_eq!(
        kinds.iter().filter(|k| **k == "nip11").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "nip66").count(),
        3,
        "{kinds:?}"
    );
    // Three identical NIP-11 documents were stored once.
    let db = rusqlite_count(
        &node,
        "SELECT count(*) FROM monitor_document WHERE data LIKE '%hostile but documented%'",
    );
    assert_eq!(db, 1);
    // The human views name what they show.
    let text = stdout(&node.run(&["relays", "show", &documented.url()]));
    assert!(
        text.contains("uptime by day") && text.contains("100.0%"),
        "{text}"
    );
    let text = stdout(&node.run(&["relays", "list"]));
    assert!(text.contains("offline") && text.contains("1.2.3"), "{text}");
}

fn rusqlite_count(node: &Node, sql: &str) -> i64 {
    node.sqlite(sql)
        .expect("state.sqlite")
        .parse()
        .expect("a count")
}

/// `monitor.publish`: a signed kind 30166 per checked relay and a 10166 announcement, read back
/// from a real relay and checked against NIP-66.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_30166_and_10166_are_read_back_from_a_real_relay() {
    let target = local_relay(&[], RelayOpts::default()).await;
    let doc = r#"{"name":"n","supported_nips":[1,11,42],"limitation":{"payment_required":true}}"#;
    let watched = HostileRelay::serving_nip11(doc).await;
    let node = Node::new(&format!(
        "[monitor]\ncheck_timeout_secs = 3\npublish = true\npublish_relays = [\"{}\"]\n",
        target.url
    ));
    let url = watched.url();
    let out = tokio::task::spawn_blocking(move || {
        node.run(&["monitor", "--relay", &url, "--once", "--json"])
    })
    .await
    .unwrap();
    let v = json_of(&out);
    let found = target
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(30166u16)))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "one 30166 per checked relay");
    let ev = found.first().unwrap();
    ev.verify().expect("valid id and signature");
    let tags: Vec<Vec<String>> = ev.tags.iter().map(|t| t.as_slice().to_vec()).collect();
    let has = |t: &[&str]| tags.iter().any(|x| x == t);
    assert!(has(&["d", &watched.url()]), "{tags:?}");
    assert!(has(&["n", "clearnet"]));
    let open = v["rtt"]["open_ms"].as_u64().unwrap().to_string();
    assert!(has(&["rtt-open", &open]), "{tags:?} vs {v}");
    assert!(has(&["N", "42"]) && has(&["R", "payment"]), "{tags:?}");
    // The hostile relay refuses the write test ("blocked:"): writes are restricted.
    assert!(has(&["R", "writes"]), "{tags:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ev.content).unwrap()["name"],
        "n"
    );
    let ann = target
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(10166u16)))
        .await
        .unwrap();
    let ann = ann.first().expect("a 10166 announcement");
    ann.verify().unwrap();
    assert_eq!(ann.pubkey, ev.pubkey, "same monitor key");
    let tags: Vec<Vec<String>> = ann.tags.iter().map(|t| t.as_slice().to_vec()).collect();
    assert!(tags.iter().any(|t| t == &["frequency", "7200"]), "{tags:?}");
    assert!(
        tags.iter().any(|t| t == &["timeout", "open", "3000"]),
        "{tags:?}"
    );
    assert!(tags.iter().any(|t| t == &["c", "nip11"]), "{tags:?}");
}

/// A wss relay's certificate is described even when it does not verify (self-signed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_facts_describe_the_certificate_of_a_wss_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.der"), dir.path().join("k.der"));
    let pem = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=bigbrotr-test-relay",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:relay.test",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&cert)
        .arg("-keyout")
        .arg(&pem)
        .status()
        .expect("openssl (installed by scripts/bootstrap)");
    assert!(ok.success());
    let ok = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let cert = rustls::pki_types::CertificateDer::from(std::fs::read(&cert).unwrap());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(std::fs::read(&key).unwrap().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(s).await; // handshake, then drop
            });
        }
    });
    let node = Node::new("[monitor]\ncheck_timeout_secs = 3\n");
    let url = format!("wss://127.0.0.1:{port}");
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "the relay session itself refuses the certificate"
    );
    let tls = &v["facts"]["tls"];
    assert_eq!(tls["verified"], false, "{v}");
    assert!(
        tls["verify_error"]
            .as_str()
            .unwrap_or("")
            .contains("UnknownIssuer"),
        "{v}"
    );
    assert!(
        tls["subject"]
            .as_str()
            .unwrap()
            .contains("bigbrotr-test-relay"),
        "{v}"
    );
    let names: Vec<&str> = tls["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names, ["127.0.0.1", "relay.test"]);
    let left = tls["not_after"].as_i64().unwrap() - now_secs() as i64;
    assert!((29 * 86_400..=31 * 86_400).contains(&left), "{v}");
    assert!(tls["handshake_ms"].is_u64(), "{v}");
}

/// Geo and ASN only from operator-supplied MaxMind-format files: recorded with the NIP-66 result
/// and published as the 30166 `g` tag; a bad file is refused at start naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_and_asn_come_from_local_maxmind_files() {
    use support::mmdb::{s, write_ipv4, V};
    let dir = tempfile::tempdir().unwrap();
    let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
    write_ipv4(
        &city,
        [127, 0, 0, 0],
        8,
        V::Map(vec![
            ("country", V::Map(vec![("iso_code", s("DE"))])),
            (
                "city",
                V::Map(vec![("names", V::Map(vec![("en", s("Berlin"))]))]),
            ),
            (
                "location",
                V::Map(vec![
                    ("latitude", V::F64(52.52)),
                    ("longitude", V::F64(13.405)),
                ]),
            ),
        ]),
        "GeoLite2-City",
    );
    write_ipv4(
        &asn,
        [127, 0, 0, 0],
        8,
        V::Map(vec![
            ("autonomous_system_number", V::U32(64_512)),
            ("autonomous_system_organization", s("Loopback Networks")),
        ]),
        "GeoLite2-ASN",
    );
    let target = local_relay(&[], RelayOpts::default()).await;
    let watched = local_relay(&[], RelayOpts::default()).await;
    let node = Node::new(&format!(
        "[monitor]\ncheck_timeout_secs = 3\npublish = true\npublish_relays = [\"{}\"]\ngeoip_city_file = \"{}\"\ngeoip_asn_file = \"{}\"\n",
        target.url,
        city.display(),
        asn.display()
    ));
    let url = watched.url.clone();
    let node = std::sync::Arc::new(node);
    let n2 = node.clone();
    let (out, v) = tokio::task::spawn_blocking(move || monitor(&n2, &url))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let geo = &v["facts"]["geo"];
    assert_eq!(geo["address"], "127.0.0.1", "{v}");
    assert_eq!(geo["country"], "DE");
    assert_eq!(geo["city"], "Berlin");
    assert_eq!(geo["geohash"], "u33dc0", "{v}");
    assert_eq!(geo["asn"], 64_512);
    assert_eq!(geo["as_org"], "Loopback Networks");
    let ev = target
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(30166u16)))
        .await
        .unwrap();
    let ev = ev.first().expect("a 30166");
    assert!(
        ev.tags.iter().any(|t| t.as_slice() == ["g", "u33dc0"]),
        "{:?}",
        ev.tags
    );
    let ann = target
        .db
        .query(nostr::Filter::new().kind(nostr::Kind::from(10166u16)))
        .await
        .unwrap();
    assert!(ann
        .first()
        .unwrap()
        .tags
        .iter()
        .any(|t| t.as_slice() == ["c", "geo"]));

    // Not a MaxMind file: refused before anything runs, naming the setting.
    std::fs::write(&city, b"not a database").unwrap();
    let url = watched.url.clone();
    let (out, _) = tokio::task::spawn_blocking(move || monitor(&node, &url))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("monitor.geoip_city_file") && err.contains("MaxMind"),
        "{err}"
    );
}

/// The service (`bigbrotr monitor`, as inside `run`): checks fall due on their schedules, a dead
/// relay backs off while a live one keeps being checked, the monitor announces itself and
/// publishes, and SIGTERM stops it promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_schedules_backs_off_and_publishes() {
    let live = local_relay(&[], RelayOpts::default()).await;
    let target = local_relay(&[], RelayOpts::default()).await;
    let dead = "ws://127.0.0.1:1";
    let node = Node::new(&format!(
        "[monitor]\ncheck_timeout_secs = 2\nopen_interval_secs = 1\nfailure_threshold = 2\nmax_backoff_secs = 8\npublish = true\npublish_relays = [\"{}\"]\n",
        target.url
    ));
    for url in [live.url.as_str(), dead] {
        assert!(node.run(&["relays", "add", url]).status.success());
    }
    let child = node.cmd().arg("monitor").spawn().expect("spawn");
    let count = |url: &str| {
        rusqlite_count(
            &node,
            &format!(
                "SELECT count(*) FROM observation o JOIN relay r ON r.id = o.relay_id
                 WHERE r.url = '{url}' AND o.type IN ('open', 'nip66')"
            ),
        )
    };
    // Run until the dead relay has been checked 4 times (0, 1, then 2 and 4 s of back-off:
    // ~7 s), however fast the machine is.
    let t = std::time::Instant::now();
    while count(dead) < 4 || count(&live.url) < 5 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "checks so far: live {}, dead {}",
            count(&live.url),
            count(dead)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_gracefully(child, Duration::from_secs(30)).await;
    let (n_live, n_dead) = (count(&live.url), count(dead));
    // Live: every second. Dead: offline after 2 failures, then 2, 4, 8, 8... s apart (whole
    // seconds: the next check is due `wait` seconds after the previous one's second).
    assert!(n_live >= 5, "live relay checked on schedule: {n_live}");
    assert!(
        n_dead < n_live,
        "dead relay backed off: {n_dead} checks vs {n_live}"
    );
    let at: Vec<i64> = node
        .sqlite(&format!(
            "SELECT o.checked_at FROM observation o JOIN relay r ON r.id = o.relay_id
             WHERE r.url = '{dead}' AND o.type IN ('open', 'nip66') ORDER BY o.checked_at"
        ))
        .expect("state.sqlite")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(at.len() as i64, n_dead, "{at:?}");
    for (i, pair) in at.windows(2).enumerate().skip(1) {
        let wait = (1i64 << i).min(8);
        assert!(
            pair[1] - pair[0] >= wait,
            "check {} of the dead relay came {} s after the previous one, not >= {wait} s: {at:?}",
            i + 2,
            pair[1] - pair[0]
        );
    }
    let list = json_of(&node.run(&["relays", "list", "--json"]));
    let status: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        status.contains(&(live.url.clone(), "online".into())),
        "{status:?}"
    );
    assert!(
        status.contains(&(dead.to_string(), "offline".into())),
        "{status:?}"
    );
    let published = |kind: u16| {
        let db = target.db.clone();
        async move {
            db.query(nostr::Filter::new().kind(nostr::Kind::from(kind)))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(published(10166).await, 1, "announced once");
    // One NIP-66 check of the live relay (the next is an hour away); the dead one never opened.
    assert_eq!(published(30166).await, 1);
    let checked = rusqlite_count(
        &node,
        "SELECT json_extract(value, '$.relays_checked') FROM service_state
         WHERE service = 'monitor' AND key = 'stats'",
    );
    assert!(
        checked >= n_live,
        "service counters saved at stop: {checked}"
    );
}

/// The check types in `relays show --json`'s history.
fn history_kinds(show: &serde_json::Value) -> Vec<&str> {
    show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect()
}

/// Peak RSS of this process's waited-for children, KiB (Linux: ru_maxrss is in KiB).
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

/// 32 relays serving a NIP-11 document that holds a 1 MiB array of zeros: parsed whole into a
/// `serde_json::Value`, each became tens of MiB, and `monitor --once` over them peaked at 427 MB
/// (past the unit's 256 MB limit). Now only the known fields are read and the array is skipped
/// unread, and the sweep's peak RSS stays under 100 MB. Runs the sweep over registered relays,
/// so in a loopback-only network namespace.
#[test]
fn hostile_nip11_documents_stay_small_in_memory() {
    support::ns::in_netns(async {
        let zeros = format!(r#"{{"name":"zeros","junk":[{}0]}}"#, "0,".repeat(520_000));
        let mut relays = Vec::new();
        for _ in 0..32 {
            relays.push(HostileRelay::serving_nip11(&zeros).await);
        }
        let node = Node::new("[monitor]\nwrite_test = false\n");
        for r in &relays {
            let out = node.run(&["relays", "add", &r.url()]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let before = children_max_rss_kib();
        let mut c = node.cmd();
        c.args(["monitor", "--once", "--json"]);
        let out = tokio::task::spawn_blocking(move || c.output().expect("monitor"))
            .await
            .unwrap();
        let peak = children_max_rss_kib();
        assert!(peak > before, "the sweep's own peak is the children's peak");
        let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let read = reports
            .as_array()
            .expect("one report per relay")
            .iter()
            .filter(|r| r["nip11"]["name"] == "zeros")
            .count();
        assert_eq!(read, 32, "every document read: {reports}");
        eprintln!(
            "monitor --once over 32 hostile NIP-11 servers: peak RSS {} MiB",
            peak / 1024
        );
        assert!(
            peak < 100 * 1024,
            "peak RSS {} MiB (goal < 100 MiB)",
            peak / 1024
        );
    });
}
