//! [`PgStore`]: idempotency records in PostgreSQL, standalone or inside the application's own
//! transaction.
//!
//! # Two modes
//!
//! - **Standalone** ([`PgStore`] as a [`Store`], with [`run`](crate::run) or
//!   `#[idempotent(store = ...)]`): the same contract as the Redis store. A claim, or the
//!   takeover of an expired lease, is one statement; completion, release and renewal are fenced
//!   by owner and fence number; a replay costs one statement, a first call two (see
//!   [round trips](PgStore#round-trips)). The key record and the application's writes commit
//!   separately, exactly as with any other store.
//! - **Transactional** ([`run_in_transaction`]): the key record is inserted and completed inside
//!   the caller's transaction, so the application's writes and the key record commit together
//!   or not at all. A concurrent duplicate blocks on the record's primary key until the first
//!   transaction ends (bounded by `wait`), then replays the committed outcome, or runs the body
//!   itself if the first transaction rolled back. A call adds four round trips to the
//!   transaction.
//!
//! # Time
//!
//! Leases and expiries are judged by the database's clock: every statement uses
//! `statement_timestamp()` (in autocommit the same as `now()`, and still correct inside a long
//! caller transaction, where `now()` would be the transaction's start).
//!
//! # The table
//!
//! [`PgStore::MIGRATION_SQL`] creates it under the default name `idem_records`; run it with your
//! own migrations, or call [`PgStore::migrate`]. Fence numbers come from a sequence beside the
//! table, so they keep growing across release, expiry and [`PgStore::purge_expired`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use tokio::time::Instant;

use crate::call::{ByJson, Concurrency, ErrorPolicy, Options, outcome_of, record_key, replay};
use crate::error::{Error, StoreError};
use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;
use crate::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record, Store, backoff,
};
use crate::trace::event;

/// The table name used unless [`PgStoreBuilder::table`] names another.
///
/// ```
/// assert!(idem_core::postgres::PgStore::MIGRATION_SQL.contains(idem_core::postgres::DEFAULT_TABLE));
/// ```
pub const DEFAULT_TABLE: &str = "idem_records";

/// The longest time a lease or TTL is stored for; longer durations are clamped to it (about
/// 100 years), so no duration can overflow the database's timestamps.
const MAX_STORED: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How long a `concurrent = "reject"` duplicate waits for the first transaction's row lock in
/// transactional mode before it reports [`Error::InProgress`].
const REJECT_LOCK_TIMEOUT: Duration = Duration::from_millis(20);

/// The retry hint of [`Error::InProgress`] in transactional mode, where the holder's
/// transaction has no lease to read.
const TX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often a claim statement is repeated when it neither claimed nor saw a live record (a
/// concurrent claim changed the record between the statement's snapshot and its insert).
const CLAIM_RACE_RETRIES: u32 = 16;

/// The database steps of [`run_in_transaction`] are boxed as `dyn Future + Send`: without the
/// erasure, rustc cannot prove the generic caller's future `Send` (the "implementation of
/// `Send` is not general enough" limitation with sqlx executors), and a transactional call
/// could not be spawned.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An idempotency [`Store`] in PostgreSQL, on an [`sqlx::PgPool`].
///
/// A cheap handle: clones share the pool. See the [module documentation](self) for the
/// standalone and transactional modes, and [`run_in_transaction`] for the latter.
///
/// # Round trips
///
/// In standalone mode a replay is one statement (the claim, which finds the completed record
/// and returns its outcome) and a first call two (claim, complete), plus one renewal per third
/// of the lease for a body that runs longer than that. On the pool [`PgStore::connect`]
/// builds, each statement is one round trip on the caller's path. A pool with sqlx's default
/// `test_before_acquire(true)` pings the connection before each statement: one round trip
/// more each. (sqlx also pings every connection that goes back to the pool, in the background,
/// after the caller has its answer.)
///
/// In transactional mode ([`run_in_transaction`]) a call adds four round trips to the caller's
/// transaction: `SAVEPOINT` with `SET LOCAL lock_timeout`; the claim; the caller's
/// `lock_timeout` again with `RELEASE SAVEPOINT`; the completion (or, after the body's `Err`,
/// the record's deletion). A replay adds three.
///
/// # Examples
///
/// ```no_run
/// use idem_core::postgres::PgStore;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// store.migrate().await?;
/// idem_core::set_default_store(store.clone())?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    sql: Arc<Sql>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PgStore`] with a table name other than [`DEFAULT_TABLE`].
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use idem_core::postgres::PgStore;
///
/// let store = PgStore::builder(pool).table("billing.idem_keys").build()?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Debug)]
pub struct PgStoreBuilder {
    pool: PgPool,
    table: String,
}

impl PgStoreBuilder {
    /// The table that holds the records: `name` or `schema.name`, each part made of lowercase
    /// ASCII letters, digits and `_`, not starting with a digit, the name at most 48 bytes
    /// (so the names derived from it fit PostgreSQL's 63-byte identifiers).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app").unwrap();
    /// let store = idem_core::postgres::PgStore::builder(pool).table("billing.idem_keys").build();
    /// assert_eq!(store.unwrap().table(), "billing.idem_keys");
    /// # }
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`InvalidTableName`] when the table name does not follow the rules of
    /// [`table`](Self::table).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app").unwrap();
    /// use idem_core::postgres::PgStore;
    /// assert!(PgStore::builder(pool.clone()).table("idem_keys").build().is_ok());
    /// assert!(PgStore::builder(pool).table("Idem Keys").build().is_err());
    /// # }
    /// ```
    pub fn build(self) -> Result<PgStore, InvalidTableName> {
        let sql = Sql::new(&self.table)?;
        Ok(PgStore {
            pool: self.pool,
            sql: Arc::new(sql),
        })
    }
}

/// A table name that [`PgStoreBuilder::build`] refused.
///
/// ```
/// # async fn demo() {
/// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app").unwrap();
/// let err = idem_core::postgres::PgStore::builder(pool).table("drop table x;").build().unwrap_err();
/// assert!(err.to_string().contains("drop table x;"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTableName {
    name: String,
}

impl std::fmt::Display for InvalidTableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid table name {:?}: use `name` or `schema.name` with lowercase ASCII letters, digits and `_` (name at most 48 bytes)",
            self.name
        )
    }
}

impl std::error::Error for InvalidTableName {}

/// A stored row that idem cannot read: a fingerprint of the wrong length, an unknown status,
/// a negative fence. Reported as [`Error::Store`] with this as its source; the row is left as
/// it is.
///
/// ```
/// use idem_core::postgres::CorruptRecord;
/// let err: &dyn std::error::Error = &CorruptRecord::new("fingerprint is 3 bytes, not 32");
/// assert!(err.to_string().contains("fingerprint"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    what: String,
}

impl CorruptRecord {
    /// A corrupt-record error describing what is wrong (see the type's example).
    pub fn new(what: impl Into<String>) -> Self {
        CorruptRecord { what: what.into() }
    }
}

impl std::fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt idempotency record: {}", self.what)
    }
}

impl std::error::Error for CorruptRecord {}

/// [`run_in_transaction`] was given a connection that is not inside a transaction.
///
/// Reported as [`Error::Store`] with this as its source; nothing was written and the body did
/// not run.
///
/// ```
/// let err = idem_core::postgres::NotInTransaction;
/// assert!(err.to_string().contains("transaction"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotInTransaction;

impl std::fmt::Display for NotInTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "run_in_transaction needs a connection inside a transaction: pass a sqlx::Transaction, or BEGIN first",
        )
    }
}

impl std::error::Error for NotInTransaction {}

/// The statements of one table, formatted once when the store is built.
struct Sql {
    table: String,
    migration: String,
    claim: String,
    complete: String,
    release: String,
    renew: String,
    get: String,
    purge: String,
}

fn valid_part(part: &str, max: usize) -> bool {
    !part.is_empty()
        && part.len() <= max
        && !part.as_bytes()[0].is_ascii_digit()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Sql {
    fn new(table: &str) -> Result<Sql, InvalidTableName> {
        let invalid = || InvalidTableName {
            name: table.to_string(),
        };
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table),
        };
        if !valid_part(name, 48) || schema.is_some_and(|s| !valid_part(s, 63)) {
            return Err(invalid());
        }
        let qualify = |object: &str| match schema {
            Some(schema) => format!("\"{schema}\".\"{object}\""),
            None => format!("\"{object}\""),
        };
        let t = qualify(name);
        let seq = qualify(&format!("{name}_fence"));
        let seq_literal = match schema {
            Some(schema) => format!("{schema}.{name}_fence"),
            None => format!("{name}_fence"),
        };
        let index = format!("\"{name}_expires_at\"");
        let schema_sql = match schema {
            Some(schema) => format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n"),
            None => String::new(),
        };
        let migration = format!(
            "{schema_sql}CREATE SEQUENCE IF NOT EXISTS {seq};
CREATE TABLE IF NOT EXISTS {t} (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    status       text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
    owner        bytea       NOT NULL,
    fence        bigint      NOT NULL,
    lease_until  timestamptz,
    outcome_kind text        CHECK (outcome_kind IN ('ok', 'err')),
    outcome      bytea,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at);
"
        );
        let micros = "* interval '1 microsecond'";
        let left = "GREATEST(0, EXTRACT(EPOCH FROM (expires_at - statement_timestamp())) * 1000000)::bigint";
        // One statement: read the record as it was (`prev`), and insert a claim unless a live
        // record exists; a conflicting row is taken over only if it has expired, as judged
        // again on the row's latest version after any concurrent writer has finished.
        let claim = format!(
            "WITH prev AS (
    SELECT status, fingerprint, outcome_kind, outcome,
           expires_at > statement_timestamp() AS live, {left} AS left_us
    FROM {t} WHERE scope = $1 AND key = $2
), claimed AS (
    INSERT INTO {t} AS r
        (scope, key, fingerprint, status, owner, fence, lease_until, outcome_kind, outcome, expires_at)
    SELECT $1, $2, $3, 'in_progress', $4, nextval('{seq_literal}'),
           statement_timestamp() + $5::bigint {micros}, NULL, NULL,
           statement_timestamp() + $5::bigint {micros}
    WHERE NOT EXISTS (SELECT 1 FROM prev WHERE live)
    ON CONFLICT (scope, key) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, owner = EXCLUDED.owner,
        fence = EXCLUDED.fence, lease_until = EXCLUDED.lease_until, outcome_kind = NULL,
        outcome = NULL, expires_at = EXCLUDED.expires_at
    WHERE r.expires_at <= statement_timestamp()
    RETURNING r.fence
)
SELECT claimed.fence AS claimed_fence, prev.status, prev.fingerprint, prev.outcome_kind,
       prev.outcome, prev.live, prev.left_us
FROM (SELECT 1) AS one LEFT JOIN claimed ON true LEFT JOIN prev ON true"
        );
        let held =
            "scope = $1 AND key = $2 AND status = 'in_progress' AND owner = $3 AND fence = $4";
        let complete = format!(
            "UPDATE {t} SET status = 'completed', lease_until = NULL, outcome_kind = $5, outcome = $6,
    expires_at = statement_timestamp() + $7::bigint {micros}
WHERE {held}"
        );
        let release = format!("DELETE FROM {t} WHERE {held}");
        let renew = format!(
            "UPDATE {t} SET lease_until = statement_timestamp() + $5::bigint {micros},
    expires_at = statement_timestamp() + $5::bigint {micros}
WHERE {held}"
        );
        let get = format!(
            "SELECT status, fingerprint, owner, fence, outcome_kind, outcome, {left} AS left_us
FROM {t} WHERE scope = $1 AND key = $2 AND expires_at > statement_timestamp()"
        );
        let purge = format!(
            "WITH doomed AS (
    SELECT scope, key FROM {t} WHERE expires_at <= statement_timestamp()
    LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM {t} AS r USING doomed
WHERE r.scope = doomed.scope AND r.key = doomed.key AND r.expires_at <= statement_timestamp()"
        );
        Ok(Sql {
            table: table.to_string(),
            migration,
            claim,
            complete,
            release,
            renew,
            get,
            purge,
        })
    }
}

impl PgStore {
    /// The migration that creates the default table (`idem_records`), its fence sequence
    /// (`idem_records_fence`) and its expiry index, for your own migration tool. Idempotent
    /// (`IF NOT EXISTS`). For another table name use [`PgStore::migration_sql`].
    ///
    /// ```
    /// let sql = idem_core::postgres::PgStore::MIGRATION_SQL;
    /// assert!(sql.contains("PRIMARY KEY (scope, key)"));
    /// ```
    pub const MIGRATION_SQL: &'static str = include_str!("postgres/migration.sql");

    /// A store on `pool` with the default table, [`DEFAULT_TABLE`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sqlx::Error> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/app").await?;
    /// let store = idem_core::postgres::PgStore::new(pool);
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            pool,
            sql: Arc::new(Sql::new(DEFAULT_TABLE).expect("the default table name is valid")),
        }
    }

    /// A builder, to choose the table name.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = idem_core::postgres::PgStore::builder(pool).table("idem_keys").build()?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(pool: PgPool) -> PgStoreBuilder {
        PgStoreBuilder {
            pool,
            table: DEFAULT_TABLE.to_string(),
        }
    }

    /// Connects a pool to `url` and makes a store on it with the default table.
    ///
    /// The pool has sqlx's defaults but one: it does not ping a connection each time one is
    /// taken from it ([`test_before_acquire(false)`](sqlx::pool::PoolOptions::test_before_acquire)).
    /// That ping is a round trip on the caller's path before every statement, so a replay would
    /// wait for two round trips instead of one. Without it, a connection that died while idle
    /// (the database restarted, a proxy dropped it) shows up as a failed statement instead: a
    /// claim that fails is [`Error::Store`] and the body does not run, completing the outcome is
    /// retried for up to half the lease, and the pool discards the dead connection when it comes
    /// back (sqlx still pings a connection on its return, after the caller has its answer). So
    /// each connection that died while idle costs at most one failed statement.
    ///
    /// For other pool settings build the pool yourself and pass it to [`PgStore::new`] or
    /// [`PgStore::builder`]; its `test_before_acquire` is then yours to choose (sqlx's default
    /// is `true`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] (context `"connect"`) when the database cannot be reached.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), idem_core::StoreError> {
    /// let store = idem_core::postgres::PgStore::connect("postgres://postgres@127.0.0.1/app").await?;
    /// assert!(!store.pool().options().get_test_before_acquire());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|err| StoreError::new("connect", err))?;
        Ok(PgStore::new(pool))
    }

    /// The pool the store uses.
    ///
    /// ```no_run
    /// # fn demo(store: idem_core::postgres::PgStore) {
    /// let pool: &sqlx::PgPool = store.pool();
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table the store uses, as given to the builder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app").unwrap();
    /// let store = idem_core::postgres::PgStore::new(pool);
    /// assert_eq!(store.table(), "idem_records");
    /// # }
    /// ```
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// The migration for this store's table: [`PgStore::MIGRATION_SQL`] with its name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let store = idem_core::postgres::PgStore::builder(pool).table("idem_keys").build()?;
    /// assert!(store.migration_sql().contains("\"idem_keys\""));
    /// # Ok(())
    /// # }
    /// ```
    pub fn migration_sql(&self) -> &str {
        &self.sql.migration
    }

    /// Creates the table, its sequence and its index if they do not exist. Safe to run from
    /// several processes at once (it takes an advisory lock).
    ///
    /// # Errors
    ///
    /// [`StoreError`] (context `"migrate"`) when the statements fail.
    ///
    /// ```no_run
    /// # async fn demo(store: idem_core::postgres::PgStore) -> Result<(), idem_core::StoreError> {
    /// store.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let map = |err| StoreError::new("migrate", err);
        let mut tx = self.pool.begin().await.map_err(map)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('idem_core::postgres::migrate'))")
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        sqlx::raw_sql(&self.sql.migration)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)
    }

    /// Deletes expired records (completed past their TTL, in-progress past their lease) in
    /// batches of at most `batch` rows, each batch its own short statement, until a batch
    /// finds fewer; returns how many rows were deleted.
    ///
    /// Safe to run from several processes at once: each batch locks its rows with
    /// `FOR UPDATE SKIP LOCKED`, so concurrent purges share the work instead of waiting on each
    /// other, and a row that a claim is taking over at that moment is skipped. Reads already
    /// treat expired rows as absent, so purging only reclaims space.
    ///
    /// # Errors
    ///
    /// [`StoreError`] (context `"purge_expired"`) when a batch fails; earlier batches stay
    /// deleted.
    ///
    /// ```no_run
    /// # async fn demo(store: idem_core::postgres::PgStore) -> Result<(), idem_core::StoreError> {
    /// // From a periodic job:
    /// let deleted = store.purge_expired(1_000).await?;
    /// println!("purged {deleted} expired idempotency records");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_expired(&self, batch: u32) -> Result<u64, StoreError> {
        if batch == 0 {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let deleted = sqlx::query(&self.sql.purge)
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await
                .map_err(|err| StoreError::new("purge_expired", err))?
                .rows_affected();
            total += deleted;
            if deleted < u64::from(batch) {
                return Ok(total);
            }
        }
    }

    /// The claim statement on any connection: the pool's (standalone) or the caller's
    /// transaction (transactional mode).
    fn claim_on<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        request: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, ClaimFailure>> {
        Box::pin(async move {
            for _ in 0..CLAIM_RACE_RETRIES {
                let row = sqlx::query(&self.sql.claim)
                    .bind(request.key.scope())
                    .bind(request.key.key())
                    .bind(&request.fingerprint.as_bytes()[..])
                    .bind(&owner_bytes(request.owner)[..])
                    .bind(micros(request.lease))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(ClaimFailure::from_sqlx)?;
                if let Some(claim) =
                    read_claim(&row, request.fingerprint).map_err(ClaimFailure::Store)?
                {
                    return Ok(claim);
                }
                // A concurrent claim inserted or took over the record after this statement's
                // snapshot was taken: run it again to see that claim.
            }
            Err(ClaimFailure::Store(StoreError::msg(
                "claim: the record kept changing under concurrent claims; try again",
            )))
        })
    }
}

/// Why a claim statement failed.
enum ClaimFailure {
    /// The row lock was not granted within `lock_timeout` (transactional mode).
    LockTimeout,
    /// The connection is not in a transaction (transactional mode).
    NotInTransaction,
    Store(StoreError),
}

impl ClaimFailure {
    fn from_sqlx(err: sqlx::Error) -> Self {
        match sqlstate(&err).as_deref() {
            Some("55P03") => ClaimFailure::LockTimeout,
            Some("25P01") => ClaimFailure::NotInTransaction,
            _ => ClaimFailure::Store(StoreError::new("claim", err)),
        }
    }

    fn into_store_error(self) -> StoreError {
        match self {
            ClaimFailure::LockTimeout => StoreError::msg("claim: lock timeout"),
            ClaimFailure::NotInTransaction => StoreError::new("claim", NotInTransaction),
            ClaimFailure::Store(err) => err,
        }
    }
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

fn owner_bytes(owner: Owner) -> [u8; 16] {
    owner.as_u128().to_be_bytes()
}

/// A duration in whole microseconds for the database, clamped to [`MAX_STORED`].
fn micros(duration: Duration) -> i64 {
    // MAX_STORED is about 3.2e15 µs, well within i64.
    duration.min(MAX_STORED).as_micros() as i64
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn corrupt(context: &'static str, what: impl Into<String>) -> StoreError {
    StoreError::new(context, CorruptRecord::new(what))
}

fn column<'r, T>(row: &'r PgRow, name: &str, context: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|err| StoreError::new(context, err))
}

fn read_fingerprint(bytes: &[u8], context: &'static str) -> Result<Fingerprint, StoreError> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| {
        corrupt(
            context,
            format!("fingerprint is {} bytes, not 32", bytes.len()),
        )
    })?;
    Ok(Fingerprint::from_bytes(array))
}

fn read_outcome(
    kind: Option<&str>,
    bytes: Option<Vec<u8>>,
    context: &'static str,
) -> Result<Outcome, StoreError> {
    let kind = match kind {
        Some("ok") => OutcomeKind::Ok,
        Some("err") => OutcomeKind::Err,
        other => {
            return Err(corrupt(
                context,
                format!("completed record with outcome kind {other:?}"),
            ));
        }
    };
    let bytes = bytes.ok_or_else(|| corrupt(context, "completed record without an outcome"))?;
    Ok(Outcome::new(kind, bytes))
}

fn kind_text(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Ok => "ok",
        OutcomeKind::Err => "err",
    }
}

fn read_fence(fence: i64, context: &'static str) -> Result<u64, StoreError> {
    u64::try_from(fence).map_err(|_| corrupt(context, format!("negative fence {fence}")))
}

/// Reads the claim statement's row; `None` when the statement neither claimed nor saw a live
/// record (a concurrent claim won the race after the snapshot).
fn read_claim(row: &PgRow, fingerprint: Fingerprint) -> Result<Option<Claim>, StoreError> {
    const CX: &str = "claim";
    let prev_status: Option<String> = column(row, "status", CX)?;
    let prev_live: Option<bool> = column(row, "live", CX)?;
    if let Some(fence) = column::<Option<i64>>(row, "claimed_fence", CX)? {
        return Ok(Some(Claim::Acquired {
            fence: read_fence(fence, CX)?,
            taken_over: prev_status.as_deref() == Some("in_progress"),
        }));
    }
    if prev_live != Some(true) {
        return Ok(None);
    }
    let stored: Vec<u8> = column(row, "fingerprint", CX)?;
    let same = read_fingerprint(&stored, CX)? == fingerprint;
    match prev_status.as_deref() {
        Some("completed") if same => {
            let kind: Option<String> = column(row, "outcome_kind", CX)?;
            let bytes: Option<Vec<u8>> = column(row, "outcome", CX)?;
            Ok(Some(Claim::Completed(read_outcome(
                kind.as_deref(),
                bytes,
                CX,
            )?)))
        }
        Some("in_progress") if same => {
            let left: Option<i64> = column(row, "left_us", CX)?;
            Ok(Some(Claim::Busy {
                retry_after: from_micros(left.unwrap_or(0)),
            }))
        }
        Some("completed" | "in_progress") => Ok(Some(Claim::Mismatch)),
        other => Err(corrupt(CX, format!("unknown status {other:?}"))),
    }
}

fn read_record(row: &PgRow) -> Result<Record, StoreError> {
    const CX: &str = "get";
    let status: String = column(row, "status", CX)?;
    let stored: Vec<u8> = column(row, "fingerprint", CX)?;
    let fingerprint = read_fingerprint(&stored, CX)?;
    let left = from_micros(column(row, "left_us", CX)?);
    match status.as_str() {
        "in_progress" => {
            let owner: Vec<u8> = column(row, "owner", CX)?;
            let owner: [u8; 16] = owner
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(CX, format!("owner is {} bytes, not 16", owner.len())))?;
            Ok(Record::InProgress {
                owner: Owner::from_u128(u128::from_be_bytes(owner)),
                fence: read_fence(column(row, "fence", CX)?, CX)?,
                fingerprint,
                lease_left: left,
            })
        }
        "completed" => {
            let kind: Option<String> = column(row, "outcome_kind", CX)?;
            Ok(Record::Completed {
                fingerprint,
                outcome: read_outcome(kind.as_deref(), column(row, "outcome", CX)?, CX)?,
                expires_in: left,
            })
        }
        other => Err(corrupt(CX, format!("unknown status {other:?}"))),
    }
}

/// Runs a fenced write (`complete`, `release`, `renew`) on the pool and tells whether it
/// applied.
async fn fenced(
    query: PgQuery<'_>,
    pool: &PgPool,
    context: &'static str,
) -> Result<Fence, StoreError> {
    applied(query.execute(pool).await, context)
}

/// [`fenced`] on the caller's connection.
async fn fenced_on(
    query: PgQuery<'_>,
    conn: &mut PgConnection,
    context: &'static str,
) -> Result<Fence, StoreError> {
    applied(query.execute(conn).await, context)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn applied(
    done: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
    context: &'static str,
) -> Result<Fence, StoreError> {
    let done = done.map_err(|err| StoreError::new(context, err))?;
    Ok(if done.rows_affected() == 1 {
        Fence::Held
    } else {
        Fence::Lost
    })
}

impl PgStore {
    fn held<'q>(&'q self, sql: &'q str, token: &ClaimToken) -> PgQuery<'q> {
        // A fence beyond i64 was never granted by the sequence: -1 matches nothing.
        let fence = i64::try_from(token.fence()).unwrap_or(-1);
        sqlx::query(sql)
            .bind(token.key().scope().to_string())
            .bind(token.key().key().to_string())
            .bind(owner_bytes(token.owner()).to_vec())
            .bind(fence)
    }

    fn complete_query<'q>(
        &'q self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> PgQuery<'q> {
        self.held(&self.sql.complete, token)
            .bind(kind_text(outcome.kind()))
            .bind(outcome.bytes().to_vec())
            .bind(micros(ttl))
    }
}

impl Store for PgStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|err| StoreError::new("claim", err))?;
        self.claim_on(&mut conn, request)
            .await
            .map_err(ClaimFailure::into_store_error)
    }

    fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        let query = self.complete_query(token, outcome, ttl);
        fenced(query, &self.pool, "complete")
    }

    fn release(
        &self,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        fenced(self.held(&self.sql.release, token), &self.pool, "release")
    }

    fn renew(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        let query = self.held(&self.sql.renew, token).bind(micros(lease));
        fenced(query, &self.pool, "renew")
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(&self.sql.get)
            .bind(key.scope())
            .bind(key.key())
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| StoreError::new("get", err))?;
        row.as_ref().map(read_record).transpose()
    }
}

/// A connection that [`run_in_transaction`] can run on: a [`sqlx::Transaction`], a
/// [`sqlx::PgConnection`] or a pooled connection on which the caller has begun a transaction.
///
/// Implement it for your own wrapper by handing out the underlying connection.
///
/// ```no_run
/// use idem_core::postgres::PgConn;
///
/// struct AppTx<'c>(sqlx::Transaction<'c, sqlx::Postgres>);
///
/// impl PgConn for AppTx<'_> {
///     fn pg_connection(&mut self) -> &mut sqlx::PgConnection {
///         &mut self.0
///     }
/// }
/// ```
pub trait PgConn {
    /// The connection the key record is written on (see the trait's example).
    fn pg_connection(&mut self) -> &mut PgConnection;
}

impl PgConn for PgConnection {
    fn pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

impl PgConn for sqlx::Transaction<'_, Postgres> {
    fn pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

impl PgConn for sqlx::pool::PoolConnection<Postgres> {
    fn pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

/// Runs one idempotent call with the key record inside the caller's transaction: the
/// application's writes made by `body` on `conn` and the key record commit together or not at
/// all. The caller commits (or rolls back) the transaction afterwards.
///
/// What `#[idempotent(transaction = tx, ...)]` expands to. `key`, `fingerprint` and `policy`
/// are as for [`run`](crate::run); `body` receives `conn` back to make its writes on.
///
/// 1. A savepoint is taken and the record is inserted as in progress. A concurrent call with
///    the same key blocks on the record's primary key until this transaction ends, for at most
///    `options.wait` (via `SET LOCAL lock_timeout`, restored afterwards; with
///    `concurrent = "reject"` it waits only a moment). The savepoint is rolled back if the
///    claim fails, so the caller's transaction stays usable.
/// 2. A record committed by an earlier transaction with the same fingerprint is replayed: the
///    body does not run. Another fingerprint gives [`Error::Mismatch`].
/// 3. Otherwise the body runs. When it returns `Ok` (or an `Err` chosen by `policy`), the
///    record is completed with the outcome, in the same transaction. When it returns another
///    `Err`, the record is deleted again, so even if the caller commits, no key record commits
///    without its outcome.
///
/// That is four round trips on `conn` besides the body's (see
/// [round trips](PgStore#round-trips)).
///
/// # Concurrent calls on the same key
///
/// A duplicate waits for the first transaction: if that commits, the duplicate replays the
/// committed outcome; if it rolls back (or its body failed), the duplicate runs the body
/// itself. Exactly one body's writes commit. A record held in standalone mode (by
/// [`run`](crate::run) with this store) is waited for by polling, as in standalone mode.
/// The other way round, a standalone claim of a key that an open transaction holds waits for
/// that transaction without a bound (the pool's connections have no `lock_timeout`), so give
/// each scope one mode.
///
/// This relies on `READ COMMITTED`, PostgreSQL's default isolation. Under `REPEATABLE READ` or
/// `SERIALIZABLE` a duplicate that waited fails with a serialization error
/// ([`Error::Store`]); retry its transaction to get the replay.
///
/// # Errors
///
/// The body's own errors, or an [`Error`] converted into `E`: [`Error::InvalidKey`],
/// [`Error::Mismatch`], [`Error::WaitTimeout`] when the first transaction held the key longer
/// than `wait`, [`Error::InProgress`] with `concurrent = "reject"`, [`Error::Codec`] for a
/// stored outcome that cannot be decoded, and [`Error::Store`] when the claim fails (the body
/// did not run; [`NotInTransaction`] if `conn` is not in a transaction) or the outcome could
/// not be written (then the transaction is aborted and must be rolled back). [`Error::Codec`]
/// also when the body's value cannot be encoded for storage: the record is deleted again and
/// the body's result is not returned, since committing it would commit writes without a key.
///
/// On any `Err`, roll the transaction back: the body's writes are in it, and only the caller
/// can undo them. (Committing after an `Err` commits the body's writes without a key record,
/// so a retry would run the body again.)
///
/// # Panics
///
/// A panic in the body propagates. The in-progress record is still in the caller's
/// transaction then; dropping the transaction rolls it back, as sqlx does for a dropped
/// [`sqlx::Transaction`]. (Were it committed anyway, the record would behave like a crashed
/// holder's claim: it frees when `lease` runs out, and the next call takes it over.)
///
/// # `Send`
///
/// Pass the transaction as `&mut *tx` (a `&mut PgConnection`, as below) when the call must be
/// `Send`, as in a spawned task or a web handler. With `C = sqlx::Transaction<'c, _>` the call
/// works, but rustc (1.95) cannot prove its future `Send` ("implementation of `Send` is not
/// general enough"), because of the lifetime inside `C` in the body's higher-ranked bound.
///
/// # Examples
///
/// ```no_run
/// use idem_core::postgres::{run_in_transaction, PgStore};
/// use idem_core::{Error, Fingerprint, NoReplay, Options};
/// use sqlx::PgConnection;
///
/// # async fn demo(store: PgStore, order_id: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = store.pool().begin().await?;
/// let placed: Result<i64, Error> = run_in_transaction(
///     &store,
///     &mut *tx,
///     Options::new("shop::place_order"),
///     Some(order_id.to_string()),
///     Fingerprint::of(&order_id).map_err(Error::from),
///     NoReplay,
///     async |conn: &mut PgConnection| {
///         let id: i64 = sqlx::query_scalar("INSERT INTO orders (ref) VALUES ($1) RETURNING id")
///             .bind(order_id)
///             .fetch_one(&mut *conn)
///             .await
///             .map_err(|err| Error::Store(idem_core::StoreError::new("insert order", err)))?;
///         Ok(id)
///     },
/// )
/// .await;
/// match placed {
///     Ok(id) => {
///         tx.commit().await?; // the order and its key record, together
///         println!("order {id}");
///     }
///     Err(err) => {
///         tx.rollback().await?; // neither
///         return Err(err.into());
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn run_in_transaction<C, T, E, P, F>(
    store: &PgStore,
    conn: &mut C,
    options: Options,
    key: Option<String>,
    fingerprint: Result<Fingerprint, Error>,
    policy: P,
    body: F,
) -> Result<T, E>
where
    C: PgConn,
    T: Serialize + DeserializeOwned,
    E: From<Error>,
    P: ErrorPolicy<E>,
    F: AsyncFnOnce(&mut C) -> Result<T, E>,
{
    let (key, fingerprint) = record_key(&options, key, fingerprint)?;
    let deadline = Instant::now() + options.wait;
    let mut attempt = 0;
    let token = loop {
        let owner = Owner::new();
        let request = ClaimRequest {
            key: &key,
            fingerprint,
            owner,
            lease: options.lease,
        };
        let lock_wait = match options.concurrent {
            Concurrency::Reject => REJECT_LOCK_TIMEOUT,
            Concurrency::Wait => deadline.saturating_duration_since(Instant::now()),
        };
        let claim = claim_in_savepoint(store, conn.pg_connection(), &request, lock_wait).await;
        match claim {
            Ok(Claim::Acquired { fence, .. }) => {
                event!(debug, &key, fence, "claimed in the caller's transaction");
                break ClaimToken::new(key, owner, fence);
            }
            Ok(Claim::Completed(outcome)) => {
                event!(debug, &key, "replayed");
                return replay(&outcome, &policy, &ByJson);
            }
            Ok(Claim::Mismatch) => return Err(Error::Mismatch.into()),
            Ok(Claim::Busy { retry_after }) => {
                // Held in standalone mode by a live lease: poll like `run` does.
                if options.concurrent == Concurrency::Reject {
                    return Err(Error::InProgress { retry_after }.into());
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::WaitTimeout.into());
                }
                let max = (deadline - now).min(retry_after + Duration::from_millis(1));
                tokio::time::sleep(backoff(attempt, max)).await;
                attempt += 1;
            }
            Err(ClaimFailure::LockTimeout) => {
                event!(debug, &key, "the first transaction held the key too long");
                return Err(match options.concurrent {
                    Concurrency::Reject => Error::InProgress {
                        retry_after: TX_RETRY_AFTER,
                    },
                    Concurrency::Wait => Error::WaitTimeout,
                }
                .into());
            }
            Err(failure) => {
                let err = failure.into_store_error();
                event!(error, &key, error = %err, "claim failed; the body does not run");
                return Err(Error::Store(err).into());
            }
        }
    };
    let result = body(conn).await;
    let conn = conn.pg_connection();
    match outcome_of(&result, &policy) {
        Some(Ok(outcome)) => {
            let query = store.complete_query(&token, &outcome, options.ttl);
            let complete: BoxFuture<'_, _> = Box::pin(fenced_on(query, &mut *conn, "complete"));
            match complete.await {
                Ok(Fence::Held) => {
                    event!(debug, token.key(), "completed in the caller's transaction");
                    result
                }
                Ok(Fence::Lost) => Err(Error::Store(StoreError::msg(
                    "complete: the in-progress record vanished from the transaction",
                ))
                .into()),
                Err(err) => {
                    event!(error, token.key(), error = %err, "the outcome could not be written; roll the transaction back");
                    Err(Error::Store(err).into())
                }
            }
        }
        Some(Err(codec)) => {
            event!(error, token.key(), error = %codec, "the outcome cannot be stored");
            let delete: BoxFuture<'_, ()> = Box::pin(delete_claim(store, conn, &token));
            delete.await;
            Err(Error::Codec(codec).into())
        }
        None => {
            let delete: BoxFuture<'_, ()> = Box::pin(delete_claim(store, conn, &token));
            delete.await;
            result
        }
    }
}

/// Removes the in-progress record from the caller's transaction after a failed body. If the
/// transaction is already aborted (the body's own statement failed), it cannot commit anyway.
async fn delete_claim(store: &PgStore, conn: &mut PgConnection, token: &ClaimToken) {
    match fenced_on(store.held(&store.sql.release, token), conn, "release").await {
        Ok(_) => event!(debug, token.key(), "released in the caller's transaction"),
        Err(err) => {
            event!(debug, token.key(), error = %err, "release failed; the transaction cannot commit")
        }
    }
}

/// The claim inside a savepoint, with `lock_timeout` set to `lock_wait` for its duration: three
/// round trips, the claim between two batches of the simple query protocol.
///
/// 1. `SAVEPOINT`, read the caller's `lock_timeout`, `SET LOCAL` ours. The statements of one
///    batch run in order, so the setting read is the caller's.
/// 2. The claim, which waits at most `lock_wait` for a conflicting transaction.
/// 3. `SET LOCAL` the caller's `lock_timeout` again, `RELEASE SAVEPOINT`.
///
/// A failure after the savepoint rolls back to it (see [`abandon`]), which undoes the claim and
/// our `lock_timeout`, and leaves the caller's transaction usable.
fn claim_in_savepoint<'a>(
    store: &'a PgStore,
    conn: &'a mut PgConnection,
    request: &'a ClaimRequest<'a>,
    lock_wait: Duration,
) -> BoxFuture<'a, Result<Claim, ClaimFailure>> {
    Box::pin(async move {
        // lock_timeout 0 would mean "wait forever": wait at least a millisecond.
        let millis = lock_wait.as_millis().clamp(1, i32::MAX as u128);
        let enter = format!(
            "SAVEPOINT idem_claim; SELECT current_setting('lock_timeout'); SET LOCAL lock_timeout = '{millis}ms'"
        );
        // A `&str` without arguments goes as one simple query, however many statements it has.
        let previous = match sqlx::Executor::fetch_one(&mut *conn, enter.as_str()).await {
            Ok(row) => row.try_get::<String, _>(0),
            Err(err) => Err(err),
        };
        let previous = match previous.map_err(ClaimFailure::from_sqlx) {
            Ok(previous) => previous,
            // Not in a transaction: no savepoint was taken.
            Err(ClaimFailure::NotInTransaction) => return Err(ClaimFailure::NotInTransaction),
            Err(failure) => return Err(abandon(conn, failure).await),
        };
        let claim = match store.claim_on(conn, request).await {
            Ok(claim) => claim,
            Err(failure) => return Err(abandon(conn, failure).await),
        };
        let leave = format!(
            "SET LOCAL lock_timeout = {}; RELEASE SAVEPOINT idem_claim",
            string_literal(&previous)
        );
        match sqlx::Executor::execute(&mut *conn, leave.as_str()).await {
            Ok(_) => Ok(claim),
            Err(err) => {
                let failure = ClaimFailure::Store(StoreError::new("claim", err));
                Err(abandon(conn, failure).await)
            }
        }
    })
}

/// `value` as an SQL string constant, whatever `standard_conforming_strings` is: an escape
/// string (`E'...'`), in which a backslash always escapes, with `\` and `'` escaped.
fn string_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Rolls back to the claim's savepoint (which also restores `lock_timeout`), so the caller's
/// transaction stays usable after a failed claim.
async fn abandon(conn: &mut PgConnection, failure: ClaimFailure) -> ClaimFailure {
    let rolled_back = sqlx::Executor::execute(
        &mut *conn,
        "ROLLBACK TO SAVEPOINT idem_claim; RELEASE SAVEPOINT idem_claim",
    )
    .await;
    if let Err(err) = rolled_back {
        tracing::debug!(target: "idem", error = %err, "could not roll back to the claim's savepoint");
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        for good in ["idem_records", "billing.idem_keys", "_x1"] {
            assert!(Sql::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Idem",
            "1abc",
            "a.b.c",
            "a;drop table x",
            "a\"b",
            ".a",
            "a.",
            &"x".repeat(49),
        ] {
            assert!(Sql::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_shipped_migration_is_the_default_tables() {
        assert_eq!(
            Sql::new(DEFAULT_TABLE).unwrap().migration,
            PgStore::MIGRATION_SQL
        );
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(string_literal("5s"), "E'5s'");
        assert_eq!(string_literal(r"a'b\c"), r"E'a''b\\c'");
    }

    #[test]
    fn durations_are_clamped() {
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), micros(MAX_STORED));
        assert_eq!(from_micros(-5), Duration::ZERO);
    }
}

/// Compile-time check: a transactional call on a `&mut PgConnection` (what `&mut *tx` gives)
/// whose body queries the database is `Send`, so it can run in a spawned task or a web handler.
#[cfg(test)]
mod spawnable {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn assert_send<T: Send>(_: T) {}

    async fn place(
        store: &PgStore,
        conn: &mut PgConnection,
        order: &str,
        runs: &AtomicUsize,
    ) -> Result<i64, Error> {
        let sql = String::from("INSERT INTO orders (ref) VALUES ($1) RETURNING id");
        run_in_transaction(
            store,
            conn,
            Options::new("s"),
            Some(order.to_string()),
            Ok(Fingerprint::from_bytes([0; 32])),
            crate::NoReplay,
            async |conn: &mut PgConnection| {
                runs.fetch_add(1, Ordering::SeqCst);
                sqlx::query_scalar(&sql)
                    .bind(order)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|err| Error::Store(StoreError::new("insert", err)))
            },
        )
        .await
    }

    #[allow(dead_code)]
    fn transactional_calls_are_send(store: PgStore, mut tx: sqlx::Transaction<'static, Postgres>) {
        assert_send(async move {
            let runs = AtomicUsize::new(0);
            place(&store, &mut tx, "o-1", &runs).await
        });
    }
}
