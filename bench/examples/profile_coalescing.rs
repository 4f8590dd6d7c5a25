//! Coalescing rounds of idem alone, to profile (`perf record`): 1,000 duplicates of one key
//! wait on a 1 ms body, as in `benches/coalescing.rs`; prints the median lag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_bench::{Round, fresh_request, idem_slow_charge, idem_store};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(200, |n| n.parse().expect("a number of rounds"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = idem_store();
    let mut lags: Vec<Duration> = (0..rounds)
        .map(|_| {
            let req = Arc::new(fresh_request());
            let round = Arc::new(Round::new(1_000, Duration::from_millis(1)));
            rt.block_on(async {
                let tasks: Vec<_> = (0..1_000)
                    .map(|_| {
                        let (store, round, req) = (store.clone(), round.clone(), req.clone());
                        tokio::spawn(async move {
                            round.arrive();
                            idem_slow_charge(&store, &round, &req).await.unwrap();
                            Instant::now()
                        })
                    })
                    .collect();
                let mut last = None::<Instant>;
                for task in tasks {
                    let returned = task.await.unwrap();
                    last = Some(last.map_or(returned, |l| l.max(returned)));
                }
                last.unwrap()
                    .saturating_duration_since(round.ended().expect("the body ran"))
            })
        })
        .collect();
    lags.sort();
    println!("median lag {:?}", lags[lags.len() / 2]);
}
