//! idem at the two doors duplicates come through: a client retrying an HTTP request, and a
//! broker redelivering a message.
//!
//! - `examples/axum_payments.rs`: a payments API on axum behind
//!   [`idem_core::http::IdempotencyLayer`]; `tests/http.rs` drives the layer over real HTTP.
//! - `examples/nats_consumer.rs`: a NATS JetStream consumer whose handler is `#[idempotent]`,
//!   keyed by [`nats::message_key`]; `tests/nats.rs` forces redeliveries and counts effects.
//!
//! This package is not published. It is a package of its own, rather than features of the root
//! package, so that its heavy dependencies stay out of the root package's compile-fail tests.
#![warn(missing_docs, unreachable_pub)]

pub mod nats {
    //! What the JetStream example and test share.

    use async_nats::jetstream::Message;

    /// The idempotency key of a message: the same on every redelivery, different between
    /// messages.
    ///
    /// The publisher's `Nats-Msg-Id` header if it set one (which also covers the publisher
    /// sending the same message twice), else the stream name and the stream sequence the
    /// message was stored under. The consumer sequence and the delivery count change on every
    /// redelivery, so they must not be part of the key.
    ///
    /// # Errors
    ///
    /// A message without a `Nats-Msg-Id` whose reply subject is not a JetStream ack subject (it
    /// did not come from a JetStream consumer) has no stream sequence.
    pub fn message_key(message: &Message) -> Result<String, async_nats::Error> {
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID));
        if let Some(id) = msg_id {
            return Ok(format!("msg-id:{}", id.as_str()));
        }
        let info = message.info()?;
        Ok(format!("seq:{}:{}", info.stream, info.stream_sequence))
    }
}
