//! RedisStore against real Redis servers.
//!
//! - `IDEM_REDIS_URL` (e.g. `redis://127.0.0.1:6379`): a shared server for the conformance suite
//!   and the multi-process test. When it is unset, every test here prints
//!   `skipped: IDEM_REDIS_URL is not set` and returns; when it is set and the server does not
//!   answer, they fail. Tests that must count commands or stop the server start their own
//!   `redis-server` (from `PATH`) on a spare port instead, and kill it by pid at the end.
//! - `IDEM_REDIS_CLUSTER_URLS` (comma-separated seed nodes, see `.ci/redis-cluster.sh`): a
//!   Redis Cluster for the conformance suite.
#![cfg(feature = "redis")]

#[path = "redis/support.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem_core::redis::{Connect, RedisStore};
use idem_core::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record,
};
use idem_core::{Error, Fingerprint, NoReplay, Options, RecordKey, Store, run};

use idem_test_support::{PrivateRedis, redis_url};
use support::{Stats, unique};

async fn shared_store(test: &str) -> Option<(RedisStore, String)> {
    let url = redis_url()?;
    let prefix = unique(test);
    let store = RedisStore::builder(url.as_str())
        .prefix(prefix.clone())
        .build()
        .await
        .unwrap_or_else(|err| {
            panic!("IDEM_REDIS_URL={url} is set but Redis does not answer: {err}")
        });
    Some((store, prefix))
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

fn options(scope: &'static str) -> Options {
    Options::new(scope).ttl(Duration::from_secs(60))
}

/// Runs `body` through `idem_core::run` with `key`, counting executions in `runs`.
async fn call(
    store: &RedisStore,
    options: Options,
    key: &str,
    runs: &Arc<AtomicUsize>,
    value: u64,
) -> Result<u64, Error> {
    let runs = runs.clone();
    run(
        store,
        options,
        Some(key.to_string()),
        Fingerprint::of(&key).map_err(Error::from),
        NoReplay,
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let Some((store, _)) = shared_store("conformance").await else {
        return;
    };
    idem_core::testing::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_with_a_local_tier_passes_the_conformance_suite() {
    let Some(url) = redis_url() else { return };
    let store = RedisStore::builder(url.as_str())
        .prefix(unique("conformance-local"))
        .local_cache(1_000)
        .build()
        .await
        .expect("IDEM_REDIS_URL is set but Redis does not answer");
    idem_core::testing::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_conformance_suite() {
    let nodes = match std::env::var("IDEM_REDIS_CLUSTER_URLS") {
        Ok(nodes) if !nodes.trim().is_empty() => nodes,
        _ => {
            println!("skipped: IDEM_REDIS_CLUSTER_URLS is not set");
            return;
        }
    };
    let nodes: Vec<&str> = nodes.split(',').map(str::trim).collect();
    let store = RedisStore::builder(Connect::cluster(nodes.clone()))
        .prefix(unique("cluster"))
        .build()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "IDEM_REDIS_CLUSTER_URLS={nodes:?} is set but the cluster does not answer: {err}"
            )
        });
    idem_core::testing::conformance(store.clone()).await;

    // Records of many keys spread over the cluster's slots, each answered by its own node.
    let runs = Arc::new(AtomicUsize::new(0));
    for i in 0..30 {
        let key = format!("spread-{i}");
        assert_eq!(
            call(&store, options("cluster::spread"), &key, &runs, i)
                .await
                .unwrap(),
            i
        );
        assert_eq!(
            call(&store, options("cluster::spread"), &key, &runs, 99)
                .await
                .unwrap(),
            i
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 30, "each body ran once");
}

/// A replay is one round trip, a first call two: counted by the server, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_are_one_for_a_replay_and_two_for_a_first_call() {
    if redis_url().is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let store = RedisStore::builder(server.url().as_str())
        .build()
        .await
        .expect("private redis");
    let mut stats = Stats::of(&server).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // Load the scripts (a fresh server answers NOSCRIPT once per script).
    call(&store, options("rt::warm"), "warm", &runs, 0)
        .await
        .unwrap();
    let forged = ClaimToken::new(RecordKey::new("rt::warm", "none").unwrap(), Owner::new(), 1);
    let renewed = store.renew(&forged, Duration::from_secs(1)).await;
    assert_eq!(renewed.unwrap(), Fence::Lost);

    let before = stats.read().await;
    assert_eq!(
        call(&store, options("rt::pay"), "p-1", &runs, 7)
            .await
            .unwrap(),
        7
    );
    let first = stats.read().await;
    assert_eq!(
        call(&store, options("rt::pay"), "p-1", &runs, 8)
            .await
            .unwrap(),
        7
    );
    let replay = stats.read().await;

    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "warm-up and first call ran; the replay did not"
    );
    assert_eq!(
        client_commands(&before, &first),
        HashMap::from([("evalsha".to_string(), 2)]),
        "a first call: claim + complete"
    );
    assert_eq!(
        client_commands(&first, &replay),
        HashMap::from([("evalsha".to_string(), 1)]),
        "a replay: the claim returns the outcome"
    );

    // A body longer than a third of its lease adds one renewal per third: 1.2 s under a
    // 1.5 s lease is renewed at 0.5 s and 1 s.
    let slow = run(
        &store,
        options("rt::slow").lease(Duration::from_millis(1500)),
        Some("s-1".to_string()),
        Fingerprint::of("s-1").map_err(Error::from),
        NoReplay,
        async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Ok::<u64, Error>(9)
        },
    )
    .await;
    assert_eq!(slow.unwrap(), 9);
    let renewed = stats.read().await;
    assert_eq!(
        client_commands(&replay, &renewed),
        HashMap::from([("evalsha".to_string(), 4)]),
        "claim, two renewals, complete"
    );
}

/// Commands sent by clients between two `INFO commandstats` readings: everything but `info`
/// and the commands only the scripts run inside Redis.
fn client_commands(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
) -> HashMap<String, u64> {
    const INSIDE_SCRIPTS: [&str; 7] = ["time", "hmget", "hset", "hdel", "del", "pexpire", "pttl"];
    after
        .iter()
        .filter(|(name, _)| *name != "info" && !INSIDE_SCRIPTS.contains(&name.as_str()))
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tier_replays_without_a_round_trip_and_never_past_the_ttl() {
    if redis_url().is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let local = RedisStore::builder(server.url().as_str())
        .local_cache(100)
        .build()
        .await
        .expect("private redis");
    let remote_only = RedisStore::builder(server.url().as_str())
        .build()
        .await
        .expect("private redis");
    let mut stats = Stats::of(&server).await;
    let runs = Arc::new(AtomicUsize::new(0));
    call(&local, options("lt::warm"), "warm", &runs, 0)
        .await
        .unwrap();

    let short = options("lt::pay").ttl(Duration::from_millis(400));
    let before = stats.read().await;
    assert_eq!(call(&local, short, "p-1", &runs, 1).await.unwrap(), 1);
    let first = stats.read().await;
    for _ in 0..5 {
        assert_eq!(call(&local, short, "p-1", &runs, 2).await.unwrap(), 1);
    }
    let hot = stats.read().await;
    assert_eq!(call(&remote_only, short, "p-1", &runs, 3).await.unwrap(), 1);
    let other = stats.read().await;

    assert_eq!(
        client_commands(&before, &first),
        HashMap::from([("evalsha".into(), 2)])
    );
    assert_eq!(
        client_commands(&first, &hot),
        HashMap::new(),
        "hot replays stay in process"
    );
    assert_eq!(
        client_commands(&hot, &other),
        HashMap::from([("evalsha".into(), 1)]),
        "another process (no local tier) replays from Redis"
    );

    // Past the ttl the key is new again, locally too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(call(&local, short, "p-1", &runs, 4).await.unwrap(), 4);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "warm-up, first call, and the call after the ttl"
    );

    // A mismatch is answered locally too, and the stored outcome stays.
    let mismatched = run(
        &local,
        short,
        Some("p-1".to_string()),
        Ok(fp(9)),
        NoReplay,
        async { Ok::<u64, Error>(5) },
    )
    .await;
    assert!(matches!(mismatched, Err(Error::Mismatch)), "{mismatched:?}");
    assert_eq!(call(&remote_only, short, "p-1", &runs, 6).await.unwrap(), 4);
}

/// Duplicates waiting in one process share one poll: the round trips do not grow with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_in_one_process_share_one_poll() {
    if redis_url().is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let store = RedisStore::builder(server.url().as_str())
        .build()
        .await
        .expect("private redis");
    let mut stats = Stats::of(&server).await;
    let runs = Arc::new(AtomicUsize::new(0));
    call(&store, options("wait::warm"), "warm", &runs, 0)
        .await
        .unwrap();

    let before = stats.read().await;
    let holder = {
        let (store, runs) = (store.clone(), runs.clone());
        tokio::spawn(async move {
            run(
                &store,
                options("wait::slow"),
                Some("k".to_string()),
                Fingerprint::of("k").map_err(Error::from),
                NoReplay,
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    Ok::<u64, Error>(11)
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiters: Vec<_> = (0..20)
        .map(|i| {
            let (store, runs) = (store.clone(), runs.clone());
            tokio::spawn(
                async move { call(&store, options("wait::slow"), "k", &runs, 100 + i).await },
            )
        })
        .collect();
    assert_eq!(holder.await.unwrap().unwrap(), 11);
    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            11,
            "every duplicate gets the first outcome"
        );
    }
    let after = stats.read().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "warm-up and one body for 21 calls"
    );
    let evalsha = client_commands(&before, &after)
        .get("evalsha")
        .copied()
        .unwrap_or(0);
    // Holder: claim + complete. Waiters: one claim each (busy). One shared poll: about ten reads
    // in 1.2 s of backoff. Polling per waiter would be about 200.
    assert!(
        (22..=40).contains(&evalsha),
        "{evalsha} round trips for 21 calls of which 20 waited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_late_completion_is_fenced() {
    let Some((store, _)) = shared_store("takeover").await else {
        return;
    };
    let key = RecordKey::new("takeover::pay", "p-1").unwrap();
    let fingerprint = Fingerprint::of("p-1").unwrap();
    // A holder that claims and then stalls (a crashed or paused process): it never renews.
    let stale_owner = Owner::new();
    let claim = store
        .claim(&ClaimRequest {
            key: &key,
            fingerprint,
            owner: stale_owner,
            lease: Duration::from_millis(300),
        })
        .await
        .unwrap();
    let Claim::Acquired {
        fence: stale_fence, ..
    } = claim
    else {
        panic!("expected Acquired, got {claim:?}");
    };
    let stale = ClaimToken::new(key.clone(), stale_owner, stale_fence);

    // While its lease lives, a caller that rejects duplicates is told to come back later.
    let runs = Arc::new(AtomicUsize::new(0));
    let reject = options("takeover::pay").concurrent(idem_core::Concurrency::Reject);
    let busy = call(&store, reject, "p-1", &runs, 1).await;
    assert!(matches!(busy, Err(Error::InProgress { .. })), "{busy:?}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        call(&store, options("takeover::pay"), "p-1", &runs, 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the new holder ran the body once"
    );

    let late = Outcome::new(OutcomeKind::Ok, b"99".to_vec());
    let fenced = store
        .complete(&stale, &late, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        fenced,
        Fence::Lost,
        "the stale holder's completion is refused"
    );
    assert_eq!(store.release(&stale).await.unwrap(), Fence::Lost);
    match store.get(&key).await.unwrap() {
        Some(Record::Completed { outcome, .. }) => assert_eq!(&outcome.bytes()[..], b"2"),
        other => panic!("expected the new holder's outcome, got {other:?}"),
    }
    assert_eq!(
        call(&store, options("takeover::pay"), "p-1", &runs, 3)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_a_store_error_and_is_left_alone() {
    let Some((store, _)) = shared_store("corrupt").await else {
        return;
    };
    let url = redis_url().unwrap();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    // The fingerprint `call` uses for the key "bad-kind", so the record is not a mere mismatch.
    let matching = Fingerprint::of("bad-kind").unwrap().to_hex();
    // (key, the hash fields written under it)
    type Fields<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: [(&str, Fields<'_>); 4] = [
        ("bad-state", vec![("s", b"zz"), ("f", b"1")]),
        (
            "bad-fence",
            vec![("s", b"p"), ("f", b"one"), ("p", b"x"), ("l", b"1")],
        ),
        (
            "bad-kind",
            vec![
                ("s", b"c"),
                ("f", b"1"),
                ("p", matching.as_bytes()),
                ("k", b"?"),
                ("v", b"1"),
            ],
        ),
        ("no-state", vec![("f", b"1"), ("p", b"x")]),
    ];
    for (name, fields) in &cases {
        let key = RecordKey::new("corrupt::op", *name).unwrap();
        let redis_key = store.redis_key(&key);
        let _: () = redis::cmd("HSET")
            .arg(&redis_key)
            .arg(fields.clone())
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("PEXPIRE")
            .arg(&redis_key)
            .arg(60_000)
            .query_async(&mut raw)
            .await
            .unwrap();
        let got = call(&store, options("corrupt::op"), name, &runs, 1).await;
        assert!(matches!(got, Err(Error::Store(_))), "{name}: {got:?}");
        let left: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&redis_key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            left.len(),
            fields.len(),
            "{name}: the record is left as it was"
        );
    }
    // A key of another type under the record's name.
    let key = RecordKey::new("corrupt::op", "a-string").unwrap();
    let _: () = redis::cmd("SET")
        .arg(store.redis_key(&key))
        .arg("hello")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let got = call(&store, options("corrupt::op"), "a-string", &runs, 1).await;
    assert!(matches!(got, Err(Error::Store(_))), "{got:?}");
    assert!(store.get(&key).await.is_err());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no body ran without a claim"
    );
}

/// Redis stopped mid-run: calls fail with `Error::Store` and run nothing; once it is back the
/// same store works again without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_closed_and_the_store_recovers() {
    if redis_url().is_none() {
        return;
    }
    let mut server = PrivateRedis::start();
    let store = RedisStore::builder(server.url().as_str())
        .build()
        .await
        .expect("private redis");
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        call(&store, options("down::op"), "before", &runs, 1)
            .await
            .unwrap(),
        1
    );

    server.kill();
    for i in 0..3 {
        let got = call(&store, options("down::op"), "during", &runs, 2).await;
        assert!(
            matches!(got, Err(Error::Store(_))),
            "call {i} while down: {got:?}"
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "no body ran while Redis was down"
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let value = loop {
        match call(&store, options("down::op"), "during", &runs, 3).await {
            Ok(value) => break value,
            Err(Error::Store(err)) if Instant::now() < deadline => {
                println!("not yet back: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the store did not recover: {err}"),
        }
    };
    assert_eq!(value, 3);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the body ran once after recovery"
    );
    assert_eq!(
        call(&store, options("down::op"), "during", &runs, 4)
            .await
            .unwrap(),
        3
    );
}

const WORKER_ENV: &str = "IDEM_REDIS_TEST_WORKER";
const PROCESSES: usize = 4;
const KEYS: usize = 12;
const DUPLICATES: usize = 3;

/// Several OS processes (this test binary, run again as workers) call the same keys at once:
/// each body runs exactly once per key, and every caller everywhere gets its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_hammering_the_same_keys_run_each_body_once() {
    let Some(url) = redis_url() else { return };
    let prefix = unique("processes");
    let exe = std::env::current_exe().unwrap();
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "worker_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_ENV, &prefix)
                .env("IDEM_REDIS_URL", &url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn a worker process")
        })
        .collect();
    let mut results: HashMap<usize, Vec<String>> = HashMap::new();
    for worker in workers {
        let output = worker.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "a worker failed:\n{stdout}");
        // The test harness may print on the same line before a worker's first result.
        for line in stdout
            .lines()
            .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        {
            let (key, value) = line.split_once(' ').unwrap();
            results
                .entry(key.parse().unwrap())
                .or_default()
                .push(value.to_string());
        }
    }
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in 0..KEYS {
        // Read and remove the counter (it has no ttl) in one step.
        let ran: Option<u64> = redis::cmd("GETDEL")
            .arg(format!("{prefix}runs:{key}"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            ran,
            Some(1),
            "key {key}: the body ran {ran:?} times across {PROCESSES} processes"
        );
        let got = &results[&key];
        assert_eq!(
            got.len(),
            PROCESSES * DUPLICATES,
            "key {key}: every caller answered"
        );
        assert!(
            got.iter().all(|v| *v == got[0]),
            "key {key}: callers got {got:?}"
        );
    }
}

/// The worker side of the test above; does nothing when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process() {
    let Ok(prefix) = std::env::var(WORKER_ENV) else {
        return;
    };
    let url = std::env::var("IDEM_REDIS_URL").unwrap();
    let store = RedisStore::builder(url.as_str())
        .prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let counter = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut calls = Vec::new();
    for key in 0..KEYS {
        for _ in 0..DUPLICATES {
            let (store, prefix, mut counter) = (store.clone(), prefix.clone(), counter.clone());
            calls.push(tokio::spawn(async move {
                let got = run(
                    &store,
                    Options::new("processes::op").lease(Duration::from_secs(5)),
                    Some(key.to_string()),
                    Fingerprint::of(&key).map_err(Error::from),
                    NoReplay,
                    async move {
                        let _: u64 = redis::cmd("INCR")
                            .arg(format!("{prefix}runs:{key}"))
                            .query_async(&mut counter)
                            .await
                            .map_err(|err| idem_core::StoreError::new("count", err))?;
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        Ok::<String, Error>(format!("{}-{key}", std::process::id()))
                    },
                )
                .await;
                (key, got)
            }));
        }
    }
    for call in calls {
        let (key, got) = call.await.unwrap();
        println!(
            "RESULT {key} {}",
            got.expect("every duplicate gets an outcome")
        );
    }
}

/// Scope and key are kept apart in the Redis key name: moving a `:` across the boundary, or
/// braces that Redis Cluster would read as a hash tag, never reach another record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_and_key_boundaries_never_collide() {
    let Some((store, _)) = shared_store("boundaries").await else {
        return;
    };
    let pairs = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a:b:", "c"),
        ("{x}", "y"),
        ("x", "{y}"),
        ("x}", "{y"),
    ];
    let mut names = std::collections::HashSet::new();
    for (i, (scope, key)) in pairs.iter().enumerate() {
        let record = RecordKey::new(*scope, *key).unwrap();
        assert!(
            names.insert(store.redis_key(&record)),
            "{scope:?} / {key:?}"
        );
        let owner = Owner::new();
        let claim = store
            .claim(&ClaimRequest {
                key: &record,
                fingerprint: fp(1),
                owner,
                lease: Duration::from_secs(60),
            })
            .await
            .unwrap();
        let Claim::Acquired { fence, .. } = claim else {
            panic!("{scope:?} / {key:?}: expected a fresh record, got {claim:?}");
        };
        let token = ClaimToken::new(record, owner, fence);
        let outcome = Outcome::new(OutcomeKind::Ok, vec![i as u8]);
        let done = store
            .complete(&token, &outcome, Duration::from_secs(60))
            .await;
        assert_eq!(done.unwrap(), Fence::Held);
    }
}

#[tokio::test]
async fn a_prefix_with_braces_is_refused() {
    // Checked before connecting: no server is needed.
    let built = RedisStore::builder("redis://127.0.0.1:1")
        .prefix("app{1}:")
        .build()
        .await;
    let err = built.expect_err("a prefix with a hash tag must be refused");
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[tokio::test]
async fn an_invalid_url_is_a_store_error() {
    let built = RedisStore::builder("not a url").build().await;
    let err = built.expect_err("an invalid URL must be refused");
    assert_eq!(err.context(), "connect");
}

/// A duplicate waiting on a holder that crashed (another process, never completing) takes the
/// claim over as soon as the lease ends, without waiting for its whole `wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_takes_over_when_the_crashed_holders_lease_ends() {
    let Some((store, _)) = shared_store("wait-takeover").await else {
        return;
    };
    let key = RecordKey::new("wait-takeover::op", "k").unwrap();
    let crashed = store
        .claim(&ClaimRequest {
            key: &key,
            fingerprint: Fingerprint::of("k").unwrap(),
            owner: Owner::new(),
            lease: Duration::from_millis(600),
        })
        .await
        .unwrap();
    assert!(matches!(crashed, Claim::Acquired { .. }), "{crashed:?}");

    let runs = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let waiting = options("wait-takeover::op").wait(Duration::from_secs(10));
    let got = call(&store, waiting, "k", &runs, 5).await;
    let waited = started.elapsed();
    assert_eq!(got.unwrap(), 5, "the waiter ran the body itself");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        waited < Duration::from_secs(5),
        "took over after {waited:?}, not at the end of its 10 s wait"
    );
}

/// Counts its decodes (its `Deserialize` runs).
static DECODES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Counted(u64);

impl<'de> serde::Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Counted)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_decodes_a_clone_outcome_once() {
    let Some(url) = redis_url() else {
        return;
    };
    let local = RedisStore::builder(url.as_str())
        .prefix(unique("decode-once"))
        .local_cache(100)
        .build()
        .await
        .unwrap_or_else(|err| {
            panic!("IDEM_REDIS_URL={url} is set but Redis does not answer: {err}")
        });
    let runs = AtomicUsize::new(0);
    let charge = || {
        idem_core::run_decoding(
            &local,
            options("decode::once"),
            Some("k".to_string()),
            Fingerprint::of(&"k").map_err(Error::from),
            NoReplay,
            idem_core::ByClone,
            async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(Counted(7))
            },
        )
    };
    assert_eq!(charge().await.unwrap(), Counted(7));
    // The completion is kept in the local tier: five replays, one decode (the rest clone it).
    for _ in 0..5 {
        assert_eq!(charge().await.unwrap(), Counted(7));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(DECODES.load(Ordering::SeqCst), 1);
}
