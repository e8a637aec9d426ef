//! Shipping through faults, each test on its own PostgreSQL + PgBouncer: the node killed with
//! SIGKILL mid-ship, PostgreSQL restarted and crashed, PgBouncer stopped, the archive
//! unreachable. Afterwards the archive holds every event the node stored, none twice, and the
//! spool is empty.

mod support;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use support::pg::TestDb;
use support::*;

const T0: u64 = 1_720_000_000;

struct Setup {
    db: TestDb,
    name: String,
    node: Node,
    want: std::collections::BTreeSet<String>,
}

/// Own cluster, migrated archive, a node role, and a node that synced `n` events from a local
/// relay (not shipped yet).
async fn setup(n: usize, extra: &str) -> Setup {
    setup_on(TestDb::start(), n, "", extra).await
}

/// The same on `db`, with `url_suffix` appended to the node's database URL.
async fn setup_on(db: TestDb, n: usize, url_suffix: &str, extra: &str) -> Setup {
    let name = db.create_db();
    let admin = |args: &[&str]| -> Output {
        Node::new("")
            .cmd()
            .env("DATABASE_URL", db.admin_url(&name))
            .arg("archive")
            .args(args)
            .output()
            .expect("bigbrotr archive")
    };
    let out = admin(&["migrate"]);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    // Any node key (these tests are about faults, not binding; tests/archive.rs has that).
    db.psql(
        &name,
        "UPDATE archive_setting SET value = 'false' WHERE key = 'require_bound_keys'",
    );
    let role = db.role_name("node");
    let out = admin(&["node", "add", &role]);
    assert!(out.status.success(), "node add: {}", stderr(&out));
    let pw = stdout(&out)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("BIGBROTR_DB_PASSWORD=")
                .map(str::to_string)
        })
        .expect("password printed");
    let pwfile = db.dir.join(format!("{role}.pw"));
    std::fs::write(&pwfile, &pw).expect("password file");
    set_owner_only(&pwfile);
    let node = Node::new(&format!(
        "[upstream]\ndatabase_url = \"{}{url_suffix}\"\npassword_file = \"{}\"\nretry_min_secs = 1\nretry_max_secs = 2\n{extra}",
        db.bouncer_url(&role, &name),
        pwfile.display()
    ));
    let authors = keys(8);
    let events = notes(n, &authors, |i| T0 + i as u64 / 3);
    let relay = local_relay(&events, RelayOpts::default()).await;
    let out = node.sync_once(&relay.url).await;
    assert!(out.status.success(), "sync: {}", stderr(&out));
    assert_eq!(node.status()["spool_depth"], n as u64);
    Setup {
        db,
        name,
        node,
        want: ids_of(&events),
    }
}

impl Setup {
    fn archived(&self) -> u64 {
        self.db
            .psql(&self.name, "SELECT count(*) FROM event")
            .parse()
            .unwrap()
    }

    fn ship_once(&self) -> Output {
        self.node
            .cmd()
            .args(["ship", "--once"])
            .output()
            .expect("ship")
    }

    fn spawn_ship(&self, once: bool) -> Child {
        let mut c = self.node.cmd();
        c.arg("ship");
        if once {
            c.arg("--once");
        }
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ship")
    }

    /// Wait until `cond` holds (polling), at most `secs`.
    fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The archive holds exactly the node's events, each once, with one sighting each, and the
    /// spool is empty.
    fn assert_complete(&self) {
        let got: std::collections::BTreeSet<String> = self
            .db
            .psql(&self.name, "SELECT encode(id, 'hex') FROM event")
            .lines()
            .map(str::to_string)
            .collect();
        assert_same_ids(&got, &self.want);
        assert_eq!(
            self.db.psql(
                &self.name,
                "SELECT count(*), count(DISTINCT event_id) FROM event_relay"
            ),
            format!("{0}|{0}", self.want.len())
        );
        assert_eq!(self.node.status()["spool_depth"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ship_loses_and_duplicates_nothing() {
    let s = setup(12_000, "batch_size = 100\n").await;
    let total = s.want.len() as u64;
    let mut kills = 0;
    for round in 0..10u64 {
        let before = s.archived();
        if before == total {
            break;
        }
        let mut child = s.spawn_ship(true);
        // Killed once this round's first batch is in the archive (the next one is in flight).
        if kill_after_progress(&mut child, round, || s.archived() > before) == Round::Killed {
            kills += 1;
        }
        // The store opens without repair after every kill.
        let st = s.node.status();
        assert!(st["spool_depth"].as_u64().is_some());
    }
    eprintln!("killed {kills} times mid-work");
    assert!(kills >= 3, "the node was killed mid-ship ({kills} times)");
    let out = s.ship_once();
    assert!(out.status.success(), "final ship: {}", stderr(&out));
    s.assert_complete();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_crash_and_pgbouncer_restart_mid_ship() {
    // Small batches: shipping takes long enough for three faults to land mid-ship.
    let s = setup(20_000, "batch_size = 20\n").await;
    let total = s.want.len() as u64;
    let mut child = s.spawn_ship(false);
    s.wait_for("first batches", 30, || s.archived() > 0);
    // PostgreSQL crashes (SIGKILL of the postmaster and every backend) while batches are in
    // flight, and recovers: batches acked before the crash must have survived it.
    let n0 = s.archived();
    assert!(n0 < total, "the crash happens mid-ship");
    s.db.pg("kill");
    std::thread::sleep(Duration::from_secs(1));
    s.db.pg("start");
    s.wait_for("progress after a PostgreSQL crash", 30, || {
        let n = s.archived();
        n > n0 || n == total
    });
    // Clean restart of PostgreSQL.
    s.db.pg("stop");
    std::thread::sleep(Duration::from_secs(2));
    s.db.pg("start");
    let n1 = s.archived();
    s.wait_for("progress after a PostgreSQL restart", 30, || {
        let n = s.archived();
        n > n1 || n == total
    });
    // PgBouncer stopped for a while.
    s.db.bouncer("stop");
    std::thread::sleep(Duration::from_secs(2));
    s.db.bouncer("start");
    s.wait_for("the spool to drain", 120, || {
        s.node.status()["spool_depth"] == 0
    });
    assert!(child.try_wait().unwrap().is_none(), "ship keeps running");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "ship stops cleanly on SIGTERM");
    s.assert_complete();
    let st = s.node.status();
    assert!(
        st["ship"]["retries"].as_u64().unwrap() > 0,
        "failures were seen: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_archive_gives_up_with_the_reason_then_catches_up() {
    let s = setup(500, "give_up_secs = 3\n").await;
    s.db.pg("stop");
    let t = Instant::now();
    let out = s.ship_once();
    assert!(
        !out.status.success(),
        "ship --once fails while the archive is down"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    let err = stderr(&out);
    assert!(err.contains("unreachable"), "{err}");
    let st = s.node.status();
    assert_eq!(st["spool_depth"], 500, "nothing acked");
    assert!(st["ship"]["last_error"].as_str().is_some(), "{st}");
    assert!(st["ship_lag_secs"].as_u64().is_some(), "{st}");
    // `run` keeps collecting meanwhile: nothing is tested here beyond the spool staying intact.
    s.db.pg("start");
    let out = s.ship_once();
    assert!(
        out.status.success(),
        "ship after recovery: {}",
        stderr(&out)
    );
    s.assert_complete();
    assert!(s.node.status()["ship_lag_secs"].is_null());
}

/// TLS to the archive: `sslmode=require` with the operator's CA in `upstream.ca_file` works; an
/// unknown CA is refused with a clear error (nothing is sent in clear, nothing acked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let db = TestDb::start_tls();
    let ca = db.dir.join("ca.crt");
    let s = setup_on(
        db,
        50,
        "?sslmode=require",
        "give_up_secs = 2\nconnect_timeout_secs = 5\n",
    )
    .await;
    // Without the CA: refused, and the reason names the certificate.
    let out = s.ship_once();
    assert!(!out.status.success());
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{err}"
    );
    assert_eq!(s.node.status()["spool_depth"], 50);
    // With it: shipped.
    let mut cfg = std::fs::read_to_string(&s.node.config).unwrap();
    cfg.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
    std::fs::write(&s.node.config, cfg).unwrap();
    let out = s.ship_once();
    assert!(out.status.success(), "ship over TLS: {}", stderr(&out));
    s.assert_complete();
}
