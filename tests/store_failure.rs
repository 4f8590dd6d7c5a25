//! SPEC 2.8: fail closed. A store that cannot claim means the body does not run; a store that
//! cannot save the outcome is retried, and the caller still gets the body's result.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ChargeRequest, PaymentError, Receipt, next_receipt};
use idem_core::store::{Claim, ClaimRequest, ClaimToken, Fence, Outcome, Record};
use idem_core::{Error, MemoryStore, RecordKey, Store, StoreError, idempotent};

/// A MemoryStore whose operations fail while the matching counter is above zero.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    failing_claims: Arc<AtomicUsize>,
    failing_completes: Arc<AtomicUsize>,
    completes: Arc<AtomicUsize>,
}

fn fail(counter: &AtomicUsize, what: &'static str) -> Result<(), StoreError> {
    let left = counter.load(Ordering::SeqCst);
    if left > 0 {
        counter.store(left - 1, Ordering::SeqCst);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "store is down");
        return Err(StoreError::new(what, io));
    }
    Ok(())
}

impl Store for Flaky {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        fail(&self.failing_claims, "claim")?;
        self.inner.claim(request).await
    }

    async fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<Fence, StoreError> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        fail(&self.failing_completes, "complete")?;
        self.inner.complete(token, outcome, ttl).await
    }

    fn release(
        &self,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        self.inner.release(token)
    }

    fn renew(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        self.inner.renew(token, lease)
    }

    fn get(
        &self,
        key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.inner.get(key)
    }
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs))]
async fn charge(
    store: &Flaky,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    Ok(next_receipt(runs, req))
}

#[tokio::test]
async fn an_unreachable_store_gives_a_store_error_and_the_body_does_not_run() {
    let store = Flaky::default();
    let runs = AtomicUsize::new(0);
    store.failing_claims.store(1, Ordering::SeqCst);
    let req = ChargeRequest::new("pay-down", 5);
    let err = charge(&store, &runs, &req).await.unwrap_err();
    match err.idem() {
        Error::Store(err) => assert_eq!(err.context(), "claim"),
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no body runs without a claim"
    );
    // The store is back: the call runs, once.
    assert_eq!(charge(&store, &runs, &req).await.unwrap().id, 1);
    assert_eq!(charge(&store, &runs, &req).await.unwrap().id, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_completion_is_retried_and_the_caller_still_gets_the_result() {
    let store = Flaky::default();
    let runs = AtomicUsize::new(0);
    store.failing_completes.store(3, Ordering::SeqCst);
    let req = ChargeRequest::new("pay-save", 6);
    let receipt = charge(&store, &runs, &req).await.unwrap();
    assert_eq!(receipt, Receipt { id: 1, amount: 6 });
    assert_eq!(
        store.completes.load(Ordering::SeqCst),
        4,
        "three failures, then stored"
    );
    assert_eq!(
        charge(&store, &runs, &req).await.unwrap(),
        receipt,
        "the retry replays it"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_completion_that_never_succeeds_still_returns_the_result() {
    let store = Flaky::default();
    let runs = AtomicUsize::new(0);
    store.failing_completes.store(usize::MAX, Ordering::SeqCst);
    let req = ChargeRequest::new("pay-lost", 7);
    let receipt = charge(&store, &runs, &req).await.unwrap();
    assert_eq!(
        receipt,
        Receipt { id: 1, amount: 7 },
        "the caller gets the body's result"
    );
    assert!(
        store.completes.load(Ordering::SeqCst) > 1,
        "storing was retried"
    );
}

#[tokio::test]
async fn a_default_store_error_is_a_typed_error_for_a_dyn_store_too() {
    let flaky = Flaky::default();
    flaky.failing_claims.store(1, Ordering::SeqCst);
    let store = idem_core::store::DynStore::new(flaky);
    let key = RecordKey::new("s", "k").unwrap();
    let request = ClaimRequest {
        key: &key,
        fingerprint: idem_core::Fingerprint::of(&0u8).unwrap(),
        owner: idem_core::store::Owner::new(),
        lease: Duration::from_secs(1),
    };
    assert!(store.claim(&request).await.is_err());
    assert!(matches!(
        store.claim(&request).await.unwrap(),
        Claim::Acquired { .. }
    ));
}
