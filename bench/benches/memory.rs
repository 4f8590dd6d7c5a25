//! Memory: bytes a MemoryStore holds per completed record beyond the key and the payload.
//!
//! Method: a counting global allocator keeps the bytes live on the heap (every `alloc` adds its
//! size, every `dealloc` subtracts it; `realloc` adds the difference). For N records:
//!
//! 1. build the store and the runtime, make one call (so lazily created statics exist), and read
//!    the live bytes: `before`;
//! 2. make N first calls through `#[idempotent]`, each with its own key; the requests and the
//!    returned receipts are dropped as they go, so what stays is what the store keeps;
//! 3. read the live bytes: `after`.
//!
//! overhead per record = (after - before - N * (key + payload)) / N, where key is the length of
//! the caller's key (`pay-00000001`: 12 bytes) and payload the length of the stored JSON receipt
//! (`{"id":1,"amount":1200}`, summed over the records actually stored). It includes everything the
//! store keeps for a record: the record key, fingerprint, expiry, the outcome's buffer, moka's
//! per-entry bookkeeping and its hash table (averaged over N, so table growth shows as slack).
//!
//! The same for a bounded `MemoryStore` (`max_capacity`), which keeps no replay index, and, for
//! reference, for a bare `moka::future::Cache<String, Receipt>` filled by
//! `try_get_with` (payload there: the 16-byte `Receipt` value).
//!
//! Run: `cargo bench --ignore-rust-version --manifest-path bench/Cargo.toml --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use idem_bench::{ChargeRequest, Peer, idem_charge, idem_lazy_store, idem_store, payment_id};
use idem_core::MemoryStore;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn idem_overhead(rt: &tokio::runtime::Runtime, n: u64, store: MemoryStore) -> f64 {
    rt.block_on(async {
        idem_charge(&store, &ChargeRequest::new("warm-up", 1))
            .await
            .unwrap();
        let before = live();
        let mut kept = 0usize;
        for i in 0..n {
            let req = ChargeRequest::new(payment_id(i), 1200);
            let receipt = idem_charge(&store, &req).await.unwrap();
            kept += req.payment_id.len() + serde_json::to_vec(&receipt).unwrap().len();
        }
        let after = live();
        (after - before - kept as isize) as f64 / n as f64
    })
}

fn moka_overhead(rt: &tokio::runtime::Runtime, n: u64) -> f64 {
    rt.block_on(async {
        let peer = Peer::new();
        peer.moka_charge(&ChargeRequest::new("warm-up", 1))
            .await
            .unwrap();
        let before = live();
        let mut kept = 0usize;
        for i in 0..n {
            let req = ChargeRequest::new(payment_id(i), 1200);
            let receipt = peer.moka_charge(&req).await.unwrap();
            kept += req.payment_id.len() + std::mem::size_of_val(&receipt);
        }
        let after = live();
        (after - before - kept as isize) as f64 / n as f64
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then run small.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sizes: &[u64] = if quick {
        &[1_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    println!("memory: heap bytes per record beyond key and payload (counting allocator)");
    for &n in sizes {
        println!(
            "memory/idem MemoryStore   N = {n:>9}: {:>7.1} bytes/record",
            idem_overhead(&rt, n, idem_store())
        );
        // A bounded store keeps no replay index (see MemoryStore's docs).
        println!(
            "memory/idem lazy_expiry   N = {n:>9}: {:>7.1} bytes/record",
            idem_overhead(&rt, n, idem_lazy_store())
        );
        let bounded = MemoryStore::builder().max_capacity(10_000_000).build();
        println!(
            "memory/idem bounded store N = {n:>9}: {:>7.1} bytes/record",
            idem_overhead(&rt, n, bounded)
        );
        println!(
            "memory/moka future::Cache N = {n:>9}: {:>7.1} bytes/record",
            moka_overhead(&rt, n)
        );
    }
}
