//! The multi-process exactly-once harness (issue 7, items 1 and 2).
//!
//! A driver test starts 4 worker processes (this test binary, run again with `worker` as its
//! filter and `IDEM_REL_WORKER` set) and hands them 2,000 calls over 200 keys: every key is
//! called 10 times, its calls dealt to different processes and interleaved in time, so some
//! duplicates arrive while the first call runs and some after it completed. Each body appends a
//! row to a PostgreSQL ledger table that has no unique constraint, so a second execution of a
//! key would show as a second row. Three stores: Redis, PostgreSQL standalone and PostgreSQL
//! transactional (`#[idempotent(transaction = tx)]`, the ledger row in the caller's
//! transaction).
//!
//! The crash variants kill workers with SIGKILL while bodies are running and restart them with
//! the calls they had not answered yet (a client retrying), then check what a user sees:
//!
//! - every call got an outcome, and all callers of a key got the same one;
//! - the store holds, for every key, exactly the outcome the callers got (a completed record was
//!   never overwritten by a late holder: fencing);
//! - the ledger: transactional mode has exactly one row per key, the one whose execution the
//!   callers got (no duplicate, none lost). Lease modes (Redis, standalone PostgreSQL) have the
//!   row of the execution the callers got, and every other row belongs to a killed process (a
//!   holder that died mid-body, taken over when its lease ended); they are counted and printed.
//!
//! Needs `IDEM_DATABASE_URL` (the ledger) and, for the Redis runs, `IDEM_REDIS_URL`.
#![cfg(all(feature = "redis", feature = "postgres"))]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use idem_core::postgres::PgStore;
use idem_core::redis::RedisStore;
use idem_core::store::Record;
use idem_core::{Error, RecordKey, Store, idempotent};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use idem_test_support::{database_url, redis_url};
use support::{Rng, seed, unique};

const PROCESSES: usize = 4;
const KEYS: u32 = 200;
const CALLS_PER_KEY: u32 = 10;
const IN_FLIGHT: usize = 8;
const LEASE: Duration = Duration::from_secs(2);
const SCOPE: &str = "reliability::exactly_once";
const WORKER_VAR: &str = "IDEM_REL_WORKER";

/// The heavy runs take turns: four processes each are enough for two cores.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Redis,
    PgStandalone,
    PgTransactional,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Redis => "redis",
            Mode::PgStandalone => "pg",
            Mode::PgTransactional => "tx",
        }
    }

    fn parse(name: &str) -> Mode {
        match name {
            "redis" => Mode::Redis,
            "pg" => Mode::PgStandalone,
            "tx" => Mode::PgTransactional,
            other => panic!("unknown mode {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The worker: the application under test.

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
enum AppError {
    Idem(Error),
    Db(sqlx::Error),
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Idem(err)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        AppError::Db(err)
    }
}

/// What a body needs: the ledger and a counter that names each execution.
struct Ledger {
    pool: PgPool,
    table: String,
    executions: AtomicU64,
}

impl Ledger {
    /// The body of every mode: note the start, append the ledger row, work a little, and return
    /// the execution's name (`<pid>-<n>`), which is what callers and the store end up holding.
    async fn append(
        &self,
        conn: &mut PgConnection,
        key: u32,
        call: u32,
    ) -> Result<String, AppError> {
        println!("\nSTART {call}");
        let n = self.executions.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let execution = format!("{pid}-{n}");
        sqlx::query(&format!(
            "INSERT INTO {} (key, pid, execution) VALUES ($1, $2, $3)",
            self.table
        ))
        .bind(key as i32)
        .bind(pid as i32)
        .bind(&execution)
        .execute(&mut *conn)
        .await?;
        let work = Rng::new(u64::from(pid) << 32 | n).below(40);
        tokio::time::sleep(Duration::from_millis(10 + work)).await;
        Ok(execution)
    }
}

#[idempotent(key = key, store = store, scope = "reliability::exactly_once", lease = LEASE, ttl = "10m", skip(store, ledger, call))]
async fn leased_call<S: Store>(
    store: &S,
    ledger: &Ledger,
    key: u32,
    call: u32,
) -> Result<String, AppError> {
    let mut conn = ledger.pool.acquire().await?;
    ledger.append(&mut conn, key, call).await
}

#[idempotent(key = key, store = store, transaction = tx, scope = "reliability::exactly_once", lease = LEASE, ttl = "10m", skip(store, ledger, call))]
async fn transactional_call(
    store: &PgStore,
    tx: &mut PgConnection,
    ledger: &Ledger,
    key: u32,
    call: u32,
) -> Result<String, AppError> {
    ledger.append(tx, key, call).await
}

#[derive(Clone)]
enum WorkerStore {
    Redis(RedisStore),
    Pg(PgStore),
}

/// One call as a client makes it: retried (up to a bound) while it gets an error.
async fn client_call(
    store: &WorkerStore,
    mode: Mode,
    ledger: &Ledger,
    key: u32,
    call: u32,
) -> (u32, String) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let got = match (store, mode) {
            (WorkerStore::Redis(store), _) => leased_call(store, ledger, key, call).await,
            (WorkerStore::Pg(store), Mode::PgStandalone) => {
                leased_call(store, ledger, key, call).await
            }
            (WorkerStore::Pg(store), _) => {
                async {
                    let mut tx = ledger.pool.begin().await?;
                    match transactional_call(store, &mut tx, ledger, key, call).await {
                        Ok(execution) => {
                            tx.commit().await?;
                            Ok(execution)
                        }
                        Err(err) => {
                            tx.rollback().await?;
                            Err(err)
                        }
                    }
                }
                .await
            }
        };
        match got {
            Ok(execution) => return (attempts, execution),
            Err(err) if attempts < 20 => {
                eprintln!(
                    "worker {}: call {call} (key {key}): {err:?}; retrying",
                    std::process::id()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("call {call} (key {key}) failed 20 times: {err:?}"),
        }
    }
}

/// The worker process; does nothing when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker() {
    let Ok(config) = std::env::var(WORKER_VAR) else {
        return;
    };
    let mut parts = config.splitn(3, ';');
    let mode = Mode::parse(parts.next().unwrap());
    let name = parts.next().unwrap().to_string();
    let calls: Vec<(u32, u32)> = parts
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (call, key) = pair.split_once(':').unwrap();
            (call.parse().unwrap(), key.parse().unwrap())
        })
        .collect();
    let url = std::env::var("IDEM_DATABASE_URL").unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(IN_FLIGHT as u32 + 2)
        .connect(&url)
        .await
        .expect("the worker connects to PostgreSQL");
    let store = match mode {
        Mode::Redis => {
            let url = std::env::var("IDEM_REDIS_URL").unwrap();
            let store = RedisStore::builder(url.as_str())
                .prefix(format!("{name}:"))
                .build()
                .await
                .expect("the worker connects to Redis");
            WorkerStore::Redis(store)
        }
        Mode::PgStandalone | Mode::PgTransactional => WorkerStore::Pg(
            PgStore::builder(pool.clone())
                .table(name.clone())
                .build()
                .unwrap(),
        ),
    };
    let ledger = Arc::new(Ledger {
        pool,
        table: format!("{name}_ledger"),
        executions: AtomicU64::new(0),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for (call, key) in calls {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let (store, ledger) = (store.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let (attempts, execution) = client_call(&store, mode, &ledger, key, call).await;
            println!("\nDONE {call} {attempts} {execution}");
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Figures {
    elapsed: Duration,
    kills: usize,
    killed_mid_body: usize,
    retries: u64,
    executions: usize,
    duplicate_executions: usize,
    max_executions_per_key: usize,
}

/// A running worker: its process, the calls it has not answered, those whose body started.
struct Slot {
    child: Child,
    reader: std::thread::JoinHandle<()>,
    generation: u32,
    pending: BTreeMap<u32, u32>,
    started: BTreeSet<u32>,
}

impl Drop for Slot {
    /// A failing driver still ends its workers (by pid), so no process outlives the test.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Line {
    Start(u32),
    Done {
        call: u32,
        attempts: u32,
        execution: String,
    },
}

fn spawn_worker(
    mode: Mode,
    name: &str,
    slot: usize,
    generation: u32,
    calls: &BTreeMap<u32, u32>,
    lines: &mpsc::Sender<(usize, u32, Line)>,
) -> (Child, std::thread::JoinHandle<()>) {
    let calls: Vec<String> = calls.iter().map(|(c, k)| format!("{c}:{k}")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["worker", "--exact", "--nocapture", "--test-threads=1"])
        .env(
            WORKER_VAR,
            format!("{};{name};{}", mode.name(), calls.join(",")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a worker process");
    let stdout = child.stdout.take().unwrap();
    let lines = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parsed = if let Some((_, rest)) = line.split_once("START ") {
                Line::Start(rest.trim().parse().unwrap())
            } else if let Some((_, rest)) = line.split_once("DONE ") {
                let mut fields = rest.split_whitespace();
                Line::Done {
                    call: fields.next().unwrap().parse().unwrap(),
                    attempts: fields.next().unwrap().parse().unwrap(),
                    execution: fields.next().unwrap().to_string(),
                }
            } else {
                continue;
            };
            if lines.send((slot, generation, parsed)).is_err() {
                break;
            }
        }
    });
    (child, reader)
}

/// The plan: every key `CALLS_PER_KEY` times, in an order where a key's calls are close in time
/// (so duplicates overlap) but dealt to different processes.
fn plan(rng: &mut Rng) -> Vec<BTreeMap<u32, u32>> {
    let mut ranks: Vec<u32> = (0..KEYS).collect();
    rng.shuffle(&mut ranks);
    let mut calls: Vec<(u64, u32)> = Vec::new();
    for (rank, key) in ranks.into_iter().enumerate() {
        for _ in 0..CALLS_PER_KEY {
            // Spread a key's calls over a window of about 20 keys.
            calls.push((rank as u64 * 100 + rng.below(2_000), key));
        }
    }
    calls.sort();
    let mut workers = vec![BTreeMap::new(); PROCESSES];
    for (call, (_, key)) in calls.into_iter().enumerate() {
        workers[call % PROCESSES].insert(call as u32, key);
    }
    workers
}

/// Runs the workers to the end of the plan, killing one `kills` times mid-body and restarting
/// it with the calls it had not answered.
fn drive(mode: Mode, name: &str, kills: usize, rng: &mut Rng) -> Driven {
    let (tx, rx) = mpsc::channel();
    let plan = plan(rng);
    let keys: BTreeMap<u32, u32> = plan.iter().flatten().map(|(c, k)| (*c, *k)).collect();
    let mut slots: Vec<Slot> = plan
        .into_iter()
        .enumerate()
        .map(|(i, pending)| {
            let (child, reader) = spawn_worker(mode, name, i, 0, &pending, &tx);
            Slot {
                child,
                reader,
                generation: 0,
                pending,
                started: BTreeSet::new(),
            }
        })
        .collect();
    let mut killed = BTreeSet::new();
    let mut killed_mid_body = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    // Kill `i` once `(i + 1) / (kills + 1)` of the first 3/4 of the calls are answered, with
    // jitter, so the kills spread over the run whatever its speed. Not later: near the end
    // most calls are replays and no body may be running to kill.
    let step = keys.len() * 3 / 4 / (kills + 1);
    let kill_at = |i: usize, rng: &mut Rng| step * (i + 1) + rng.below(step as u64 / 2) as usize;
    let mut next_kill = kill_at(0, rng);
    let mut tally = Tally::default();
    let mut last_exit_check = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "the run did not finish in time");
        // One line at a time, so a kill comes right after the START it waits for (draining
        // until a quiet moment would only kill once the bodies were done).
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
            tally.take(&mut slots, line);
        }
        if killed.len() < kills && tally.outcomes.len() >= next_kill {
            // A process with a body running right now, so the kill lands mid-body.
            let busy: Vec<usize> = (0..slots.len())
                .filter(|&i| !slots[i].started.is_empty() && slots[i].pending.len() > 1)
                .collect();
            if !busy.is_empty() {
                let i = busy[rng.below(busy.len() as u64) as usize];
                let slot = &mut slots[i];
                let pid = slot.child.id();
                slot.child.kill().expect("SIGKILL a worker");
                slot.child.wait().unwrap();
                // Every line it wrote before dying counts; nothing after.
                let reader = std::mem::replace(&mut slot.reader, std::thread::spawn(|| {}));
                reader.join().unwrap();
                while let Ok(line) = rx.try_recv() {
                    tally.take(&mut slots, line);
                }
                let slot = &mut slots[i];
                killed.insert(pid);
                killed_mid_body += slot.started.len();
                slot.started.clear();
                slot.generation += 1;
                let (child, reader) =
                    spawn_worker(mode, name, i, slot.generation, &slot.pending, &tx);
                slot.child = child;
                slot.reader = reader;
                next_kill = kill_at(killed.len(), rng);
            }
        }
        if last_exit_check.elapsed() < Duration::from_millis(20) {
            continue;
        }
        last_exit_check = Instant::now();
        let mut running = false;
        for slot in &mut slots {
            if let Some(status) = slot.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "worker {} failed: {status}",
                    slot.child.id()
                );
            } else {
                running = true;
            }
        }
        if !running {
            break;
        }
    }
    for slot in &mut slots {
        let reader = std::mem::replace(&mut slot.reader, std::thread::spawn(|| {}));
        reader.join().unwrap();
    }
    while let Ok(line) = rx.try_recv() {
        tally.take(&mut slots, line);
    }
    Driven {
        keys,
        outcomes: tally.outcomes,
        killed,
        killed_mid_body,
        retries: tally.retries,
    }
}

/// The outcomes the workers reported, and their clients' retries.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<u32, String>,
    retries: u64,
}

impl Tally {
    fn take(&mut self, slots: &mut [Slot], (slot, generation, line): (usize, u32, Line)) {
        let slot = &mut slots[slot];
        if slot.generation != generation {
            return; // a line of a killed process, already accounted for
        }
        match line {
            Line::Start(call) => {
                slot.started.insert(call);
            }
            Line::Done {
                call,
                attempts,
                execution,
            } => {
                slot.pending.remove(&call);
                slot.started.remove(&call);
                self.retries += u64::from(attempts - 1);
                self.outcomes.insert(call, execution);
            }
        }
    }
}

/// What a run gave: the key of every call, the outcome every call got, the pids killed, how
/// many bodies were running in the killed processes, and the clients' retries.
struct Driven {
    keys: BTreeMap<u32, u32>,
    outcomes: BTreeMap<u32, String>,
    killed: BTreeSet<u32>,
    killed_mid_body: usize,
    retries: u64,
}

async fn harness(mode: Mode, kills: usize) -> Option<Figures> {
    let db_url = database_url()?;
    let redis = match mode {
        Mode::Redis => Some(redis_url()?),
        _ => None,
    };
    let _turn = TURN.lock().await;
    let test = format!(
        "{}_{}",
        mode.name(),
        if kills > 0 { "crash" } else { "clean" }
    );
    let mut rng = Rng::new(seed(&format!("exactly_once[{test}]")));
    let name = unique(&test);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&db_url)
        .await
        .unwrap_or_else(|err| {
            panic!("IDEM_DATABASE_URL is set but PostgreSQL does not answer: {err}")
        });
    // The ledger has no unique constraint: a second execution of a key is a second row.
    sqlx::raw_sql(&format!(
        "CREATE TABLE {name}_ledger (key int NOT NULL, pid int NOT NULL, execution text NOT NULL)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = match &redis {
        Some(url) => WorkerStore::Redis(
            RedisStore::builder(url.as_str())
                .prefix(format!("{name}:"))
                .build()
                .await
                .unwrap_or_else(|err| {
                    panic!("IDEM_REDIS_URL is set but Redis does not answer: {err}")
                }),
        ),
        None => {
            let store = PgStore::builder(pool.clone())
                .table(name.clone())
                .build()
                .unwrap();
            store.migrate().await.unwrap();
            WorkerStore::Pg(store)
        }
    };

    let started = Instant::now();
    let Driven {
        keys,
        outcomes,
        killed,
        killed_mid_body,
        retries,
    } = {
        let (name, mut rng2) = (name.clone(), Rng::new(rng.next()));
        tokio::task::spawn_blocking(move || drive(mode, &name, kills, &mut rng2))
            .await
            .unwrap()
    };
    let elapsed = started.elapsed();

    // What the callers got: an outcome for every call, the same for every caller of a key.
    let total = (KEYS * CALLS_PER_KEY) as usize;
    assert_eq!(outcomes.len(), total, "every call got an outcome");
    let rows: Vec<(i32, i32, String)> =
        sqlx::query_as(&format!("SELECT key, pid, execution FROM {name}_ledger"))
            .fetch_all(&pool)
            .await
            .unwrap();
    let key_of_execution: HashMap<&str, u32> = rows
        .iter()
        .map(|(k, _, e)| (e.as_str(), *k as u32))
        .collect();
    let mut per_key: HashMap<u32, BTreeSet<&str>> = HashMap::new();
    let mut callers: HashMap<u32, usize> = HashMap::new();
    for (call, execution) in &outcomes {
        let key = keys[call];
        // The outcome is an execution of this key that left its ledger row (none is lost).
        assert_eq!(
            key_of_execution.get(execution.as_str()),
            Some(&key),
            "call {call} of key {key} got {execution}, which has no ledger row of that key"
        );
        per_key.entry(key).or_default().insert(execution);
        *callers.entry(key).or_default() += 1;
    }
    assert_eq!(per_key.len(), KEYS as usize, "every key answered");
    for (key, got) in &per_key {
        assert_eq!(
            got.len(),
            1,
            "key {key}: its callers got different outcomes {got:?}"
        );
    }
    assert!(
        callers.values().all(|&n| n == CALLS_PER_KEY as usize),
        "every key was answered to its {CALLS_PER_KEY} callers: {callers:?}"
    );

    // What the store holds: for every key, the outcome its callers got (never overwritten).
    for (key, got) in &per_key {
        let record_key = RecordKey::new(SCOPE, key.to_string()).unwrap();
        let record = match &store {
            WorkerStore::Redis(store) => store.get(&record_key).await,
            WorkerStore::Pg(store) => store.get(&record_key).await,
        }
        .unwrap();
        let Some(Record::Completed { outcome, .. }) = record else {
            panic!("key {key}: the store holds {record:?}, not a completed record");
        };
        let stored: String = serde_json::from_slice(outcome.bytes()).unwrap();
        assert_eq!(
            got.first().copied(),
            Some(stored.as_str()),
            "key {key}: the stored outcome is not the one the callers got"
        );
    }

    // The ledger: one row per key, except rows of killed holders in the lease modes.
    let mut rows_per_key: HashMap<u32, Vec<(u32, &str)>> = HashMap::new();
    for (key, pid, execution) in &rows {
        rows_per_key
            .entry(*key as u32)
            .or_default()
            .push((*pid as u32, execution.as_str()));
    }
    let mut duplicates = 0;
    for (key, rows) in &rows_per_key {
        let answered = *per_key[key].first().unwrap();
        for (pid, execution) in rows {
            if *execution == answered {
                continue;
            }
            duplicates += 1;
            assert!(
                mode != Mode::PgTransactional,
                "key {key}: a second ledger row {execution} committed in transactional mode"
            );
            assert!(
                killed.contains(pid),
                "key {key}: execution {execution} ran beside {answered}, and its process {pid} was not killed"
            );
        }
    }
    let max_executions_per_key = rows_per_key.values().map(Vec::len).max().unwrap_or(0);
    assert_eq!(
        rows_per_key.len(),
        KEYS as usize,
        "every key has its ledger row"
    );

    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {name}_ledger; DROP TABLE IF EXISTS {name}; DROP SEQUENCE IF EXISTS {name}_fence"
    ))
    .execute(&pool)
    .await
    .unwrap();
    if let Some(url) = &redis {
        support::delete_prefix(url, &format!("{name}:")).await;
    }
    let figures = Figures {
        elapsed,
        kills: killed.len(),
        killed_mid_body,
        retries,
        executions: rows.len(),
        duplicate_executions: duplicates,
        max_executions_per_key,
    };
    println!(
        "FIGURES exactly_once[{test}]: {total} calls over {KEYS} keys from {PROCESSES} processes in {:.1}s; \
         kills {} ({} bodies running in the killed processes); executions {} (duplicates {}, all by killed holders; max per key {}); \
         callers per key {CALLS_PER_KEY}, outcomes per key 1, stored = answered for {KEYS}/{KEYS} keys; client retries {}",
        figures.elapsed.as_secs_f64(),
        figures.kills,
        figures.killed_mid_body,
        figures.executions,
        figures.duplicate_executions,
        figures.max_executions_per_key,
        figures.retries,
    );
    Some(figures)
}

fn assert_clean(figures: &Figures) {
    assert_eq!(figures.kills, 0);
    assert_eq!(
        figures.executions, KEYS as usize,
        "without crashes every key's body ran exactly once"
    );
    assert_eq!(figures.duplicate_executions, 0);
}

fn assert_crashed(figures: &Figures, kills: usize) {
    assert_eq!(figures.kills, kills, "every planned kill happened");
    assert!(
        figures.killed_mid_body > 0,
        "at least one kill landed while bodies were running"
    );
    assert!(
        figures.duplicate_executions <= figures.killed_mid_body,
        "every duplicate execution is a body that was running when its process was killed"
    );
}

const KILLS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_runs_each_key_once_across_processes() {
    if let Some(figures) = harness(Mode::Redis, 0).await {
        assert_clean(&figures);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_standalone_runs_each_key_once_across_processes() {
    if let Some(figures) = harness(Mode::PgStandalone, 0).await {
        assert_clean(&figures);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_transactional_runs_each_key_once_across_processes() {
    if let Some(figures) = harness(Mode::PgTransactional, 0).await {
        assert_clean(&figures);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_sigkilled_workers_duplicates_only_killed_holders() {
    if let Some(figures) = harness(Mode::Redis, KILLS).await {
        assert_crashed(&figures, KILLS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_standalone_with_sigkilled_workers_duplicates_only_killed_holders() {
    if let Some(figures) = harness(Mode::PgStandalone, KILLS).await {
        assert_crashed(&figures, KILLS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_transactional_with_sigkilled_workers_loses_and_duplicates_nothing() {
    if let Some(figures) = harness(Mode::PgTransactional, KILLS).await {
        assert_crashed(&figures, KILLS);
        assert_eq!(figures.duplicate_executions, 0, "no duplicate ledger row");
        assert_eq!(figures.executions, KEYS as usize, "no lost ledger row");
    }
}
