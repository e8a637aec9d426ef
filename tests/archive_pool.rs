//! The archive pool through a real PgBouncer in transaction pooling mode with few server
//! connections: many clients, many statement shapes, every result checked. With named prepared
//! statements (sqlx's and tokio-postgres's default) this mix fails with "prepared statement ...
//! does not exist / already exists" or, worse, returns another client's results.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bigbrotr::archive::{Pool, Target};
use support::pg::TestDb;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_through_pgbouncer_get_their_own_results() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::shared();
    let name = db.create_db();
    let role = db.role_name("pool");
    db.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'poolpw'"),
    );
    let target = Target::new(
        "test",
        &db.bouncer_url(&role, &name),
        Some("poolpw".into()),
        None,
        Duration::from_secs(10),
    )
    .expect("target");
    // 24 client connections onto PgBouncer's 4 server connections.
    let pool = Pool::new(target, 24, Duration::from_secs(30));
    let mut tasks = Vec::new();
    for t in 0..24i64 {
        let pool: Arc<Pool> = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut checked = 0u32;
            for i in 0..60i64 {
                let mut conn = pool.get().await.expect("connection");
                let x = t * 1_000_000 + i;
                match i % 4 {
                    0 => {
                        let rows = conn
                            .query_typed("SELECT $1::int8 * 2", &[(&x, Type::INT8)])
                            .await
                            .expect("int query");
                        assert_eq!(rows[0].get::<_, i64>(0), x * 2);
                    }
                    1 => {
                        let s = format!("client {t} query {i}");
                        let rows = conn
                            .query_typed(
                                "SELECT $1::text || '|' || $2::int4::text",
                                &[(&s, Type::TEXT), (&(i as i32), Type::INT4)],
                            )
                            .await
                            .expect("text query");
                        assert_eq!(rows[0].get::<_, String>(0), format!("{s}|{i}"));
                    }
                    2 => {
                        let b = vec![t as u8; (i as usize % 50) + 1];
                        let rows = conn
                            .query_typed(
                                "SELECT length($1::bytea), get_byte($1::bytea, 0)",
                                &[(&b, Type::BYTEA)],
                            )
                            .await
                            .expect("bytea query");
                        assert_eq!(rows[0].get::<_, i32>(0), b.len() as i32);
                        assert_eq!(rows[0].get::<_, i32>(1), t as i32);
                    }
                    _ => {
                        // An explicit transaction: both statements see the same server
                        // connection, and the transaction's own value.
                        let rows = conn
                            .in_transaction(|c| {
                                Box::pin(async move {
                                    c.simple("SET LOCAL application_name = 'pooltest'").await?;
                                    c.query_typed(
                                        "SELECT $1::int8 + 1, current_setting('application_name')",
                                        &[(&x, Type::INT8)],
                                    )
                                    .await
                                })
                            })
                            .await
                            .expect("transaction");
                        assert_eq!(rows[0].get::<_, i64>(0), x + 1);
                        assert_eq!(rows[0].get::<_, String>(1), "pooltest");
                    }
                }
                checked += 1;
            }
            checked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 24 * 60, "every query answered and checked");
    // PgBouncer really multiplexed: it holds at most its pool size of server connections.
    let servers: i64 = db
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"),
        )
        .parse()
        .unwrap();
    assert!(servers <= 4, "{servers} server connections");
}
