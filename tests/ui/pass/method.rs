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

struct Service {
    store: idem_core::MemoryStore,
}

impl Service {
    #[idempotent(key = id, store = &self.store)]
    async fn get(&self, id: u64) -> Result<Receipt, PayError> {
        Ok(Receipt { id })
    }

    #[idempotent(key = id, store = self.store.clone(), concurrent = "reject")]
    pub async fn take(&mut self, id: u64) -> Result<Receipt, PayError> {
        Ok(Receipt { id })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut service = Service { store: idem_core::MemoryStore::new() };
    assert_eq!(service.get(1).await.unwrap(), Receipt { id: 1 });
    assert_eq!(service.take(2).await.unwrap(), Receipt { id: 2 });
}
