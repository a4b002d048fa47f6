//! Attributes a PRODUCER span takes from the context it starts under: the
//! relay's attempt number and dead-letter reason travel this way to the
//! traced producers it sends with (see [`crate::dead_letter`]).

use opentelemetry::{Context, KeyValue};

use crate::semconv::{Endpoint, MessagingAttributes};

/// The attributes, as a context value.
#[derive(Clone, Debug)]
struct SendAnnotations(Vec<KeyValue>);

/// `parent` with `attributes` for the PRODUCER span a traced producer or
/// publisher starts under it.
#[cfg(feature = "relay")]
pub(crate) fn with_send_annotations(parent: &Context, attributes: Vec<KeyValue>) -> Context {
    parent.with_value(SendAnnotations(attributes))
}

/// The attributes [`with_send_annotations`] put in `cx`.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn send_annotations(cx: &Context) -> Vec<KeyValue> {
    cx.get::<SendAnnotations>()
        .map(|a| a.0.clone())
        .unwrap_or_default()
}

/// A PRODUCER span's attributes: `attributes` with the client's endpoint,
/// then the `annotations` the caller put in its parent.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn producer_attributes(
    attributes: MessagingAttributes<'_>,
    endpoint: &Endpoint,
    annotations: Vec<KeyValue>,
) -> Vec<KeyValue> {
    let mut attributes = endpoint.apply(attributes).into_vec();
    attributes.extend(annotations);
    attributes
}
