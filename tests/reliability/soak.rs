//! A bounded soak (issue 7, item 6): a minute of mixed load on MemoryStore and, when
//! `IDEM_REDIS_URL` is set, RedisStore (with its local tier), in one process whose resident
//! memory (`VmRSS`) is sampled every second. Alone in its test binary, so the memory is this
//! load's only.
//!
//! The mix: first calls on new keys (an unbounded key space), replays of recent keys, pairs of
//! concurrent duplicates, bodies that fail (the claim is released), and calls cancelled while
//! the body runs (the future dropped). Records live 2 s, and the MemoryStore is bounded, so
//! after warm-up the live data is constant and memory must be too.
//!
//! The bound: the mean RSS of the last third may exceed the mean of the middle third by at most
//! 10 % + 4 MiB. Allocator noise and moka's lazy eviction stay well inside it; a leak does not:
//! the figures line prints the calls per second, so the smallest leak per call the bound
//! catches (`(10 % + 4 MiB) / calls in a third`) is a few tens of bytes.
//!
//! `IDEM_SOAK_SECS` changes the length (default 60).

mod support;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use idem_core::{Error, Fingerprint, MemoryStore, NoReplay, Options, Store, run};
use tokio::time::Instant;

use support::Rng;

const CLIENTS: usize = 8;

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    first: AtomicU64,
    replayed: AtomicU64,
    failed_bodies: AtomicU64,
    cancelled: AtomicU64,
    wrong: AtomicU64,
}

async fn call<S: Store>(store: &S, key: u64, fail: bool, work: Duration) -> Result<String, Error> {
    run(
        store,
        Options::new("reliability::soak")
            .ttl(Duration::from_secs(2))
            .lease(Duration::from_secs(5)),
        Some(key.to_string()),
        Fingerprint::of(&key).map_err(Error::from),
        NoReplay,
        async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            if fail {
                return Err(Error::WaitTimeout); // any non-replayed error: the claim is released
            }
            Ok(format!("value-of-{key}"))
        },
    )
    .await
}

/// One client: a mix of calls until `stop`.
async fn client<S: Store>(
    store: S,
    seed: u64,
    next_key: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let mut rng = Rng::new(seed);
    let mut recent: VecDeque<u64> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        counts.calls.fetch_add(1, Ordering::Relaxed);
        let roll = rng.below(100);
        let expect = |key: u64, got: &Result<String, Error>| {
            if !matches!(got, Ok(v) if *v == format!("value-of-{key}")) {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
                eprintln!("key {key}: {got:?}");
            }
        };
        match roll {
            0..45 => {
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let got = call(&store, key, false, Duration::ZERO).await;
                expect(key, &got);
                counts.first.fetch_add(1, Ordering::Relaxed);
                recent.push_back(key);
                if recent.len() > 64 {
                    recent.pop_front();
                }
            }
            45..80 if !recent.is_empty() => {
                let key = recent[rng.below(recent.len() as u64) as usize];
                let got = call(&store, key, false, Duration::ZERO).await;
                expect(key, &got);
                counts.replayed.fetch_add(1, Ordering::Relaxed);
            }
            80..90 => {
                // Two callers of a new key at once: one runs, the other waits and replays.
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let work = Duration::from_millis(1);
                let (a, b) = tokio::join!(
                    call(&store, key, false, work),
                    call(&store, key, false, work)
                );
                expect(key, &a);
                expect(key, &b);
            }
            90..95 => {
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let got = call(&store, key, true, Duration::ZERO).await;
                if !matches!(got, Err(Error::WaitTimeout)) {
                    counts.wrong.fetch_add(1, Ordering::Relaxed);
                }
                counts.failed_bodies.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // Cancelled mid-body: the caller gives up after 1 ms of a 20 ms body.
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let got = tokio::time::timeout(
                    Duration::from_millis(1),
                    call(&store, key, false, Duration::from_millis(20)),
                )
                .await;
                if got.is_err() {
                    counts.cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn spawn_clients<S: Store>(
    store: &S,
    seed: u64,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next_key = Arc::new(AtomicU64::new(0));
    (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(
                store.clone(),
                seed ^ (i as u64 + 1),
                next_key.clone(),
                stop.clone(),
                counts.clone(),
            ))
        })
        .collect()
}

fn mean(samples: &[u64]) -> f64 {
    samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory_and_redis_with_stable_resident_memory() {
    let secs: u64 = std::env::var("IDEM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .max(6);
    let seed = support::seed("soak");
    let stop = Arc::new(AtomicBool::new(false));
    let memory_counts = Arc::new(Counts::default());
    let redis_counts = Arc::new(Counts::default());
    let mut tasks = spawn_clients(
        &MemoryStore::builder().max_capacity(20_000).build(),
        seed,
        &stop,
        &memory_counts,
    );
    let mut redis_prefix = None;
    #[cfg(feature = "redis")]
    if let Some(url) = idem_test_support::redis_url() {
        let prefix = format!("{}:", support::unique("soak"));
        let store = idem_core::redis::RedisStore::builder(url.as_str())
            .prefix(prefix.clone())
            .local_cache(1_000)
            .build()
            .await
            .unwrap_or_else(|err| panic!("IDEM_REDIS_URL is set but Redis does not answer: {err}"));
        tasks.extend(spawn_clients(
            &store,
            seed.rotate_left(17),
            &stop,
            &redis_counts,
        ));
        redis_prefix = Some((url, prefix));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(support::rss_kib());
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    if let Some((_url, _prefix)) = &redis_prefix {
        #[cfg(feature = "redis")]
        support::delete_prefix(_url, _prefix).await;
    }

    let third = samples.len() / 3;
    let (middle, last) = (&samples[third..2 * third], &samples[2 * third..]);
    let (middle_mean, last_mean) = (mean(middle), mean(last));
    let growth_kib = last_mean - middle_mean;
    let bound_kib = middle_mean * 0.10 + 4096.0;
    let total_calls =
        memory_counts.calls.load(Ordering::Relaxed) + redis_counts.calls.load(Ordering::Relaxed);
    let calls_per_third = total_calls as f64 / 3.0;
    let describe = |name: &str, c: &Counts| {
        format!(
            "{name}: {} calls ({} first, {} replays, {} failed bodies, {} cancelled, {} wrong)",
            c.calls.load(Ordering::Relaxed),
            c.first.load(Ordering::Relaxed),
            c.replayed.load(Ordering::Relaxed),
            c.failed_bodies.load(Ordering::Relaxed),
            c.cancelled.load(Ordering::Relaxed),
            c.wrong.load(Ordering::Relaxed),
        )
    };
    println!(
        "FIGURES soak {secs}s: {}; {}; {:.0} calls/s; RSS KiB first {} / middle-third mean {:.0} / last-third mean {:.0} / max {}; \
         growth {:.0} KiB, bound {:.0} KiB (catches a leak of {:.0} bytes per call); samples {:?}",
        describe("memory", &memory_counts),
        if redis_prefix.is_some() {
            describe("redis", &redis_counts)
        } else {
            "redis: skipped".into()
        },
        total_calls as f64 / secs as f64,
        samples[0],
        middle_mean,
        last_mean,
        samples.iter().max().unwrap(),
        growth_kib,
        bound_kib,
        bound_kib * 1024.0 / calls_per_third.max(1.0),
        samples,
    );
    assert_eq!(
        memory_counts.wrong.load(Ordering::Relaxed),
        0,
        "every MemoryStore call got its key's value"
    );
    assert_eq!(
        redis_counts.wrong.load(Ordering::Relaxed),
        0,
        "every RedisStore call got its key's value"
    );
    assert!(
        memory_counts.cancelled.load(Ordering::Relaxed) > 0,
        "the mix cancelled some calls"
    );
    assert!(
        growth_kib <= bound_kib,
        "resident memory grew {growth_kib:.0} KiB from the middle to the last third (bound {bound_kib:.0} KiB)"
    );
}
