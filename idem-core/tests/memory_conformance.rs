//! MemoryStore passes the store conformance suite.
#![cfg(feature = "testing")]

use idem_core::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    idem_core::testing::conformance(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_memory_store_passes_the_conformance_suite() {
    idem_core::testing::conformance(MemoryStore::builder().max_capacity(4).build()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_expiry_memory_store_passes_the_conformance_suite() {
    idem_core::testing::conformance(MemoryStore::builder().lazy_expiry().build()).await;
}

mod capacity {
    use std::time::Duration;

    use idem_core::store::{
        Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record,
    };
    use idem_core::{Fingerprint, MemoryStore, RecordKey, Store};

    fn request(key: &RecordKey, owner: Owner) -> ClaimRequest<'_> {
        ClaimRequest {
            key,
            fingerprint: Fingerprint::of(&()).unwrap(),
            owner,
            lease: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn in_progress_claims_are_never_evicted_however_small_the_capacity() {
        let store = MemoryStore::builder().max_capacity(2).build();
        let mut tokens = Vec::new();
        for i in 0..500 {
            let key = RecordKey::new("capacity", format!("held-{i}")).unwrap();
            let owner = Owner::new();
            let Claim::Acquired { fence, .. } = store.claim(&request(&key, owner)).await.unwrap()
            else {
                panic!("claim {i}");
            };
            tokens.push(ClaimToken::new(key, owner, fence));
        }
        // Fill and churn the completed side well past its capacity.
        for i in 0..500 {
            let key = RecordKey::new("capacity", format!("done-{i}")).unwrap();
            let owner = Owner::new();
            let Claim::Acquired { fence, .. } = store.claim(&request(&key, owner)).await.unwrap()
            else {
                panic!("claim done-{i}");
            };
            let outcome = Outcome::new(OutcomeKind::Ok, &b"1"[..]);
            let token = ClaimToken::new(key, owner, fence);
            assert_eq!(
                store
                    .complete(&token, &outcome, Duration::from_secs(60))
                    .await
                    .unwrap(),
                Fence::Held
            );
        }
        for token in &tokens {
            assert!(
                matches!(
                    store.get(token.key()).await.unwrap(),
                    Some(Record::InProgress { .. })
                ),
                "{:?} was evicted",
                token.key()
            );
            let duplicate = store
                .claim(&request(token.key(), Owner::new()))
                .await
                .unwrap();
            assert!(
                matches!(duplicate, Claim::Busy { .. }),
                "a duplicate must still see the holder"
            );
        }
    }
}
