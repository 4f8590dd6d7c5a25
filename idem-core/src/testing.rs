//! A conformance suite that any [`Store`] implementation can run: the in-memory, Redis and
//! PostgreSQL stores run it, and so can yours.
//!
//! ```
//! use idem_core::MemoryStore;
//!
//! # #[tokio::main]
//! # async fn main() {
//! // In your own tests: `#[tokio::test] async fn my_store_conforms() { ... }`
//! idem_core::testing::conformance(MemoryStore::new()).await;
//! # }
//! ```
//!
//! Every check uses a fresh scope, so the suite can run against a shared server, several
//! times, and beside other tests. It needs a multi-threaded or current-thread tokio runtime
//! with real (not paused) time: expiry and lease checks sleep for a few hundred milliseconds,
//! and the whole suite takes about three seconds.

use std::time::Duration;

use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;
use crate::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record, Store, random_u64,
};

/// A short lease for the checks that let one run out.
const SHORT: Duration = Duration::from_millis(300);
/// Long enough to see a short lease or TTL run out, whatever the store's clock granularity.
const PAST_SHORT: Duration = Duration::from_millis(450);
const LONG: Duration = Duration::from_secs(60);

/// Runs every check of the store contract against `store`, panicking with the name of the
/// first check that fails and what it saw.
///
/// The checks: claim, busy while held, mismatch (in progress and completed), complete and
/// replay (of `Ok` and `Err` outcomes, arbitrary bytes), release, lease takeover with a higher
/// fence, fenced complete / release / renew of a stale holder, renewal keeping a claim alive,
/// TTL expiry, keys with unusual characters, and 32 concurrent claims of which exactly one
/// wins.
///
/// # Panics
///
/// When `store` breaks the contract, or fails with a store error.
pub async fn conformance<S: Store>(store: S) {
    let suite = Suite {
        store,
        run: random_u64(),
    };
    suite.claim_acquires_and_records_the_holder().await;
    suite.held_claim_answers_busy_or_mismatch().await;
    suite.completion_is_replayed().await;
    suite.error_outcome_and_binary_bytes_round_trip().await;
    suite.completed_record_refuses_other_fingerprints().await;
    suite.release_frees_the_key().await;
    suite
        .expired_lease_is_taken_over_and_old_holder_fenced()
        .await;
    suite.renewal_keeps_the_claim().await;
    suite.completed_record_expires_after_ttl().await;
    suite.unusual_keys_are_distinct().await;
    suite.stale_tokens_change_nothing().await;
    suite.concurrent_claims_have_one_winner().await;
}

struct Suite<S> {
    store: S,
    run: u64,
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

fn ok(bytes: &[u8]) -> Outcome {
    Outcome::new(OutcomeKind::Ok, bytes.to_vec())
}

impl<S: Store> Suite<S> {
    fn key(&self, check: &str) -> RecordKey {
        RecordKey::new(
            format!("idem-conformance-{:016x}", self.run),
            check.to_string(),
        )
        .expect("valid key")
    }

    async fn claim(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> (Claim, Owner) {
        let owner = Owner::new();
        let request = ClaimRequest {
            key,
            fingerprint,
            owner,
            lease,
        };
        let claim = self
            .store
            .claim(&request)
            .await
            .unwrap_or_else(|err| panic!("claim of {key:?} failed: {err}"));
        (claim, owner)
    }

    /// Claims and asserts it was acquired; returns the token.
    async fn acquire(
        &self,
        check: &str,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> ClaimToken {
        match self.claim(key, fingerprint, lease).await {
            (Claim::Acquired { fence, .. }, owner) => ClaimToken::new(key.clone(), owner, fence),
            (other, _) => panic!("conformance `{check}`: expected Acquired, got {other:?}"),
        }
    }

    async fn complete(&self, token: &ClaimToken, outcome: &Outcome, ttl: Duration) -> Fence {
        self.store
            .complete(token, outcome, ttl)
            .await
            .unwrap_or_else(|err| panic!("complete failed: {err}"))
    }

    async fn get(&self, key: &RecordKey) -> Option<Record> {
        self.store
            .get(key)
            .await
            .unwrap_or_else(|err| panic!("get failed: {err}"))
    }

    async fn claim_acquires_and_records_the_holder(&self) {
        let check = "claim_acquires_and_records_the_holder";
        let key = self.key(check);
        assert_eq!(
            self.get(&key).await,
            None,
            "conformance `{check}`: a new key must read as absent"
        );
        let (claim, owner) = self.claim(&key, fp(1), LONG).await;
        let Claim::Acquired { fence, taken_over } = claim else {
            panic!("conformance `{check}`: expected Acquired, got {claim:?}");
        };
        assert!(
            !taken_over,
            "conformance `{check}`: a fresh claim is not a takeover"
        );
        match self.get(&key).await {
            Some(Record::InProgress {
                owner: o,
                fence: f,
                fingerprint,
                lease_left,
            }) => {
                assert_eq!(
                    (o, f, fingerprint),
                    (owner, fence, fp(1)),
                    "conformance `{check}`: the record names its holder"
                );
                assert!(
                    lease_left > Duration::ZERO && lease_left <= LONG,
                    "conformance `{check}`: lease_left {lease_left:?} outside (0, {LONG:?}]"
                );
            }
            other => panic!("conformance `{check}`: expected an in-progress record, got {other:?}"),
        }
    }

    async fn held_claim_answers_busy_or_mismatch(&self) {
        let check = "held_claim_answers_busy_or_mismatch";
        let key = self.key(check);
        self.acquire(check, &key, fp(1), LONG).await;
        match self.claim(&key, fp(1), LONG).await.0 {
            Claim::Busy { retry_after } => assert!(
                retry_after > Duration::ZERO && retry_after <= LONG,
                "conformance `{check}`: retry_after {retry_after:?} outside (0, {LONG:?}]"
            ),
            other => panic!("conformance `{check}`: a duplicate must see Busy, got {other:?}"),
        }
        let other = self.claim(&key, fp(2), LONG).await.0;
        assert_eq!(
            other,
            Claim::Mismatch,
            "conformance `{check}`: another fingerprint must see Mismatch"
        );
    }

    async fn completion_is_replayed(&self) {
        let check = "completion_is_replayed";
        let key = self.key(check);
        let token = self.acquire(check, &key, fp(1), LONG).await;
        let outcome = ok(br#"{"id":7,"amount":1200}"#);
        assert_eq!(
            self.complete(&token, &outcome, LONG).await,
            Fence::Held,
            "conformance `{check}`: the holder's completion must apply"
        );
        for _ in 0..2 {
            let replay = self.claim(&key, fp(1), LONG).await.0;
            assert_eq!(
                replay,
                Claim::Completed(outcome.clone()),
                "conformance `{check}`: a retry must replay the outcome"
            );
        }
        match self.get(&key).await {
            Some(Record::Completed {
                fingerprint,
                outcome: stored,
                expires_in,
            }) => {
                assert_eq!(
                    (fingerprint, stored),
                    (fp(1), outcome),
                    "conformance `{check}`: stored record"
                );
                assert!(
                    expires_in > Duration::ZERO && expires_in <= LONG,
                    "conformance `{check}`: expires_in {expires_in:?}"
                );
            }
            other => panic!("conformance `{check}`: expected a completed record, got {other:?}"),
        }
    }

    async fn error_outcome_and_binary_bytes_round_trip(&self) {
        let check = "error_outcome_and_binary_bytes_round_trip";
        let key = self.key(check);
        let token = self.acquire(check, &key, fp(3), LONG).await;
        let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xc3, 0x28]).collect();
        let outcome = Outcome::new(OutcomeKind::Err, bytes);
        assert_eq!(self.complete(&token, &outcome, LONG).await, Fence::Held);
        let replay = self.claim(&key, fp(3), LONG).await.0;
        assert_eq!(
            replay,
            Claim::Completed(outcome),
            "conformance `{check}`: kind and bytes must come back exactly"
        );
    }

    async fn completed_record_refuses_other_fingerprints(&self) {
        let check = "completed_record_refuses_other_fingerprints";
        let key = self.key(check);
        let token = self.acquire(check, &key, fp(1), LONG).await;
        let outcome = ok(b"first");
        assert_eq!(self.complete(&token, &outcome, LONG).await, Fence::Held);
        assert_eq!(
            self.claim(&key, fp(9), LONG).await.0,
            Claim::Mismatch,
            "conformance `{check}`"
        );
        assert_eq!(
            self.claim(&key, fp(1), LONG).await.0,
            Claim::Completed(outcome),
            "conformance `{check}`: a mismatch must leave the stored outcome as it was"
        );
    }

    async fn release_frees_the_key(&self) {
        let check = "release_frees_the_key";
        let key = self.key(check);
        let first = self.acquire(check, &key, fp(1), LONG).await;
        let released = self.store.release(&first).await.expect("release");
        assert_eq!(
            released,
            Fence::Held,
            "conformance `{check}`: the holder's release must apply"
        );
        assert_eq!(
            self.get(&key).await,
            None,
            "conformance `{check}`: a released key reads as absent"
        );
        let second = self.acquire(check, &key, fp(2), LONG).await;
        assert!(
            second.fence() > first.fence(),
            "conformance `{check}`: fences must grow ({} then {})",
            first.fence(),
            second.fence()
        );
    }

    async fn expired_lease_is_taken_over_and_old_holder_fenced(&self) {
        let check = "expired_lease_is_taken_over_and_old_holder_fenced";
        let key = self.key(check);
        let old = self.acquire(check, &key, fp(1), SHORT).await;
        tokio::time::sleep(PAST_SHORT).await;
        let (claim, owner) = self.claim(&key, fp(1), LONG).await;
        let new = match claim {
            Claim::Acquired { fence, taken_over } => {
                assert!(
                    fence > old.fence(),
                    "conformance `{check}`: takeover fence {fence} must exceed {}",
                    old.fence()
                );
                let _ = taken_over; // stores that drop expired claims cannot tell a takeover from a fresh claim
                ClaimToken::new(key.clone(), owner, fence)
            }
            other => {
                panic!("conformance `{check}`: an expired lease must be taken over, got {other:?}")
            }
        };
        assert_eq!(
            self.complete(&old, &ok(b"stale"), LONG).await,
            Fence::Lost,
            "conformance `{check}`: stale completion must be fenced"
        );
        assert_eq!(
            self.store.release(&old).await.expect("release"),
            Fence::Lost,
            "conformance `{check}`: stale release must be fenced"
        );
        assert_eq!(
            self.store.renew(&old, LONG).await.expect("renew"),
            Fence::Lost,
            "conformance `{check}`: stale renewal must be fenced"
        );
        match self.get(&key).await {
            Some(Record::InProgress {
                owner: o, fence, ..
            }) => {
                assert_eq!(
                    (o, fence),
                    (new.owner(), new.fence()),
                    "conformance `{check}`: the new holder keeps the record"
                );
            }
            other => {
                panic!("conformance `{check}`: expected the new holder's claim, got {other:?}")
            }
        }
        let outcome = ok(b"new holder");
        assert_eq!(self.complete(&new, &outcome, LONG).await, Fence::Held);
        assert_eq!(
            self.complete(&old, &ok(b"late"), LONG).await,
            Fence::Lost,
            "conformance `{check}`: a completed record is never overwritten"
        );
        assert_eq!(
            self.claim(&key, fp(1), LONG).await.0,
            Claim::Completed(outcome),
            "conformance `{check}`"
        );
    }

    async fn renewal_keeps_the_claim(&self) {
        let check = "renewal_keeps_the_claim";
        let key = self.key(check);
        let token = self.acquire(check, &key, fp(1), SHORT).await;
        for _ in 0..3 {
            tokio::time::sleep(SHORT / 2).await;
            let renewed = self.store.renew(&token, SHORT).await.expect("renew");
            assert_eq!(
                renewed,
                Fence::Held,
                "conformance `{check}`: the holder's renewal must apply"
            );
        }
        // 450 ms after the claim, longer than the original lease: still held.
        match self.claim(&key, fp(1), SHORT).await.0 {
            Claim::Busy { .. } => {}
            other => panic!("conformance `{check}`: a renewed claim must stay held, got {other:?}"),
        }
    }

    async fn completed_record_expires_after_ttl(&self) {
        let check = "completed_record_expires_after_ttl";
        let key = self.key(check);
        let token = self.acquire(check, &key, fp(1), LONG).await;
        assert_eq!(
            self.complete(&token, &ok(b"short-lived"), SHORT).await,
            Fence::Held
        );
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(
            self.get(&key).await,
            None,
            "conformance `{check}`: an expired record reads as absent"
        );
        let again = self.acquire(check, &key, fp(2), LONG).await;
        assert!(
            again.fence() > token.fence(),
            "conformance `{check}`: fences must grow"
        );
    }

    async fn unusual_keys_are_distinct(&self) {
        let check = "unusual_keys_are_distinct";
        let keys = [
            "a:b",
            "a",
            "a}b{c",
            "ключ-🔑",
            "with space",
            "tab\tnew\nline",
            "*?[x]",
            "\\:",
        ];
        let mut tokens = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let key = RecordKey::new(
                format!("idem-conformance-{:016x}-{check}", self.run),
                k.to_string(),
            )
            .expect("valid key");
            let token = self.acquire(check, &key, fp(1), LONG).await;
            let bytes = format!("outcome {i}");
            assert_eq!(
                self.complete(&token, &ok(bytes.as_bytes()), LONG).await,
                Fence::Held
            );
            tokens.push((key, bytes));
        }
        for (key, bytes) in tokens {
            let replay = self.claim(&key, fp(1), LONG).await.0;
            assert_eq!(
                replay,
                Claim::Completed(ok(bytes.as_bytes())),
                "conformance `{check}`: key {:?}",
                key.key()
            );
        }
    }

    async fn stale_tokens_change_nothing(&self) {
        let check = "stale_tokens_change_nothing";
        let key = self.key(check);
        let forged = ClaimToken::new(key.clone(), Owner::new(), 1);
        assert_eq!(
            self.complete(&forged, &ok(b"x"), LONG).await,
            Fence::Lost,
            "conformance `{check}`: no record, no write"
        );
        assert_eq!(
            self.get(&key).await,
            None,
            "conformance `{check}`: a refused completion must not create a record"
        );
        let token = self.acquire(check, &key, fp(1), LONG).await;
        let impostor = ClaimToken::new(key.clone(), Owner::new(), token.fence());
        assert_eq!(
            self.store.release(&impostor).await.expect("release"),
            Fence::Lost,
            "conformance `{check}`: another owner with the same fence"
        );
        assert_eq!(self.complete(&token, &ok(b"real"), LONG).await, Fence::Held);
        assert_eq!(
            self.store.release(&token).await.expect("release"),
            Fence::Lost,
            "conformance `{check}`: a completed record cannot be released"
        );
        assert_eq!(
            self.claim(&key, fp(1), LONG).await.0,
            Claim::Completed(ok(b"real")),
            "conformance `{check}`"
        );
    }

    async fn concurrent_claims_have_one_winner(&self) {
        let check = "concurrent_claims_have_one_winner";
        let key = self.key(check);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let store = self.store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let request = ClaimRequest {
                        key: &key,
                        fingerprint: fp(1),
                        owner: Owner::new(),
                        lease: LONG,
                    };
                    store.claim(&request).await
                })
            })
            .collect();
        let mut acquired = 0;
        for task in tasks {
            match task.await.expect("claim task") {
                Ok(Claim::Acquired { .. }) => acquired += 1,
                Ok(Claim::Busy { .. }) => {}
                other => panic!("conformance `{check}`: unexpected answer {other:?}"),
            }
        }
        assert_eq!(
            acquired, 1,
            "conformance `{check}`: exactly one of 32 concurrent claims must win"
        );
    }
}
