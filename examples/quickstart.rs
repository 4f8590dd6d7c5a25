//! A payment charged once, however often it is retried.
//!
//! Run it with `cargo run --example quickstart`. It uses the process default store, an
//! in-memory `MemoryStore`; nothing needs to be running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_core::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    payment_id: String,
    card: String,
    amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: u64,
    amount_cents: u64,
}

#[derive(Debug)]
enum PaymentError {
    Idem(idem_core::Error),
}

impl From<idem_core::Error> for PaymentError {
    fn from(err: idem_core::Error) -> Self {
        PaymentError::Idem(err)
    }
}

/// How many times the card was really charged.
static CHARGES: AtomicU64 = AtomicU64::new(0);

#[idempotent(key = req.payment_id, ttl = "24h")]
async fn charge(req: &ChargeRequest) -> Result<Receipt, PaymentError> {
    // The card processor is slow: long enough for duplicates to arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let charge_id = CHARGES.fetch_add(1, Ordering::SeqCst) + 1;
    println!(
        "    (card {} charged {} cents: charge #{charge_id})",
        req.card, req.amount_cents
    );
    Ok(Receipt {
        charge_id,
        amount_cents: req.amount_cents,
    })
}

fn request(payment_id: &str, amount_cents: u64) -> ChargeRequest {
    ChargeRequest {
        payment_id: payment_id.to_string(),
        card: "4242".to_string(),
        amount_cents,
    }
}

#[tokio::main]
async fn main() -> Result<(), PaymentError> {
    println!("1. A first call charges the card.");
    let first = charge(&request("pay-1", 1200)).await?;
    println!(
        "   -> receipt for charge #{} of {} cents",
        first.charge_id, first.amount_cents
    );

    println!("2. The client timed out and retries with the same payment id.");
    let retried = charge(&request("pay-1", 1200)).await?;
    println!(
        "   -> the same receipt (charge #{}) is replayed; the card was charged {} time(s) in all",
        retried.charge_id,
        CHARGES.load(Ordering::SeqCst)
    );
    assert_eq!(retried, first);

    println!("3. 100 duplicates of a new payment arrive at once.");
    let before = CHARGES.load(Ordering::SeqCst);
    let duplicates: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async { charge(&request("pay-2", 500)).await }))
        .collect();
    let mut receipts = Vec::new();
    for duplicate in duplicates {
        receipts.push(duplicate.await.expect("task")?);
    }
    let charged = CHARGES.load(Ordering::SeqCst) - before;
    let same = receipts.iter().all(|r| *r == receipts[0]);
    println!("   -> the body ran {charged} time(s); all 100 callers got the same receipt: {same}");
    assert_eq!(charged, 1);

    println!("4. A buggy client reuses payment id pay-1 for another amount.");
    match charge(&request("pay-1", 9900)).await {
        Err(PaymentError::Idem(idem_core::Error::Mismatch)) => {
            println!(
                "   -> rejected: the key was already used with different arguments; nothing was charged"
            )
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }

    println!(
        "In all, the card was charged {} time(s) for 2 payments.",
        CHARGES.load(Ordering::SeqCst)
    );
    Ok(())
}
