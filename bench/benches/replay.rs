//! Replay (hit) path, one thread: the key was completed before; every call returns the stored
//! receipt without running the body.

use criterion::{Criterion, criterion_group, criterion_main};
use idem_bench::{
    ChargeRequest, Peer, bare, cached_charge, idem_charge, idem_lazy_store, idem_store,
};
use std::hint::black_box;

fn replay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = ChargeRequest::new("pay-00000042", 1200);
    let store = idem_store();
    let lazy = idem_lazy_store();
    let peer = rt.block_on(async {
        let peer = Peer::new();
        // Complete the key once in every store, so each bench below only replays.
        let first = idem_charge(&store, &req).await.unwrap();
        assert_eq!(idem_charge(&store, &req).await.unwrap(), first);
        let first = idem_charge(&lazy, &req).await.unwrap();
        assert_eq!(idem_charge(&lazy, &req).await.unwrap(), first);
        let first = cached_charge(&req).await.unwrap();
        assert_eq!(cached_charge(&req).await.unwrap(), first);
        let first = peer.idempotent_charge(&req).await.unwrap();
        assert_eq!(peer.idempotent_charge(&req).await.unwrap(), first);
        let first = peer.moka_charge(&req).await.unwrap();
        assert_eq!(peer.moka_charge(&req).await.unwrap(), first);
        peer
    });

    let mut group = c.benchmark_group("replay");
    group.bench_function("idem", |b| {
        b.to_async(&rt)
            .iter(|| async { idem_charge(&store, black_box(&req)).await.unwrap() })
    });
    group.bench_function("idem-lazy", |b| {
        b.to_async(&rt)
            .iter(|| async { idem_charge(&lazy, black_box(&req)).await.unwrap() })
    });
    group.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached_charge(black_box(&req)).await.unwrap() })
    });
    group.bench_function("idempotent", |b| {
        b.to_async(&rt)
            .iter(|| async { peer.idempotent_charge(black_box(&req)).await.unwrap() })
    });
    group.bench_function("moka", |b| {
        b.to_async(&rt)
            .iter(|| async { peer.moka_charge(black_box(&req)).await.unwrap() })
    });
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| async { bare(black_box(&req)).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
