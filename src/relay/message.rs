//! A message as the relay holds it between source and sink, whichever
//! broker it came from. Each sink translates it into its own broker's
//! model (`kafka/headers.rs`, `amqp/headers.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use rdkafka::message::OwnedHeaders;

use super::config::KeyMapping;
use opentelemetry::KeyValue;

use crate::instrument::{Instrumentation, Received};
use crate::propagation::{HeaderReader, Propagation, Transport};
use crate::semconv::{AttributeRules, Endpoint, Operation};

/// A source message's headers, as its broker gave them.
#[derive(Debug, Clone)]
pub(crate) enum InboundHeaders {
    /// Kafka: ordered, repeatable, bytes or null.
    Kafka(OwnedHeaders),
    /// AMQP: the delivery's properties, moved out of it (lapin has no way
    /// to take the header table alone, and a clone per message is what
    /// this avoids); the table is read from them.
    Amqp(Box<BasicProperties>),
}

impl InboundHeaders {
    pub(crate) fn amqp_table(properties: &BasicProperties) -> Option<&FieldTable> {
        properties.headers().as_ref()
    }
}

impl HeaderReader for InboundHeaders {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        match self {
            InboundHeaders::Kafka(h) => crate::kafka::carrier::header_bytes(h, name),
            InboundHeaders::Amqp(p) => {
                Self::amqp_table(p).and_then(|t| crate::amqp::carrier::header_bytes(t, name))
            }
        }
    }

    fn header_names(&self) -> Vec<&str> {
        match self {
            InboundHeaders::Kafka(h) => crate::kafka::carrier::header_names(h),
            InboundHeaders::Amqp(p) => Self::amqp_table(p)
                .map(|t| t.inner().keys().map(|k| k.as_str()).collect())
                .unwrap_or_default(),
        }
    }
}

/// How a route carries a message's headers and key to the other side:
/// which header names are trace headers (never copied, so no stale
/// context travels on) and which AMQP property stands for the Kafka key.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    /// Every header name of the route's read and written formats, on both
    /// transports: computed once, checked for every header of every message.
    trace_headers: Arc<[&'static str]>,
    pub(crate) key_mapping: KeyMapping,
}

impl Translation {
    /// The translation for a route propagating `propagation`.
    pub(crate) fn new(propagation: &Propagation, key_mapping: KeyMapping) -> Self {
        let mut names: Vec<&'static str> = propagation
            .extract_formats()
            .iter()
            .chain(propagation.inject_formats())
            .flat_map(|f| [Transport::Kafka, Transport::Amqp].map(|t| f.fields(t)))
            .flatten()
            .copied()
            .collect();
        names.sort_unstable();
        names.dedup();
        Self {
            trace_headers: names.into(),
            key_mapping,
        }
    }

    /// Whether `name` is a trace header of this route (read or written).
    pub(crate) fn is_trace_header(&self, name: &str) -> bool {
        self.trace_headers
            .iter()
            .any(|field| field.eq_ignore_ascii_case(name))
    }
}

/// A consumed message, per transport, as the span functions take it.
enum Consumed<'a> {
    Kafka(crate::kafka::span::Record<'a>),
    Amqp(crate::amqp::span::Delivered<'a>),
}

/// The properties of a message that has none (never an AMQP delivery).
static NO_PROPERTIES: std::sync::LazyLock<BasicProperties> =
    std::sync::LazyLock::new(BasicProperties::default);

/// Where a message came from, for dead-letter headers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A Kafka record (topic and group shared by the route's messages).
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        group: Arc<str>,
    },
    /// An AMQP delivery (exchange and routing key moved out of it).
    Amqp {
        exchange: ShortString,
        routing_key: ShortString,
        queue: Arc<str>,
        delivery_tag: u64,
        redelivered: bool,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
                ..
            } => write!(f, "kafka {topic}[{partition}]@{offset}"),
            Origin::Amqp {
                queue,
                delivery_tag,
                ..
            } => write!(f, "amqp queue {queue} delivery {delivery_tag}"),
        }
    }
}

/// One message between source and sink.
#[derive(Debug, Clone)]
pub(crate) struct Inbound {
    /// Headers (Kafka) or properties (AMQP).
    pub(crate) headers: InboundHeaders,
    pub(crate) payload: Option<Vec<u8>>,
    /// The record key (Kafka source only).
    pub(crate) kafka_key: Option<Vec<u8>>,
    /// Producer timestamp, milliseconds since the epoch.
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) origin: Origin,
}

impl Inbound {
    /// What the message weighs against its route's byte budget: payload,
    /// key and Kafka headers. AMQP properties are left out: they fit one
    /// frame (RabbitMQ's `frame_max`, 128 KB by default) and are rarely
    /// more than a few hundred bytes.
    pub(crate) fn weight(&self) -> usize {
        let headers = match &self.headers {
            InboundHeaders::Kafka(headers) => {
                use rdkafka::message::Headers as _;
                headers
                    .iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                    .sum()
            }
            InboundHeaders::Amqp(_) => 0,
        };
        self.payload.as_ref().map_or(0, Vec::len)
            + self.kafka_key.as_ref().map_or(0, Vec::len)
            + headers
    }

    fn properties(&self) -> Option<&BasicProperties> {
        match &self.headers {
            InboundHeaders::Amqp(properties) => Some(properties),
            InboundHeaders::Kafka(_) => None,
        }
    }

    /// The AMQP `correlation_id` property (AMQP source).
    pub(crate) fn correlation_id(&self) -> Option<&str> {
        self.properties()?
            .correlation_id()
            .as_ref()
            .map(ShortString::as_str)
    }

    /// The AMQP `message_id` property (AMQP source).
    pub(crate) fn message_id(&self) -> Option<&str> {
        self.properties()?
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
    }

    /// What its process span says of it: the same model, built by the same
    /// functions, as the library consumer of its transport. `attributes`
    /// is called only if the span records.
    /// `route` goes on its process metrics.
    pub(crate) fn received(
        &self,
        endpoint: &Endpoint,
        instrumentation: &Instrumentation,
        route: &str,
    ) -> Received {
        let extra = Some((super::hop::ROUTE_ATTRIBUTE, route));
        match self.as_consumed() {
            Consumed::Kafka(record) => {
                crate::kafka::span::received(&record, endpoint, instrumentation, extra)
            }
            Consumed::Amqp(delivery) => crate::amqp::span::received(
                &delivery,
                Operation::Process,
                endpoint,
                instrumentation,
                extra,
            ),
        }
    }

    /// Its process span's attributes (see [`Inbound::received`]).
    pub(crate) fn attributes(
        &self,
        endpoint: &Endpoint,
        rules: &AttributeRules,
        conversation_id: Option<&str>,
    ) -> Vec<KeyValue> {
        match self.as_consumed() {
            Consumed::Kafka(record) => crate::kafka::span::attributes(
                &record,
                &self.headers,
                endpoint,
                rules,
                false,
                conversation_id,
            ),
            Consumed::Amqp(delivery) => crate::amqp::span::attributes(
                &delivery,
                Operation::Process,
                endpoint,
                rules,
                false,
                conversation_id,
            ),
        }
    }

    /// The message as its transport's span functions see it.
    fn as_consumed(&self) -> Consumed<'_> {
        match &self.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
                group,
            } => Consumed::Kafka(crate::kafka::span::Record {
                topic,
                partition: *partition,
                offset: *offset,
                key: self.kafka_key.as_deref(),
                payload_len: self.payload.as_ref().map(Vec::len),
                timestamp_ms: self.timestamp_ms,
                group: Some(group),
            }),
            Origin::Amqp {
                exchange,
                routing_key,
                queue,
                delivery_tag,
                redelivered,
            } => Consumed::Amqp(crate::amqp::span::Delivered {
                exchange: exchange.as_str(),
                routing_key: routing_key.as_str(),
                queue,
                delivery_tag: *delivery_tag,
                redelivered: *redelivered,
                // An AMQP source always moves the delivery's properties in.
                properties: self.properties().unwrap_or(&NO_PROPERTIES),
                body_len: self.payload.as_ref().map_or(0, Vec::len),
            }),
        }
    }

    /// The source's key: the Kafka key, or the AMQP property `mapping`
    /// names.
    pub(crate) fn source_key(&self, mapping: KeyMapping) -> Option<&[u8]> {
        match (&self.headers, mapping) {
            (InboundHeaders::Kafka(_), _) => self.kafka_key.as_deref(),
            (InboundHeaders::Amqp(_), KeyMapping::CorrelationId) => {
                self.correlation_id().map(str::as_bytes)
            }
            (InboundHeaders::Amqp(_), KeyMapping::MessageId) => {
                self.message_id().map(str::as_bytes)
            }
            (InboundHeaders::Amqp(_), KeyMapping::None) => None,
        }
    }
}

/// What correlation may read a request id from.
impl crate::correlate::MessageFields for Inbound {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.header_bytes(name)
    }
    fn correlation_id(&self) -> Option<&str> {
        Inbound::correlation_id(self)
    }
    fn message_id(&self) -> Option<&str> {
        Inbound::message_id(self)
    }
    /// Only a Kafka source has a key.
    fn key(&self) -> Option<&[u8]> {
        self.kafka_key.as_deref()
    }
    fn body(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A header value as Kafka bytes: strings and byte arrays borrowed as they
/// are, scalars as their text.
pub(crate) fn amqp_value_bytes(value: &AMQPValue) -> Option<Cow<'_, [u8]>> {
    let text = match value {
        AMQPValue::LongString(s) => return Some(Cow::Borrowed(s.as_bytes())),
        AMQPValue::ShortString(s) => return Some(Cow::Borrowed(s.as_str().as_bytes())),
        AMQPValue::ByteArray(b) => return Some(Cow::Borrowed(b.as_slice())),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Float(v) => v.to_string(),
        AMQPValue::Double(v) => v.to_string(),
        AMQPValue::Timestamp(v) => v.to_string(),
        _ => return None,
    };
    Some(Cow::Owned(text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::amqp::headers::{amqp_headers_from, encoded_table_size};
    use crate::relay::kafka::headers::kafka_headers_from;
    use lapin::types::ByteArray;
    use rdkafka::message::{Header, Headers};

    fn kafka(pairs: &[(&str, Option<&[u8]>)]) -> InboundHeaders {
        InboundHeaders::Kafka(pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value: *value })
        }))
    }

    fn no_trace(name: &str) -> bool {
        name.eq_ignore_ascii_case("traceparent")
    }

    #[test]
    fn kafka_to_amqp_keeps_names_and_bytes_and_drops_trace_headers() {
        let h = kafka(&[
            ("x_under", Some(b"a")),
            ("x-dash", Some(&[0, 255])),
            ("traceparent", Some(b"old")),
            ("nul", None),
        ]);
        let (table, left_out) = amqp_headers_from(&h, &no_trace);
        assert!(left_out.is_empty());
        let keys: Vec<_> = table
            .inner()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(keys, vec!["nul", "x-dash", "x_under"]);
        assert_eq!(
            table.inner()["x-dash"],
            AMQPValue::LongString(vec![0u8, 255].into())
        );
        assert_eq!(table.inner()["nul"], AMQPValue::Void);
    }

    #[test]
    fn a_kafka_header_name_amqp_cannot_carry_is_left_out_and_described() {
        let long = "n".repeat(300);
        let h = kafka(&[(long.as_str(), Some(b"v")), ("ok", Some(b"1"))]);
        let (table, left_out) = amqp_headers_from(&h, &no_trace);
        assert_eq!(table.inner().len(), 1, "the other header is kept");
        assert_eq!(left_out.len(), 1);
        assert!(left_out[0].contains("300 bytes"), "{left_out:?}");
    }

    #[test]
    fn an_amqp_header_nested_past_the_limit_is_left_out_and_described() {
        use crate::relay::amqp::headers::{AMQP_NESTING_MAX, nesting_depth};
        let nested = |depth: usize| {
            (0..depth).fold(AMQPValue::Void, |inner, level| {
                if level % 2 == 0 {
                    AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), inner].into())
                } else {
                    let mut table = FieldTable::default();
                    table.insert("n".into(), inner);
                    AMQPValue::FieldTable(table)
                }
            })
        };
        assert_eq!(nesting_depth(&AMQPValue::LongInt(1)), 0);
        assert_eq!(nesting_depth(&nested(AMQP_NESTING_MAX)), AMQP_NESTING_MAX);
        let mut table = FieldTable::default();
        table.insert("at-limit".into(), nested(AMQP_NESTING_MAX));
        table.insert("past".into(), nested(AMQP_NESTING_MAX + 1));
        let properties = lapin::BasicProperties::default().with_headers(table);
        let (copy, left_out) =
            amqp_headers_from(&InboundHeaders::Amqp(Box::new(properties)), &no_trace);
        let keys: Vec<_> = copy.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, vec!["at-limit"]);
        assert_eq!(
            left_out,
            vec!["header \"past\" nests tables or arrays more than 64 levels deep".to_owned()]
        );
    }

    #[test]
    fn the_encoded_table_size_is_the_wire_size() {
        let mut table = FieldTable::default();
        table.insert("ab".into(), AMQPValue::LongString("xyz".into()));
        table.insert("n".into(), AMQPValue::LongInt(1));
        // 4 (length) + (1+2+1+4+3) + (1+1+1+4)
        assert_eq!(encoded_table_size(&table), 4 + 11 + 7);
    }

    #[test]
    fn amqp_to_kafka_keeps_strings_and_bytes_and_writes_scalars_as_text() {
        let mut table = FieldTable::default();
        table.insert("s".into(), AMQPValue::LongString("text".into()));
        table.insert(
            "b".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![1, 2])),
        );
        table.insert("n".into(), AMQPValue::LongInt(-7));
        table.insert("traceparent".into(), AMQPValue::LongString("old".into()));
        let properties = Box::new(BasicProperties::default().with_headers(table));
        let out = kafka_headers_from(&InboundHeaders::Amqp(properties), &no_trace);
        let pairs: Vec<(String, Option<Vec<u8>>)> = out
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("b".into(), Some(vec![1, 2])),
                ("n".into(), Some(b"-7".to_vec())),
                ("s".into(), Some(b"text".to_vec())),
            ]
        );
    }

    #[test]
    fn kafka_to_kafka_keeps_order_and_duplicates() {
        let h = kafka(&[
            ("a", Some(b"1")),
            ("a", Some(b"2")),
            ("traceparent", Some(b"x")),
        ]);
        let out = kafka_headers_from(&h, &no_trace);
        let pairs: Vec<_> = out
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), Some(b"1".to_vec())),
                ("a".into(), Some(b"2".to_vec()))
            ]
        );
    }
}
