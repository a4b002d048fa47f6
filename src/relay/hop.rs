//! The hop: what the relay does with one message, top to bottom.
//!
//! extract the message's own creation context → CONSUMER `process` span
//! (child of that context in `join` mode, a new linked trace in `link`
//! mode) → PRODUCER span for the sink, its context injected into the
//! outgoing headers (trace headers replaced, every other header copied) →
//! publish and wait for the sink's confirm → retry with backoff → dead
//! letter with the reason → only then may the source be acknowledged.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, LongString, ShortString};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use rdkafka::message::Header;
use rdkafka::producer::FutureRecord;

use super::config::{KeyMapping, Mode, RoutingKey};
use super::message::{
    AMQP_SHORT_STRING_MAX, Inbound, Origin, amqp_headers_from, encoded_table_size,
    kafka_headers_from, prefix,
};
use crate::correlate::{self, Correlator, RequestId};
use crate::instrument::{self, Instrumentation};
use crate::kafka::TracedProducer;
use crate::propagation::{ExtractedContext, Propagation, Transport};
use crate::semconv::{Destination, MessagingAttributes, Operation};

/// Header names on dead letters.
pub const DEAD_LETTER_ERROR: &str = "x-tracebridge-error";
/// The route that dead-lettered the message.
pub const DEAD_LETTER_ROUTE: &str = "x-tracebridge-route";
/// Where the message came from (`kafka topic[partition]@offset` or
/// `amqp queue NAME delivery TAG`).
pub const DEAD_LETTER_SOURCE: &str = "x-tracebridge-source";
/// How many attempts were made.
pub const DEAD_LETTER_ATTEMPTS: &str = "x-tracebridge-attempts";

/// A connected sink: where a route's messages (or dead letters) go.
pub(crate) enum SinkClient {
    Kafka {
        producer: TracedProducer,
        topic: String,
        key: RoutingKey,
    },
    Amqp {
        publisher: super::publisher::ReconnectingPublisher,
        exchange: String,
        routing_key: RoutingKey,
    },
}

/// Why a send did not succeed.
#[derive(Debug, Clone)]
pub(crate) struct SendError {
    pub(crate) error_type: String,
    pub(crate) message: String,
    /// The message itself cannot be sent (too large, unrepresentable in the
    /// sink's model, unroutable): retrying cannot help, and it must never
    /// reach the wire where it could fail the connection its neighbours
    /// share. Otherwise transient (broker down, timeout): retried.
    pub(crate) permanent: bool,
}

impl SendError {
    fn permanent(error_type: &str, message: String) -> Self {
        Self {
            error_type: error_type.to_owned(),
            message,
            permanent: true,
        }
    }
}

/// How a send is dressed: the message itself, or a dead letter carrying
/// the reason headers (`minimal`: with none of the original headers, when
/// even the full dead letter could not be sent).
#[derive(Clone, Copy)]
enum Dress<'a> {
    Message,
    DeadLetter {
        reason: &'a [(&'static str, String)],
        minimal: bool,
    },
}

/// The header naming what a dead letter had to leave out of the original.
pub const DEAD_LETTER_LEFT_OUT: &str = "x-tracebridge-left-out";

/// The end of one message's hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The sink confirmed the message.
    Delivered { attempts: u32 },
    /// Every attempt failed; the dead-letter destination confirmed it.
    DeadLettered { attempts: u32, error: String },
    /// Neither the sink nor the dead-letter destination took it: the
    /// source must NOT be acknowledged.
    Failed { error: String },
    /// The message can never be sent (a permanent error) and the route has
    /// no dead-letter destination: the route must stop at it, visibly,
    /// without acknowledging it.
    Poisoned { error: String },
}

/// Everything a route's hops share.
pub(crate) struct Hop {
    /// Shared so each span's route attribute is a reference count, not a copy.
    pub(crate) route: std::sync::Arc<str>,
    pub(crate) mode: Mode,
    pub(crate) propagation: Propagation,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) key_mapping: KeyMapping,
    pub(crate) sink: SinkClient,
    pub(crate) dead_letter: Option<SinkClient>,
    pub(crate) instrumentation: Instrumentation,
    /// Every header name of the route's read and written formats, on both
    /// transports: computed once, checked for every header of every message.
    pub(crate) trace_headers: Vec<&'static str>,
    /// Correlation by request id, when the route configures it.
    pub(crate) correlation: Option<Correlator>,
    /// The route's counters (correlation outcomes).
    pub(crate) stats: std::sync::Arc<super::RouteStats>,
}

/// The trace header names of `propagation`'s formats (see
/// [`Hop::trace_headers`]).
pub(crate) fn trace_header_names(propagation: &Propagation) -> Vec<&'static str> {
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
    names
}

impl Hop {
    /// Relays one message. Never panics and never drops it: the outcome
    /// says whether the source may be acknowledged.
    pub(crate) async fn relay(&self, message: &Inbound) -> Outcome {
        let extracted = self.propagation.extract(&message.headers);
        let cx = self.start_process_span(message, &extracted).await;
        let mut last_error: Option<SendError> = None;
        let mut attempts = 0;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(self.backoff_before(attempt)).await;
            }
            attempts = attempt;
            match self.send(&self.sink, &cx, message, Dress::Message).await {
                Ok(()) => {
                    cx.span().end();
                    return Outcome::Delivered { attempts: attempt };
                }
                Err(err) => {
                    let _attached = cx.clone().attach();
                    // Per attempt at debug: during an outage every message
                    // fails every attempt; the route logs the outage once.
                    tracing::debug!(
                        route = %self.route,
                        stage = "send",
                        attempt,
                        source = %message.origin,
                        error = %err.message,
                        permanent = err.permanent,
                        "sink did not take the message"
                    );
                    let permanent = err.permanent;
                    last_error = Some(err);
                    if permanent {
                        break;
                    }
                }
            }
        }
        let (error, permanent) = match last_error {
            Some(e) => {
                instrument::record_failure(&cx, &e.error_type, e.message.clone());
                (e.message, e.permanent)
            }
            None => (String::new(), false),
        };
        let outcome = match &self.dead_letter {
            None if permanent => Outcome::Poisoned { error },
            None => Outcome::Failed { error },
            Some(dead_letter) => {
                self.dead_letter(dead_letter, &cx, message, attempts, error)
                    .await
            }
        };
        let _attached = cx.clone().attach();
        match &outcome {
            Outcome::DeadLettered { error, attempts } => tracing::error!(
                route = %self.route, stage = "dead_letter", source = %message.origin, %error,
                "message dead-lettered after {attempts} attempt(s)"
            ),
            Outcome::Poisoned { error } => tracing::error!(
                route = %self.route, stage = "send", source = %message.origin, %error,
                "the message can never be sent and the route has no dead_letter: the route stops at it"
            ),
            // Logged once per outage by the source loop.
            Outcome::Failed { .. } | Outcome::Delivered { .. } => {}
        }
        cx.span().end();
        outcome
    }

    /// Sends the dead letter; when the sink cannot carry even that (its
    /// headers are what it cannot represent), a minimal one with the
    /// reason headers alone.
    async fn dead_letter(
        &self,
        sink: &SinkClient,
        cx: &Context,
        message: &Inbound,
        attempts: u32,
        error: String,
    ) -> Outcome {
        let reason = [
            (DEAD_LETTER_ERROR, error.clone()),
            (DEAD_LETTER_ROUTE, self.route.to_string()),
            (DEAD_LETTER_SOURCE, message.origin.to_string()),
            (DEAD_LETTER_ATTEMPTS, attempts.to_string()),
        ];
        let full = Dress::DeadLetter {
            reason: &reason,
            minimal: false,
        };
        let failure = match self.send(sink, cx, message, full).await {
            Ok(()) => return Outcome::DeadLettered { attempts, error },
            Err(failure) if failure.permanent => {
                let minimal = Dress::DeadLetter {
                    reason: &reason,
                    minimal: true,
                };
                match self.send(sink, cx, message, minimal).await {
                    Ok(()) => return Outcome::DeadLettered { attempts, error },
                    Err(again) => again,
                }
            }
            Err(failure) => failure,
        };
        Outcome::Failed {
            error: format!("{error}; dead-lettering failed too: {}", failure.message),
        }
    }

    /// Exponential: backoff, 2×, 4×, … capped at 30 s.
    fn backoff_before(&self, attempt: u32) -> Duration {
        let factor = 1u32 << (attempt.saturating_sub(2)).min(16);
        (self.backoff * factor).min(Duration::from_secs(30))
    }

    async fn start_process_span(&self, message: &Inbound, extracted: &ExtractedContext) -> Context {
        let request_id = self
            .correlation
            .as_ref()
            .and_then(|c| c.extractor.extract(message));
        let stability = self.instrumentation.stability();
        let (destination, attributes) = match &message.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
                group,
            } => {
                let destination = Destination::kafka(&**topic);
                let attributes =
                    MessagingAttributes::new(Operation::Process, &destination, stability)
                        .consumer_group(group)
                        .partition(*partition)
                        .kafka_offset(*offset)
                        .kafka_key(message.kafka_key.as_deref())
                        .conversation_id(request_id.as_ref().map(RequestId::as_str))
                        .tombstone(message.payload.is_none());
                (destination, attributes)
            }
            Origin::Amqp {
                exchange,
                routing_key,
                queue,
                delivery_tag,
                redelivered,
            } => {
                let destination =
                    Destination::rabbitmq_queue(exchange.as_str(), routing_key.as_str(), &**queue);
                let mut attributes =
                    MessagingAttributes::new(Operation::Process, &destination, stability)
                        .delivery_tag(*delivery_tag)
                        .message_id(message.message_id())
                        .conversation_id(
                            request_id
                                .as_ref()
                                .map(RequestId::as_str)
                                .or(message.correlation_id()),
                        );
                if *redelivered {
                    attributes = attributes.flag(crate::amqp::REDELIVERED_ATTRIBUTE);
                }
                (destination, attributes)
            }
        };
        let mut attributes = attributes.into_vec();
        attributes.push(KeyValue::new(ROUTE_ATTRIBUTE, self.route_value()));
        let name = Operation::Process.span_name(&destination);
        let resolution = match (&self.correlation, &request_id) {
            (Some(correlator), Some(id)) => {
                Some(correlator.resolve(id, extracted.span_context()).await)
            }
            _ => None,
        };
        if let Some(resolution) = &resolution {
            self.note_correlation(resolution, &mut attributes, message);
        }
        // A message with its own context follows the route's mode; one
        // placed by correlation goes where its resolution says.
        let cx = match resolution.filter(|r| r.outcome != correlate::Outcome::Recorded) {
            Some(placed) => self.instrumentation.start_correlated_span(
                name,
                extracted,
                placed.parent(),
                placed.link(),
                attributes,
            ),
            None => self.instrumentation.start_process_span(
                name,
                self.mode.parent_policy(),
                extracted,
                attributes,
            ),
        };
        let produced_at = message
            .timestamp_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
        self.instrumentation.record_queue_time(
            &cx,
            produced_at,
            &[KeyValue::new(ROUTE_ATTRIBUTE, self.route_value())],
        );
        cx
    }

    /// Counts the resolution, records it on the span's attributes, and
    /// warns about a store failure (the message goes on regardless).
    fn note_correlation(
        &self,
        resolution: &correlate::Resolution,
        attributes: &mut Vec<KeyValue>,
        message: &Inbound,
    ) {
        self.stats.correlation.count(resolution);
        attributes.push(KeyValue::new(
            correlate::OUTCOME_ATTRIBUTE,
            resolution.outcome.as_str(),
        ));
        if resolution.fell_back {
            attributes.push(KeyValue::new(correlate::FALLBACK_ATTRIBUTE, true));
        }
        if let Some(err) = &resolution.store_error {
            attributes.push(KeyValue::new(
                correlate::STORE_ERROR_ATTRIBUTE,
                err.0.clone(),
            ));
            tracing::warn!(
                route = %self.route,
                stage = "correlation",
                source = %message.origin,
                error = %err,
                outcome = resolution.outcome.as_str(),
                "correlation store failed; the message goes on"
            );
        }
    }

    fn route_value(&self) -> opentelemetry::StringValue {
        self.route.clone().into()
    }

    /// Whether `name` is a trace header of this route (read or written):
    /// such headers are never copied, so no stale context travels on.
    fn is_trace_header(&self, name: &str) -> bool {
        self.trace_headers
            .iter()
            .any(|field| field.eq_ignore_ascii_case(name))
    }

    async fn send(
        &self,
        sink: &SinkClient,
        parent: &Context,
        message: &Inbound,
        dress: Dress<'_>,
    ) -> Result<(), SendError> {
        let (reason, minimal): (&[(&str, String)], bool) = match dress {
            Dress::Message => (&[], false),
            Dress::DeadLetter { reason, minimal } => (reason, minimal),
        };
        match sink {
            SinkClient::Kafka {
                producer,
                topic,
                key,
            } => {
                let record_key = self.record_key(key, message)?;
                let mut headers = if minimal {
                    rdkafka::message::OwnedHeaders::new()
                } else {
                    kafka_headers_from(&message.headers, &|n| self.is_trace_header(n))
                };
                for (name, value) in reason {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    });
                }
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(topic).headers(headers);
                if let Some(payload) = &message.payload {
                    record = record.payload(payload.as_slice());
                }
                if let Some(key) = &record_key {
                    record = record.key(key);
                }
                if let Some(ts) = message.timestamp_ms {
                    record = record.timestamp(ts);
                }
                producer
                    .send_with_parent(parent, record, Duration::from_secs(30))
                    .await
                    .map(drop)
                    .map_err(|(err, _)| SendError {
                        error_type: crate::kafka::error_type(&err),
                        message: err.to_string(),
                        permanent: kafka_error_is_permanent(&err),
                    })
            }
            SinkClient::Amqp {
                publisher,
                exchange,
                routing_key,
            } => {
                let (mut headers, left_out) = if minimal {
                    (lapin::types::FieldTable::default(), Vec::new())
                } else {
                    amqp_headers_from(&message.headers, &|n| self.is_trace_header(n))
                };
                if !left_out.is_empty() && matches!(dress, Dress::Message) {
                    return Err(SendError::permanent(
                        "unrepresentable",
                        format!("AMQP cannot carry this message: {}", left_out.join("; ")),
                    ));
                }
                let mut left_out = left_out;
                if minimal {
                    left_out.push(
                        "every original header (the full dead letter could not be sent)".into(),
                    );
                }
                for (name, value) in reason {
                    headers.insert(
                        (*name).into(),
                        AMQPValue::LongString(LongString::from(value.as_str())),
                    );
                }
                if !left_out.is_empty() {
                    headers.insert(
                        DEAD_LETTER_LEFT_OUT.into(),
                        AMQPValue::LongString(LongString::from(prefix(&left_out.join("; "), 1024))),
                    );
                }
                let routing_key = self.routing_key(routing_key, message)?;
                if routing_key.len() > AMQP_SHORT_STRING_MAX {
                    return Err(SendError::permanent(
                        "unrepresentable",
                        format!(
                            "routing key of {} bytes (AMQP allows {AMQP_SHORT_STRING_MAX})",
                            routing_key.len()
                        ),
                    ));
                }
                let properties = self.amqp_properties(message, matches!(dress, Dress::Message))?;
                let open = publisher.get().await;
                // A content header over the broker's frame_max makes
                // RabbitMQ close the whole connection (every neighbour's
                // confirm with it): such a message never reaches the wire.
                let frame_max = open.frame_max();
                let header_frame = CONTENT_HEADER_OVERHEAD + encoded_table_size(&headers);
                if frame_max > 0 && header_frame > frame_max as usize {
                    return Err(SendError::permanent(
                        "message_too_large",
                        format!(
                            "its headers take {header_frame} bytes, over the broker's frame_max of {frame_max}"
                        ),
                    ));
                }
                let options = BasicPublishOptions {
                    // Unroutable messages come back as errors: never lost silently.
                    mandatory: true,
                    ..Default::default()
                };
                let published = match open
                    .publisher
                    .publish_with_headers(
                        parent,
                        exchange,
                        routing_key,
                        options,
                        properties,
                        headers,
                        message.payload.as_deref().unwrap_or_default(),
                    )
                    .await
                {
                    // A confirm that never comes (seen with lapin under
                    // load) must not hold the hop forever: after the limit
                    // the message is sent again (a duplicate at worst).
                    Ok(pending) => match tokio::time::timeout(CONFIRM_LIMIT, pending.confirmed())
                        .await
                    {
                        Ok(confirmed) => confirmed,
                        Err(_) => {
                            return Err(SendError {
                                error_type: "confirm_timeout".into(),
                                message: format!("no publisher confirm within {CONFIRM_LIMIT:?}"),
                                permanent: false,
                            });
                        }
                    },
                    Err(err) => Err(err),
                };
                if published.is_err() {
                    publisher.recover(&open).await;
                }
                published.map_err(send_error)
            }
        }
    }

    /// The Kafka record key: the source's key by default (absent stays
    /// absent), or a fixed value, or a header (missing = an error).
    /// Borrowed: each attempt reads it again, nothing is copied.
    fn record_key<'m>(
        &'m self,
        key: &'m RoutingKey,
        message: &'m Inbound,
    ) -> Result<Option<&'m [u8]>, SendError> {
        match key {
            RoutingKey::SourceKey => Ok(message.source_key(self.key_mapping)),
            RoutingKey::Fixed(fixed) => Ok(Some(fixed.as_bytes())),
            RoutingKey::Header(name) => {
                use crate::propagation::HeaderReader;
                message.headers.header_bytes(name).map(Some).ok_or_else(|| {
                    SendError::permanent(
                        "key_missing",
                        format!("header {name} is missing (it is the Kafka key)"),
                    )
                })
            }
        }
    }

    fn routing_key<'m>(
        &self,
        routing_key: &'m RoutingKey,
        message: &'m Inbound,
    ) -> Result<&'m str, SendError> {
        let missing = |what: String| SendError::permanent("routing_key_missing", what);
        match routing_key {
            RoutingKey::Fixed(key) => Ok(key),
            RoutingKey::SourceKey => match &message.origin {
                Origin::Amqp { routing_key, .. } => Ok(routing_key.as_str()),
                Origin::Kafka { .. } => message
                    .kafka_key
                    .as_deref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .ok_or_else(|| missing("the Kafka key is missing or not UTF-8".into())),
            },
            RoutingKey::Header(name) => {
                use crate::propagation::HeaderReader;
                message
                    .headers
                    .header_bytes(name)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .ok_or_else(|| missing(format!("header {name} is missing or not UTF-8")))
            }
        }
    }

    /// The outgoing AMQP properties. A `correlation_id` or `message_id`
    /// over AMQP's 255 bytes makes the message unrepresentable (`strict`),
    /// or is left out (a dead letter, which must go through).
    fn amqp_properties(
        &self,
        message: &Inbound,
        strict: bool,
    ) -> Result<BasicProperties, SendError> {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        // AMQP → AMQP keeps the properties; Kafka → AMQP maps the key.
        let (mut correlation_id, mut message_id) = (message.correlation_id(), message.message_id());
        if let Some(key) = message
            .kafka_key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        {
            match self.key_mapping {
                KeyMapping::CorrelationId => correlation_id = Some(key),
                KeyMapping::MessageId => message_id = Some(key),
                KeyMapping::None => {}
            }
        }
        let short = |what: &str, value: &str| match ShortString::try_new(value) {
            Ok(short) => Ok(Some(short)),
            Err(_) if strict => Err(SendError::permanent(
                "unrepresentable",
                format!(
                    "{what} of {} bytes (AMQP allows {AMQP_SHORT_STRING_MAX})",
                    value.len()
                ),
            )),
            Err(_) => Ok(None),
        };
        if let Some(id) = correlation_id
            .map(|id| short("correlation_id", id))
            .transpose()?
            .flatten()
        {
            properties = properties.with_correlation_id(id);
        }
        if let Some(id) = message_id
            .map(|id| short("message_id", id))
            .transpose()?
            .flatten()
        {
            properties = properties.with_message_id(id);
        }
        if let Some(ms) = message.timestamp_ms.and_then(|ms| u64::try_from(ms).ok()) {
            properties = properties.with_timestamp(ms / 1000);
        }
        Ok(properties)
    }
}

/// An AMQP content header frame's bytes besides its header table: frame
/// header and end (8), class, weight, body size and flags (14), and the
/// largest properties the relay sets (delivery mode, timestamp, two short
/// strings of at most 256 bytes each).
const CONTENT_HEADER_OVERHEAD: usize = 8 + 14 + 1 + 8 + 2 * 256;

/// How long an AMQP publisher confirm may take before the send counts as
/// failed (and is retried).
const CONFIRM_LIMIT: Duration = Duration::from_secs(30);

/// Kafka errors that say the record itself can never be written.
fn kafka_error_is_permanent(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        err.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::BadMessage
        )
    )
}

/// The span attribute naming the relay route.
pub const ROUTE_ATTRIBUTE: &str = "tracebridge.route";

fn send_error(err: crate::Error) -> SendError {
    let (error_type, permanent) = match &err {
        // No queue is bound for it: the message itself is unroutable.
        crate::Error::Refused {
            refusal: refusal @ crate::error::Refusal::Returned { .. },
            ..
        } => (refusal.error_type().to_owned(), true),
        crate::Error::Refused { refusal, .. } => (refusal.error_type().to_owned(), false),
        crate::Error::Publish { .. } => ("publish_failed".to_owned(), false),
        _ => ("error".to_owned(), false),
    };
    SendError {
        error_type,
        message: error_chain(&err),
        permanent,
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
