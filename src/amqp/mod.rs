//! AMQP 0-9-1 (lapin, RabbitMQ) integration: header carriers.
//!
//! [`AmqpHeaderExtractor`] reads a delivery's `headers` table;
//! [`AmqpHeaderInjector`] writes trace headers into a table being published.

mod carrier;

pub use carrier::{AmqpHeaderExtractor, AmqpHeaderInjector};
