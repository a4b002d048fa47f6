//! The relay's Kafka room: reading a topic (`source`), committing what was
//! settled (`offsets`), writing records (`sink`) and translating any
//! message's headers into Kafka's (`headers`).

pub(crate) mod headers;
pub(crate) mod offsets;
pub(crate) mod ownership;
pub(crate) mod sink;
pub(crate) mod source;

use rdkafka::ClientConfig;

use super::config::{KafkaBroker, KeySource};
use super::message::Translation;
use crate::Error;
use crate::Instrumentation;
use crate::kafka::producer::FutureProducer;
use crate::propagation::Propagation;

/// The settings every client of `broker` starts from.
fn client_config(broker: &KafkaBroker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("client.id", crate::relay::CLIENT_ID);
    config
}

/// The operator's librdkafka properties, applied last.
fn apply_properties(config: &mut ClientConfig, broker: &KafkaBroker) {
    for (key, value) in &broker.properties {
        config.set(key, value);
    }
}

/// A route's Kafka destination, its producer created (librdkafka connects
/// in the background).
pub(crate) fn connect_sink(
    broker: &KafkaBroker,
    topic: &str,
    key: &KeySource,
    propagation: &Propagation,
    translation: Translation,
    instrumentation: &Instrumentation,
) -> Result<sink::KafkaSink, Error> {
    let mut config = client_config(broker);
    // Delivery reports only after the broker really has the record; a
    // retried send written once and in order (librdkafka's default is
    // off, and `check` refuses turning it off).
    config.set("acks", "all").set("enable.idempotence", "true");
    apply_properties(&mut config, broker);
    let producer: FutureProducer = config
        .create()
        .map_err(|source| crate::kafka::client_error(&config, source))?;
    let producer = producer
        .with_propagation(propagation.clone())
        .with_instrumentation(instrumentation.clone());
    Ok(sink::KafkaSink {
        producer,
        topic: topic.to_owned(),
        key: key.clone(),
        translation,
    })
}
