//! First-call (miss) path, one thread: every call has a fresh key, so it claims, runs the body
//! and stores the receipt. The fresh request is built outside the timed part.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idem_bench::{
    Peer, bare, cached_charge, fresh_request, idem_charge, idem_lazy_store, idem_store,
};

fn first_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = &idem_store();
    let lazy = &idem_lazy_store();
    let peer = &rt.block_on(async { Peer::new() });

    let mut group = c.benchmark_group("first_call");
    group.bench_function("idem", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { idem_charge(store, &req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("idem-lazy", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { idem_charge(lazy, &req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("cached", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { cached_charge(&req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("idempotent", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { peer.idempotent_charge(&req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("moka", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { peer.moka_charge(&req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_batched(
            fresh_request,
            |req| async move { bare(&req).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, first_call);
criterion_main!(benches);
