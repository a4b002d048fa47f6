//! One messaging span's (or metric's) attribute list, built under the
//! [`AttributeRules`] in force ([`MessagingAttributes`]), and [`error_type`].

use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_semantic_conventions::attribute as attr;

use super::keys;
use super::{AttributeRules, Destination, Endpoint, Keys, Operation, PartitionType};
use crate::propagation::HeaderReader;

/// Builds the attribute list of one messaging span, under the
/// [`AttributeRules`] in force.
#[derive(Debug, Clone)]
pub struct MessagingAttributes<'r> {
    rules: &'r AttributeRules,
    attrs: Vec<KeyValue>,
}

impl<'r> MessagingAttributes<'r> {
    /// The attributes every span of `operation` on `destination` carries:
    /// the system, operation name and type, destination name (and, for
    /// RabbitMQ, the routing key).
    pub fn new(operation: Operation, destination: &Destination, rules: &'r AttributeRules) -> Self {
        let system = destination.system();
        let mut this = Self {
            rules,
            attrs: Vec::with_capacity(12),
        };
        this = this
            .put(|k| Some(k.system), system.as_str())
            .put(|k| k.operation_name, operation.name(system))
            .put(|k| k.operation_type, operation.type_name())
            .put(|k| k.legacy_operation, operation.legacy_name());
        if !matches!(
            (operation, destination),
            (Operation::Settle(_), Destination::RabbitMq { .. })
        ) {
            this = this.put(|k| Some(k.destination_name), destination.name());
        }
        if let Destination::RabbitMq { routing_key, .. } = destination
            && !routing_key.is_empty()
        {
            this = this.put(|k| Some(k.rabbitmq_routing_key), routing_key.clone());
        }
        this
    }

    /// An empty list, for attributes learned after the span started (a
    /// delivery report's partition and offset).
    pub fn later(rules: &'r AttributeRules) -> Self {
        Self {
            rules,
            attrs: Vec::new(),
        }
    }

    /// The low-cardinality attributes of the messaging metrics: system,
    /// operation, destination, consumer group, broker — never a key, id,
    /// partition or offset.
    pub fn metric(
        operation: Operation,
        destination: &Destination,
        group: Option<&str>,
        endpoint: &Endpoint,
        rules: &'r AttributeRules,
    ) -> Self {
        let system = destination.system();
        let mut this = Self {
            rules,
            attrs: Vec::with_capacity(8),
        }
        .put(|k| Some(k.system), system.as_str())
        .put(|k| k.operation_name, operation.name(system))
        .put(|k| k.operation_type, operation.type_name())
        .put(|k| Some(k.destination_name), destination.name());
        if let Some(group) = group {
            this = this.consumer_group(group);
        }
        match &endpoint.address {
            Some(address) => this.server(StringValue::from(address.clone()), endpoint.port),
            None => this,
        }
    }

    /// A boolean attribute set to true (for flags outside the conventions).
    pub fn flag(self, key: &'static str) -> Self {
        self.push(key, true)
    }

    /// Drops every attribute with this key.
    pub fn without(mut self, key: &str) -> Self {
        self.attrs.retain(|kv| kv.key.as_str() != key);
        self
    }

    fn push(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.attrs.push(KeyValue::new(key, value));
        self
    }

    /// The chosen version's key for this attribute (when it has one) and,
    /// under `messaging/dup`, the pre-1.26 key beside it.
    fn put(self, key: impl Fn(&Keys) -> Option<&'static str>, value: impl Into<Value>) -> Self {
        let conventions = self.rules.conventions;
        let current = key(conventions.keys());
        let old = conventions.duplicate(current, key(&keys::PRE_1_26));
        let value = value.into();
        let this = match old {
            Some(old) => self.push(old, value.clone()),
            None => self,
        };
        match current {
            Some(current) => this.push(current, value),
            None => this,
        }
    }

    /// `messaging.destination.partition.id` (a string, per 1.26+; an
    /// integer under the pre-1.26 key).
    pub fn partition(self, partition: i32) -> Self {
        let conventions = self.rules.conventions;
        let as_value = |(key, kind): (&'static str, PartitionType)| {
            let value: Value = match kind {
                PartitionType::String => partition.to_string().into(),
                PartitionType::Int => i64::from(partition).into(),
            };
            (key, value)
        };
        let (key, value) = as_value(conventions.keys().partition);
        let this = self.push(key, value);
        match conventions.duplicate(Some(key), Some(keys::PRE_1_26.partition.0)) {
            Some(_) => {
                let (old, value) = as_value(keys::PRE_1_26.partition);
                this.push(old, value)
            }
            None => this,
        }
    }

    /// The Kafka offset (`kafka.offset` in 1.45).
    pub fn kafka_offset(self, offset: i64) -> Self {
        self.put(|k| Some(k.kafka_offset), offset)
    }

    /// The Kafka message key, as the
    /// [`AttributePolicy`](super::AttributePolicy) allows, when it is UTF-8
    /// (binary keys are left out rather than mangled).
    pub fn kafka_key(self, key: Option<&[u8]>) -> Self {
        let recorded = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| self.rules.policy.message_key(k));
        match recorded {
            Some(key) => self.put(|k| Some(k.kafka_key), key),
            None => self,
        }
    }

    /// The tombstone flag, set only when true.
    pub fn tombstone(self, is_tombstone: bool) -> Self {
        if is_tombstone {
            self.put(|k| Some(k.kafka_tombstone), true)
        } else {
            self
        }
    }

    /// `messaging.consumer.group.name`.
    pub fn consumer_group(self, group: &str) -> Self {
        self.put(|k| Some(k.consumer_group), group.to_owned())
    }

    /// The RabbitMQ delivery tag (`rabbitmq.message.delivery_tag` in 1.45).
    pub fn delivery_tag(self, tag: u64) -> Self {
        // OTel integers are i64; a delivery tag never nears 2^63 in practice.
        self.put(
            |k| k.rabbitmq_delivery_tag,
            i64::try_from(tag).unwrap_or(i64::MAX),
        )
    }

    /// `messaging.message.id`, when present.
    pub fn message_id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) if !id.is_empty() => self.put(|k| Some(k.message_id), id.to_owned()),
            _ => self,
        }
    }

    /// `messaging.message.conversation_id` (AMQP correlation id; the
    /// business request id), when present and the
    /// [`AttributePolicy`](super::AttributePolicy) allows.
    pub fn conversation_id(self, id: Option<&str>) -> Self {
        match id
            .filter(|id| !id.is_empty())
            .and_then(|id| self.rules.policy.request_id(id))
        {
            Some(id) => self.put(|k| Some(k.conversation_id), id),
            None => self,
        }
    }

    /// The headers the [`AttributePolicy`](super::AttributePolicy)
    /// captures, as `messaging.header.<name>` string arrays (every value of
    /// the name).
    pub fn captured_headers(mut self, headers: &(impl HeaderReader + ?Sized)) -> Self {
        let policy = &self.rules.policy;
        if policy.captured().is_empty() {
            return self;
        }
        for (name, key) in policy.captured() {
            let Some(value) = headers
                .header_bytes(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| policy.captured_header(v))
            else {
                continue;
            };
            self.attrs.push(KeyValue::new(
                key.clone(),
                Value::Array(vec![StringValue::from(value)].into()),
            ));
        }
        self
    }

    /// `messaging.client.id`.
    pub fn client_id(self, id: impl Into<StringValue>) -> Self {
        self.put(|k| Some(k.client_id), id.into())
    }

    /// `server.address` and `server.port`.
    pub fn server(self, address: impl Into<StringValue>, port: Option<u16>) -> Self {
        let this = self.put(|k| Some(k.server_address), address.into());
        match port {
            Some(port) => this.put(|k| Some(k.server_port), i64::from(port)),
            None => this,
        }
    }

    /// `messaging.message.body.size` (opt-in: callers decide).
    pub fn body_size(self, bytes: usize) -> Self {
        self.put(
            |k| Some(k.body_size),
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )
    }

    /// `messaging.batch.message_count`.
    pub fn batch_count(self, count: usize) -> Self {
        self.put(
            |k| Some(k.batch_count),
            i64::try_from(count).unwrap_or(i64::MAX),
        )
    }

    /// The attributes.
    pub fn into_vec(self) -> Vec<KeyValue> {
        self.attrs
    }
}

/// `error.type`, for a failed operation.
pub fn error_type(kind: impl Into<String>) -> KeyValue {
    KeyValue::new(attr::ERROR_TYPE, kind.into())
}

#[cfg(test)]
mod tests;
