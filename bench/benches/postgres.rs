//! idem's `PgStore` on the PostgreSQL database at `$IDEM_DATABASE_URL` (skipped when it is
//! unset). One caller, a current-thread tokio runtime; fresh requests are built outside the
//! timed part.
//!
//! - `pg_standalone`: `#[idempotent(store = &PgStore)]`, a replay of a completed key and a first
//!   call with a fresh key; beside them `SELECT 1` on the same pool, the cost of one statement.
//! - `pg_transaction`: a transaction that inserts one application row and commits, without
//!   (`insert`) and with (`insert_idem`) `#[idempotent(transaction = tx)]` around the same
//!   `INSERT`, each with a fresh key; the difference is what the transactional mode adds.
//!
//! The bench's tables (`idem_bench_<pid>`, its `_fence` sequence, and `idem_bench_<pid>_charges`)
//! are dropped at the end, also when it panics.

use std::time::Duration;

use criterion::{BatchSize, Criterion};
use idem_bench::{ChargeRequest, fresh_request, idem_pg_charge, idem_pg_insert, insert_charge};
use idem_core::postgres::PgStore;
use sqlx::{Connection, Executor, PgPool};

/// Drops the bench's tables when dropped, on a connection of its own.
struct Cleanup {
    url: String,
    sql: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dropped = rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            conn.execute(self.sql.as_str()).await?;
            conn.close().await
        });
        match dropped {
            Ok(()) => println!("cleanup: {}", self.sql),
            Err(err) => eprintln!("cleanup failed ({}): {err}", self.sql),
        }
    }
}

fn main() {
    let Some(url) = std::env::var("IDEM_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        println!("postgres bench skipped: IDEM_DATABASE_URL is unset");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let connect = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(err)) => panic!(
                "IDEM_DATABASE_URL is set, but PostgreSQL does not accept a connection: {err}"
            ),
            Err(_) => {
                panic!("IDEM_DATABASE_URL is set, but PostgreSQL did not answer within 10 s")
            }
        }
    });

    let table = format!("idem_bench_{}", std::process::id());
    let charges = format!("{table}_charges");
    let _cleanup = Cleanup {
        url: url.clone(),
        sql: format!(
            "DROP TABLE IF EXISTS \"{table}\", \"{charges}\"; DROP SEQUENCE IF EXISTS \"{table}_fence\""
        ),
    };
    let store = PgStore::builder(pool.clone())
        .table(table.as_str())
        .build()
        .expect("a valid table name");
    let insert =
        format!("INSERT INTO \"{charges}\" (payment_id, amount) VALUES ($1, $2) RETURNING id");
    rt.block_on(async {
        store.migrate().await.expect("create the records table");
        pool.execute(
            format!(
                "CREATE TABLE \"{charges}\" (id bigserial PRIMARY KEY, payment_id text NOT NULL, amount bigint NOT NULL)"
            )
            .as_str(),
        )
        .await
        .expect("create the application's table");
    });
    println!("postgres bench: tables {table}, {charges}");

    let mut c = Criterion::default().configure_from_args();
    standalone(&mut c, &rt, &store, &pool);
    transaction(&mut c, &rt, &store, &pool, &insert);
    c.final_summary();
}

fn standalone(c: &mut Criterion, rt: &tokio::runtime::Runtime, store: &PgStore, pool: &PgPool) {
    let req = ChargeRequest::new("pay-replayed", 1200);
    rt.block_on(async {
        let first = idem_pg_charge(store, &req).await.unwrap();
        assert_eq!(idem_pg_charge(store, &req).await.unwrap(), first);
    });

    let mut group = c.benchmark_group("pg_standalone");
    group.bench_function("replay", |b| {
        b.to_async(rt).iter(|| async {
            idem_pg_charge(store, std::hint::black_box(&req))
                .await
                .unwrap()
        })
    });
    group.bench_function("first_call", |b| {
        b.to_async(rt).iter_batched(
            fresh_request,
            |req| async move { idem_pg_charge(store, &req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("select_1", |b| {
        b.to_async(rt).iter(|| async {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(pool)
                .await
                .unwrap()
        })
    });
    group.finish();
}

fn transaction(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    store: &PgStore,
    pool: &PgPool,
    insert: &str,
) {
    let mut group = c.benchmark_group("pg_transaction");
    group.bench_function("insert", |b| {
        b.to_async(rt).iter_batched(
            fresh_request,
            |req| async move {
                let mut tx = pool.begin().await.unwrap();
                let receipt = insert_charge(&mut tx, insert, &req).await.unwrap();
                tx.commit().await.unwrap();
                receipt
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("insert_idem", |b| {
        b.to_async(rt).iter_batched(
            fresh_request,
            |req| async move {
                let mut tx = pool.begin().await.unwrap();
                let receipt = idem_pg_insert(store, &mut tx, insert, &req).await.unwrap();
                tx.commit().await.unwrap();
                receipt
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}
