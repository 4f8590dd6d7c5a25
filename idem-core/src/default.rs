//! The process default store, used by every `#[idempotent]` function without `store = ...`.

use std::sync::OnceLock;
use std::time::Duration;

use crate::error::StoreError;
use crate::key::RecordKey;
use crate::store::{Claim, ClaimRequest, ClaimToken, DynStore, Fence, Outcome, Record, Store};

static DEFAULT: OnceLock<DefaultStore> = OnceLock::new();

/// Sets the store of every `#[idempotent]` function that names none, once, at start-up.
///
/// Without a call, the default is a [`MemoryStore`](crate::MemoryStore) (feature `memory`, on by
/// default), created on first use.
///
/// # Errors
///
/// [`DefaultStoreAlreadySet`] when a default was already set, or already used (which fixes it
/// to the in-memory store): call this before the first idempotent call.
///
/// # Examples
///
/// ```
/// use idem_core::{set_default_store, MemoryStore};
///
/// set_default_store(MemoryStore::builder().max_capacity(100_000).build())
///     .expect("set before any idempotent call");
/// assert!(set_default_store(MemoryStore::new()).is_err());
/// ```
pub fn set_default_store<S: Store>(store: S) -> Result<(), DefaultStoreAlreadySet> {
    let mut store = Some(store);
    DEFAULT.get_or_init(|| DefaultStore::from_store(store.take().expect("taken once")));
    match store {
        None => Ok(()),
        Some(_) => Err(DefaultStoreAlreadySet),
    }
}

/// [`set_default_store`] was called after the default store was set or first used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultStoreAlreadySet;

impl std::fmt::Display for DefaultStoreAlreadySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the default idempotency store was already set or used; set it once, before the first idempotent call")
    }
}

impl std::error::Error for DefaultStoreAlreadySet {}

/// The process default store: what [`set_default_store`] set, or a [`MemoryStore`](crate::MemoryStore).
///
/// ```
/// use idem_core::{default_store, RecordKey, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let key = RecordKey::new("docs", "never-used").unwrap();
/// assert!(default_store().get(&key).await.unwrap().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct DefaultStore(Inner);

// The in-memory store is kept unboxed so its calls stay cheap.
#[derive(Clone)]
enum Inner {
    #[cfg(feature = "memory")]
    Memory(crate::MemoryStore),
    Dyn(DynStore),
    #[cfg_attr(feature = "memory", allow(dead_code))]
    Unset,
}

impl DefaultStore {
    fn from_store<S: Store>(store: S) -> Self {
        #[cfg(feature = "memory")]
        {
            let any: &dyn std::any::Any = &store;
            if let Some(memory) = any.downcast_ref::<crate::MemoryStore>() {
                return DefaultStore(Inner::Memory(memory.clone()));
            }
        }
        DefaultStore(Inner::Dyn(DynStore::new(store)))
    }
}

/// The process default store (see [`set_default_store`]); using it fixes it.
pub fn default_store() -> &'static DefaultStore {
    DEFAULT.get_or_init(|| {
        #[cfg(feature = "memory")]
        return DefaultStore(Inner::Memory(crate::MemoryStore::new()));
        #[cfg(not(feature = "memory"))]
        return DefaultStore(Inner::Unset);
    })
}

fn unset() -> StoreError {
    StoreError::msg(
        "no default idempotency store: call idem_core::set_default_store or enable the `memory` feature",
    )
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match &$self.0 {
            #[cfg(feature = "memory")]
            Inner::Memory($store) => $call.await,
            Inner::Dyn($store) => $call.await,
            Inner::Unset => Err(unset()),
        }
    };
}

impl Store for DefaultStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.claim(request))
    }

    async fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<Fence, StoreError> {
        dispatch!(self, s => s.complete(token, outcome, ttl))
    }

    async fn release(&self, token: &ClaimToken) -> Result<Fence, StoreError> {
        dispatch!(self, s => s.release(token))
    }

    async fn renew(&self, token: &ClaimToken, lease: Duration) -> Result<Fence, StoreError> {
        dispatch!(self, s => s.renew(token, lease))
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        dispatch!(self, s => s.get(key))
    }

    async fn wait(&self, key: &RecordKey, attempt: u32, max: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.wait(key, attempt, max))
    }

    fn release_now(&self, token: &ClaimToken) -> bool {
        match &self.0 {
            #[cfg(feature = "memory")]
            Inner::Memory(s) => s.release_now(token),
            Inner::Dyn(s) => s.release_now(token),
            Inner::Unset => true,
        }
    }
}
