//! The first-call loop of `profile_first_call`, on the `idempotent` crate's memory store: the
//! same count of instructions for the peer (see BENCHMARKS.md).

use idem_bench::{ChargeRequest, Peer, payment_id};

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("a number of calls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reqs: Vec<_> = (0..calls)
        .map(|i| ChargeRequest::new(payment_id(i), 1200))
        .collect();
    let elapsed = rt.block_on(async {
        let peer = Peer::new();
        let start = std::time::Instant::now();
        for req in &reqs {
            std::hint::black_box(peer.idempotent_charge(req).await.unwrap());
        }
        start.elapsed()
    });
    println!(
        "{:.0} ns per first call",
        elapsed.as_nanos() as f64 / calls as f64
    );
}
