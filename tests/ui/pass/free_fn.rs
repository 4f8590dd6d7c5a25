use idem_core::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: u64,
}

#[derive(Debug)]
struct PayError(idem_core::Error);

impl From<idem_core::Error> for PayError {
    fn from(err: idem_core::Error) -> Self {
        PayError(err)
    }
}

#[derive(Serialize)]
struct ChargeRequest {
    payment_id: String,
    amount: u64,
}

#[idempotent(key = req.payment_id, ttl = "24h")]
async fn charge(req: &ChargeRequest) -> Result<Receipt, PayError> {
    Ok(Receipt { id: req.amount })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let req = ChargeRequest { payment_id: "p-1".into(), amount: 3 };
    assert_eq!(charge(&req).await.unwrap(), Receipt { id: 3 });
}
