//! The `Idempotency-Key` HTTP header as a tower [`Layer`]: [`IdempotencyLayer`].
//!
//! Follows the IETF draft "The Idempotency-Key HTTP Header Field". A guarded request (POST and
//! PATCH by default) carries a client-chosen key; the first request with a key runs the inner
//! service and its response is stored; a retry with the same key gets the stored response back,
//! marked `Idempotent-Replayed: true`, and the inner service does not run again.
//!
//! | request | response |
//! | --- | --- |
//! | first with this key | the inner service's response; stored if [`store_response_if`](IdempotencyLayerBuilder::store_response_if) says so (2xx and 4xx by default) |
//! | retry, same fingerprint | the stored status, kept headers and body, with `Idempotent-Replayed: true` |
//! | key reused with another method, path and query, body, or fingerprinted header | `422` |
//! | duplicate while the first still runs | `409` with `Retry-After`, or the first one's response with [`Concurrency::Wait`] |
//! | key missing where required, empty, longer than 255 bytes, not visible ASCII, or given twice | `400` |
//! | body larger than [`max_request_body`](IdempotencyLayerBuilder::max_request_body) | `413` |
//! | the store fails | `503`; the inner service is not called |
//!
//! The inner service gets the request with its body buffered (an [`IdempotencyBody`]); a
//! response whose body is larger than
//! [`max_response_body`](IdempotencyLayerBuilder::max_response_body) is passed through
//! unchanged, not stored, and its key released, with a warning under the `idem` target.
//!
//! Keys are scoped by the caller's identity when you supply one
//! ([`identity`](IdempotencyLayerBuilder::identity)), so two tenants that pick the same key never
//! see each other's responses.
//!
//! # Examples
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use idem_core::MemoryStore;
//! use idem_core::http::{IdempotencyBody, IdempotencyLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let charges = Arc::new(AtomicUsize::new(0));
//! let counter = charges.clone();
//! let charge = service_fn(move |_req: Request<IdempotencyBody<Full<Bytes>>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move {
//!         let body = Full::new(Bytes::from(format!("charge #{n}")));
//!         Ok::<_, Infallible>(Response::builder().status(201).body(body).unwrap())
//!     }
//! });
//! let service = IdempotencyLayer::new(MemoryStore::new()).layer(charge);
//!
//! let request = || {
//!     Request::post("/charges")
//!         .header("idempotency-key", "7c3a1f")
//!         .body(Full::new(Bytes::from(r#"{"amount":1200}"#)))
//!         .unwrap()
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! let retry = service.clone().oneshot(request()).await.unwrap();
//!
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(retry.into_body().collect().await.unwrap().to_bytes(), "charge #1");
//! assert_eq!(charges.load(Ordering::SeqCst), 1);
//! # drop(first);
//! # }
//! ```
//!
//! In axum, add it to the routes that take a key: `Router::new().route("/charges",
//! post(charge)).route_layer(layer)`; see `integrations/examples/axum_payments.rs` in the
//! repository.
//!
//! # Problems
//!
//! Every response idem writes itself is `application/problem+json` (RFC 9457) with `type`,
//! `title`, `status` and `detail`. The `type` is this page with one of these fragments:
//!
//! ### missing-key
//! `400`: the method is guarded, a key is required, and the request has none.
//!
//! ### invalid-key
//! `400`: the key is empty, longer than 255 bytes, not visible ASCII, a malformed quoted
//! string, or the header appears more than once.
//!
//! ### unreadable-body
//! `400`: the request body failed while it was being read.
//!
//! ### request-too-large
//! `413`: the request body is larger than the layer buffers.
//!
//! ### in-progress
//! `409`: a request with this key is still being processed (or, when waiting, did not finish in
//! time); the `Retry-After` header says when to try again.
//!
//! ### key-reused
//! `422`: the key was used before for a different request (method, path and query, body or a
//! fingerprinted header differ).
//!
//! ### store-unavailable
//! `503`: the idempotency store failed; the request was not processed.
//!
//! ### stored-response-unreadable
//! `500`: a stored response could not be decoded.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Extensions, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use tower_layer::Layer;
use tower_service::Service;

use crate::call::{Concurrency, NoReplay, Options, run};
use crate::error::Error;
use crate::fingerprint::{Fingerprint, Fingerprinter};
use crate::key::RecordKey;
use crate::store::Store;
use crate::trace::event;

/// `Idempotency-Key`: the request header that carries the key.
///
/// ```
/// assert_eq!(idem_core::http::IDEMPOTENCY_KEY, "idempotency-key");
/// ```
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `Idempotent-Replayed`: set to `true` on a response that is a stored one replayed.
///
/// ```
/// assert_eq!(idem_core::http::IDEMPOTENT_REPLAYED, "idempotent-replayed");
/// ```
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest idempotency key accepted in a header, in bytes; longer keys get `400`.
///
/// ```
/// assert_eq!(idem_core::http::MAX_HEADER_KEY_LEN, 255);
/// ```
pub const MAX_HEADER_KEY_LEN: usize = 255;

/// The default limit of a buffered request or response body: 1 MiB.
///
/// ```
/// assert_eq!(idem_core::http::DEFAULT_BODY_LIMIT, 1024 * 1024);
/// ```
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The response headers stored and replayed by default. `Set-Cookie` is not among them: a
/// session cookie replayed to whoever holds the key would be a leak. Add it with
/// [`keep_response_header`](IdempotencyLayerBuilder::keep_response_header) if you must.
///
/// ```
/// use idem_core::http::DEFAULT_KEPT_HEADERS;
/// assert!(DEFAULT_KEPT_HEADERS.contains(&http::header::LOCATION));
/// assert!(!DEFAULT_KEPT_HEADERS.contains(&http::header::SET_COOKIE));
/// ```
pub const DEFAULT_KEPT_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::LINK,
    header::CACHE_CONTROL,
];

const PROBLEM_BASE: &str = "https://docs.rs/idem-core/latest/idem_core/http/index.html";

type Identity = dyn Fn(&Parts) -> Option<String> + Send + Sync;
type StorePolicy = dyn Fn(StatusCode) -> bool + Send + Sync;

struct Config {
    header: HeaderName,
    methods: Vec<Method>,
    required: bool,
    options: Options,
    fingerprint_headers: Vec<HeaderName>,
    kept_headers: Vec<HeaderName>,
    store_if: Arc<StorePolicy>,
    identity: Option<Arc<Identity>>,
    max_request_body: usize,
    max_response_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: IDEMPOTENCY_KEY,
            methods: vec![Method::POST, Method::PATCH],
            required: true,
            options: Options::new("idem::http").concurrent(Concurrency::Reject),
            fingerprint_headers: Vec::new(),
            kept_headers: DEFAULT_KEPT_HEADERS.to_vec(),
            store_if: Arc::new(|status: StatusCode| {
                status.is_success() || status.is_client_error()
            }),
            identity: None,
            max_request_body: DEFAULT_BODY_LIMIT,
            max_response_body: DEFAULT_BODY_LIMIT,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("header", &self.header)
            .field("methods", &self.methods)
            .field("required", &self.required)
            .field("options", &self.options)
            .field("fingerprint_headers", &self.fingerprint_headers)
            .field("kept_headers", &self.kept_headers)
            .field("identity", &self.identity.is_some())
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .finish_non_exhaustive()
    }
}

/// A tower [`Layer`] that makes guarded requests idempotent by their `Idempotency-Key`.
///
/// See the [module documentation](self) for what each request gets. The layer is cheap to
/// clone; every service it builds shares the store and the settings.
///
/// # Concurrent calls on the same key
///
/// Exactly one request per key (and caller identity) runs the inner service, however many
/// arrive at once. The others get `409 Conflict` with a `Retry-After` header (the default,
/// as the IETF draft suggests), or, with
/// [`concurrent(Concurrency::Wait)`](IdempotencyLayerBuilder::concurrent), wait for the first
/// one's response and get it replayed. If the first one fails (a `5xx`, a response too large to
/// store, an error of the inner service, or the client going away), the key is released and the
/// next request runs the inner service as if it were the first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use idem_core::{Concurrency, MemoryStore};
/// use idem_core::http::IdempotencyLayer;
///
/// let layer = IdempotencyLayer::builder(MemoryStore::new())
///     .ttl(Duration::from_secs(24 * 60 * 60))
///     .concurrent(Concurrency::Wait)
///     .identity(|req| {
///         req.headers
///             .get("x-tenant")
///             .and_then(|v| v.to_str().ok())
///             .map(str::to_owned)
///     })
///     .build();
/// # drop(layer);
/// ```
#[derive(Clone)]
pub struct IdempotencyLayer<S: Store> {
    store: S,
    config: Arc<Config>,
}

impl<S: Store> fmt::Debug for IdempotencyLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store> IdempotencyLayer<S> {
    /// A layer with the defaults: `Idempotency-Key` required on POST and PATCH, `409` for a
    /// duplicate in progress, 2xx and 4xx stored for 24 h, bodies buffered up to 1 MiB, no
    /// caller identity.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new(idem_core::MemoryStore::new());
    /// # drop(layer);
    /// ```
    pub fn new(store: S) -> Self {
        IdempotencyLayer::builder(store).build()
    }

    /// A builder to change the defaults.
    ///
    /// ```
    /// use http::Method;
    /// let layer = idem_core::http::IdempotencyLayer::builder(idem_core::MemoryStore::new())
    ///     .methods([Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
    ///     .require_key(false)
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn builder(store: S) -> IdempotencyLayerBuilder<S> {
        IdempotencyLayerBuilder {
            store,
            config: Config::default(),
        }
    }
}

impl<S: Store, I> Layer<I> for IdempotencyLayer<S> {
    type Service = IdempotencyService<S, I>;

    fn layer(&self, inner: I) -> Self::Service {
        IdempotencyService {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

/// Builds an [`IdempotencyLayer`]; from [`IdempotencyLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use http::header::{HeaderName, AUTHORIZATION};
/// use idem_core::http::IdempotencyLayer;
///
/// let layer = IdempotencyLayer::builder(idem_core::MemoryStore::new())
///     .header_name(HeaderName::from_static("x-request-key"))
///     .fingerprint_header(HeaderName::from_static("x-currency"))
///     .store_response_if(|status| status.is_success())
///     .max_request_body(64 * 1024)
///     .wait(Duration::from_secs(10))
///     .build();
/// # drop(layer);
/// ```
#[must_use]
pub struct IdempotencyLayerBuilder<S: Store> {
    store: S,
    config: Config,
}

impl<S: Store> fmt::Debug for IdempotencyLayerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store> IdempotencyLayerBuilder<S> {
    /// The request header that carries the key (default [`IDEMPOTENCY_KEY`]).
    ///
    /// ```
    /// # use http::header::HeaderName;
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .header_name(HeaderName::from_static("x-idempotency-key"))
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.config.header = name;
        self
    }

    /// The methods whose requests are guarded (default POST and PATCH); others pass through.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .methods([http::Method::POST])
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// Whether a guarded request without a key gets `400` (`true`, the default) or passes
    /// through to the inner service without idempotency (`false`).
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store).require_key(false).build();
    /// # drop(layer);
    /// ```
    pub fn require_key(mut self, required: bool) -> Self {
        self.config.required = required;
        self
    }

    /// The namespace of the records in the store (default `"idem::http"`); give each API its
    /// own when several share a store.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store).scope("payments-api").build();
    /// # drop(layer);
    /// ```
    pub fn scope(mut self, scope: &'static str) -> Self {
        self.config.options.scope = scope;
        self
    }

    /// How long a stored response is replayed (default 24 h).
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .ttl(std::time::Duration::from_secs(3600))
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.options.ttl = ttl;
        self
    }

    /// How long a claim lives without renewal (default 30 s); renewed while the inner service
    /// runs, so only a crashed process's claim runs out.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .lease(std::time::Duration::from_secs(10))
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.options.lease = lease;
        self
    }

    /// What a duplicate does while the first request with its key runs:
    /// [`Concurrency::Reject`] answers `409` at once (the default), [`Concurrency::Wait`] waits
    /// for the first response (up to [`wait`](Self::wait)) and replays it.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .concurrent(idem_core::Concurrency::Wait)
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn concurrent(mut self, concurrent: Concurrency) -> Self {
        self.config.options.concurrent = concurrent;
        self
    }

    /// The longest a waiting duplicate waits before it gets `409` (default 30 s).
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .wait(std::time::Duration::from_secs(5))
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn wait(mut self, wait: Duration) -> Self {
        self.config.options.wait = wait;
        self
    }

    /// Adds a request header to the fingerprint: the same key with another value of it is a
    /// different request (`422`). Method, path and query, and body are always in it.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .fingerprint_header(http::header::CONTENT_TYPE)
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn fingerprint_header(mut self, name: HeaderName) -> Self {
        self.config.fingerprint_headers.push(name);
        self
    }

    /// Adds a response header to those stored and replayed (default
    /// [`DEFAULT_KEPT_HEADERS`]). Headers not kept reach the first caller only.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .keep_response_header(http::header::HeaderName::from_static("x-payment-id"))
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn keep_response_header(mut self, name: HeaderName) -> Self {
        if !self.config.kept_headers.contains(&name) {
            self.config.kept_headers.push(name);
        }
        self
    }

    /// Replaces the response headers stored and replayed.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .keep_response_headers([http::header::CONTENT_TYPE])
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn keep_response_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config.kept_headers = names.into_iter().collect();
        self
    }

    /// Which responses are stored and replayed, by status (default: 2xx and 4xx). A response
    /// that is not stored releases the key, so a retry runs the inner service again.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// // Only successes are final; a 4xx may be fixed by the client and retried with the key.
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .store_response_if(|status| status.is_success())
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn store_response_if(
        mut self,
        policy: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config.store_if = Arc::new(policy);
        self
    }

    /// The caller's identity, from the request (an authenticated user, a tenant, an API key's
    /// id): keys are scoped by it, so one caller's key never replays another's response.
    /// `None` puts the request in the anonymous scope shared by all requests without identity.
    ///
    /// The closure sees the request's head, including extensions an authentication layer
    /// placed before this one.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .identity(|req| {
    ///         let auth = req.headers.get(http::header::AUTHORIZATION)?;
    ///         Some(auth.to_str().ok()?.to_owned())
    ///     })
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn identity(
        mut self,
        identity: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.config.identity = Some(Arc::new(identity));
        self
    }

    /// The largest request body buffered, in bytes (default [`DEFAULT_BODY_LIMIT`]); a larger
    /// guarded request gets `413`.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store).max_request_body(4096).build();
    /// # drop(layer);
    /// ```
    pub fn max_request_body(mut self, limit: usize) -> Self {
        self.config.max_request_body = limit;
        self
    }

    /// The largest response body buffered and stored, in bytes (default
    /// [`DEFAULT_BODY_LIMIT`]); a larger response is passed through, not stored, and its key
    /// released, with a warning.
    ///
    /// ```
    /// # let store = idem_core::MemoryStore::new();
    /// let layer = idem_core::http::IdempotencyLayer::builder(store)
    ///     .max_response_body(256 * 1024)
    ///     .build();
    /// # drop(layer);
    /// ```
    pub fn max_response_body(mut self, limit: usize) -> Self {
        self.config.max_response_body = limit;
        self
    }

    /// The layer.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::builder(idem_core::MemoryStore::new()).build();
    /// # drop(layer);
    /// ```
    pub fn build(self) -> IdempotencyLayer<S> {
        IdempotencyLayer {
            store: self.store,
            config: Arc::new(self.config),
        }
    }
}

/// The service an [`IdempotencyLayer`] wraps around an inner service.
///
/// The inner service receives `Request<IdempotencyBody<B>>` and may answer with any body; the
/// responses are `Response<IdempotencyBody<ResBody>>`.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use idem_core::http::{IdempotencyBody, IdempotencyLayer, IdempotencyService};
/// use tower::{Layer, service_fn};
///
/// let inner = service_fn(|_: Request<IdempotencyBody<Full<Bytes>>>| async {
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
/// });
/// let service: IdempotencyService<_, _> =
///     IdempotencyLayer::new(idem_core::MemoryStore::new()).layer(inner);
/// # drop(service);
/// ```
#[derive(Clone)]
pub struct IdempotencyService<S: Store, I> {
    inner: I,
    store: S,
    config: Arc<Config>,
}

impl<S: Store, I: fmt::Debug> fmt::Debug for IdempotencyService<S, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, I, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<S, I>
where
    S: Store,
    I: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    I::Future: Send,
    I::Error: Send,
    ReqB: Body + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Send,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Response = Response<IdempotencyBody<ResB>>;
    type Error = I::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The service that was polled ready serves this request; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(handle(
            self.store.clone(),
            self.config.clone(),
            inner,
            request,
        ))
    }
}

/// Why a guarded call did not produce a response to store.
enum Failure<B: Body, E> {
    /// idem answered instead of the inner service.
    Idem(Error),
    /// The inner service failed.
    Inner(E),
    /// A response that is not stored: passed through as it is.
    Pass(Response<IdempotencyBody<B>>),
}

impl<B: Body, E> From<Error> for Failure<B, E> {
    fn from(err: Error) -> Self {
        Failure::Idem(err)
    }
}

async fn handle<S, I, ReqB, ResB>(
    store: S,
    config: Arc<Config>,
    mut inner: I,
    request: Request<ReqB>,
) -> Result<Response<IdempotencyBody<ResB>>, I::Error>
where
    S: Store,
    I: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body,
    ResB: Body,
{
    if !config.methods.contains(request.method()) {
        let response = inner.call(request.map(IdempotencyBody::stream)).await?;
        return Ok(response.map(IdempotencyBody::stream));
    }
    let (parts, body) = request.into_parts();
    let key = match read_key(&parts.headers, &config.header) {
        Ok(Some(key)) => key,
        Ok(None) if !config.required => {
            let request = Request::from_parts(parts, IdempotencyBody::stream(body));
            let response = inner.call(request).await?;
            return Ok(response.map(IdempotencyBody::stream));
        }
        Ok(None) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "missing-key",
                "Idempotency key missing",
                format!(
                    "This operation is idempotent and requires an `{}` header; send a unique key (such as a UUID) and reuse it for retries.",
                    config.header
                ),
            ));
        }
        Err(why) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "invalid-key",
                "Invalid idempotency key",
                format!("The `{}` header {why}.", config.header),
            ));
        }
    };

    let (body, trailers) = match buffer(body, config.max_request_body).await {
        Buffered::Complete { data, trailers } => (data, trailers),
        Buffered::TooLarge { .. } => {
            return Ok(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                "Request body too large",
                format!(
                    "Requests with an idempotency key are buffered up to {} bytes; this body is larger.",
                    config.max_request_body
                ),
            ));
        }
        Buffered::Failed { .. } => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                "Request body unreadable",
                "The request body failed while it was being read.".to_owned(),
            ));
        }
    };

    let fingerprint = fingerprint(&parts, &config.fingerprint_headers, &body);
    let identity = config
        .identity
        .as_ref()
        .and_then(|identity| identity(&parts));
    let record_key = scoped_key(identity.as_deref(), &key);
    let request = Request::from_parts(parts, IdempotencyBody::full(body, trailers));

    let outcome = run(
        &store,
        config.options,
        Some(record_key.clone()),
        Ok(fingerprint),
        NoReplay,
        async {
            let response = inner.call(request).await.map_err(Failure::Inner)?;
            if !(config.store_if)(response.status()) {
                return Err(Failure::Pass(response.map(IdempotencyBody::stream)));
            }
            let (parts, body) = response.into_parts();
            match buffer(body, config.max_response_body).await {
                Buffered::Complete { data, trailers } => Ok(Captured {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers,
                    extensions: parts.extensions,
                    body: data,
                    trailers,
                    kept: Some(config.clone()),
                }),
                Buffered::TooLarge { prefix, rest } => {
                    if let Ok(key) = RecordKey::new(config.options.scope, record_key.as_str()) {
                        event!(
                            warn,
                            &key,
                            limit = config.max_response_body,
                            "response larger than the buffer limit: passed through, not stored; the key is released"
                        );
                    }
                    let body = IdempotencyBody {
                        kind: Kind::Stream {
                            prefix: Some(prefix),
                            rest,
                        },
                    };
                    Err(Failure::Pass(Response::from_parts(parts, body)))
                }
                Buffered::Failed { prefix, error } => {
                    let body = IdempotencyBody {
                        kind: Kind::Broken {
                            prefix: Some(prefix),
                            error: Some(error),
                        },
                    };
                    Err(Failure::Pass(Response::from_parts(parts, body)))
                }
            }
        },
    )
    .await;

    match outcome {
        Ok(captured) => Ok(captured.into_response()),
        Err(Failure::Pass(response)) => Ok(response),
        Err(Failure::Inner(err)) => Err(err),
        Err(Failure::Idem(err)) => Ok(idem_problem(&err)),
    }
}

/// The key from the request, `None` if it has none, or why it is refused.
fn read_key(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("appears more than once; send exactly one key");
    }
    let text = value
        .to_str()
        .map_err(|_| "must contain visible ASCII characters only")?
        .trim();
    let key = match text.strip_prefix('"') {
        Some(quoted) => unquote(quoted)?,
        None => text.to_owned(),
    };
    if key.is_empty() {
        return Err("is empty");
    }
    if key.len() > MAX_HEADER_KEY_LEN {
        return Err("is longer than 255 bytes");
    }
    Ok(Some(key))
}

/// The content of a structured-field string (RFC 8941) after its opening quote.
fn unquote(quoted: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err("is a quoted string with an invalid escape"),
            },
            '"' => {
                return if chars.next().is_none() {
                    Ok(out)
                } else {
                    Err("has characters after its closing quote")
                };
            }
            c => out.push(c),
        }
    }
    Err("is a quoted string without its closing quote")
}

/// The record key: the caller's identity (length-prefixed, so no identity can forge another's
/// prefix) and the client's key.
fn scoped_key(identity: Option<&str>, key: &str) -> String {
    match identity {
        None => format!("-:{key}"),
        Some(id) if id.len() <= 512 => format!("{}:{id}:{key}", id.len()),
        Some(id) => format!(
            "#:{}:{key}",
            Fingerprint::of(id).map(|f| f.to_hex()).unwrap_or_default()
        ),
    }
}

/// A byte string that serializes as bytes, not as a sequence of numbers.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(self.0)
    }
}

fn fingerprint(parts: &Parts, headers: &[HeaderName], body: &[u8]) -> Fingerprint {
    let mut fp = Fingerprinter::new();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    // Strings, byte strings and tuples of them cannot fail to serialize.
    let _ = fp.add(&(parts.method.as_str(), path));
    for name in headers {
        let values: Vec<Raw<'_>> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Raw(v.as_bytes()))
            .collect();
        let _ = fp.add(&(name.as_str(), values));
    }
    let _ = fp.add(&Raw(body));
    fp.finish()
}

enum Buffered<B: Body> {
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    TooLarge {
        prefix: Bytes,
        rest: Pin<Box<B>>,
    },
    Failed {
        prefix: Bytes,
        error: Box<B::Error>,
    },
}

/// Reads a body into memory, up to `limit` bytes.
async fn buffer<B: Body>(body: B, limit: usize) -> Buffered<B> {
    let mut body = Box::pin(body);
    if body.size_hint().lower() > limit as u64 {
        return Buffered::TooLarge {
            prefix: Bytes::new(),
            rest: body,
        };
    }
    let mut data = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => {
                return Buffered::Complete {
                    data: data.freeze(),
                    trailers,
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut chunk) => {
                    let over = data.len() + chunk.remaining() > limit;
                    while chunk.has_remaining() {
                        let bytes = chunk.chunk();
                        let n = bytes.len();
                        data.put_slice(bytes);
                        chunk.advance(n);
                    }
                    if over {
                        return Buffered::TooLarge {
                            prefix: data.freeze(),
                            rest: body,
                        };
                    }
                }
                Err(frame) => {
                    if let Ok(more) = frame.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(more);
                    }
                }
            },
            Some(Err(error)) => {
                return Buffered::Failed {
                    prefix: data.freeze(),
                    error: Box::new(error),
                };
            }
        }
    }
}

/// A response as produced by the inner service (all headers, for the first caller), or as
/// decoded from the store (kept headers only, replayed).
struct Captured {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
    trailers: Option<HeaderMap>,
    /// The settings whose allowlist filters the headers when stored; `None` once decoded.
    kept: Option<Arc<Config>>,
}

impl Captured {
    fn into_response<B: Body>(self) -> Response<IdempotencyBody<B>> {
        let replayed = self.kept.is_none();
        let mut response = Response::new(IdempotencyBody::full(self.body, self.trailers));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers;
        *response.extensions_mut() = self.extensions;
        if replayed {
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// How a response is stored: JSON, with text as text and other bytes as numbers.
#[derive(Serialize, Deserialize)]
struct Wire {
    status: u16,
    headers: Vec<(String, WireBytes)>,
    body: WireBytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trailers: Option<Vec<(String, WireBytes)>>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireBytes {
    Text(String),
    Bytes(Vec<u8>),
}

impl WireBytes {
    fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => WireBytes::Text(text.to_owned()),
            Err(_) => WireBytes::Bytes(bytes.to_vec()),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            WireBytes::Text(text) => Bytes::from(text),
            WireBytes::Bytes(bytes) => Bytes::from(bytes),
        }
    }
}

fn wire_headers<'a>(
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Vec<(String, WireBytes)> {
    headers
        .map(|(name, value)| (name.as_str().to_owned(), WireBytes::new(value.as_bytes())))
        .collect()
}

fn header_map<E: de::Error>(headers: Vec<(String, WireBytes)>) -> Result<HeaderMap, E> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(E::custom)?;
        let value = HeaderValue::from_maybe_shared(value.into_bytes()).map_err(E::custom)?;
        map.append(name, value);
    }
    Ok(map)
}

impl Serialize for Captured {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let kept = self.kept.as_ref().map(|config| &config.kept_headers);
        let headers = self
            .headers
            .iter()
            .filter(|(name, _)| kept.is_none_or(|kept| kept.contains(name)));
        Wire {
            status: self.status.as_u16(),
            headers: wire_headers(headers),
            body: WireBytes::new(&self.body),
            trailers: self.trailers.as_ref().map(|t| wire_headers(t.iter())),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Captured {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Ok(Captured {
            status: StatusCode::from_u16(wire.status).map_err(de::Error::custom)?,
            version: Version::default(),
            headers: header_map(wire.headers)?,
            extensions: Extensions::new(),
            body: wire.body.into_bytes(),
            trailers: wire.trailers.map(header_map).transpose()?,
            kept: None,
        })
    }
}

fn idem_problem<B: Body>(err: &Error) -> Response<IdempotencyBody<B>> {
    match err {
        Error::Mismatch => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "key-reused",
            "Idempotency key reused",
            "This idempotency key was already used for a different request (method, path, body or headers differ); use a new key for a new operation.".to_owned(),
        ),
        Error::InProgress { .. } => in_progress(
            "A request with this idempotency key is still being processed; retry later to get its response.",
        ),
        Error::WaitTimeout => in_progress(
            "A request with this idempotency key is still being processed and did not finish in time; retry later to get its response.",
        ),
        Error::Store(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Idempotency store unavailable",
            "The request was not processed because its idempotency key could not be checked; retry later with the same key.".to_owned(),
        ),
        Error::InvalidKey(why) => problem(
            StatusCode::BAD_REQUEST,
            "invalid-key",
            "Invalid idempotency key",
            format!("The idempotency key cannot be used: {why}."),
        ),
        _ => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored-response-unreadable",
            "Stored response unreadable",
            "The response stored for this idempotency key could not be read.".to_owned(),
        ),
    }
}

/// `409` with `Retry-After: 1`. The holder's remaining lease (what the store reports) is when
/// a crashed holder's key frees, far later than a live one usually finishes, so it is no hint.
fn in_progress<B: Body>(detail: &str) -> Response<IdempotencyBody<B>> {
    let mut response = problem(
        StatusCode::CONFLICT,
        "in-progress",
        "Request in progress",
        detail.to_owned(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An `application/problem+json` response (RFC 9457).
fn problem<B: Body>(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: String,
) -> Response<IdempotencyBody<B>> {
    #[derive(Serialize)]
    struct Problem<'a> {
        r#type: String,
        title: &'a str,
        status: u16,
        detail: String,
    }
    let problem = Problem {
        r#type: format!("{PROBLEM_BASE}#{slug}"),
        title,
        status: status.as_u16(),
        detail,
    };
    // Strings and integers always serialize.
    let body = Bytes::from(serde_json::to_vec(&problem).unwrap_or_default());
    let mut response = Response::new(IdempotencyBody::full(body, None));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The body the layer hands to the inner service and returns: buffered bytes, or the original
/// body streamed through.
///
/// A guarded request's body is buffered (the fingerprint needs all of it); other requests and
/// responses that are not stored stream through unchanged. It implements [`http_body::Body`]
/// with `Bytes` data, so axum, hyper and tonic take it as it is.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use idem_core::http::IdempotencyBody;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let body = IdempotencyBody::stream(Full::new(Bytes::from_static(b"hello")));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// # }
/// ```
pub struct IdempotencyBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Stream {
        prefix: Option<Bytes>,
        rest: Pin<Box<B>>,
    },
    Broken {
        prefix: Option<Bytes>,
        error: Option<Box<B::Error>>,
    },
}

impl<B: Body> IdempotencyBody<B> {
    /// Wraps a body that streams through unchanged.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// let body = idem_core::http::IdempotencyBody::stream(http_body_util::Empty::<Bytes>::new());
    /// # drop(body);
    /// ```
    pub fn stream(body: B) -> Self {
        IdempotencyBody {
            kind: Kind::Stream {
                prefix: None,
                rest: Box::pin(body),
            },
        }
    }

    fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        IdempotencyBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }
}

impl<B: Body> fmt::Debug for IdempotencyBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "buffered",
            Kind::Stream { .. } => "streaming",
            Kind::Broken { .. } => "failed",
        };
        f.debug_tuple("IdempotencyBody").field(&kind).finish()
    }
}

impl<B: Body> Body for IdempotencyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Stream { prefix, rest } => {
                if let Some(prefix) = prefix.take().filter(|p| !p.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                rest.as_mut().poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame.map(|frame| {
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                        })
                    })
                })
            }
            Kind::Broken { prefix, error } => {
                if let Some(prefix) = prefix.take().filter(|p| !p.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                Poll::Ready(error.take().map(|e| Err(*e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Stream { prefix, rest } => {
                prefix.as_ref().is_none_or(Bytes::is_empty) && rest.is_end_stream()
            }
            Kind::Broken { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Broken { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_as_tokens_or_structured_field_strings() {
        let mut headers = HeaderMap::new();
        assert_eq!(read_key(&headers, &IDEMPOTENCY_KEY), Ok(None));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc-123"));
        assert_eq!(
            read_key(&headers, &IDEMPOTENCY_KEY),
            Ok(Some("abc-123".into()))
        );
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(r#""a\"b""#));
        assert_eq!(
            read_key(&headers, &IDEMPOTENCY_KEY),
            Ok(Some("a\"b".into()))
        );
        for bad in [r#""""#, r#""open"#, r#""a"b"#, r#""a\x""#, ""] {
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(bad));
            assert!(read_key(&headers, &IDEMPOTENCY_KEY).is_err(), "{bad}");
        }
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(read_key(&headers, &IDEMPOTENCY_KEY).is_err());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert!(read_key(&headers, &IDEMPOTENCY_KEY).is_err());
    }

    #[test]
    fn identities_cannot_forge_each_others_prefix() {
        // Without the length prefix, identity "a:b" + key "c" would equal identity "a" + key "b:c".
        assert_ne!(scoped_key(Some("a:b"), "c"), scoped_key(Some("a"), "b:c"));
        assert_ne!(scoped_key(None, "k"), scoped_key(Some("-"), "k"));
        let long = "x".repeat(10_000);
        assert!(scoped_key(Some(&long), &"k".repeat(255)).len() <= crate::MAX_KEY_LEN);
    }

    #[test]
    fn stored_responses_keep_only_allowed_headers_and_round_trip_bytes() {
        let config = Arc::new(Config::default());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("session=secret"),
        );
        let captured = Captured {
            status: StatusCode::CREATED,
            version: Version::HTTP_11,
            headers,
            extensions: Extensions::new(),
            body: Bytes::from_static(b"\xff\x00binary"),
            trailers: None,
            kept: Some(config),
        };
        let json = serde_json::to_vec(&captured).unwrap();
        let back: Captured = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.status, StatusCode::CREATED);
        assert_eq!(
            back.headers.get(header::CONTENT_TYPE).unwrap(),
            "text/plain"
        );
        assert!(back.headers.get(header::SET_COOKIE).is_none());
        assert_eq!(&back.body[..], b"\xff\x00binary");
        assert!(back.kept.is_none());
    }
}
