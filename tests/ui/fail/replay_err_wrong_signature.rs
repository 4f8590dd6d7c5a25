use idem_core::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Receipt {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum PayError {
    Declined,
    #[serde(skip)]
    Idem(idem_core::Error),
}

impl From<idem_core::Error> for PayError {
    fn from(err: idem_core::Error) -> Self {
        PayError::Idem(err)
    }
}

// Takes the error by value; `replay_err` needs `fn(&PayError) -> bool`.
fn is_final(err: PayError) -> bool {
    matches!(err, PayError::Declined)
}

#[idempotent(key = id, replay_err = is_final)]
async fn charge(id: u64) -> Result<Receipt, PayError> {
    Ok(Receipt { id })
}

fn main() {}
