//! Any source message's headers as Kafka headers: names and values
//! unchanged, AMQP scalars as their text, AMQP properties as `amqp-*`
//! headers (`relay/properties.rs`).

use lapin::types::{AMQPValue, FieldTable};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::relay::message::{InboundHeaders, amqp_value_bytes};

/// Copies Kafka headers except `skip`ped names (case-insensitive), names
/// and values unchanged.
pub(crate) fn kafka_headers_from(
    headers: &InboundHeaders,
    skip: &dyn Fn(&str) -> bool,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    match headers {
        InboundHeaders::Kafka(h) => {
            for header in h.iter().filter(|h| !skip(h.key)) {
                out = out.insert(header);
            }
        }
        InboundHeaders::Amqp(properties) => {
            let table = InboundHeaders::amqp_table(properties).map(FieldTable::inner);
            let entries = table.into_iter().flatten();
            for (name, value) in entries.filter(|(n, _)| !skip(n.as_str())) {
                // Kafka headers are bytes: strings and byte arrays go as they
                // are, scalars as their text, nested tables and arrays cannot
                // be represented and are left out (and logged).
                match amqp_value_bytes(value) {
                    Some(bytes) => {
                        out = out.insert(Header {
                            key: name.as_str(),
                            value: Some(bytes.as_ref()),
                        })
                    }
                    None if matches!(value, AMQPValue::Void) => {
                        out = out.insert::<[u8]>(Header {
                            key: name.as_str(),
                            value: None,
                        })
                    }
                    None => tracing::warn!(
                        header = name.as_str(),
                        "an AMQP table or array header cannot be carried to Kafka; left out"
                    ),
                }
            }
            // The properties a record has no field for, as `amqp-*` headers.
            for (name, value) in crate::relay::properties::kafka_headers(properties) {
                if !skip(name) {
                    out = out.insert(Header {
                        key: name,
                        value: Some(value.as_ref()),
                    });
                }
            }
        }
    }
    out
}
