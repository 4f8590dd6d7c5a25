//! The [`Store`] trait every backend implements, and the types of its protocol.
//!
//! A record per `(scope, key)` moves: absent → in progress (owner, fence, lease, fingerprint)
//! → completed (fingerprint, outcome, expiry) → absent again when it expires. Every change a
//! holder makes after its claim (complete, release, renew) names its [`ClaimToken`]; a store
//! applies it only while that token still holds the record, so a holder whose lease ran out and
//! was taken over can no longer overwrite anything (it is *fenced*).
//!
//! Time is the store's own: leases and expiries are judged by the store's clock (Redis `TIME`,
//! Postgres `now()`, the process clock for [`MemoryStore`](crate::MemoryStore)), never by the
//! caller's, so clock skew between machines cannot shorten or extend a lease.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;

#[cfg(feature = "memory")]
pub(crate) mod memory;

/// A backend that holds idempotency records: in-process, Redis, PostgreSQL, or your own.
///
/// Implementations are cheap handles (an `Arc`, a connection manager, a pool): idem clones a
/// store when it must finish work in the background, such as releasing the claim of a call
/// whose future was dropped.
///
/// Every implementation should pass the conformance suite in `idem_core::testing` (feature
/// `testing`).
///
/// # Concurrent calls on the same key
///
/// [`claim`](Store::claim) must be atomic per record: of any number of concurrent claims on an
/// absent (or expired) record exactly one gets [`Claim::Acquired`]; the others see the holder as
/// [`Claim::Busy`], or its outcome as [`Claim::Completed`] once it is stored.
///
/// # Examples
///
/// A store that counts claims and forwards everything to a [`MemoryStore`](crate::MemoryStore);
/// a backend of your own implements the same six methods against its storage.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// use idem_core::store::{Claim, ClaimRequest, ClaimToken, Fence, Outcome, Record};
/// use idem_core::{MemoryStore, RecordKey, Store, StoreError};
///
/// #[derive(Clone, Default)]
/// struct Counting {
///     inner: MemoryStore,
///     claims: Arc<AtomicU64>,
/// }
///
/// impl Store for Counting {
///     async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
///         self.claims.fetch_add(1, Ordering::Relaxed);
///         self.inner.claim(request).await
///     }
///     async fn complete(&self, token: &ClaimToken, outcome: &Outcome, ttl: Duration) -> Result<Fence, StoreError> {
///         self.inner.complete(token, outcome, ttl).await
///     }
///     async fn release(&self, token: &ClaimToken) -> Result<Fence, StoreError> {
///         self.inner.release(token).await
///     }
///     async fn renew(&self, token: &ClaimToken, lease: Duration) -> Result<Fence, StoreError> {
///         self.inner.renew(token, lease).await
///     }
///     async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
///         self.inner.get(key).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = Counting::default();
/// # #[cfg(feature = "testing")]
/// idem_core::testing::conformance(store.clone()).await;
/// # }
/// ```
pub trait Store: Clone + Send + Sync + 'static {
    /// Claims `request.key` for `request.owner`, or reports why it cannot.
    ///
    /// - absent, or completed but expired, or in progress with a lease that ran out:
    ///   [`Claim::Acquired`] with a fence number higher than any earlier claim of the record;
    /// - completed with the same fingerprint: [`Claim::Completed`] with the stored outcome;
    /// - completed or in progress with another fingerprint: [`Claim::Mismatch`];
    /// - in progress under a live lease: [`Claim::Busy`] with the time the lease has left.
    fn claim(
        &self,
        request: &ClaimRequest<'_>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Stores `outcome` for `ttl` and ends the claim, if `token` still holds the record.
    fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send;

    /// Removes the in-progress record so the next call runs the body, if `token` still holds it.
    fn release(&self, token: &ClaimToken)
    -> impl Future<Output = Result<Fence, StoreError>> + Send;

    /// Extends the lease to `lease` from now (by the store's clock), if `token` still holds the
    /// record.
    fn renew(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send;

    /// Reads the record of `key` without changing it (expired records read as absent).
    fn get(
        &self,
        key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Waits, at most `max`, for the in-progress record of `key` to change (complete, release).
    ///
    /// `attempt` counts earlier waits of the same caller. The default polls: it sleeps with
    /// exponential backoff and jitter, bounded by `max`. In-process stores override it to be
    /// woken when the holder finishes.
    fn wait(
        &self,
        key: &RecordKey,
        attempt: u32,
        max: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = key;
        async move {
            tokio::time::sleep(backoff(attempt, max)).await;
            Ok(())
        }
    }

    /// Releases a claim without awaiting, if the store can do that at once (in-process stores).
    ///
    /// idem calls this when a body panics or its future is dropped. Returning `false` (the
    /// default) makes idem release from a spawned task instead.
    fn release_now(&self, token: &ClaimToken) -> bool {
        let _ = token;
        false
    }
}

/// The backoff of [`Store::wait`]'s default: 2 ms doubling per attempt up to 250 ms, with
/// ±50% jitter, never above `max`.
///
/// ```
/// use std::time::Duration;
/// let d = idem_core::store::backoff(3, Duration::from_secs(1));
/// assert!(d >= Duration::from_millis(8) && d <= Duration::from_millis(24));
/// assert_eq!(idem_core::store::backoff(30, Duration::from_millis(5)), Duration::from_millis(5));
/// ```
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(2).saturating_mul(1 << attempt.min(7));
    let base = base.min(Duration::from_millis(250));
    // Jitter in [0.5, 1.5) of base.
    let jitter = (random_u64() % 1000) as u32;
    let delay = base / 2 + base * jitter / 1000;
    delay.min(max)
}

/// What the runtime asks of [`Store::claim`].
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The record to claim.
    pub key: &'a RecordKey,
    /// The hash of the call's arguments; a completed or in-progress record with another
    /// fingerprint answers [`Claim::Mismatch`].
    pub fingerprint: Fingerprint,
    /// Who is claiming: unique for every claim attempt.
    pub owner: Owner,
    /// How long the claim lives without renewal.
    pub lease: Duration,
}

/// The answer of [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the record and runs the body.
    Acquired {
        /// The claim's fence number, higher than that of any earlier claim of the record.
        fence: u64,
        /// Whether an earlier holder's expired lease was taken over.
        taken_over: bool,
    },
    /// The record is completed with the same fingerprint: replay this outcome.
    Completed(Outcome),
    /// The key is in use with another fingerprint.
    Mismatch,
    /// Another caller holds the record under a live lease.
    Busy {
        /// What is left of the holder's lease.
        retry_after: Duration,
    },
}

/// Whether a fenced write (complete, release, renew) was applied.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The token still held the record; the write was applied.
    Held,
    /// Another claim holds the record now (or it is gone); nothing was written.
    Lost,
}

/// Proof of holding a claim: the record, its owner and its fence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    key: RecordKey,
    owner: Owner,
    fence: u64,
}

impl ClaimToken {
    /// A token for `owner`'s claim on `key` with the fence number the store granted.
    pub fn new(key: RecordKey, owner: Owner, fence: u64) -> Self {
        ClaimToken { key, owner, fence }
    }

    /// The claimed record.
    pub fn key(&self) -> &RecordKey {
        &self.key
    }

    /// Who holds the claim.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The claim's fence number.
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

/// A claimant's identity: 128 bits, unique across processes (a random per-process half and a
/// counter).
///
/// ```
/// use idem_core::store::Owner;
/// assert_ne!(Owner::new(), Owner::new());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner(u128);

impl Owner {
    /// A fresh owner id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        /// Ids handed to a thread at a time: every call makes an owner, replays too, and one
        /// counter shared by all threads would be a cache line every call of every thread
        /// writes.
        const BLOCK: u64 = 1 << 16;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        thread_local! {
            /// The next id of this thread's block, and the end of the block.
            static IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        let process = *PROCESS.get_or_init(random_u64);
        let id = IDS.with(|ids| {
            let (mut next, mut end) = ids.get();
            if next == end {
                next = NEXT.fetch_add(BLOCK, Ordering::Relaxed);
                end = next + BLOCK;
            }
            ids.set((next + 1, end));
            next
        });
        Owner((u128::from(process) << 64) | u128::from(id))
    }

    /// The id as stored by a backend.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// An id read back from a backend.
    pub const fn from_u128(id: u128) -> Self {
        Owner(id)
    }
}

/// A random `u64` from the standard library's randomly seeded hasher (no extra dependency).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Whether a stored outcome is the body's `Ok` or an `Err` chosen by `replay_err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The body returned `Ok`.
    Ok,
    /// The body returned an `Err` that is a final outcome (stored by `replay_err`).
    Err,
}

impl OutcomeKind {
    /// A one-byte code for stores: `b'o'` or `b'e'`.
    pub const fn code(self) -> u8 {
        match self {
            OutcomeKind::Ok => b'o',
            OutcomeKind::Err => b'e',
        }
    }

    /// The kind for a code written by [`OutcomeKind::code`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            b'o' => Some(OutcomeKind::Ok),
            b'e' => Some(OutcomeKind::Err),
            _ => None,
        }
    }
}

/// A stored outcome: its kind and the encoded value (JSON).
///
/// An in-process store also hands out, with the outcome, a slot where the runtime keeps the
/// value once it has been decoded: replays of a `Clone` type then clone that value instead of
/// decoding the bytes again. Outcomes compare by kind and bytes alone.
#[derive(Clone)]
pub struct Outcome {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// Bytes of its own: what a remote store reads, or what the runtime is about to store.
    Owned { kind: OutcomeKind, bytes: Bytes },
    /// A record of an in-process store, shared: a replay clones one `Arc` and nothing else.
    #[cfg_attr(not(any(feature = "memory", feature = "redis")), allow(dead_code))]
    Stored(Arc<dyn StoredOutcome>),
}

/// A decoded outcome, kept beside its record (see [`Outcome`]).
pub(crate) type Memo = std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>;

/// A record of an in-process store that hands out its outcome without copying it, with the
/// slot where the runtime keeps the decoded value.
pub(crate) trait StoredOutcome: Send + Sync {
    /// The outcome as stored (always [`Repr::Owned`]).
    fn outcome(&self) -> &Outcome;
    fn memo(&self) -> &Memo;
}

impl Outcome {
    /// An outcome of `kind` with the encoded value `bytes`.
    ///
    /// ```
    /// use idem_core::store::{Outcome, OutcomeKind};
    /// let outcome = Outcome::new(OutcomeKind::Ok, b"{\"id\":1}".to_vec());
    /// assert_eq!(outcome.kind(), OutcomeKind::Ok);
    /// assert_eq!(&outcome.bytes()[..], b"{\"id\":1}");
    /// ```
    pub fn new(kind: OutcomeKind, bytes: impl Into<Bytes>) -> Self {
        Outcome {
            repr: Repr::Owned {
                kind,
                bytes: bytes.into(),
            },
        }
    }

    /// The outcome a stored record holds, shared with the record.
    #[cfg_attr(not(any(feature = "memory", feature = "redis")), allow(dead_code))]
    pub(crate) fn stored(record: Arc<dyn StoredOutcome>) -> Self {
        Outcome {
            repr: Repr::Stored(record),
        }
    }

    /// Whether the body returned `Ok` or a replayable `Err`.
    pub fn kind(&self) -> OutcomeKind {
        match &self.repr {
            Repr::Owned { kind, .. } => *kind,
            Repr::Stored(record) => record.outcome().kind(),
        }
    }

    /// The encoded value.
    pub fn bytes(&self) -> &Bytes {
        match &self.repr {
            Repr::Owned { bytes, .. } => bytes,
            Repr::Stored(record) => record.outcome().bytes(),
        }
    }

    /// The same outcome with bytes of its own, whatever record it shares: what a record keeps
    /// (so [`StoredOutcome::outcome`] is never itself a shared one).
    #[cfg_attr(not(any(feature = "memory", feature = "redis")), allow(dead_code))]
    pub(crate) fn detached(&self) -> Self {
        Outcome::new(self.kind(), self.bytes().clone())
    }

    /// The slot for the decoded value, if the store keeps one.
    pub(crate) fn memo(&self) -> Option<&Memo> {
        match &self.repr {
            Repr::Owned { .. } => None,
            Repr::Stored(record) => Some(record.memo()),
        }
    }
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.bytes() == other.bytes()
    }
}

impl Eq for Outcome {}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("kind", &self.kind())
            .field("bytes", self.bytes())
            .finish_non_exhaustive()
    }
}

/// A record as [`Store::get`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A holder is running the body.
    InProgress {
        /// The holder.
        owner: Owner,
        /// The holder's fence number.
        fence: u64,
        /// The fingerprint of the holder's arguments.
        fingerprint: Fingerprint,
        /// What is left of the lease.
        lease_left: Duration,
    },
    /// The outcome is stored and replayed.
    Completed {
        /// The fingerprint of the arguments that produced it.
        fingerprint: Fingerprint,
        /// The stored outcome.
        outcome: Outcome,
        /// How long it is still replayed.
        expires_in: Duration,
    },
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe mirror of [`Store`], for [`DynStore`].
trait ErasedStore: Send + Sync + 'static {
    fn claim<'a>(
        &'a self,
        request: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;
    fn complete<'a>(
        &'a self,
        token: &'a ClaimToken,
        outcome: &'a Outcome,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Fence, StoreError>>;
    fn release<'a>(&'a self, token: &'a ClaimToken) -> BoxFuture<'a, Result<Fence, StoreError>>;
    fn renew<'a>(
        &'a self,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Fence, StoreError>>;
    fn get<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<Option<Record>, StoreError>>;
    fn wait<'a>(
        &'a self,
        key: &'a RecordKey,
        attempt: u32,
        max: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn release_now(&self, token: &ClaimToken) -> bool;
}

impl<S: Store> ErasedStore for S {
    fn claim<'a>(
        &'a self,
        request: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(Store::claim(self, request))
    }

    fn complete<'a>(
        &'a self,
        token: &'a ClaimToken,
        outcome: &'a Outcome,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Fence, StoreError>> {
        Box::pin(Store::complete(self, token, outcome, ttl))
    }

    fn release<'a>(&'a self, token: &'a ClaimToken) -> BoxFuture<'a, Result<Fence, StoreError>> {
        Box::pin(Store::release(self, token))
    }

    fn renew<'a>(
        &'a self,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Fence, StoreError>> {
        Box::pin(Store::renew(self, token, lease))
    }

    fn get<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(Store::get(self, key))
    }

    fn wait<'a>(
        &'a self,
        key: &'a RecordKey,
        attempt: u32,
        max: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::wait(self, key, attempt, max))
    }

    fn release_now(&self, token: &ClaimToken) -> bool {
        Store::release_now(self, token)
    }
}

/// Any [`Store`] behind one type, for places that cannot be generic (the process default store,
/// a field holding "some store").
///
/// ```
/// use idem_core::{MemoryStore, store::DynStore};
/// let store = DynStore::new(MemoryStore::new());
/// let copy = store.clone();
/// # drop(copy);
/// ```
#[derive(Clone)]
pub struct DynStore(Arc<dyn ErasedStore>);

impl DynStore {
    /// Erases the type of `store`.
    pub fn new<S: Store>(store: S) -> Self {
        DynStore(Arc::new(store))
    }
}

impl std::fmt::Debug for DynStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynStore")
    }
}

impl Store for DynStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        self.0.claim(request).await
    }

    async fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<Fence, StoreError> {
        self.0.complete(token, outcome, ttl).await
    }

    async fn release(&self, token: &ClaimToken) -> Result<Fence, StoreError> {
        self.0.release(token).await
    }

    async fn renew(&self, token: &ClaimToken, lease: Duration) -> Result<Fence, StoreError> {
        self.0.renew(token, lease).await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.0.get(key).await
    }

    async fn wait(&self, key: &RecordKey, attempt: u32, max: Duration) -> Result<(), StoreError> {
        self.0.wait(key, attempt, max).await
    }

    fn release_now(&self, token: &ClaimToken) -> bool {
        self.0.release_now(token)
    }
}

#[cfg(test)]
mod tests {
    use super::Owner;

    #[test]
    fn owners_are_unique_across_threads_and_blocks() {
        // Each thread takes more than one block of ids, so blocks are crossed on every thread.
        let per_thread = (1 << 16) + 1_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| Owner::new().as_u128())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u128> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let made = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), made, "an owner id was handed out twice");
        // One process: the top half is the same for all.
        assert!(all.iter().all(|id| id >> 64 == all[0] >> 64));
    }
}
