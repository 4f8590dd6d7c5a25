//! [`MemoryStore`]: records in this process, on moka.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use moka::Expiry;
use moka::policy::EvictionPolicy;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;
use crate::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Memo, Outcome, Owner, Record, Store, StoredOutcome,
};

mod keymap;

use keymap::{At, KeyMap, Keyed};

/// moka's hasher: foldhash, keyed with a random seed per store (a [`RecordKey`] hashes as the
/// `u64` it computed when it was built).
type Hasher = foldhash::quality::RandomState;

const SHARDS: usize = 64;

/// The default store: idempotency records in this process.
///
/// Completed outcomes live in a [moka](https://docs.rs/moka) cache with a per-entry TTL and,
/// optionally, a bounded capacity (least recently used outcomes are evicted first). In-progress
/// claims live beside it in a sharded map that is never evicted, however small the capacity, so
/// a running call can never be forgotten and run twice. An unbounded store (the default) also
/// keeps an index of its completed outcomes that replays read without moka's per-read
/// bookkeeping, which only a bounded store's eviction order needs; moka still expires them.
/// [`MemoryStoreBuilder::lazy_expiry`] keeps them in that index alone, for half the memory and
/// a third of the time per first call, and returns an expired record's memory at a later write.
///
/// Duplicates that wait are woken the moment the holder completes or releases (no polling).
///
/// Time is tokio's clock ([`tokio::time::Instant`]), so tests with paused time see leases and
/// TTLs run out as time is advanced.
///
/// # Examples
///
/// ```
/// use idem_core::MemoryStore;
///
/// let unbounded = MemoryStore::new();
/// let bounded = MemoryStore::builder().max_capacity(10_000).build();
/// let lean = MemoryStore::builder().lazy_expiry().build();
/// # drop((unbounded, bounded, lean));
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    claims: Box<[Mutex<KeyMap<Held>>]>,
    /// The completed records, in moka: every store but one built with
    /// [`MemoryStoreBuilder::lazy_expiry`].
    done: Option<moka::sync::Cache<ByKey, Arc<Done>, Hasher>>,
    /// Unbounded stores only: the completed records, for replays (see [`Index`]).
    index: Option<Index>,
    fences: AtomicU64,
}

// A first call used to hash its key half a dozen times (shard, claim map, moka's insert and key
// lock, the index), and with SipHash, std's default, that was about a tenth of its
// instructions. Now a `RecordKey` hashes its strings once, when it is built (foldhash, seeded
// at random once per process): the shard, the claim map and the index use that hash as it is
// ([`At`]), and moka hashes the `u64`.

/// The completed records of an unbounded store, by key: what replays read.
///
/// moka's `get` records every read for its eviction order (an LRU deque and a frequency
/// sketch), the larger part of a replay's cost; an unbounded store evicts nothing by size, so
/// that bookkeeping buys it nothing. moka holds the same records (the same `Arc`s) and expires
/// them by their TTLs (a store built with [`MemoryStoreBuilder::lazy_expiry`] has no moka); the
/// index drops its own expired entries: readers ignore them (every read checks the expiry by
/// tokio's clock, as moka's entries are checked), and a shard sweeps them
/// out whenever it has doubled since its last sweep, so it holds at most about twice the live
/// records and the sweeps cost O(1) per insert, amortised. (It used to follow moka through an
/// eviction listener, but moka takes a per-key lock on every insert once a listener exists:
/// a tenth of a first call.) Every write to `done` also writes here first, under the claim's
/// shard lock, so a reader that misses both the index and the claim map cannot miss a
/// completion.
///
/// Its shards are the claim map's: one hash of the key picks both, and finds the key in both.
struct Index {
    shards: Box<[RwLock<IndexShard>]>,
}

struct IndexShard {
    records: KeyMap<Arc<Done>>,
    /// The size at which the next insert sweeps out expired records.
    sweep_at: usize,
}

/// The smallest size at which an index shard sweeps.
const MIN_SWEEP: usize = 64;

impl Index {
    fn new() -> Self {
        Index {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(IndexShard {
                        records: KeyMap::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
        }
    }

    fn get(&self, at: At, key: &RecordKey) -> Option<Arc<Done>> {
        read(&self.shards[at.shard]).records.get(at, key).cloned()
    }

    /// Inserts a record; first sweeps out the shard's records expired at `now` if the shard has
    /// doubled since its last sweep.
    fn insert(&self, at: At, done: Arc<Done>, now: Instant) {
        let mut shard = write(&self.shards[at.shard]);
        if shard.records.len() >= shard.sweep_at {
            shard.records.retain(|done| done.expires_at > now);
            shard.sweep_at = (shard.records.len() * 2).max(MIN_SWEEP);
        }
        shard.records.insert(at, done);
    }

    /// `key`'s record if it is unexpired at `now`; an expired one is removed (and reported as
    /// `Err`, so moka can be told to drop it too).
    fn live_or_remove(
        &self,
        at: At,
        key: &RecordKey,
        now: Instant,
    ) -> Result<Option<Arc<Done>>, ()> {
        let mut shard = write(&self.shards[at.shard]);
        match shard.records.get(at, key) {
            Some(done) if done.expires_at > now => Ok(Some(Arc::clone(done))),
            Some(_) => {
                shard.records.remove(at, key);
                Err(())
            }
            None => Ok(None),
        }
    }
}

// A poisoned lock only means a panic elsewhere while it was held; the maps behind these locks
// are intact because every change to them is a single insert or remove.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Held {
    key: RecordKey,
    owner: Owner,
    fence: u64,
    fingerprint: Fingerprint,
    lease_until: Instant,
    /// Created by the first waiter (under the shard lock), so a claim nobody waits for
    /// allocates none.
    woken: Option<Arc<Notify>>,
}

/// A completed record. It keeps its key: the index and moka both hold the record, and neither
/// keeps a copy of the key of its own.
struct Done {
    key: RecordKey,
    fingerprint: Fingerprint,
    outcome: Outcome,
    expires_at: Instant,
    ttl: Duration,
    /// The outcome once decoded, for replays of a `Clone` type (see [`Outcome`]).
    memo: Memo,
}

impl Keyed for Held {
    fn key(&self) -> &RecordKey {
        &self.key
    }
}

impl Keyed for Arc<Done> {
    fn key(&self) -> &RecordKey {
        &self.key
    }
}

/// moka's key for a record: the record itself, hashed and compared by its key, so a lookup by
/// [`RecordKey`] finds it (moka keeps its own `Arc` of each key; this makes that 8 bytes of
/// pointer rather than a second copy of the key).
struct ByKey(Arc<Done>);

impl std::hash::Hash for ByKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl std::borrow::Borrow<RecordKey> for ByKey {
    fn borrow(&self) -> &RecordKey {
        &self.0.key
    }
}

impl StoredOutcome for Done {
    fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    fn memo(&self) -> &Memo {
        &self.memo
    }
}

struct TtlExpiry;

impl Expiry<ByKey, Arc<Done>> for TtlExpiry {
    fn expire_after_create(
        &self,
        _key: &ByKey,
        value: &Arc<Done>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Builds a [`MemoryStore`].
///
/// ```
/// let store = idem_core::MemoryStore::builder().max_capacity(1_000).build();
/// # drop(store);
/// ```
#[must_use]
#[derive(Debug, Default)]
pub struct MemoryStoreBuilder {
    max_capacity: Option<u64>,
    lazy_expiry: bool,
}

impl MemoryStoreBuilder {
    /// Keeps at most `records` completed outcomes; the least recently used are evicted first.
    /// In-progress claims do not count and are never evicted.
    pub fn max_capacity(mut self, records: u64) -> Self {
        self.max_capacity = Some(records);
        self
    }

    /// An unbounded store that keeps its completed records in its replay index alone, not also
    /// in moka: about half the memory per record and a third of the time per first call (see
    /// `BENCHMARKS.md`).
    ///
    /// The difference is when an expired record's memory goes back: moka drops it soon after
    /// its TTL ends, as the cache is used; this store drops it at a later write, sweeping a
    /// part of the index whenever that part has doubled since its last sweep, so it holds at
    /// most about twice the unexpired records it held at its busiest. An expired record is never
    /// replayed, in either store.
    ///
    /// A bounded store evicts through moka, so [`max_capacity`](Self::max_capacity) overrides
    /// this.
    ///
    /// ```
    /// let store = idem_core::MemoryStore::builder().lazy_expiry().build();
    /// # drop(store);
    /// ```
    pub fn lazy_expiry(mut self) -> Self {
        self.lazy_expiry = true;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let moka = || {
            moka::sync::Cache::builder()
                .expire_after(TtlExpiry)
                .eviction_policy(EvictionPolicy::lru())
        };
        let (done, index) = match self.max_capacity {
            Some(max) => (
                Some(
                    moka()
                        .max_capacity(max)
                        .build_with_hasher(Hasher::default()),
                ),
                None,
            ),
            None if self.lazy_expiry => (None, Some(Index::new())),
            None => (
                Some(moka().build_with_hasher(Hasher::default())),
                Some(Index::new()),
            ),
        };
        MemoryStore {
            inner: Arc::new(Inner {
                claims: (0..SHARDS).map(|_| Mutex::new(KeyMap::new())).collect(),
                done,
                index,
                fences: AtomicU64::new(0),
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let completed = match (&self.inner.done, &self.inner.index) {
            (Some(done), _) => done.entry_count(),
            // Swept lazily: records expired since the last sweep count until it.
            (None, Some(index)) => index
                .shards
                .iter()
                .map(|s| read(s).records.len() as u64)
                .sum(),
            (None, None) => 0,
        };
        f.debug_struct("MemoryStore")
            .field("completed", &completed)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An unbounded store: completed outcomes are dropped only when their TTL ends.
    pub fn new() -> Self {
        MemoryStore::builder().build()
    }

    /// A builder for a bounded store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Where `key` lives, in the claim map and the index alike.
    fn at(&self, key: &RecordKey) -> At {
        At::of(key, SHARDS)
    }

    fn shard(&self, at: At) -> MutexGuard<'_, KeyMap<Held>> {
        // A poisoned shard only means a panic elsewhere while it was held; its map is intact
        // because every change to it is a single insert or remove.
        self.inner.claims[at.shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next_fence(&self) -> u64 {
        self.inner.fences.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The completed, unexpired record of `key`.
    fn completed(&self, key: &RecordKey, now: Instant) -> Option<Arc<Done>> {
        self.completed_at(self.at(key), key, now)
    }

    fn completed_at(&self, at: At, key: &RecordKey, now: Instant) -> Option<Arc<Done>> {
        match (&self.inner.index, &self.inner.done) {
            (Some(index), _) => index.get(at, key),
            (None, Some(done)) => done.get(key),
            (None, None) => None,
        }
        .filter(|done| done.expires_at > now)
    }

    /// The completed, unexpired record of `key`; an expired one is forgotten (called under its
    /// claim shard's lock, before a claim).
    fn completed_or_forget(&self, at: At, key: &RecordKey, now: Instant) -> Option<Arc<Done>> {
        match &self.inner.index {
            // Every record in moka was written to the index first, and one the index has swept
            // out is expired by then (moka drops it by its TTL, or the next completion of the
            // key replaces it), so a key absent from the index needs no moka call: the usual
            // first call skips one.
            Some(index) => match index.live_or_remove(at, key, now) {
                Ok(live) => live,
                Err(()) => {
                    if let Some(done) = &self.inner.done {
                        done.invalidate(key);
                    }
                    None
                }
            },
            None => {
                let done = self.inner.done.as_ref()?;
                let live = done.get(key).filter(|done| done.expires_at > now);
                if live.is_none() {
                    done.invalidate(key);
                }
                live
            }
        }
    }

    /// Stores a completed record (called under its claim shard's lock, before the claim goes).
    fn insert_completed(&self, at: At, done: Arc<Done>, now: Instant) {
        if let Some(index) = &self.inner.index {
            index.insert(at, Arc::clone(&done), now);
        }
        // moka can still hold an expired record of this key only in an unbounded store, whose
        // index swept it out before moka's housekeeping dropped it (`completed_or_forget`
        // invalidates it everywhere else). moka then updates the entry in place: the entry keeps
        // the old record as its key and the old expiry (`TtlExpiry` does not implement
        // `expire_after_update`), so moka drops both soon; replays read the index, which holds
        // the new record for its whole TTL.
        if let Some(moka) = &self.inner.done {
            moka.insert(ByKey(Arc::clone(&done)), done);
        }
    }

    fn claim_now(&self, request: &ClaimRequest<'_>) -> Claim {
        let now = Instant::now();
        let at = self.at(request.key);
        // Replays take no lock: a completed, unexpired record excludes any claim.
        if let Some(done) = self.completed_at(at, request.key, now) {
            return replay(done, request.fingerprint);
        }
        let mut shard = self.shard(at);
        if let Some(held) = shard.get_mut(at, request.key) {
            if held.lease_until > now {
                return if held.fingerprint == request.fingerprint {
                    Claim::Busy {
                        retry_after: held.lease_until - now,
                    }
                } else {
                    Claim::Mismatch
                };
            }
            // The holder's lease ran out: take over with a higher fence.
            held.owner = request.owner;
            held.fingerprint = request.fingerprint;
            held.fence = self.next_fence();
            held.lease_until = now + request.lease;
            return Claim::Acquired {
                fence: held.fence,
                taken_over: true,
            };
        }
        // Completed between the lock-free read and the lock: completion inserts the outcome
        // before it removes the claim, under this shard lock. An expired record is forgotten.
        if let Some(done) = self.completed_or_forget(at, request.key, now) {
            return replay(done, request.fingerprint);
        }
        let fence = self.next_fence();
        shard.insert(
            at,
            Held {
                key: request.key.clone(),
                owner: request.owner,
                fence,
                fingerprint: request.fingerprint,
                lease_until: now + request.lease,
                woken: None,
            },
        );
        Claim::Acquired {
            fence,
            taken_over: false,
        }
    }

    /// Applies `write` to the claim if `token` holds it; removes the claim when `write` says so.
    fn fenced(&self, token: &ClaimToken, write: impl FnOnce(&mut Held) -> bool) -> Fence {
        let at = self.at(token.key());
        let mut shard = self.shard(at);
        let Some(held) = shard.get_mut(at, token.key()) else {
            return Fence::Lost;
        };
        if held.owner != token.owner() || held.fence != token.fence() {
            return Fence::Lost;
        }
        if write(held)
            && let Some(held) = shard.remove(at, token.key())
            && let Some(woken) = held.woken
        {
            woken.notify_waiters();
        }
        Fence::Held
    }

    fn release_sync(&self, token: &ClaimToken) -> Fence {
        self.fenced(token, |_| true)
    }
}

fn replay(done: Arc<Done>, fingerprint: Fingerprint) -> Claim {
    if done.fingerprint == fingerprint {
        Claim::Completed(Outcome::stored(done))
    } else {
        Claim::Mismatch
    }
}

impl Store for MemoryStore {
    fn claim(
        &self,
        request: &ClaimRequest<'_>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        std::future::ready(Ok(self.claim_now(request)))
    }

    fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        let at = self.at(token.key());
        let mut shard = self.shard(at);
        let fence = match shard.remove(at, token.key()) {
            Some(held) if held.owner == token.owner() && held.fence == token.fence() => {
                let now = Instant::now();
                let done = Done {
                    key: held.key,
                    fingerprint: held.fingerprint,
                    outcome: outcome.detached(),
                    expires_at: now + ttl,
                    ttl,
                    memo: Memo::new(),
                };
                // The outcome is in place before the claim's removal is visible (the shard
                // lock is held throughout), and the claim's key moves into the record.
                self.insert_completed(at, Arc::new(done), now);
                drop(shard);
                if let Some(woken) = held.woken {
                    woken.notify_waiters();
                }
                Fence::Held
            }
            Some(held) => {
                shard.insert(at, held);
                Fence::Lost
            }
            None => Fence::Lost,
        };
        std::future::ready(Ok(fence))
    }

    fn release(
        &self,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        std::future::ready(Ok(self.release_sync(token)))
    }

    fn renew(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        let fence = self.fenced(token, |held| {
            held.lease_until = Instant::now() + lease;
            false
        });
        std::future::ready(Ok(fence))
    }

    fn get(
        &self,
        key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let now = Instant::now();
        let record = if let Some(done) = self.completed(key, now) {
            Some(Record::Completed {
                fingerprint: done.fingerprint,
                outcome: done.outcome.clone(),
                expires_in: done.expires_at - now,
            })
        } else {
            let at = self.at(key);
            self.shard(at).get(at, key).map(|held| Record::InProgress {
                owner: held.owner,
                fence: held.fence,
                fingerprint: held.fingerprint,
                lease_left: held.lease_until.saturating_duration_since(now),
            })
        };
        std::future::ready(Ok(record))
    }

    fn wait(
        &self,
        key: &RecordKey,
        _attempt: u32,
        max: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        // Register for the wake-up under the shard lock, so a completion between the caller's
        // claim and this wait is never missed.
        let at = self.at(key);
        let notified = self.shard(at).get_mut(at, key).map(|held| {
            let woken = held.woken.get_or_insert_with(|| Arc::new(Notify::new()));
            let mut notified = Box::pin(Arc::clone(woken).notified_owned());
            notified.as_mut().enable();
            notified
        });
        async move {
            if let Some(notified) = notified {
                let _ = tokio::time::timeout(max, notified).await;
            }
            Ok(())
        }
    }

    fn release_now(&self, token: &ClaimToken) -> bool {
        let _ = self.release_sync(token);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OutcomeKind;

    async fn complete_now(store: &MemoryStore, key: &RecordKey, body: &[u8], ttl: Duration) {
        let owner = Owner::new();
        let request = ClaimRequest {
            key,
            fingerprint: Fingerprint::from_bytes([7; 32]),
            owner,
            lease: Duration::from_secs(30),
        };
        let Claim::Acquired { fence, .. } = store.claim_now(&request) else {
            panic!("expected to acquire {key:?}");
        };
        let token = ClaimToken::new(key.clone(), owner, fence);
        let outcome = Outcome::new(OutcomeKind::Ok, body.to_vec());
        assert_eq!(
            store.complete(&token, &outcome, ttl).await.unwrap(),
            Fence::Held
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_replay_index_sweeps_out_its_expired_records() {
        sweeps_out_expired_records(MemoryStore::new()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lazy_store_keeps_its_records_in_the_index_alone_and_sweeps_them() {
        let store = MemoryStore::builder().lazy_expiry().build();
        assert!(store.inner.done.is_none(), "no moka");
        sweeps_out_expired_records(store).await;
    }

    #[tokio::test]
    async fn a_bounded_store_is_bounded_even_if_asked_for_lazy_expiry() {
        let store = MemoryStore::builder()
            .lazy_expiry()
            .max_capacity(10)
            .build();
        assert!(store.inner.done.is_some() && store.inner.index.is_none());
    }

    async fn sweeps_out_expired_records(store: MemoryStore) {
        let index = store
            .inner
            .index
            .as_ref()
            .expect("an unbounded store has the index");
        let key = RecordKey::new("s", "k").unwrap();
        complete_now(&store, &key, b"1", Duration::from_millis(1)).await;
        assert!(
            index.get(store.at(&key), &key).is_some(),
            "written to the index with moka"
        );

        // Expired by tokio's clock: it reads as absent at once, and the key is new again.
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(store.completed(&key, Instant::now()).is_none());
        complete_now(&store, &key, b"2", Duration::from_secs(60)).await;
        let done = store.completed(&key, Instant::now()).expect("replayed");
        assert_eq!(&done.outcome.bytes()[..], b"2");

        // Many short-lived records, then enough live ones to make every shard sweep: the index
        // keeps the live ones and no more than twice as many entries as it has live records.
        for i in 0..2_000 {
            let key = RecordKey::new("s", format!("old-{i}")).unwrap();
            complete_now(&store, &key, b"x", Duration::from_millis(1)).await;
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        for i in 0..(SHARDS * MIN_SWEEP * 2) {
            let key = RecordKey::new("s", format!("new-{i}")).unwrap();
            complete_now(&store, &key, b"y", Duration::from_secs(60)).await;
        }
        let entries: usize = index.shards.iter().map(|s| read(s).records.len()).sum();
        let live = SHARDS * MIN_SWEEP * 2 + 1;
        assert!(
            entries < 2 * live + SHARDS * MIN_SWEEP,
            "{entries} entries, {live} live"
        );
        let old_left = index
            .shards
            .iter()
            .map(|s| {
                read(s)
                    .records
                    .keys()
                    .filter(|k| k.key().starts_with("old-"))
                    .count()
            })
            .sum::<usize>();
        assert!(
            old_left < 2_000,
            "expired records were swept: {old_left} left"
        );
        for i in (0..SHARDS * MIN_SWEEP * 2).step_by(97) {
            let key = RecordKey::new("s", format!("new-{i}")).unwrap();
            assert!(store.completed(&key, Instant::now()).is_some());
        }
        assert!(store.completed(&key, Instant::now()).is_some());
    }

    #[tokio::test]
    async fn a_claim_nobody_waits_for_allocates_no_notify() {
        let store = MemoryStore::new();
        let key = RecordKey::new("s", "k").unwrap();
        let request = ClaimRequest {
            key: &key,
            fingerprint: Fingerprint::from_bytes([7; 32]),
            owner: Owner::new(),
            lease: Duration::from_secs(30),
        };
        assert!(matches!(store.claim_now(&request), Claim::Acquired { .. }));
        let at = store.at(&key);
        assert!(store.shard(at).get(at, &key).unwrap().woken.is_none());
        let wait = store.wait(&key, 0, Duration::from_secs(1));
        assert!(store.shard(at).get(at, &key).unwrap().woken.is_some());
        drop(wait);
    }

    #[tokio::test]
    async fn a_bounded_store_reads_through_moka() {
        let store = MemoryStore::builder().max_capacity(10).build();
        assert!(store.inner.index.is_none());
        let key = RecordKey::new("s", "k").unwrap();
        complete_now(&store, &key, b"1", Duration::from_secs(60)).await;
        assert!(store.completed(&key, Instant::now()).is_some());
    }
}
