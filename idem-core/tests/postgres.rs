//! PgStore against a real PostgreSQL: set `IDEM_DATABASE_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without it every test prints
//! `skipped: IDEM_DATABASE_URL is not set` and passes; with it set, a database that does not
//! answer fails the tests.
//!
//! Every test makes its own tables under a unique name and drops them at the end, so tests run
//! in parallel, and reruns, never share records.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::postgres::{PgStore, run_in_transaction};
use idem_core::store::{Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner};
use idem_core::{Concurrency, Error, Fingerprint, NoReplay, Options, RecordKey, Store};
use idem_test_support::{Proxy, database_url};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

const URL_VAR: &str = "IDEM_DATABASE_URL";
const WORKER_VAR: &str = "IDEM_PG_TEST_WORKER";

/// A unique name for this test's tables: `idem_t_<pid>_<random>`.
fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("idem_t_{}_{:08x}", std::process::id(), h.finish() as u32)
}

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|err| panic!("{URL_VAR} is set but the database does not answer: {err}"))
}

/// A store on its own migrated table, and an application table `<name>_ledger` beside it.
struct Db {
    pool: PgPool,
    store: PgStore,
    name: String,
}

impl Db {
    async fn new(url: &str) -> Db {
        Db::named(url, unique_name()).await
    }

    async fn named(url: &str, name: String) -> Db {
        let pool = connect(url).await;
        let store = PgStore::builder(pool.clone())
            .table(name.clone())
            .build()
            .expect("valid table name");
        store.migrate().await.expect("migrate");
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {name}_ledger (id bigserial PRIMARY KEY, order_ref text NOT NULL, amount bigint NOT NULL)"
        ))
        .execute(&pool)
        .await
        .expect("create ledger");
        Db { pool, store, name }
    }

    fn ledger(&self) -> String {
        format!("{}_ledger", self.name)
    }

    async fn ledger_rows(&self, order_ref: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE order_ref = $1",
            self.ledger()
        ))
        .bind(order_ref)
        .fetch_one(&self.pool)
        .await
        .expect("count ledger")
    }

    async fn key_rows(&self, key: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE key = $1",
            self.name
        ))
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .expect("count keys")
    }

    async fn drop_tables(self) {
        let name = &self.name;
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {name}; DROP SEQUENCE IF EXISTS {name}_fence; DROP TABLE IF EXISTS {name}_ledger"
        ))
        .execute(&self.pool)
        .await
        .expect("drop tables");
        self.pool.close().await;
    }
}

#[derive(Debug)]
enum AppError {
    Idem(Error),
    Db(#[allow(dead_code)] String), // read through Debug in failure messages
    Declined,
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Idem(err)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        AppError::Db(err.to_string())
    }
}

const SCOPE: &str = "tests::place_order";

/// Places an order in `tx`: one ledger row, whose id is the outcome. `fail_after_write` makes
/// the body fail after writing it.
///
/// Runs on `&mut PgConnection` (pass `&mut *tx`): with a `Transaction` as the connection type
/// rustc cannot prove the call's future `Send`, and these calls run in spawned tasks.
async fn place_order(
    db: &Db,
    tx: &mut PgConnection,
    order_ref: &str,
    runs: &AtomicUsize,
    pause: Duration,
    fail_after_write: bool,
) -> Result<i64, AppError> {
    let ledger = db.ledger();
    run_in_transaction(
        &db.store,
        tx,
        Options::new(SCOPE),
        Some(order_ref.to_string()),
        Fingerprint::of(&order_ref).map_err(Error::from),
        NoReplay,
        async |conn: &mut PgConnection| {
            runs.fetch_add(1, Ordering::SeqCst);
            let id: i64 = sqlx::query_scalar(&format!(
                "INSERT INTO {ledger} (order_ref, amount) VALUES ($1, 1200) RETURNING id"
            ))
            .bind(order_ref)
            .fetch_one(&mut *conn)
            .await?;
            tokio::time::sleep(pause).await;
            if fail_after_write {
                return Err(AppError::Declined);
            }
            Ok(id)
        },
    )
    .await
}

#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_mode_passes_the_conformance_suite() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    idem_core::testing::conformance(db.store.clone()).await;
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_run_replays_without_running_the_body_again() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let call = || {
        idem_core::run(
            &db.store,
            Options::new(SCOPE),
            Some("order-1".to_string()),
            Fingerprint::of("order-1").map_err(Error::from),
            NoReplay,
            async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(41 + runs.load(Ordering::SeqCst) as u64)
            },
        )
    };
    assert_eq!(call().await.unwrap(), 42);
    assert_eq!(call().await.unwrap(), 42);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
    let other = idem_core::run(
        &db.store,
        Options::new(SCOPE),
        Some("order-1".to_string()),
        Fingerprint::of("other payload").map_err(Error::from),
        NoReplay,
        async { Ok::<u64, Error>(0) },
    )
    .await;
    assert!(matches!(other, Err(Error::Mismatch)), "got {other:?}");
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_that_commits_leaves_the_row_and_the_key_and_replays() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let mut tx = db.pool.begin().await.unwrap();
    let first = place_order(&db, &mut tx, "o-commit", &runs, Duration::ZERO, false)
        .await
        .expect("first call");
    tx.commit().await.unwrap();
    assert_eq!(db.ledger_rows("o-commit").await, 1);
    assert_eq!(db.key_rows("o-commit").await, 1);

    // A retry, in a new transaction: replayed, the body does not run, nothing is written.
    let mut tx = db.pool.begin().await.unwrap();
    let retry = place_order(&db, &mut tx, "o-commit", &runs, Duration::ZERO, false)
        .await
        .expect("retry");
    tx.commit().await.unwrap();
    assert_eq!(retry, first, "the retry gets the committed outcome");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
    assert_eq!(db.ledger_rows("o-commit").await, 1);

    // The standalone view of the same record agrees.
    let key = RecordKey::new(SCOPE, "o-commit").unwrap();
    match db.store.get(&key).await.unwrap() {
        Some(idem_core::store::Record::Completed { outcome, .. }) => {
            assert_eq!(outcome.bytes().as_ref(), first.to_string().as_bytes());
        }
        other => panic!("expected a completed record, got {other:?}"),
    }
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_body_leaves_neither_row_nor_key_even_if_the_caller_commits() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);

    // The documented way: roll back on Err.
    let mut tx = db.pool.begin().await.unwrap();
    let failed = place_order(&db, &mut tx, "o-fail", &runs, Duration::ZERO, true).await;
    assert!(matches!(failed, Err(AppError::Declined)), "got {failed:?}");
    tx.rollback().await.unwrap();
    assert_eq!(db.ledger_rows("o-fail").await, 0);
    assert_eq!(db.key_rows("o-fail").await, 0);

    // A careless caller that commits after Err: its own row commits, but no key record does,
    // so the key is not blocked and not replayed with a missing outcome.
    let mut tx = db.pool.begin().await.unwrap();
    let failed = place_order(&db, &mut tx, "o-fail-commit", &runs, Duration::ZERO, true).await;
    assert!(matches!(failed, Err(AppError::Declined)), "got {failed:?}");
    tx.commit().await.unwrap();
    assert_eq!(
        db.key_rows("o-fail-commit").await,
        0,
        "no key without outcome"
    );

    // The key is free: the next attempt runs the body.
    let mut tx = db.pool.begin().await.unwrap();
    let ok = place_order(&db, &mut tx, "o-fail", &runs, Duration::ZERO, false).await;
    assert!(ok.is_ok(), "got {ok:?}");
    tx.commit().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(db.ledger_rows("o-fail").await, 1);
    assert_eq!(db.key_rows("o-fail").await, 1);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rolled_back_after_ok_leaves_neither_row_nor_key() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let mut tx = db.pool.begin().await.unwrap();
    let placed = place_order(&db, &mut tx, "o-rollback", &runs, Duration::ZERO, false).await;
    assert!(placed.is_ok(), "got {placed:?}");
    // Something else in the caller's transaction fails: it rolls back.
    tx.rollback().await.unwrap();
    assert_eq!(db.ledger_rows("o-rollback").await, 0);
    assert_eq!(db.key_rows("o-rollback").await, 0);

    // So a retry runs the body again (and this time commits).
    let mut tx = db.pool.begin().await.unwrap();
    place_order(&db, &mut tx, "o-rollback", &runs, Duration::ZERO, false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(db.ledger_rows("o-rollback").await, 1);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_stays_usable_after_a_refused_claim() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let mut tx = db.pool.begin().await.unwrap();
    place_order(&db, &mut tx, "o-usable", &runs, Duration::ZERO, false)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Same key, other payload: Mismatch, nothing runs, and the caller's transaction goes on.
    let mut tx = db.pool.begin().await.unwrap();
    let ledger = db.ledger();
    let mismatch: Result<i64, AppError> = run_in_transaction(
        &db.store,
        &mut tx,
        Options::new(SCOPE),
        Some("o-usable".to_string()),
        Fingerprint::of("another payload").map_err(Error::from),
        NoReplay,
        async |_tx: &mut Transaction<'static, Postgres>| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        },
    )
    .await;
    assert!(
        matches!(mismatch, Err(AppError::Idem(Error::Mismatch))),
        "got {mismatch:?}"
    );
    sqlx::query(&format!(
        "INSERT INTO {ledger} (order_ref, amount) VALUES ('after-mismatch', 1)"
    ))
    .execute(&mut *tx)
    .await
    .expect("the transaction is still usable");
    tx.commit().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(db.ledger_rows("after-mismatch").await, 1);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_outside_a_transaction_is_refused_before_the_body() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let mut conn = db.pool.acquire().await.unwrap();
    let refused: Result<i64, AppError> = run_in_transaction(
        &db.store,
        &mut conn,
        Options::new(SCOPE),
        Some("o-autocommit".to_string()),
        Fingerprint::of("o-autocommit").map_err(Error::from),
        NoReplay,
        async |_conn: &mut sqlx::pool::PoolConnection<Postgres>| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        },
    )
    .await;
    match refused {
        Err(AppError::Idem(Error::Store(err))) => {
            assert!(err.to_string().contains("transaction"), "{err}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(db.key_rows("o-autocommit").await, 0);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_transactions_with_one_key_write_one_row() {
    let Some(url) = database_url() else { return };
    let db = Arc::new(Db::new(&url).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                let mut tx = db.pool.begin().await.unwrap();
                let placed = place_order(
                    &db,
                    &mut tx,
                    "o-race",
                    &runs,
                    Duration::from_millis(300),
                    false,
                )
                .await;
                if placed.is_ok() {
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
                placed
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().expect("every caller gets the outcome"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one body ran");
    assert!(
        outcomes.iter().all(|o| *o == outcomes[0]),
        "everyone gets the same outcome: {outcomes:?}"
    );
    assert_eq!(db.ledger_rows("o-race").await, 1);
    Arc::try_unwrap(db).ok().unwrap().drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_runs_the_body_when_the_first_transaction_rolls_back() {
    let Some(url) = database_url() else { return };
    let db = Arc::new(Db::new(&url).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let first = {
        let (db, runs) = (db.clone(), runs.clone());
        tokio::spawn(async move {
            let mut tx = db.pool.begin().await.unwrap();
            let placed = place_order(
                &db,
                &mut tx,
                "o-handoff",
                &runs,
                Duration::from_millis(400),
                false,
            )
            .await;
            // The caller's own later step fails: roll back.
            tx.rollback().await.unwrap();
            placed
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tx = db.pool.begin().await.unwrap();
    let second = place_order(&db, &mut tx, "o-handoff", &runs, Duration::ZERO, false).await;
    tx.commit().await.unwrap();
    let first = first.await.unwrap().expect("first body ran");
    let second = second.expect("second runs the body itself");
    assert_ne!(first, second, "the second wrote its own row");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(db.ledger_rows("o-handoff").await, 1);
    Arc::try_unwrap(db).ok().unwrap().drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_times_out_or_is_rejected_while_the_first_transaction_is_open() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let mut first = db.pool.begin().await.unwrap();
    place_order(&db, &mut first, "o-slow", &runs, Duration::ZERO, false)
        .await
        .unwrap();
    // `first` is still open: the duplicate blocks on the key.
    for (concurrent, wait) in [
        (Concurrency::Wait, Duration::from_millis(300)),
        (Concurrency::Reject, Duration::from_secs(30)),
    ] {
        let mut tx = db.pool.begin().await.unwrap();
        let started = std::time::Instant::now();
        let ledger = db.ledger();
        let dup: Result<i64, AppError> = run_in_transaction(
            &db.store,
            &mut tx,
            Options::new(SCOPE).wait(wait).concurrent(concurrent),
            Some("o-slow".to_string()),
            Fingerprint::of(&"o-slow").map_err(Error::from),
            NoReplay,
            async |_tx: &mut Transaction<'static, Postgres>| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            },
        )
        .await;
        let took = started.elapsed();
        match (concurrent, &dup) {
            (Concurrency::Wait, Err(AppError::Idem(Error::WaitTimeout))) => {
                assert!(took >= Duration::from_millis(250), "waited {took:?}");
            }
            (Concurrency::Reject, Err(AppError::Idem(Error::InProgress { .. }))) => {
                assert!(took < Duration::from_secs(2), "rejected after {took:?}");
            }
            _ => panic!("{concurrent:?}: got {dup:?}"),
        }
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // The duplicate's transaction is still usable, and its lock_timeout is as it was.
        let timeout: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
            .fetch_one(&mut *tx)
            .await
            .expect("usable after the timeout");
        assert_eq!(timeout, "0", "lock_timeout restored");
        sqlx::query(&format!(
            "INSERT INTO {ledger} (order_ref, amount) VALUES ('dup-side-effect', 1)"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
    }
    first.commit().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(db.ledger_rows("o-slow").await, 1);
    db.drop_tables().await;
}

/// The claim sets `lock_timeout` to the call's `wait` for its own statement only: after a call
/// that ran the body and after one that replayed, the caller's transaction has the
/// `lock_timeout` it had before, whether it had none (`0`) or one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_lock_timeout_is_restored_after_the_claim() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let lock_timeout = async |tx: &mut PgConnection| -> String {
        sqlx::query_scalar("SELECT current_setting('lock_timeout')")
            .fetch_one(tx)
            .await
            .unwrap()
    };
    for (callers, order_ref) in [(None, "o-timeout-none"), (Some("1min"), "o-timeout-own")] {
        let expected = callers.unwrap_or("0");
        for replay in [false, true] {
            let mut tx = db.pool.begin().await.unwrap();
            if let Some(setting) = callers {
                sqlx::query(&format!("SET LOCAL lock_timeout = '{setting}'"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            assert_eq!(lock_timeout(&mut tx).await, expected);
            place_order(&db, &mut tx, order_ref, &runs, Duration::ZERO, false)
                .await
                .unwrap();
            assert_eq!(
                lock_timeout(&mut tx).await,
                expected,
                "{order_ref}, replay: {replay}"
            );
            tx.commit().await.unwrap();
        }
        assert_eq!(
            db.ledger_rows(order_ref).await,
            1,
            "the second call replayed"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    db.drop_tables().await;
}

/// The worker half of `three_processes_with_one_key_write_one_row`: does nothing unless the
/// parent test started this binary with `IDEM_PG_TEST_WORKER` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_worker() {
    let Ok(name) = std::env::var(WORKER_VAR) else {
        return;
    };
    let url = std::env::var(URL_VAR).expect("worker needs the database url");
    let db = Db::named(&url, name).await;
    let runs = AtomicUsize::new(0);
    let mut tx = db.pool.begin().await.unwrap();
    let placed = place_order(
        &db,
        &mut tx,
        "o-processes",
        &runs,
        Duration::from_millis(500),
        false,
    )
    .await
    .expect("worker's call");
    tx.commit().await.unwrap();
    // On its own line: the test harness prints the test's name before it.
    println!(
        "\nIDEM_WORKER outcome={placed} ran={}",
        runs.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_with_one_key_write_one_row() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "process_worker",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_VAR, &db.name)
                .env(URL_VAR, &url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut ran = 0;
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("IDEM_WORKER ").map(|(_, rest)| rest.trim()))
            .unwrap_or_else(|| panic!("worker printed no outcome: {stdout}"));
        let (outcome, runs) = line.split_once(' ').unwrap();
        outcomes.push(outcome.trim_start_matches("outcome=").to_string());
        ran += runs.trim_start_matches("ran=").parse::<usize>().unwrap();
    }
    assert_eq!(ran, 1, "exactly one process ran the body");
    assert!(
        outcomes.iter().all(|o| *o == outcomes[0]),
        "every process got the same outcome: {outcomes:?}"
    );
    assert_eq!(db.ledger_rows("o-processes").await, 1);
    db.drop_tables().await;
}

async fn claim(store: &PgStore, key: &RecordKey, lease: Duration) -> ClaimToken {
    let owner = Owner::new();
    let request = ClaimRequest {
        key,
        fingerprint: Fingerprint::from_bytes([1; 32]),
        owner,
        lease,
    };
    match store.claim(&request).await.unwrap() {
        Claim::Acquired { fence, .. } => ClaimToken::new(key.clone(), owner, fence),
        other => panic!("expected Acquired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_expired_deletes_only_expired_rows_from_several_purgers() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let store = &db.store;
    let key = |k: &str| RecordKey::new("tests::purge", k.to_string()).unwrap();
    let short = Duration::from_millis(200);
    let long = Duration::from_secs(600);
    let done = Outcome::new(OutcomeKind::Ok, b"1".to_vec());
    // Expired: 5 completed with a short ttl, 2 in progress with a short lease.
    for i in 0..5 {
        let token = claim(store, &key(&format!("done-short-{i}")), long).await;
        assert_eq!(
            store.complete(&token, &done, short).await.unwrap(),
            Fence::Held
        );
    }
    for i in 0..2 {
        claim(store, &key(&format!("held-short-{i}")), short).await;
    }
    // Live: completed with a long ttl, in progress with a long lease.
    let token = claim(store, &key("done-long"), long).await;
    assert_eq!(
        store.complete(&token, &done, long).await.unwrap(),
        Fence::Held
    );
    let live = claim(store, &key("held-long"), long).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Before any purge, reads already treat expired rows as absent.
    assert_eq!(store.get(&key("done-short-0")).await.unwrap(), None);
    assert_eq!(store.get(&key("held-short-0")).await.unwrap(), None);
    assert!(store.get(&key("done-long")).await.unwrap().is_some());
    assert!(store.get(&key("held-long")).await.unwrap().is_some());

    let purgers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.purge_expired(2).await })
        })
        .collect();
    let mut deleted = 0;
    for purger in purgers {
        deleted += purger.await.unwrap().expect("purge");
    }
    assert_eq!(deleted, 7, "every expired row deleted once");
    let left: Vec<String> =
        sqlx::query_scalar(&format!("SELECT key FROM {} ORDER BY key", db.name))
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, ["done-long", "held-long"]);
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    // The live claim is untouched and still its holder's.
    assert_eq!(store.renew(&live, long).await.unwrap(), Fence::Held);
    // A purged key is new again, with a higher fence than before.
    let again = claim(store, &key("done-short-0"), long).await;
    assert!(again.fence() > live.fence());
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_give_typed_errors() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let key = RecordKey::new(SCOPE, "corrupt").unwrap();
    let token = claim(&db.store, &key, Duration::from_secs(60)).await;
    let outcome = Outcome::new(OutcomeKind::Ok, br#""not a number""#.to_vec());
    assert_eq!(
        db.store
            .complete(&token, &outcome, Duration::from_secs(60))
            .await
            .unwrap(),
        Fence::Held
    );
    // A value of another type under the same key: Codec, the body does not run.
    let runs = AtomicUsize::new(0);
    let call = || {
        idem_core::run(
            &db.store,
            Options::new(SCOPE),
            Some("corrupt".to_string()),
            Ok(Fingerprint::from_bytes([1; 32])),
            NoReplay,
            async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u64, Error>(1)
            },
        )
    };
    let got = call().await;
    assert!(matches!(got, Err(Error::Codec(_))), "got {got:?}");
    // A fingerprint of the wrong length: a Store error naming the corruption.
    sqlx::query(&format!(
        "UPDATE {} SET fingerprint = '\\x0102'::bytea WHERE key = 'corrupt'",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    match call().await {
        Err(Error::Store(err)) => {
            assert!(err.to_string().contains("fingerprint is 2 bytes"), "{err}")
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(db.store.get(&key).await.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        db.key_rows("corrupt").await,
        1,
        "the record is left as it was"
    );
    db.drop_tables().await;
}

/// Cuts the database away before a call and while a body runs, on a pool that pings each
/// connection it hands out (sqlx's default) and on one that does not (what `PgStore::connect`
/// builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_unreachable_mid_run_fails_closed_and_the_pool_recovers() {
    let Some(url) = database_url() else { return };
    for test_before_acquire in [true, false] {
        unreachable_mid_run(&url, test_before_acquire).await;
    }
}

async fn unreachable_mid_run(url: &str, test_before_acquire: bool) {
    const POOL_SIZE: u32 = 2;
    let db = Db::new(url).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a postgres url");
    let proxy = Proxy::start((options.get_host().to_string(), options.get_port())).await;
    let proxied = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(2))
        .test_before_acquire(test_before_acquire)
        .connect_with(options.host("127.0.0.1").port(proxy.port()))
        .await
        .expect("connect through the proxy");
    let store = PgStore::builder(proxied.clone())
        .table(db.name.clone())
        .build()
        .unwrap();
    let runs = AtomicUsize::new(0);
    let (proxy, runs) = (&proxy, &runs);
    let call = |key: &'static str, lease: Duration, cut_during_body: bool| {
        idem_core::run(
            &store,
            Options::new(SCOPE).lease(lease),
            Some(key.to_string()),
            Fingerprint::of(key).map_err(Error::from),
            NoReplay,
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                if cut_during_body {
                    // The database goes away while the body runs, and comes back shortly.
                    proxy.cut();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    proxy.restore();
                }
                Ok::<u64, Error>(n)
            },
        )
    };
    // After an outage, a pool that does not ping may still hold connections that died while
    // idle: each fails one claim (Error::Store, the body does not run) and is discarded.
    let after_outage = async |key: &'static str| {
        let mut failed = 0;
        loop {
            match call(key, Duration::from_secs(30), false).await {
                Ok(n) => break n,
                Err(Error::Store(err)) if !test_before_acquire && failed < POOL_SIZE => {
                    eprintln!("{key}: a dead connection failed the claim: {err}");
                    failed += 1;
                }
                Err(err) => panic!("{key} (test_before_acquire {test_before_acquire}): {err:?}"),
            }
        }
    };

    assert_eq!(
        call("before", Duration::from_secs(30), false)
            .await
            .unwrap(),
        1
    );

    proxy.cut();
    let started = std::time::Instant::now();
    let during = call("during", Duration::from_secs(30), false).await;
    assert!(
        matches!(during, Err(Error::Store(_))),
        "an unreachable database gives Error::Store, got {during:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "no body runs without a claim"
    );
    assert_eq!(db.key_rows("during").await, 0);

    proxy.restore();
    assert_eq!(
        after_outage("during").await,
        2,
        "the pool recovers and the key was never taken"
    );
    assert_eq!(after_outage("before").await, 1, "replayed after recovery");

    // Cut while the body runs: the outcome is stored once the database is back (within the
    // lease), the caller gets the body's result, and a retry replays it.
    let got = call("mid-body", Duration::from_secs(8), true).await;
    assert_eq!(got.unwrap(), 3);
    assert_eq!(
        after_outage("mid-body").await,
        3,
        "the outcome was stored after the outage"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    proxied.close().await;
    db.drop_tables().await;
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum ChargeError {
    Declined { reason: String },
    Idem(String),
}

impl From<Error> for ChargeError {
    fn from(err: Error) -> Self {
        ChargeError::Idem(err.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayable_errors_commit_with_the_transaction_on_a_sqlx_transaction() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    let ledger = db.ledger();
    let charge = async |tx: &mut Transaction<'static, Postgres>| {
        run_in_transaction(
            &db.store,
            tx,
            Options::new("tests::charge"),
            Some("card-1".to_string()),
            Fingerprint::of("card-1").map_err(Error::from),
            idem_core::ReplayErr(|err: &ChargeError| matches!(err, ChargeError::Declined { .. })),
            async |tx: &mut Transaction<'static, Postgres>| {
                runs.fetch_add(1, Ordering::SeqCst);
                // The decline is recorded in the application's own table too.
                sqlx::query(&format!(
                    "INSERT INTO {ledger} (order_ref, amount) VALUES ('card-1', 0)"
                ))
                .execute(&mut **tx)
                .await
                .map_err(|err| ChargeError::Idem(err.to_string()))?;
                Err::<u64, _>(ChargeError::Declined {
                    reason: "insufficient funds".into(),
                })
            },
        )
        .await
    };
    let declined = ChargeError::Declined {
        reason: "insufficient funds".into(),
    };
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(charge(&mut tx).await, Err(declined));
    tx.commit().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        charge(&mut tx).await,
        Err(ChargeError::Declined {
            reason: "insufficient funds".into()
        }),
        "the stored decline is replayed"
    );
    tx.commit().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(db.ledger_rows("card-1").await, 1);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_call_waits_for_a_standalone_holder_then_replays() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    // A standalone call holds the key for a while, then completes.
    let standalone = {
        let store = db.store.clone();
        tokio::spawn(async move {
            idem_core::run(
                &store,
                Options::new(SCOPE),
                Some("o-mixed".to_string()),
                Fingerprint::of(&"o-mixed").map_err(Error::from),
                NoReplay,
                async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Ok::<i64, Error>(77)
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let runs = AtomicUsize::new(0);
    let mut tx = db.pool.begin().await.unwrap();
    let got = place_order(&db, &mut tx, "o-mixed", &runs, Duration::ZERO, false).await;
    tx.commit().await.unwrap();
    assert_eq!(standalone.await.unwrap().unwrap(), 77);
    assert_eq!(
        got.unwrap(),
        77,
        "the transactional duplicate replays the standalone outcome"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(db.ledger_rows("o-mixed").await, 0);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_database_cannot_store_is_a_store_error_and_nothing_runs() {
    let Some(url) = database_url() else { return };
    let db = Db::new(&url).await;
    let runs = AtomicUsize::new(0);
    // PostgreSQL text cannot hold NUL: the claim fails, typed, and the body does not run.
    let got = idem_core::run(
        &db.store,
        Options::new(SCOPE),
        Some("nul\0key".to_string()),
        Ok(Fingerprint::from_bytes([1; 32])),
        NoReplay,
        async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<u64, Error>(1)
        },
    )
    .await;
    match got {
        Err(Error::Store(err)) => assert_eq!(err.context(), "claim"),
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // The store is still usable.
    let ok = idem_core::run(
        &db.store,
        Options::new(SCOPE),
        Some("fine".to_string()),
        Ok(Fingerprint::from_bytes([1; 32])),
        NoReplay,
        async { Ok::<u64, Error>(2) },
    )
    .await;
    assert_eq!(ok.unwrap(), 2);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_leaves_no_key_once_its_transaction_is_dropped() {
    let Some(url) = database_url() else { return };
    let db = Arc::new(Db::new(&url).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let panicked = {
        let (db, runs) = (db.clone(), runs.clone());
        tokio::spawn(async move {
            let mut tx = db.pool.begin().await.unwrap();
            let _: Result<i64, AppError> = run_in_transaction(
                &db.store,
                &mut *tx,
                Options::new(SCOPE),
                Some("o-panic".to_string()),
                Fingerprint::of("o-panic").map_err(Error::from),
                NoReplay,
                async |_conn: &mut PgConnection| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    panic!("the body panics");
                },
            )
            .await;
        })
        .await
    };
    assert!(panicked.unwrap_err().is_panic(), "the panic propagates");
    let mut tx = db.pool.begin().await.unwrap();
    let placed = place_order(&db, &mut tx, "o-panic", &runs, Duration::ZERO, false).await;
    tx.commit().await.unwrap();
    assert!(placed.is_ok(), "the key is free again: {placed:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(db.ledger_rows("o-panic").await, 1);
    Arc::try_unwrap(db).ok().unwrap().drop_tables().await;
}
