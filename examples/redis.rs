//! Idempotent payments shared by several processes through Redis.
//!
//! ```sh
//! IDEM_REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis --features redis
//! ```
//!
//! Two `RedisStore`s stand in for two processes (two machines behind a load balancer): a
//! charge retried on either of them, or on both at once, runs once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::redis::RedisStore;
use idem_core::{Error, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct ChargeRequest {
    payment_id: String,
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: u64,
    amount: u64,
}

static CHARGED: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = req.payment_id, ttl = "24h", scope = "example::charge", store = store, skip(store))]
async fn charge(store: &RedisStore, req: &ChargeRequest) -> Result<Receipt, Error> {
    // The side effect that must not happen twice.
    let n = CHARGED.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Receipt {
        id: n,
        amount: req.amount,
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("IDEM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Each process builds its store once at start-up (or calls `idem_core::set_default_store`).
    let prefix = format!("idem-example:{}:", std::process::id());
    let process_a = RedisStore::builder(url.as_str())
        .prefix(prefix.clone())
        .local_cache(10_000)
        .build()
        .await?;
    let process_b = RedisStore::builder(url.as_str())
        .prefix(prefix)
        .build()
        .await?;

    let req = ChargeRequest {
        payment_id: "pay-42".into(),
        amount: 1200,
    };
    // A client retries on both machines at once.
    let (a, b) = tokio::join!(charge(&process_a, &req), charge(&process_b, &req));
    let (a, b) = (a?, b?);
    // And again later, after a timeout on its side.
    let later = charge(&process_b, &req).await?;
    println!("process A got {a:?}, process B got {b:?}, the retry got {later:?}");
    assert!(a == b && b == later);
    assert_eq!(CHARGED.load(Ordering::SeqCst), 1, "charged exactly once");

    // The same payment id with another amount is refused, not charged.
    let other = ChargeRequest {
        payment_id: "pay-42".into(),
        amount: 9999,
    };
    let refused = charge(&process_a, &other).await;
    println!("same key, other amount: {refused:?}");
    assert!(matches!(refused, Err(Error::Mismatch)));
    Ok(())
}
