//! The central archive against a real PostgreSQL behind a real PgBouncer (transaction pooling):
//! migrations, roles, and nodes shipping their spools through the real binary.

mod support;

use std::collections::BTreeSet;
use std::process::Output;

use support::hostile::{sign_event, HostileRelay, Options, RawEvent};
use support::pg::TestDb;
use support::raw_event::nip01_serialize;
use support::*;

const T0: u64 = 1_710_000_000;

/// `bigbrotr archive ...` as the superuser, straight to PostgreSQL.
fn admin(db: &TestDb, dbname: &str, args: &[&str]) -> Output {
    let node = Node::new("");
    node.cmd()
        .env("DATABASE_URL", db.admin_url(dbname))
        .env_remove("BIGBROTR_DB_PASSWORD")
        .arg("archive")
        .args(args)
        .output()
        .expect("run bigbrotr archive")
}

/// A migrated archive that takes any node role's key (these tests are about shipping; the
/// default for a new archive, bound keys only, has its own test).
fn migrated(db: &TestDb) -> String {
    let name = strict_archive(db);
    db.psql(
        &name,
        "UPDATE archive_setting SET value = 'false' WHERE key = 'require_bound_keys'",
    );
    name
}

/// A migrated archive with the defaults of a new one.
fn strict_archive(db: &TestDb) -> String {
    let name = db.create_db();
    let out = admin(db, &name, &["migrate"]);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    name
}

/// `archive node add` a fresh role; returns (role, password).
fn node_role(db: &TestDb, dbname: &str) -> (String, String) {
    let role = db.role_name("node");
    let out = admin(db, dbname, &["node", "add", &role]);
    assert!(out.status.success(), "node add: {}", stderr(&out));
    (role, password_in(&stdout(&out)))
}

fn password_in(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("BIGBROTR_DB_PASSWORD="))
        .unwrap_or_else(|| panic!("no password printed in: {text}"))
        .to_string()
}

/// A node shipping to `dbname` through PgBouncer as `role` (password in a 0600 file).
fn shipping_node(db: &TestDb, dbname: &str, role: &str, password: &str, extra: &str) -> Node {
    let pwdir = tempfile::tempdir().expect("tempdir").keep();
    let pwfile = pwdir.join("db-password");
    std::fs::write(&pwfile, format!("{password}\n")).expect("write password file");
    set_owner_only(&pwfile);
    Node::new(&format!(
        "[upstream]\ndatabase_url = \"{}\"\npassword_file = \"{}\"\nretry_min_secs = 1\nretry_max_secs = 2\n{extra}",
        db.bouncer_url(role, dbname),
        pwfile.display()
    ))
}

/// `sync --once` from `relay` then `ship --once`, both with node key `key` (hex); the ship's
/// output.
async fn sync_then_ship_as(node: &Node, relay: &str, key: &str) -> Output {
    let mut c = node.cmd();
    c.env("BIGBROTR_NODE_KEY", key)
        .args(["sync", "--relay", relay, "--once"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "sync: {}", stderr(&out));
    node.cmd()
        .env("BIGBROTR_NODE_KEY", key)
        .args(["ship", "--once"])
        .output()
        .unwrap()
}

fn ship_once(node: &Node) -> Output {
    node.cmd()
        .env_remove("BIGBROTR_DB_PASSWORD")
        .args(["ship", "--once"])
        .output()
        .expect("run bigbrotr ship")
}

fn archive_ids(db: &TestDb, dbname: &str) -> BTreeSet<String> {
    db.psql(dbname, "SELECT encode(id, 'hex') FROM event")
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(db: &TestDb, dbname: &str, sql: &str) -> u64 {
    db.psql(dbname, sql).parse().expect("a number")
}

/// Every archived event's id recomputed from its archived fields (NIP-01): the archive holds
/// exactly what was signed.
fn assert_archive_faithful(db: &TestDb, dbname: &str) {
    let rows = db.psql(
        dbname,
        "SELECT json_build_array(encode(id, 'hex'), encode(pubkey, 'hex'), created_at, kind, tags, content) FROM event",
    );
    let mut n = 0;
    for line in rows.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("row json");
        let tags: Vec<Vec<String>> = serde_json::from_value(v[4].clone()).expect("tags");
        let pre = nip01_serialize(
            v[1].as_str().unwrap(),
            v[2].as_u64().unwrap(),
            v[3].as_u64().unwrap() as u16,
            &tags,
            v[5].as_str().unwrap(),
        );
        use sha2::Digest;
        let id = hex::encode(sha2::Sha256::digest(pre.as_bytes()));
        assert_eq!(
            id,
            v[0].as_str().unwrap(),
            "archived fields reproduce the id"
        );
        n += 1;
    }
    assert!(n > 0, "the archive holds events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_then_a_second_node_adds_only_sightings() {
    let db = TestDb::shared();
    let name = migrated(db);
    let authors = keys(4);
    let a = notes(300, &authors, |i| T0 + i as u64 * 7);
    let b = notes(100, &authors, |i| T0 + 5_000 + i as u64);
    let r1 = local_relay(&a, RelayOpts::default()).await;
    let mut on_r2: Vec<_> = a[..100].to_vec();
    on_r2.extend(b.iter().cloned());
    let r2 = local_relay(&on_r2, RelayOpts::default()).await;
    let r3 = local_relay(&a[100..200], RelayOpts::default()).await;

    let (role1, pw1) = node_role(db, &name);
    let n1 = shipping_node(db, &name, &role1, &pw1, "");
    for r in [&r1, &r2] {
        let out = n1.sync_once(&r.url).await;
        assert!(out.status.success(), "sync: {}", stderr(&out));
    }
    assert!(n1.status()["spool_depth"].as_u64().unwrap() > 0);
    let out = ship_once(&n1);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    let mut want = ids_of(&a);
    want.extend(ids_of(&b));
    assert_same_ids(&archive_ids(db, &name), &want);
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 500);
    let per_relay = db.psql(
        &name,
        "SELECT count(*) FROM event_relay GROUP BY relay_url ORDER BY 1",
    );
    assert_eq!(per_relay, "200\n300");
    assert_eq!(n1.status()["spool_depth"], 0);
    assert_archive_faithful(db, &name);

    // Second node: a relay serving only events the archive already has.
    let (role2, pw2) = node_role(db, &name);
    let n2 = shipping_node(db, &name, &role2, &pw2, "");
    let out = n2.sync_once(&r3.url).await;
    assert!(out.status.success(), "sync: {}", stderr(&out));
    let out = ship_once(&n2);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event"), 400);
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 600);
    let nodes = db.psql(
        &name,
        &format!(
            "SELECT name, events_sent, events_new, sightings_sent, sightings_new FROM node \
             WHERE name IN ('{role1}', '{role2}') ORDER BY name = '{role2}'"
        ),
    );
    assert_eq!(
        nodes,
        format!("{role1}|400|400|500|500\n{role2}|100|0|100|100"),
        "per-node counters"
    );
    // The node's identity in the archive is its public key.
    let key1 = n1.status_key();
    assert_eq!(
        db.psql(
            &name,
            &format!("SELECT encode(id, 'hex') FROM node WHERE name = '{role1}'")
        ),
        key1
    );
    // Shipping again sends nothing: the spool is empty.
    let batches = |db: &TestDb| {
        count(
            db,
            &name,
            &format!("SELECT batches FROM node WHERE name = '{role1}'"),
        )
    };
    let before = batches(db);
    let out = ship_once(&n1);
    assert!(out.status.success());
    assert_eq!(batches(db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_parallel_store_each_event_once() {
    let db = TestDb::shared();
    let name = migrated(db);
    let authors = keys(5);
    let all = notes(800, &authors, |i| T0 + i as u64 * 3);
    let relays = [
        local_relay(&all[0..400], RelayOpts::default()).await,
        local_relay(&all[200..600], RelayOpts::default()).await,
        local_relay(&all[400..800], RelayOpts::default()).await,
    ];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (role, pw) = node_role(db, &name);
        // Small batches: many interleaved, overlapping transactions.
        let n = shipping_node(db, &name, &role, &pw, "batch_size = 40\n");
        for r in &relays {
            let out = n.sync_once(&r.url).await;
            assert!(out.status.success(), "sync: {}", stderr(&out));
        }
        nodes.push((role, n));
    }
    let handles: Vec<_> = nodes
        .iter()
        .map(|(_, n)| {
            let mut c = n.cmd();
            c.env_remove("BIGBROTR_DB_PASSWORD")
                .args(["ship", "--once"]);
            std::thread::spawn(move || c.output().expect("ship"))
        })
        .collect();
    for h in handles {
        let out = h.join().expect("join");
        assert!(out.status.success(), "ship: {}", stderr(&out));
    }
    assert_same_ids(&archive_ids(db, &name), &ids_of(&all));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 1200);
    let roles: Vec<String> = nodes.iter().map(|(r, _)| format!("'{r}'")).collect();
    let per_node = db.psql(
        &name,
        &format!(
            "SELECT events_sent, sightings_sent FROM node WHERE name IN ({}) ORDER BY name",
            roles.join(",")
        ),
    );
    assert_eq!(per_node, "800|1200\n800|1200\n800|1200");
    let totals = db.psql(
        &name,
        &format!(
            "SELECT sum(events_new), sum(sightings_new) FROM node WHERE name IN ({})",
            roles.join(",")
        ),
    );
    assert_eq!(
        totals, "800|1200",
        "each event and sighting counted new exactly once"
    );
}

#[test]
fn node_role_may_only_call_the_ingest_functions() {
    let db = TestDb::shared();
    // PostgreSQL 14's default: everyone may create objects in schema public. The migration
    // must take that away, or a node could plant functions the ingest functions run as owner.
    let name = db.create_db();
    db.psql(&name, "GRANT CREATE ON SCHEMA public TO PUBLIC");
    let out = admin(db, &name, &["migrate"]);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    let (role, pw) = node_role(db, &name);
    assert_eq!(
        db.psql_as(&role, &pw, &name, "SELECT 1").as_deref(),
        Ok("1")
    );
    for sql in [
        "SELECT count(*) FROM event",
        "SELECT * FROM node",
        "SELECT * FROM event_p0",
        "INSERT INTO relay VALUES ('wss://x/', 'clearnet', 1)",
        "UPDATE node SET events_new = 0",
        "DELETE FROM event",
        "DELETE FROM event_relay",
        "TRUNCATE event",
        "SELECT delete_orphan_events()",
        "SELECT node_touch('\\x00')",
        "CREATE TABLE mine (x int)",
        "CREATE FUNCTION public.cardinality(bytea[]) RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        let err = db
            .psql_as(&role, &pw, &name, sql)
            .expect_err(&format!("a node role must not run {sql:?}"));
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{sql}: {err}"
        );
    }
    // A reader may read and nothing else.
    let reader = db.role_name("reader");
    db.psql(
        "postgres",
        &format!("CREATE ROLE {reader} LOGIN PASSWORD 'rpw' IN ROLE bigbrotr_reader"),
    );
    assert_eq!(
        db.psql_as(&reader, "rpw", &name, "SELECT count(*) FROM event")
            .as_deref(),
        Ok("0")
    );
    assert!(db
        .psql_as(&reader, "rpw", &name, "DELETE FROM event")
        .unwrap_err()
        .contains("permission denied"));
    assert!(db
        .psql_as(
            &reader,
            "rpw",
            &name,
            "SELECT * FROM ingest_observations('\\x00', '{}', '{}', '{}', '{}', '{}')"
        )
        .unwrap_err()
        .contains("permission denied"));

    // `node add` again: idempotent, the password unchanged; --reset-password replaces it.
    let out = admin(db, &name, &["node", "add", &role]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    assert!(db.psql_as(&role, &pw, &name, "SELECT 1").is_ok());
    let out = admin(db, &name, &["node", "add", &role, "--reset-password"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pw2 = password_in(&stdout(&out));
    assert_ne!(pw, pw2);
    assert!(
        db.psql_as(&role, &pw, &name, "SELECT 1").is_err(),
        "old password refused"
    );
    assert!(db.psql_as(&role, &pw2, &name, "SELECT 1").is_ok());
    // An existing role that is not a node role is never adopted (nor its password reset).
    let out = admin(db, &name, &["node", "add", "postgres", "--reset-password"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a node role"), "{}", stderr(&out));
    let plain = db.role_name("plain");
    db.psql("postgres", &format!("CREATE ROLE {plain} LOGIN"));
    let out = admin(db, &name, &["node", "add", &plain]);
    assert!(
        stderr(&out).contains("not in bigbrotr_node"),
        "{}",
        stderr(&out)
    );
    // Bad names are refused before reaching the database.
    let out = admin(db, &name, &["node", "add", "Robert'); DROP TABLE event;--"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid node name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_is_idempotent_concurrent_and_checksummed() {
    let db = TestDb::shared();
    let name = db.create_db();
    // Empty database: verify names what is missing.
    let out = admin(db, &name, &["verify"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("MISSING") && text.contains("table event"),
        "{text}"
    );
    assert!(stderr(&out).contains("archive migrate"), "{}", stderr(&out));

    // Three at once: each file applied once, all succeed.
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let url = db.admin_url(&name);
            std::thread::spawn(move || {
                let node = Node::new("");
                node.cmd()
                    .env("DATABASE_URL", url)
                    .args(["archive", "migrate"])
                    .output()
                    .expect("migrate")
            })
        })
        .collect();
    let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "concurrent migrate: {}", stderr(o));
    }
    for m in bigbrotr::archive::migrate::MIGRATIONS {
        let applied_now = outs
            .iter()
            .filter(|o| {
                stdout(o)
                    .lines()
                    .any(|l| l.trim() == format!("applied {}", m.name))
            })
            .count();
        assert_eq!(applied_now, 1, "exactly one run applied {}", m.name);
    }
    assert_eq!(
        count(db, &name, "SELECT count(*) FROM bigbrotr_migration"),
        bigbrotr::archive::migrate::MIGRATIONS.len() as u64
    );
    let out = admin(db, &name, &["migrate"]);
    assert!(stdout(&out).contains("already applied 0001_archive.sql"));
    let out = admin(db, &name, &["verify", "--json"]);
    assert!(
        out.status.success(),
        "verify: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(checks.as_array().unwrap().len() > 20);

    // An applied file edited afterwards: refused, and named.
    db.psql(
        &name,
        "UPDATE bigbrotr_migration SET checksum = 'edited' WHERE version = 1",
    );
    let out = admin(db, &name, &["migrate"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("0001_archive.sql"),
        "{}",
        stderr(&out)
    );
    let out = admin(db, &name, &["verify"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("edited after it was applied"),
        "{}",
        stdout(&out)
    );

    // Restored to the real checksum, verify passes again.
    use sha2::Digest;
    let real = hex::encode(sha2::Sha256::digest(
        include_str!("../migrations/0001_archive.sql").as_bytes(),
    ));
    db.psql(
        &name,
        &format!("UPDATE bigbrotr_migration SET checksum = '{real}' WHERE version = 1"),
    );
    let out = admin(db, &name, &["verify"]);
    assert!(out.status.success(), "restored: {}", stdout(&out));
    // A node role granted too much is reported.
    db.psql(&name, "GRANT SELECT ON event TO bigbrotr_node");
    let out = admin(db, &name, &["verify"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    let missing: Vec<&str> = text.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(missing.len(), 1, "{text}");
    assert!(missing[0].contains("cannot touch table event"), "{text}");
}

#[test]
fn secrets_stay_out_of_config_and_output() {
    let db = TestDb::shared();
    let name = migrated(db);
    // A password in config.toml is refused, without echoing it.
    let node = Node::new(&format!(
        "[upstream]\ndatabase_url = \"postgres://n:s3cr3tpw@127.0.0.1:{}/{name}\"\n",
        db.bouncer_port
    ));
    let out = node.run(&["status"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("BIGBROTR_DB_PASSWORD"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cr3tpw"));

    // A wrong password: ship --once gives up with the reason and the next step; the password
    // appears nowhere.
    let (role, _) = node_role(db, &name);
    let node = shipping_node(db, &name, &role, "wrong-pw-123", "give_up_secs = 2\n");
    let authors = keys(1);
    let evs = notes(5, &authors, |i| T0 + i as u64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt.block_on(local_relay(&evs, RelayOpts::default()));
    let out = rt.block_on(node.sync_once(&relay.url));
    assert!(out.status.success());
    let out = node
        .cmd()
        .env("RUST_LOG", "debug")
        .args(["ship", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("authentication") || err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw-123") && !stdout(&out).contains("wrong-pw-123"));
    let st = node.status();
    assert!(
        st["ship"]["last_error"]
            .as_str()
            .unwrap()
            .contains("BIGBROTR_DB_PASSWORD"),
        "status shows the error with the fix: {st}"
    );
    assert_eq!(st["spool_depth"], 5, "nothing acked");
}

/// Events PostgreSQL cannot hold (U+0000 in text) are set aside and counted; events with huge
/// or incompressible tag values and a row the archive's own policy refuses do not block the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_never_block_the_spool() {
    let db = TestDb::shared();
    let name = migrated(db);
    // The archive operator's own rule: kind 666 is refused (the server raises, the shipper
    // splits the batch to find those rows).
    db.psql(
        &name,
        "ALTER TABLE event ADD CONSTRAINT no_666 CHECK (kind <> 666)",
    );
    // And a trigger that raises a plain exception (not a data error) for kind 777: after a few
    // refusals of the same batch the shipper hunts the entry down too.
    db.psql(
        &name,
        "CREATE FUNCTION no_777() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN IF NEW.kind = 777 THEN RAISE EXCEPTION 'kind 777 is not welcome'; END IF; RETURN NEW; END$$; \
         CREATE TRIGGER no_777 BEFORE INSERT ON event FOR EACH ROW EXECUTE FUNCTION no_777()",
    );
    let k = keys(1);
    let mut good: Vec<RawEvent> = (0..60)
        .map(|i| sign_event(&k[0], T0 + i, 1, vec![], &format!("fine {i}")))
        .collect();
    // Incompressible 6 KB tag value: too big for a GIN index key, kept in tags, not indexed.
    let noise: String = (0..200)
        .map(|i| {
            format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9e3779b97f4a7c15f39cc0605cedc835)
            )
        })
        .collect();
    good.push(sign_event(
        &k[0],
        T0 + 100,
        1,
        vec![vec!["e".into(), noise.clone()]],
        "big tag",
    ));
    good.push(sign_event(
        &k[0],
        T0 + 101,
        1,
        vec![vec!["t".into(), "x".repeat(200_000)]],
        "huge tag",
    ));
    good.push(sign_event(
        &k[0],
        T0 + 102,
        1,
        (0..1500)
            .map(|i| vec!["p".into(), format!("{i:064x}")])
            .collect(),
        "many tags",
    ));
    let bad = [
        sign_event(&k[0], T0 + 200, 1, vec![], "nul \u{0} in content"),
        sign_event(
            &k[0],
            T0 + 201,
            1,
            vec![vec!["t".into(), "a\u{0}b".into()]],
            "nul in a tag",
        ),
        sign_event(&k[0], T0 + 202, 666, vec![], "refused by policy"),
        sign_event(&k[0], T0 + 203, 666, vec![], "refused by policy too"),
        sign_event(&k[0], T0 + 204, 777, vec![], "refused by a trigger"),
    ];
    let mut served = good.clone();
    served.extend(bad.iter().cloned());
    let relay = HostileRelay::start(served, Options::default()).await;
    let (role, pw) = node_role(db, &name);
    let node = shipping_node(db, &name, &role, &pw, "batch_size = 16\n");
    let out = node.sync_once(&relay.url()).await;
    assert!(out.status.success(), "sync: {}", stderr(&out));
    let out = ship_once(&node);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    let want: BTreeSet<String> = good.iter().map(|e| e.id.clone()).collect();
    assert_same_ids(&archive_ids(db, &name), &want);
    let st = node.status();
    assert_eq!(st["spool_depth"], 0, "the spool drained");
    assert_eq!(st["ship_rejected"], 5, "set aside and counted: {st}");
    assert_archive_faithful(db, &name);
    // The long value is kept in tags but not indexed; short single-letter values are.
    assert_eq!(
        count(
            db,
            &name,
            "SELECT count(*) FROM event WHERE tagvalues @> ARRAY['p:' || lpad('5', 64, '0')]"
        ),
        1
    );
    assert_eq!(
        count(
            db,
            &name,
            &format!("SELECT count(*) FROM event WHERE tags @> '[[\"e\", \"{noise}\"]]'")
        ),
        1
    );
    // The operator lifts the policy; the refused entries are requeued and shipped; the ones
    // PostgreSQL can never hold (U+0000) are set aside again.
    db.psql(
        &name,
        "ALTER TABLE event DROP CONSTRAINT no_666; DROP TRIGGER no_777 ON event",
    );
    let out = node
        .cmd()
        .args(["ship", "--once", "--requeue-rejected"])
        .output()
        .unwrap();
    assert!(out.status.success(), "requeue: {}", stderr(&out));
    assert!(stderr(&out).contains("requeued 5"), "{}", stderr(&out));
    let mut want = want;
    want.extend(bad[2..].iter().map(|e| e.id.clone()));
    assert_same_ids(&archive_ids(db, &name), &want);
    let st = node.status();
    assert_eq!(st["ship_rejected"], 2, "{st}");
    assert_eq!(st["spool_depth"], 0);
}

/// Events stored before `[upstream]` was configured are not in the spool; a later sighting of
/// one reaches the archive anyway: the archive refuses the orphan sighting, and the shipper
/// resends the batch with the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sightings_of_events_stored_before_upstream_bring_their_events() {
    let db = TestDb::shared();
    let name = migrated(db);
    let evs = notes(120, &keys(2), |i| T0 + i as u64);
    let r1 = local_relay(&evs, RelayOpts::default()).await;
    let r2 = local_relay(&evs[..80], RelayOpts::default()).await;
    let (role, pw) = node_role(db, &name);
    let node = shipping_node(db, &name, &role, &pw, "batch_size = 50\n");
    let with_upstream = std::fs::read_to_string(&node.config).unwrap();
    let local_only: String = with_upstream
        .split("[upstream]")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&node.config, &local_only).unwrap();
    let out = node.sync_once(&r1.url).await;
    assert!(out.status.success(), "sync: {}", stderr(&out));
    assert_eq!(node.status()["spool_depth"], 0, "no upstream, no spool");
    std::fs::write(&node.config, &with_upstream).unwrap();
    let out = node.sync_once(&r2.url).await;
    assert!(out.status.success(), "sync: {}", stderr(&out));
    assert_eq!(node.status()["spool_depth"], 80, "sightings only");
    let out = ship_once(&node);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    assert_same_ids(&archive_ids(db, &name), &ids_of(&evs[..80]));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 80);
    assert_eq!(node.status()["ship_rejected"], 0);
    assert_archive_faithful(db, &name);
    // The history from before [upstream]: `ship --backfill` queues all of it.
    let out = node
        .cmd()
        .args(["ship", "--once", "--backfill"])
        .output()
        .unwrap();
    assert!(out.status.success(), "backfill: {}", stderr(&out));
    assert!(stderr(&out).contains("queued 200"), "{}", stderr(&out));
    assert_same_ids(&archive_ids(db, &name), &ids_of(&evs));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 200);
    assert_eq!(node.status()["spool_depth"], 0);
}

/// A node key is bound to the role that first shipped with it: another role cannot report
/// under that identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_cannot_ship_under_two_roles() {
    let db = TestDb::shared();
    let name = migrated(db);
    let key = "7f".repeat(32);
    let relay = local_relay(&notes(3, &keys(1), |i| T0 + i as u64), RelayOpts::default()).await;
    let mut shipped = Vec::new();
    for _ in 0..2 {
        let (role, pw) = node_role(db, &name);
        let node = shipping_node(db, &name, &role, &pw, "give_up_secs = 1\n");
        let out = sync_then_ship_as(&node, &relay.url, &key).await;
        shipped.push((role, out, node));
    }
    assert!(shipped[0].1.status.success(), "{}", stderr(&shipped[0].1));
    assert!(!shipped[1].1.status.success(), "the second role is refused");
    let st = shipped[1].2.status();
    let err = st["ship"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("another role"), "{st}");
    assert_eq!(st["spool_depth"], 3, "nothing acked");
    assert_eq!(
        db.psql(&name, "SELECT name FROM node"),
        shipped[0].0,
        "the key stays with the first role"
    );
}

/// `bigbrotr run` with `[upstream]`: while the archive cannot take batches (here: not migrated
/// yet) syncing pauses at `spool.max_entries` with relays keeping the rest; once it can, the
/// node ships and syncs everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ships_and_pauses_syncing_at_the_spool_quota() {
    let db = TestDb::shared();
    let first = migrated(db);
    let (role, pw) = node_role(db, &first);
    let name = db.create_db(); // migrated later: until then every batch fails
    let evs = notes(600, &keys(3), |i| T0 + i as u64 * 2);
    let relay = local_relay(&evs, RelayOpts::default()).await;
    let node = shipping_node(
        db,
        &name,
        &role,
        &pw,
        "[spool]\nmax_entries = 100\n[sync]\npage_limit = 50\nbackoff_min_secs = 1\n[finder]\nenabled = false\n[monitor]\nenabled = false\n",
    );
    let out = node.run(&["relays", "add", &relay.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = node.cmd().arg("run").spawn().expect("spawn run");
    let t = std::time::Instant::now();
    let mut paused_at = None;
    while t.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let st = node.status();
        let stored = st["events_stored"].as_u64().unwrap_or(0);
        assert!(stored <= 150, "syncing went past the quota: {st}");
        if st["spool_depth"].as_u64().unwrap_or(0) >= 100 && t.elapsed().as_secs() >= 3 {
            paused_at = Some(st);
            break;
        }
    }
    let st = paused_at.expect("the spool reached its quota");
    let err = st["ship"]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("archive migrate"),
        "the error names the fix: {st}"
    );
    let out = admin(db, &name, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    db.psql(
        &name,
        "UPDATE archive_setting SET value = 'false' WHERE key = 'require_bound_keys'",
    );
    let t = std::time::Instant::now();
    while count(db, &name, "SELECT count(*) FROM event") < 600 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(90),
            "archive caught up: {}",
            node.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_same_ids(&archive_ids(db, &name), &ids_of(&evs));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "run stops cleanly");
}

/// Monitor observations (what the monitor will ship): documents stored once by content, one
/// time series per relay per vantage node, callable by a node role and nothing more.
#[test]
fn observations_are_content_addressed_per_vantage_node() {
    let db = TestDb::shared();
    let name = migrated(db);
    let call = |role: &str, pw: &str, key: &str, at: &[i64], docs: &[&str]| {
        let n = at.len();
        let arr = |v: Vec<String>| format!("ARRAY[{}]", v.join(","));
        let sql = format!(
            "SELECT ingest_observations('\\x{key}', {}, {}, {}, {}, {})",
            arr(vec!["'wss://r.example/'".to_string(); n]),
            arr(vec!["'clearnet'".to_string(); n]),
            arr(at.iter().map(|t| format!("{t}::bigint")).collect()),
            arr(vec!["'nip11'".to_string(); n]),
            arr(docs.iter().map(|d| format!("'{d}'")).collect()),
        );
        db.psql_as(role, pw, &name, &sql)
    };
    let (r1, p1) = node_role(db, &name);
    let (r2, p2) = node_role(db, &name);
    let (k1, k2) = ("a1".repeat(32), "b2".repeat(32));
    // Two observations of the same document, written differently: one document stored; the
    // same call replayed inserts nothing.
    let docs = [r#"{"b": 1, "a": [2]}"#, r#"{"a":[2],"b":1}"#];
    for want in ["2", "0"] {
        assert_eq!(call(&r1, &p1, &k1, &[10, 20], &docs).as_deref(), Ok(want));
    }
    // Another vantage node, same relay and time: its own series.
    assert_eq!(
        call(&r2, &p2, &k2, &[10], &[r#"{"a":[2],"b":1}"#]).as_deref(),
        Ok("1")
    );
    assert_eq!(count(db, &name, "SELECT count(*) FROM metadata"), 1);
    assert_eq!(
        db.psql(&name, "SELECT encode(id, 'hex') = encode(sha256(convert_to(data::text, 'UTF8')), 'hex') FROM metadata"),
        "t",
        "content address = sha256 of the canonical jsonb text"
    );
    assert_eq!(
        db.psql(
            &name,
            "SELECT encode(node_id, 'hex') || ':' || count(*) FROM relay_metadata GROUP BY node_id ORDER BY 1"
        ),
        format!("{k1}:2\n{k2}:1")
    );
    assert_eq!(
        db.psql(
            &name,
            &format!("SELECT observations_sent FROM node WHERE name = '{r1}'")
        ),
        "4"
    );
    // Invalid JSON is refused as data, and changes nothing.
    let err = call(&r1, &p1, &k1, &[30], &["{not json"]).unwrap_err();
    assert!(err.contains("invalid input syntax for type json"), "{err}");
    assert_eq!(count(db, &name, "SELECT count(*) FROM relay_metadata"), 3);
}

/// On PostgreSQL 14 (or a schema owned by someone else) the REVOKE in the migration only warns:
/// the migration must then refuse, naming the fix, and leave nothing behind.
#[test]
fn migrate_refuses_a_public_schema_everyone_can_write() {
    let db = TestDb::shared();
    let name = db.create_db();
    let owner = db.role_name("owner");
    db.psql(
        "postgres",
        &format!("CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD 'opw'; ALTER DATABASE {name} OWNER TO {owner}"),
    );
    db.psql(
        &name,
        "ALTER SCHEMA public OWNER TO postgres; GRANT CREATE ON SCHEMA public TO PUBLIC",
    );
    let migrate = || {
        Node::new("")
            .cmd()
            .env(
                "DATABASE_URL",
                format!("postgres://{owner}@127.0.0.1:{}/{name}", db.pg_port),
            )
            .env("BIGBROTR_DB_PASSWORD", "opw")
            .args(["archive", "migrate"])
            .output()
            .unwrap()
    };
    let out = migrate();
    assert!(!out.status.success(), "migrate must refuse");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("ALTER SCHEMA public OWNER TO {owner}")),
        "{err}"
    );
    assert_eq!(
        db.psql(&name, "SELECT to_regclass('public.event') IS NULL"),
        "t",
        "rolled back"
    );
    db.psql(&name, &format!("ALTER SCHEMA public OWNER TO {owner}"));
    let out = migrate();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.psql(
            &name,
            "SELECT has_schema_privilege('bigbrotr_node', 'public', 'CREATE')"
        ),
        "f"
    );
}

/// `node add NAME --key K` binds the node's key before it first ships: another node role can
/// then not claim it, and binding it twice to different roles is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_add_binds_a_key_before_first_ship() {
    let db = TestDb::shared();
    let name = migrated(db);
    let key = nostr::Keys::generate();
    let (sk, pk) = (key.secret_key().to_secret_hex(), key.public_key().to_hex());
    let owner = db.role_name("node");
    let out = admin(db, &name, &["node", "add", &owner, "--key", &pk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pw_owner = password_in(&stdout(&out));
    let out = admin(db, &name, &["node", "add", &owner, "--key", &pk]);
    assert!(out.status.success(), "idempotent: {}", stderr(&out));
    let (squatter, pw_squatter) = node_role(db, &name);
    let out = admin(db, &name, &["node", "add", &squatter, "--key", &pk]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("bound to role {owner}")),
        "{}",
        stderr(&out)
    );
    let relay = local_relay(&notes(2, &keys(1), |i| T0 + i as u64), RelayOpts::default()).await;
    for (role, pw, ok) in [(&squatter, &pw_squatter, false), (&owner, &pw_owner, true)] {
        let node = shipping_node(db, &name, role, pw, "give_up_secs = 1\n");
        let out = sync_then_ship_as(&node, &relay.url, &sk).await;
        assert_eq!(out.status.success(), ok, "{role}: {}", stderr(&out));
    }
    assert_eq!(count(db, &name, "SELECT count(*) FROM event"), 2);
}

trait StatusKey {
    fn status_key(&self) -> String;
}

impl StatusKey for Node {
    /// The node's public key, hex (from `init`'s output).
    fn status_key(&self) -> String {
        let out = self.run(&["init"]);
        stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("node key: "))
            .and_then(|l| l.split_whitespace().next())
            .expect("node key line")
            .to_string()
    }
}

/// What the monitor measured reaches the archive as one time series per relay per vantage
/// node: two nodes check the same relay and ship; each node's observations are there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_observations_reach_the_archive_per_vantage_node() {
    let db = TestDb::shared();
    let name = migrated(db);
    let relay = local_relay(&notes(2, &keys(1), |i| T0 + i as u64), RelayOpts::default()).await;
    for _ in 0..2 {
        let (role, pw) = node_role(db, &name);
        let node = shipping_node(db, &name, &role, &pw, "[monitor]\ncheck_timeout_secs = 3\n");
        let url = relay.url.clone();
        let node = tokio::task::spawn_blocking(move || {
            for _ in 0..2 {
                let out = node.run(&["monitor", "--relay", &url, "--once"]);
                assert!(out.status.success(), "monitor: {}", stderr(&out));
                // The archive keys a series by (relay, type, node, second): checks of one
                // kind are minutes apart in service; here, a second apart.
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            node
        })
        .await
        .unwrap();
        for _ in 0..2 {
            // Twice: the second ship has nothing new to send (watermark).
            let out = ship_once(&node);
            assert!(out.status.success(), "ship: {}", stderr(&out));
        }
        let st = node.status();
        assert_eq!(st["ship"]["observations_sent"], 4, "{st}");
    }
    // Per node: 2 NIP-11 checks + 2 NIP-66 checks, typed, for this relay.
    let per_node = db.psql(
        &name,
        &format!(
            "SELECT count(DISTINCT node_id) || ':' || count(*) FROM relay_metadata WHERE relay_url = '{}'",
            relay.url
        ),
    );
    assert_eq!(per_node, "2:8");
    let types = db.psql(
        &name,
        "SELECT type || '=' || count(*) FROM relay_metadata GROUP BY type ORDER BY type",
    );
    assert!(types.contains("nip66=4"), "{types}");
    assert_eq!(
        db.psql(
            &name,
            "SELECT DISTINCT m.data->>'network' FROM metadata m WHERE m.type = 'nip66'"
        ),
        "clearnet"
    );
    assert_eq!(
        count(
            db,
            &name,
            "SELECT count(*) FROM node WHERE observations_sent = 4"
        ),
        2
    );
}

/// A new archive takes events only from node keys an operator bound: an unbound node's ship is
/// refused with the command that fixes it, and ships once the key is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_archive_refuses_node_keys_nobody_bound() {
    let db = TestDb::shared();
    let name = strict_archive(db);
    let key = nostr::Keys::generate();
    let (sk, pk) = (key.secret_key().to_secret_hex(), key.public_key().to_hex());
    let (role, pw) = node_role(db, &name);
    let relay = local_relay(&notes(3, &keys(1), |i| T0 + i as u64), RelayOpts::default()).await;
    let node = shipping_node(db, &name, &role, &pw, "give_up_secs = 1\n");
    let out = sync_then_ship_as(&node, &relay.url, &sk).await;
    assert!(!out.status.success(), "an unbound key shipped");
    assert!(
        stderr(&out).contains("--key"),
        "the error names the fix: {}",
        stderr(&out)
    );
    assert_eq!(count(db, &name, "SELECT count(*) FROM event"), 0);
    let out = admin(db, &name, &["node", "add", &role, "--key", &pk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sync_then_ship_as(&node, &relay.url, &sk).await;
    assert!(out.status.success(), "bound: {}", stderr(&out));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event"), 3);
    // The role got the node limits.
    assert_eq!(
        db.psql(
            &name,
            &format!("SELECT rolconnlimit, array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname = '{role}'")
        ),
        "4|statement_timeout=60s"
    );
}

/// A node that ships a real event's id, pubkey and sig with other content is refused (the
/// archive recomputes the id), and the honest copy shipped later is stored as signed, with the
/// node that inserted it recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_copy_is_refused_and_cannot_shadow_the_real_event() {
    let db = TestDb::shared();
    let name = migrated(db);
    let k = keys(1);
    let real = sign_event(
        &k[0],
        T0 + 5,
        1,
        vec![vec!["t".into(), "x".into()]],
        "the real text",
    );
    let (forger, fpw) = node_role(db, &name);
    let forged_call = |content: &str| {
        format!(
            "SELECT events_new FROM ingest_batch('\\x{node}', ARRAY['wss://r.example']::text[], \
             ARRAY['clearnet']::text[], ARRAY[1]::bigint[], ARRAY['\\x{id}']::bytea[], \
             ARRAY['\\x{pk}']::bytea[], ARRAY[{ca}]::bigint[], ARRAY[1]::integer[], \
             ARRAY['[[\"t\",\"x\"]]']::text[], ARRAY['{content}']::text[], ARRAY['\\x{sig}']::bytea[], \
             ARRAY[]::bytea[], ARRAY[]::text[], ARRAY[]::bigint[])",
            node = "c3".repeat(32),
            id = real.id,
            pk = real.pubkey,
            ca = real.created_at,
            sig = real.sig,
        )
    };
    let err = db
        .psql_as(&forger, &fpw, &name, &forged_call("forged text"))
        .expect_err("a forged event was accepted");
    assert!(err.contains("does not match its id"), "{err}");
    assert_eq!(count(db, &name, "SELECT count(*) FROM event"), 0);
    // The same call with the real content is accepted: the check is the id, not the caller.
    assert_eq!(
        db.psql_as(&forger, &fpw, &name, &forged_call("the real text"))
            .as_deref(),
        Ok("1")
    );
    assert_eq!(
        db.psql(
            &name,
            "SELECT content || '|' || encode(first_node, 'hex') FROM event"
        ),
        format!("the real text|{}", "c3".repeat(32))
    );
    // An honest node's shipment adds its sighting; the stored event is the signed one.
    let relay = HostileRelay::start(vec![real.clone()], Options::default()).await;
    let (honest, hpw) = node_role(db, &name);
    let node = shipping_node(db, &name, &honest, &hpw, "");
    let key = nostr::Keys::generate().secret_key().to_secret_hex();
    let out = sync_then_ship_as(&node, &relay.url(), &key).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_archive_faithful(db, &name);
}

/// Retention on a shipping node (`storage.keep_shipped_days`): the bodies of events the archive
/// acknowledged are evicted, an unshipped event never is, and the ids and sightings that stay
/// keep dedup exact: the same events from another relay are sightings only, shipped as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_events_are_evicted_and_unshipped_ones_kept() {
    let db = TestDb::shared();
    let name = migrated(db);
    let authors = keys(3);
    let a = notes(200, &authors, |i| T0 + i as u64 * 3);
    let b = notes(100, &authors, |i| T0 + 9_000 + i as u64);
    let r1 = local_relay(&a, RelayOpts::default()).await;
    let mut on_r2: Vec<_> = a[..50].to_vec();
    on_r2.extend(b.iter().cloned());
    let r2 = local_relay(&on_r2, RelayOpts::default()).await;
    let r3 = local_relay(&a, RelayOpts::default()).await;
    let (role, pw) = node_role(db, &name);
    let node = shipping_node(
        db,
        &name,
        &role,
        &pw,
        "give_up_secs = 2\n[storage]\nkeep_shipped_days = 0\n",
    );
    let exported = |node: &Node| node.exported_ids();

    assert!(node.sync_once(&r1.url).await.status.success());
    let out = ship_once(&node);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    assert_same_ids(&archive_ids(db, &name), &ids_of(&a));
    let st = node.status();
    assert_eq!(st["events_evicted"], 200, "shipped and evicted: {st}");
    assert_eq!(st["events_stored"], 200, "the ids stay known");
    assert!(exported(&node).is_empty(), "evicted bodies are gone");

    // New events while the archive refuses this node: the sweep runs, nothing unshipped goes.
    assert!(node.sync_once(&r2.url).await.status.success());
    let refused = node
        .cmd()
        .env("BIGBROTR_DB_PASSWORD", "not-the-password")
        .args(["ship", "--once"])
        .output()
        .expect("ship");
    assert!(!refused.status.success(), "a refused ship must fail");
    assert_eq!(node.status()["events_evicted"], 200);
    assert_same_ids(&exported(&node), &ids_of(&b));

    // Shipped now: the new events and the 50 sightings of evicted events both reach the archive.
    let out = ship_once(&node);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    let mut all = ids_of(&a);
    all.extend(ids_of(&b));
    assert_same_ids(&archive_ids(db, &name), &all);
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 350);
    assert_eq!(node.status()["events_evicted"], 300);
    assert!(exported(&node).is_empty());

    // Every evicted event again, from a third relay: sightings only, never stored or sent again.
    assert!(node.sync_once(&r3.url).await.status.success());
    let st = node.status();
    assert_eq!(
        st["events_stored"], 300,
        "no evicted event is stored again: {st}"
    );
    assert_eq!(st["spool_depth"], 200, "one sighting each, no event bodies");
    let out = ship_once(&node);
    assert!(out.status.success(), "ship: {}", stderr(&out));
    assert_eq!(count(db, &name, "SELECT count(*) FROM event_relay"), 550);
    assert_eq!(
        db.psql(
            &name,
            &format!("SELECT events_sent, events_new FROM node WHERE name = '{role}'")
        ),
        "300|300",
        "no event body was sent twice"
    );
}
