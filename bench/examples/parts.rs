//! Times the parts of one idem replay on their own (min of 5 runs of 1M each), to see natively
//! where the time goes (callgrind counts software SHA-256, as valgrind hides SHA-NI).
use std::hint::black_box;
use std::time::Instant;

use idem_bench::{ChargeRequest, Receipt};
use idem_core::{Fingerprint, RecordKey};

fn time(name: &str, mut f: impl FnMut()) {
    let n = 1_000_000u32;
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed() / n
        })
        .min()
        .unwrap();
    println!("{name:<40} {best:?}");
}

fn main() {
    let req = ChargeRequest::new("pay-00000042", 1200);
    let json = serde_json::to_vec(&Receipt {
        id: 1,
        amount: 1200,
    })
    .unwrap();
    time("Fingerprint::of(req)", || {
        black_box(Fingerprint::of(black_box(&req)).unwrap());
    });
    time("sha256 of 74 bytes, one update", || {
        use sha2::Digest;
        black_box(sha2::Sha256::digest(black_box(&[7u8; 74])));
    });
    time("sha256 of 39 bytes, one update", || {
        use sha2::Digest;
        black_box(sha2::Sha256::digest(black_box(&[7u8; 39])));
    });
    time("sha256 of 1000 bytes, one update", || {
        use sha2::Digest;
        black_box(sha2::Sha256::digest(black_box(&[7u8; 1000])));
    });
    time("key to_string + RecordKey::new", || {
        black_box(RecordKey::new("bench::charge", black_box(&req.payment_id).to_string()).unwrap());
    });
    time("serde_json::from_slice::<Receipt>", || {
        black_box(serde_json::from_slice::<Receipt>(black_box(&json)).unwrap());
    });
    let key = RecordKey::new("bench::charge", "pay-00000042").unwrap();
    let moka: moka::sync::Cache<RecordKey, std::sync::Arc<u64>> = moka::sync::Cache::new(100);
    moka.insert(key.clone(), std::sync::Arc::new(1));
    time("moka::sync get (RandomState)", || {
        black_box(moka.get(black_box(&key)));
    });
    time("tokio Instant::now", || {
        black_box(tokio::time::Instant::now());
    });
    hashers();
    time("Owner::new", || {
        black_box(idem_core::store::Owner::new());
    });
}

#[allow(dead_code)]
fn hashers() {
    let key = RecordKey::new("bench::charge", "pay-00000042").unwrap();
    let fold: moka::sync::Cache<RecordKey, std::sync::Arc<u64>, foldhash::fast::RandomState> =
        moka::sync::Cache::builder().build_with_hasher(foldhash::fast::RandomState::default());
    fold.insert(key.clone(), std::sync::Arc::new(1));
    time("moka::sync get (foldhash)", || {
        black_box(fold.get(black_box(&key)));
    });
    let ah: moka::sync::Cache<RecordKey, std::sync::Arc<u64>, ahash::RandomState> =
        moka::sync::Cache::builder().build_with_hasher(ahash::RandomState::default());
    ah.insert(key.clone(), std::sync::Arc::new(1));
    time("moka::sync get (ahash)", || {
        black_box(ah.get(black_box(&key)));
    });
    let ttl: moka::sync::Cache<RecordKey, std::sync::Arc<u64>> = moka::sync::Cache::builder()
        .time_to_live(std::time::Duration::from_secs(60))
        .build();
    ttl.insert(key.clone(), std::sync::Arc::new(1));
    time("moka::sync get (ttl, RandomState)", || {
        black_box(ttl.get(black_box(&key)));
    });
    let rs = std::collections::hash_map::RandomState::new();
    time("siphash RecordKey", || {
        use std::hash::BuildHasher;
        black_box(rs.hash_one(black_box(&key)));
    });
}
