//! The Idempotency-Key layer over real HTTP: an axum server on 127.0.0.1:0, a reqwest client.
//!
//! Every case is a generic `async fn case<S: Store>(store: S)`, run by `against_every_store!`
//! once per store: MemoryStore always, Redis when `IDEM_REDIS_URL` is set, PostgreSQL when
//! `IDEM_DATABASE_URL` is set (each prints a skip line otherwise).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use idem_core::http::{IdempotencyLayer, IdempotencyLayerBuilder};
use idem_core::postgres::PgStore;
use idem_core::redis::RedisStore;
use idem_core::store::{Claim, ClaimRequest, ClaimToken, Fence, Outcome, Record, Store};
use idem_core::{Concurrency, RecordKey, StoreError};
use idem_test_support::Logs;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Stores

macro_rules! against_every_store {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$case(idem_core::MemoryStore::new()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if let Some(store) = super::redis_store().await {
                    super::$case(store).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(store) = super::postgres_store().await {
                    super::$case(store).await;
                }
            }
        }
    )*};
}

/// A Redis store under a prefix of its own when `IDEM_REDIS_URL` is set; otherwise prints that
/// the case is skipped.
async fn redis_store() -> Option<RedisStore> {
    let Ok(url) = std::env::var("IDEM_REDIS_URL") else {
        println!("skipped: IDEM_REDIS_URL is not set, so the Redis case does not run");
        return None;
    };
    let store = RedisStore::builder(url.as_str())
        .prefix(format!("idem-http-test:{}:", fresh_key()))
        .build()
        .await
        .unwrap_or_else(|err| {
            panic!("IDEM_REDIS_URL={url} is set but Redis does not answer: {err}")
        });
    Some(store)
}

/// A PostgreSQL store (its table migrated) when `IDEM_DATABASE_URL` is set; otherwise prints
/// that the case is skipped. Keys are fresh per run, so the shared table needs no cleanup.
async fn postgres_store() -> Option<PgStore> {
    let Ok(url) = std::env::var("IDEM_DATABASE_URL") else {
        println!("skipped: IDEM_DATABASE_URL is not set, so the PostgreSQL case does not run");
        return None;
    };
    let store = PgStore::connect(&url).await.unwrap_or_else(|err| {
        panic!("IDEM_DATABASE_URL={url} is set but PostgreSQL does not answer: {err}")
    });
    store.migrate().await.unwrap();
    Some(store)
}

/// The layer's builder with a short ttl, so what a run leaves in a shared Redis or PostgreSQL
/// expires soon (every key is fresh, so no case depends on it).
fn builder<S: Store>(store: S) -> IdempotencyLayerBuilder<S> {
    IdempotencyLayer::builder(store).ttl(Duration::from_secs(300))
}

/// A store whose every operation fails, as an unreachable backend would.
#[derive(Clone)]
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::msg("connection refused"))
}

impl Store for DownStore {
    fn claim(
        &self,
        _request: &ClaimRequest<'_>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        std::future::ready(down())
    }

    fn complete(
        &self,
        _token: &ClaimToken,
        _outcome: &Outcome,
        _ttl: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        std::future::ready(down())
    }

    fn release(
        &self,
        _token: &ClaimToken,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        std::future::ready(down())
    }

    fn renew(
        &self,
        _token: &ClaimToken,
        _lease: Duration,
    ) -> impl Future<Output = Result<Fence, StoreError>> + Send {
        std::future::ready(down())
    }

    fn get(
        &self,
        _key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        std::future::ready(down())
    }
}

// ---------------------------------------------------------------------------------------------
// The application under test

/// How many times each handler ran.
#[derive(Default)]
struct Runs {
    charge: AtomicUsize,
    flaky: AtomicUsize,
    declined: AtomicUsize,
    big: AtomicUsize,
    open: AtomicUsize,
}

impl Runs {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// `POST /charges`: 201 with the run number, a Location, a session cookie and a header that
/// is not kept; waits `x-delay-ms` first.
async fn charge(
    State(runs): State<Arc<Runs>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let n = runs.charge.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(ms) = headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = serde_json::json!({ "charge": n, "request": String::from_utf8_lossy(&body) });
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/charges/{n}")),
            (SET_COOKIE, "session=s3cr3t".to_owned()),
            (HeaderName::from_static("x-run"), n.to_string()),
            (CONTENT_TYPE, "application/json".to_owned()),
        ],
        body.to_string(),
    )
}

/// `POST /flaky`: 503 on its first run, 201 after.
async fn flaky(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    let n = runs.flaky.fetch_add(1, Ordering::SeqCst) + 1;
    let status = if n == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::CREATED
    };
    (status, format!("flaky run {n}"))
}

/// `POST /declined`: 402, a final answer.
async fn declined(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    let n = runs.declined.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::PAYMENT_REQUIRED, format!("declined run {n}"))
}

const BIG: usize = 64 * 1024;

/// `POST /big`: 200 with a 64 KiB body.
async fn big(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    runs.big.fetch_add(1, Ordering::SeqCst);
    vec![b'x'; BIG]
}

/// `GET /charges` and `POST /open`: not idempotent, count runs.
async fn open(State(runs): State<Arc<Runs>>) -> impl IntoResponse {
    let n = runs.open.fetch_add(1, Ordering::SeqCst) + 1;
    format!("open run {n}")
}

struct App {
    base: String,
    runs: Arc<Runs>,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve<S: Store>(layer: IdempotencyLayer<S>) -> App {
    let runs = Arc::new(Runs::default());
    let router = Router::new()
        .route("/charges", post(charge).get(open))
        .route("/flaky", post(flaky))
        .route("/declined", post(declined))
        .route("/big", post(big))
        .route("/open", post(open))
        .layer(layer)
        .with_state(runs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    App {
        base: format!("http://{addr}"),
        runs,
        client: reqwest::Client::new(),
        server,
    }
}

impl App {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }
}

/// A key no earlier run used (Redis keeps records between runs).
fn fresh_key() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "key-{nanos}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn replayed(&self) -> bool {
        match self.headers.get("idempotent-replayed") {
            None => false,
            Some(v) => {
                assert_eq!(v, "true");
                true
            }
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts this is an idem problem response with `status` and `slug`, and returns its detail.
    fn problem(&self, status: StatusCode, slug: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers[CONTENT_TYPE], "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16());
        let kind = problem["type"].as_str().unwrap();
        assert!(kind.ends_with(&format!("#{slug}")), "type {kind}");
        assert!(!problem["title"].as_str().unwrap().is_empty());
        problem["detail"].as_str().unwrap().to_owned()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Seen {
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    Seen {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

against_every_store!(
    first_request_runs_and_retry_replays,
    replay_keeps_only_allowed_headers,
    set_cookie_is_replayed_only_when_asked,
    key_is_required_and_checked,
    optional_key_and_unguarded_methods_pass_through,
    reused_key_with_another_request_is_422,
    duplicate_in_progress_is_409,
    concurrent_identical_posts_run_once_in_wait_mode,
    tenants_never_see_each_others_responses,
    request_body_over_the_limit_is_413,
    response_over_the_limit_passes_through_and_releases_the_key,
    server_errors_release_the_key,
    client_errors_are_stored_and_replayed,
);

async fn first_request_runs_and_retry_replays<S: Store>(store: S) {
    let app = serve(builder(store).build()).await;
    let key = fresh_key();
    let first = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("amount=1200"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    assert_eq!(first.json()["charge"], 1);

    let retry = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("amount=1200"),
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(Runs::get(&app.runs.charge), 1);

    // A structured-field string with the same content is the same key.
    let quoted = send(
        app.post("/charges")
            .header("idempotency-key", format!("\"{key}\""))
            .body("amount=1200"),
    )
    .await;
    assert!(quoted.replayed());
    assert_eq!(Runs::get(&app.runs.charge), 1);

    // Another key is another operation.
    let other = send(
        app.post("/charges")
            .header("idempotency-key", fresh_key())
            .body("amount=1200"),
    )
    .await;
    assert!(!other.replayed());
    assert_eq!(other.json()["charge"], 2);
}

async fn replay_keeps_only_allowed_headers<S: Store>(store: S) {
    let app = serve(builder(store).build()).await;
    let key = fresh_key();
    let first = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    // The first caller gets every header the handler set.
    assert_eq!(first.headers[SET_COOKIE], "session=s3cr3t");
    assert_eq!(first.headers["x-run"], "1");
    assert_eq!(first.headers[LOCATION], "/charges/1");

    let retry = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    assert!(retry.replayed());
    assert_eq!(retry.headers[LOCATION], "/charges/1");
    assert_eq!(retry.headers[CONTENT_TYPE], "application/json");
    assert!(
        retry.headers.get(SET_COOKIE).is_none(),
        "Set-Cookie must not be replayed"
    );
    assert!(
        retry.headers.get("x-run").is_none(),
        "x-run is not in the allowlist"
    );
}

async fn set_cookie_is_replayed_only_when_asked<S: Store>(store: S) {
    let layer = builder(store)
        .keep_response_header(SET_COOKIE)
        .keep_response_header(HeaderName::from_static("x-run"))
        .build();
    let app = serve(layer).await;
    let key = fresh_key();
    send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    let retry = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    assert!(retry.replayed());
    assert_eq!(retry.headers[SET_COOKIE], "session=s3cr3t");
    assert_eq!(retry.headers["x-run"], "1");
}

async fn key_is_required_and_checked<S: Store>(store: S) {
    let app = serve(builder(store).build()).await;

    let missing = send(app.post("/charges").body("a")).await;
    let detail = missing.problem(StatusCode::BAD_REQUEST, "missing-key");
    assert!(detail.contains("idempotency-key"), "{detail}");

    let empty = send(app.post("/charges").header("idempotency-key", "").body("a")).await;
    empty.problem(StatusCode::BAD_REQUEST, "invalid-key");

    let empty_quoted = send(
        app.post("/charges")
            .header("idempotency-key", "\"\"")
            .body("a"),
    )
    .await;
    empty_quoted.problem(StatusCode::BAD_REQUEST, "invalid-key");

    let too_long = format!("{}{}", fresh_key(), "k".repeat(256));
    let long = send(
        app.post("/charges")
            .header("idempotency-key", too_long)
            .body("a"),
    )
    .await;
    long.problem(StatusCode::BAD_REQUEST, "invalid-key");

    let not_ascii = HeaderValue::from_bytes(b"caf\xc3\xa9-\xff").unwrap();
    let bytes = send(
        app.post("/charges")
            .header("idempotency-key", not_ascii)
            .body("a"),
    )
    .await;
    bytes.problem(StatusCode::BAD_REQUEST, "invalid-key");

    let twice = send(
        app.post("/charges")
            .header("idempotency-key", fresh_key())
            .header("idempotency-key", fresh_key())
            .body("a"),
    )
    .await;
    twice.problem(StatusCode::BAD_REQUEST, "invalid-key");

    assert_eq!(
        Runs::get(&app.runs.charge),
        0,
        "no bad request reaches the handler"
    );

    // Exactly 255 bytes is fine.
    let mut max = fresh_key();
    max.push_str(&"k".repeat(255 - max.len()));
    let ok = send(
        app.post("/charges")
            .header("idempotency-key", max)
            .body("a"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(Runs::get(&app.runs.charge), 1);
}

async fn optional_key_and_unguarded_methods_pass_through<S: Store>(store: S) {
    let app = serve(builder(store).require_key(false).build()).await;
    // POST without a key: no idempotency, runs every time.
    for n in 1..=2 {
        let seen = send(app.post("/open").body("a")).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(!seen.replayed());
        assert_eq!(seen.body, format!("open run {n}"));
    }
    // GET is not guarded: a key on it changes nothing.
    let key = fresh_key();
    for n in 3..=4 {
        let url = format!("{}/charges", app.base);
        let seen = send(app.client.get(&url).header("idempotency-key", &key)).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(!seen.replayed());
        assert_eq!(seen.body, format!("open run {n}"));
    }
    // With a key, the POST is idempotent.
    let key = fresh_key();
    send(app.post("/open").header("idempotency-key", &key)).await;
    let retry = send(app.post("/open").header("idempotency-key", &key)).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, "open run 5");
    assert_eq!(Runs::get(&app.runs.open), 5);
}

async fn reused_key_with_another_request_is_422<S: Store>(store: S) {
    let layer = builder(store)
        .fingerprint_header(HeaderName::from_static("x-currency"))
        .build();
    let app = serve(layer).await;
    let key = fresh_key();
    let first = send(
        app.post("/charges?account=1")
            .header("idempotency-key", &key)
            .header("x-currency", "EUR")
            .body("amount=1200"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);

    let other_body = send(
        app.post("/charges?account=1")
            .header("idempotency-key", &key)
            .header("x-currency", "EUR")
            .body("amount=9999"),
    )
    .await;
    other_body.problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    let other_query = send(
        app.post("/charges?account=2")
            .header("idempotency-key", &key)
            .header("x-currency", "EUR")
            .body("amount=1200"),
    )
    .await;
    other_query.problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    let other_header = send(
        app.post("/charges?account=1")
            .header("idempotency-key", &key)
            .header("x-currency", "USD")
            .body("amount=1200"),
    )
    .await;
    other_header.problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    // A header that is not fingerprinted does not matter.
    let same = send(
        app.post("/charges?account=1")
            .header("idempotency-key", &key)
            .header("x-currency", "EUR")
            .header("x-trace", "whatever")
            .body("amount=1200"),
    )
    .await;
    assert!(same.replayed());
    assert_eq!(same.body, first.body);
    assert_eq!(Runs::get(&app.runs.charge), 1);
}

async fn duplicate_in_progress_is_409<S: Store>(store: S) {
    let app = Arc::new(serve(builder(store).build()).await);
    let key = fresh_key();
    let slow = {
        let app = app.clone();
        let key = key.clone();
        tokio::spawn(async move {
            send(
                app.post("/charges")
                    .header("idempotency-key", key)
                    .header("x-delay-ms", "1000")
                    .body("a"),
            )
            .await
        })
    };
    // Wait until the first request is inside the handler.
    while Runs::get(&app.runs.charge) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let duplicate = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    duplicate.problem(StatusCode::CONFLICT, "in-progress");
    let retry_after: u64 = duplicate.headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "a live holder usually finishes soon");

    let first = slow.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    let after = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body("a"),
    )
    .await;
    assert!(after.replayed());
    assert_eq!(after.body, first.body);
    assert_eq!(Runs::get(&app.runs.charge), 1);
}

async fn concurrent_identical_posts_run_once_in_wait_mode<S: Store>(store: S) {
    let layer = builder(store).concurrent(Concurrency::Wait).build();
    let app = Arc::new(serve(layer).await);
    let key = fresh_key();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                send(
                    app.post("/charges")
                        .header("idempotency-key", key)
                        .header("x-delay-ms", "300")
                        .body("amount=1200"),
                )
                .await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for call in calls {
        seen.push(call.await.unwrap());
    }
    assert_eq!(
        Runs::get(&app.runs.charge),
        1,
        "exactly one handler execution"
    );
    for response in &seen {
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.body, seen[0].body);
        assert_eq!(response.headers[LOCATION], "/charges/1");
    }
    assert_eq!(seen[0].json()["charge"], 1);
    let originals = seen.iter().filter(|s| !s.replayed()).count();
    assert_eq!(originals, 1, "one response is the original, 49 are replays");
}

async fn tenants_never_see_each_others_responses<S: Store>(store: S) {
    let layer = builder(store)
        .identity(|req| {
            let tenant = req.headers.get("x-tenant")?;
            Some(tenant.to_str().ok()?.to_owned())
        })
        .build();
    let app = serve(layer).await;
    let key = fresh_key();
    let a = send(
        app.post("/charges")
            .header("x-tenant", "acme")
            .header("idempotency-key", &key)
            .body("amount=1"),
    )
    .await;
    assert_eq!(a.json()["charge"], 1);

    // Same key and body from another tenant: runs for that tenant, not a replay of acme's.
    let b = send(
        app.post("/charges")
            .header("x-tenant", "globex")
            .header("idempotency-key", &key)
            .body("amount=1"),
    )
    .await;
    assert!(!b.replayed());
    assert_eq!(b.json()["charge"], 2);

    // Same key, another body, a third tenant: not a 422 either.
    let c = send(
        app.post("/charges")
            .header("x-tenant", "initech")
            .header("idempotency-key", &key)
            .body("amount=777"),
    )
    .await;
    assert_eq!(c.status, StatusCode::CREATED);
    assert_eq!(c.json()["charge"], 3);

    // Each tenant's retry replays its own response.
    let a_retry = send(
        app.post("/charges")
            .header("x-tenant", "acme")
            .header("idempotency-key", &key)
            .body("amount=1"),
    )
    .await;
    assert!(a_retry.replayed());
    assert_eq!(a_retry.body, a.body);
    let b_retry = send(
        app.post("/charges")
            .header("x-tenant", "globex")
            .header("idempotency-key", &key)
            .body("amount=1"),
    )
    .await;
    assert_eq!(b_retry.body, b.body);
    assert_eq!(Runs::get(&app.runs.charge), 3);
}

async fn request_body_over_the_limit_is_413<S: Store>(store: S) {
    let app = serve(builder(store).max_request_body(1024).build()).await;
    let key = fresh_key();
    let large = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body(vec![b'a'; 4096]),
    )
    .await;
    large.problem(StatusCode::PAYLOAD_TOO_LARGE, "request-too-large");
    assert_eq!(Runs::get(&app.runs.charge), 0);

    // Exactly at the limit is fine, and the key was not used up by the refused request.
    let fits = send(
        app.post("/charges")
            .header("idempotency-key", &key)
            .body(vec![b'a'; 1024]),
    )
    .await;
    assert_eq!(fits.status, StatusCode::CREATED);
    assert!(!fits.replayed());
    assert_eq!(Runs::get(&app.runs.charge), 1);
}

async fn response_over_the_limit_passes_through_and_releases_the_key<S: Store>(store: S) {
    let app = serve(builder(store).max_response_body(1024).build()).await;
    let key = fresh_key();
    for run in 1..=2 {
        let seen = send(app.post("/big").header("idempotency-key", &key)).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(!seen.replayed());
        assert_eq!(seen.body.len(), BIG, "the whole body is passed through");
        assert!(seen.body.iter().all(|&b| b == b'x'));
        assert_eq!(
            Runs::get(&app.runs.big),
            run,
            "not stored: the retry runs again"
        );
    }
}

async fn server_errors_release_the_key<S: Store>(store: S) {
    let app = serve(builder(store).build()).await;
    let key = fresh_key();
    let first = send(app.post("/flaky").header("idempotency-key", &key)).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.body, "flaky run 1");

    let retry = send(app.post("/flaky").header("idempotency-key", &key)).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed());
    assert_eq!(retry.body, "flaky run 2");

    let again = send(app.post("/flaky").header("idempotency-key", &key)).await;
    assert!(again.replayed());
    assert_eq!(again.body, "flaky run 2");
    assert_eq!(Runs::get(&app.runs.flaky), 2);
}

async fn client_errors_are_stored_and_replayed<S: Store>(store: S) {
    let app = serve(builder(store).build()).await;
    let key = fresh_key();
    let first = send(app.post("/declined").header("idempotency-key", &key)).await;
    assert_eq!(first.status, StatusCode::PAYMENT_REQUIRED);
    let retry = send(app.post("/declined").header("idempotency-key", &key)).await;
    assert_eq!(retry.status, StatusCode::PAYMENT_REQUIRED);
    assert!(retry.replayed());
    assert_eq!(retry.body, "declined run 1");
    assert_eq!(Runs::get(&app.runs.declined), 1);
}

// Not per store: these need a particular store or setting.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_is_503_and_the_handler_does_not_run() {
    let app = serve(IdempotencyLayer::new(DownStore)).await;
    let seen = send(
        app.post("/charges")
            .header("idempotency-key", fresh_key())
            .body("a"),
    )
    .await;
    seen.problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(Runs::get(&app.runs.charge), 0, "fail closed");
    // Unguarded requests do not touch the store.
    let get = send(app.client.get(format!("{}/charges", app.base))).await;
    assert_eq!(get.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_successes_stored_when_configured() {
    let layer = IdempotencyLayer::builder(idem_core::MemoryStore::new())
        .store_response_if(|status| status.is_success())
        .build();
    let app = serve(layer).await;
    let key = fresh_key();
    for run in 1..=2 {
        let seen = send(app.post("/declined").header("idempotency-key", &key)).await;
        assert_eq!(seen.status, StatusCode::PAYMENT_REQUIRED);
        assert!(!seen.replayed());
        assert_eq!(seen.body, format!("declined run {run}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_header_name_and_methods() {
    let layer = IdempotencyLayer::builder(idem_core::MemoryStore::new())
        .header_name(HeaderName::from_static("x-request-key"))
        .methods([axum::http::Method::POST])
        .build();
    let app = serve(layer).await;
    // The standard header is not the configured one: the key counts as missing.
    let standard = send(app.post("/open").header("idempotency-key", fresh_key())).await;
    let detail = standard.problem(StatusCode::BAD_REQUEST, "missing-key");
    assert!(detail.contains("x-request-key"), "{detail}");
    let key = fresh_key();
    send(app.post("/open").header("x-request-key", &key)).await;
    let retry = send(app.post("/open").header("x-request-key", &key)).await;
    assert!(retry.replayed());
    assert_eq!(Runs::get(&app.runs.open), 1);
}

#[allow(dead_code)]
fn _server_type_is_usable_as_a_route_layer() {
    // Compiles only if the layer fits axum's `route_layer` as well as `layer`.
    let _: Router<()> = Router::new()
        .route("/x", get(|| async { "x" }))
        .route_layer(IdempotencyLayer::new(idem_core::MemoryStore::new()));
}

#[test]
fn an_oversized_response_is_logged_as_a_warning() {
    let logs = Logs::default();
    // One thread, so the server's tasks log to this subscriber too.
    logs.block_on(tracing::Level::WARN, async {
        let layer = IdempotencyLayer::builder(idem_core::MemoryStore::new())
            .max_response_body(1024)
            .build();
        let app = serve(layer).await;
        let small = send(app.post("/charges").header("idempotency-key", fresh_key())).await;
        assert_eq!(small.status, StatusCode::CREATED);
        assert_eq!(logs.take(), "", "nothing to warn about yet");
        let big = send(app.post("/big").header("idempotency-key", fresh_key())).await;
        assert_eq!(big.body.len(), BIG);
    });
    let logs = logs.take();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("response larger than the buffer limit") && logs.contains("limit=1024"),
        "{logs}"
    );
}
