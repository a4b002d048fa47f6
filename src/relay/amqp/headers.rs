//! Any source message's headers as an AMQP header table, and the limits
//! of AMQP's model that a message from Kafka can exceed.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use rdkafka::message::Headers;

use crate::relay::message::{InboundHeaders, prefix};

/// The longest AMQP short string (header names, routing keys,
/// `correlation_id`, `message_id`): its length is one byte on the wire.
pub(crate) const AMQP_SHORT_STRING_MAX: usize = 255;

/// Copies headers into an AMQP table except `skip`ped names. Kafka values
/// become long strings (byte-exact); null values become `Void`. When a
/// Kafka name repeats, the last value wins (a table holds one per name).
/// A Kafka header name AMQP cannot carry (over 255 bytes) is left out and
/// described in the second value, as is an AMQP header nested deeper than
/// [`AMQP_NESTING_MAX`]: the caller decides whether that makes the message
/// unrepresentable (the sink) or is noted (a dead letter).
pub(crate) fn amqp_headers_from(
    headers: &InboundHeaders,
    skip: &dyn Fn(&str) -> bool,
) -> (FieldTable, Vec<String>) {
    match headers {
        InboundHeaders::Kafka(h) => {
            let mut table = FieldTable::default();
            let mut left_out = Vec::new();
            for header in h.iter().filter(|h| !skip(h.key)) {
                let Ok(name) = ShortString::try_new(header.key) else {
                    left_out.push(format!(
                        "header name of {} bytes (AMQP allows {AMQP_SHORT_STRING_MAX}) starting {:?}",
                        header.key.len(),
                        prefix(header.key, 32)
                    ));
                    continue;
                };
                let value = match header.value {
                    Some(bytes) => AMQPValue::LongString(LongString::from(bytes.to_vec())),
                    None => AMQPValue::Void,
                };
                table.insert(name, value);
            }
            (table, left_out)
        }
        // A copy is needed: the outgoing publish consumes its table.
        InboundHeaders::Amqp(properties) => {
            let mut left_out = Vec::new();
            let table = InboundHeaders::amqp_table(properties)
                .map(FieldTable::inner)
                .into_iter()
                .flatten()
                .filter(|(name, _)| !skip(name.as_str()))
                .filter(|(name, value)| {
                    let depth = nesting_depth(value);
                    if depth > AMQP_NESTING_MAX {
                        left_out.push(format!(
                            "header {:?} nests tables or arrays more than {AMQP_NESTING_MAX} levels deep",
                            prefix(name.as_str(), 32)
                        ));
                    }
                    depth <= AMQP_NESTING_MAX
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect::<std::collections::BTreeMap<_, _>>();
            let mut table = FieldTable::from(table);
            // RabbitMQ takes a `user-id` only from its own connection's user.
            if let Some(user) = properties.user_id()
                && !skip(crate::relay::properties::USER_ID)
            {
                table.insert(
                    crate::relay::properties::USER_ID.into(),
                    AMQPValue::LongString(LongString::from(user.as_str())),
                );
            }
            (table, left_out)
        }
    }
}

/// How deep a header value may nest tables and arrays for the relay to
/// carry it. lapin's parser (patched, `patches/README.md`) stops descending
/// at 100 levels (`amq_protocol_types::parsing::MAX_NESTING_DEPTH`) and keeps
/// what lies deeper as bytes: a value nested past this limit is never
/// republished changed, it makes the message unrepresentable.
pub(crate) const AMQP_NESTING_MAX: usize = 64;

/// The levels of tables and arrays in `value`, one inside the other (0 for
/// a scalar). Walked with a stack of its own, whatever the depth.
pub(crate) fn nesting_depth(value: &AMQPValue) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            AMQPValue::FieldTable(table) => {
                pending.extend(table.inner().values().map(|v| (v, depth + 1)));
                deepest = deepest.max(depth + 1);
            }
            AMQPValue::FieldArray(array) => {
                pending.extend(array.as_slice().iter().map(|v| (v, depth + 1)));
                deepest = deepest.max(depth + 1);
            }
            _ => {}
        }
    }
    deepest
}

/// The bytes `table` takes on the wire (AMQP 0-9-1 field table encoding,
/// the 4-byte length included).
pub(crate) fn encoded_table_size(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(name, value)| 1 + name.as_str().len() + 1 + encoded_value_size(value))
        .sum::<usize>()
}

fn encoded_value_size(value: &AMQPValue) -> usize {
    match value {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => {
            4 + a
                .as_slice()
                .iter()
                .map(|v| 1 + encoded_value_size(v))
                .sum::<usize>()
        }
        AMQPValue::FieldTable(t) => encoded_table_size(t),
        AMQPValue::Void => 0,
    }
}
