//! Overlay relays through SOCKS5: a real SOCKS server from Debian (microsocks) on loopback in
//! front of a local relay. The proxy runs in its own mount namespace whose /etc/hosts maps the
//! relay's `.onion`/`.i2p` name to 127.0.0.1 (what Tor or I2P would do for it). The node runs in
//! another one whose /etc/hosts does not know the name and whose resolv.conf points at a UDP
//! listener on 127.0.0.9:53 that counts queries: the relay is reached only through the proxy,
//! and the node never asks any resolver for the name. Needs root (mount namespaces), as CI has.

mod support;

use std::path::Path;
use std::process::{Child, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::ns::{counted_resolver_files, dns_counter, in_namespace};
use support::*;

const T0: u64 = 1_700_000_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// microsocks on 127.0.0.1:port, resolving `names` to 127.0.0.1 from its own /etc/hosts.
fn proxy(dir: &Path, names: &[&str]) -> (Proxy, u16) {
    let hosts = dir.join("proxy-hosts");
    let mut text = String::from("127.0.0.1 localhost\n");
    for n in names {
        text.push_str(&format!("127.0.0.1 {n}\n"));
    }
    std::fs::write(&hosts, text).unwrap();
    // A port picked free can be taken before microsocks binds it: then it exits, and the
    // proxy is started again on another port.
    for _ in 0..5 {
        let port = free_port();
        let mut child = in_namespace(
            &[(&hosts, "/etc/hosts")],
            "microsocks",
            &["-i", "127.0.0.1", "-p", &port.to_string()],
        )
        .spawn()
        .expect("microsocks (scripts/bootstrap installs it) and unshare");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            && child.try_wait().expect("try_wait").is_none()
        {
            assert!(t.elapsed() < Duration::from_secs(10), "proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50));
        if child.try_wait().expect("try_wait").is_none() {
            return (Proxy(child), port);
        }
    }
    panic!("microsocks exited five times (ports taken?)");
}

/// Run bigbrotr in a namespace that cannot resolve the overlay names except by asking the
/// counting resolver.
fn node_run(node: &Node, dir: &Path, args: &[&str]) -> Output {
    let (hosts, resolv) = counted_resolver_files(dir);
    let mut all = vec!["--config", node.config.to_str().unwrap()];
    all.extend(args);
    in_namespace(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        env!("CARGO_BIN_EXE_bigbrotr"),
        &all,
    )
    .env_remove("BIGBROTR_CONFIG")
    .env("RUST_LOG", "warn")
    .output()
    .expect("run bigbrotr in a namespace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_relays_are_reached_only_through_their_socks_proxy() {
    let events = notes(120, &keys(3), |i| T0 + i as u64);
    let relay = local_relay(&events, RelayOpts::default()).await;
    let port: u16 = relay.url.rsplit(':').next().unwrap().parse().unwrap();
    let onion = format!("bigbrotr{}.onion", "a".repeat(48));
    let i2p = "bigbrotr-test.i2p";
    let dir = tempfile::tempdir().unwrap();
    let queries = dns_counter();
    // A second onion relay that serves a NIP-11 document (the monitor fetches it over HTTP
    // through the proxy too).
    let documented = support::hostile::HostileRelay::serving_nip11(
        r#"{"name":"through the proxy","supported_nips":[1,11]}"#,
    )
    .await;
    let doc_port: u16 = documented
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let onion2 = format!("nipeleven{}.onion", "b".repeat(47));
    let (_proxy, proxy_port) = proxy(dir.path(), &[&onion, i2p, &onion2]);

    // Without a route: refused by name, nothing resolved, nothing dialed.
    let node = Node::new("");
    let onion_url = format!("ws://{onion}:{port}");
    let (n, d, u) = (Arc::new(node), dir.path().to_path_buf(), onion_url.clone());
    let n2 = n.clone();
    let out = tokio::task::spawn_blocking(move || {
        node_run(
            &n2,
            &d,
            &["sync", "--relay", &u, "--once", "--retries", "0"],
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no route"), "{}", stderr(&out));

    // With routes: the whole history of the relay, through the proxy, for both networks.
    let node = Node::new("");
    let cfg = std::fs::read_to_string(&node.config).unwrap().replace(
        "allow_local = true",
        &format!(
            "allow_local = true\ntor_proxy = \"127.0.0.1:{proxy_port}\"\ni2p_proxy = \"127.0.0.1:{proxy_port}\""
        ),
    );
    std::fs::write(&node.config, cfg).unwrap();
    let node = Arc::new(node);
    let i2p_url = format!("ws://{i2p}:{port}");
    for url in [onion_url.clone(), i2p_url.clone()] {
        let (n2, d) = (node.clone(), dir.path().to_path_buf());
        let out = tokio::task::spawn_blocking(move || {
            node_run(&n2, &d, &["sync", "--relay", &url, "--once"])
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
    // The monitor reaches them the same way, NIP-11 over HTTP included.
    let (n2, d, u) = (
        node.clone(),
        dir.path().to_path_buf(),
        format!("ws://{onion2}:{doc_port}"),
    );
    let out = tokio::task::spawn_blocking(move || {
        node_run(&n2, &d, &["monitor", "--relay", &u, "--once", "--json"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["rtt"]["open_ms"].is_u64(), "{v}");
    assert_eq!(v["nip11"]["name"], "through the proxy", "{v}");
    assert_eq!(v["network"], "tor");
    assert!(
        v["facts"]["dns"].is_null(),
        "an onion name is never resolved: {v}"
    );
    assert_eq!(
        queries.load(Ordering::SeqCst),
        0,
        "no DNS query was made for any overlay name"
    );
    // The counter would have seen one: a lookup of the same name in the node's namespace
    // reaches it.
    let hosts = dir.path().join("node-hosts");
    let resolv = dir.path().join("node-resolv.conf");
    let _ = in_namespace(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        "getent",
        &["hosts", &onion],
    )
    .output()
    .expect("getent");
    assert!(queries.load(Ordering::SeqCst) > 0, "the DNS counter works");
    drop(n);
}
