//! Relational node state in SQLite (WAL mode): the relay registry, per-relay sync cursors and
//! service state. An operator can open `state.sqlite` with the sqlite3 shell.
//!
//! Invariants kept here:
//! 2. (with [`super::events`]) A cursor row is only ever written after the event batch it covers
//!    is durable in RocksDB; see `EventStore::write_page`. Cursor updates are single statements,
//!    so a crash leaves either the old or the new cursor, never a torn one.
//! - The Finder's new relays and its watermark are written in ONE transaction
//!   ([`State::register_with_watermark`]), so a crash neither loses relays nor re-reads forever.
//!
//! Cursor meaning (per relay): `done_until` = every event with `created_at <= done_until` that
//! the relay held when that pass began is stored. A pass in progress fills the window
//! `(done_until, pass_top]` from the top down; `pass_frontier` = everything in
//! `(pass_frontier, pass_top]` is stored. When a pass reaches `done_until`, `done_until` becomes
//! `pass_top` and the pass ends.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::protocol::url::RelayUrl;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database task failed: {0}")]
    Task(String),
}

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE relay (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        network TEXT NOT NULL,
        source TEXT NOT NULL,
        discovered_at INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'unknown',
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        max_limit INTEGER,
        supports_count INTEGER,
        supports_negentropy INTEGER
    );
    CREATE TABLE sync_cursor (
        relay_id INTEGER PRIMARY KEY REFERENCES relay(id),
        done_until INTEGER,
        pass_top INTEGER,
        pass_frontier INTEGER,
        events_received INTEGER NOT NULL DEFAULT 0,
        events_new INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE unproven_second (
        relay_id INTEGER NOT NULL REFERENCES relay(id),
        second INTEGER NOT NULL,
        reason TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (relay_id, second)
    );
    CREATE TABLE service_state (
        service TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (service, key)
    );",
    // version 2: when the NIP-11 document (max_limit) was last fetched
    "ALTER TABLE relay ADD COLUMN nip11_checked_at INTEGER;",
    // version 3: the monitor (see store/health.rs)
    super::health::SCHEMA_V3,
    // version 4: verdicts expire (when each was given), and relays whose answers were caught
    // out of order (see services/sync/session.rs)
    "ALTER TABLE relay ADD COLUMN count_checked_at INTEGER;
    ALTER TABLE relay ADD COLUMN negentropy_checked_at INTEGER;
    ALTER TABLE relay ADD COLUMN misordered_at INTEGER;
    ALTER TABLE relay ADD COLUMN misordered_cap INTEGER;
    CREATE INDEX relay_due_known ON relay (next_attempt_at, id) WHERE last_success_at IS NOT NULL;
    CREATE INDEX relay_due_new ON relay (next_attempt_at, id) WHERE last_success_at IS NULL;
    CREATE INDEX observation_document ON observation (document_id);
    CREATE INDEX relay_health_nip11 ON relay_health (nip11_id);
    CREATE INDEX relay_health_nip66 ON relay_health (nip66_id);
    CREATE INDEX uptime_day_day ON uptime_day (day);",
    // version 5: row counts kept by triggers (`status` must not count millions of rows)
    "CREATE TABLE row_count (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
    INSERT INTO row_count (name, n) SELECT 'observation', count(*) FROM observation;
    CREATE TRIGGER observation_counted_in AFTER INSERT ON observation BEGIN
        UPDATE row_count SET n = n + 1 WHERE name = 'observation';
    END;
    CREATE TRIGGER observation_counted_out AFTER DELETE ON observation BEGIN
        UPDATE row_count SET n = n - 1 WHERE name = 'observation';
    END;",
    // version 6: unproven seconds are capped per relay; those past the cap are counted
    "ALTER TABLE relay ADD COLUMN unproven_dropped INTEGER NOT NULL DEFAULT 0;",
    // version 7: when each relay's next check is due, kept by triggers and indexed (the due-check
    // query ordered the whole registry by an expression every second); every relay has a
    // health row from registration on (its defaults are what a missing row meant)
    super::health::SCHEMA_V7,
];

/// Unproven seconds recorded per relay at most: a relay saturating every second (hostile, or
/// huge without COUNT/NIP-77) must not grow the table without bound. Past the cap they are only
/// counted (`relay.unproven_dropped`); the relay's history is then never called complete.
pub const MAX_UNPROVEN_PER_RELAY: i64 = 10_000;

/// Relays due for a sync session that have answered before (by the `relay_due_known` index),
/// then those never reached (`relay_due_new`): see [`State::due_relays`].
pub(super) const DUE_RELAYS: &str = "SELECT id, url, network, source, discovered_at, status,
        failures, last_error, last_success_at, next_attempt_at FROM relay
     WHERE next_attempt_at <= ?1 AND last_success_at IS NOT NULL
     ORDER BY next_attempt_at, id LIMIT ?2";
pub(super) const DUE_NEW_RELAYS: &str = "SELECT id, url, network, source, discovered_at, status,
        failures, last_error, last_success_at, next_attempt_at FROM relay
     WHERE next_attempt_at <= ?1 AND last_success_at IS NULL
     ORDER BY next_attempt_at, id LIMIT ?2";

/// How long a relay's refusal of COUNT or NIP-77, or its caught-out-of-order verdict, stands
/// before it is tested again (relays are upgraded; a verdict must not be forever).
pub const VERDICT_TTL_SECS: i64 = 7 * 86_400;

#[derive(Debug, Clone, Serialize)]
pub struct RelayRow {
    pub id: u32,
    pub url: String,
    pub network: String,
    pub source: String,
    pub discovered_at: i64,
    pub status: String,
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
    pub next_attempt_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cursor {
    pub done_until: Option<u64>,
    pub pass_top: Option<u64>,
    pub pass_frontier: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncProgress {
    pub url: String,
    pub status: String,
    pub done_until: Option<u64>,
    pub pass_top: Option<u64>,
    pub pass_frontier: Option<u64>,
    pub events_received: u64,
    pub events_new: u64,
    pub unproven_seconds: u64,
    pub last_error: Option<String>,
}

/// Per-relay capabilities learned while syncing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayCaps {
    /// NIP-11 `limitation.max_limit` as last fetched (a hint: advertised is not actual).
    pub max_limit: Option<u64>,
    /// When the NIP-11 document was last fetched, unix seconds.
    pub nip11_checked_at: Option<i64>,
    /// `Some(false)` only for a refusal that answered our request, and only for
    /// [`VERDICT_TTL_SECS`] after `count_checked_at` (older verdicts read back as `None`).
    pub supports_count: Option<bool>,
    pub count_checked_at: Option<i64>,
    pub supports_negentropy: Option<bool>,
    pub negentropy_checked_at: Option<i64>,
    /// When this relay was last caught sending events out of newest-first order (a page held
    /// events older than ones it left out); `None` once [`VERDICT_TTL_SECS`] have passed.
    pub misordered_at: Option<i64>,
    /// How many events the relay's honest part of that answer held: a lower bound of its clamp.
    pub misordered_cap: Option<u64>,
}

impl RelayCaps {
    /// Record a verdict on COUNT (`Some(false)`: refused) given now.
    pub fn set_count(&mut self, v: bool) {
        self.supports_count = Some(v);
        self.count_checked_at = Some(now());
    }

    /// Record a verdict on NIP-77 given now.
    pub fn set_negentropy(&mut self, v: bool) {
        self.supports_negentropy = Some(v);
        self.negentropy_checked_at = Some(now());
    }

    /// Drop "no" verdicts (and the out-of-order mark) older than [`VERDICT_TTL_SECS`] at `at`.
    fn expire(&mut self, at: i64) {
        let stale = |t: Option<i64>| t.is_none_or(|t| at - t >= VERDICT_TTL_SECS);
        if self.supports_count == Some(false) && stale(self.count_checked_at) {
            self.supports_count = None;
        }
        if self.supports_negentropy == Some(false) && stale(self.negentropy_checked_at) {
            self.supports_negentropy = None;
        }
        if self.misordered_at.is_some() && stale(self.misordered_at) {
            self.misordered_at = None;
            self.misordered_cap = None;
        }
    }
}

pub struct State {
    /// One connection: SQLite serializes writers anyway, and every statement here is short.
    conn: Mutex<Connection>,
}

/// Run `f` with `synchronous = FULL`: its commit is fsynced before it returns. The connection
/// otherwise runs with `NORMAL` (WAL commits become durable at the next checkpoint, losing at
/// most the last moments on a power cut: cursors and checks, which are simply redone). Relay
/// registrations cannot be redone that way: RocksDB records (sightings) refer to relays by
/// rowid and are fsynced, so a registration lost to a power cut would let the rowid be given
/// to another URL and the sightings be attributed to the wrong relay.
fn durably<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StateError>,
) -> Result<T, StateError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let r = f(conn);
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    r
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl State {
    pub fn open(path: &Path) -> Result<State, StateError> {
        let err = |source| StateError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let version = conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map_err(err)?
            .max(0) as usize;
        if version > SCHEMA.len() {
            return Err(err(rusqlite::Error::InvalidParameterName(format!(
                "schema version {version} is newer than this binary knows ({}); upgrade bigbrotr",
                SCHEMA.len()
            ))));
        }
        for (i, step) in SCHEMA.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(step).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(State {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a relay; returns (id, newly inserted). Durable when it returns (see
    /// [`durably`]).
    pub fn add_relay(&self, url: &RelayUrl, source: &str) -> Result<(u32, bool), StateError> {
        let conn = self.conn();
        durably(&conn, |c| add_relay_on(c, url, source))
    }

    /// Register relays and set a service watermark in one transaction.
    pub fn register_with_watermark(
        &self,
        urls: &[RelayUrl],
        source: &str,
        service: &str,
        key: &str,
        value: &str,
    ) -> Result<usize, StateError> {
        let conn = self.conn();
        durably(&conn, |c| {
            let tx = c.unchecked_transaction()?;
            let mut added = 0;
            for url in urls {
                if add_relay_on(&tx, url, source)?.1 {
                    added += 1;
                }
            }
            set_state_on(&tx, service, key, value)?;
            tx.commit()?;
            Ok(added)
        })
    }

    /// Put a relay back under the id the event store knows it by (an older `state.sqlite` was
    /// restored beside a newer event store). Durable when it returns. Returns false, changing
    /// nothing, when the id or the URL is already taken.
    pub fn restore_relay(&self, id: u32, url: &RelayUrl) -> Result<bool, StateError> {
        let conn = self.conn();
        durably(&conn, |c| {
            Ok(c.execute(
                "INSERT INTO relay (id, url, network, source, discovered_at)
                 VALUES (?1, ?2, ?3, 'restored', ?4) ON CONFLICT DO NOTHING",
                params![id, url.as_str(), url.network().as_str(), now()],
            )? == 1)
        })
    }

    /// The id `url` is registered under, if it is.
    pub fn relay_id(&self, url: &RelayUrl) -> Result<Option<u32>, StateError> {
        relay_id_on(&self.conn(), url)
    }

    /// Relays whose events may be in the event store: a cursor, an unproven second or a
    /// finished session refers to them (for binding an event store made before bindings).
    pub fn synced_relays(&self) -> Result<Vec<(u32, String)>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, url FROM relay WHERE last_success_at IS NOT NULL
                OR id IN (SELECT relay_id FROM sync_cursor)
                OR id IN (SELECT relay_id FROM unproven_second) ORDER BY id",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Those of `urls` not registered yet (one indexed lookup each, under one lock).
    pub fn unknown_urls(&self, urls: &[RelayUrl]) -> Result<Vec<RelayUrl>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT 1 FROM relay WHERE url = ?1")?;
        let mut out = Vec::new();
        for u in urls {
            if !st.exists([u.as_str()])? {
                out.push(u.clone());
            }
        }
        Ok(out)
    }

    pub fn relays(&self) -> Result<Vec<RelayRow>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, url, network, source, discovered_at, status, failures, last_error,
                    last_success_at, next_attempt_at FROM relay ORDER BY url",
        )?;
        let rows = st.query_map([], row_to_relay)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Registry relays with `id > after`, by id (the shipper sends new ones upstream).
    pub fn relays_after(&self, after: u32, max: usize) -> Result<Vec<RelayRow>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, url, network, source, discovered_at, status, failures, last_error,
                    last_success_at, next_attempt_at FROM relay
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, max as i64], row_to_relay)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One registry relay by id.
    pub fn relay_by_id(&self, id: u32) -> Result<Option<RelayRow>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, url, network, source, discovered_at, status, failures, last_error,
                        last_success_at, next_attempt_at FROM relay WHERE id = ?1",
                [id],
                row_to_relay,
            )
            .optional()?)
    }

    /// Relays whose next attempt is due, soonest first.
    /// Relays due at `at`: up to `max` that have answered a session before, most overdue first,
    /// then up to `max` never reached. Known-good relays come first so that a flood of
    /// registered junk cannot delay them (the scheduler also caps the sessions given to
    /// never-reached relays).
    pub fn due_relays(&self, at: i64, max: usize) -> Result<Vec<RelayRow>, StateError> {
        let conn = self.conn();
        let mut out = Vec::new();
        for sql in [DUE_RELAYS, DUE_NEW_RELAYS] {
            let mut st = conn.prepare_cached(sql)?;
            let rows = st.query_map(params![at, max as i64], row_to_relay)?;
            for r in rows {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// A session with the relay worked: reset failures, come back after `next_in` seconds.
    pub fn record_success(&self, id: u32, next_in: i64) -> Result<(), StateError> {
        let t = now();
        self.conn().execute(
            "UPDATE relay SET status = 'online', failures = 0, last_error = NULL,
                last_attempt_at = ?2, last_success_at = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, t, t + next_in],
        )?;
        Ok(())
    }

    /// A session failed: count it and schedule the retry with the given backoff.
    pub fn record_failure(
        &self,
        id: u32,
        error: &str,
        backoff_secs: i64,
    ) -> Result<(), StateError> {
        let t = now();
        self.conn().execute(
            "UPDATE relay SET status = 'offline', failures = failures + 1, last_error = ?2,
                last_attempt_at = ?3, next_attempt_at = ?4 WHERE id = ?1",
            params![id, truncate(error, 500), t, t + backoff_secs],
        )?;
        Ok(())
    }

    /// The relay could not be tried (the built-in Tor is still bootstrapping): look again after
    /// `wait_secs`, without counting a failure or changing its status.
    pub fn defer(&self, id: u32, reason: &str, wait_secs: i64) -> Result<(), StateError> {
        let t = now();
        self.conn().execute(
            "UPDATE relay SET last_error = ?2, last_attempt_at = ?3, next_attempt_at = ?4
             WHERE id = ?1",
            params![id, truncate(reason, 500), t, t + wait_secs],
        )?;
        Ok(())
    }

    pub fn failures(&self, id: u32) -> Result<i64, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT failures FROM relay WHERE id = ?1", [id], |r| {
                r.get(0)
            })?)
    }

    /// Times written while the clock was ahead (a bad RTC, a wrong NTP answer) that lie more
    /// than `slack` seconds after `at`: schedules become due now, and a cursor whose proof
    /// reaches into the future is distrusted entirely (the pass that wrote it ran at an
    /// unknown real time, so what it proved is unknown): that relay's history is walked again,
    /// which costs wire, not storage (stored events are deduplicated). Returns how many relay
    /// cursors were reset.
    pub fn repair_future_times(&self, at: i64, slack: i64) -> Result<usize, StateError> {
        let limit = at + slack;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE relay SET next_attempt_at = ?1 WHERE next_attempt_at > ?2",
            params![at, limit],
        )?;
        tx.execute(
            "UPDATE relay_health SET next_open_at = min(next_open_at, ?1),
                next_nip11_at = min(next_nip11_at, ?1), next_nip66_at = min(next_nip66_at, ?1)
             WHERE next_open_at > ?2 OR next_nip11_at > ?2 OR next_nip66_at > ?2",
            params![at, limit],
        )?;
        let cursors = tx.execute(
            "UPDATE sync_cursor SET done_until = NULL, pass_top = NULL, pass_frontier = NULL
             WHERE done_until > ?1 OR pass_top > ?1",
            [limit],
        )?;
        tx.commit()?;
        Ok(cursors)
    }

    pub fn caps(&self, id: u32) -> Result<RelayCaps, StateError> {
        Ok(self.conn().query_row(
            "SELECT max_limit, supports_count, supports_negentropy, nip11_checked_at,
                count_checked_at, negentropy_checked_at, misordered_at, misordered_cap
             FROM relay WHERE id = ?1",
            [id],
            |r| {
                let mut caps = RelayCaps {
                    max_limit: r.get::<_, Option<i64>>(0)?.map(|v| v.max(1) as u64),
                    supports_count: r.get(1)?,
                    supports_negentropy: r.get(2)?,
                    nip11_checked_at: r.get(3)?,
                    count_checked_at: r.get(4)?,
                    negentropy_checked_at: r.get(5)?,
                    misordered_at: r.get(6)?,
                    misordered_cap: r.get::<_, Option<i64>>(7)?.map(|v| v.max(1) as u64),
                };
                caps.expire(now());
                Ok(caps)
            },
        )?)
    }

    pub fn set_caps(&self, id: u32, caps: &RelayCaps) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE relay SET max_limit = ?2, supports_count = ?3, supports_negentropy = ?4,
                nip11_checked_at = ?5, count_checked_at = ?6, negentropy_checked_at = ?7,
                misordered_at = ?8, misordered_cap = ?9 WHERE id = ?1",
            params![
                id,
                caps.max_limit.map(|v| v as i64),
                caps.supports_count,
                caps.supports_negentropy,
                caps.nip11_checked_at,
                caps.count_checked_at,
                caps.negentropy_checked_at,
                caps.misordered_at,
                caps.misordered_cap.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    pub fn cursor(&self, id: u32) -> Result<Cursor, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT done_until, pass_top, pass_frontier FROM sync_cursor WHERE relay_id = ?1",
                [id],
                |r| {
                    Ok(Cursor {
                        done_until: r.get::<_, Option<i64>>(0)?.map(|v| v as u64),
                        pass_top: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        pass_frontier: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Write a cursor. Call only after the events it covers are durable (invariant 2).
    pub fn set_cursor(
        &self,
        id: u32,
        c: &Cursor,
        received: u64,
        new: u64,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO sync_cursor (relay_id, done_until, pass_top, pass_frontier, events_received, events_new, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(relay_id) DO UPDATE SET done_until = ?2, pass_top = ?3, pass_frontier = ?4,
                events_received = events_received + ?5, events_new = events_new + ?6, updated_at = ?7",
            params![
                id,
                c.done_until.map(|v| v as i64),
                c.pass_top.map(|v| v as i64),
                c.pass_frontier.map(|v| v as i64),
                received as i64,
                new as i64,
                now()
            ],
        )?;
        Ok(())
    }

    pub fn record_unproven(&self, id: u32, second: u64, reason: &str) -> Result<(), StateError> {
        let conn = self.conn();
        let written = conn.execute(
            "INSERT INTO unproven_second (relay_id, second, reason, recorded_at)
             SELECT ?1, ?2, ?3, ?4
             WHERE (SELECT count(*) FROM unproven_second WHERE relay_id = ?1) < ?5
                OR EXISTS (SELECT 1 FROM unproven_second WHERE relay_id = ?1 AND second = ?2)
             ON CONFLICT(relay_id, second) DO UPDATE SET reason = ?3, recorded_at = ?4",
            params![
                id,
                second as i64,
                truncate(reason, 300),
                now(),
                MAX_UNPROVEN_PER_RELAY
            ],
        )?;
        if written == 0 {
            conn.execute(
                "UPDATE relay SET unproven_dropped = unproven_dropped + 1 WHERE id = ?1",
                [id],
            )?;
        }
        Ok(())
    }

    /// Unproven seconds of this relay past [`MAX_UNPROVEN_PER_RELAY`], counted, not listed.
    pub fn unproven_dropped(&self, id: u32) -> Result<u64, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT unproven_dropped FROM relay WHERE id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0) as u64)
    }

    pub fn clear_unproven(&self, id: u32, second: u64) -> Result<(), StateError> {
        self.conn().execute(
            "DELETE FROM unproven_second WHERE relay_id = ?1 AND second = ?2",
            params![id, second as i64],
        )?;
        Ok(())
    }

    pub fn unproven(&self, id: u32) -> Result<Vec<(u64, String)>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT second, reason FROM unproven_second WHERE relay_id = ?1 ORDER BY second",
        )?;
        let rows = st.query_map([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn progress(&self) -> Result<Vec<SyncProgress>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT r.url, r.status, c.done_until, c.pass_top, c.pass_frontier,
                    COALESCE(c.events_received, 0), COALESCE(c.events_new, 0),
                    (SELECT COUNT(*) FROM unproven_second u WHERE u.relay_id = r.id)
                        + r.unproven_dropped, r.last_error
             FROM relay r LEFT JOIN sync_cursor c ON c.relay_id = r.id ORDER BY r.url",
        )?;
        let rows = st.query_map([], |r| {
            Ok(SyncProgress {
                url: r.get(0)?,
                status: r.get(1)?,
                done_until: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                pass_top: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                pass_frontier: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                events_received: r.get::<_, i64>(5)? as u64,
                events_new: r.get::<_, i64>(6)? as u64,
                unproven_seconds: r.get::<_, i64>(7)? as u64,
                last_error: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_state(&self, service: &str, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM service_state WHERE service = ?1 AND key = ?2",
                [service, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_state(&self, service: &str, key: &str, value: &str) -> Result<(), StateError> {
        set_state_on(&self.conn(), service, key, value)
    }
}

fn add_relay_on(
    conn: &Connection,
    url: &RelayUrl,
    source: &str,
) -> Result<(u32, bool), StateError> {
    let inserted = conn.execute(
        "INSERT INTO relay (url, network, source, discovered_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(url) DO NOTHING",
        params![url.as_str(), url.network().as_str(), source, now()],
    )? == 1;
    let id = relay_id_on(conn, url)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    Ok((id, inserted))
}

fn relay_id_on(conn: &Connection, url: &RelayUrl) -> Result<Option<u32>, StateError> {
    Ok(conn
        .query_row("SELECT id FROM relay WHERE url = ?1", [url.as_str()], |r| {
            r.get(0)
        })
        .optional()?)
}

fn set_state_on(
    conn: &Connection,
    service: &str,
    key: &str,
    value: &str,
) -> Result<(), StateError> {
    conn.execute(
        "INSERT INTO service_state (service, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(service, key) DO UPDATE SET value = ?3, updated_at = ?4",
        params![service, key, value, now()],
    )?;
    Ok(())
}

fn row_to_relay(r: &rusqlite::Row<'_>) -> rusqlite::Result<RelayRow> {
    Ok(RelayRow {
        id: r.get(0)?,
        url: r.get(1)?,
        network: r.get(2)?,
        source: r.get(3)?,
        discovered_at: r.get(4)?,
        status: r.get(5)?,
        failures: r.get(6)?,
        last_error: r.get(7)?,
        last_success_at: r.get(8)?,
        next_attempt_at: r.get(9)?,
    })
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::url::normalize;

    /// A state with wss://a.example.com and wss://b.example.com registered: (state, a, b).
    fn two_relays(dir: &std::path::Path) -> (State, u32, u32) {
        let st = State::open(&dir.join("s.sqlite")).unwrap();
        let (a, _) = st
            .add_relay(&normalize("wss://a.example.com").unwrap(), "t")
            .unwrap();
        let (b, _) = st
            .add_relay(&normalize("wss://b.example.com").unwrap(), "t")
            .unwrap();
        (st, a, b)
    }

    #[test]
    fn times_from_a_clock_that_ran_ahead_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (st, a, b) = two_relays(dir.path());
        let t = 1_800_000_000;
        let ahead = Cursor {
            done_until: Some(t + 86_400 * 365),
            pass_top: None,
            pass_frontier: None,
        };
        let fine = Cursor {
            done_until: Some(t - 10),
            pass_top: Some(t),
            pass_frontier: Some(t - 5),
        };
        st.set_cursor(a, &ahead, 0, 0).unwrap();
        st.set_cursor(b, &fine, 0, 0).unwrap();
        st.conn()
            .execute(
                "UPDATE relay SET next_attempt_at = ?1",
                [(t + 86_400 * 365) as i64],
            )
            .unwrap();
        assert_eq!(st.repair_future_times(t as i64, 3_600).unwrap(), 1);
        assert_eq!(st.cursor(a).unwrap(), Cursor::default());
        assert_eq!(
            st.cursor(b).unwrap(),
            fine,
            "a cursor in the past is left alone"
        );
        let due: Vec<u32> = st
            .due_relays(t as i64, 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due.len(), 2, "both relays are due again now");
    }

    /// A refusal of COUNT or NIP-77 and the out-of-order mark stand for VERDICT_TTL_SECS, then
    /// read back as unknown, so the relay is asked again (relays get upgraded).
    #[test]
    fn verdicts_expire() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.sqlite")).unwrap();
        let (id, _) = st
            .add_relay(&normalize("wss://a.example.com").unwrap(), "t")
            .unwrap();
        let mut caps = st.caps(id).unwrap();
        caps.set_count(false);
        caps.set_negentropy(false);
        caps.misordered_at = Some(now());
        caps.misordered_cap = Some(300);
        st.set_caps(id, &caps).unwrap();
        let fresh = st.caps(id).unwrap();
        assert_eq!(fresh.supports_count, Some(false));
        assert_eq!(fresh.supports_negentropy, Some(false));
        assert_eq!(fresh.misordered_cap, Some(300));
        // Given a minute less than the TTL ago: still standing; the TTL ago: expired.
        for (age, standing) in [(VERDICT_TTL_SECS - 60, true), (VERDICT_TTL_SECS, false)] {
            st.conn()
                .execute(
                    "UPDATE relay SET count_checked_at = ?2, negentropy_checked_at = ?2,
                        misordered_at = ?2 WHERE id = ?1",
                    params![id, now() - age],
                )
                .unwrap();
            let c = st.caps(id).unwrap();
            let want = standing.then_some(false);
            assert_eq!(c.supports_count, want, "COUNT verdict {age} s old");
            assert_eq!(c.supports_negentropy, want, "NIP-77 verdict {age} s old");
            assert_eq!(
                c.misordered_cap.is_some(),
                standing,
                "out-of-order mark {age} s old"
            );
        }
        // A "yes" never expires (it is re-learned whenever it stops holding).
        let mut yes = st.caps(id).unwrap();
        yes.supports_count = Some(true);
        yes.count_checked_at = Some(0);
        st.set_caps(id, &yes).unwrap();
        assert_eq!(st.caps(id).unwrap().supports_count, Some(true));
    }

    #[test]
    fn unproven_seconds_are_capped_per_relay_and_the_rest_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (st, a, b) = two_relays(dir.path());
        let cap = MAX_UNPROVEN_PER_RELAY as u64;
        // One transaction around the 10,025 inserts (only for speed).
        st.conn().execute_batch("BEGIN").unwrap();
        for s in 0..cap + 25 {
            st.record_unproven(a, s, "saturated").unwrap();
        }
        st.conn().execute_batch("COMMIT").unwrap();
        assert_eq!(st.unproven(a).unwrap().len() as u64, cap);
        assert_eq!(st.unproven_dropped(a).unwrap(), 25);
        // A second already listed is updated, not dropped; another relay has its own cap.
        st.record_unproven(a, 3, "again").unwrap();
        assert_eq!(st.unproven_dropped(a).unwrap(), 25);
        st.record_unproven(b, 1, "saturated").unwrap();
        assert_eq!(st.unproven(b).unwrap().len(), 1);
        assert_eq!(st.unproven_dropped(b).unwrap(), 0);
        let p = st.progress().unwrap();
        let row = p.iter().find(|r| r.url == "wss://a.example.com").unwrap();
        assert_eq!(
            row.unproven_seconds,
            cap + 25,
            "status counts the dropped ones too"
        );
    }

    #[test]
    fn registry_cursor_and_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let st = State::open(&path).unwrap();
        let a = normalize("wss://a.example.com").unwrap();
        let (id, new) = st.add_relay(&a, "seed").unwrap();
        assert!(new);
        assert_eq!(st.add_relay(&a, "cli").unwrap(), (id, false));
        let b = normalize("wss://b.example.com").unwrap();
        assert_eq!(
            st.register_with_watermark(&[a.clone(), b], "finder", "finder", "watermark", "41")
                .unwrap(),
            1
        );
        assert_eq!(
            st.get_state("finder", "watermark").unwrap().as_deref(),
            Some("41")
        );
        let c = Cursor {
            done_until: Some(5),
            pass_top: Some(9),
            pass_frontier: Some(7),
        };
        st.set_cursor(id, &c, 10, 4).unwrap();
        drop(st);
        let st = State::open(&path).unwrap();
        assert_eq!(st.cursor(id).unwrap(), c);
        assert_eq!(st.relays().unwrap().len(), 2);
        st.record_failure(id, "boom", 100).unwrap();
        assert_eq!(st.failures(id).unwrap(), 1);
        assert!(st
            .due_relays(i64::MAX / 2, 10)
            .unwrap()
            .iter()
            .any(|r| r.id == id));
        st.record_unproven(id, 77, "why").unwrap();
        assert_eq!(st.unproven(id).unwrap(), vec![(77, "why".to_string())]);
        st.clear_unproven(id, 77).unwrap();
        assert!(st.unproven(id).unwrap().is_empty());
        assert_eq!(st.unproven_dropped(id).unwrap(), 0);
    }
}
