//! Sampling that holds across queue hops: the W3C Trace Context Level 2
//! random flag carried through every hop, and the OpenTelemetry
//! specification's consistent [`ProbabilitySampler`], with its `th` and
//! `rv` in `tracestate`'s `ot` entry.
//!
//! The guide is `docs/sampling.md`. In short: give each process a
//! [`ProbabilitySampler`] at its ratio (or set
//! `OTEL_TRACES_SAMPLER=parentbased_probability` and `_ARG` for
//! [`crate::telemetry::init`] and the relay), and a trace that crosses
//! Kafka, RabbitMQ and the relay is kept or dropped whole, by every
//! language's consistent sampler and by the Collector's.

mod env;
#[cfg(feature = "relay")]
mod journey;
mod marks;
mod ot_state;
mod random_flag;
mod sampler;
mod threshold;

pub use env::{SamplerFromEnv, sampler_from_env};
#[cfg(feature = "relay")]
pub(crate) use journey::journey_parent;
pub(crate) use marks::ask_links_decide;
pub use random_flag::RANDOM_FLAG;
pub(crate) use random_flag::{carry_random_flag, outgoing_flags};
pub use sampler::ProbabilitySampler;
pub use threshold::{InvalidRatio, Randomness, Threshold};

#[cfg(test)]
mod tests;
