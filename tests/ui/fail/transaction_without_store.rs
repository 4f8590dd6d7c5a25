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

struct Conn;

// Transactional mode writes the key record on `tx`, with a PostgreSQL store it must be given.
#[idempotent(key = id, transaction = tx)]
async fn charge(tx: &mut Conn, id: u64) -> Result<Receipt, PayError> {
    let _ = tx;
    Ok(Receipt { id })
}

fn main() {}
