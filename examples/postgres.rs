//! An order placed once, with its ledger row, under retries.
//!
//! The idempotency record is written in the same PostgreSQL transaction as the order and its
//! ledger row ("transactional mode"), so they commit together or not at all:
//!
//! - the first attempt writes the order, then the payment gateway times out: the transaction
//!   rolls back, and the key is free again;
//! - the second attempt places the order and commits it with its key record;
//! - a client retry (its response was lost) and four concurrent retries get the same order
//!   back without placing it again.
//!
//! ```sh
//! IDEM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example postgres --features postgres
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use idem_core::postgres::PgStore;
use idem_core::{Error, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

#[derive(Debug, Clone, Serialize)]
struct OrderRequest {
    idempotency_key: String,
    customer: String,
    amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    order_id: i64,
    ledger_id: i64,
}

#[derive(Debug)]
enum ShopError {
    Idem(Error),
    Db(sqlx::Error),
    GatewayTimeout,
}

impl std::fmt::Display for ShopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShopError::Idem(err) => write!(f, "{err}"),
            ShopError::Db(err) => write!(f, "database: {err}"),
            ShopError::GatewayTimeout => f.write_str("the payment gateway timed out"),
        }
    }
}

impl std::error::Error for ShopError {}

impl From<Error> for ShopError {
    fn from(err: Error) -> Self {
        ShopError::Idem(err)
    }
}

impl From<sqlx::Error> for ShopError {
    fn from(err: sqlx::Error) -> Self {
        ShopError::Db(err)
    }
}

/// Places the order inside the caller's transaction `conn`: the key record is inserted and
/// completed on the same connection, so it commits with the order and its ledger row.
#[idempotent(
    key = req.idempotency_key,
    scope = "shop::place_order",
    store = store,
    transaction = conn,
    skip(store, gateway_times_out),
)]
async fn place_order(
    store: &PgStore,
    conn: &mut PgConnection,
    req: &OrderRequest,
    gateway_times_out: bool,
) -> Result<Placed, ShopError> {
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO example_orders (customer, amount_cents) VALUES ($1, $2) RETURNING id",
    )
    .bind(&req.customer)
    .bind(req.amount_cents)
    .fetch_one(&mut *conn)
    .await?;
    let ledger_id: i64 = sqlx::query_scalar(
        "INSERT INTO example_ledger (order_id, amount_cents) VALUES ($1, $2) RETURNING id",
    )
    .bind(order_id)
    .bind(req.amount_cents)
    .fetch_one(&mut *conn)
    .await?;
    if gateway_times_out {
        return Err(ShopError::GatewayTimeout);
    }
    Ok(Placed {
        order_id,
        ledger_id,
    })
}

/// One attempt as a request handler would make it: its own transaction, committed on `Ok`,
/// rolled back on `Err`.
async fn attempt(
    store: &PgStore,
    req: &OrderRequest,
    gateway_times_out: bool,
) -> Result<Placed, ShopError> {
    let mut tx = store.pool().begin().await?;
    match place_order(store, &mut tx, req, gateway_times_out).await {
        Ok(placed) => {
            tx.commit().await?;
            Ok(placed)
        }
        Err(err) => {
            tx.rollback().await?;
            Err(err)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("IDEM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS example_orders (
             id bigserial PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS example_ledger (
             id bigserial PRIMARY KEY, order_id bigint NOT NULL, amount_cents bigint NOT NULL);",
    )
    .execute(store.pool())
    .await?;

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let req = OrderRequest {
        idempotency_key: format!("order-{nanos}"),
        customer: format!("customer-{nanos}"),
        amount_cents: 4_200,
    };

    match attempt(&store, &req, true).await {
        Err(ShopError::GatewayTimeout) => {
            println!("attempt 1: gateway timed out; order, ledger row and key rolled back")
        }
        other => return Err(format!("attempt 1: unexpected {other:?}").into()),
    }
    let placed = attempt(&store, &req, false).await?;
    println!("attempt 2: placed {placed:?}");
    let retried = attempt(&store, &req, false).await?;
    println!("retry:     replayed {retried:?}");
    assert_eq!(retried, placed);

    let concurrent: Vec<_> = (0..4)
        .map(|_| {
            let (store, req) = (store.clone(), req.clone());
            tokio::spawn(async move { attempt(&store, &req, false).await })
        })
        .collect();
    for task in concurrent {
        let got = task.await??;
        assert_eq!(got, placed);
    }
    println!("4 concurrent retries: all got {placed:?}");

    let (orders, ledger): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM example_orders WHERE customer = $1),
                (SELECT count(*) FROM example_ledger l JOIN example_orders o ON o.id = l.order_id
                  WHERE o.customer = $1)",
    )
    .bind(&req.customer)
    .fetch_one(store.pool())
    .await?;
    println!("orders for this customer: {orders}, ledger rows: {ledger}");
    assert_eq!((orders, ledger), (1, 1));

    // Expired keys are cleaned up by a periodic job, from any number of processes.
    let purged = store.purge_expired(1_000).await?;
    println!("purged {purged} expired idempotency records");
    Ok(())
}
