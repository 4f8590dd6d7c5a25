//! Exactly-once effects on NATS JetStream: messages are redelivered (no ack, nak, a consumer
//! restart on a new connection) and each message's side effect still happens once.
//!
//! Needs a JetStream server at `IDEM_NATS_URL` (e.g. `nats://127.0.0.1:4222`); when the
//! variable is unset the test prints that it was skipped. Each run uses its own stream and
//! deletes it at the end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::Publish;
use async_nats::jetstream::{self, AckKind, Message, stream};
use futures_util::StreamExt;
use idem_core::redis::RedisStore;
use idem_core::{Error, MemoryStore, Store, idempotent};
use idem_integrations::nats::message_key;
use serde::{Deserialize, Serialize};

const MESSAGES: usize = 12;

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shipment {
    label: u64,
}

/// What the handler did and what the bus did, per order id.
#[derive(Default)]
struct Ledger {
    /// How many times the side effect ran.
    effects: HashMap<String, usize>,
    /// The highest delivery count seen.
    deliveries: HashMap<String, i64>,
    /// The label each handling returned (first delivery or replay).
    labels: HashMap<String, Vec<u64>>,
    next_label: u64,
}

type Shared = Arc<Mutex<Ledger>>;

/// The side effect, once per message: counts its runs and hands out a new label each time.
#[idempotent(key = key, scope = "test::ship", store = store, fingerprint = order_id, ttl = "5m")]
async fn ship<S: Store>(
    store: &S,
    ledger: &Shared,
    key: String,
    order_id: &str,
) -> Result<Shipment, Error> {
    let mut ledger = ledger.lock().unwrap();
    *ledger.effects.entry(order_id.to_owned()).or_default() += 1;
    ledger.next_label += 1;
    Ok(Shipment {
        label: ledger.next_label,
    })
}

/// Handles one delivery: records it, ships through idem, records the label it got.
async fn handle<S: Store>(store: &S, ledger: &Shared, message: &Message) -> (String, Shipment) {
    let order: Order = serde_json::from_slice(&message.payload).unwrap();
    let delivered = message.info().unwrap().delivered;
    {
        let mut ledger = ledger.lock().unwrap();
        let seen = ledger.deliveries.entry(order.id.clone()).or_default();
        *seen = (*seen).max(delivered);
    }
    let key = message_key(message).unwrap();
    let shipment = ship(store, ledger, key, &order.id).await.unwrap();
    ledger
        .lock()
        .unwrap()
        .labels
        .entry(order.id.clone())
        .or_default()
        .push(shipment.label);
    (order.id, shipment)
}

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("IDEM_TEST_{}_{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_has_its_effect_once_despite_redeliveries() {
    let Ok(url) = std::env::var("IDEM_NATS_URL") else {
        println!("skipped: IDEM_NATS_URL is not set, so the NATS JetStream test does not run");
        return;
    };
    exactly_once_effects(MemoryStore::new(), &url).await;
}

/// The same with the store consumers share in production: Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_has_its_effect_once_with_a_redis_store() {
    let (Ok(url), Ok(redis)) = (
        std::env::var("IDEM_NATS_URL"),
        std::env::var("IDEM_REDIS_URL"),
    ) else {
        println!("skipped: IDEM_NATS_URL and IDEM_REDIS_URL are not both set");
        return;
    };
    let store = RedisStore::builder(redis.as_str())
        .prefix(format!("idem-nats-test:{}:", unique_name()))
        .build()
        .await
        .unwrap_or_else(|err| {
            panic!("IDEM_REDIS_URL={redis} is set but Redis does not answer: {err}")
        });
    exactly_once_effects(store, &url).await;
}

async fn exactly_once_effects<S: Store>(store: S, url: &str) {
    let name = unique_name();
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("idem.test.{name}")],
        ..Default::default()
    })
    .await
    .unwrap();

    // The scenario runs in a task so that the stream is deleted even when it fails.
    let scenario = tokio::spawn(scenario(store, url.to_owned(), name.clone()));
    let outcome = scenario.await;
    js.delete_stream(&name).await.unwrap();
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn scenario<S: Store>(store: S, url: String, name: String) {
    let subject = format!("idem.test.{name}");
    let ledger = Shared::default();

    // Publish: half the orders carry a Nats-Msg-Id, half are keyed by stream sequence.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    for i in 0..MESSAGES {
        let id = format!("order-{i}");
        let mut publish = Publish::build().payload(
            serde_json::to_vec(&Order { id: id.clone() })
                .unwrap()
                .into(),
        );
        if i % 2 == 0 {
            publish = publish.message_id(&id);
        }
        js.send_publish(subject.clone(), publish)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let stream = js.get_stream(&name).await.unwrap();
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some("shipper".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();

    // Round 1: every order is handled (its effect happens), but only every third is acked;
    // the others are nak'd (redelivered at once) or left unacked (redelivered after ack_wait),
    // as a consumer that fails or crashes between the effect and the ack would.
    let mut acked: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    {
        let mut messages = consumer.messages().await.unwrap();
        while seen.len() < MESSAGES {
            let next = tokio::time::timeout_at(deadline, messages.next()).await;
            let message = next.expect("round 1 timed out").unwrap().unwrap();
            let (order, _) = handle(&store, &ledger, &message).await;
            let i: usize = order["order-".len()..].parse().unwrap();
            let first = seen.insert(order.clone());
            match i % 3 {
                0 if first => message.ack_with(AckKind::Nak(None)).await.unwrap(),
                2 if first => {
                    message.double_ack().await.unwrap();
                    acked.insert(order);
                }
                _ => {} // no ack
            }
        }
    }
    drop(consumer);
    drop(js);

    // Round 2: the consumer "restarts" on a new connection, bound to the same durable consumer,
    // and acks everything it gets, until every order is acked.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let consumer: jetstream::consumer::Consumer<pull::Config> = js
        .get_stream(&name)
        .await
        .unwrap()
        .get_consumer("shipper")
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while acked.len() < MESSAGES {
        let next = tokio::time::timeout_at(deadline, messages.next()).await;
        let message = next.expect("round 2 timed out").unwrap().unwrap();
        let (order, _) = handle(&store, &ledger, &message).await;
        message.double_ack().await.unwrap();
        acked.insert(order);
    }

    let ledger = ledger.lock().unwrap();
    for i in 0..MESSAGES {
        let order = format!("order-{i}");
        assert_eq!(
            ledger.effects[&order], 1,
            "{order}: the side effect ran once"
        );
        let labels = &ledger.labels[&order];
        assert!(
            labels.iter().all(|l| *l == labels[0]),
            "{order}: every delivery got the first outcome, got {labels:?}"
        );
        if i % 3 != 2 {
            // The bus really did deliver it again, so the test would see a second effect.
            assert!(
                ledger.deliveries[&order] >= 2 && labels.len() >= 2,
                "{order} was not redelivered: {:?} deliveries",
                ledger.deliveries[&order]
            );
        }
    }
    let handled: usize = ledger.labels.values().map(Vec::len).sum();
    assert!(
        handled > MESSAGES,
        "{handled} handlings for {MESSAGES} messages"
    );
    println!("{handled} deliveries of {MESSAGES} messages, {MESSAGES} effects");
}
