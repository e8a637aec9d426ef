//! `bigbrotr archive migrate` and `bigbrotr archive verify`.
//!
//! Migrations are the files in `migrations/`, embedded in the binary, applied in order. Each is
//! applied in its own transaction that first takes a transaction-scoped advisory lock, so two
//! `migrate` runs at once (two nodes' installers, say) apply each file once: the second waits,
//! then finds it recorded. Each applied file is recorded with its SHA-256; a file whose recorded
//! checksum differs from this binary's copy is an error (applied migrations are never edited).

use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

use super::{ArchiveError, Conn};

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_archive.sql",
        sql: include_str!("../../migrations/0001_archive.sql"),
    },
    Migration {
        version: 2,
        name: "0002_integrity.sql",
        sql: include_str!("../../migrations/0002_integrity.sql"),
    },
];

/// Arbitrary constant: the advisory lock every migration transaction takes.
const LOCK_KEY: i64 = 0x6269_6762_726f_7472; // "bigbrotr"

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS bigbrotr_migration (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

#[derive(Debug, Default)]
pub struct MigrateReport {
    pub applied: Vec<&'static str>,
    pub already: Vec<&'static str>,
    /// Versions recorded in the archive that this binary does not know (a newer bigbrotr
    /// migrated it).
    pub unknown: Vec<i32>,
}

pub async fn migrate(conn: &mut Conn) -> Result<MigrateReport, ArchiveError> {
    let mut report = MigrateReport::default();
    for m in MIGRATIONS {
        match apply_one(conn, m).await {
            Ok(true) => report.applied.push(m.name),
            Ok(false) => report.already.push(m.name),
            Err(e) => {
                conn.discard();
                return Err(e);
            }
        }
    }
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    for v in applied_versions(conn).await? {
        if !known.contains(&v.0) {
            report.unknown.push(v.0);
        }
    }
    Ok(report)
}

/// Apply `m` unless recorded; true when applied now.
async fn apply_one(conn: &mut Conn, m: &Migration) -> Result<bool, ArchiveError> {
    let sum = checksum(m.sql);
    conn.simple("BEGIN").await?;
    conn.discard(); // until COMMIT, the connection is not reusable
    conn.simple(&format!(
        "SELECT pg_advisory_xact_lock({LOCK_KEY}); {LEDGER}"
    ))
    .await?;
    let rows = conn
        .query_typed(
            "SELECT checksum FROM bigbrotr_migration WHERE version = $1",
            &[(&m.version, Type::INT4)],
        )
        .await?;
    if let Some(row) = rows.first() {
        let recorded: String = row.get(0);
        conn.simple("ROLLBACK").await?;
        if recorded != sum {
            return Err(ArchiveError::Other(format!(
                "migration {} was applied with checksum {recorded}, but this binary's copy has \
                 {sum}: applied migrations must never be edited; put changes in a new numbered file",
                m.name
            )));
        }
        return Ok(false);
    }
    conn.simple(m.sql).await.map_err(|e| match e {
        ArchiveError::Db {
            target,
            message,
            code,
        } => ArchiveError::Db {
            target,
            message: format!("migration {}: {message}", m.name),
            code,
        },
        other => other,
    })?;
    let name = m.name.to_string();
    conn.query_typed(
        "INSERT INTO bigbrotr_migration (version, name, checksum) VALUES ($1, $2, $3)",
        &[
            (&m.version, Type::INT4),
            (&name, Type::TEXT),
            (&sum, Type::TEXT),
        ],
    )
    .await?;
    conn.simple("COMMIT").await?;
    Ok(true)
}

async fn applied_versions(conn: &mut Conn) -> Result<Vec<(i32, String)>, ArchiveError> {
    let exists = conn
        .simple_column("SELECT to_regclass('public.bigbrotr_migration') IS NOT NULL")
        .await?;
    if exists.first().and_then(|v| v.as_deref()) != Some("t") {
        return Ok(Vec::new());
    }
    let rows = conn
        .query_typed(
            "SELECT version, checksum FROM bigbrotr_migration ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One line of `archive verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

pub const TABLES: &[&str] = &[
    "relay",
    "event",
    "event_relay",
    "metadata",
    "relay_metadata",
    "node",
    "service_state",
];
pub const INGEST_BATCH_SIG: &str = "ingest_batch(bytea, text[], text[], bigint[], bytea[], bytea[], bigint[], integer[], text[], text[], bytea[], bytea[], text[], bigint[])";
pub const INGEST_OBSERVATIONS_SIG: &str =
    "ingest_observations(bytea, text[], text[], bigint[], text[], text[])";
const FUNCTIONS: &[&str] = &[
    INGEST_BATCH_SIG,
    INGEST_OBSERVATIONS_SIG,
    "node_touch(bytea)",
    "tagvalues_of(jsonb)",
    "delete_orphan_metadata()",
    "delete_orphan_events()",
];
pub const NODE_ROLE: &str = "bigbrotr_node";
pub const READER_ROLE: &str = "bigbrotr_reader";

/// What the Initializer checks: server version, migrations, extensions, tables, functions,
/// roles and the privileges that keep node roles write-only.
pub async fn verify(conn: &mut Conn) -> Result<Vec<Check>, ArchiveError> {
    let mut out = Vec::new();
    let mut check = |what: String, ok: bool, detail: String| out.push(Check { what, ok, detail });
    let version: i64 = conn
        .simple_column("SELECT current_setting('server_version_num')")
        .await?
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    check(
        "server version".into(),
        version >= 140_000,
        format!("{version} (14 or newer needed)"),
    );
    let applied = applied_versions(conn).await?;
    for m in MIGRATIONS {
        let (ok, detail) = match applied.iter().find(|a| a.0 == m.version) {
            Some((_, sum)) if *sum == checksum(m.sql) => (true, "applied".to_string()),
            Some(_) => (
                false,
                "applied with a different checksum (edited after it was applied)".to_string(),
            ),
            None => (false, "not applied".to_string()),
        };
        check(format!("migration {}", m.name), ok, detail);
    }
    let encoding = conn
        .simple_column("SELECT current_setting('server_encoding')")
        .await?
        .first()
        .cloned()
        .flatten()
        .unwrap_or_default();
    check(
        "database encoding".into(),
        encoding == "UTF8",
        format!("{encoding} (UTF8 needed: events are Unicode)"),
    );
    check(
        "extensions".into(),
        true,
        "none required (sha256() is built in)".into(),
    );
    for t in TABLES {
        let ok = bool_query(
            conn,
            &format!("SELECT to_regclass('public.{t}') IS NOT NULL"),
        )
        .await?;
        check(format!("table {t}"), ok, present(ok));
    }
    for f in FUNCTIONS {
        let ok = bool_query(
            conn,
            &format!("SELECT to_regprocedure('public.{f}') IS NOT NULL"),
        )
        .await?;
        let name = f.split('(').next().unwrap_or(f);
        check(format!("function {name}"), ok, present(ok));
    }
    for r in [NODE_ROLE, READER_ROLE] {
        let ok = bool_query(
            conn,
            &format!("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{r}')"),
        )
        .await?;
        check(format!("role {r}"), ok, present(ok));
    }
    let roles_ok = out_ok(&out, "role ");
    let ingest_ok = out_ok(&out, "function ingest_batch");
    let event_ok = out_ok(&out, "table event");
    if roles_ok && ingest_ok && event_ok {
        // (what, query, the answer that is right, what to do otherwise)
        let mut privileges = vec![(
            format!("{NODE_ROLE} may call ingest_batch"),
            format!("SELECT has_function_privilege('{NODE_ROLE}', 'public.{INGEST_BATCH_SIG}', 'EXECUTE')"),
            true,
            "it cannot: run `bigbrotr archive migrate`",
        )];
        for t in TABLES {
            privileges.push((
                format!("{NODE_ROLE} cannot touch table {t} directly"),
                format!(
                    "SELECT has_table_privilege('{NODE_ROLE}', 'public.{t}', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')"
                ),
                false,
                "it can: revoke its privileges",
            ));
        }
        privileges.push((
            format!("{NODE_ROLE} cannot create objects in schema public"),
            format!("SELECT has_schema_privilege('{NODE_ROLE}', 'public', 'CREATE')"),
            false,
            "it can: REVOKE CREATE ON SCHEMA public FROM PUBLIC (as the schema's owner)",
        ));
        privileges.push((
            format!("{READER_ROLE} may read event"),
            format!("SELECT has_table_privilege('{READER_ROLE}', 'public.event', 'SELECT')"),
            true,
            "it cannot: run `bigbrotr archive migrate`",
        ));
        for (what, sql, right, fix) in privileges {
            let ok = bool_query(conn, &sql).await? == right;
            let detail = if ok {
                "ok".to_string()
            } else {
                fix.to_string()
            };
            out.push(Check { what, ok, detail });
        }
    }
    Ok(out)
}

fn out_ok(checks: &[Check], prefix: &str) -> bool {
    checks
        .iter()
        .filter(|c| c.what.starts_with(prefix))
        .all(|c| c.ok)
}

fn present(ok: bool) -> String {
    if ok { "present" } else { "missing" }.into()
}

async fn bool_query(conn: &mut Conn, sql: &str) -> Result<bool, ArchiveError> {
    Ok(conn
        .simple_column(sql)
        .await?
        .first()
        .cloned()
        .flatten()
        .as_deref()
        == Some("t"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded, "list new files in MIGRATIONS");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", i + 1)));
        }
    }
}
