//! Kafka (rdkafka) integration: header carriers.
//!
//! [`KafkaHeaderExtractor`] reads a consumed record's headers (borrowed or
//! owned); [`KafkaHeaderInjector`] writes trace headers into a record being
//! produced, replacing any trace headers already there.

mod carrier;

pub use carrier::{KafkaHeaderExtractor, KafkaHeaderInjector};
