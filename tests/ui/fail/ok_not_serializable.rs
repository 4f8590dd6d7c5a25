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

struct Secret(u64);

#[idempotent(key = id)]
async fn charge(id: u64) -> Result<Secret, PayError> {
    Ok(Secret(id))
}

fn main() {}
