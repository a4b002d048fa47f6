//! What the relay does with a request id: record the context of messages
//! that carry one, and find (or make) a trace for messages that do not.

use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

use crate::sampling::Randomness;

use super::{CorrelationStore, RequestId, RequestIdExtractor, Store, StoreError, derive_digest};

/// What to do with a message that has a request id but no context.
///
/// Not [`crate::ParentPolicy`]: that places a message relative to its *own*
/// context; this places a message that has none, relative to the context
/// recorded for its request id — or, with `derive`, in a trace computed
/// from the id, which has no counterpart there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Parent it under the context last recorded for its id.
    #[default]
    Join,
    /// Start a new trace linked to that context.
    Link,
    /// Put it in the trace whose id is the keyed hash of its request id
    /// (stateless: no store needed, same trace on every relay instance).
    Derive,
}

/// What `join` and `link` do when the store has nothing for the id (or
/// cannot be reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The derived trace (as the `derive` policy).
    Derive,
    /// A new trace of its own.
    Root,
}

/// Where the relay's span for one message goes, with the context that
/// decides it; recorded on the span as [`OUTCOME_ATTRIBUTE`] and counted in
/// the route's metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The message carried its own context; it was recorded for its id
    /// (the span follows the route's own propagation mode).
    Recorded,
    /// A child of the context found for its id.
    Joined(SpanContext),
    /// A new trace, linked to the context found for its id.
    Linked(SpanContext),
    /// A child of the synthetic parent derived from its id.
    Derived(SpanContext),
    /// A new trace (nothing found and the fallback is `root`).
    Root,
}

impl Outcome {
    /// The attribute value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Joined(_) => "joined",
            Outcome::Linked(_) => "linked",
            Outcome::Derived(_) => "derived",
            Outcome::Root => "root",
        }
    }

    /// The parent of the relay's span (`Joined`, `Derived`).
    pub fn parent(&self) -> Option<&SpanContext> {
        match self {
            Outcome::Joined(parent) | Outcome::Derived(parent) => Some(parent),
            _ => None,
        }
    }

    /// The context the relay's span links to (`Linked`).
    pub fn link(&self) -> Option<&SpanContext> {
        match self {
            Outcome::Linked(context) => Some(context),
            _ => None,
        }
    }
}

/// The span attribute saying what correlation did (an [`Outcome`]).
pub const OUTCOME_ATTRIBUTE: &str = "tracebridge.correlation.outcome";
/// `true` on spans whose policy fell back because the store had nothing.
pub const FALLBACK_ATTRIBUTE: &str = "tracebridge.correlation.fallback";
/// The store's error, on spans whose lookup or record failed.
pub const STORE_ERROR_ATTRIBUTE: &str = "tracebridge.correlation.store_error";

/// How one message was correlated.
#[derive(Debug)]
pub struct Resolution {
    /// What happened, with the context it put the span under or beside.
    pub outcome: Outcome,
    /// The store had nothing for the id and the fallback was taken.
    pub fell_back: bool,
    /// The store failed; the message went on with the fallback.
    pub store_error: Option<StoreError>,
    /// The journey's randomness, derived from the request id, for a span
    /// that starts a trace or hangs under the derived parent: every such
    /// span of one id is sampled alike ([`Correlator::with_journey_sampling`]).
    pub journey: Option<Randomness>,
}

impl Resolution {
    fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            fell_back: false,
            store_error: None,
            journey: None,
        }
    }

    /// The parent of the relay's span (`Joined`, `Derived`).
    pub fn parent(&self) -> Option<&SpanContext> {
        self.outcome.parent()
    }

    /// The context the relay's span links to (`Linked`).
    pub fn link(&self) -> Option<&SpanContext> {
        self.outcome.link()
    }
}

/// A route's correlation: where ids come from, the policy, and the store.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
/// use tracebridge::correlate::{
///     Correlator, Fallback, MemoryStore, Outcome, Policy, RequestId, RequestIdExtractor, Store,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = Arc::new(Store::Memory(MemoryStore::new(10_000, Duration::from_secs(3600))));
/// let correlator =
///     Correlator::new(RequestIdExtractor::default(), Policy::Join, Fallback::Root, None, store)
///         .expect("no derive, no key needed");
/// let id = RequestId::new(b"R-42").expect("usable");
///
/// // An instrumented message carries a context: it is recorded for R-42 …
/// let order = SpanContext::new(
///     TraceId::from(7u128), SpanId::from(9u64), TraceFlags::SAMPLED, true, TraceState::default(),
/// );
/// assert_eq!(correlator.resolve(&id, Some(&order)).await.outcome, Outcome::Recorded);
///
/// // … so a later message with only R-42 joins that trace.
/// let legacy = correlator.resolve(&id, None).await;
/// assert!(matches!(legacy.outcome, Outcome::Joined(_)));
/// assert_eq!(legacy.parent().expect("parent").trace_id(), order.trace_id());
/// # }
/// ```
pub struct Correlator {
    /// Where the request id is looked for.
    pub extractor: RequestIdExtractor,
    policy: Policy,
    fallback: Fallback,
    key: Option<Arc<[u8]>>,
    store: Arc<Store>,
    journey_sampling: bool,
}

/// A policy that needs a key was configured without one.
#[derive(Debug, thiserror::Error)]
#[error("the derive policy and fallback need a key")]
pub struct MissingKey;

impl Correlator {
    /// A correlator; `key` is required when `policy` or `fallback` is
    /// `derive`.
    pub fn new(
        extractor: RequestIdExtractor,
        policy: Policy,
        fallback: Fallback,
        key: Option<Arc<[u8]>>,
        store: Arc<Store>,
    ) -> Result<Self, MissingKey> {
        let derives = policy == Policy::Derive || fallback == Fallback::Derive;
        if derives && key.as_deref().is_none_or(<[u8]>::is_empty) {
            return Err(MissingKey);
        }
        Ok(Self {
            extractor,
            policy,
            fallback,
            key,
            store,
            journey_sampling: false,
        })
    }

    /// Gives every trace the relay starts for a message without a context
    /// of its own (`link`, `root`) and the derived parent (`derive`) the
    /// same explicit randomness `rv`: the keyed hash of the request id, the
    /// derived trace id's last 56 bits. A consistent sampler then keeps or
    /// drops all of one request's traces together, at the relay and
    /// downstream. Needs the key.
    pub fn with_journey_sampling(mut self, on: bool) -> Result<Self, MissingKey> {
        if on && self.key.as_deref().is_none_or(<[u8]>::is_empty) {
            return Err(MissingKey);
        }
        self.journey_sampling = on;
        Ok(self)
    }

    /// Decides where the relay's span for a message with request id `id`
    /// goes. `carried` is the message's own valid context, if any. Never
    /// fails: a store error is reported in the resolution and the fallback
    /// taken.
    pub async fn resolve(&self, id: &RequestId, carried: Option<&SpanContext>) -> Resolution {
        if let Some(context) = carried {
            let mut resolution = Resolution::new(Outcome::Recorded);
            resolution.store_error = self.store.record(id, context).await.err();
            return resolution;
        }
        if self.policy == Policy::Derive {
            return self.with_journey(id, self.derived(id));
        }
        let (found, store_error) = match self.store.lookup(id).await {
            Ok(found) => (found, None),
            Err(err) => (None, Some(err)),
        };
        let mut resolution = match (found, self.policy) {
            (Some(context), Policy::Join) => Resolution::new(Outcome::Joined(context)),
            (Some(context), _) => Resolution::new(Outcome::Linked(context)),
            (None, _) => {
                let mut fallback = match self.fallback {
                    Fallback::Derive => self.derived(id),
                    Fallback::Root => Resolution::new(Outcome::Root),
                };
                fallback.fell_back = true;
                fallback
            }
        };
        resolution.store_error = store_error;
        self.with_journey(id, resolution)
    }

    fn derived(&self, id: &RequestId) -> Resolution {
        let key = self.key.as_deref().unwrap_or_default();
        Resolution::new(Outcome::Derived(derived_parent(key, id)))
    }

    /// `resolution` with the journey's randomness, when asked for and the
    /// span does not simply follow a recorded context (`Joined`).
    fn with_journey(&self, id: &RequestId, mut resolution: Resolution) -> Resolution {
        let starts_or_derives =
            !matches!(resolution.outcome, Outcome::Joined(_) | Outcome::Recorded);
        if self.journey_sampling && starts_or_derives {
            let key = self.key.as_deref().unwrap_or_default();
            resolution.journey = Some(Randomness::of_trace_id(super::derive_trace_id(key, id)));
        }
        resolution
    }
}

/// The `derive` policy's parent: trace id = [`super::derive_trace_id`],
/// span id from the next 8 bytes of the same hash. The parent span itself
/// never exists: every relay span for that id hangs under it, so viewers
/// show them as one trace whose root is missing.
pub fn derived_parent(key: &[u8], id: &RequestId) -> SpanContext {
    let digest = derive_digest(key, id);
    let mut span = [0u8; 8];
    span.copy_from_slice(&digest[16..24]);
    if span == [0; 8] {
        span[7] = 1;
    }
    SpanContext::new(
        super::trace_id_of(&digest),
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}
