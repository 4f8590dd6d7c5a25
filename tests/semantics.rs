//! SPEC section 2 against MemoryStore: how many times each body ran and what each caller got.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{ChargeRequest, PaymentError, Receipt, next_receipt};
use idem_core::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record,
};
use idem_core::{Error, Fingerprint, MemoryStore, RecordKey, Store, idempotent};
use tokio::sync::Notify;

/// The canonical charge: counts its runs and answers a receipt numbered by the run.
#[idempotent(key = req.payment_id, store = store, skip(store, runs))]
async fn charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    Ok(next_receipt(runs, req))
}

#[tokio::test]
async fn first_call_runs_and_retry_replays_the_stored_value() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let req = ChargeRequest::new("pay-1", 1200);
    let first = charge(&store, &runs, &req).await.unwrap();
    let retry = charge(&store, &runs, &req).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body runs once");
    assert_eq!(
        first,
        Receipt {
            id: 1,
            amount: 1200
        }
    );
    assert_eq!(retry, first, "the retry gets the stored receipt");

    let key = RecordKey::new(concat!(module_path!(), "::charge"), "pay-1").unwrap();
    match store.get(&key).await.unwrap() {
        Some(Record::Completed { outcome, .. }) => {
            assert_eq!(outcome.kind(), OutcomeKind::Ok);
            let stored: Receipt = serde_json::from_slice(outcome.bytes()).unwrap();
            assert_eq!(
                stored, first,
                "the store holds the receipt under the default scope"
            );
        }
        other => panic!("expected a completed record, got {other:?}"),
    }
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, gate))]
async fn slow_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    gate: &Notify,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let receipt = next_receipt(runs, req);
    gate.notified().await;
    Ok(receipt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_duplicates_run_the_body_once() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (store, runs, gate) = (store.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                slow_charge(&store, &runs, &gate, &ChargeRequest::new("pay-1000", 5)).await
            })
        })
        .collect();
    // Let every duplicate arrive while the first is still running.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(task.await.unwrap().unwrap());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one body ran");
    assert_eq!(receipts.len(), 1000);
    assert!(
        receipts.iter().all(|r| *r == Receipt { id: 1, amount: 5 }),
        "all 1000 got the first receipt"
    );
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, started), concurrent = "wait", wait = "10s")]
async fn hanging_first_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    started: &Notify,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    started.notify_one();
    if run == 1 {
        // The first attempt hangs until its caller gives up on it.
        std::future::pending::<()>().await;
    }
    Ok(Receipt {
        id: run,
        amount: req.amount,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_leader_lets_a_waiting_duplicate_run_the_body_once() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let req = ChargeRequest::new("pay-drop", 70);
    let leader = {
        let (store, runs, started, req) =
            (store.clone(), runs.clone(), started.clone(), req.clone());
        tokio::spawn(async move { hanging_first_charge(&store, &runs, &started, &req).await })
    };
    started.notified().await;
    let duplicates: Vec<_> = (0..3)
        .map(|_| {
            let (store, runs, started, req) =
                (store.clone(), runs.clone(), started.clone(), req.clone());
            tokio::spawn(async move { hanging_first_charge(&store, &runs, &started, &req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "duplicates wait while the leader runs"
    );
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let mut receipts = Vec::new();
    for duplicate in duplicates {
        receipts.push(duplicate.await.unwrap().unwrap());
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the cancelled leader's body, then exactly one more"
    );
    assert!(
        receipts.iter().all(|r| *r == Receipt { id: 2, amount: 70 }),
        "{receipts:?}"
    );
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, panics), concurrent = "reject")]
async fn panicking_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    panics: &AtomicBool,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    if panics.swap(false, Ordering::SeqCst) {
        panic!("card processor exploded");
    }
    Ok(Receipt {
        id: run,
        amount: req.amount,
    })
}

#[tokio::test]
async fn a_panic_releases_the_claim_propagates_and_the_next_call_runs() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let panics = Arc::new(AtomicBool::new(true));
    let req = ChargeRequest::new("pay-panic", 9);
    let first = {
        let (store, runs, panics, req) = (store.clone(), runs.clone(), panics.clone(), req.clone());
        tokio::spawn(async move { panicking_charge(&store, &runs, &panics, &req).await })
    };
    let err = first.await.unwrap_err();
    assert!(err.is_panic(), "the panic propagates to the caller");
    let key = RecordKey::new(concat!(module_path!(), "::panicking_charge"), "pay-panic").unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "the claim is released at once"
    );
    // `concurrent = "reject"`: a claim left behind would answer InProgress here.
    let second = panicking_charge(&store, &runs, &panics, &req)
        .await
        .unwrap();
    assert_eq!(second, Receipt { id: 2, amount: 9 });
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, outcomes), replay_err = PaymentError::is_final)]
async fn declining_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    outcomes: &std::sync::Mutex<Vec<Result<(), PaymentError>>>,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let next = outcomes.lock().unwrap().remove(0);
    next.map(|()| Receipt {
        id: run,
        amount: req.amount,
    })
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, outcomes))]
async fn flaky_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    outcomes: &std::sync::Mutex<Vec<Result<(), PaymentError>>>,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let next = outcomes.lock().unwrap().remove(0);
    next.map(|()| Receipt {
        id: run,
        amount: req.amount,
    })
}

#[tokio::test]
async fn an_error_releases_the_key_and_the_next_call_runs() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(vec![
        Err(PaymentError::Unavailable),
        Err(PaymentError::Declined {
            reason: "not final here".into(),
        }),
        Ok(()),
    ]);
    let req = ChargeRequest::new("pay-flaky", 3);
    assert!(matches!(
        flaky_charge(&store, &runs, &outcomes, &req).await,
        Err(PaymentError::Unavailable)
    ));
    // Without `replay_err` no error is stored, not even a decline.
    assert!(matches!(
        flaky_charge(&store, &runs, &outcomes, &req).await,
        Err(PaymentError::Declined { .. })
    ));
    let receipt = flaky_charge(&store, &runs, &outcomes, &req).await.unwrap();
    assert_eq!(receipt, Receipt { id: 3, amount: 3 });
    assert_eq!(
        flaky_charge(&store, &runs, &outcomes, &req).await.unwrap(),
        receipt
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn replay_err_stores_final_errors_and_replays_them() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(vec![
        Err(PaymentError::Unavailable),
        Err(PaymentError::Declined {
            reason: "insufficient funds".into(),
        }),
    ]);
    let req = ChargeRequest::new("pay-declined", 3);
    assert!(matches!(
        declining_charge(&store, &runs, &outcomes, &req).await,
        Err(PaymentError::Unavailable)
    ));
    for _ in 0..3 {
        match declining_charge(&store, &runs, &outcomes, &req).await {
            Err(PaymentError::Declined { reason }) => assert_eq!(reason, "insufficient funds"),
            other => panic!("expected the stored decline, got {other:?}"),
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "a transient error ran again; the decline was replayed"
    );
}

#[tokio::test]
async fn the_same_key_with_another_payload_is_a_mismatch_and_nothing_runs() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let first = charge(&store, &runs, &ChargeRequest::new("pay-reuse", 100))
        .await
        .unwrap();
    let reused = charge(&store, &runs, &ChargeRequest::new("pay-reuse", 999)).await;
    assert!(matches!(reused.unwrap_err().idem(), Error::Mismatch));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "nothing ran for the mismatch"
    );
    let again = charge(&store, &runs, &ChargeRequest::new("pay-reuse", 100))
        .await
        .unwrap();
    assert_eq!(again, first, "the stored receipt was not overwritten");
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, gate), concurrent = "reject")]
async fn rejecting_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    gate: &Notify,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let receipt = next_receipt(runs, req);
    gate.notified().await;
    Ok(receipt)
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs, gate), wait = "50ms")]
async fn impatient_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    gate: &Notify,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let receipt = next_receipt(runs, req);
    gate.notified().await;
    Ok(receipt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_answers_in_progress_and_wait_times_out() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let req = ChargeRequest::new("pay-busy", 1);
    let leader = {
        let (store, runs, gate, req) = (store.clone(), runs.clone(), gate.clone(), req.clone());
        tokio::spawn(async move { rejecting_charge(&store, &runs, &gate, &req).await })
    };
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    match rejecting_charge(&store, &runs, &gate, &req).await {
        Err(PaymentError::Idem(Error::InProgress { retry_after })) => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(30),
                "{retry_after:?}"
            );
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    gate.notify_one();
    assert_eq!(leader.await.unwrap().unwrap(), Receipt { id: 1, amount: 1 });

    let leader = {
        let (store, runs, gate) = (store.clone(), runs.clone(), gate.clone());
        tokio::spawn(async move {
            impatient_charge(&store, &runs, &gate, &ChargeRequest::new("pay-slow", 2)).await
        })
    };
    while runs.load(Ordering::SeqCst) == 1 {
        tokio::task::yield_now().await;
    }
    let waited = impatient_charge(&store, &runs, &gate, &ChargeRequest::new("pay-slow", 2)).await;
    assert!(matches!(waited.unwrap_err().idem(), Error::WaitTimeout));
    gate.notify_one();
    leader.await.unwrap().unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "neither duplicate ran a body"
    );
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs), ttl = "1h")]
async fn hourly_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    Ok(next_receipt(runs, req))
}

#[tokio::test(start_paused = true)]
async fn a_completed_result_is_replayed_for_its_ttl_then_the_key_is_new() {
    replayed_for_the_ttl(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_lazy_expiry_store_replays_for_the_ttl_too() {
    replayed_for_the_ttl(MemoryStore::builder().lazy_expiry().build()).await;
}

async fn replayed_for_the_ttl(store: MemoryStore) {
    let runs = AtomicUsize::new(0);
    let req = ChargeRequest::new("pay-ttl", 10);
    hourly_charge(&store, &runs, &req).await.unwrap();
    tokio::time::advance(Duration::from_secs(59 * 60)).await;
    assert_eq!(
        hourly_charge(&store, &runs, &req).await.unwrap().id,
        1,
        "replayed within the hour"
    );
    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    assert_eq!(
        hourly_charge(&store, &runs, &req).await.unwrap().id,
        2,
        "expired: runs again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs), lease = "1s", wait = "1m")]
async fn leased_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let receipt = next_receipt(runs, req);
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(receipt)
}

fn charge_fingerprint(req: &ChargeRequest) -> Fingerprint {
    let mut fp = idem_core::Fingerprinter::new();
    fp.add(req).unwrap();
    fp.finish()
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holder_is_taken_over_with_a_higher_fence_and_its_late_completion_refused() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let req = ChargeRequest::new("pay-crash", 44);
    let key = RecordKey::new(concat!(module_path!(), "::leased_charge"), "pay-crash").unwrap();
    // A holder that claims and then "crashes": it never renews, completes or releases.
    let crashed = Owner::new();
    let request = ClaimRequest {
        key: &key,
        fingerprint: charge_fingerprint(&req),
        owner: crashed,
        lease: Duration::from_secs(1),
    };
    let Claim::Acquired {
        fence: old_fence, ..
    } = store.claim(&request).await.unwrap()
    else {
        panic!("the crashed holder claims first");
    };
    // The next call waits out the lease, takes over and runs the body (5 s, renewed meanwhile).
    let receipt = leased_charge(&store, &runs, &req).await.unwrap();
    assert_eq!(receipt, Receipt { id: 1, amount: 44 });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The old holder wakes up and tries to complete: fenced, nothing overwritten.
    let stale = ClaimToken::new(key.clone(), crashed, old_fence);
    let late = Outcome::new(
        OutcomeKind::Ok,
        serde_json::to_vec(&Receipt {
            id: 666,
            amount: 44,
        })
        .unwrap(),
    );
    assert_eq!(
        store
            .complete(&stale, &late, Duration::from_secs(60))
            .await
            .unwrap(),
        Fence::Lost
    );
    assert_eq!(store.release(&stale).await.unwrap(), Fence::Lost);
    assert_eq!(
        leased_charge(&store, &runs, &req).await.unwrap(),
        receipt,
        "the new holder's record stands"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_takeover_gets_a_higher_fence_through_the_store_api() {
    let store = MemoryStore::new();
    let key = RecordKey::new("semantics::takeover", "k").unwrap();
    let fp = Fingerprint::of(&1u8).unwrap();
    let claim = |owner| ClaimRequest {
        key: &key,
        fingerprint: fp,
        owner,
        lease: Duration::from_secs(1),
    };
    let (a, b) = (Owner::new(), Owner::new());
    let Claim::Acquired { fence: fa, .. } = store.claim(&claim(a)).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        store.claim(&claim(b)).await.unwrap(),
        Claim::Busy { .. }
    ));
    tokio::time::advance(Duration::from_millis(1001)).await;
    let Claim::Acquired {
        fence: fb,
        taken_over,
    } = store.claim(&claim(b)).await.unwrap()
    else {
        panic!()
    };
    assert!(
        taken_over && fb > fa,
        "taken over with a higher fence ({fa} -> {fb})"
    );
    let old = ClaimToken::new(key.clone(), a, fa);
    assert_eq!(
        store.renew(&old, Duration::from_secs(1)).await.unwrap(),
        Fence::Lost
    );
    let outcome = Outcome::new(OutcomeKind::Ok, &b"stale"[..]);
    assert_eq!(
        store
            .complete(&old, &outcome, Duration::from_secs(9))
            .await
            .unwrap(),
        Fence::Lost
    );
    match store.get(&key).await.unwrap() {
        Some(Record::InProgress { owner, fence, .. }) => assert_eq!((owner, fence), (b, fb)),
        other => panic!("the new holder keeps the record, got {other:?}"),
    }
}

#[idempotent(key = req.payment_id, store = store, skip(store, runs), lease = "300ms", concurrent = "reject")]
async fn long_charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    req: &ChargeRequest,
) -> Result<Receipt, PaymentError> {
    let receipt = next_receipt(runs, req);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(receipt)
}

#[tokio::test(start_paused = true)]
async fn a_long_body_renews_its_lease_and_is_not_taken_over() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let req = ChargeRequest::new("pay-long", 8);
    let leader = {
        let (store, runs, req) = (store.clone(), runs.clone(), req.clone());
        tokio::spawn(async move { long_charge(&store, &runs, &req).await })
    };
    // Far beyond the 300 ms lease, while the body still runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let duplicate = long_charge(&store, &runs, &req).await;
    assert!(
        matches!(duplicate.unwrap_err().idem(), Error::InProgress { .. }),
        "still held, not taken over"
    );
    assert_eq!(leader.await.unwrap().unwrap().id, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[idempotent(key = key, store = store, skip(store, runs))]
async fn keyed(store: &MemoryStore, runs: &AtomicUsize, key: &str) -> Result<u64, PaymentError> {
    Ok(runs.fetch_add(1, Ordering::SeqCst) as u64)
}

#[tokio::test]
async fn empty_and_oversized_keys_are_typed_errors_and_nothing_runs() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let empty = keyed(&store, &runs, "").await.unwrap_err();
    assert!(matches!(
        empty.idem(),
        Error::InvalidKey(idem_core::KeyError::Empty)
    ));
    let huge = "k".repeat(10 * 1024);
    let long = keyed(&store, &runs, &huge).await.unwrap_err();
    assert!(matches!(
        long.idem(),
        Error::InvalidKey(idem_core::KeyError::TooLong { len: 10240, .. })
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Unicode and separators are fine.
    assert_eq!(keyed(&store, &runs, "ключ:🔑 {x}").await.unwrap(), 0);
    assert_eq!(keyed(&store, &runs, "ключ:🔑 {x}").await.unwrap(), 0);
}

#[idempotent(key = id, scope = "semantics::shared", store = store, skip(store), fingerprint = ())]
async fn shared_receipt(store: &MemoryStore, id: &str) -> Result<Receipt, PaymentError> {
    Ok(Receipt { id: 1, amount: 2 })
}

#[idempotent(key = id, scope = "semantics::shared", store = store, skip(store, runs), fingerprint = ())]
async fn shared_text(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: &str,
) -> Result<Vec<String>, PaymentError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(vec!["text".into()])
}

#[tokio::test]
async fn a_value_of_another_type_or_corrupt_bytes_is_a_codec_error_and_the_record_is_kept() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    shared_receipt(&store, "same").await.unwrap();
    let other = shared_text(&store, &runs, "same").await.unwrap_err();
    assert!(matches!(other.idem(), Error::Codec(_)), "{other:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the body did not run over someone else's record"
    );
    assert_eq!(
        shared_receipt(&store, "same").await.unwrap(),
        Receipt { id: 1, amount: 2 },
        "the record was kept"
    );

    // Corrupt bytes stored under the key.
    let key = RecordKey::new("semantics::shared", "corrupt").unwrap();
    let owner = Owner::new();
    let request = ClaimRequest {
        key: &key,
        fingerprint: Fingerprint::of(&()).unwrap(),
        owner,
        lease: Duration::from_secs(5),
    };
    let Claim::Acquired { fence, .. } = store.claim(&request).await.unwrap() else {
        panic!()
    };
    let garbage = Outcome::new(OutcomeKind::Ok, vec![0xff, 0x00, b'{', 0xc3]);
    let token = ClaimToken::new(key.clone(), owner, fence);
    assert_eq!(
        store
            .complete(&token, &garbage, Duration::from_secs(60))
            .await
            .unwrap(),
        Fence::Held
    );
    let corrupt = shared_text(&store, &runs, "corrupt").await.unwrap_err();
    assert!(matches!(corrupt.idem(), Error::Codec(_)), "{corrupt:?}");
    assert!(
        matches!(
            store.get(&key).await.unwrap(),
            Some(Record::Completed { .. })
        ),
        "nothing was lost"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[idempotent(store = store, skip(store, runs))]
async fn by_fingerprint(
    store: &MemoryStore,
    runs: &AtomicUsize,
    order: &ChargeRequest,
    note: String,
) -> Result<u64, PaymentError> {
    Ok(runs.fetch_add(1, Ordering::SeqCst) as u64)
}

#[tokio::test]
async fn without_a_key_the_fingerprint_of_the_arguments_is_the_key() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let order = ChargeRequest::new("msg-1", 5);
    assert_eq!(
        by_fingerprint(&store, &runs, &order, "a".into())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        by_fingerprint(&store, &runs, &order.clone(), "a".into())
            .await
            .unwrap(),
        0,
        "a redelivery replays"
    );
    assert_eq!(
        by_fingerprint(&store, &runs, &order, "b".into())
            .await
            .unwrap(),
        1,
        "other arguments, other key"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = (tenant, order), store = store, skip(store, runs))]
async fn tenant_order(
    store: &MemoryStore,
    runs: &AtomicUsize,
    tenant: &str,
    order: u32,
) -> Result<usize, PaymentError> {
    Ok(runs.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn tuple_keys_keep_their_parts_apart() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    assert_eq!(tenant_order(&store, &runs, "acme", 1).await.unwrap(), 0);
    assert_eq!(tenant_order(&store, &runs, "acme", 1).await.unwrap(), 0);
    assert_eq!(tenant_order(&store, &runs, "acme:1", 1).await.unwrap(), 1);
    assert_eq!(tenant_order(&store, &runs, "globex", 1).await.unwrap(), 2);
}

/// Counts how many times a stored outcome was decoded (its `Deserialize` runs).
static DECODES: AtomicUsize = AtomicUsize::new(0);
static PLAIN_DECODES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct CountedReceipt(u64);

impl<'de> serde::Deserialize<'de> for CountedReceipt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(CountedReceipt)
    }
}

/// Not `Clone`: every replay has to decode.
#[derive(Debug, PartialEq, serde::Serialize)]
struct PlainReceipt(u64);

impl<'de> serde::Deserialize<'de> for PlainReceipt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PLAIN_DECODES.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(PlainReceipt)
    }
}

#[idempotent(key = id, store = store, skip(store, runs))]
async fn counted(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: u64,
) -> Result<CountedReceipt, PaymentError> {
    Ok(CountedReceipt(
        runs.fetch_add(1, Ordering::SeqCst) as u64 + 100 + id,
    ))
}

#[idempotent(key = id, store = store, skip(store, runs))]
async fn plain(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: u64,
) -> Result<PlainReceipt, PaymentError> {
    Ok(PlainReceipt(
        runs.fetch_add(1, Ordering::SeqCst) as u64 + 100 + id,
    ))
}

#[tokio::test]
async fn replays_of_a_clone_type_decode_once_per_record() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let first = counted(&store, &runs, 1).await.unwrap();
    for _ in 0..5 {
        assert_eq!(counted(&store, &runs, 1).await.unwrap(), first);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        DECODES.load(Ordering::SeqCst),
        1,
        "five replays, one decode: the rest are clones"
    );

    // A type that is not `Clone` decodes on every replay, and gets the same value.
    let runs = AtomicUsize::new(0);
    let first = plain(&store, &runs, 1).await.unwrap();
    for _ in 0..5 {
        assert_eq!(plain(&store, &runs, 1).await.unwrap(), first);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(PLAIN_DECODES.load(Ordering::SeqCst), 5);
}

#[idempotent(key = id, store = store, scope = "shared::scope", skip(store))]
async fn as_integer(store: &MemoryStore, id: u64) -> Result<u64, PaymentError> {
    Ok(id * 10)
}

#[idempotent(key = id, store = store, scope = "shared::scope", skip(store))]
async fn as_float(store: &MemoryStore, id: u64) -> Result<f64, PaymentError> {
    let _ = id;
    unreachable!("the record of `as_integer` is replayed")
}

#[idempotent(key = id, store = store, scope = "shared::scope", skip(store))]
async fn as_text(store: &MemoryStore, id: u64) -> Result<String, PaymentError> {
    let _ = id;
    unreachable!("the record of `as_integer` is replayed")
}

#[tokio::test]
async fn functions_sharing_a_scope_replay_the_record_as_their_own_type() {
    let store = MemoryStore::new();
    assert_eq!(as_integer(&store, 4).await.unwrap(), 40);
    assert_eq!(as_integer(&store, 4).await.unwrap(), 40, "decoded and kept");
    // The record holds a decoded `u64` now; another type decodes the stored bytes itself.
    assert_eq!(as_float(&store, 4).await.unwrap(), 40.0);
    assert!(matches!(
        as_text(&store, 4).await.unwrap_err().idem(),
        Error::Codec(_)
    ));
    assert_eq!(as_integer(&store, 4).await.unwrap(), 40);
}
