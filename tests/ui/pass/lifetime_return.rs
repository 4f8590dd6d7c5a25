//! Return types that name a lifetime, or are generic over `Clone` ones, still compile: replays
//! decode them (only a `'static` type can be kept decoded).
use std::borrow::Cow;

use idem_core::idempotent;

#[derive(Debug)]
struct PayError(idem_core::Error);

impl From<idem_core::Error> for PayError {
    fn from(err: idem_core::Error) -> Self {
        PayError(err)
    }
}

#[idempotent(key = name)]
async fn greet<'a>(name: &'a str) -> Result<Cow<'a, str>, PayError> {
    Ok(Cow::Borrowed(name))
}

#[idempotent(key = id)]
async fn kept<T>(id: u64, value: T) -> Result<T, PayError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let _ = id;
    Ok(value)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let name = String::from("ada");
    assert_eq!(greet(&name).await.unwrap(), "ada");
    assert_eq!(greet(&name).await.unwrap(), "ada");
    assert_eq!(kept(1, vec![1u8]).await.unwrap(), vec![1]);
    assert_eq!(kept(1, vec![1u8]).await.unwrap(), vec![1]);
}
