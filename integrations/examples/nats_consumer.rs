//! Exactly-once effects on an at-least-once bus: a NATS JetStream consumer whose handler is
//! made idempotent by idem, keyed by the message's identity.
//!
//! ```text
//! nats-server -js &                                    # JetStream on 127.0.0.1:4222
//! cargo run -p idem-integrations --example nats_consumer  # IDEM_NATS_URL overrides the address
//! ```
//!
//! JetStream redelivers a message whose ack did not arrive: the consumer crashed, the ack was
//! lost, or the handler took longer than `ack_wait`. Whatever the handler did before that is
//! done again, unless it is idempotent. Here it is: the first delivery ships the order and stores
//! the shipment under the message's key; a redelivery gets the stored shipment back, and acks.
//!
//! The example publishes five orders (one of them twice), "crashes" after shipping one of them
//! but before acking, and shows that the redelivery does not ship it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::Publish;
use async_nats::jetstream::{self, AckKind, stream};
use futures_util::StreamExt;
use idem_core::{Error, MemoryStore, idempotent};
use idem_integrations::nats::message_key;
use serde::{Deserialize, Serialize};

const STREAM: &str = "IDEM_EXAMPLE_ORDERS";
const SUBJECT: &str = "idem.example.orders";

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    sku: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Shipment {
    order: String,
    label: u64,
}

#[derive(Debug)]
enum ShipError {
    Idem(Error),
}

impl From<Error> for ShipError {
    fn from(err: Error) -> Self {
        ShipError::Idem(err)
    }
}

/// The side effect we must not repeat: every call prints a shipping label.
#[derive(Default)]
struct Warehouse {
    labels: AtomicU64,
    shipped: Mutex<HashMap<String, u32>>,
}

impl Warehouse {
    fn ship(&self, order: &Order) -> Shipment {
        let label = self.labels.fetch_add(1, Ordering::SeqCst) + 1;
        *self
            .shipped
            .lock()
            .unwrap()
            .entry(order.id.clone())
            .or_default() += 1;
        Shipment {
            order: order.id.clone(),
            label,
        }
    }
}

/// Ships `order` once per `key`. The outcome is stored before this returns, so the caller may
/// ack the message as soon as it has the `Ok`.
#[idempotent(key = key, scope = "orders::ship", store = store, fingerprint = order)]
async fn ship(
    store: &MemoryStore,
    warehouse: &Warehouse,
    key: String,
    order: &Order,
) -> Result<Shipment, ShipError> {
    Ok(warehouse.ship(order))
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let url = std::env::var("IDEM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    let orders = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            ..Default::default()
        })
        .await?;

    for i in 1..=5 {
        let order = Order {
            id: format!("order-{i}"),
            sku: format!("sku-{}", 100 + i),
        };
        let payload = serde_json::to_vec(&order)?;
        js.send_publish(
            SUBJECT,
            Publish::build()
                .payload(payload.into())
                .message_id(&order.id),
        )
        .await?
        .await?;
    }
    // The publisher retries order-2 (say its first ack timed out): same Nats-Msg-Id, so
    // JetStream drops the copy inside its duplicate window.
    let order = Order {
        id: "order-2".into(),
        sku: "sku-102".into(),
    };
    let again = js
        .send_publish(
            SUBJECT,
            Publish::build()
                .payload(serde_json::to_vec(&order)?.into())
                .message_id(&order.id),
        )
        .await?
        .await?;
    println!(
        "published 5 orders, order-2 twice (duplicate: {})",
        again.duplicate
    );

    let consumer = orders
        .create_consumer(pull::Config {
            durable_name: Some("shipper".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(2),
            ..Default::default()
        })
        .await?;

    // In production the store is shared by every consumer process: Redis or Postgres.
    let store = MemoryStore::new();
    let warehouse = Arc::new(Warehouse::default());
    let mut acked = 0;
    let mut crashed_once = false;
    let mut messages = consumer.messages().await?;
    while acked < 5 {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message?;
        let delivered = message.info()?.delivered;
        let key = message_key(&message)?;
        let Ok(order) = serde_json::from_slice::<Order>(&message.payload) else {
            // A message that can never be handled: stop redelivering it.
            message.ack_with(AckKind::Term).await?;
            continue;
        };
        match ship(&store, &warehouse, key, &order).await {
            Ok(shipment) => {
                println!(
                    "{} (delivery {delivered}): label {}",
                    order.id, shipment.label
                );
                if order.id == "order-3" && !crashed_once {
                    crashed_once = true;
                    println!(
                        "  ...and the consumer crashes before acking; JetStream will redeliver"
                    );
                    continue;
                }
                // Ack only now: the outcome is stored, so a redelivery replays it.
                message.double_ack().await?;
                acked += 1;
            }
            Err(ShipError::Idem(err)) => {
                println!("{}: {err}; asking for a redelivery", order.id);
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await?;
            }
        }
    }

    println!("shipments per order:");
    let shipped = warehouse.shipped.lock().unwrap().clone();
    let mut shipped: Vec<_> = shipped.into_iter().collect();
    shipped.sort();
    for (order, times) in shipped {
        println!("  {order}: {times}");
    }
    js.delete_stream(STREAM).await?;
    Ok(())
}
