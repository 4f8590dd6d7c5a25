//! idem's `PgStore` on the PostgreSQL database at `$IDEM_DATABASE_URL` (skipped when it is
//! unset). One caller, a current-thread tokio runtime; fresh requests are built outside the
//! timed part.
//!
//! - `pg_standalone`: `#[idempotent(store = &PgStore)]`, a replay of a completed key and a first
//!   call with a fresh key; beside them `SELECT 1` on the same pool, the cost of one statement.
//!   The pool has sqlx's defaults (what `PgPool::connect` makes), which ping a connection each
//!   time it is taken from the pool (`test_before_acquire`); the `_no_ping` variants use a pool
//!   that does not, as `PgStore::connect` builds it.
//! - `pg_transaction`: a transaction that inserts one application row and commits, without
//!   (`insert`) and with (`insert_idem`) `#[idempotent(transaction = tx)]` around the same
//!   `INSERT`, each with a fresh key; the difference is what the transactional mode adds.
//!
//! After the groups, the round trips per call of each case, counted by a proxy
//! ([`idem_bench::proxy`]).
//!
//! The bench's tables (`idem_bench_<pid>`, its `_fence` sequence, and `idem_bench_<pid>_charges`)
//! are dropped at the end, also when it panics.

use std::net::ToSocketAddrs;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use idem_bench::proxy::{CountingProxy, Counts, Protocol, ROUND_TRIPS};
use idem_bench::{ChargeRequest, fresh_request, idem_pg_charge, idem_pg_insert, insert_charge};
use idem_core::postgres::PgStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgPool};

/// The calls per case of the round-trip count.
const COUNTED: u64 = 200;

/// A store on a pool with sqlx's defaults but 4 connections, and one whose pool does not ping
/// (as `PgStore::connect` builds it, but 4 connections).
struct Stores {
    store: PgStore,
    pool: PgPool,
    store_no_ping: PgStore,
    pool_no_ping: PgPool,
}

impl Stores {
    async fn connect(options: PgConnectOptions, table: &str) -> sqlx::Result<Stores> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        let pool_no_ping = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let store = |pool: &PgPool| {
            PgStore::builder(pool.clone())
                .table(table)
                .build()
                .expect("a valid table name")
        };
        Ok(Stores {
            store: store(&pool),
            store_no_ping: store(&pool_no_ping),
            pool,
            pool_no_ping,
        })
    }
}

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
    let options: PgConnectOptions = url
        .parse()
        .unwrap_or_else(|err| panic!("IDEM_DATABASE_URL is not a PostgreSQL URL: {err}"));
    let table = format!("idem_bench_{}", std::process::id());
    let stores = rt.block_on(async {
        let connect = Stores::connect(options.clone(), &table);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(stores)) => stores,
            Ok(Err(err)) => panic!(
                "IDEM_DATABASE_URL is set, but PostgreSQL does not accept a connection: {err}"
            ),
            Err(_) => {
                panic!("IDEM_DATABASE_URL is set, but PostgreSQL did not answer within 10 s")
            }
        }
    });
    let (store, pool) = (&stores.store, &stores.pool);
    let charges = format!("{table}_charges");
    let _cleanup = Cleanup {
        url: url.clone(),
        sql: format!(
            "DROP TABLE IF EXISTS \"{table}\", \"{charges}\"; DROP SEQUENCE IF EXISTS \"{table}_fence\""
        ),
    };
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
    standalone(&mut c, &rt, &stores);
    transaction(&mut c, &rt, store, pool, &insert);
    round_trips(&rt, options, &table, &insert);
    c.final_summary();
}

fn standalone(c: &mut Criterion, rt: &tokio::runtime::Runtime, stores: &Stores) {
    let req = ChargeRequest::new("pay-replayed", 1200);
    rt.block_on(async {
        let first = idem_pg_charge(&stores.store, &req).await.unwrap();
        assert_eq!(idem_pg_charge(&stores.store, &req).await.unwrap(), first);
    });

    let mut group = c.benchmark_group("pg_standalone");
    for (suffix, store, pool) in [
        ("", &stores.store, &stores.pool),
        ("_no_ping", &stores.store_no_ping, &stores.pool_no_ping),
    ] {
        group.bench_function(format!("replay{suffix}"), |b| {
            b.to_async(rt).iter(|| async {
                idem_pg_charge(store, std::hint::black_box(&req))
                    .await
                    .unwrap()
            })
        });
        group.bench_function(format!("first_call{suffix}"), |b| {
            b.to_async(rt).iter_batched(
                fresh_request,
                |req| async move { idem_pg_charge(store, &req).await.unwrap() },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("select_1{suffix}"), |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(pool)
                    .await
                    .unwrap()
            })
        });
    }
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

/// Counts the round trips of each case through a [`CountingProxy`]: `COUNTED` calls one after
/// another, after a warm-up that prepares the statements.
fn round_trips(rt: &tokio::runtime::Runtime, options: PgConnectOptions, table: &str, insert: &str) {
    rt.block_on(async {
        let server = (options.get_host(), options.get_port())
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .expect("resolve the PostgreSQL server");
        let proxy = CountingProxy::start(server, Protocol::Postgres).await;
        let proxied = options.host("127.0.0.1").port(proxy.addr().port());
        let stores = Stores::connect(proxied, table).await.unwrap();
        println!(
            "\nround trips per call (and messages sent per call), {COUNTED} calls one after another"
        );
        for (suffix, store, pool) in [
            ("", &stores.store, &stores.pool),
            ("_no_ping", &stores.store_no_ping, &stores.pool_no_ping),
        ] {
            let replayed = fresh_request();
            idem_pg_charge(store, &replayed).await.unwrap();
            idem_pg_charge(store, &fresh_request()).await.unwrap();
            proxy.take();
            for _ in 0..COUNTED {
                idem_pg_charge(store, &replayed).await.unwrap();
            }
            print_counts(&format!("replay{suffix}"), proxy.take());
            let firsts: Vec<_> = (0..COUNTED).map(|_| fresh_request()).collect();
            for req in &firsts {
                idem_pg_charge(store, req).await.unwrap();
            }
            print_counts(&format!("first_call{suffix}"), proxy.take());

            for idem in [false, true] {
                let requests: Vec<_> = (0..=COUNTED).map(|_| fresh_request()).collect();
                for (i, req) in requests.iter().enumerate() {
                    if i == 1 {
                        proxy.take();
                    }
                    let mut tx = pool.begin().await.unwrap();
                    if idem {
                        idem_pg_insert(store, &mut tx, insert, req).await.unwrap();
                    } else {
                        insert_charge(&mut tx, insert, req).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                }
                let name = if idem { "insert_idem" } else { "insert" };
                print_counts(&format!("{name}{suffix}"), proxy.take());
            }
        }
        stores.pool.close().await;
        stores.pool_no_ping.close().await;
    });
}

fn print_counts(case: &str, counts: Counts) {
    let per_call = |n: u64| n as f64 / COUNTED as f64;
    let trips = counts.get(ROUND_TRIPS).copied().unwrap_or(0);
    let all: Vec<String> = counts
        .iter()
        .filter(|(name, _)| *name != ROUND_TRIPS)
        .map(|(name, n)| format!("{name} {:.2}", per_call(*n)))
        .collect();
    println!(
        "round trips/{case:<20} {:.2}  ({})",
        per_call(trips),
        all.join(", ")
    );
}
