//! Coalescing: 1,000 calls of one key; the one body that runs waits until all 1,000 callers have
//! arrived, then works 1 ms (a sleep), so the duplicates are waiting on it. The figure is the
//! time from the body's end (an `Instant` the body records as its last act) to the return of the
//! last duplicate (an `Instant` each records on return): how long the duplicates take to learn
//! the outcome once it exists.
//!
//! A tokio runtime with 2 worker threads; each round uses a fresh key. criterion's "time" for
//! this group is that lag, per round. After the group, a summary of 50 more rounds per variant
//! prints the median and the worst lag, and how many rounds had every duplicate back within 1 ms.
//!
//! The `idempotent` crate has no waiting: a duplicate gets `InFlight` and retries; here it polls
//! every 1 ms, the finest tokio timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use idem_bench::{
    BenchError, ChargeRequest, Peer, Receipt, Round, cached_slow_charge, fresh_request,
    idem_slow_charge, idem_store,
};

const DUPLICATES: usize = 1_000;
const WORK: Duration = Duration::from_millis(1);

#[derive(Clone, Copy)]
enum Variant {
    Idem,
    Cached,
    Idempotent,
    Moka,
}

async fn one_call(
    variant: Variant,
    store: &idem_core::MemoryStore,
    peer: &Peer,
    round: &Round,
    req: &ChargeRequest,
) -> Result<Receipt, BenchError> {
    match variant {
        Variant::Idem => idem_slow_charge(store, round, req).await,
        Variant::Cached => cached_slow_charge(round, req).await,
        Variant::Moka => peer
            .moka
            .try_get_with_by_ref(&req.payment_id, async { Ok(round.body(req).await) })
            .await
            .map_err(|err: Arc<BenchError>| (*err).clone()),
        Variant::Idempotent => loop {
            let outcome = peer
                .idempotent_with(req, async |req| Ok(round.body(req).await))
                .await?;
            match outcome {
                Some(receipt) => break Ok(receipt),
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        },
    }
}

/// One round: 1,000 calls with one fresh key; the lag from the body's end to the last return.
fn round(
    rt: &tokio::runtime::Runtime,
    variant: Variant,
    store: &idem_core::MemoryStore,
    peer: &Peer,
) -> Duration {
    let req = Arc::new(fresh_request());
    let round = Arc::new(Round::new(DUPLICATES, WORK));
    rt.block_on(async {
        let tasks: Vec<_> = (0..DUPLICATES)
            .map(|_| {
                let (store, peer, round, req) =
                    (store.clone(), peer.clone(), round.clone(), req.clone());
                tokio::spawn(async move {
                    round.arrive();
                    let receipt = one_call(variant, &store, &peer, &round, &req)
                        .await
                        .unwrap();
                    (Instant::now(), receipt)
                })
            })
            .collect();
        let mut last = None::<Instant>;
        let mut first_receipt = None;
        for task in tasks {
            let (returned, receipt) = task.await.unwrap();
            last = Some(last.map_or(returned, |l| l.max(returned)));
            // Every caller got the one body's receipt.
            assert_eq!(
                first_receipt.get_or_insert_with(|| receipt.clone()),
                &receipt
            );
        }
        let ended = round.ended().expect("the body ran");
        last.unwrap().saturating_duration_since(ended)
    })
}

const VARIANTS: [(&str, Variant); 4] = [
    ("idem", Variant::Idem),
    ("cached", Variant::Cached),
    ("idempotent", Variant::Idempotent),
    ("moka", Variant::Moka),
];

fn coalescing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = idem_store();
    let peer = rt.block_on(async { Peer::new() });

    let mut group = c.benchmark_group("coalescing");
    group.sample_size(20);
    for (name, variant) in VARIANTS {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| round(&rt, variant, &store, &peer)).sum())
        });
    }
    group.finish();

    println!(
        "\ncoalescing summary: lag from the body's end to the last of {DUPLICATES} callers' return, 50 rounds each"
    );
    for (name, variant) in VARIANTS {
        let mut lags: Vec<Duration> = (0..50)
            .map(|_| round(&rt, variant, &store, &peer))
            .collect();
        lags.sort();
        let within = lags
            .iter()
            .filter(|lag| **lag <= Duration::from_millis(1))
            .count();
        println!(
            "coalescing/{name:<10} median {:>10.1?}  worst {:>10.1?}  rounds with all back within 1 ms: {within}/50",
            lags[lags.len() / 2],
            lags[lags.len() - 1],
        );
    }
}

criterion_group!(benches, coalescing);
criterion_main!(benches);
