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

#[idempotent(key = id)]
async fn echo<T, E>(id: u64, value: T) -> Result<T, E>
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync,
    E: From<idem_core::Error>,
{
    let _ = id;
    Ok(value)
}

#[idempotent]
async fn with_impl_arg(value: impl Serialize + Send) -> Result<u8, PayError> {
    let _ = value;
    Ok(1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let got: Result<String, PayError> = echo(1, "x".to_string()).await;
    assert_eq!(got.unwrap(), "x");
    assert_eq!(with_impl_arg(5u8).await.unwrap(), 1);
}
