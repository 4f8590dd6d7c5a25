//! The runtime of one idempotent call: claim, run or replay or wait, then complete or release.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::__private::IdemResult;
use crate::error::{CodecError, Error};
use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;
use crate::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Store, backoff,
};
use crate::trace::event;

/// What a duplicate does while the first call with its key is still running
/// (`concurrent = "wait"` or `"reject"`).
///
/// ```
/// use idem_core::{Concurrency, Options};
/// let options = Options::new("payments::charge").concurrent(Concurrency::Reject);
/// assert_eq!(options.concurrent, Concurrency::Reject);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Wait (up to the function's `wait`) and return the first call's outcome.
    #[default]
    Wait,
    /// Fail at once with [`Error::InProgress`].
    Reject,
}

/// The settings of one idempotent function: what `#[idempotent(...)]` was given.
///
/// ```
/// use std::time::Duration;
/// use idem_core::{Concurrency, Options};
///
/// let options = Options::new("payments::charge").ttl(Duration::from_secs(3600));
/// assert_eq!(options.concurrent, Concurrency::Wait);
/// assert_eq!(options.lease, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Options {
    /// The namespace of the keys (the operation's identity).
    pub scope: &'static str,
    /// How long a completed outcome is replayed.
    pub ttl: Duration,
    /// How long a claim lives without renewal; renewed every third of it while the body runs.
    pub lease: Duration,
    /// The longest a duplicate waits for the first call.
    pub wait: Duration,
    /// What a duplicate does while the first call runs.
    pub concurrent: Concurrency,
}

impl Options {
    /// The defaults of `#[idempotent]`: ttl 24 h, lease 30 s, wait 30 s, duplicates wait.
    pub const fn new(scope: &'static str) -> Self {
        Options {
            scope,
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(30),
            concurrent: Concurrency::Wait,
        }
    }

    /// Sets the ttl.
    #[must_use]
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the lease.
    #[must_use]
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the wait.
    #[must_use]
    pub const fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets what duplicates do.
    #[must_use]
    pub const fn concurrent(mut self, concurrent: Concurrency) -> Self {
        self.concurrent = concurrent;
        self
    }
}

/// Which errors of a body are final outcomes, stored and replayed like successes.
///
/// [`NoReplay`] stores none; [`ReplayErr`] stores those a function picks (`replay_err = ...`).
///
/// ```
/// use idem_core::{ErrorPolicy, NoReplay, ReplayErr};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// enum PayError { Declined, Timeout }
///
/// let final_only = ReplayErr(|e: &PayError| *e == PayError::Declined);
/// assert!(final_only.encode(&PayError::Declined).is_some());
/// assert!(final_only.encode(&PayError::Timeout).is_none());
/// assert!(ErrorPolicy::<PayError>::encode(&NoReplay, &PayError::Declined).is_none());
/// ```
pub trait ErrorPolicy<E> {
    /// The encoded error if it is to be stored, `None` if the claim is to be released instead.
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, CodecError>>;

    /// Decodes a stored error outcome.
    fn decode(&self, bytes: &[u8]) -> Result<E, CodecError>;
}

/// No error is stored: an `Err` releases the claim and the next call runs the body again.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<E> ErrorPolicy<E> for NoReplay {
    fn encode(&self, _err: &E) -> Option<Result<Vec<u8>, CodecError>> {
        None
    }

    fn decode(&self, _bytes: &[u8]) -> Result<E, CodecError> {
        Err(CodecError::new(
            "a stored error outcome was found, but this function does not replay errors (no `replay_err`)",
        ))
    }
}

/// Errors for which the function returns `true` are stored and replayed (`replay_err = ...`).
pub struct ReplayErr<E>(pub fn(&E) -> bool);

impl<E: Serialize + DeserializeOwned> ErrorPolicy<E> for ReplayErr<E> {
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, CodecError>> {
        (self.0)(err).then(|| encode(err))
    }

    fn decode(&self, bytes: &[u8]) -> Result<E, CodecError> {
        decode(bytes)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    thread_local! {
        /// The encoding buffer of this thread, reused from call to call.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let failed = |err: serde_json::Error| {
        CodecError::new(format!(
            "cannot encode a `{}` for storage: {err}",
            std::any::type_name::<T>()
        ))
    };
    // An in-process store keeps the bytes for the whole TTL, so they are copied out at their
    // exact length: one allocation, where `to_vec` then `shrink_to_fit` made two.
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let encoded = serde_json::to_writer(&mut *buffer, value);
            let bytes = encoded.map(|()| buffer.to_vec());
            // A large outcome does not keep its buffer alive on this thread.
            if buffer.capacity() > 4096 {
                *buffer = Vec::new();
            }
            bytes.map_err(failed)
        }
        // A `Serialize` impl that encodes an outcome itself: no shared buffer for the inner one.
        Err(_) => serde_json::to_vec(value).map_err(failed).map(|mut bytes| {
            bytes.shrink_to_fit();
            bytes
        }),
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|err| {
        CodecError::new(format!(
            "the stored outcome is not a `{}`: {err}",
            std::any::type_name::<T>()
        ))
    })
}

/// How a replay turns a stored `Ok` outcome back into the function's value.
///
/// [`ByJson`] decodes the stored bytes on every replay; [`ByClone`] decodes them once per
/// record and clones the decoded value on later replays, where the store keeps a slot for it
/// (the in-process stores do). `#[idempotent]` picks [`ByClone`] for every `Ok` type that is
/// `Clone + Send + Sync + 'static`, and [`ByJson`] for the rest.
pub trait DecodeOk<T> {
    /// The value of a stored `Ok` outcome.
    ///
    /// # Errors
    ///
    /// The stored bytes are not a `T`.
    fn decode_ok(&self, outcome: &Outcome) -> Result<T, CodecError>;
}

/// Decodes a stored outcome on every replay (see [`DecodeOk`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByJson;

/// Decodes a stored outcome once per record, then clones it (see [`DecodeOk`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByClone;

impl<T: DeserializeOwned> DecodeOk<T> for ByJson {
    fn decode_ok(&self, outcome: &Outcome) -> Result<T, CodecError> {
        decode(outcome.bytes())
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> DecodeOk<T> for ByClone {
    fn decode_ok(&self, outcome: &Outcome) -> Result<T, CodecError> {
        let Some(memo) = outcome.memo() else {
            return decode(outcome.bytes());
        };
        if let Some(decoded) = memo.get() {
            // Another type under the same record (two functions sharing a scope) decodes as
            // itself, and fails as a `Codec` error if it must.
            return match decoded.downcast_ref::<T>() {
                Some(value) => Ok(value.clone()),
                None => decode(outcome.bytes()),
            };
        }
        let value: T = decode(outcome.bytes())?;
        // Two first replays may race: either value is the same decoded outcome.
        let _ = memo.set(Box::new(value.clone()));
        Ok(value)
    }
}

/// Runs one idempotent call: what `#[idempotent]` expands to, without the macro.
///
/// `key` is the idempotency key (`None`: the fingerprint's hex is the key), `fingerprint`
/// the hash of the arguments, `body` the function's body, not yet started.
///
/// # Errors
///
/// The body's own errors, or an [`Error`] converted into `E`: [`Error::InvalidKey`] for an
/// empty or over-long key, [`Error::Mismatch`], [`Error::InProgress`], [`Error::WaitTimeout`],
/// [`Error::Store`] when the claim cannot be made (the body does not run), [`Error::Codec`] when
/// a stored outcome cannot be decoded.
///
/// # Panics
///
/// A panic in the body propagates to the caller, after the claim is released.
///
/// # Examples
///
/// The equivalent of `#[idempotent(key = order_id, store = &store)]`:
///
/// ```
/// use idem_core::{run, Error, Fingerprint, MemoryStore, NoReplay, Options};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let order_id = "order-1";
/// let placed: Result<u64, Error> = run(
///     &store,
///     Options::new("shop::place_order"),
///     Some(order_id.to_string()),
///     Fingerprint::of(&order_id).map_err(Error::from),
///     NoReplay,
///     async { Ok(42) },
/// )
/// .await;
/// assert_eq!(placed.unwrap(), 42);
/// # }
/// ```
pub fn run<S, T, E, P, F>(
    store: &S,
    options: Options,
    key: Option<String>,
    fingerprint: Result<Fingerprint, Error>,
    policy: P,
    body: F,
) -> impl Future<Output = Result<T, E>>
where
    S: Store,
    T: Serialize + DeserializeOwned,
    E: From<Error>,
    P: ErrorPolicy<E>,
    F: Future<Output = Result<T, E>>,
{
    run_any(store, options, key, fingerprint, policy, ByJson, body)
}

/// [`run`], with replays decoded by `decoder` (see [`DecodeOk`]).
///
/// # Errors
///
/// As [`run`].
pub fn run_decoding<S, T, E, P, D, F>(
    store: &S,
    options: Options,
    key: Option<String>,
    fingerprint: Result<Fingerprint, Error>,
    policy: P,
    decoder: D,
    body: F,
) -> impl Future<Output = Result<T, E>>
where
    S: Store,
    T: Serialize + DeserializeOwned,
    E: From<Error>,
    P: ErrorPolicy<E>,
    D: DecodeOk<T>,
    F: Future<Output = Result<T, E>>,
{
    run_any(store, options, key, fingerprint, policy, decoder, body)
}

/// [`run_decoding`] for any result type `R` (what `#[idempotent]` declares): one future, with
/// no wrapper around the body's, so a call's future holds the body's future once.
pub(crate) async fn run_any<S, R, P, D, F>(
    store: &S,
    options: Options,
    key: Option<String>,
    fingerprint: Result<Fingerprint, Error>,
    policy: P,
    decoder: D,
    body: F,
) -> R
where
    S: Store,
    R: IdemResult,
    R::Ok: Serialize + DeserializeOwned,
    R::Err: From<Error>,
    P: ErrorPolicy<R::Err>,
    D: DecodeOk<R::Ok>,
    F: Future<Output = R>,
{
    let fail = |err: Error| R::from_result(Err(err.into()));
    let (key, fingerprint) = match record_key(&options, key, fingerprint) {
        Ok(parts) => parts,
        Err(err) => return fail(err),
    };
    let mut waited_since: Option<Instant> = None;
    let mut attempt = 0;
    loop {
        let owner = Owner::new();
        let request = ClaimRequest {
            key: &key,
            fingerprint,
            owner,
            lease: options.lease,
        };
        let claim = match store.claim(&request).await {
            Ok(claim) => claim,
            Err(err) => {
                event!(error, &key, error = %err, "claim failed; the body does not run");
                return fail(Error::Store(err));
            }
        };
        match claim {
            Claim::Acquired { fence, taken_over } => {
                if taken_over {
                    event!(info, &key, fence, "taken over an expired lease");
                } else {
                    event!(debug, &key, fence, "claimed");
                }
                let token = ClaimToken::new(key, owner, fence);
                // Boxed: a first call pays one allocation, and the future of every call (a
                // replay's too) is smaller by the size of the body's and the lease's futures,
                // which every spawn and every `.await` of it would copy.
                let body = async move { body.await.into_result() };
                return R::from_result(Box::pin(lead(store, token, &options, &policy, body)).await);
            }
            Claim::Completed(outcome) => {
                event!(debug, &key, "replayed");
                return R::from_result(replay(&outcome, &policy, &decoder));
            }
            Claim::Mismatch => {
                event!(debug, &key, "key reused with different arguments");
                return fail(Error::Mismatch);
            }
            Claim::Busy { retry_after } => {
                if options.concurrent == Concurrency::Reject {
                    event!(debug, &key, ?retry_after, "rejected: in progress");
                    return fail(Error::InProgress { retry_after });
                }
                let now = Instant::now();
                let deadline = *waited_since.get_or_insert(now) + options.wait;
                if now >= deadline {
                    event!(debug, &key, "gave up waiting");
                    return fail(Error::WaitTimeout);
                }
                event!(debug, &key, attempt, "waiting for the holder");
                // Waking a little after the lease ends lets the next claim take it over.
                let max = (deadline - now).min(retry_after + Duration::from_millis(1));
                // Boxed, like `lead`: a store's wait holds a timer, which only waiting needs.
                if let Err(err) = Box::pin(store.wait(&key, attempt, max)).await {
                    return fail(Error::Store(err));
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// The record a call claims, and its fingerprint: the key given, or the fingerprint's hex.
pub(crate) fn record_key(
    options: &Options,
    key: Option<String>,
    fingerprint: Result<Fingerprint, Error>,
) -> Result<(RecordKey, Fingerprint), Error> {
    let fingerprint = fingerprint?;
    let key = key.unwrap_or_else(|| fingerprint.to_hex());
    Ok((RecordKey::new(options.scope, key)?, fingerprint))
}

/// The outcome to store for a body's result: its `Ok` value, or an `Err` the policy keeps;
/// `None` when the claim is to be released instead.
pub(crate) fn outcome_of<T, E, P>(
    result: &Result<T, E>,
    policy: &P,
) -> Option<Result<Outcome, CodecError>>
where
    T: Serialize,
    P: ErrorPolicy<E>,
{
    match result {
        Ok(value) => Some(encode(value).map(|bytes| Outcome::new(OutcomeKind::Ok, bytes))),
        Err(err) => policy
            .encode(err)
            .map(|encoded| encoded.map(|bytes| Outcome::new(OutcomeKind::Err, bytes))),
    }
}

/// Decodes a stored outcome into what the function returns.
pub(crate) fn replay<T, E, P, D>(outcome: &Outcome, policy: &P, decoder: &D) -> Result<T, E>
where
    E: From<Error>,
    P: ErrorPolicy<E>,
    D: DecodeOk<T>,
{
    match outcome.kind() {
        OutcomeKind::Ok => decoder
            .decode_ok(outcome)
            .map_err(|err| Error::Codec(err).into()),
        OutcomeKind::Err => match policy.decode(outcome.bytes()) {
            Ok(err) => Err(err),
            Err(codec) => Err(Error::Codec(codec).into()),
        },
    }
}

/// Runs the body under the claim, renewing its lease, then stores the outcome or releases.
async fn lead<S, T, E, P, F>(
    store: &S,
    token: ClaimToken,
    options: &Options,
    policy: &P,
    body: F,
) -> Result<T, E>
where
    S: Store,
    T: Serialize,
    P: ErrorPolicy<E>,
    F: Future<Output = Result<T, E>>,
{
    let mut guard = Guard {
        store,
        token: Some(token),
        pending: None,
        ttl: options.ttl,
    };
    let token = guard.token.clone().expect("armed");
    let result = renewing(store, &token, options.lease, body).await;
    match outcome_of(&result, policy) {
        Some(Ok(outcome)) => {
            guard.pending = Some(outcome.clone());
            store_outcome(store, &token, &outcome, options).await;
        }
        Some(Err(codec)) => {
            event!(error, token.key(), error = %codec, "the outcome cannot be stored; releasing the key");
            release(store, &token).await;
        }
        None => release(store, &token).await,
    }
    guard.token = None;
    result
}

/// Polls the body, and renews the lease every third of it for as long as the body runs.
async fn renewing<S: Store, F: Future>(
    store: &S,
    token: &ClaimToken,
    lease: Duration,
    body: F,
) -> F::Output {
    let period = (lease / 3).max(Duration::from_millis(1));
    let renew = async {
        loop {
            tokio::time::sleep(period).await;
            match store.renew(token, lease).await {
                Ok(Fence::Held) => event!(trace, token.key(), "lease renewed"),
                Ok(Fence::Lost) => {
                    event!(
                        warn,
                        token.key(),
                        fence = token.fence(),
                        "fenced: the lease was taken over while the body ran"
                    );
                    return;
                }
                Err(err) => event!(error, token.key(), error = %err, "lease renewal failed"),
            }
        }
    };
    let mut body = pin!(body);
    let mut renew = pin!(renew);
    let mut renewing = true;
    poll_fn(|cx| {
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        if renewing && renew.as_mut().poll(cx).is_ready() {
            renewing = false;
        }
        Poll::Pending
    })
    .await
}

/// Stores the outcome, retrying store failures for up to half a lease.
async fn store_outcome<S: Store>(
    store: &S,
    token: &ClaimToken,
    outcome: &Outcome,
    options: &Options,
) {
    let give_up = Instant::now() + options.lease / 2;
    let mut attempt = 0;
    loop {
        match store.complete(token, outcome, options.ttl).await {
            Ok(Fence::Held) => {
                event!(debug, token.key(), "completed");
                return;
            }
            Ok(Fence::Lost) => {
                event!(
                    warn,
                    token.key(),
                    fence = token.fence(),
                    "fenced: completion refused, the claim was taken over"
                );
                return;
            }
            Err(err) => {
                let now = Instant::now();
                if now >= give_up {
                    event!(error, token.key(), error = %err, "the outcome could not be stored; the caller still gets it");
                    return;
                }
                event!(error, token.key(), error = %err, attempt, "storing the outcome failed; retrying");
                tokio::time::sleep(backoff(attempt, give_up - now)).await;
                attempt += 1;
            }
        }
    }
}

async fn release<S: Store>(store: &S, token: &ClaimToken) {
    match store.release(token).await {
        Ok(Fence::Held) => event!(debug, token.key(), "released"),
        Ok(Fence::Lost) => event!(
            warn,
            token.key(),
            fence = token.fence(),
            "fenced: release refused, the claim was taken over"
        ),
        Err(err) => {
            event!(error, token.key(), error = %err, "release failed; the key frees when its lease ends")
        }
    }
}

/// Ends the claim of a call that did not finish normally: the body panicked, or its future was
/// dropped. A body that finished but whose outcome was still being stored is stored in the
/// background; otherwise the claim is released so the next call runs the body.
struct Guard<'a, S: Store> {
    store: &'a S,
    token: Option<ClaimToken>,
    pending: Option<Outcome>,
    ttl: Duration,
}

impl<S: Store> Drop for Guard<'_, S> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        if let Some(outcome) = self.pending.take() {
            let ttl = self.ttl;
            spawn_detached(self.store, &token, move |store, token| async move {
                if let Ok(Fence::Held) = store.complete(&token, &outcome, ttl).await {
                    event!(debug, token.key(), "completed in the background");
                }
            });
            return;
        }
        event!(
            debug,
            token.key(),
            "the body panicked or was cancelled; releasing"
        );
        if !self.store.release_now(&token) {
            spawn_detached(self.store, &token, |store, token| async move {
                release(&store, &token).await;
            });
        }
    }
}

fn spawn_detached<S, F, Fut>(store: &S, token: &ClaimToken, work: F)
where
    S: Store,
    F: FnOnce(S, ClaimToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(work(store.clone(), token.clone()));
        }
        Err(_) => {
            event!(
                warn,
                token.key(),
                "no tokio runtime to finish the claim; it frees when its lease ends"
            );
        }
    }
}
