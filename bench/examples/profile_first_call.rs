//! A first-call loop to profile: every call has a fresh key (see BENCHMARKS.md).

use idem_bench::{ChargeRequest, idem_charge, idem_store, payment_id};

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("a number of calls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = idem_store();
    let reqs: Vec<_> = (0..calls)
        .map(|i| ChargeRequest::new(payment_id(i), 1200))
        .collect();
    let start = std::time::Instant::now();
    rt.block_on(async {
        for req in &reqs {
            std::hint::black_box(idem_charge(&store, req).await.unwrap());
        }
    });
    let elapsed = start.elapsed();
    println!(
        "{:.0} ns per first call",
        elapsed.as_nanos() as f64 / calls as f64
    );
}
