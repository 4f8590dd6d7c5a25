use idem_core::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
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

#[idempotent(key = id, lease = 30)]
async fn charge(id: u64) -> Result<Receipt, PayError> {
    Ok(Receipt { id })
}

fn main() {}
