//! Ship benchmark (docs/BENCHMARKS.md): rows per second from a node's spool through PgBouncer
//! into PostgreSQL (`bigbrotr ship --once`, the real binary), against `psql \copy` of the same
//! rows straight into the same tables of an identical, freshly migrated archive, in the same
//! run on the same cluster. Rows = events + sightings (one sighting per event here).
//!
//! Also: the replay rate (every event already archived, as after a crash).
//!
//! Run: `cargo bench --bench ship` (env BENCH_EVENTS, default 50000; BENCH_ROUNDS, default 3).
//! Starts its own PostgreSQL + PgBouncer through scripts/testdb.

#[path = "../tests/support/bench.rs"]
#[allow(dead_code)]
mod bench;
use bench::env_usize;

#[allow(dead_code)]
#[path = "../tests/support/pg.rs"]
mod pg;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bigbrotr::config::Config;
use bigbrotr::protocol::url::{parse_relay_url, UrlPolicy};
use bigbrotr::protocol::Event;
use bigbrotr::store::Stores;

const BIN: &str = env!("CARGO_BIN_EXE_bigbrotr");
const RELAY: &str = "ws://127.0.0.1:7777";

/// Deterministic pseudo-random bytes (xorshift), so every round ships the same rows.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        out
    }
}

/// Events shaped like typical notes: a `p` and an `e` tag, a hashtag, ~200 bytes of content.
/// (Ids and signatures are random: shipping does not re-verify; the node did.)
fn events(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let p: [u8; 32] = rng.bytes();
            let e: [u8; 32] = rng.bytes();
            Event {
                id: rng.bytes(),
                pubkey: rng.bytes(),
                created_at: 1_700_000_000 + i as u64,
                kind: 1,
                tags: vec![
                    vec!["p".into(), hex::encode(p)],
                    vec!["e".into(), hex::encode(e), String::new(), "reply".into()],
                    vec!["t".into(), format!("tag{}", i % 100)],
                ],
                content: format!("note {i}: {}", "lorem ipsum dolor sit amet ".repeat(7)),
                sig: {
                    let a: [u8; 32] = rng.bytes();
                    let b: [u8; 32] = rng.bytes();
                    let mut s = [0u8; 64];
                    s[..32].copy_from_slice(&a);
                    s[32..].copy_from_slice(&b);
                    s
                },
            }
        })
        .collect()
}

/// A node data dir whose spool holds `evs`, each seen once on RELAY.
fn node_with_spool(dir: &Path, upstream: &str, pwfile: &Path, evs: &[Event]) -> std::path::PathBuf {
    let cfg_path = dir.join("config.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[node]\ndata_dir = \"{}\"\n[network]\nallow_local = true\n[tor]\nenabled = false\n[seeder]\nenabled = false\n\
             [log]\nlevel = \"warn\"\n[storage]\nsync_writes = false\n\
             [upstream]\ndatabase_url = \"{upstream}\"\npassword_file = \"{}\"\n",
            dir.join("data").display(),
            pwfile.display()
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&cfg_path)).expect("config");
    let stores = Stores::open(&cfg).expect("stores");
    let policy = UrlPolicy {
        allow_local: true,
        allow_hosts: vec![],
    };
    let url = parse_relay_url(RELAY, &policy).unwrap();
    let (relay, _) = stores.state.add_relay(&url, "bench").unwrap();
    for chunk in evs.chunks(1000) {
        let known = vec![false; chunk.len()];
        stores
            .events
            .write_page(relay, 1_700_000_000, chunk, &known, None)
            .unwrap();
    }
    stores.events.flush().unwrap();
    assert_eq!(stores.events.counters().spool_depth, evs.len() as u64);
    cfg_path
}

/// Run `ship --once`: (wall time, CPU time of the node process).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn ship(cfg: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    let child = Command::new(BIN)
        .args(["--config"])
        .arg(cfg)
        .args(["ship", "--once"])
        .env_remove("BIGBROTR_DB_PASSWORD")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run bigbrotr ship");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are valid out-parameters.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4");
    let d = t.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ship failed"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec * 1000) as u32);
    (d, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// COPY text format escaping.
fn copy_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o
}

/// The same rows as COPY files: event (with tagvalues precomputed) and event_relay.
fn copy_files(dir: &Path, evs: &[Event]) -> (std::path::PathBuf, std::path::PathBuf) {
    let ef = dir.join("event.copy");
    let rf = dir.join("event_relay.copy");
    let mut e = std::io::BufWriter::new(std::fs::File::create(&ef).unwrap());
    let mut r = std::io::BufWriter::new(std::fs::File::create(&rf).unwrap());
    for ev in evs {
        let tagvalues: Vec<String> = ev
            .tags
            .iter()
            .filter(|t| t.len() >= 2 && t[0].chars().count() == 1 && t[1].len() <= 512)
            .map(|t| format!("\"{}:{}\"", t[0], t[1]))
            .collect();
        writeln!(
            e,
            "\\\\x{}\t\\\\x{}\t{}\t{}\t{}\t{{{}}}\t{}\t\\\\x{}",
            hex::encode(ev.id),
            hex::encode(ev.pubkey),
            ev.created_at,
            ev.kind,
            copy_text(&serde_json::to_string(&ev.tags).unwrap()),
            copy_text(&tagvalues.join(",")),
            copy_text(&ev.content),
            hex::encode(ev.sig)
        )
        .unwrap();
        writeln!(r, "\\\\x{}\t{RELAY}/\t1700000000", hex::encode(ev.id)).unwrap();
    }
    e.flush().unwrap();
    r.flush().unwrap();
    (ef, rf)
}

fn migrate(db: &pg::TestDb, name: &str) {
    let out = Command::new(BIN)
        .args(["archive", "migrate"])
        .env("DATABASE_URL", db.admin_url(name))
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_usize("BENCH_EVENTS", 50_000);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let rows = (2 * n) as f64;
    let db = pg::TestDb::start();
    let evs = events(n);
    let work = tempfile::tempdir().unwrap();
    let (ef, rf) = copy_files(work.path(), &evs);
    let mut ratios = Vec::new();
    let mut replay_ratios = Vec::new();
    println!("ship: {n} events + {n} sightings per round, {rounds} rounds");
    for round in 0..rounds {
        // Fresh archives for both paths.
        let a = db.create_db();
        let b = db.create_db();
        migrate(&db, &a);
        migrate(&db, &b);
        let out = Command::new(BIN)
            .args([
                "archive",
                "node",
                "add",
                &format!("bench_{}_{round}", std::process::id()),
            ])
            .env("DATABASE_URL", db.admin_url(&a))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let pw = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("BIGBROTR_DB_PASSWORD="))
            .unwrap()
            .to_string();
        let pwfile = work.path().join(format!("pw{round}"));
        std::fs::write(&pwfile, &pw).unwrap();
        let upstream = db.bouncer_url(&format!("bench_{}_{round}", std::process::id()), &a);
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let c1 = node_with_spool(d1.path(), &upstream, &pwfile, &evs);
        let c2 = node_with_spool(d2.path(), &upstream, &pwfile, &evs);

        // Baseline: psql \copy of the same rows, straight to PostgreSQL.
        db.psql(
            &b,
            &format!("INSERT INTO relay VALUES ('{RELAY}/', 'clearnet', 1)"),
        );
        let t = Instant::now();
        db.psql(&b, &format!("\\copy event FROM '{}'", ef.display()));
        db.psql(&b, &format!("\\copy event_relay FROM '{}'", rf.display()));
        let copy = t.elapsed();

        let (shipped, ship_cpu) = ship(&c1);
        let (replay, _) = ship(&c2);
        assert_eq!(db.psql(&a, "SELECT count(*) FROM event"), n.to_string());
        assert_eq!(
            db.psql(&a, "SELECT count(*) FROM event_relay"),
            n.to_string()
        );

        let copy_rate = rows / copy.as_secs_f64();
        let ship_rate = rows / shipped.as_secs_f64();
        let replay_rate = rows / replay.as_secs_f64();
        println!(
            "round {round}: copy {:.0} rows/s ({:.2} s), ship {:.0} rows/s ({:.2} s, node CPU {:.2} s) = {:.2}x, replay {:.0} rows/s = {:.2}x",
            copy_rate,
            copy.as_secs_f64(),
            ship_rate,
            shipped.as_secs_f64(),
            ship_cpu.as_secs_f64(),
            ship_rate / copy_rate,
            replay_rate,
            replay_rate / copy_rate
        );
        ratios.push(ship_rate / copy_rate);
        replay_ratios.push(replay_rate / copy_rate);
        db.psql("postgres", &format!("DROP DATABASE {a} WITH (FORCE)"));
        db.psql("postgres", &format!("DROP DATABASE {b} WITH (FORCE)"));
    }
    println!(
        "ship/copy median {:.2}x (goal 0.80); replay/copy median {:.2}x",
        median(ratios),
        median(replay_ratios)
    );
}
