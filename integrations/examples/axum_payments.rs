//! A small payments API whose `POST /payments` is safe to retry, with idem's `Idempotency-Key`
//! layer on axum and the in-process `MemoryStore`.
//!
//! ```text
//! cargo run -p idem-integrations --example axum_payments
//! curl -i -X POST http://127.0.0.1:3000/payments \
//!      -H 'Idempotency-Key: 4f1c2a' -H 'Content-Type: application/json' \
//!      -d '{"amount": 1200, "currency": "EUR"}'
//! ```
//!
//! `docs/http.md` walks through a first request, a retry, a reused key and two requests at once.
//! `PORT` changes the port (default 3000); the server listens on 127.0.0.1 only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_core::MemoryStore;
use idem_core::http::IdempotencyLayer;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewPayment {
    amount: u64,
    currency: String,
}

#[derive(Clone, Serialize)]
struct Payment {
    id: String,
    amount: u64,
    currency: String,
    status: &'static str,
}

#[derive(Default)]
struct Ledger {
    next_id: AtomicU64,
    payments: Mutex<HashMap<String, Payment>>,
}

/// Charges the card: slow on purpose (1.5 s), so two requests at once overlap.
async fn create_payment(
    State(ledger): State<Arc<Ledger>>,
    Json(new): Json<NewPayment>,
) -> Response {
    if new.amount == 0 {
        let error = serde_json::json!({ "error": "amount must be at least 1" });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = format!("pay_{}", ledger.next_id.fetch_add(1, Ordering::SeqCst) + 1);
    let payment = Payment {
        id: id.clone(),
        amount: new.amount,
        currency: new.currency,
        status: "captured",
    };
    println!("charged {} {} as {id}", payment.amount, payment.currency);
    ledger
        .payments
        .lock()
        .unwrap()
        .insert(id.clone(), payment.clone());
    let location = [(header::LOCATION, format!("/payments/{id}"))];
    (StatusCode::CREATED, location, Json(payment)).into_response()
}

async fn get_payment(State(ledger): State<Arc<Ledger>>, Path(id): Path<String>) -> Response {
    match ledger.payments.lock().unwrap().get(&id) {
        Some(payment) => Json(payment.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let idempotency = IdempotencyLayer::builder(MemoryStore::new())
        // Keys are per caller: two API clients that pick the same key never share a response.
        .identity(|req| {
            let auth = req.headers.get(header::AUTHORIZATION)?;
            Some(auth.to_str().ok()?.to_owned())
        })
        .build();

    let app = Router::new()
        .route("/payments", post(create_payment))
        .route_layer(idempotency)
        .route("/payments/{id}", get(get_payment))
        .with_state(Arc::new(Ledger::default()));

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("payments API on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
