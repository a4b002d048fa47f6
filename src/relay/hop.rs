//! The hop: what the relay does with one message, top to bottom, whatever
//! the brokers on either side.
//!
//! extract the message's own creation context → CONSUMER `process` span
//! (child of that context in `join` mode, a new linked trace in `link`
//! mode) → [`SinkClient::send`], whose PRODUCER span's context goes into the
//! outgoing headers → retry transient failures with backoff → dead letter
//! with the reason → the [`HopOutcome`] says whether the source may be
//! acknowledged. The sinks (`kafka/sink.rs`, `amqp/sink.rs`) hold every
//! broker's wire code; this file imports neither rdkafka nor lapin.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};

use super::message::{Inbound, InboundHeaders};
use super::stats::RouteStats;
use crate::correlate::{self, Correlator, RequestId};
use crate::dead_letter;
use crate::instrument::{self, Instrumentation, ParentPolicy};
use crate::metrics::ProcessTimer;
use crate::propagation::{ExtractedContext, Propagation};
use crate::semconv::Endpoint;

pub use crate::dead_letter::headers::{
    ATTEMPTS as DEAD_LETTER_ATTEMPTS, ERROR as DEAD_LETTER_ERROR, LEFT_OUT as DEAD_LETTER_LEFT_OUT,
    ROUTE as DEAD_LETTER_ROUTE, SOURCE as DEAD_LETTER_SOURCE,
};
/// The span attribute naming the relay route.
pub const ROUTE_ATTRIBUTE: &str = "tracebridge.route";

/// Where a route's messages (or its dead letters) go: one implementation
/// per broker, and a scripted one in this module's tests.
pub(crate) trait SinkClient: Send + Sync {
    /// Sends `message`, dressed as `dress`, with a PRODUCER span under
    /// `parent` whose context travels in the outgoing headers, and waits
    /// for the broker's confirm.
    fn send<'a>(
        &'a self,
        parent: &'a Context,
        message: &'a Inbound,
        dress: Dress<'a>,
    ) -> BoxFuture<'a, Result<(), SendError>>;

    /// Checks the connection (reopening it when lost), so readiness is
    /// true while no message flows. Most sinks have nothing to check.
    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Why a send did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendError {
    /// The span's `error.type`.
    pub(crate) error_type: String,
    pub(crate) message: String,
    /// The message itself cannot be sent (too large, unrepresentable in the
    /// sink's model, unroutable): retrying cannot help, and it must never
    /// reach the wire where it could fail the connection its neighbours
    /// share. Otherwise transient (broker down, timeout): retried.
    pub(crate) permanent: bool,
}

impl SendError {
    /// A failure of this one message that no retry can fix.
    pub(crate) fn permanent(error_type: &str, message: String) -> Self {
        Self {
            error_type: error_type.to_owned(),
            message,
            permanent: true,
        }
    }

    /// A failure a later attempt may not meet (broker down, timeout).
    pub(crate) fn transient(error_type: &str, message: String) -> Self {
        Self {
            error_type: error_type.to_owned(),
            message,
            permanent: false,
        }
    }
}

/// How a send is dressed: the message itself, or a dead letter carrying
/// the reason headers (`minimal`: when even the full dead letter could not
/// be sent, it drops whatever its destination may have refused — every
/// original header, the payload past [`MINIMAL_PAYLOAD_MAX`], the original
/// timestamp — and names what it dropped).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dress<'a> {
    Message,
    DeadLetter {
        reason: &'a [(&'static str, String)],
        minimal: bool,
    },
}

impl<'a> Dress<'a> {
    /// The reason headers to add (none for the message itself).
    pub(crate) fn reason(self) -> &'a [(&'static str, String)] {
        match self {
            Dress::Message => &[],
            Dress::DeadLetter { reason, .. } => reason,
        }
    }

    /// Whether the original headers are left out.
    pub(crate) fn is_minimal(self) -> bool {
        matches!(self, Dress::DeadLetter { minimal: true, .. })
    }

    /// The payload to send: a minimal dead letter's is cut to
    /// [`MINIMAL_PAYLOAD_MAX`].
    pub(crate) fn payload(self, message: &Inbound) -> Option<&[u8]> {
        let payload = message.payload.as_deref()?;
        Some(if self.is_minimal() {
            &payload[..payload.len().min(MINIMAL_PAYLOAD_MAX)]
        } else {
            payload
        })
    }

    /// The record's timestamp: a minimal dead letter's is the time it is
    /// sent (the broker's), as a timestamp the broker refused may be why
    /// the full one failed.
    pub(crate) fn timestamp_ms(self, message: &Inbound) -> Option<i64> {
        message.timestamp_ms.filter(|_| !self.is_minimal())
    }

    /// What a minimal dead letter leaves out of `message`, for
    /// `x-tracebridge-left-out` (nothing for any other dress).
    pub(crate) fn dropped(self, message: &Inbound) -> Vec<String> {
        if !self.is_minimal() {
            return Vec::new();
        }
        let mut dropped =
            vec!["every original header (the full dead letter could not be sent)".to_owned()];
        let size = message.payload.as_ref().map_or(0, Vec::len);
        if size > MINIMAL_PAYLOAD_MAX {
            dropped.push(format!(
                "the payload past its first {MINIMAL_PAYLOAD_MAX} bytes (it had {size})"
            ));
        }
        if let Some(ts) = message.timestamp_ms {
            dropped.push(format!("the original timestamp ({ts} ms)"));
        }
        dropped
    }
}

/// The most payload a minimal dead letter carries (64 KiB): under any
/// broker's limit, and enough to recognise the message.
pub(crate) const MINIMAL_PAYLOAD_MAX: usize = 64 * 1024;

/// The end of one message's hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HopOutcome {
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
    pub(crate) route: Arc<str>,
    pub(crate) mode: ParentPolicy,
    pub(crate) propagation: Propagation,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    /// The source broker's `server.address`/`server.port`, on process spans.
    pub(crate) source_endpoint: Endpoint,
    pub(crate) sink: Arc<dyn SinkClient>,
    pub(crate) dead_letter: Option<Arc<dyn SinkClient>>,
    pub(crate) instrumentation: Instrumentation,
    /// Correlation by request id, when the route configures it.
    pub(crate) correlation: Option<Correlator>,
    /// The route's counters (correlation outcomes, queue time).
    pub(crate) stats: Arc<RouteStats>,
}

impl Hop {
    /// Relays one message. Never panics and never drops it: the outcome
    /// says whether the source may be acknowledged.
    pub(crate) async fn relay(&self, message: &Inbound) -> HopOutcome {
        let extracted = match &message.headers {
            // Read once for the several lookups (see `KafkaHeaderIndex`).
            InboundHeaders::Kafka(headers) => self
                .propagation
                .extract(&crate::kafka::KafkaHeaderIndex::new(headers)),
            amqp => self.propagation.extract(amqp),
        };
        let (cx, timer) = self.start_process_span(message, &extracted).await;
        let mut last_error: Option<SendError> = None;
        let mut attempts = 0;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(self.backoff_before(attempt)).await;
            }
            attempts = attempt;
            // Each attempt is its own PRODUCER span under the process span,
            // numbered; the one that succeeds is the one on the wire.
            let attempt_cx = annotated(&cx, || {
                vec![KeyValue::new(
                    dead_letter::SEND_ATTEMPT_ATTRIBUTE,
                    i64::from(attempt),
                )]
            });
            match self.sink.send(&attempt_cx, message, Dress::Message).await {
                Ok(()) => {
                    cx.span().end();
                    return HopOutcome::Delivered { attempts: attempt };
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
                timer.fail(&e.error_type);
                instrument::record_failure(&cx, &e.error_type, e.message.clone());
                (e.message, e.permanent)
            }
            None => (String::new(), false),
        };
        let outcome = match &self.dead_letter {
            None if permanent => HopOutcome::Poisoned { error },
            None => HopOutcome::Failed { error },
            // Boxed: the rare path's state would otherwise be part of
            // every message's future (allocated per message, 3.7 KB).
            Some(dead_letter) => {
                Box::pin(self.dead_letter(dead_letter.as_ref(), &cx, message, attempts, error))
                    .await
            }
        };
        let _attached = cx.clone().attach();
        match &outcome {
            HopOutcome::DeadLettered { error, attempts } => tracing::error!(
                route = %self.route, stage = "dead_letter", source = %message.origin, %error,
                "message dead-lettered after {attempts} attempt(s)"
            ),
            HopOutcome::Poisoned { error } if self.dead_letter.is_some() => tracing::error!(
                route = %self.route, stage = "dead_letter", source = %message.origin, %error,
                "neither the sink nor the dead letter can ever take the message: the route stops at it"
            ),
            HopOutcome::Poisoned { error } => tracing::error!(
                route = %self.route, stage = "send", source = %message.origin, %error,
                "the message can never be sent and the route has no dead_letter: the route stops at it"
            ),
            // Logged once per outage by the source loop.
            HopOutcome::Failed { .. } | HopOutcome::Delivered { .. } => {}
        }
        cx.span().end();
        outcome
    }

    /// Sends the dead letter; when the sink can never carry it, a minimal
    /// one (see [`Dress`]). When even that can never be sent, the route
    /// stops at the message ([`HopOutcome::Poisoned`]): retrying it would
    /// loop for ever.
    async fn dead_letter(
        &self,
        sink: &dyn SinkClient,
        cx: &Context,
        message: &Inbound,
        attempts: u32,
        error: String,
    ) -> HopOutcome {
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
        // The dead letter's PRODUCER span says why, under the process span.
        let cx = &annotated(cx, || {
            vec![
                KeyValue::new(dead_letter::REASON_ATTRIBUTE, dead_letter::bounded(&error)),
                KeyValue::new(dead_letter::ATTEMPTS_ATTRIBUTE, i64::from(attempts)),
            ]
        });
        let failure = match sink.send(cx, message, full).await {
            Ok(()) => return HopOutcome::DeadLettered { attempts, error },
            Err(failure) if failure.permanent => {
                let minimal = Dress::DeadLetter {
                    reason: &reason,
                    minimal: true,
                };
                match sink.send(cx, message, minimal).await {
                    Ok(()) => return HopOutcome::DeadLettered { attempts, error },
                    Err(again) => again,
                }
            }
            Err(failure) => failure,
        };
        let error = format!("{error}; dead-lettering failed too: {}", failure.message);
        if failure.permanent {
            HopOutcome::Poisoned { error }
        } else {
            HopOutcome::Failed { error }
        }
    }

    /// Exponential: backoff, 2×, 4×, … capped at 30 s.
    fn backoff_before(&self, attempt: u32) -> Duration {
        let factor = 1u32 << (attempt.saturating_sub(2)).min(16);
        (self.backoff * factor).min(Duration::from_secs(30))
    }

    /// The process span, and the timer of `messaging.process.duration`
    /// (the message is counted as consumed).
    async fn start_process_span(
        &self,
        message: &Inbound,
        extracted: &ExtractedContext,
    ) -> (Context, ProcessTimer) {
        let request_id = self
            .correlation
            .as_ref()
            .and_then(|c| c.extractor.extract(message));
        let received_at = std::time::Instant::now();
        let received = message.received(&self.source_endpoint, &self.instrumentation, &self.route);
        // Built only if the span records; correlation's own attributes
        // (and its counters and warnings) come first, whatever the sampler.
        let mut extra = Vec::new();
        let name = received.name;
        let resolution = match (&self.correlation, &request_id) {
            // Boxed, as the dead letter below: inline, the store's future
            // made every message's hop future as large as the largest.
            (Some(correlator), Some(id)) => {
                Some(Box::pin(correlator.resolve(id, extracted.span_context())).await)
            }
            _ => None,
        };
        if let Some(resolution) = &resolution {
            self.note_correlation(resolution, &mut extra, message);
        }
        let attributes = move || {
            let mut attributes = message.attributes(
                &self.source_endpoint,
                self.instrumentation.rules(),
                request_id.as_ref().map(RequestId::as_str),
            );
            attributes.push(KeyValue::new(ROUTE_ATTRIBUTE, self.route_value()));
            attributes.extend(extra);
            attributes
        };
        // A message with its own context follows the route's mode; one
        // placed by correlation goes where its resolution says.
        let cx = match resolution.filter(|r| r.outcome != correlate::Outcome::Recorded) {
            Some(placed) => self.instrumentation.start_correlated_span(
                name,
                extracted,
                placed.parent(),
                placed.link(),
                placed.journey,
                attributes(),
            ),
            None => self
                .instrumentation
                .start_process_span_lazy(name, self.mode, extracted, attributes),
        };
        // Measured once, recorded in both the OTel and the Prometheus histogram.
        if let Some(waited) = self.instrumentation.record_queue_time(
            &cx,
            received.produced_at,
            &received.process_series,
        ) {
            self.stats.queue_seconds.observe(waited.as_secs_f64());
        }
        // Timed from receipt (correlation included), with the route too.
        let timer = ProcessTimer::consumed(received.process_series, received_at);
        (cx, timer)
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
}

/// `cx` with `annotations` for the sink's PRODUCER span, when the process
/// span records: under a parent-based sampler its children do not, and a
/// context value costs an allocation per message.
fn annotated(cx: &Context, annotations: impl FnOnce() -> Vec<KeyValue>) -> Context {
    if cx.span().is_recording() {
        instrument::with_send_annotations(cx, annotations())
    } else {
        cx.clone()
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

#[cfg(test)]
mod tests;
