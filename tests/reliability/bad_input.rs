//! Bad input never panics and never loses a stored record (SPEC §2.10; issue 7, item 5):
//! property tests over keys (empty, unicode, control characters, up to 64 KB), payloads, and
//! the bytes a store holds under a key. MemoryStore always; Redis too when `IDEM_REDIS_URL` is
//! set (fewer cases: each is a few round trips).
//!
//! Replay a failure with the seed proptest prints (`PROPTEST_...` environment variables) or
//! raise the number of cases with `PROPTEST_CASES=10000`.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record,
};
use idem_core::{
    Concurrency, Error, Fingerprint, MAX_KEY_LEN, MemoryStore, NoReplay, Options, RecordKey, Store,
    run,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const SCOPE: &str = "reliability::bad_input";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .unwrap()
}

/// Keys a careless or hostile caller might send.
fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        // Any unicode scalar values, control characters and NUL included.
        prop::collection::vec(any::<char>(), 1..40).prop_map(|c| c.into_iter().collect()),
        prop::collection::vec(prop::char::range('\0', '\u{1f}'), 1..40)
            .prop_map(|c| c.into_iter().collect()),
        "[\\p{L}\\p{M}\\p{N}\\p{P}\\p{S}\\p{Z}]{1,200}",
        // Around the limit, and far past it (to 64 KB), in one- to four-byte characters.
        (
            MAX_KEY_LEN - 8..MAX_KEY_LEN + 8,
            prop::sample::select(vec!["a", "é", "中", "🦀"])
        )
            .prop_map(|(len, c)| c.repeat(len / c.len())),
        (1usize..=65_536).prop_map(|len| "k".repeat(len)),
    ]
}

/// What an operation returns: strings, bytes, numbers, maps and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payload {
    text: String,
    bytes: Vec<u8>,
    number: i64,
    unsigned: u64,
    float: f64,
    maybe: Option<Box<Payload>>,
    map: BTreeMap<String, u32>,
}

fn payloads() -> impl Strategy<Value = Payload> {
    let leaf = (
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<i64>(),
        any::<u64>(),
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        prop::collection::btree_map(any::<String>(), any::<u32>(), 0..4),
    )
        .prop_map(|(text, bytes, number, unsigned, float, map)| Payload {
            text,
            bytes,
            number,
            unsigned,
            float,
            maybe: None,
            map,
        });
    leaf.prop_recursive(2, 4, 1, |inner| {
        (inner.clone(), inner).prop_map(|(mut outer, child)| {
            outer.maybe = Some(Box::new(child));
            outer
        })
    })
}

/// One call through the runtime, counting executions of the body.
async fn call<S: Store, T>(store: &S, key: &str, value: T, runs: &AtomicUsize) -> Result<T, Error>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    run(
        store,
        Options::new(SCOPE)
            .ttl(Duration::from_secs(600))
            .wait(Duration::from_millis(200))
            .concurrent(Concurrency::Reject),
        Some(key.to_string()),
        Fingerprint::of(key).map_err(Error::from),
        NoReplay,
        async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        },
    )
    .await
}

/// A key is either refused before anything runs, or works like any other: it runs once and is
/// replayed, and the store holds its outcome under exactly that key.
async fn check_key<S: Store>(store: &S, key: &str) -> Result<(), TestCaseError> {
    let runs = AtomicUsize::new(0);
    let first = call(store, key, 7u64, &runs).await;
    let second = call(store, key, 8u64, &runs).await;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        prop_assert!(matches!(first, Err(Error::InvalidKey(_))), "{first:?}");
        prop_assert!(matches!(second, Err(Error::InvalidKey(_))), "{second:?}");
        prop_assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "nothing ran for a refused key"
        );
        return Ok(());
    }
    prop_assert_eq!(first.unwrap(), 7);
    prop_assert_eq!(second.unwrap(), 7, "the retry replays the first outcome");
    prop_assert_eq!(runs.load(Ordering::SeqCst), 1);
    let record = store
        .get(&RecordKey::new(SCOPE, key.to_string()).unwrap())
        .await
        .unwrap();
    match record {
        Some(Record::Completed { outcome, .. }) => prop_assert_eq!(&outcome.bytes()[..], b"7"),
        other => prop_assert!(false, "the store holds {other:?}"),
    }
    Ok(())
}

/// Whatever bytes are stored as a completed outcome, a call decodes them or reports
/// `Error::Codec`; it never panics, never runs the body, and leaves the record alone.
async fn check_stored_bytes<S: Store>(
    store: &S,
    key: &str,
    kind: OutcomeKind,
    bytes: Vec<u8>,
) -> Result<(), TestCaseError> {
    let record_key = RecordKey::new(SCOPE, key.to_string()).unwrap();
    let owner = Owner::new();
    let claim = store
        .claim(&ClaimRequest {
            key: &record_key,
            fingerprint: Fingerprint::of(key).unwrap(),
            owner,
            lease: Duration::from_secs(10),
        })
        .await
        .unwrap();
    let Claim::Acquired { fence, .. } = claim else {
        return Err(TestCaseError::fail(format!("claim: {claim:?}")));
    };
    let token = ClaimToken::new(record_key.clone(), owner, fence);
    let stored = Outcome::new(kind, bytes.clone());
    let done = store
        .complete(&token, &stored, Duration::from_secs(600))
        .await
        .unwrap();
    prop_assert_eq!(done, Fence::Held);

    let runs = AtomicUsize::new(0);
    let got = call(store, key, Payload::empty(), &runs).await;
    let decoded = serde_json::from_slice::<Payload>(&bytes);
    match (&got, kind, decoded) {
        (Ok(value), OutcomeKind::Ok, Ok(expected)) => prop_assert_eq!(value, &expected),
        (Err(Error::Codec(_)), OutcomeKind::Ok, Err(_))
        | (Err(Error::Codec(_)), OutcomeKind::Err, _) => {}
        _ => prop_assert!(false, "stored {kind:?} {bytes:?} gave {got:?}"),
    }
    prop_assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a stored record is replayed, not run over"
    );
    match store.get(&record_key).await.unwrap() {
        Some(Record::Completed { outcome, .. }) => prop_assert_eq!(outcome, stored),
        other => prop_assert!(false, "the record changed: {other:?}"),
    }
    Ok(())
}

impl Payload {
    fn empty() -> Self {
        Payload {
            text: String::new(),
            bytes: Vec::new(),
            number: 0,
            unsigned: 0,
            float: 0.0,
            maybe: None,
            map: BTreeMap::new(),
        }
    }
}

/// Bytes that are sometimes JSON (sometimes even a `Payload`), mostly not.
fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        payloads().prop_map(|p| serde_json::to_vec(&p).unwrap()),
        // A valid payload cut short or with a byte flipped.
        (payloads(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(p, at, byte)| {
            let mut bytes = serde_json::to_vec(&p).unwrap();
            let i = at.index(bytes.len());
            if byte % 2 == 0 {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
            bytes
        }),
        Just(b"null".to_vec()),
        Just(b"7".to_vec()),
    ]
}

fn kinds() -> impl Strategy<Value = OutcomeKind> {
    prop_oneof![3 => Just(OutcomeKind::Ok), 1 => Just(OutcomeKind::Err)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_any_key_is_refused_or_runs_once_and_replays(key in keys()) {
        runtime().block_on(check_key(&MemoryStore::new(), &key))?;
    }

    #[test]
    fn memory_any_payload_replays_equal(payload in payloads(), key in "[a-z]{1,12}") {
        runtime().block_on(async {
            let store = MemoryStore::new();
            let runs = AtomicUsize::new(0);
            let first = call(&store, &key, payload.clone(), &runs).await.unwrap();
            let again = call(&store, &key, Payload::empty(), &runs).await.unwrap();
            prop_assert_eq!(&first, &payload);
            prop_assert_eq!(&again, &payload, "the replay equals what the body returned");
            prop_assert_eq!(runs.load(Ordering::SeqCst), 1);
            Ok(())
        })?;
    }

    #[test]
    fn memory_random_stored_bytes_decode_or_give_codec_errors(
        bytes in stored_bytes(),
        kind in kinds(),
        key in "[a-z]{1,12}",
    ) {
        runtime().block_on(check_stored_bytes(&MemoryStore::new(), &key, kind, bytes))?;
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use idem_core::redis::RedisStore;

    fn config() -> ProptestConfig {
        ProptestConfig::with_cases(48)
    }

    /// A store under a prefix of its own, or `None` (skipped) without `IDEM_REDIS_URL`.
    async fn store(url: &str, prefix: &str) -> RedisStore {
        RedisStore::builder(url)
            .prefix(prefix.to_string())
            .build()
            .await
            .unwrap_or_else(|err| panic!("IDEM_REDIS_URL is set but Redis does not answer: {err}"))
    }

    /// Runs `cases` against a Redis store under a fresh prefix, then deletes what they wrote.
    fn with_redis<F>(test: &str, cases: F)
    where
        F: FnOnce(&tokio::runtime::Runtime, &RedisStore, &str, &str),
    {
        let Some(url) = idem_test_support::redis_url() else {
            return;
        };
        let rt = runtime();
        let prefix = format!("{}:", support::unique(test));
        let store = rt.block_on(store(&url, &prefix));
        cases(&rt, &store, &url, &prefix);
        rt.block_on(support::delete_prefix(&url, &prefix));
    }

    #[test]
    fn redis_any_key_is_refused_or_runs_once_and_replays() {
        with_redis("keys", |rt, _, url, base| {
            // Cases repeat keys (and shrinking reruns them): each case gets a prefix of its own.
            let n = AtomicUsize::new(0);
            proptest!(config(), |(key in keys())| {
                let prefix = format!("{}{}:", base, n.fetch_add(1, Ordering::SeqCst));
                rt.block_on(async { check_key(&store(url, &prefix).await, &key).await })?;
            });
        });
    }

    #[test]
    fn redis_random_stored_bytes_decode_or_give_codec_errors() {
        with_redis("bytes", |rt, store, _, _| {
            let n = AtomicUsize::new(0);
            proptest!(config(), |(bytes in stored_bytes(), kind in kinds())| {
                let key = format!("bytes-{}", n.fetch_add(1, Ordering::SeqCst));
                rt.block_on(check_stored_bytes(store, &key, kind, bytes))?;
            });
        });
    }

    /// Random hash fields written straight into Redis under a record's name: a call gets a typed
    /// error (or, when the fields happen to make a valid record, what that record says), never
    /// a panic; and a record it cannot read is left exactly as it was.
    #[test]
    fn redis_random_record_fields_give_typed_errors_and_are_left_alone() {
        with_redis("fields", |rt, store, url, _| {
            let n = AtomicUsize::new(0);
            let value = prop_oneof![
                prop::collection::vec(any::<u8>(), 0..24),
                prop::sample::select(vec![
                    b"p".to_vec(),
                    b"c".to_vec(),
                    b"o".to_vec(),
                    b"e".to_vec(),
                    b"1".to_vec(),
                    b"-1".to_vec(),
                    b"99999999999999999999999".to_vec(),
                    b"7".to_vec(),
                    Vec::new(),
                ]),
            ];
            let fields = prop::collection::btree_map(
                prop::sample::select(vec!["s", "f", "p", "k", "v", "l", "o", "x"]),
                value,
                0..7,
            );
            proptest!(config(), |(mut fields in fields, matching in any::<bool>())| {
                let key = format!("fields-{}", n.fetch_add(1, Ordering::SeqCst));
                if matching {
                    let fp = Fingerprint::of(key.as_str()).unwrap().to_hex();
                    fields.insert("p", fp.into_bytes());
                }
                rt.block_on(async {
                    let record_key = RecordKey::new(SCOPE, key.clone()).unwrap();
                    let redis_key = store.redis_key(&record_key);
                    let mut raw = redis::Client::open(url)
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap();
                    if !fields.is_empty() {
                        let _: () = redis::cmd("HSET")
                            .arg(&redis_key)
                            .arg(fields.iter().map(|(f, v)| (*f, v.clone())).collect::<Vec<_>>())
                            .query_async(&mut raw)
                            .await
                            .unwrap();
                        let _: () = redis::cmd("PEXPIRE")
                            .arg(&redis_key)
                            .arg(600_000)
                            .query_async(&mut raw)
                            .await
                            .unwrap();
                    }
                    let runs = AtomicUsize::new(0);
                    let got = call(store, &key, 5u64, &runs).await;
                    let ran = runs.load(Ordering::SeqCst);
                    match &got {
                        Ok(_) => {}
                        Err(Error::Store(_)) | Err(Error::Codec(_)) | Err(Error::Mismatch)
                        | Err(Error::InProgress { .. }) => {
                            prop_assert_eq!(ran, 0, "{:?} after running the body", got);
                        }
                        Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                    }
                    if matches!(got, Err(Error::Store(_)) | Err(Error::Codec(_)) | Err(Error::Mismatch)) {
                        let left: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
                            .arg(&redis_key)
                            .query_async(&mut raw)
                            .await
                            .unwrap();
                        let written: BTreeMap<String, Vec<u8>> =
                            fields.iter().map(|(f, v)| (f.to_string(), v.clone())).collect();
                        prop_assert_eq!(left, written, "a record idem cannot use is left alone");
                    }
                    Ok(())
                })?;
            });
        });
    }
}

/// JSON has no NaN or infinity: serde_json writes them as `null`. Pinned here so a change is a
/// decision: the first caller gets the value, a retry gets `Error::Codec` (the body does not run
/// a second time: a retry of a payment is never a second charge), and the record is left alone.
#[test]
fn a_non_finite_float_outcome_replays_as_a_codec_error_not_a_second_run() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        let runs = AtomicUsize::new(0);
        let first = call(&store, "nan", f64::NAN, &runs).await.unwrap();
        assert!(first.is_nan(), "the first caller gets the body's value");
        let retry = call(&store, "nan", 1.0f64, &runs).await;
        assert!(matches!(retry, Err(Error::Codec(_))), "{retry:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
        let record = store
            .get(&RecordKey::new(SCOPE, "nan").unwrap())
            .await
            .unwrap();
        match record {
            Some(Record::Completed { outcome, .. }) => assert_eq!(&outcome.bytes()[..], b"null"),
            other => panic!("the store holds {other:?}"),
        }
    });
}
