//! The central PostgreSQL archive: connecting (through PgBouncer), migrations, roles, and the
//! batched ingest calls the shipper makes.
//!
//! PgBouncer rules (ARCHITECTURE.md) kept here, by construction:
//! - Every statement goes through [`pool::Conn`], which offers only `query_typed` (an unnamed
//!   statement: Parse, Bind, Execute and Sync in one round trip, so PgBouncer in transaction
//!   mode never sees a statement outlive its transaction) and the simple query protocol. No
//!   named prepared statement is ever created: Debian's PgBouncer 1.18 does not track them.
//! - No session state: every batch is one statement (one implicit transaction) or an explicit
//!   transaction; locks are transaction-scoped (`pg_advisory_xact_lock`); no SET, LISTEN or
//!   cursors.
//! - Secrets (invariant 7): the password comes from `BIGBROTR_DB_PASSWORD` or a password file
//!   (or, for `archive` admin commands, `DATABASE_URL`), never from config.toml; URLs are only
//!   shown redacted ([`Target::shown`]).

pub mod admin;
pub mod migrate;
pub mod pool;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;

pub use pool::{Conn, Pool};

/// Environment variable holding the database password.
pub const PASSWORD_ENV: &str = "BIGBROTR_DB_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no archive database configured: set DATABASE_URL or [archive] database_url")]
    NoUrl,
    #[error("{key} is not a PostgreSQL URL: {message}")]
    BadUrl { key: &'static str, message: String },
    #[error("cannot read the password file {path}: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the password file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    PasswordFileOpen { path: String, mode: u32 },
    #[error("cannot use the CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("connecting to {target} timed out after {secs} s")]
    ConnectTimeout { target: String, secs: u64 },
    #[error("{target}: {message}")]
    Db {
        target: String,
        message: String,
        /// SQLSTATE, when the server (or PgBouncer) sent one.
        code: Option<String>,
    },
    #[error("{target}: no answer within {secs} s (statement cancelled)")]
    Timeout { target: String, secs: u64 },
    #[error("{0}")]
    Other(String),
}

/// How a failed archive call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection lost, server restarting, deadlock, timeout: retry the same batch later.
    Transient,
    /// Something about the rows (a value PostgreSQL cannot store, a size limit): split the batch
    /// and set the offending rows aside.
    Data,
    /// A sighting refers to an event the archive does not hold: resend with the events.
    MissingEvent,
    /// Wrong password, missing role or privilege, schema not migrated: an operator must act;
    /// retried slowly meanwhile.
    Setup,
}

impl ArchiveError {
    pub fn from_pg(target: &str, e: tokio_postgres::Error) -> ArchiveError {
        let code = e.code().map(|c| c.code().to_string());
        let message = match e.as_db_error() {
            Some(db) => {
                let mut m = format!("{}: {}", db.severity(), db.message());
                if let Some(d) = db.detail() {
                    m.push_str(&format!(" ({d})"));
                }
                if let Some(h) = db.hint() {
                    m.push_str(&format!(" (hint: {h})"));
                }
                m
            }
            None => {
                // Include the source (e.g. "connection refused"), which Display leaves out.
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m.push_str(&format!(": {s}"));
                    src = s.source();
                }
                m
            }
        };
        ArchiveError::Db {
            target: target.to_string(),
            message,
            code,
        }
    }

    /// The archive answered this statement with a refusal that is not about its own state
    /// (data, a missing reference, a raised exception, a missing privilege): the batch may be
    /// the cause. Restarts, deadlocks, lost connections and timeouts are not refusals.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ArchiveError::Db { code: Some(_), .. })
            && matches!(
                self.failure(),
                Failure::Data | Failure::MissingEvent | Failure::Setup
            )
    }

    /// The statement ran out of time (ours, or the server's statement_timeout): a smaller batch
    /// may pass.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ArchiveError::Timeout { .. }) || self.code() == Some("57014")
    }

    /// TLS could not be set up (no TLS on the server, or a certificate we do not trust).
    fn is_tls_failure(&self) -> bool {
        match self {
            ArchiveError::Db {
                code: None,
                message,
                ..
            } => {
                message.contains("TLS")
                    || message.contains("certificate")
                    || message.contains("server does not support SSL")
            }
            _ => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ArchiveError::Db { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn failure(&self) -> Failure {
        if self.is_auth_failure() || self.is_tls_failure() {
            return Failure::Setup;
        }
        match self {
            ArchiveError::ConnectTimeout { .. }
            | ArchiveError::Timeout { .. }
            | ArchiveError::Other(_) => Failure::Transient,
            ArchiveError::Db { code: None, .. } => Failure::Transient,
            ArchiveError::Db { code: Some(c), .. } => classify(c),
            _ => Failure::Setup,
        }
    }

    /// Wrong password or unknown user; PgBouncer reports these with SQLSTATE 08P01, so the
    /// message is what tells.
    fn is_auth_failure(&self) -> bool {
        match self {
            ArchiveError::Db { code, message, .. } => {
                matches!(code.as_deref(), Some("28P01" | "28000"))
                    || message.contains("password authentication failed")
                    || message.contains("no such user")
                    || message.contains("SASL authentication failed")
            }
            _ => false,
        }
    }

    /// The operator's next step, for errors that need one.
    pub fn hint(&self) -> Option<&'static str> {
        if self.is_tls_failure() {
            return Some(
                "TLS to the archive failed: enable client_tls_* in PgBouncer (and set upstream.ca_file for a private CA), or choose sslmode in the URL explicitly",
            );
        }
        if self.is_auth_failure() {
            return Some(
                "authentication failed: check BIGBROTR_DB_PASSWORD / upstream.password_file and the role name",
            );
        }
        if let ArchiveError::Db { message, .. } = self {
            if message.contains("registered to another database role") {
                return Some(
                    "this node key already ships under another role: give each node its own key and role",
                );
            }
        }
        let c = self.code()?;
        Some(match c {
            "42883" | "42P01" => "the archive schema is missing or old: run `bigbrotr archive migrate`",
            "42501" if self.to_string().contains("not bound") => {
                "the archive accepts only node keys an operator bound: on the archive, run \
                 `bigbrotr archive node add NAME --key <this node's public key>`"
            }
            "42501" => {
                "permission denied: the role must be in bigbrotr_node (`bigbrotr archive node add NAME`)"
            }
            "22BB1" => {
                "the archive recomputed an event id and it did not match: this node sent an \
                 altered event (a bug or a compromise); the event is set aside"
            }
            "3D000" => "the database in the URL does not exist",
            _ => return None,
        })
    }
}

/// SQLSTATE classes (PostgreSQL appendix A, and what PgBouncer sends).
fn classify(code: &str) -> Failure {
    if code == SqlState::FOREIGN_KEY_VIOLATION.code() {
        return Failure::MissingEvent;
    }
    match &code[..code.len().min(2)] {
        // connection exception, insufficient resources, operator intervention (shutdown,
        // cannot connect now), system error (I/O), transaction rollback (deadlock,
        // serialization), object not in prerequisite state (lock not available)
        "08" | "53" | "57" | "58" | "40" | "55" | "XX" => Failure::Transient,
        // data exception, integrity constraint violation, program limit exceeded
        "22" | "23" | "54" => Failure::Data,
        _ => Failure::Setup,
    }
}

/// Where to connect, with the credentials resolved; displays without the password.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub shown: String,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// `url` (postgres://user@host:port/db or key=value form); `password`: used when the URL
    /// carries none.
    pub fn new(
        key: &'static str,
        url: &str,
        password: Option<String>,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
    ) -> Result<Target, ArchiveError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| ArchiveError::BadUrl {
            key,
            message: format!("{e}"),
        })?;
        if config.get_password().is_none() {
            if let Some(p) = password {
                config.password(p);
            }
        }
        // TLS by default beyond this machine: an unencrypted session can be intercepted and
        // answered by anyone on the path, and the node deletes what it believes was committed.
        // `sslmode=disable|prefer` in the URL is an explicit choice and kept.
        if !url.to_ascii_lowercase().contains("sslmode") && !only_local_hosts(&config) {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if config.get_application_name().is_none() {
            config.application_name("bigbrotr");
        }
        config.connect_timeout(connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let shown = redact(&config);
        Ok(Target {
            config,
            shown,
            tls: tls_connector(ca_file)?,
            connect_timeout,
        })
    }

    /// The upstream archive of a node, from `[upstream]`; `None` when not configured.
    pub fn upstream(cfg: &crate::config::Config) -> Result<Option<Target>, ArchiveError> {
        let Some(url) = cfg.upstream.database_url.as_deref() else {
            return Ok(None);
        };
        let password = password_from(cfg.upstream_password_file().as_deref())?;
        Target::new(
            "upstream.database_url",
            url,
            password,
            cfg.upstream_ca_file().as_deref(),
            Duration::from_secs(cfg.upstream.connect_timeout_secs),
        )
        .map(Some)
    }

    /// The archive the admin commands work on: `DATABASE_URL`, else `[archive] database_url`.
    pub fn admin(cfg: &crate::config::Config) -> Result<Target, ArchiveError> {
        let (key, url) = match std::env::var("DATABASE_URL") {
            Ok(u) if !u.trim().is_empty() => ("DATABASE_URL", u),
            _ => match &cfg.archive.database_url {
                Some(u) => ("archive.database_url", u.clone()),
                None => return Err(ArchiveError::NoUrl),
            },
        };
        let password = password_from(None)?;
        Target::new(
            key,
            &url,
            password,
            cfg.upstream_ca_file().as_deref(),
            Duration::from_secs(cfg.upstream.connect_timeout_secs),
        )
    }

    /// Open one connection (the pool calls this).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ArchiveError> {
        let fut = self.config.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| ArchiveError::ConnectTimeout {
                target: self.shown.clone(),
                secs: self.connect_timeout.as_secs(),
            })?
            .map_err(|e| ArchiveError::from_pg(&self.shown, e))?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(archive = %shown, error = %e, "archive connection closed");
            }
        });
        Ok(client)
    }

    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        self.tls.clone()
    }
}

/// Every host is this machine (loopback address, `localhost` or a Unix socket).
fn only_local_hosts(c: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    c.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// `BIGBROTR_DB_PASSWORD`, else the first line of `file`.
pub fn password_from(file: Option<&Path>) -> Result<Option<String>, ArchiveError> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            return Ok(Some(p));
        }
    }
    match file {
        Some(path) => read_password_file(path),
        None => Ok(None),
    }
}

/// The first line of a password file that only its owner can read.
fn read_password_file(path: &Path) -> Result<Option<String>, ArchiveError> {
    let err = |source| ArchiveError::PasswordFile {
        path: path.display().to_string(),
        source,
    };
    // A secret other users can read is refused, as ssh refuses such a key: the fix is one chmod.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ArchiveError::PasswordFileOpen {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(err)?;
    Ok(text
        .lines()
        .next()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty()))
}

/// `postgres://user@host:port/db`, never with the password.
pub fn redact(c: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{}/{}",
        c.get_user().unwrap_or("?"),
        host,
        port,
        c.get_dbname().unwrap_or("?")
    )
}

fn tls_connector(
    ca_file: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ArchiveError> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |message: String| ArchiveError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for der in rustls_pemfile_certs(&pem).map_err(bad)? {
            roots.add(der).map_err(|e| ArchiveError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no CERTIFICATE block found".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ArchiveError::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The CERTIFICATE blocks of a PEM file, decoded.
fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_password_file(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password_file(&f).unwrap().as_deref(), Some("s3cret"));
    }

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(classify("08006"), Failure::Transient);
        assert_eq!(classify("57P01"), Failure::Transient);
        assert_eq!(classify("40P01"), Failure::Transient);
        assert_eq!(classify("22P05"), Failure::Data);
        assert_eq!(classify("22021"), Failure::Data);
        assert_eq!(classify("54000"), Failure::Data);
        assert_eq!(classify("23503"), Failure::MissingEvent);
        assert_eq!(classify("42883"), Failure::Setup);
        assert_eq!(classify("28P01"), Failure::Setup);
    }

    #[test]
    fn refusals_timeouts_and_tls_failures_are_told_apart() {
        let db = |code: Option<&str>, message: &str| ArchiveError::Db {
            target: "t".into(),
            message: message.into(),
            code: code.map(str::to_string),
        };
        assert!(db(Some("22P05"), "x").is_refusal());
        assert!(db(Some("P0001"), "raised").is_refusal());
        assert!(!db(Some("57P01"), "terminating").is_refusal(), "a restart");
        assert!(!db(Some("08P01"), "server conn crashed").is_refusal());
        assert!(!db(Some("40P01"), "deadlock").is_refusal());
        assert!(!db(None, "connection closed").is_refusal());
        assert!(db(Some("57014"), "statement timeout").is_timeout());
        let tls = db(
            None,
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
        );
        assert_eq!(tls.failure(), Failure::Setup);
        assert!(tls.hint().unwrap().contains("client_tls"));
        let auth = db(
            Some("08P01"),
            "FATAL: password authentication failed for user \"n\"",
        );
        assert_eq!(auth.failure(), Failure::Setup);
        assert!(auth.hint().unwrap().contains("BIGBROTR_DB_PASSWORD"));
    }

    #[test]
    fn urls_are_shown_without_password() {
        let t = Target::new(
            "x",
            "postgres://node1:hunter2@db.example:6432/arch",
            None,
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(t.shown, "postgres://node1@db.example:6432/arch");
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = Target::new(
            "x",
            "postgres://node1@db.example/arch",
            Some("pw".into()),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn tls_is_required_beyond_this_machine_unless_chosen() {
        use tokio_postgres::config::SslMode;
        let mode = |url: &str| {
            Target::new("x", url, None, None, Duration::from_secs(1))
                .unwrap()
                .config
                .get_ssl_mode()
        };
        assert_eq!(
            mode("postgres://n@archive.example:6432/db"),
            SslMode::Require
        );
        assert_eq!(mode("postgres://n@10.0.0.5/db"), SslMode::Require);
        assert_eq!(mode("postgres://n@127.0.0.1:6432/db"), SslMode::Prefer);
        assert_eq!(mode("postgres://n@localhost/db"), SslMode::Prefer);
        assert_eq!(mode("postgres://n@[::1]:6432/db"), SslMode::Prefer);
        assert_eq!(
            mode("postgres://n@archive.example/db?sslmode=disable"),
            SslMode::Disable
        );
    }

    #[test]
    fn bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let err = Target::new(
            "x",
            "postgres://a@b/c",
            None,
            Some(&p),
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
