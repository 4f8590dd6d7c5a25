//! Every supported function shape runs its body once per key: methods, generic functions,
//! `#[async_trait]` impls, the process default store, stores behind pointers, re-exports.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ChargeRequest, PaymentError, Receipt};
use idem_core::{MemoryStore, idempotent};
use serde::Serialize;
use serde::de::DeserializeOwned;

struct Payments {
    store: MemoryStore,
    runs: AtomicUsize,
    ttl: Duration,
}

impl Payments {
    #[idempotent(key = req.payment_id, store = self.store.clone(), ttl = self.ttl)]
    async fn charge(&self, req: &ChargeRequest) -> Result<Receipt, PaymentError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        Ok(Receipt {
            id: run,
            amount: req.amount,
        })
    }

    #[idempotent(key = order, store = &self.store, scope = "payments::refund")]
    async fn refund(&self, order: u64) -> Result<u64, PaymentError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(order * 10)
    }
}

#[tokio::test]
async fn methods_with_self_run_once_per_key() {
    let payments = Payments {
        store: MemoryStore::new(),
        runs: AtomicUsize::new(0),
        ttl: Duration::from_secs(60),
    };
    let req = ChargeRequest::new("m-1", 4);
    assert_eq!(payments.charge(&req).await.unwrap().id, 1);
    assert_eq!(payments.charge(&req).await.unwrap().id, 1);
    assert_eq!(payments.refund(3).await.unwrap(), 30);
    assert_eq!(payments.refund(3).await.unwrap(), 30);
    assert_eq!(payments.runs.load(Ordering::SeqCst), 2);
}

static GENERIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = id, store = store, skip(store))]
async fn load<T>(store: &MemoryStore, id: u32, value: T) -> Result<T, PaymentError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    GENERIC_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(value)
}

#[tokio::test]
async fn generic_functions_store_and_replay_their_type() {
    let store = MemoryStore::new();
    assert_eq!(load(&store, 1, "first".to_string()).await.unwrap(), "first");
    assert_eq!(load(&store, 1, "first".to_string()).await.unwrap(), "first");
    assert_eq!(load(&store, 2, vec![1u8, 2]).await.unwrap(), vec![1, 2]);
    assert_eq!(GENERIC_RUNS.load(Ordering::SeqCst), 2);
}

#[async_trait::async_trait]
trait Ledger {
    async fn post(&self, entry: &ChargeRequest) -> Result<Receipt, PaymentError>;
}

struct Books {
    store: MemoryStore,
    runs: AtomicUsize,
}

#[async_trait::async_trait]
impl Ledger for Books {
    #[idempotent(key = entry.payment_id, store = self.store.clone())]
    async fn post(&self, entry: &ChargeRequest) -> Result<Receipt, PaymentError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        Ok(Receipt {
            id: run,
            amount: entry.amount,
        })
    }
}

#[tokio::test]
async fn async_trait_methods_are_idempotent_through_a_trait_object() {
    let books: Arc<dyn Ledger + Send + Sync> = Arc::new(Books {
        store: MemoryStore::new(),
        runs: AtomicUsize::new(0),
    });
    let entry = ChargeRequest::new("l-1", 12);
    let first = books.post(&entry).await.unwrap();
    let again = books.post(&entry).await.unwrap();
    assert_eq!((first.id, again.id), (1, 1));
}

static DEFAULT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = req.payment_id)]
async fn on_the_default_store(req: ChargeRequest) -> Result<Receipt, PaymentError> {
    let run = DEFAULT_RUNS.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    Ok(Receipt {
        id: run,
        amount: req.amount,
    })
}

#[tokio::test]
async fn the_default_store_is_an_in_memory_store_shared_by_the_process() {
    let req = ChargeRequest::new("default-1", 1);
    let handles: Vec<_> = (0..20)
        .map(|_| tokio::spawn(on_the_default_store(req.clone())))
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap().id, 1);
    }
    assert_eq!(DEFAULT_RUNS.load(Ordering::SeqCst), 1);
    assert!(
        idem_core::set_default_store(MemoryStore::new()).is_err(),
        "the default is fixed once used"
    );
}

mod reexported {
    //! A crate that re-exports idem under another path names it with `crate = "..."`.
    pub mod idem {
        pub use idem_core::*;
    }

    use super::common::PaymentError;

    #[idem_core::idempotent(key = n, crate = "crate::reexported::idem", store = super::STORE.clone())]
    pub async fn double(n: u32) -> Result<u32, PaymentError> {
        super::REEXPORT_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(n * 2)
    }
}

static REEXPORT_RUNS: AtomicUsize = AtomicUsize::new(0);
static STORE: std::sync::LazyLock<Arc<MemoryStore>> =
    std::sync::LazyLock::new(|| Arc::new(MemoryStore::new()));

#[tokio::test]
async fn a_reexported_path_and_a_store_behind_an_arc_work() {
    assert_eq!(reexported::double(21).await.unwrap(), 42);
    assert_eq!(reexported::double(21).await.unwrap(), 42);
    assert_eq!(REEXPORT_RUNS.load(Ordering::SeqCst), 1);
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs))]
async fn returns_early(
    store: &MemoryStore,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    runs.fetch_add(1, Ordering::SeqCst);
    if req.amount == 0 {
        return Err(PaymentError::Declined {
            reason: "zero amount".into(),
        });
    }
    let amount: u64 = req
        .amount
        .to_string()
        .parse()
        .map_err(|_| PaymentError::Unavailable)?;
    Ok(Receipt { id: 1, amount })
}

#[tokio::test]
async fn return_and_question_mark_in_the_body_work_as_written() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    assert!(matches!(
        returns_early(&store, &runs, &ChargeRequest::new("z", 0)).await,
        Err(PaymentError::Declined { .. })
    ));
    assert_eq!(
        returns_early(&store, &runs, &ChargeRequest::new("y", 5))
            .await
            .unwrap()
            .amount,
        5
    );
    assert_eq!(
        returns_early(&store, &runs, &ChargeRequest::new("y", 5))
            .await
            .unwrap()
            .amount,
        5
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn idempotent_futures_are_send_when_the_body_is() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let req = ChargeRequest::new("s", 1);
    assert_send(&returns_early(&store, &runs, &req));
    assert_send(&on_the_default_store(req.clone()));
}
