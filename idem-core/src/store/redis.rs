//! [`RedisStore`]: idempotency records in Redis, standalone or cluster, fenced by server-side
//! scripts.
//!
//! Use it when the duplicates of one operation can reach different processes or machines: every
//! process that points at the same Redis (and the same key prefix) shares the same records.
//!
//! ```no_run
//! use idem_core::redis::RedisStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), idem_core::StoreError> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .prefix("myapp:idem:")
//!     .local_cache(10_000)
//!     .build()
//!     .await?;
//! idem_core::set_default_store(store).expect("set once, at start-up");
//! # Ok(())
//! # }
//! ```
//!
//! # How records are kept
//!
//! One Redis hash per record, nothing else: no global keys, so any number of processes and a
//! Redis Cluster of any size work alike. Its name is
//! `{prefix}{<hash tag>}<scope length>:<scope>:<key>`: the hash tag is a digest of scope and key
//! (so everything about a record lives in one slot), and the scope's length makes the name
//! unambiguous whatever characters scope and key contain.
//!
//! Every change is one Lua script run with `EVALSHA` (loaded again after a `SCRIPT FLUSH` or a
//! failover): a claim, a replay, a mismatch or a busy answer is one round trip; completing,
//! releasing and renewing check the owner and the fence inside the script, so a holder that was
//! taken over writes nothing. Leases and expiries are judged by the Redis server's `TIME`.
//!
//! Fence numbers are the server's time in microseconds at the claim, or one more than the
//! record's last fence when that is higher, so they grow across releases, takeovers and
//! expiries, as long as the server's clock does not step back.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::Expiry;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::key::RecordKey;
use crate::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Memo, Outcome, OutcomeKind, Owner, Record, Store,
    StoredOutcome, backoff,
};

/// How long an in-progress record outlives its lease in Redis, so that the next claim sees a
/// takeover (and the old fence) rather than an absent key.
const GRACE: Duration = Duration::from_secs(10);
/// How long a released record keeps its fence, so a claim right after a release still gets a
/// higher one.
const TOMBSTONE: Duration = Duration::from_secs(10);
/// The longest lease or ttl given to Redis (about 34 years): keeps the scripts' arithmetic exact.
const MAX_MILLIS: u64 = 1 << 40;
/// How long an outcome seen by a shared poll is kept for the waiters it woke, when there is no
/// local tier.
const HANDOFF: Duration = Duration::from_secs(2);

/// Claims, replays, or reports why not. Answers:
/// `{'a', fence, taken_over}`, `{'c', kind, bytes, pttl}`, `{'m'}`, `{'b', ms_left}`,
/// `{'x', what is wrong}` for a record this store did not write.
const CLAIM: &str = r"
local key = KEYS[1]
local fp, owner = ARGV[1], ARGV[2]
local lease, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local r = redis.call('HMGET', key, 's', 'f', 'p', 'l', 'k', 'v')
local state = r[1]
local fence = false
if r[2] then
  fence = tonumber(r[2])
  if not fence then return {'x', 'the fence is not a number'} end
end
if state == 'c' then
  if r[3] ~= fp then return {'m'} end
  if not r[5] or not r[6] then return {'x', 'a completed record without an outcome'} end
  return {'c', r[5], r[6], redis.call('PTTL', key)}
end
local taken = 0
if state == 'p' then
  local until_ms = tonumber(r[4])
  if not until_ms then return {'x', 'the lease is not a number'} end
  if until_ms > now_ms then
    if r[3] ~= fp then return {'m'} end
    return {'b', until_ms - now_ms}
  end
  taken = 1
elseif state == false then
  if r[2] or r[3] then return {'x', 'a record without a state'} end
elseif state ~= 'r' then
  return {'x', 'an unknown state'}
end
local next = now_us
if fence and fence >= next then next = fence + 1 end
local f = string.format('%.0f', next)
redis.call('DEL', key)
redis.call('HSET', key, 's', 'p', 'f', f, 'o', owner, 'p', fp, 'l', string.format('%.0f', now_ms + lease))
redis.call('PEXPIRE', key, lease + grace)
return {'a', f, taken}
";

/// Stores the outcome if owner and fence hold the record: the record's fingerprint (for the
/// local tier), else 0.
const COMPLETE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'o', 'f', 'p')
if r[1] ~= 'p' or r[2] ~= ARGV[1] or r[3] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'o', 'l')
redis.call('HSET', KEYS[1], 's', 'c', 'k', ARGV[3], 'v', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return r[4]
";

/// Releases if owner and fence hold the record, keeping only the fence for a while: 1, else 0.
const RELEASE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'o', 'f')
if r[1] ~= 'p' or r[2] ~= ARGV[1] or r[3] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'r', 'f', r[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Extends the lease if owner and fence hold the record: 1, else 0.
const RENEW: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'o', 'f')
if r[1] ~= 'p' or r[2] ~= ARGV[1] or r[3] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'l', string.format('%.0f', now_ms + lease))
redis.call('PEXPIRE', KEYS[1], lease + tonumber(ARGV[4]))
return 1
";

/// Reads a record: `{state, fence, owner, fingerprint, lease until, kind, bytes, now, pttl}`.
const GET: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'o', 'p', 'l', 'k', 'v')
return {r[1], r[2], r[3], r[4], r[5], r[6], r[7], now_ms, redis.call('PTTL', KEYS[1])}
";

/// Idempotency records in Redis, shared by every process that uses the same server (or
/// cluster) and key prefix.
///
/// Build one with [`RedisStore::builder`]; clones share the connection, the local tier and the
/// polls of waiting duplicates.
///
/// # Round trips
///
/// A replay costs one round trip (the claim script returns the stored outcome), a first call two
/// (claim, complete), plus one renewal per third of the lease for a body that runs longer than
/// that. With [`local_cache`](RedisStoreBuilder::local_cache), a replay of an outcome this
/// process has seen costs none.
///
/// # Concurrent calls on the same key
///
/// Claims are atomic in Redis: of any number of processes claiming one key, exactly one runs
/// the body. Duplicates in this process that wait share one poll of the record, however many
/// they are; duplicates in other processes poll with backoff and jitter, never later than the
/// holder's lease runs out.
///
/// # Examples
///
/// ```no_run
/// use idem_core::{Error, Fingerprint, NoReplay, Options, redis::RedisStore, run};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").build().await?;
/// // What `#[idempotent(key = order_id, store = &store)]` does:
/// let order_id = "order-1";
/// let placed: Result<u64, Error> = run(
///     &store,
///     Options::new("shop::place_order"),
///     Some(order_id.to_string()),
///     Fingerprint::of(&order_id).map_err(Error::from),
///     NoReplay,
///     async { Ok(42) },
/// )
/// .await;
/// assert_eq!(placed?, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    prefix: String,
    scripts: Scripts,
    /// Completed outcomes kept in this process (the optional local tier).
    local: Option<moka::sync::Cache<RecordKey, Arc<Cached>>>,
    /// Outcomes a shared poll saw, for the waiters it wakes (when there is no local tier).
    handoff: moka::sync::Cache<RecordKey, Arc<Cached>>,
    /// One poll per key that duplicates in this process are waiting on.
    polls: Mutex<HashMap<RecordKey, Arc<watch::Sender<()>>>>,
}

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    renew: Script,
    get: Script,
}

/// A completed outcome held in this process, never beyond its expiry in Redis.
struct Cached {
    fingerprint: Fingerprint,
    outcome: Outcome,
    expires_at: Instant,
    /// The outcome once decoded, for replays of a `Clone` type (as `MemoryStore` keeps it).
    memo: Memo,
}

impl StoredOutcome for Cached {
    fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    fn memo(&self) -> &Memo {
        &self.memo
    }
}

struct UntilExpiry;

impl Expiry<RecordKey, Arc<Cached>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &RecordKey,
        value: &Arc<Cached>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        key: &RecordKey,
        value: &Arc<Cached>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        // A record completed again after it expired: its new expiry counts.
        self.expire_after_create(key, value, now)
    }
}

fn outcome_cache(capacity: u64) -> moka::sync::Cache<RecordKey, Arc<Cached>> {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .expire_after(UntilExpiry)
        .build()
}

/// The connection: one server (through a reconnecting manager) or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where a [`RedisStore`] connects: a URL, your own client or connection, or a cluster.
///
/// Anything that converts into it can be given to [`RedisStore::builder`].
///
/// ```no_run
/// use idem_core::redis::{Connect, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::StoreError> {
/// // One server, from a URL or from a client you configured yourself:
/// let from_url = RedisStore::builder("redis://127.0.0.1:6379").build().await?;
/// let client = redis::Client::open("redis://127.0.0.1:6379").expect("valid URL");
/// let from_client = RedisStore::builder(client).build().await?;
/// // A Redis Cluster, from its seed nodes:
/// let cluster = RedisStore::builder(Connect::cluster(["redis://127.0.0.1:7001"]))
///     .build()
///     .await?;
/// # drop((from_url, from_client, cluster));
/// # Ok(())
/// # }
/// ```
pub struct Connect(ConnectTo);

enum ConnectTo {
    Url(String),
    Client(Box<redis::Client>),
    Manager(ConnectionManager),
    ClusterNodes(Vec<String>),
    ClusterClient(Box<ClusterClient>),
    Cluster(ClusterConnection),
}

impl Connect {
    /// A Redis Cluster reached through any of `nodes` (URLs such as `redis://10.0.0.1:7001`).
    ///
    /// ```
    /// let to = idem_core::redis::Connect::cluster(["redis://10.0.0.1:7001", "redis://10.0.0.2:7001"]);
    /// # drop(to);
    /// ```
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Connect(ConnectTo::ClusterNodes(
            nodes.into_iter().map(Into::into).collect(),
        ))
    }

    async fn open(self) -> Result<Conn, StoreError> {
        let connect = |err| StoreError::new("connect", err);
        Ok(match self.0 {
            ConnectTo::Url(url) => {
                let client = redis::Client::open(url).map_err(connect)?;
                Conn::Single(manager(client).await.map_err(connect)?)
            }
            ConnectTo::Client(client) => Conn::Single(manager(*client).await.map_err(connect)?),
            ConnectTo::Manager(manager) => Conn::Single(manager),
            ConnectTo::ClusterNodes(nodes) => {
                let client = ClusterClient::new(nodes).map_err(connect)?;
                Conn::Cluster(client.get_async_connection().await.map_err(connect)?)
            }
            ConnectTo::ClusterClient(client) => {
                Conn::Cluster(client.get_async_connection().await.map_err(connect)?)
            }
            ConnectTo::Cluster(conn) => Conn::Cluster(conn),
        })
    }
}

async fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    // A few quick reconnection attempts per failed request: the caller gets `Error::Store`
    // promptly while Redis is down, and the next request tries again.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

impl From<&str> for Connect {
    fn from(url: &str) -> Self {
        Connect(ConnectTo::Url(url.to_string()))
    }
}

impl From<String> for Connect {
    fn from(url: String) -> Self {
        Connect(ConnectTo::Url(url))
    }
}

impl From<redis::Client> for Connect {
    fn from(client: redis::Client) -> Self {
        Connect(ConnectTo::Client(Box::new(client)))
    }
}

impl From<ConnectionManager> for Connect {
    fn from(manager: ConnectionManager) -> Self {
        Connect(ConnectTo::Manager(manager))
    }
}

impl From<ClusterClient> for Connect {
    fn from(client: ClusterClient) -> Self {
        Connect(ConnectTo::ClusterClient(Box::new(client)))
    }
}

impl From<ClusterConnection> for Connect {
    fn from(conn: ClusterConnection) -> Self {
        Connect(ConnectTo::Cluster(conn))
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs can hold passwords: name only the kind of connection.
        let kind = match &self.0 {
            ConnectTo::Url(_) => "Url",
            ConnectTo::Client(_) => "Client",
            ConnectTo::Manager(_) => "ConnectionManager",
            ConnectTo::ClusterNodes(_) => "ClusterNodes",
            ConnectTo::ClusterClient(_) => "ClusterClient",
            ConnectTo::Cluster(_) => "ClusterConnection",
        };
        f.debug_tuple("Connect").field(&kind).finish()
    }
}

/// Builds a [`RedisStore`]: where it connects, its key prefix, its local tier.
///
/// ```no_run
/// use idem_core::redis::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::StoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .prefix("billing:idem:")
///     .local_cache(50_000)
///     .build()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Debug)]
pub struct RedisStoreBuilder {
    connect: Connect,
    prefix: String,
    local_capacity: Option<u64>,
}

impl RedisStoreBuilder {
    /// The prefix of every Redis key the store writes; `"idem:"` by default. Stores with
    /// different prefixes on one server never see each other's records.
    ///
    /// It must not contain `{` or `}`, which Redis Cluster reads as a hash tag.
    ///
    /// ```
    /// let builder = idem_core::redis::RedisStore::builder("redis://127.0.0.1").prefix("orders:");
    /// # drop(builder);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Also keeps up to `capacity` completed outcomes in this process (a moka cache), so a
    /// replay of an outcome this process has stored or seen costs no round trip.
    ///
    /// Only completed outcomes are kept, never in-progress claims, and never beyond the time
    /// Redis keeps them. A record deleted from Redis by hand (or evicted) is still replayed from
    /// here until its ttl would have ended.
    ///
    /// ```
    /// let builder = idem_core::redis::RedisStore::builder("redis://127.0.0.1").local_cache(10_000);
    /// # drop(builder);
    /// ```
    pub fn local_cache(mut self, capacity: u64) -> Self {
        self.local_capacity = Some(capacity);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] with context `"connect"` when the URL is invalid, the server (or no
    /// node of the cluster) answers, or the prefix contains `{` or `}`.
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(StoreError::msg(
                "connect: the key prefix must not contain `{` or `}`",
            ));
        }
        let conn = self.connect.open().await?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                prefix: self.prefix,
                scripts: Scripts {
                    claim: Script::new(CLAIM),
                    complete: Script::new(COMPLETE),
                    release: Script::new(RELEASE),
                    renew: Script::new(RENEW),
                    get: Script::new(GET),
                },
                local: self.local_capacity.map(outcome_cache),
                handoff: outcome_cache(4096),
                polls: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = match self.inner.conn {
            Conn::Single(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("conn", &conn)
            .field("prefix", &self.inner.prefix)
            .field("local_cache", &self.inner.local.is_some())
            .finish_non_exhaustive()
    }
}

/// Removes a finished poll from the store's map and wakes its waiters.
struct PollEnded<'a> {
    store: &'a RedisStore,
    key: &'a RecordKey,
    woken: &'a Arc<watch::Sender<()>>,
}

impl Drop for PollEnded<'_> {
    fn drop(&mut self) {
        let mut polls = self.store.polls();
        if polls
            .get(self.key)
            .is_some_and(|current| Arc::ptr_eq(current, self.woken))
        {
            polls.remove(self.key);
        }
        // A waiter that subscribed after the last check is woken too, and claims again.
        self.woken.send_replace(());
    }
}

/// A record in Redis that this store did not write (or that was changed by hand).
#[derive(Debug)]
struct Corrupt(String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the record in Redis is not one idem wrote ({}); it was left as it is",
            self.0
        )
    }
}

impl std::error::Error for Corrupt {}

fn corrupt(context: &'static str, what: impl Into<String>) -> StoreError {
    StoreError::new(context, Corrupt(what.into()))
}

impl RedisStore {
    /// A builder connecting to `to`: a URL (`"redis://host:6379"`), a [`redis::Client`], a
    /// [`ConnectionManager`], a cluster client or connection, or [`Connect::cluster`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::StoreError> {
    /// let store = idem_core::redis::RedisStore::builder("redis://127.0.0.1:6379").build().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(to: impl Into<Connect>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            connect: to.into(),
            prefix: "idem:".to_string(),
            local_capacity: None,
        }
    }

    /// The Redis key that holds the record of `key`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::StoreError> {
    /// let store = idem_core::redis::RedisStore::builder("redis://127.0.0.1:6379").build().await?;
    /// let key = idem_core::RecordKey::new("shop::pay", "order-1").unwrap();
    /// let name = store.redis_key(&key);
    /// assert!(name.starts_with(b"idem:{"));
    /// assert!(name.ends_with(b"}9:shop::pay:order-1"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_key(&self, key: &RecordKey) -> Vec<u8> {
        let (scope, key) = (key.scope().as_bytes(), key.key().as_bytes());
        let mut hasher = Sha256::new();
        hasher.update((scope.len() as u64).to_be_bytes());
        hasher.update(scope);
        hasher.update(key);
        let digest = hasher.finalize();
        let mut name = String::with_capacity(self.inner.prefix.len() + 40);
        name.push_str(&self.inner.prefix);
        name.push('{');
        crate::fingerprint::push_hex(&mut name, &digest[..12]);
        let _ = write!(name, "}}{}:", scope.len());
        let mut name = name.into_bytes();
        name.extend_from_slice(scope);
        name.push(b':');
        name.extend_from_slice(key);
        name
    }

    async fn eval(
        &self,
        context: &'static str,
        script: &Script,
        key: &RecordKey,
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let mut invocation = script.key(self.redis_key(key));
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.inner.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| StoreError::new(context, err))
    }

    /// A completed outcome of `key` held in this process.
    fn cached(&self, key: &RecordKey) -> Option<Arc<Cached>> {
        let now = Instant::now();
        let fresh = |cached: &Arc<Cached>| cached.expires_at > now;
        self.inner
            .local
            .as_ref()
            .and_then(|local| local.get(key))
            .filter(fresh)
            .or_else(|| self.inner.handoff.get(key).filter(fresh))
    }

    /// Keeps a completed outcome in the local tier, if there is one, for `left` from `sent`:
    /// the time the request that saw it was sent, so never past its expiry in Redis.
    fn remember(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        outcome: &Outcome,
        sent: Instant,
        left: Duration,
    ) {
        let (Some(local), Some(expires_at)) = (&self.inner.local, sent.checked_add(left)) else {
            return;
        };
        let cached = Cached {
            fingerprint,
            outcome: outcome.detached(),
            expires_at,
            memo: Memo::new(),
        };
        local.insert(key.clone(), Arc::new(cached));
    }

    async fn claim_remote(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let sent = Instant::now();
        let reply = self
            .eval(
                "claim",
                &self.inner.scripts.claim,
                request.key,
                &[
                    request.fingerprint.to_hex().as_bytes(),
                    owner_hex(request.owner).as_bytes(),
                    millis(request.lease).to_string().as_bytes(),
                    millis(GRACE).to_string().as_bytes(),
                ],
            )
            .await?;
        let parts = array("claim", &reply)?;
        match tag("claim", parts)? {
            b"a" => {
                let fence = number("claim", parts.get(1), "fence")?;
                let taken_over = number("claim", parts.get(2), "takeover flag")? == 1;
                Ok(Claim::Acquired { fence, taken_over })
            }
            b"c" => {
                let outcome = outcome("claim", parts.get(1), parts.get(2))?;
                let pttl = integer(parts.get(3)).unwrap_or(-1);
                if let Ok(left) = u64::try_from(pttl) {
                    let left = Duration::from_millis(left);
                    self.remember(request.key, request.fingerprint, &outcome, sent, left);
                }
                Ok(Claim::Completed(outcome))
            }
            b"m" => Ok(Claim::Mismatch),
            b"b" => {
                let left = number("claim", parts.get(1), "lease left")?;
                Ok(Claim::Busy {
                    retry_after: Duration::from_millis(left),
                })
            }
            b"x" => Err(corrupt("claim", text(parts.get(1)))),
            other => Err(corrupt(
                "claim",
                format!("unexpected answer {:?}", String::from_utf8_lossy(other)),
            )),
        }
    }

    /// Runs a fenced script (complete, release, renew): its answer, `0` when fenced.
    async fn fenced(
        &self,
        context: &'static str,
        script: &Script,
        token: &ClaimToken,
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let owner = owner_hex(token.owner());
        let fence = token.fence().to_string();
        let mut all: Vec<&[u8]> = vec![owner.as_bytes(), fence.as_bytes()];
        all.extend_from_slice(args);
        self.eval(context, script, token.key(), &all).await
    }

    async fn get_remote(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let sent = Instant::now();
        let reply = self.eval("get", &self.inner.scripts.get, key, &[]).await?;
        let parts = array("get", &reply)?;
        let field = |i: usize| parts.get(i).and_then(bulk);
        let Some(state) = field(0) else {
            return Ok(None);
        };
        match state {
            b"p" => {
                let owner = field(2)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| corrupt("get", "the owner is not a hex number"))?;
                let until = number("get", parts.get(4), "lease")?;
                let now = number("get", parts.get(7), "server time")?;
                Ok(Some(Record::InProgress {
                    owner: Owner::from_u128(owner),
                    fence: number("get", parts.get(1), "fence")?,
                    fingerprint: fingerprint("get", field(3))?,
                    lease_left: Duration::from_millis(until.saturating_sub(now)),
                }))
            }
            b"c" => {
                let fingerprint = fingerprint("get", field(3))?;
                let outcome = outcome("get", parts.get(5), parts.get(6))?;
                let left = u64::try_from(integer(parts.get(8)).unwrap_or(-1))
                    .map(Duration::from_millis)
                    .map_err(|_| corrupt("get", "a completed record without expiry"))?;
                self.remember(key, fingerprint, &outcome, sent, left);
                Ok(Some(Record::Completed {
                    fingerprint,
                    outcome,
                    expires_in: left,
                }))
            }
            b"r" => Ok(None),
            other => Err(corrupt(
                "get",
                format!("unknown state {:?}", String::from_utf8_lossy(other)),
            )),
        }
    }

    /// Polls `key` until it is no longer in progress under a live lease, or until nobody in
    /// this process waits for it any more; then wakes the waiters.
    async fn poll(self, key: RecordKey, woken: Arc<watch::Sender<()>>) {
        // Ends the poll however it ends, also when the task is dropped with its runtime: the
        // waiters are woken (and claim again) and the next wait starts a new poll.
        let _ended = PollEnded {
            store: &self,
            key: &key,
            woken: &woken,
        };
        let mut attempt = 0;
        let mut bound = Duration::from_millis(250);
        loop {
            tokio::time::sleep(backoff(attempt, bound)).await;
            attempt += 1;
            let sent = Instant::now();
            match self.get_remote(&key).await {
                Ok(Some(Record::InProgress { lease_left, .. })) if !lease_left.is_zero() => {
                    // Wake a little after the lease ends, so a waiter can take it over.
                    bound = lease_left + Duration::from_millis(1);
                }
                Ok(Some(Record::Completed {
                    fingerprint,
                    outcome,
                    expires_in,
                })) => {
                    let cached = Cached {
                        fingerprint,
                        outcome,
                        expires_at: sent + expires_in.min(HANDOFF),
                        memo: Memo::new(),
                    };
                    self.inner.handoff.insert(key.clone(), Arc::new(cached));
                    return;
                }
                // Released, expired, or the read failed: every waiter claims again, and sees
                // for itself what there is (or the store error).
                _ => return,
            }
            if woken.receiver_count() == 0 {
                return;
            }
        }
    }

    fn polls(&self) -> MutexGuard<'_, HashMap<RecordKey, Arc<watch::Sender<()>>>> {
        // The map is changed only by single inserts and removes: a poisoned lock left it whole.
        self.inner
            .polls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for RedisStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        if let Some(cached) = self.cached(request.key) {
            // A completed record is never overwritten, only expires: replaying it (or
            // refusing another fingerprint) from here answers what Redis would.
            return Ok(if cached.fingerprint == request.fingerprint {
                Claim::Completed(Outcome::stored(cached))
            } else {
                Claim::Mismatch
            });
        }
        self.claim_remote(request).await
    }

    async fn complete(
        &self,
        token: &ClaimToken,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<Fence, StoreError> {
        let sent = Instant::now();
        let kind = [outcome.kind().code()];
        let ttl_ms = millis(ttl).to_string();
        let reply = self
            .fenced(
                "complete",
                &self.inner.scripts.complete,
                token,
                &[&kind, outcome.bytes(), ttl_ms.as_bytes()],
            )
            .await?;
        if integer(Some(&reply)) == Some(0) {
            return Ok(Fence::Lost);
        }
        let fingerprint = fingerprint("complete", bulk(&reply))?;
        let ttl = Duration::from_millis(millis(ttl));
        self.remember(token.key(), fingerprint, outcome, sent, ttl);
        Ok(Fence::Held)
    }

    async fn release(&self, token: &ClaimToken) -> Result<Fence, StoreError> {
        let tombstone = millis(TOMBSTONE).to_string();
        let reply = self
            .fenced(
                "release",
                &self.inner.scripts.release,
                token,
                &[tombstone.as_bytes()],
            )
            .await?;
        held("release", &reply)
    }

    async fn renew(&self, token: &ClaimToken, lease: Duration) -> Result<Fence, StoreError> {
        let lease = millis(lease).to_string();
        let grace = millis(GRACE).to_string();
        let reply = self
            .fenced(
                "renew",
                &self.inner.scripts.renew,
                token,
                &[lease.as_bytes(), grace.as_bytes()],
            )
            .await?;
        held("renew", &reply)
    }

    fn get(
        &self,
        key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.get_remote(key)
    }

    async fn wait(&self, key: &RecordKey, _attempt: u32, max: Duration) -> Result<(), StoreError> {
        let mut woken = {
            let mut polls = self.polls();
            match polls.get(key) {
                Some(poll) => poll.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(());
                    let sender = Arc::new(sender);
                    polls.insert(key.clone(), sender.clone());
                    tokio::spawn(self.clone().poll(key.clone(), sender));
                    receiver
                }
            }
        };
        let _ = tokio::time::timeout(max, woken.changed()).await;
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MILLIS)
}

/// Reads the 1 (held) or 0 (fenced) of a release or renewal.
fn held(context: &'static str, reply: &Value) -> Result<Fence, StoreError> {
    match integer(Some(reply)) {
        Some(1) => Ok(Fence::Held),
        Some(0) => Ok(Fence::Lost),
        _ => Err(corrupt(context, format!("unexpected answer {reply:?}"))),
    }
}

fn owner_hex(owner: Owner) -> String {
    let mut out = String::with_capacity(32);
    crate::fingerprint::push_hex(&mut out, &owner.as_u128().to_be_bytes());
    out
}

fn array<'a>(context: &'static str, reply: &'a Value) -> Result<&'a [Value], StoreError> {
    match reply {
        Value::Array(parts) => Ok(parts),
        other => Err(corrupt(context, format!("unexpected answer {other:?}"))),
    }
}

fn tag<'a>(context: &'static str, parts: &'a [Value]) -> Result<&'a [u8], StoreError> {
    parts
        .first()
        .and_then(bulk)
        .ok_or_else(|| corrupt(context, "an answer without a tag"))
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bulk(other)?).ok()?.parse().ok(),
    }
}

fn number(context: &'static str, value: Option<&Value>, what: &str) -> Result<u64, StoreError> {
    integer(value)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| corrupt(context, format!("the {what} is not a number")))
}

fn text(value: Option<&Value>) -> String {
    value
        .and_then(bulk)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default()
}

fn outcome(
    context: &'static str,
    kind: Option<&Value>,
    bytes: Option<&Value>,
) -> Result<Outcome, StoreError> {
    let kind = match kind.and_then(bulk) {
        Some([code]) => OutcomeKind::from_code(*code),
        _ => None,
    }
    .ok_or_else(|| corrupt(context, "the outcome kind is unknown"))?;
    let bytes = bytes
        .and_then(bulk)
        .ok_or_else(|| corrupt(context, "the outcome has no value"))?;
    Ok(Outcome::new(kind, bytes.to_vec()))
}

fn fingerprint(context: &'static str, hex: Option<&[u8]>) -> Result<Fingerprint, StoreError> {
    let invalid = || corrupt(context, "the fingerprint is not 64 hex digits");
    let hex = hex.ok_or_else(invalid)?;
    if hex.len() != 64 {
        return Err(invalid());
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(Fingerprint::from_bytes(bytes))
}
