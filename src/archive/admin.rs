//! `bigbrotr archive node add NAME`: a login role for one node, in the node group.
//!
//! The password is generated here and sent to the server only as a SCRAM-SHA-256 verifier
//! (computed client side), so it never appears in the server's statement log. It is printed
//! once, together with the `[upstream]` lines to paste and a PgBouncer `auth_file` line.

use rand::RngCore;
use tokio_postgres::types::Type;

use super::migrate::NODE_ROLE;
use super::{ArchiveError, Conn};

#[derive(Debug)]
pub struct NodeRole {
    pub name: String,
    /// The new password, when one was set (the role was created or `reset` was asked).
    pub password: Option<String>,
    /// The SCRAM verifier stored for the password (for PgBouncer's auth_file).
    pub verifier: Option<String>,
    pub created: bool,
}

/// Role names we accept: what PostgreSQL takes without quoting, lower case.
pub fn valid_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_")
        && name != NODE_ROLE
        && name != super::migrate::READER_ROLE
}

/// Connections one node role may hold at once (`upstream.connections` is at most this).
pub const NODE_CONNECTION_LIMIT: usize = 4;
/// The node roles' `statement_timeout` (a batch is one statement).
pub const NODE_STATEMENT_TIMEOUT: &str = "60s";

pub async fn node_add(conn: &mut Conn, name: &str, reset: bool) -> Result<NodeRole, ArchiveError> {
    if !valid_role_name(name) {
        return Err(ArchiveError::Other(format!(
            "invalid node name {name:?}: use lower-case letters, digits and _, starting with a \
             letter, at most 63 characters, not pg_*"
        )));
    }
    let group = conn
        .query_typed(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[(&NODE_ROLE, Type::TEXT)],
        )
        .await?;
    if group.is_empty() {
        return Err(ArchiveError::Other(format!(
            "role {NODE_ROLE} does not exist: run `bigbrotr archive migrate` first"
        )));
    }
    // Twice at most: a role created by someone else between our look and our CREATE makes the
    // second round take the idempotent path.
    for _ in 0..2 {
        // (privileged, already a node role) of an existing role with this name
        let existing = conn
            .query_typed(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls
                        OR EXISTS (SELECT 1 FROM pg_auth_members m
                                   WHERE m.member = r.oid AND m.roleid <> $2::regrole),
                        pg_has_role(rolname, $2, 'MEMBER')
                 FROM pg_roles r WHERE rolname = $1",
                &[(&name, Type::TEXT), (&NODE_ROLE, Type::TEXT)],
            )
            .await?;
        let exists = !existing.is_empty();
        if let Some(row) = existing.first() {
            let (privileged, node): (bool, bool) = (row.get(0), row.get(1));
            if privileged || !node {
                return Err(ArchiveError::Other(format!(
                    "role {name} already exists and is not a node role ({}): choose another name",
                    if privileged {
                        "it has superuser, createrole, createdb, replication or bypassrls, or belongs to other roles"
                    } else {
                        "it is not in bigbrotr_node"
                    }
                )));
            }
        }
        let password = (!exists || reset).then(|| {
            let mut raw = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut raw);
            hex::encode(raw)
        });
        let verifier = password
            .as_ref()
            .map(|p| postgres_protocol::password::scram_sha_256(p.as_bytes()));
        // The name is validated above (no quoting needed); the verifier holds only
        // [A-Za-z0-9+/=$:].
        let pw_clause = verifier
            .as_ref()
            .map(|v| format!(" PASSWORD '{}'", v.replace('\'', "''")))
            .unwrap_or_default();
        // A node needs a few connections (`upstream.connections`, at most 4) and no statement
        // runs for a minute: a compromised node cannot take the archive's connections or
        // hold locks for long (migrations/0002_integrity.sql sets the same on older roles).
        let limits = format!(
            "ALTER ROLE {name} CONNECTION LIMIT {NODE_CONNECTION_LIMIT}; \
             ALTER ROLE {name} SET statement_timeout = '{NODE_STATEMENT_TIMEOUT}'"
        );
        let sql = if exists {
            format!("ALTER ROLE {name} LOGIN{pw_clause}; GRANT {NODE_ROLE} TO {name}; {limits}")
        } else {
            format!("CREATE ROLE {name} LOGIN{pw_clause} IN ROLE {NODE_ROLE}; {limits}")
        };
        match conn.simple(&sql).await {
            Ok(_) => {
                return Ok(NodeRole {
                    name: name.to_string(),
                    password,
                    verifier,
                    created: !exists,
                })
            }
            Err(e) if !exists && e.code() == Some("42710") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ArchiveError::Other(format!(
        "role {name} keeps appearing and disappearing; try again"
    )))
}

/// Bind a node's public key to role `name` before the node first ships, so no other node role
/// can claim it (keys are public: relays see them in NIP-42 AUTH). Idempotent; a key already
/// bound to another role is an error naming that role.
pub async fn bind_key(conn: &mut Conn, name: &str, key: &[u8; 32]) -> Result<(), ArchiveError> {
    let key = key.to_vec();
    let name_s = name.to_string();
    let rows = conn
        .query_typed(
            "WITH ins AS (
                 INSERT INTO node (id, name, first_seen, last_seen)
                 VALUES ($1, $2, extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint)
                 ON CONFLICT (id) DO NOTHING RETURNING name)
             SELECT name FROM ins UNION ALL SELECT name FROM node WHERE id = $1",
            &[(&key, Type::BYTEA), (&name_s, Type::TEXT)],
        )
        .await?;
    let bound: Option<String> = rows.first().map(|r| r.get(0));
    match bound {
        Some(b) if b == name => Ok(()),
        Some(other) => Err(ArchiveError::Other(format!(
            "node key {} is already bound to role {other}",
            hex::encode(key)
        ))),
        None => Err(ArchiveError::Other(
            "the node key could not be bound".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert!(valid_role_name("node_berlin_1"));
        assert!(!valid_role_name("Node"));
        assert!(!valid_role_name("1node"));
        assert!(!valid_role_name("a;drop table event"));
        assert!(!valid_role_name("pg_monitor"));
        assert!(!valid_role_name("bigbrotr_node"));
        assert!(!valid_role_name(&"a".repeat(64)));
        assert!(!valid_role_name(""));
    }
}
