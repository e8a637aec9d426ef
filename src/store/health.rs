//! Relay health as the Monitor sees it, in SQLite: the current state per relay
//! (`relay_health`), the history of every check (`observation`), and the documents checks
//! produced (`monitor_document`), stored once per distinct content.
//!
//! Kept here:
//! - A check's observation, its document and the relay's new state are written in ONE
//!   transaction ([`State::record_check`]): `relays list` never shows a state the history
//!   does not explain, and a crash loses at most the check in flight.
//! - Documents are content-addressed: id = sha256 of the canonical JSON (keys sorted, no
//!   whitespace), so a NIP-11 document that did not change costs one row, however often fetched.
//! - Status: `online` after a successful open; `offline` after `failure_threshold` failed opens
//!   in a row; `unknown` before either. An offline relay gets only the cheap open check, at
//!   growing intervals (`open_secs * 2^k`, capped at `max_backoff_secs`), so a dead relay costs
//!   little; its first successful open makes it online and its other checks due again.
//! - History older than `history_days` is pruned, but never an observation the shipper has not
//!   sent upstream yet ([`State::prune_history`] takes the shipped watermark). Observation ids
//!   are AUTOINCREMENT: never reused after a prune, so the shipper's watermark stays valid.
//! - Uptime is a share of TIME, not of samples: an online relay is checked every 5 minutes and
//!   an offline one perhaps once a day, so counting checks would overstate uptime. Each opening
//!   check closes the span since the previous one and credits it to the previous result, split
//!   per UTC day (`uptime_day`). A span longer than twice the interval that was scheduled (the
//!   monitor was not running) is capped there: time nobody watched is not counted.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::state::{now, truncate, State, StateError};

pub(super) const SCHEMA_V3: &str = "
    CREATE TABLE relay_health (
        relay_id INTEGER PRIMARY KEY REFERENCES relay(id),
        status TEXT NOT NULL DEFAULT 'unknown',
        failures INTEGER NOT NULL DEFAULT 0,
        checked_at INTEGER,
        last_online_at INTEGER,
        last_error TEXT,
        open_ms INTEGER,
        read_ms INTEGER,
        write_ms INTEGER,
        read_policy TEXT,
        write_policy TEXT,
        nip66_at INTEGER,
        nip66_id TEXT,
        software TEXT,
        version TEXT,
        nip11_at INTEGER,
        nip11_id TEXT,
        nip11_error TEXT,
        next_open_at INTEGER NOT NULL DEFAULT 0,
        next_nip11_at INTEGER NOT NULL DEFAULT 0,
        next_nip66_at INTEGER NOT NULL DEFAULT 0,
        last_open_at INTEGER,
        last_open_ok INTEGER
    );
    CREATE TABLE uptime_day (
        relay_id INTEGER NOT NULL REFERENCES relay(id),
        day INTEGER NOT NULL,
        up_secs INTEGER NOT NULL DEFAULT 0,
        down_secs INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (relay_id, day)
    );
    CREATE TABLE monitor_document (
        id TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE observation (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        relay_id INTEGER NOT NULL REFERENCES relay(id),
        checked_at INTEGER NOT NULL,
        type TEXT NOT NULL,
        ok INTEGER NOT NULL,
        rtt_open INTEGER,
        document_id TEXT NOT NULL REFERENCES monitor_document(id)
    );
    CREATE INDEX observation_relay_time ON observation (relay_id, checked_at);
    CREATE INDEX observation_time ON observation (checked_at);
";

/// The checks the Monitor runs, each on its own schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Websocket handshake only: the cheap liveness check.
    Open,
    /// The NIP-11 information document.
    Nip11,
    /// NIP-66 round trips (open, read, write) with DNS, TLS and network facts.
    Nip66,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Open => "open",
            CheckKind::Nip11 => "nip11",
            CheckKind::Nip66 => "nip66",
        }
    }
    /// Open and NIP-66 checks both open a websocket: they decide online/offline.
    pub fn opens(self) -> bool {
        matches!(self, CheckKind::Open | CheckKind::Nip66)
    }
}

/// How often each check runs, and how a failing relay is backed off.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub open_secs: i64,
    pub nip11_secs: i64,
    pub nip66_secs: i64,
    pub failure_threshold: i64,
    pub max_backoff_secs: i64,
}

/// The outcome of one check, as recorded.
#[derive(Debug, Clone, Default)]
pub struct CheckOutcome {
    /// Whether the check succeeded: for open/nip66 the websocket opened, for nip11 a document
    /// was parsed. Policy answers are facts, not failures.
    pub ok: bool,
    pub open_ms: Option<u64>,
    pub read_ms: Option<u64>,
    pub write_ms: Option<u64>,
    pub read_policy: Option<String>,
    pub write_policy: Option<String>,
    pub software: Option<String>,
    pub version: Option<String>,
    pub error: Option<String>,
    /// The document kept in the history (NIP-11: the raw document; NIP-66: the result).
    pub document: Value,
}

/// A relay with at least one check due.
#[derive(Debug, Clone)]
pub struct DueRelay {
    pub id: u32,
    pub url: String,
    pub status: String,
    pub open_due: bool,
    pub nip11_due: bool,
    pub nip66_due: bool,
}

/// What `bigbrotr relays list` shows per relay.
#[derive(Debug, Clone, Serialize)]
pub struct HealthRow {
    pub url: String,
    pub network: String,
    pub status: String,
    pub failures: i64,
    pub checked_at: Option<i64>,
    pub last_online_at: Option<i64>,
    pub last_error: Option<String>,
    pub open_ms: Option<i64>,
    pub read_ms: Option<i64>,
    pub write_ms: Option<i64>,
    pub read_policy: Option<String>,
    pub write_policy: Option<String>,
    pub software: Option<String>,
    pub version: Option<String>,
    pub nip11_at: Option<i64>,
    pub nip11_id: Option<String>,
    pub nip11_error: Option<String>,
    pub nip66_at: Option<i64>,
    pub nip66_id: Option<String>,
    pub next_open_at: Option<i64>,
    /// Share of opening checks that succeeded in the window asked for (`relays list`: 7 days).
    pub uptime_7d: Option<f64>,
}

/// One entry of a relay's history.
#[derive(Debug, Clone, Serialize)]
pub struct ObservationRow {
    pub id: i64,
    pub checked_at: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    pub rtt_open: Option<i64>,
    pub document_id: String,
}

/// One UTC day of a relay: watched time up and down, and the opening checks behind it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayUptime {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub up_secs: i64,
    pub down_secs: i64,
    pub checks: i64,
    pub online: i64,
}

impl DayUptime {
    /// Share of the watched time the relay was up; `None` when nothing was watched.
    pub fn uptime(&self) -> Option<f64> {
        let t = self.up_secs + self.down_secs;
        (t > 0).then(|| self.up_secs as f64 / t as f64)
    }
}

/// An observation as the shipper sends it upstream. `kind` is the archive's metadata type:
/// `open`, `nip66`, `nip11` (the relay's document as served) or `nip11_failed` (`{"error": ...}`),
/// so a NIP-11 document is never confused with a failure record.
#[derive(Debug, Clone)]
pub struct ShipObservation {
    pub id: i64,
    pub url: String,
    pub network: String,
    pub checked_at: i64,
    pub kind: String,
    pub data: String,
}

/// Canonical JSON text: object keys sorted (serde_json's map is ordered by key), no whitespace,
/// U+0000 replaced by U+FFFD (PostgreSQL's jsonb cannot hold it, and the archive must store the
/// document this node hashed).
pub fn canonical_json(v: &Value) -> String {
    fn clean(v: &Value) -> Value {
        match v {
            Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), clean(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    clean(v).to_string()
}

/// Content address of a canonical document.
pub fn document_id(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

const HEALTH_COLUMNS: &str = "r.url, r.network, coalesce(h.status, 'unknown'),
    coalesce(h.failures, 0), h.checked_at, h.last_online_at, h.last_error, h.open_ms, h.read_ms,
    h.write_ms, h.read_policy, h.write_policy, h.software, h.version, h.nip11_at, h.nip11_id,
    h.nip11_error, h.nip66_at, h.nip66_id, h.next_open_at";

fn row_to_health(r: &rusqlite::Row<'_>) -> rusqlite::Result<HealthRow> {
    Ok(HealthRow {
        url: r.get(0)?,
        network: r.get(1)?,
        status: r.get(2)?,
        failures: r.get(3)?,
        checked_at: r.get(4)?,
        last_online_at: r.get(5)?,
        last_error: r.get(6)?,
        open_ms: r.get(7)?,
        read_ms: r.get(8)?,
        write_ms: r.get(9)?,
        read_policy: r.get(10)?,
        write_policy: r.get(11)?,
        software: r.get(12)?,
        version: r.get(13)?,
        nip11_at: r.get(14)?,
        nip11_id: r.get(15)?,
        nip11_error: r.get(16)?,
        nip66_at: r.get(17)?,
        nip66_id: r.get(18)?,
        next_open_at: r.get(19)?,
        uptime_7d: None,
    })
}

/// Text stored from the network is capped (a relay's name or error can be anything).
fn capped(s: &Option<String>, max: usize) -> Option<&str> {
    s.as_deref().map(|s| truncate(s, max))
}

impl State {
    /// Relays with a check due at `at`, most overdue first, skipping `busy` ones (in flight).
    /// An offline relay only gets its open check.
    pub fn due_checks(
        &self,
        at: i64,
        max: usize,
        busy: &std::collections::HashSet<u32>,
    ) -> Result<Vec<DueRelay>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(DUE_CHECKS)?;
        let rows = st.query_map(params![at, (max + busy.len()) as i64], |r| {
            let status: String = r.get(2)?;
            let offline = status == "offline";
            Ok(DueRelay {
                id: r.get(0)?,
                url: r.get(1)?,
                open_due: r.get::<_, i64>(3)? <= at,
                nip11_due: !offline && r.get::<_, i64>(4)? <= at,
                nip66_due: !offline && r.get::<_, i64>(5)? <= at,
                status,
            })
        })?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
            if !busy.contains(&r.id) && out.len() < max {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Record one check: its document (once per content), the observation, and the relay's
    /// new state and next due times, in one transaction. Returns the observation id.
    pub fn record_check(
        &self,
        relay_id: u32,
        kind: CheckKind,
        at: i64,
        out: &CheckOutcome,
        sched: &Schedule,
    ) -> Result<i64, StateError> {
        let data = canonical_json(&out.document);
        let doc = document_id(&data);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO monitor_document (id, data) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
            params![doc, data],
        )?;
        tx.execute(
            "INSERT INTO observation (relay_id, checked_at, type, ok, rtt_open, document_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                relay_id,
                at,
                kind.as_str(),
                out.ok,
                out.open_ms.map(|v| v as i64),
                doc
            ],
        )?;
        let obs = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO relay_health (relay_id) VALUES (?1) ON CONFLICT(relay_id) DO NOTHING",
            [relay_id],
        )?;
        let (status, failures, last_open, next_open_was): (
            String,
            i64,
            Option<(i64, bool)>,
            i64,
        ) = tx.query_row(
            "SELECT status, failures, last_open_at, last_open_ok, next_open_at FROM relay_health
             WHERE relay_id = ?1",
            [relay_id],
            |r| {
                let at: Option<i64> = r.get(2)?;
                let ok: Option<bool> = r.get(3)?;
                Ok((r.get(0)?, r.get(1)?, at.zip(ok), r.get(4)?))
            },
        )?;
        let error = capped(&out.error, 500);
        if kind.opens() {
            let (status, failures, next_open) = if out.ok {
                ("online".to_string(), 0, at + sched.open_secs)
            } else {
                let f = failures + 1;
                let status = if f >= sched.failure_threshold {
                    "offline".to_string()
                } else {
                    status
                };
                let wait = if f >= sched.failure_threshold {
                    let k = (f - sched.failure_threshold + 1).min(30) as u32;
                    sched
                        .open_secs
                        .saturating_mul(1i64 << k)
                        .min(sched.max_backoff_secs.max(sched.open_secs))
                } else {
                    sched.open_secs
                };
                (status, f, at + wait)
            };
            if let Some((prev_at, prev_ok)) = last_open {
                // Credit the span since the previous opening check to that check's result,
                // capped at twice the interval that was scheduled then.
                let expected = (next_open_was - prev_at).max(sched.open_secs);
                let end = at.min(prev_at.saturating_add(expected.saturating_mul(2)));
                credit_span(&tx, relay_id, prev_at, end, prev_ok)?;
            }
            tx.execute(
                "UPDATE relay_health SET status = ?2, failures = ?3, checked_at = ?4,
                    last_online_at = CASE WHEN ?5 THEN ?4 ELSE last_online_at END,
                    last_error = ?6, next_open_at = ?7,
                    open_ms = CASE WHEN ?5 THEN ?8 ELSE open_ms END,
                    last_open_at = ?4, last_open_ok = ?5
                 WHERE relay_id = ?1",
                params![
                    relay_id,
                    status,
                    failures,
                    at,
                    out.ok,
                    error,
                    next_open,
                    out.open_ms.map(|v| v as i64)
                ],
            )?;
        }
        match kind {
            CheckKind::Open => {}
            CheckKind::Nip66 => {
                tx.execute(
                    "UPDATE relay_health SET nip66_at = ?2, nip66_id = ?3, read_ms = ?4,
                        write_ms = ?5, read_policy = ?6, write_policy = ?7, next_nip66_at = ?8
                     WHERE relay_id = ?1",
                    params![
                        relay_id,
                        at,
                        doc,
                        out.read_ms.map(|v| v as i64),
                        out.write_ms.map(|v| v as i64),
                        capped(&out.read_policy, 200),
                        capped(&out.write_policy, 200),
                        at + sched.nip66_secs
                    ],
                )?;
            }
            CheckKind::Nip11 => {
                if out.ok {
                    tx.execute(
                        "UPDATE relay_health SET nip11_at = ?2, nip11_id = ?3, software = ?4,
                            version = ?5, nip11_error = NULL, next_nip11_at = ?6
                         WHERE relay_id = ?1",
                        params![
                            relay_id,
                            at,
                            doc,
                            capped(&out.software, 200),
                            capped(&out.version, 100),
                            at + sched.nip11_secs
                        ],
                    )?;
                } else {
                    tx.execute(
                        "UPDATE relay_health SET nip11_error = ?2, next_nip11_at = ?3
                         WHERE relay_id = ?1",
                        params![relay_id, error, at + sched.nip11_secs],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(obs)
    }

    /// A relay this node will not check: `no_route` (an overlay network without a route) or
    /// `refused` (the address policy refuses it now). No observation is recorded (no false
    /// downtime); every check is pushed `retry_secs` out; restart looks again.
    pub fn mark_skipped(
        &self,
        relay_id: u32,
        status: &str,
        at: i64,
        retry_secs: i64,
        reason: &str,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO relay_health (relay_id, status, last_error, next_open_at, next_nip11_at,
                next_nip66_at) VALUES (?1, ?4, ?2, ?3, ?3, ?3)
             ON CONFLICT(relay_id) DO UPDATE SET status = ?4, last_error = ?2,
                next_open_at = ?3, next_nip11_at = ?3, next_nip66_at = ?3",
            params![relay_id, truncate(reason, 500), at + retry_secs, status],
        )?;
        Ok(())
    }

    /// At start-up: routes or the policy may have changed, so look at skipped relays again.
    pub fn clear_skipped(&self) -> Result<usize, StateError> {
        Ok(self.conn().execute(
            "UPDATE relay_health SET status = 'unknown', next_open_at = 0, next_nip11_at = 0,
                next_nip66_at = 0 WHERE status IN ('no_route', 'refused', 'tor_starting')",
            [],
        )?)
    }

    /// Every registered relay with its health (relays never checked show `unknown`) and its
    /// uptime since `uptime_since`.
    pub fn health(&self, uptime_since: i64) -> Result<Vec<HealthRow>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {HEALTH_COLUMNS},
                (SELECT CASE WHEN sum(up_secs + down_secs) > 0
                    THEN sum(up_secs) * 1.0 / sum(up_secs + down_secs) END
                 FROM uptime_day u WHERE u.relay_id = r.id AND u.day >= ?1 / 86400)
             FROM relay r LEFT JOIN relay_health h ON h.relay_id = r.id ORDER BY r.url"
        ))?;
        let rows = st.query_map([uptime_since], |r| {
            let mut h = row_to_health(r)?;
            h.uptime_7d = r.get(20)?;
            Ok(h)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// (NIP, relays) over the relays whose latest NIP-11 document lists it, by NIP. Only
    /// integers 1-999 count: a document is the relay's word, and anything else is not a NIP.
    pub fn relays_by_nip(&self) -> Result<Vec<(i64, i64)>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT j.value, count(DISTINCT h.relay_id)
             FROM relay_health h JOIN monitor_document d ON d.id = h.nip11_id,
                  json_each(CASE WHEN json_valid(d.data) AND json_type(d.data, '$.supported_nips') = 'array'
                            THEN json_extract(d.data, '$.supported_nips') ELSE '[]' END) j
             WHERE j.type = 'integer' AND j.value BETWEEN 1 AND 999
             GROUP BY j.value ORDER BY j.value",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One relay as `relays show --json` and the REST API show it: health, the latest NIP-11
    /// and NIP-66 documents, uptime over `days` and per UTC day, and the last 50 checks.
    /// `None` when `url` (normalized) is not registered.
    pub fn relay_detail(
        &self,
        url: &str,
        days: u32,
        now: i64,
    ) -> Result<Option<Value>, StateError> {
        let Some((id, h)) = self.health_of(url)? else {
            return Ok(None);
        };
        let since = now - i64::from(days) * 86_400;
        let doc = |id: &Option<String>| -> Result<Value, StateError> {
            Ok(match id {
                Some(id) => self
                    .document(id)?
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(Value::Null),
                None => Value::Null,
            })
        };
        let daily = self.daily_uptime(id, since - since.rem_euclid(86_400))?;
        Ok(Some(serde_json::json!({
            "nip11": doc(&h.nip11_id)?,
            "nip66": doc(&h.nip66_id)?,
            "uptime": self.uptime(id, since)?,
            "daily": daily.iter().map(|d| serde_json::json!({
                "date": crate::timefmt::date(d.day), "uptime": d.uptime(), "up_secs": d.up_secs,
                "down_secs": d.down_secs, "checks": d.checks, "online": d.online,
            })).collect::<Vec<_>>(),
            "history": self.history(id, since, i64::MAX, 50)?,
            "health": h,
        })))
    }

    pub fn health_of(&self, url: &str) -> Result<Option<(u32, HealthRow)>, StateError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {HEALTH_COLUMNS}, r.id FROM relay r
                     LEFT JOIN relay_health h ON h.relay_id = r.id WHERE r.url = ?1"
                ),
                [url],
                |r| Ok((r.get(20)?, row_to_health(r)?)),
            )
            .optional()?)
    }

    /// A stored document's JSON text.
    pub fn document(&self, id: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT data FROM monitor_document WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A relay's observations in `[since, until)`, newest first, at most `max`.
    pub fn history(
        &self,
        relay_id: u32,
        since: i64,
        until: i64,
        max: usize,
    ) -> Result<Vec<ObservationRow>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, checked_at, type, ok, rtt_open, document_id FROM observation
             WHERE relay_id = ?1 AND checked_at >= ?2 AND checked_at < ?3
             ORDER BY checked_at DESC, id DESC LIMIT ?4",
        )?;
        let rows = st.query_map(params![relay_id, since, until, max as i64], |r| {
            Ok(ObservationRow {
                id: r.get(0)?,
                checked_at: r.get(1)?,
                kind: r.get(2)?,
                ok: r.get(3)?,
                rtt_open: r.get(4)?,
                document_id: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per UTC day from the day of `since`: watched time up/down and the opening checks.
    pub fn daily_uptime(&self, relay_id: u32, since: i64) -> Result<Vec<DayUptime>, StateError> {
        let conn = self.conn();
        let first = since.div_euclid(86_400);
        let mut days: std::collections::BTreeMap<i64, DayUptime> = Default::default();
        let mut st = conn.prepare(
            "SELECT day, up_secs, down_secs FROM uptime_day WHERE relay_id = ?1 AND day >= ?2",
        )?;
        for r in st.query_map(params![relay_id, first], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (day, up, down) = r?;
            let d = days.entry(day).or_default();
            (d.day, d.up_secs, d.down_secs) = (day, up, down);
        }
        let mut st = conn.prepare(
            "SELECT checked_at / 86400 AS day, count(*), sum(ok) FROM observation
             WHERE relay_id = ?1 AND checked_at >= ?2 AND type IN ('open', 'nip66')
             GROUP BY day",
        )?;
        for r in st.query_map(params![relay_id, first * 86_400], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (day, checks, online) = r?;
            let d = days.entry(day).or_default();
            (d.day, d.checks, d.online) = (day, checks, online);
        }
        Ok(days.into_values().collect())
    }

    /// Share of the watched time the relay was up, from the day of `since` on (whole UTC days);
    /// `None` when nothing was watched.
    pub fn uptime(&self, relay_id: u32, since: i64) -> Result<Option<f64>, StateError> {
        let (up, total): (Option<i64>, Option<i64>) = self.conn().query_row(
            "SELECT sum(up_secs), sum(up_secs + down_secs) FROM uptime_day
             WHERE relay_id = ?1 AND day >= ?2",
            params![relay_id, since.div_euclid(86_400)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(match (up, total) {
            (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
            _ => None,
        })
    }

    /// Observations with `id > after`, oldest first, for the shipper.
    /// At most `max` rows, and rows only until their documents add up to `max_bytes` (at
    /// least one row is returned, whatever its size).
    pub fn observations_after(
        &self,
        after: i64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<ShipObservation>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT o.id, r.url, r.network, o.checked_at,
                    CASE WHEN o.type = 'nip11' AND NOT o.ok THEN 'nip11_failed' ELSE o.type END,
                    d.data
             FROM observation o JOIN relay r ON r.id = o.relay_id
             JOIN monitor_document d ON d.id = o.document_id
             WHERE o.id > ?1 ORDER BY o.id LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, max as i64], |r| {
            Ok(ShipObservation {
                id: r.get(0)?,
                url: r.get(1)?,
                network: r.get(2)?,
                checked_at: r.get(3)?,
                kind: r.get(4)?,
                data: r.get(5)?,
            })
        })?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for row in rows {
            let row = row?;
            bytes += row.data.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Observations kept and the newest id (for `status`): a counter kept by triggers (schema
    /// version 5), not a `count(*)` over millions of rows.
    pub fn observation_count(&self) -> Result<(i64, i64), StateError> {
        Ok(self.conn().query_row(
            "SELECT (SELECT n FROM row_count WHERE name = 'observation'),
                    coalesce((SELECT max(id) FROM observation), 0)",
            [],
            |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?)),
        )?)
    }

    /// Delete observations older than `before`, except those with `id > keep_after` (not yet
    /// shipped), then the documents only they referred to. Returns (observations, documents)
    /// deleted. Runs in chunks of [`PRUNE_CHUNK`] observations, one short transaction each, so
    /// the state connection is never held for long whatever a month of history holds; every
    /// statement uses an index (see the query-plan test).
    pub fn prune_history(
        &self,
        before: i64,
        keep_after: Option<i64>,
    ) -> Result<(usize, usize), StateError> {
        let (mut obs, mut docs) = (0, 0);
        loop {
            let (o, d) = self.prune_chunk(before, keep_after.unwrap_or(i64::MAX))?;
            obs += o;
            docs += d;
            if o < PRUNE_CHUNK {
                break;
            }
            // Let the other users of the connection (sync cursors, checks) in between chunks:
            // the mutex is not fair, so a bare yield would let this loop take it straight back.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.conn()
            .execute(PRUNE_UPTIME, [before.div_euclid(86_400)])?;
        Ok((obs, docs))
    }

    fn prune_chunk(&self, before: i64, keep_after: i64) -> Result<(usize, usize), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let victims: Vec<(i64, String)> = {
            let mut st = tx.prepare_cached(PRUNE_SELECT)?;
            let rows = st.query_map(params![before, keep_after, PRUNE_CHUNK as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut del = tx.prepare_cached("DELETE FROM observation WHERE id = ?1")?;
            for (id, _) in &victims {
                del.execute([id])?;
            }
        }
        let mut candidates: Vec<&str> = victims.iter().map(|(_, d)| d.as_str()).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut docs = 0;
        {
            let mut del = tx.prepare_cached(PRUNE_DOCUMENT)?;
            for d in candidates {
                docs += del.execute([d])?;
            }
        }
        tx.commit()?;
        Ok((victims.len(), docs))
    }
}

/// Relays with a check due at ?1, most overdue first, by the `relay_health_due` index.
pub(super) const DUE_CHECKS: &str = "SELECT h.relay_id, r.url, h.status, h.next_open_at,
        h.next_nip11_at, h.next_nip66_at
     FROM relay_health h JOIN relay r ON r.id = h.relay_id
     WHERE h.next_due_at <= ?1 ORDER BY h.next_due_at, h.relay_id LIMIT ?2";

/// Schema step 7 (see `state.rs`): `next_due_at` = the earliest of the checks a relay is due
/// for (an offline relay is only re-opened), kept by triggers.
pub(super) const SCHEMA_V7: &str = "
    ALTER TABLE relay_health ADD COLUMN next_due_at INTEGER NOT NULL DEFAULT 0;
    INSERT INTO relay_health (relay_id)
        SELECT id FROM relay WHERE id NOT IN (SELECT relay_id FROM relay_health);
    UPDATE relay_health SET next_due_at = min(next_open_at,
        CASE WHEN status = 'offline' THEN next_open_at ELSE min(next_nip11_at, next_nip66_at) END);
    CREATE INDEX relay_health_due ON relay_health (next_due_at, relay_id);
    CREATE TRIGGER relay_health_for_new_relay AFTER INSERT ON relay BEGIN
        INSERT OR IGNORE INTO relay_health (relay_id) VALUES (NEW.id);
    END;
    CREATE TRIGGER relay_health_due_on_insert AFTER INSERT ON relay_health BEGIN
        UPDATE relay_health SET next_due_at = min(NEW.next_open_at,
            CASE WHEN NEW.status = 'offline' THEN NEW.next_open_at
                 ELSE min(NEW.next_nip11_at, NEW.next_nip66_at) END)
        WHERE relay_id = NEW.relay_id;
    END;
    CREATE TRIGGER relay_health_due_on_update
        AFTER UPDATE OF status, next_open_at, next_nip11_at, next_nip66_at ON relay_health BEGIN
        UPDATE relay_health SET next_due_at = min(NEW.next_open_at,
            CASE WHEN NEW.status = 'offline' THEN NEW.next_open_at
                 ELSE min(NEW.next_nip11_at, NEW.next_nip66_at) END)
        WHERE relay_id = NEW.relay_id;
    END;";

/// Observations deleted per prune transaction (~20 ms of the state connection on a month of
/// history; measured in `cargo bench --bench month`).
pub const PRUNE_CHUNK: usize = 500;

/// The oldest prunable observations, by the `observation_time` index.
const PRUNE_SELECT: &str = "SELECT id, document_id FROM observation
     WHERE checked_at < ?1 AND id <= ?2 ORDER BY checked_at LIMIT ?3";
/// A document, if nothing refers to it any more (each test by an index).
const PRUNE_DOCUMENT: &str = "DELETE FROM monitor_document WHERE id = ?1
    AND NOT EXISTS (SELECT 1 FROM observation WHERE document_id = ?1)
    AND NOT EXISTS (SELECT 1 FROM relay_health WHERE nip11_id = ?1)
    AND NOT EXISTS (SELECT 1 FROM relay_health WHERE nip66_id = ?1)";
const PRUNE_UPTIME: &str = "DELETE FROM uptime_day WHERE day < ?1";

/// Add `[from, to)` to the relay's up or down time, split at UTC midnights.
fn credit_span(
    tx: &rusqlite::Transaction<'_>,
    relay_id: u32,
    from: i64,
    to: i64,
    up: bool,
) -> Result<(), StateError> {
    let mut t = from;
    while t < to {
        let day = t.div_euclid(86_400);
        let end = to.min((day + 1) * 86_400);
        let secs = end - t;
        tx.execute(
            "INSERT INTO uptime_day (relay_id, day, up_secs, down_secs) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(relay_id, day) DO UPDATE SET up_secs = up_secs + ?3,
                down_secs = down_secs + ?4",
            params![
                relay_id,
                day,
                if up { secs } else { 0 },
                if up { 0 } else { secs }
            ],
        )?;
        t = end;
    }
    Ok(())
}

/// Unix seconds now (the monitor's clock).
pub fn unix_now() -> i64 {
    now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::url::parse_relay_url;

    const SCHED: Schedule = Schedule {
        open_secs: 300,
        nip11_secs: 3600,
        nip66_secs: 7200,
        failure_threshold: 3,
        max_backoff_secs: 86_400,
    };

    fn open(ok: bool, ms: u64) -> CheckOutcome {
        CheckOutcome {
            ok,
            open_ms: ok.then_some(ms),
            error: (!ok).then(|| "connect refused".to_string()),
            document: serde_json::json!({ "rtt_open": ok.then_some(ms) }),
            ..Default::default()
        }
    }

    fn setup() -> (tempfile::TempDir, State, u32) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state.sqlite")).unwrap();
        let policy = crate::protocol::url::UrlPolicy {
            allow_local: true,
            ..Default::default()
        };
        let url = parse_relay_url("ws://127.0.0.1:7777", &policy).unwrap();
        let (id, _) = state.add_relay(&url, "test").unwrap();
        (dir, state, id)
    }

    #[test]
    fn canonical_documents_ignore_key_order_and_nul() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"q\u0000"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x":"q\ufffd", "y":[1, 2]}, "b":1 }"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"q�","y":[1,2]},"b":1}"#);
        assert_eq!(
            document_id(&canonical_json(&a)),
            document_id(&canonical_json(&b))
        );
    }

    #[test]
    fn new_relays_are_due_for_every_check_and_then_scheduled() {
        let (_d, st, id) = setup();
        let none = Default::default();
        let due = st.due_checks(1000, 10, &none).unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].open_due && due[0].nip11_due && due[0].nip66_due);
        st.record_check(id, CheckKind::Nip66, 1000, &open(true, 12), &SCHED)
            .unwrap();
        let due = st.due_checks(1000, 10, &none).unwrap();
        assert!(due[0].nip11_due && !due[0].nip66_due && !due[0].open_due);
        st.record_check(id, CheckKind::Nip11, 1000, &open(true, 0), &SCHED)
            .unwrap();
        assert!(st.due_checks(1000, 10, &none).unwrap().is_empty());
        let due = st.due_checks(1300, 10, &none).unwrap();
        assert!(due[0].open_due && !due[0].nip11_due);
        // In flight: not handed out twice.
        assert!(st.due_checks(1300, 10, &[id].into()).unwrap().is_empty());
    }

    #[test]
    fn failures_mark_a_relay_offline_and_back_off_until_it_answers() {
        let (_d, st, id) = setup();
        let none = Default::default();
        st.record_check(id, CheckKind::Nip66, 0, &open(true, 5), &SCHED)
            .unwrap();
        let mut t = 0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            t += 300;
            st.record_check(id, CheckKind::Open, t, &open(false, 0), &SCHED)
                .unwrap();
            let h = st.health_of("ws://127.0.0.1:7777").unwrap().unwrap().1;
            waits.push((h.status.clone(), h.next_open_at.unwrap() - t));
        }
        assert_eq!(
            waits,
            vec![
                ("online".into(), 300),
                ("online".into(), 300),
                ("offline".into(), 600),
                ("offline".into(), 1200),
                ("offline".into(), 2400),
                ("offline".into(), 4800),
            ]
        );
        // Offline: only the open check is handed out, even long after nip11/nip66 fell due.
        let due = st.due_checks(t + 100_000, 10, &none).unwrap();
        assert!(due[0].open_due && !due[0].nip11_due && !due[0].nip66_due);
        st.record_check(id, CheckKind::Open, t + 100_000, &open(true, 7), &SCHED)
            .unwrap();
        let h = st.health_of("ws://127.0.0.1:7777").unwrap().unwrap().1;
        assert_eq!(
            (h.status.as_str(), h.failures, h.open_ms),
            ("online", 0, Some(7))
        );
        let due = st.due_checks(t + 100_000, 10, &none).unwrap();
        assert!(due[0].nip11_due && due[0].nip66_due);
        // Time-weighted: up [0, 300), down from 300 to 1800 in five spans of 300 s, then down
        // from 1800 until the next check, capped at twice the 4,800 s then scheduled.
        assert_eq!(st.uptime(id, 0).unwrap(), Some(300.0 / 11_400.0));
    }

    #[test]
    fn relays_are_counted_by_the_nips_their_latest_document_lists() {
        let (_d, st, id) = setup();
        let policy = crate::protocol::url::UrlPolicy {
            allow_local: true,
            ..Default::default()
        };
        let other = parse_relay_url("ws://127.0.0.1:7778", &policy).unwrap();
        let (id2, _) = st.add_relay(&other, "test").unwrap();
        let nip11 = |doc: serde_json::Value| CheckOutcome {
            ok: true,
            document: doc,
            ..Default::default()
        };
        // The first relay's older document listed NIP-50; only its latest counts. Junk
        // (strings, 0, 100000, a duplicate) is not a NIP and does not count twice.
        st.record_check(
            id,
            CheckKind::Nip11,
            100,
            &nip11(serde_json::json!({"supported_nips": [1, 50]})),
            &SCHED,
        )
        .unwrap();
        st.record_check(
            id,
            CheckKind::Nip11,
            200,
            &nip11(serde_json::json!({"supported_nips": [1, 11, 11, "42", 0, 100000]})),
            &SCHED,
        )
        .unwrap();
        st.record_check(
            id2,
            CheckKind::Nip11,
            200,
            &nip11(serde_json::json!({"supported_nips": "1,11"})),
            &SCHED,
        )
        .unwrap();
        assert_eq!(st.relays_by_nip().unwrap(), vec![(1, 1), (11, 1)]);
        st.record_check(
            id2,
            CheckKind::Nip11,
            300,
            &nip11(serde_json::json!({"supported_nips": [11, 77]})),
            &SCHED,
        )
        .unwrap();
        assert_eq!(st.relays_by_nip().unwrap(), vec![(1, 1), (11, 2), (77, 1)]);
    }

    #[test]
    fn identical_documents_are_stored_once_and_pruning_keeps_unshipped() {
        let (_d, st, id) = setup();
        let doc = serde_json::json!({"name": "x", "supported_nips": [1, 11]});
        let nip11 = CheckOutcome {
            ok: true,
            software: Some("strfry".into()),
            document: doc,
            ..Default::default()
        };
        for t in [100, 200, 86_400 * 2] {
            st.record_check(id, CheckKind::Nip11, t, &nip11, &SCHED)
                .unwrap();
        }
        let n: i64 = st
            .conn()
            .query_row("SELECT count(*) FROM monitor_document", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let all = st.observations_after(0, 10, usize::MAX).unwrap();
        // A byte budget smaller than one document still returns one row.
        assert_eq!(st.observations_after(0, 10, 1).unwrap().len(), 1);
        assert_eq!(all.len(), 3);
        // Nothing shipped yet: nothing older is deleted.
        assert_eq!(st.prune_history(86_400, Some(0)).unwrap(), (0, 0));
        // The first is shipped: only it goes.
        assert_eq!(st.prune_history(86_400, Some(all[0].id)).unwrap(), (1, 0));
        assert_eq!(st.history(id, 0, i64::MAX, 10).unwrap().len(), 2);
        let days = st.daily_uptime(id, 0).unwrap();
        assert!(days.is_empty(), "nip11 checks are not opens: {days:?}");
    }

    #[test]
    fn pruning_runs_in_chunks_and_keeps_documents_still_referred_to() {
        let (_d, st, id) = setup();
        // Old checks, each with its own NIP-66 document, then one recent check whose document
        // the relay's current state refers to.
        let n = PRUNE_CHUNK * 2 + 7;
        for t in 0..n as i64 {
            let out = CheckOutcome {
                ok: true,
                document: serde_json::json!({ "n": t }),
                ..Default::default()
            };
            st.record_check(id, CheckKind::Nip66, t, &out, &SCHED)
                .unwrap();
        }
        let keep = CheckOutcome {
            ok: true,
            document: serde_json::json!({ "n": "current" }),
            ..Default::default()
        };
        st.record_check(id, CheckKind::Nip66, 1_000_000, &keep, &SCHED)
            .unwrap();
        assert_eq!(st.observation_count().unwrap().0, n as i64 + 1);
        let (obs, docs) = st.prune_history(500_000, None).unwrap();
        assert_eq!((obs, docs), (n, n), "every old check and its document");
        assert_eq!(
            st.observation_count().unwrap().0,
            1,
            "the kept count follows deletes"
        );
        let left: Vec<String> = st
            .conn()
            .prepare("SELECT data FROM monitor_document")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, vec![r#"{"n":"current"}"#.to_string()]);
        assert_eq!(st.prune_history(500_000, None).unwrap(), (0, 0));
    }

    /// Every periodic statement finds its rows by an index: a month of state (millions of
    /// observations, a large registry) must cost what a day of it costs.
    #[test]
    fn periodic_queries_use_indexes() {
        let (_d, st, _) = setup();
        let conn = st.conn();
        for sql in [
            PRUNE_SELECT,
            PRUNE_DOCUMENT,
            PRUNE_UPTIME,
            super::super::state::DUE_RELAYS,
            super::super::state::DUE_NEW_RELAYS,
            DUE_CHECKS,
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let args = vec![1i64; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN ") || step.contains("USING"),
                    "full scan in {sql}: {plan:?}"
                );
                assert!(!step.contains("TEMP B-TREE"), "sort in {sql}: {plan:?}");
            }
        }
    }

    #[test]
    fn uptime_is_a_share_of_time_not_of_checks() {
        let (_d, st, id) = setup();
        // A day up, checked every 5 minutes (289 checks) ...
        let mut t = 0;
        while t <= 86_400 {
            st.record_check(id, CheckKind::Open, t, &open(true, 3), &SCHED)
                .unwrap();
            t += 300;
        }
        // ... then a day down, checked on the backoff schedule (a handful of checks).
        let mut failures = 0;
        loop {
            let h = st.health_of("ws://127.0.0.1:7777").unwrap().unwrap().1;
            t = h.next_open_at.unwrap();
            if t >= 2 * 86_400 {
                break;
            }
            st.record_check(id, CheckKind::Open, t, &open(false, 0), &SCHED)
                .unwrap();
            failures += 1;
        }
        st.record_check(id, CheckKind::Open, 2 * 86_400, &open(true, 3), &SCHED)
            .unwrap();
        assert!(
            failures < 15,
            "backoff keeps a dead relay cheap: {failures} checks"
        );
        let u = st.uptime(id, 0).unwrap().unwrap();
        assert!((u - 0.5).abs() < 0.02, "half the time up: {u}");
        let days = st.daily_uptime(id, 0).unwrap();
        assert_eq!(days.len(), 3, "{days:?}");
        assert_eq!(days[0].uptime(), Some(1.0), "{days:?}");
        assert!(days[1].uptime().unwrap() < 0.01, "{days:?}");
        assert_eq!(days[0].checks, 288);
    }

    #[test]
    fn ids_are_not_reused_after_pruning_everything() {
        let (_d, st, id) = setup();
        for t in [10, 20] {
            st.record_check(id, CheckKind::Open, t, &open(true, 1), &SCHED)
                .unwrap();
        }
        let shipped = st.observations_after(0, 10, usize::MAX).unwrap();
        let watermark = shipped.last().unwrap().id;
        assert_eq!(st.prune_history(1000, Some(watermark)).unwrap().0, 2);
        st.record_check(id, CheckKind::Open, 2000, &open(true, 1), &SCHED)
            .unwrap();
        let next = st.observations_after(watermark, 10, usize::MAX).unwrap();
        assert_eq!(next.len(), 1, "the new row is after the watermark");
        assert!(next[0].id > watermark);
    }
}
