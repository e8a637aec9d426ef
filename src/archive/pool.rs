//! A small connection pool that is safe behind PgBouncer in transaction pooling mode by
//! construction: [`Conn`] does not expose the client, only
//! - [`Conn::query_typed`]: an unnamed statement with declared parameter types, sent as
//!   Parse/Bind/Describe/Execute/Sync in one round trip. Nothing named is ever prepared, so no
//!   statement can be found on (or executed by) another client's server connection;
//! - [`Conn::simple`]: the simple query protocol (text, no parameters), for DDL and admin SQL.
//!
//! sqlx and tokio-postgres both default to named prepared statements, which PgBouncer 1.18 routes
//! to whatever server connection the next transaction gets ("prepared statement does not exist",
//! or worse, another client's statement executed). `tests/archive_pool.rs` runs many clients
//! through a real PgBouncer with few server connections and checks every result.
//!
//! A connection that saw an error, a timeout or an unfinished transaction is dropped, never
//! returned to the pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use super::{ArchiveError, Target};

pub struct Pool {
    target: Target,
    idle: Mutex<Vec<Client>>,
    slots: Arc<Semaphore>,
    /// Limit for one statement; on expiry the query is cancelled and the connection dropped.
    statement_timeout: Duration,
}

impl Pool {
    pub fn new(target: Target, max_connections: usize, statement_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            target,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            statement_timeout,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection: an idle one if any, else a new one (waits while `max_connections` are out).
    pub async fn get(self: &Arc<Self>) -> Result<Conn, ArchiveError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ArchiveError::Other("pool closed".into()))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(c) => c,
            None => self.target.connect().await?,
        };
        Ok(Conn {
            client: Some(client),
            pool: self.clone(),
            healthy: true,
            _permit: permit,
        })
    }

    /// Drop every idle connection (after the archive restarted, say).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub struct Conn {
    client: Option<Client>,
    pool: Arc<Pool>,
    /// Cleared by any failure: the connection is then closed instead of reused.
    healthy: bool,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn client(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }

    fn shown(&self) -> &str {
        &self.pool.target.shown
    }

    /// Run one statement with typed parameters as an unnamed statement (see the module docs).
    /// Outside an explicit transaction the statement is its own transaction.
    pub async fn query_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, ArchiveError> {
        let timeout = self.pool.statement_timeout;
        let res = tokio::time::timeout(timeout, self.client().query_typed(sql, params)).await;
        self.finish(res, timeout).await
    }

    /// Run SQL text with the simple query protocol (several statements allowed, no parameters).
    pub async fn simple(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, ArchiveError> {
        let timeout = self.pool.statement_timeout;
        let res = tokio::time::timeout(timeout, self.client().simple_query(sql)).await;
        self.finish(res, timeout).await
    }

    /// The first column of every row a simple query returned.
    pub async fn simple_column(&mut self, sql: &str) -> Result<Vec<Option<String>>, ArchiveError> {
        Ok(self
            .simple(sql)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            })
            .collect())
    }

    async fn finish<T>(
        &mut self,
        res: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        timeout: Duration,
    ) -> Result<T, ArchiveError> {
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.healthy = false;
                Err(ArchiveError::from_pg(self.shown(), e))
            }
            Err(_) => {
                self.healthy = false;
                // Ask the server to stop the statement; its outcome is unknown to us, which
                // idempotent ingest makes harmless.
                let token = self.client().cancel_token();
                let tls = self.pool.target.tls();
                let _ = tokio::time::timeout(Duration::from_secs(5), token.cancel_query(tls)).await;
                Err(ArchiveError::Timeout {
                    target: self.shown().to_string(),
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    /// Run `body` inside BEGIN ... COMMIT. If `body` fails, or the future is dropped half way,
    /// the connection is discarded (the server rolls back when it closes).
    pub async fn in_transaction<T, F>(&mut self, body: F) -> Result<T, ArchiveError>
    where
        F: for<'c> FnOnce(
            &'c mut Conn,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, ArchiveError>> + Send + 'c>,
        >,
    {
        self.simple("BEGIN").await?;
        // Until COMMIT succeeds this connection must not be reused.
        self.healthy = false;
        let out = body(self).await?;
        self.simple("COMMIT").await?;
        self.healthy = true;
        Ok(out)
    }

    /// Mark the connection as not reusable (e.g. the caller gave up on it).
    pub fn discard(&mut self) {
        self.healthy = false;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if self.healthy && !c.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c);
            }
        }
    }
}
