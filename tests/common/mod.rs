//! Types shared by the workspace tests: a payment-like request, receipt and error.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub payment_id: String,
    pub amount: u64,
}

impl ChargeRequest {
    pub fn new(payment_id: &str, amount: u64) -> Self {
        ChargeRequest {
            payment_id: payment_id.to_string(),
            amount,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: u64,
    pub amount: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PaymentError {
    /// A final answer: replayed when the function says so with `replay_err`.
    Declined { reason: String },
    /// A transient failure: never stored.
    Unavailable,
    #[serde(skip)]
    Idem(idem_core::Error),
}

impl From<idem_core::Error> for PaymentError {
    fn from(err: idem_core::Error) -> Self {
        PaymentError::Idem(err)
    }
}

impl PaymentError {
    pub fn is_final(&self) -> bool {
        matches!(self, PaymentError::Declined { .. })
    }

    pub fn idem(&self) -> &idem_core::Error {
        match self {
            PaymentError::Idem(err) => err,
            other => panic!("expected an idem error, got {other:?}"),
        }
    }
}

/// Counts one run of a body and answers a receipt numbered by it: run 1 gives id 1.
pub fn next_receipt(runs: &std::sync::atomic::AtomicUsize, req: &ChargeRequest) -> Receipt {
    let run = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u64 + 1;
    Receipt {
        id: run,
        amount: req.amount,
    }
}
