//! idem's `RedisStore` beside the `idempotent` crate's Valkey/Redis store and `redis-benchmark`
//! SET, on the Redis server at `$IDEM_REDIS_URL` (skipped when it is unset).
//!
//! - `redis_replay`: calls of keys completed before the bench (1,000 of them per store): one
//!   claim that finds the stored receipt and returns it, the body does not run;
//! - `redis_first_call`: a fresh key per call: claim, body, complete;
//!
//! each at 1 caller and at 50 concurrent callers (50 tasks on a 2-worker tokio runtime, every
//! store on one multiplexed connection, as both stores use Redis by default). Criterion's
//! throughput is the calls of all callers per second of wall time. Requests are built before
//! the clock starts.
//!
//! After the groups: `redis-benchmark` SET on the same server at `-c 1` and `-c 50` (its
//! requests per second go to `<criterion home>/redis_benchmark.json`, which `db_medians.py`
//! reads), then the commands each store sends per call, counted by a proxy
//! ([`idem_bench::proxy`]), then the run's keys are deleted (`SCAN` + `DEL` on its prefix).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use idem_bench::proxy::{CountingProxy, Protocol, ROUND_TRIPS};
use idem_bench::{
    BenchError, ChargeRequest, Receipt, fresh_request, idem_redis_charge, idempotent_charge,
    payment_id,
};
use idem_core::redis::RedisStore;
use idempotent::valkey::ValkeyStore;

/// The callers of the concurrent groups.
const CALLERS: [usize; 2] = [1, 50];
/// The keys completed before the replay group, per store.
const HOT: u64 = 1_000;
/// The calls per store of the round-trip count.
const COUNTED: u64 = 1_000;

/// The two stores on the server under test.
struct Run {
    idem: RedisStore,
    idempotent: ValkeyStore,
}

#[derive(Clone, Copy)]
enum Variant {
    Idem,
    Idempotent,
}

const VARIANTS: [(&str, Variant); 2] =
    [("idem", Variant::Idem), ("idempotent", Variant::Idempotent)];

impl Run {
    async fn call(&self, variant: Variant, req: &ChargeRequest) -> Result<Receipt, BenchError> {
        match variant {
            Variant::Idem => idem_redis_charge(&self.idem, req).await,
            Variant::Idempotent => idempotent_charge(&self.idempotent, req).await,
        }
    }
}

/// The stores of one run on `client`'s server, under `prefix`.
async fn stores(client: redis::Client, prefix: &str) -> (RedisStore, ValkeyStore) {
    let idem = RedisStore::builder(client.clone())
        .prefix(format!("{prefix}:idem:"))
        .build()
        .await
        .expect("idem's RedisStore connects");
    // Its prefix may not contain `:`; its keys are `<prefix>:<key>` and a fence counter.
    let idempotent = ValkeyStore::with_client(client)
        .prefix(format!("{prefix}_idempotent"))
        .try_build()
        .await
        .expect("idempotent's ValkeyStore connects");
    (idem, idempotent)
}

/// Runs `iters` calls, `callers` of them at a time (each caller one task making its share one
/// after another); the wall time. `requests(caller, n)` gives a caller's `n` requests.
fn run_calls(
    rt: &tokio::runtime::Runtime,
    run: &Arc<Run>,
    variant: Variant,
    callers: usize,
    iters: u64,
    requests: impl Fn(usize, u64) -> Vec<ChargeRequest>,
) -> Duration {
    let callers_u64 = callers as u64;
    let work: Vec<Vec<ChargeRequest>> = (0..callers)
        .map(|c| {
            let share = iters / callers_u64 + u64::from((c as u64) < iters % callers_u64);
            requests(c, share)
        })
        .collect();
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|calls| {
                let run = run.clone();
                tokio::spawn(async move {
                    for req in calls {
                        std::hint::black_box(run.call(variant, &req).await.unwrap());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn groups(c: &mut Criterion, rt: &tokio::runtime::Runtime, run: &Arc<Run>) {
    let hot: Vec<ChargeRequest> = (0..HOT)
        .map(|i| ChargeRequest::new(payment_id(i), 1200))
        .collect();
    rt.block_on(async {
        for req in &hot {
            for (_, variant) in VARIANTS {
                let first = run.call(variant, req).await.unwrap();
                assert_eq!(run.call(variant, req).await.unwrap(), first);
            }
        }
    });

    let mut group = c.benchmark_group("redis_replay");
    group.throughput(Throughput::Elements(1));
    for callers in CALLERS {
        for (name, variant) in VARIANTS {
            group.bench_with_input(BenchmarkId::new(name, callers), &callers, |b, &callers| {
                b.iter_custom(|iters| {
                    run_calls(rt, run, variant, callers, iters, |caller, n| {
                        (0..n)
                            .map(|i| hot[((caller as u64 * 7 + i) % HOT) as usize].clone())
                            .collect()
                    })
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("redis_first_call");
    group.throughput(Throughput::Elements(1));
    for callers in CALLERS {
        for (name, variant) in VARIANTS {
            group.bench_with_input(BenchmarkId::new(name, callers), &callers, |b, &callers| {
                b.iter_custom(|iters| {
                    run_calls(rt, run, variant, callers, iters, |_, n| {
                        (0..n).map(|_| fresh_request()).collect()
                    })
                })
            });
        }
    }
    group.finish();
}

/// `redis-benchmark` SET of one key under the run's prefix, at each of [`CALLERS`]: requests
/// per second by connections.
fn redis_benchmark(server: SocketAddr, password: Option<&str>, key: &str) -> BTreeMap<usize, f64> {
    let mut results = BTreeMap::new();
    for callers in CALLERS {
        let requests = if callers == 1 { 20_000 } else { 200_000 };
        let mut cmd = Command::new("redis-benchmark");
        cmd.args([
            "-h",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args([
            "-c",
            &callers.to_string(),
            "-n",
            &requests.to_string(),
            "-q",
        ]);
        if let Some(password) = password {
            cmd.args(["-a", password]);
        }
        // The command as arguments: SET of one key of this run, so the cleanup removes it.
        cmd.args(["SET", key, "xxx"]);
        let output = match cmd.output() {
            Ok(output) if output.status.success() => output,
            Ok(output) => panic!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => {
                println!("redis-benchmark not run: {err}");
                return results;
            }
        };
        let text = String::from_utf8_lossy(&output.stdout);
        // The last of its progress lines (separated by `\r`): `SET ...: 41493.78 requests per second, p50=...`.
        let rps = text
            .rsplit(['\r', '\n'])
            .find_map(|line| {
                let before = line.split(" requests per second").next()?;
                line.contains(" requests per second")
                    .then(|| before.rsplit(' ').next()?.parse::<f64>().ok())?
            })
            .unwrap_or_else(|| {
                panic!("no requests per second in redis-benchmark's output: {text:?}")
            });
        println!("redis-benchmark SET -c {callers} -n {requests}: {rps:.0} requests per second");
        results.insert(callers, rps);
    }
    results
}

/// Where criterion writes its results (its own order of preference, without `cargo metadata`).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

/// Counts the commands each store sends per call, through a [`CountingProxy`]: `COUNTED`
/// replays and `COUNTED` first calls, one after another, after a warm-up that loads the
/// scripts.
fn round_trips(
    rt: &tokio::runtime::Runtime,
    client: &redis::Client,
    server: SocketAddr,
    prefix: &str,
) {
    rt.block_on(async {
        let proxy = CountingProxy::start(server, Protocol::Redis).await;
        let info = client
            .get_connection_info()
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(
                proxy.addr().ip().to_string(),
                proxy.addr().port(),
            ));
        let proxied = redis::Client::open(info).expect("the proxied client");
        let (idem, idempotent) = stores(proxied, &format!("{prefix}rt")).await;
        let run = Run { idem, idempotent };
        println!(
            "\nround trips per call (and commands sent per call), {COUNTED} calls one after another"
        );
        for (name, variant) in VARIANTS {
            let replayed = fresh_request();
            // Warm-up: the first claim loads the scripts (`NOSCRIPT`, `SCRIPT LOAD`), the
            // first completion too.
            run.call(variant, &replayed).await.unwrap();
            run.call(variant, &fresh_request()).await.unwrap();
            proxy.take();
            for _ in 0..COUNTED {
                run.call(variant, &replayed).await.unwrap();
            }
            let replay = proxy.take();
            let firsts: Vec<_> = (0..COUNTED).map(|_| fresh_request()).collect();
            proxy.take();
            for req in &firsts {
                run.call(variant, req).await.unwrap();
            }
            let first = proxy.take();
            println!(
                "round trips/{name:<10} replay {}  first call {}",
                per_call(&replay),
                per_call(&first)
            );
        }
    });
}

fn per_call(counts: &BTreeMap<String, u64>) -> String {
    let trips = counts.get(ROUND_TRIPS).copied().unwrap_or(0);
    let names: Vec<String> = counts
        .iter()
        .filter(|(name, _)| *name != ROUND_TRIPS)
        .map(|(name, n)| format!("{name} {:.2}", *n as f64 / COUNTED as f64))
        .collect();
    format!(
        "{:.2} ({})",
        trips as f64 / COUNTED as f64,
        names.join(", ")
    )
}

/// Deletes every key of the run when dropped, also when the bench panics.
struct Cleanup {
    client: redis::Client,
    pattern: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let deleted = (|| -> redis::RedisResult<u64> {
            let mut conn = self.client.get_connection()?;
            let mut cursor = 0u64;
            let mut deleted = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&self.pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                if !keys.is_empty() {
                    deleted += redis::cmd("DEL").arg(&keys).query::<u64>(&mut conn)?;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        })();
        match deleted {
            Ok(n) => println!("cleanup: deleted {n} keys matching {}", self.pattern),
            Err(err) => eprintln!("cleanup of {} failed: {err}", self.pattern),
        }
    }
}

fn main() {
    let Some(url) = std::env::var("IDEM_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        println!("redis bench skipped: IDEM_REDIS_URL is unset");
        return;
    };
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|err| panic!("IDEM_REDIS_URL is not a Redis URL: {err}"));
    let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr().clone() else {
        panic!("IDEM_REDIS_URL: the Redis bench needs a plain TCP server (host and port)");
    };
    let server = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("IDEM_REDIS_URL: cannot resolve {host}:{port}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(5), ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => panic!(
                "IDEM_REDIS_URL is set, but Redis at {host}:{port} does not answer PING: {err}"
            ),
            Err(_) => panic!(
                "IDEM_REDIS_URL is set, but Redis at {host}:{port} did not answer PING within 5 s"
            ),
        }
    });

    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let prefix = format!(
        "idembench{}x{}",
        std::process::id(),
        since_epoch.as_millis()
    );
    let _cleanup = Cleanup {
        client: client.clone(),
        pattern: format!("{prefix}*"),
    };
    let (idem, idempotent) = rt.block_on(stores(client.clone(), &prefix));
    let run = Arc::new(Run { idem, idempotent });
    println!("redis bench: server {host}:{port}, key prefix {prefix}");

    let mut c = Criterion::default().configure_from_args();
    groups(&mut c, &rt, &run);

    let password = client.get_connection_info().redis_settings().password();
    let rps = redis_benchmark(server, password, &format!("{prefix}:redis-benchmark"));
    if !rps.is_empty() {
        let json = rps
            .iter()
            .map(|(callers, rps)| format!("\"{callers}\": {rps}"))
            .collect::<Vec<_>>()
            .join(", ");
        let home = criterion_home();
        let written = std::fs::create_dir_all(&home).and_then(|()| {
            std::fs::write(home.join("redis_benchmark.json"), format!("{{{json}}}\n"))
        });
        if let Err(err) = written {
            eprintln!("could not write {}: {err}", home.display());
        }
    }

    round_trips(&rt, &client, server, &prefix);
    c.final_summary();
}
