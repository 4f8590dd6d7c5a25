//! Contention: 2 threads share one store of 10,000 completed keys. Each call is a replay of a
//! random one of them (9 calls in 10) or a first call with a fresh key (1 in 10). Throughput is
//! the calls of both threads together per second.
//!
//! A tokio runtime with 2 worker threads runs 2 tasks; each makes half of criterion's
//! iterations. Requests are built before the clock starts.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idem_bench::{
    BenchError, ChargeRequest, Peer, Receipt, cached_charge, fresh_request, idem_charge,
    idem_lazy_store, idem_store, payment_id,
};

const KEYS: u64 = 10_000;
const THREADS: u64 = 2;

/// The requests one task sends: one of the hot keys, or a fresh key every tenth call.
fn workload(hot: &[ChargeRequest], seed: u64, calls: u64) -> Vec<ChargeRequest> {
    let mut state = seed | 1;
    (0..calls)
        .map(|i| {
            if i % 10 == 9 {
                fresh_request()
            } else {
                // xorshift64: cheap and reproducible.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                hot[(state % KEYS) as usize].clone()
            }
        })
        .collect()
}

/// Runs `iters` calls of `f` split over 2 tasks on 2 worker threads; the wall time.
fn run<F, Fut>(rt: &tokio::runtime::Runtime, hot: &[ChargeRequest], iters: u64, f: F) -> Duration
where
    F: Fn(ChargeRequest) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Receipt, BenchError>> + Send,
{
    let per_task = iters.div_ceil(THREADS);
    let work: Vec<_> = (0..THREADS)
        .map(|t| workload(hot, 0x9e37_79b9 * (t + 1), per_task))
        .collect();
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|calls| {
                let f = f.clone();
                tokio::spawn(async move {
                    for req in calls {
                        std::hint::black_box(f(req).await.unwrap());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn contention(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS as usize)
        .enable_all()
        .build()
        .unwrap();
    let hot: Vec<ChargeRequest> = (0..KEYS)
        .map(|i| ChargeRequest::new(payment_id(i), 1200))
        .collect();
    // Leaked, so every task borrows the same stores without touching a reference count.
    let store: &'static _ = Box::leak(Box::new(idem_store()));
    let lazy: &'static _ = Box::leak(Box::new(idem_lazy_store()));
    let peer: &'static Peer = Box::leak(Box::new(rt.block_on(async { Peer::new() })));
    rt.block_on(async {
        for req in hot.iter() {
            idem_charge(store, req).await.unwrap();
            idem_charge(lazy, req).await.unwrap();
            cached_charge(req).await.unwrap();
            peer.idempotent_charge(req).await.unwrap();
            peer.moka_charge(req).await.unwrap();
        }
    });

    let mut group = c.benchmark_group("contention");
    group.throughput(Throughput::Elements(1));
    group.bench_function("idem", |b| {
        b.iter_custom(|iters| {
            run(&rt, &hot, iters, move |req| async move {
                idem_charge(store, &req).await
            })
        })
    });
    group.bench_function("idem-lazy", |b| {
        b.iter_custom(|iters| {
            run(&rt, &hot, iters, move |req| async move {
                idem_charge(lazy, &req).await
            })
        })
    });
    group.bench_function("cached", |b| {
        b.iter_custom(|iters| {
            run(
                &rt,
                &hot,
                iters,
                |req| async move { cached_charge(&req).await },
            )
        })
    });
    group.bench_function("idempotent", |b| {
        b.iter_custom(|iters| {
            run(&rt, &hot, iters, move |req| async move {
                peer.idempotent_charge(&req).await
            })
        })
    });
    group.bench_function("moka", |b| {
        b.iter_custom(|iters| {
            run(&rt, &hot, iters, move |req| async move {
                peer.moka_charge(&req).await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
