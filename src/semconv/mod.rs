//! Span names, kinds and attributes for messaging operations, per the
//! OpenTelemetry messaging semantic conventions: v1.45 by default, v1.44 or
//! the pre-1.26 keys when pinned ([`SemconvVersion`], `keys.rs` holds one
//! table per version), and never a sensitive value the
//! [`AttributePolicy`] (`policy.rs`) forbids.
//!
//! | operation | Kafka | RabbitMQ | kind |
//! |---|---|---|---|
//! | send | `send {topic}` | `publish {exchange}:{routing_key}` | PRODUCER |
//! | receive | `poll {topic}` | `receive {queue}` | CLIENT |
//! | process | `process {topic}` | `process {exchange}:{routing_key}:{queue}` | CONSUMER |
//! | settle | `commit {topic}` | `ack` / `nack` / `reject` | CLIENT |
//!
//! Span names and kinds are the same under every version (the pre-1.26
//! conventions had no settle spans and named spans the other way round;
//! `messaging/dup` keeps the new names, as the spec asks). Attributes a
//! sampler may use are returned by [`MessagingAttributes::new`] so they can
//! be given when the span starts. With
//! `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup` the pre-1.26 keys are
//! emitted as well, for dashboards that still query them.
//!
//! One concern per file:
//!
//! * `operation.rs`: systems, operations, settlements and destinations, and
//!   the span names and kinds they give (`span_names.rs`: the names shared
//!   instead of formatted per message);
//! * `keys.rs`: one key table per version;
//! * `policy.rs`: which sensitive values are recorded, and how;
//! * `conventions.rs`: the keys in force ([`Conventions`]) and, with the
//!   policy, the [`AttributeRules`];
//! * `endpoint.rs`: the broker and client id ([`Endpoint`]);
//! * `attributes.rs`: a span's attribute list ([`MessagingAttributes`]) and
//!   [`error_type`].
//!
//! ```
//! use tracebridge::semconv::{AttributeRules, Destination, MessagingAttributes, Operation};
//! let dest = Destination::kafka("orders");
//! assert_eq!(Operation::Send.span_name(&dest), "send orders");
//! let rules = AttributeRules::default();
//! let attrs = MessagingAttributes::new(Operation::Send, &dest, &rules)
//!     .partition(2)
//!     .into_vec();
//! assert!(attrs.iter().any(|kv| kv.key.as_str() == "messaging.system.name"
//!     && kv.value.as_str() == "kafka"));
//! assert!(attrs.iter().any(|kv| kv.key.as_str() == "messaging.destination.partition.id"
//!     && kv.value.as_str() == "2"));
//! ```

mod attributes;
mod conventions;
mod endpoint;
mod keys;
mod operation;
mod policy;
mod span_names;

pub use attributes::{MessagingAttributes, error_type};
pub use conventions::{AttributeRules, Conventions};
pub use endpoint::Endpoint;
pub use keys::{Keys, PartitionType, SEMCONV_VERSION_ENV, SemconvVersion, UnknownSemconvVersion};
pub use operation::{Destination, Operation, SHARED_SPAN_NAMES, Settlement, System};
pub use policy::{
    AttributePolicy, CAPTURED_HEADER_PREFIX, HashKey, PolicyError, Treatment, env as policy_env,
};
