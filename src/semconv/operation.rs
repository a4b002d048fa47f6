//! The messaging model — systems, settlements, operations and destinations —
//! and the span names, kinds and operation names it gives.

use std::borrow::Cow;

use opentelemetry::trace::SpanKind;

use super::span_names;

/// The `messaging.system` of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Apache Kafka (`kafka`).
    Kafka,
    /// RabbitMQ / AMQP 0-9-1 (`rabbitmq`).
    RabbitMq,
}

impl System {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Kafka => "kafka",
            System::RabbitMq => "rabbitmq",
        }
    }
}

/// How a consumer settled a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settlement {
    /// Kafka offset commit.
    Commit,
    /// AMQP `basic.ack`.
    Ack,
    /// AMQP `basic.nack` (the message may be requeued).
    Nack,
    /// AMQP `basic.reject`.
    Reject,
}

/// A messaging operation, as the semantic conventions name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sending one message (PRODUCER).
    Send,
    /// Pulling a message or a batch (CLIENT).
    Receive,
    /// Handling one message (CONSUMER).
    Process,
    /// Settling (CLIENT).
    Settle(Settlement),
}

/// Where a message goes or comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A Kafka topic.
    Kafka {
        /// Topic name.
        topic: String,
    },
    /// An AMQP exchange + routing key, and for consumers the queue.
    RabbitMq {
        /// Exchange (empty = the default exchange).
        exchange: String,
        /// Routing key (may be empty).
        routing_key: String,
        /// The queue, on the consumer side.
        queue: Option<String>,
    },
}

impl Destination {
    /// A Kafka topic.
    pub fn kafka(topic: impl Into<String>) -> Self {
        Destination::Kafka {
            topic: topic.into(),
        }
    }

    /// A RabbitMQ publish target.
    pub fn rabbitmq(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Destination::RabbitMq {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            queue: None,
        }
    }

    /// A RabbitMQ delivery: exchange, routing key, and the queue it came from.
    pub fn rabbitmq_queue(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        queue: impl Into<String>,
    ) -> Self {
        Destination::RabbitMq {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            queue: Some(queue.into()),
        }
    }

    /// The system this destination belongs to.
    pub fn system(&self) -> System {
        match self {
            Destination::Kafka { .. } => System::Kafka,
            Destination::RabbitMq { .. } => System::RabbitMq,
        }
    }

    /// `messaging.destination.name`.
    ///
    /// RabbitMQ, per the conventions: producer side `{exchange}:{routing_key}`
    /// with empty parts left out, `amq.default` when both are empty; consumer
    /// side `{exchange}:{routing_key}:{queue}` with empty parts left out and
    /// the queue omitted when it equals the routing key.
    pub fn name(&self) -> String {
        match self {
            Destination::Kafka { topic } => topic.clone(),
            Destination::RabbitMq {
                exchange,
                routing_key,
                queue,
            } => {
                let mut parts: Vec<&str> = [exchange.as_str(), routing_key.as_str()]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Some(queue) = queue.as_deref()
                    && !queue.is_empty()
                    && queue != routing_key
                {
                    parts.push(queue);
                }
                if parts.is_empty() {
                    "amq.default".to_owned()
                } else {
                    parts.join(":")
                }
            }
        }
    }
}

impl Operation {
    /// `messaging.operation.name` for `system`.
    pub fn name(self, system: System) -> &'static str {
        match (self, system) {
            (Operation::Send, System::Kafka) => "send",
            (Operation::Send, System::RabbitMq) => "publish",
            (Operation::Receive, System::Kafka) => "poll",
            (Operation::Receive, System::RabbitMq) => "receive",
            (Operation::Process, _) => "process",
            (Operation::Settle(Settlement::Commit), _) => "commit",
            (Operation::Settle(Settlement::Ack), _) => "ack",
            (Operation::Settle(Settlement::Nack), _) => "nack",
            (Operation::Settle(Settlement::Reject), _) => "reject",
        }
    }

    /// `messaging.operation.type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Operation::Send => "send",
            Operation::Receive => "receive",
            Operation::Process => "process",
            Operation::Settle(_) => "settle",
        }
    }

    /// The span kind for this operation.
    pub fn span_kind(self) -> SpanKind {
        match self {
            Operation::Send => SpanKind::Producer,
            Operation::Process => SpanKind::Consumer,
            Operation::Receive | Operation::Settle(_) => SpanKind::Client,
        }
    }

    /// The span name: `{operation} {destination}`; RabbitMQ settle spans are
    /// named by the operation alone (`ack`, `nack`, `reject`).
    pub fn span_name(self, destination: &Destination) -> String {
        let system = destination.system();
        let op = self.name(system);
        match (self, destination) {
            (Operation::Settle(_), Destination::RabbitMq { .. }) => op.to_owned(),
            (
                Operation::Receive,
                Destination::RabbitMq {
                    queue: Some(queue), ..
                },
            ) => format!("{op} {queue}"),
            _ => format!("{op} {}", destination.name()),
        }
    }

    /// [`Operation::span_name`], formatted once per operation and
    /// destination and shared after: a span name is needed for every
    /// message, and a process uses a handful of destinations. The names
    /// live as long as the process, so at most [`SHARED_SPAN_NAMES`] are
    /// kept; past that, each name is formatted as before.
    pub fn shared_span_name(self, destination: &Destination) -> Cow<'static, str> {
        span_names::shared(self, destination)
    }

    /// The pre-1.26 `messaging.operation` value, for `messaging/dup`.
    pub(super) fn legacy_name(self) -> &'static str {
        match self {
            Operation::Send => "publish",
            Operation::Receive => "receive",
            Operation::Process => "process",
            Operation::Settle(_) => "settle",
        }
    }
}

/// How many span names [`Operation::shared_span_name`] keeps.
pub const SHARED_SPAN_NAMES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_and_kinds_match_the_design_table() {
        let topic = Destination::kafka("orders");
        let publish = Destination::rabbitmq("fulfillment", "order.created");
        let delivery = Destination::rabbitmq_queue("fulfillment", "order.created", "work");
        let cases = [
            (Operation::Send, &topic, "send orders", SpanKind::Producer),
            (Operation::Receive, &topic, "poll orders", SpanKind::Client),
            (
                Operation::Process,
                &topic,
                "process orders",
                SpanKind::Consumer,
            ),
            (
                Operation::Settle(Settlement::Commit),
                &topic,
                "commit orders",
                SpanKind::Client,
            ),
            (
                Operation::Send,
                &publish,
                "publish fulfillment:order.created",
                SpanKind::Producer,
            ),
            (
                Operation::Receive,
                &delivery,
                "receive work",
                SpanKind::Client,
            ),
            (
                Operation::Process,
                &delivery,
                "process fulfillment:order.created:work",
                SpanKind::Consumer,
            ),
            (
                Operation::Settle(Settlement::Ack),
                &delivery,
                "ack",
                SpanKind::Client,
            ),
            (
                Operation::Settle(Settlement::Nack),
                &delivery,
                "nack",
                SpanKind::Client,
            ),
            (
                Operation::Settle(Settlement::Reject),
                &delivery,
                "reject",
                SpanKind::Client,
            ),
        ];
        for (op, dest, name, kind) in cases {
            assert_eq!(op.span_name(dest), name);
            assert_eq!(op.span_kind(), kind, "{name}");
        }
    }

    #[test]
    fn rabbitmq_destination_names_leave_out_empty_parts() {
        for (dest, name) in [
            (Destination::rabbitmq("", ""), "amq.default"),
            (Destination::rabbitmq("", "jobs"), "jobs"),
            (Destination::rabbitmq("events", ""), "events"),
            (Destination::rabbitmq("events", "a.b"), "events:a.b"),
            (Destination::rabbitmq_queue("", "jobs", "jobs"), "jobs"),
            (Destination::rabbitmq_queue("events", "", "q"), "events:q"),
            (Destination::rabbitmq_queue("", "", "q"), "q"),
            (Destination::rabbitmq_queue("e", "k", "q"), "e:k:q"),
        ] {
            assert_eq!(dest.name(), name, "{dest:?}");
        }
    }
}
