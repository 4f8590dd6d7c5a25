//! A replay loop to profile: `valgrind --tool=callgrind` on this binary counts the instructions
//! of one idem replay (see BENCHMARKS.md).

use idem_bench::{ChargeRequest, idem_charge, idem_store};

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("a number of calls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = idem_store();
    let req = ChargeRequest::new("pay-00000042", 1200);
    rt.block_on(async {
        let first = idem_charge(&store, &req).await.unwrap();
        for _ in 0..calls {
            let replay = idem_charge(&store, std::hint::black_box(&req))
                .await
                .unwrap();
            assert_eq!(replay.id, first.id);
        }
    });
}
