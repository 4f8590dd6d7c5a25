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

#[idempotent(key = req.id, skip(client))]
async fn charge(req: Receipt, pool: u8) -> Result<Receipt, PayError> {
    let _ = pool;
    Ok(req)
}

fn main() {}
