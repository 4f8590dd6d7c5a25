//! One function shape, five ways: a small request in, a small receipt out.
//!
//! - [`bare`]: the body alone, no protection (the floor);
//! - [`idem_charge`]: idem's `#[idempotent]` on a [`MemoryStore`];
//! - [`cached_charge`]: the `cached` crate's `#[cached]` memoisation;
//! - [`Peer::idempotent_charge`]: the `idempotent` crate 2.x, its memory store, `json()` values;
//! - [`Peer::moka_charge`]: a hand-written `moka::future::Cache::try_get_with`.
//!
//! Every variant keys on `payment_id` and returns the same `Receipt`. The benches in `benches/`
//! call them side by side.
//!
//! The Redis and PostgreSQL benches use the same function on idem's [`RedisStore`] and
//! [`PgStore`] ([`idem_redis_charge`], [`idem_pg_charge`], [`idem_pg_insert`]) and on the
//! `idempotent` crate's Valkey store ([`idempotent_charge`], generic over its stores);
//! [`proxy`] counts the commands a Redis client sends.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cached::macros::cached;
use idem_core::postgres::PgStore;
use idem_core::redis::RedisStore;
use idem_core::{MemoryStore, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

pub mod proxy;

/// The request: what a payment API receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The idempotency key.
    pub payment_id: String,
    /// Minor units.
    pub amount: u64,
}

impl ChargeRequest {
    /// A request for `payment_id`.
    pub fn new(payment_id: impl Into<String>, amount: u64) -> Self {
        ChargeRequest {
            payment_id: payment_id.into(),
            amount,
        }
    }
}

/// The receipt: what it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The receipt number.
    pub id: u64,
    /// The amount charged.
    pub amount: u64,
}

/// The error of every variant.
#[derive(Debug, Clone)]
pub enum BenchError {
    /// idem's own errors (`Mismatch`, `InProgress`, ...).
    Idem(String),
    /// The application's own statement failed (the PostgreSQL bench).
    Db(String),
}

impl From<idem_core::Error> for BenchError {
    fn from(err: idem_core::Error) -> Self {
        BenchError::Idem(err.to_string())
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Idem(err) | BenchError::Db(err) => f.write_str(err),
        }
    }
}

impl From<sqlx::Error> for BenchError {
    fn from(err: sqlx::Error) -> Self {
        BenchError::Db(err.to_string())
    }
}

impl std::error::Error for BenchError {}

static RECEIPTS: AtomicU64 = AtomicU64::new(0);

/// The work every variant protects: numbers a receipt. Cheap on purpose, so the benches measure
/// the wrapper, not the body.
pub fn receipt(req: &ChargeRequest) -> Receipt {
    Receipt {
        id: RECEIPTS.fetch_add(1, Ordering::Relaxed) + 1,
        amount: req.amount,
    }
}

/// The bare function: no idempotency at all.
pub async fn bare(req: &ChargeRequest) -> Result<Receipt, BenchError> {
    Ok(receipt(req))
}

/// idem: `#[idempotent]` on the store passed in (a [`MemoryStore`] in every bench).
#[idempotent(key = req.payment_id, ttl = "24h", store = store, skip(store))]
pub async fn idem_charge(store: &MemoryStore, req: &ChargeRequest) -> Result<Receipt, BenchError> {
    Ok(receipt(req))
}

/// idem, with the coalescing bench's body ([`Round::body`]).
#[idempotent(key = req.payment_id, store = store, skip(store, round))]
pub async fn idem_slow_charge(
    store: &MemoryStore,
    round: &Round,
    req: &ChargeRequest,
) -> Result<Receipt, BenchError> {
    Ok(round.body(req).await)
}

/// `cached`: `#[cached]` keyed on the payment id (its default, unbounded store; `Err` is not
/// cached, like idem).
#[cached(key = "String", convert = r#"{ req.payment_id.clone() }"#)]
pub async fn cached_charge(req: &ChargeRequest) -> Result<Receipt, BenchError> {
    Ok(receipt(req))
}

/// `cached` with per-key locking (`sync_writes = "by_key"`), so concurrent first calls of one key
/// run the body once: its answer to coalescing.
#[cached(
    key = "String",
    convert = r#"{ req.payment_id.clone() }"#,
    sync_writes = "by_key"
)]
pub async fn cached_slow_charge(round: &Round, req: &ChargeRequest) -> Result<Receipt, BenchError> {
    Ok(round.body(req).await)
}

/// One round of the coalescing bench: `callers` calls of one key, whose body waits until every
/// caller has arrived, then works for `work` (a sleep), then records when it ended.
#[derive(Debug)]
pub struct Round {
    callers: usize,
    arrived: AtomicUsize,
    work: Duration,
    ended: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Round {
    /// A round of `callers` calls whose body works for `work`.
    pub fn new(callers: usize, work: Duration) -> Self {
        Round {
            callers,
            arrived: AtomicUsize::new(0),
            work,
            ended: std::sync::Mutex::new(None),
        }
    }

    /// Each caller, just before its call.
    pub fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
    }

    /// The body: waits for every caller to arrive (so the duplicates are waiting, not late),
    /// works, numbers a receipt and records the end.
    pub async fn body(&self, req: &ChargeRequest) -> Receipt {
        while self.arrived.load(Ordering::SeqCst) < self.callers {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(self.work).await;
        let receipt = receipt(req);
        *self.ended.lock().unwrap() = Some(std::time::Instant::now());
        receipt
    }

    /// When the body ended.
    pub fn ended(&self) -> Option<std::time::Instant> {
        *self.ended.lock().unwrap()
    }
}

/// The peers that are values rather than attributes: the `idempotent` crate's memory store and a
/// moka cache. Built inside a tokio runtime (the `idempotent` store spawns its actor there).
#[derive(Clone)]
pub struct Peer {
    /// `idempotent` 2.x's in-memory store.
    pub idempotent: idempotent::memory::MemoryStore,
    /// A moka future cache used with `try_get_with`.
    pub moka: moka::future::Cache<String, Receipt>,
}

/// The lease (processing TTL) given to the `idempotent` crate, as idem's default.
pub const LEASE: Duration = Duration::from_secs(30);
/// The completed TTL given to every store that has one.
pub const TTL: Duration = Duration::from_secs(24 * 60 * 60);

impl Peer {
    /// The peers, on the current tokio runtime.
    pub fn new() -> Self {
        Peer {
            idempotent: idempotent::memory::MemoryStore::builder()
                .try_build()
                .expect("inside a tokio runtime"),
            moka: moka::future::Cache::builder().time_to_live(TTL).build(),
        }
    }

    /// The `idempotent` crate: claim the key with a fingerprint of the request, run or replay,
    /// the receipt cached as JSON (`json()`).
    pub async fn idempotent_charge(&self, req: &ChargeRequest) -> Result<Receipt, BenchError> {
        idempotent_charge(&self.idempotent, req).await
    }

    /// The `idempotent` crate with any body; `None` when the key is in flight (that crate has no
    /// waiting: the caller retries).
    pub async fn idempotent_with<F>(
        &self,
        req: &ChargeRequest,
        body: F,
    ) -> Result<Option<Receipt>, BenchError>
    where
        F: AsyncFnOnce(&ChargeRequest) -> Result<Receipt, BenchError>,
    {
        idempotent_with(&self.idempotent, req, body).await
    }

    /// moka: `try_get_with` on the payment id.
    pub async fn moka_charge(&self, req: &ChargeRequest) -> Result<Receipt, BenchError> {
        self.moka
            .try_get_with_by_ref(&req.payment_id, async { Ok(receipt(req)) })
            .await
            .map_err(|err: std::sync::Arc<BenchError>| (*err).clone())
    }
}

impl Default for Peer {
    fn default() -> Self {
        Peer::new()
    }
}

/// The `idempotent` crate on any of its stores (its memory store, its Valkey/Redis store): claim
/// the key with a fingerprint of the request, run or replay, the receipt cached as JSON
/// (`json()`).
pub async fn idempotent_charge<S>(store: &S, req: &ChargeRequest) -> Result<Receipt, BenchError>
where
    S: idempotent::IdempotencyStore,
{
    idempotent_with(store, req, async |req| Ok(receipt(req)))
        .await
        .map(|outcome| outcome.expect("not in flight"))
}

/// The `idempotent` crate on any of its stores with any body; `None` when the key is in flight.
pub async fn idempotent_with<S, F>(
    store: &S,
    req: &ChargeRequest,
    body: F,
) -> Result<Option<Receipt>, BenchError>
where
    S: idempotent::IdempotencyStore,
    F: AsyncFnOnce(&ChargeRequest) -> Result<Receipt, BenchError>,
{
    use idempotent::{ExecutionOutcome, IdempotencyKey};
    let key = IdempotencyKey::new(req.payment_id.clone())
        .map_err(|err| BenchError::Idem(err.to_string()))?;
    let body_hash = idempotent::fingerprint::body(req);
    let outcome = store
        .claim(&key, LEASE)
        .fingerprint("charge", &body_hash)
        .json()
        .execute_or_replay(TTL, async |_token| {
            body(req)
                .await
                .map_err(|err| Box::new(err) as Box<dyn std::error::Error + Send + Sync>)
        })
        .await
        .map_err(|err| BenchError::Idem(format!("{err:?}")))?;
    match outcome {
        ExecutionOutcome::Executed(r) | ExecutionOutcome::Replayed(r) => Ok(Some(r)),
        ExecutionOutcome::InFlight => Ok(None),
        other => Err(BenchError::Idem(format!(
            "unexpected outcome: {:?}",
            other.map(|_| ())
        ))),
    }
}

/// idem on Redis: `#[idempotent]` with a [`RedisStore`].
#[idempotent(key = req.payment_id, ttl = "24h", store = store, skip(store))]
pub async fn idem_redis_charge(
    store: &RedisStore,
    req: &ChargeRequest,
) -> Result<Receipt, BenchError> {
    Ok(receipt(req))
}

/// idem on PostgreSQL, standalone: `#[idempotent]` with a [`PgStore`].
#[idempotent(key = req.payment_id, ttl = "24h", store = store, skip(store))]
pub async fn idem_pg_charge(store: &PgStore, req: &ChargeRequest) -> Result<Receipt, BenchError> {
    Ok(receipt(req))
}

/// The application's write in the transactional bench: one `INSERT` of the charge on `tx`, with
/// `insert` the statement (`INSERT INTO <table> (payment_id, amount) VALUES ($1, $2) RETURNING
/// id`). The receipt carries the row's id.
pub async fn insert_charge(
    tx: &mut PgConnection,
    insert: &str,
    req: &ChargeRequest,
) -> Result<Receipt, BenchError> {
    let id: i64 = sqlx::query_scalar(insert)
        .bind(&req.payment_id)
        .bind(req.amount as i64)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Receipt {
        id: id as u64,
        amount: req.amount,
    })
}

/// idem's transactional mode: the same `INSERT` ([`insert_charge`]), with the key record
/// inserted and completed in the caller's transaction `tx`.
#[idempotent(key = req.payment_id, ttl = "24h", store = store, transaction = tx, skip(store, insert))]
pub async fn idem_pg_insert(
    store: &PgStore,
    tx: &mut PgConnection,
    insert: &str,
    req: &ChargeRequest,
) -> Result<Receipt, BenchError> {
    insert_charge(tx, insert, req).await
}

/// A store for idem, like [`MemoryStore::new`].
pub fn idem_store() -> MemoryStore {
    MemoryStore::new()
}

/// idem's store with records outside moka: `MemoryStore::builder().lazy_expiry()` (the
/// `idem-lazy` lines).
pub fn idem_lazy_store() -> MemoryStore {
    MemoryStore::builder().lazy_expiry().build()
}

/// `n` distinct payment ids, `pay-00000000` on.
pub fn payment_id(n: u64) -> String {
    format!("pay-{n:08}")
}

/// A fresh key per call (first-call benches).
pub fn fresh_request() -> ChargeRequest {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    ChargeRequest::new(payment_id(NEXT.fetch_add(1, Ordering::Relaxed)), 1200)
}
