//! # idem: make async operations safe to retry
//!
//! Put `#[idempotent]` on an `async fn` that returns `Result<T, E>`. The first call with a
//! given key runs the body and stores its `Ok` value; a retry with the same key gets the stored
//! value back without running the body; a duplicate that arrives while the first call still
//! runs waits for its outcome (or is rejected, if you choose).
//!
//! ```
//! use idem_core::idempotent;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct ChargeRequest { payment_id: String, amount: u64 }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Receipt { id: u64, amount: u64 }
//!
//! #[derive(Debug)]
//! enum PaymentError { Idem(idem_core::Error) }
//!
//! impl From<idem_core::Error> for PaymentError {
//!     fn from(err: idem_core::Error) -> Self { PaymentError::Idem(err) }
//! }
//!
//! #[idempotent(key = req.payment_id, ttl = "24h")]
//! async fn charge(req: &ChargeRequest) -> Result<Receipt, PaymentError> {
//!     // Runs once per payment id; retries get the stored Receipt back.
//!     Ok(Receipt { id: 7, amount: req.amount })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let req = ChargeRequest { payment_id: "pay-1".into(), amount: 1200 };
//! let first = charge(&req).await.unwrap();
//! let retry = charge(&req).await.unwrap();
//! assert_eq!(first, retry);
//! # }
//! ```
//!
//! ## Equivalent code without `#[idempotent]`
//!
//! The macro keeps the signature and replaces the body with a call to [`run`]:
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize)] struct ChargeRequest { payment_id: String, amount: u64 }
//! # #[derive(Debug, Serialize, Deserialize)] struct Receipt { id: u64, amount: u64 }
//! # #[derive(Debug)] enum PaymentError { Idem(idem_core::Error) }
//! # impl From<idem_core::Error> for PaymentError { fn from(e: idem_core::Error) -> Self { PaymentError::Idem(e) } }
//! use std::time::Duration;
//! use idem_core::{run, Fingerprint, NoReplay, Options};
//!
//! async fn charge(req: &ChargeRequest) -> Result<Receipt, PaymentError> {
//!     let options = Options::new(concat!(module_path!(), "::charge"))
//!         .ttl(Duration::from_secs(24 * 60 * 60));
//!     let key = Some(req.payment_id.to_string());
//!     let fingerprint = Fingerprint::of(&req).map_err(idem_core::Error::from);
//!     run(idem_core::default_store(), options, key, fingerprint, NoReplay, async move {
//!         Ok(Receipt { id: 7, amount: req.amount })
//!     })
//!     .await
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let req = ChargeRequest { payment_id: "pay-2".into(), amount: 5 };
//! # assert_eq!(charge(&req).await.unwrap().amount, 5);
//! # }
//! ```
//!
//! ## Semantics
//!
//! | situation | what happens |
//! | --- | --- |
//! | first call | claims the key, runs the body, stores `Ok` (and errors chosen by `replay_err`) |
//! | retry after completion | the stored value is returned; the body does not run |
//! | same key, other arguments | [`Error::Mismatch`]; nothing runs, nothing is overwritten |
//! | duplicate while running | waits for the outcome (woken, not polled, in one process), or [`Error::InProgress`] with `concurrent = "reject"` |
//! | the body returns `Err`, panics, or its future is dropped | the claim is released at once; the next call runs the body |
//! | the holder crashes | its lease runs out; the next call takes over with a higher fence; the old holder's late writes are refused |
//! | a long body | the lease is renewed every third of it while the body runs |
//! | store unreachable | the body does not run; the caller gets [`Error::Store`] |
//!
//! ## Cancellation
//!
//! Dropping the future of a call that holds the claim releases the claim (or, if the body had
//! already finished, stores its outcome from a background task), so a cancelled request never
//! blocks its key until the lease ends. Dropping a waiting duplicate has no effect on the
//! holder.
//!
//! See the `README` for the attribute's arguments, the stores and the feature flags.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]

mod call;
mod default;
mod error;
mod fingerprint;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod key;
pub mod store;
mod trace;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[path = "store/redis.rs"]
pub mod redis;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[path = "store/postgres.rs"]
pub mod postgres;

#[doc(hidden)]
pub mod __private;

pub use call::{
    ByClone, ByJson, Concurrency, DecodeOk, ErrorPolicy, NoReplay, Options, ReplayErr, run,
    run_decoding,
};
pub use default::{DefaultStore, DefaultStoreAlreadySet, default_store, set_default_store};
pub use error::{CodecError, Error, KeyError, StoreError};
pub use fingerprint::{Fingerprint, FingerprintError, Fingerprinter};
pub use key::{MAX_KEY_LEN, MAX_SCOPE_LEN, RecordKey};
pub use store::Store;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use store::memory::{MemoryStore, MemoryStoreBuilder};
pub use trace::log_plain_keys;

/// Makes an `async fn` idempotent: see the [crate documentation](crate) and the README.
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use idem_macros::idempotent;

// The README shows every store, so it is tested when every feature is on.
#[cfg(all(doctest, feature = "redis", feature = "testing"))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
