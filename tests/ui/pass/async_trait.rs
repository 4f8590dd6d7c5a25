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

#[async_trait::async_trait]
trait Payments {
    async fn charge(&self, id: u64) -> Result<Receipt, PayError>;
}

struct Gateway;

#[async_trait::async_trait]
impl Payments for Gateway {
    #[idempotent(key = id, ttl = "1h")]
    async fn charge(&self, id: u64) -> Result<Receipt, PayError> {
        Ok(Receipt { id })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let gateway: Box<dyn Payments + Send + Sync> = Box::new(Gateway);
    assert_eq!(gateway.charge(9).await.unwrap(), Receipt { id: 9 });
}
