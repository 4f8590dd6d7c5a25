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

use std::time::Duration;

static STORE: std::sync::LazyLock<idem_core::MemoryStore> = std::sync::LazyLock::new(idem_core::MemoryStore::new);

#[derive(Debug, Serialize, Deserialize)]
enum Declined {
    Card,
    #[serde(skip)]
    Idem(idem_core::Error),
}

impl From<idem_core::Error> for Declined {
    fn from(err: idem_core::Error) -> Self {
        Declined::Idem(err)
    }
}

fn is_final(err: &Declined) -> bool {
    matches!(err, Declined::Card)
}

struct Client;

#[idempotent(
    key = (tenant, id),
    ttl = Duration::from_secs(3600),
    scope = "billing::charge",
    skip(client),
    fingerprint = (tenant, id),
    concurrent = "wait",
    wait = "5s",
    lease = "1m30s",
    store = &*STORE,
    replay_err = is_final,
    crate = "::idem_core",
)]
async fn charge(client: &Client, tenant: &str, id: u64) -> Result<Receipt, Declined> {
    let _ = client;
    Ok(Receipt { id })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(charge(&Client, "acme", 4).await.unwrap(), Receipt { id: 4 });
}
