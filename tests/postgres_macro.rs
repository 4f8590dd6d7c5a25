//! `#[idempotent(transaction = tx)]`: the key record is written in the caller's transaction, so
//! the application's rows and the key commit together or not at all. Needs `IDEM_DATABASE_URL`.
#![cfg(feature = "postgres")]

use std::sync::atomic::{AtomicUsize, Ordering};

use idem_core::postgres::PgStore;
use idem_core::{Error, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

fn database_url() -> Option<String> {
    match std::env::var("IDEM_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            println!("skipped: IDEM_DATABASE_URL is not set");
            None
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)] // the fields are shown by Debug when an assertion fails
enum OrderError {
    OutOfStock,
    Idem(Error),
    Db(sqlx::Error),
}

impl From<Error> for OrderError {
    fn from(err: Error) -> Self {
        OrderError::Idem(err)
    }
}

impl From<sqlx::Error> for OrderError {
    fn from(err: sqlx::Error) -> Self {
        OrderError::Db(err)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    order_id: i64,
}

#[derive(Serialize)]
struct Order {
    reference: String,
    quantity: i64,
}

struct Shop {
    store: PgStore,
    ledger: String,
    runs: AtomicUsize,
}

impl Shop {
    #[idempotent(key = order.reference, store = &self.store, transaction = tx)]
    async fn place(&self, tx: &mut PgConnection, order: &Order) -> Result<Placed, OrderError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let order_id: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO {} (reference, quantity) VALUES ($1, $2) RETURNING id",
            self.ledger
        ))
        .bind(&order.reference)
        .bind(order.quantity)
        .fetch_one(&mut *tx)
        .await?;
        if order.quantity > 10 {
            return Err(OrderError::OutOfStock);
        }
        Ok(Placed { order_id })
    }

    async fn rows(&self, pool: &PgPool, reference: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE reference = $1",
            self.ledger
        ))
        .bind(reference)
        .fetch_one(pool)
        .await
        .unwrap()
    }
}

async fn shop(url: &str) -> (Shop, PgPool) {
    let pool = PgPool::connect(url)
        .await
        .expect("IDEM_DATABASE_URL is set but the database does not answer");
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        idem_core::store::Owner::new().as_u128() as u32
    );
    let table = format!("idem_macro_keys_{suffix}");
    let ledger = format!("idem_macro_ledger_{suffix}");
    let store = PgStore::builder(pool.clone())
        .table(&table)
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {ledger} (id BIGSERIAL PRIMARY KEY, reference TEXT, quantity BIGINT)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    (
        Shop {
            store,
            ledger,
            runs: AtomicUsize::new(0),
        },
        pool,
    )
}

async fn drop_tables(shop: &Shop, pool: &PgPool) {
    for table in [shop.store.table(), shop.ledger.as_str()] {
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_committed_order_and_its_key_are_kept_together_and_replayed() {
    let Some(url) = database_url() else { return };
    let (shop, pool) = shop(&url).await;
    let order = Order {
        reference: "order-1".into(),
        quantity: 2,
    };

    let mut tx = pool.begin().await.unwrap();
    let placed = shop.place(&mut tx, &order).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    let again = shop.place(&mut tx, &order).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(placed, again, "the retry replays the committed outcome");
    assert_eq!(shop.runs.load(Ordering::SeqCst), 1);
    assert_eq!(shop.rows(&pool, "order-1").await, 1, "one ledger row");
    drop_tables(&shop, &pool).await;
}

#[tokio::test]
async fn a_failed_or_rolled_back_order_leaves_neither_row_nor_key() {
    let Some(url) = database_url() else { return };
    let (shop, pool) = shop(&url).await;

    // The body fails after writing its row; the caller rolls back, as on any error.
    let too_many = Order {
        reference: "order-big".into(),
        quantity: 50,
    };
    let mut tx = pool.begin().await.unwrap();
    assert!(matches!(
        shop.place(&mut tx, &too_many).await,
        Err(OrderError::OutOfStock)
    ));
    tx.rollback().await.unwrap();
    assert_eq!(shop.rows(&pool, "order-big").await, 0);

    // The body succeeds but the application's transaction rolls back: no key either.
    let order = Order {
        reference: "order-2".into(),
        quantity: 1,
    };
    let mut tx = pool.begin().await.unwrap();
    shop.place(&mut tx, &order).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(shop.rows(&pool, "order-2").await, 0);

    // So a retry runs the body again, as if it were the first.
    let mut tx = pool.begin().await.unwrap();
    shop.place(&mut tx, &order).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(shop.rows(&pool, "order-2").await, 1);
    assert_eq!(shop.runs.load(Ordering::SeqCst), 3);
    drop_tables(&shop, &pool).await;
}
