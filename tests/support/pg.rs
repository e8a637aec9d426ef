//! A real PostgreSQL with a real PgBouncer (transaction pooling) in front, on loopback, started
//! by `scripts/testdb` (the same script `scripts/test` uses).
//!
//! [`TestDb::shared`] is the suite's cluster (`scripts/test` starts one and exports its ports),
//! or one this test process starts and stops at exit. Tests that stop or kill the servers use
//! their own: [`TestDb::start`], stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub struct TestDb {
    pub dir: PathBuf,
    pub pg_port: u16,
    pub bouncer_port: u16,
    /// Stop the servers and delete `dir` on drop.
    owned: bool,
}

static SHARED: OnceLock<TestDb> = OnceLock::new();
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testdb")
}

extern "C" fn stop_shared() {
    if let Some(dir) = SHARED_DIR.get() {
        let _ = Command::new(script()).arg("down").arg(dir).output();
    }
}

impl TestDb {
    /// A new cluster + PgBouncer for this test alone.
    pub fn start() -> TestDb {
        Self::start_with(&[])
    }

    /// Like [`TestDb::start`], with PgBouncer requiring TLS (certificate for 127.0.0.1 signed
    /// by the throwaway CA in `dir/ca.crt`).
    pub fn start_tls() -> TestDb {
        Self::start_with(&["tls"])
    }

    fn start_with(extra: &[&str]) -> TestDb {
        let dir = std::env::temp_dir().join(format!(
            "bigbrotr-testdb-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let out = Command::new(script())
            .arg("up")
            .arg(&dir)
            .args(extra)
            .output()
            .expect("run scripts/testdb");
        assert!(
            out.status.success(),
            "scripts/testdb up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = TestDb::from_dir(&dir);
        db.owned = true;
        db
    }

    fn from_dir(dir: &Path) -> TestDb {
        let port = |f: &str| -> u16 {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()))
                .trim()
                .parse()
                .expect("port")
        };
        TestDb {
            dir: dir.to_path_buf(),
            pg_port: port("pg_port"),
            bouncer_port: port("bouncer_port"),
            owned: false,
        }
    }

    /// The suite's cluster: `BIGBROTR_TEST_DB_DIR` from `scripts/test`, else one started for
    /// this process (stopped when it exits).
    pub fn shared() -> &'static TestDb {
        SHARED.get_or_init(|| match std::env::var("BIGBROTR_TEST_DB_DIR") {
            Ok(d) if Path::new(&d).join("bouncer_port").exists() => TestDb::from_dir(Path::new(&d)),
            _ => {
                let mut db = TestDb::start();
                db.owned = false; // stopped by the exit hook instead
                let _ = SHARED_DIR.set(db.dir.clone());
                // SAFETY: registers a plain extern "C" fn to run at process exit.
                unsafe {
                    libc::atexit(stop_shared);
                }
                db
            }
        })
    }

    /// Superuser URL straight to PostgreSQL (trust auth).
    pub fn admin_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.pg_port)
    }

    /// URL through PgBouncer for `user` (password from the environment or a password file).
    pub fn bouncer_url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.bouncer_port)
    }

    /// Run SQL as the superuser, straight to PostgreSQL; the output of `psql -At`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-p")
            .arg(self.pg_port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run SQL as `user` with `password` through PgBouncer: Ok(output) or Err(stderr).
    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-At", "-v", "ON_ERROR_STOP=1"])
            .arg("-p")
            .arg(self.bouncer_port.to_string())
            .args(["-U", user, "-d", db, "-c", sql])
            .env("PGPASSWORD", password)
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A fresh, empty database with a unique name.
    pub fn create_db(&self) -> String {
        let name = format!(
            "bb_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// A unique role name (roles are cluster-wide).
    pub fn role_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn control(&self, what: &str, action: &str) {
        let out = Command::new(script())
            .args([what, action])
            .arg(&self.dir)
            .output()
            .expect("run scripts/testdb");
        assert!(
            out.status.success(),
            "testdb {what} {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// PostgreSQL: "stop" (fast shutdown), "start", "kill" (SIGKILL, a crash).
    pub fn pg(&self, action: &str) {
        self.control("pg", action);
    }

    /// PgBouncer: "stop" or "start".
    pub fn bouncer(&self, action: &str) {
        self.control("bouncer", action);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(script()).arg("down").arg(&self.dir).output();
        }
    }
}
