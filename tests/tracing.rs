//! What idem logs: each event names its scope, and the key only as a digest unless opted in.

mod common;

use common::{ChargeRequest, PaymentError, Receipt};
use idem_core::{MemoryStore, RecordKey, idempotent};
use idem_test_support::Logs;

#[idempotent(key = req.payment_id, scope = "tracing::charge", store = store, skip(store))]
async fn charge(store: &MemoryStore, req: &ChargeRequest) -> Result<Receipt, PaymentError> {
    Ok(Receipt {
        id: 1,
        amount: req.amount,
    })
}

#[test]
fn events_name_the_scope_and_hide_the_key_unless_asked() {
    let captured = Logs::default();
    captured.block_on(tracing::Level::DEBUG, async {
        let store = MemoryStore::new();
        let secret = "card-4242-4242-secret";
        charge(&store, &ChargeRequest::new(secret, 5))
            .await
            .unwrap();
        charge(&store, &ChargeRequest::new(secret, 5))
            .await
            .unwrap();
        assert!(
            charge(&store, &ChargeRequest::new(secret, 6))
                .await
                .is_err()
        );
        let logs = captured.take();
        let digest = RecordKey::new("tracing::charge", secret).unwrap().digest();
        for event in [
            "claimed",
            "completed",
            "replayed",
            "key reused with different arguments",
        ] {
            assert!(logs.contains(event), "missing `{event}` in:\n{logs}");
        }
        assert!(
            logs.contains("scope=\"tracing::charge\"") || logs.contains("scope=tracing::charge"),
            "{logs}"
        );
        assert!(
            logs.contains(&digest),
            "the key appears as its digest:\n{logs}"
        );
        assert!(
            !logs.contains(secret),
            "the key itself never appears:\n{logs}"
        );

        idem_core::log_plain_keys(true);
        charge(&store, &ChargeRequest::new("visible-key", 5))
            .await
            .unwrap();
        idem_core::log_plain_keys(false);
        assert!(
            captured.take().contains("visible-key"),
            "opted in: plain keys"
        );
    });
}
