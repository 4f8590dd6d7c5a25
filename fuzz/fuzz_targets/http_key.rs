//! The HTTP layer's `Idempotency-Key` handling, from arbitrary header bytes, methods, extra
//! headers and bodies: never a panic; a refused key is `400` and never reaches the service; a
//! request the service answered under a key is replayed (`Idempotent-Replayed: true`) the
//! second time, without reaching the service again.
#![no_main]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use idem_core::MemoryStore;
use idem_core::http::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyBody, IdempotencyLayer};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt, service_fn};

fuzz_target!(|data: &[u8]| {
    let [flags, key_len, rest @ ..] = data else {
        return;
    };
    let (key, body) = rest.split_at((*key_len as usize * 2).min(rest.len()));
    let method = match flags % 3 {
        0 => Method::POST,
        1 => Method::PATCH,
        _ => Method::GET,
    };
    let twice = flags & 0x10 != 0; // the key header sent twice in one request
    let Ok(value) = HeaderValue::from_bytes(key) else {
        return; // not a header value at all: the HTTP stack would refuse it before the layer
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let calls = calls.clone();
            service_fn(move |_req: Request<IdempotencyBody<Full<Bytes>>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done")))) }
            })
        };
        let service = IdempotencyLayer::new(MemoryStore::new()).layer(inner);
        let request = || {
            let mut req = Request::builder()
                .method(method.clone())
                .uri("/orders")
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap();
            req.headers_mut().append(IDEMPOTENCY_KEY, value.clone());
            if twice {
                req.headers_mut().append(IDEMPOTENCY_KEY, value.clone());
            }
            req
        };
        let first = service.clone().oneshot(request()).await.unwrap();
        let after_first = calls.load(Ordering::SeqCst);
        let second = service.clone().oneshot(request()).await.unwrap();
        let after_second = calls.load(Ordering::SeqCst);
        assert_eq!(
            first.status(),
            second.status(),
            "the same request, the same status"
        );
        match first.status() {
            StatusCode::BAD_REQUEST => {
                assert_ne!(
                    method,
                    Method::GET,
                    "GET is not guarded, its key is not read"
                );
                assert_eq!(after_second, 0, "a refused key never reaches the service");
            }
            StatusCode::OK if method == Method::GET => {
                assert_eq!(after_second, 2, "GET passes through every time");
            }
            StatusCode::OK => {
                assert!(!twice, "a key given twice is refused");
                assert_eq!(after_first, 1);
                assert_eq!(after_second, 1, "the retry is replayed, not run again");
                assert_eq!(
                    second
                        .headers()
                        .get(IDEMPOTENT_REPLAYED)
                        .map(|v| v.as_bytes()),
                    Some(&b"true"[..])
                );
            }
            other => panic!("unexpected status {other}"),
        }
    });
});
