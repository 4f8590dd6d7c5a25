//! Prints the size of idem's futures (they are moved into every spawned task).
use idem_bench::{ChargeRequest, Round, idem_charge, idem_slow_charge, idem_store};

fn main() {
    let store = idem_store();
    let req = ChargeRequest::new("pay-1", 1);
    let round = Round::new(1, std::time::Duration::from_millis(1));
    println!(
        "idem_charge future: {} bytes",
        std::mem::size_of_val(&idem_charge(&store, &req))
    );
    println!(
        "idem_slow_charge future: {} bytes",
        std::mem::size_of_val(&idem_slow_charge(&store, &round, &req))
    );
}
