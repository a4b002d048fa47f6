//! [`ProbabilitySampler`]: the specification's consistent probability
//! sampler, for any `SdkTracerProvider`.

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

use super::threshold::{DEFAULT_PRECISION, InvalidRatio, Randomness, Threshold};
use super::{marks, ot_state};

/// The OpenTelemetry specification's `ProbabilitySampler`
/// (`trace/sdk.md`), which the Rust SDK does not have: keeps a trace when
/// its randomness `R` — the `rv` in `tracestate`'s `ot` entry, else the
/// trace id's last 56 bits — is at least the threshold `T` the ratio gives,
/// and writes `th:T` into the `ot` entry of what it keeps, so that every
/// consistent sampler after it (the Java, Go and C++ SDKs', the Collector's)
/// can tell the probability and keep or drop the same traces.
///
/// Unlike the SDK's `TraceIdRatioBased`, whose algorithm each language
/// chose for itself, two processes with this sampler at ratios `p1 <= p2`
/// keep nested sets of traces, whatever language the other one is in.
///
/// Parent-based by default, as the specification advises for child spans:
/// a span with a parent follows the parent's sampled flag and carries the
/// parent's threshold on (erased when it contradicts the parent's
/// randomness); only a span that starts a trace is decided by the ratio.
/// [`ProbabilitySampler::ignoring_parent`] is the specification's bare
/// sampler, deciding every span by the ratio.
///
/// ```
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use tracebridge::sampling::ProbabilitySampler;
///
/// let sampler = ProbabilitySampler::new(0.1)?;
/// assert_eq!(sampler.threshold().to_string(), "e666");
/// let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
/// # drop(provider);
/// # Ok::<(), tracebridge::sampling::InvalidRatio>(())
/// ```
///
/// A trace it starts gets an explicit `rv` (the trace id's own last 56
/// bits, so nothing changes for samplers that read the id): the SDK builds
/// a new trace's flags itself and gives a sampler no way to set the W3C
/// random flag, and without the flag or an `rv` a consistent sampler
/// downstream cannot know the id is random.
#[derive(Clone, Debug)]
pub struct ProbabilitySampler {
    threshold: Threshold,
    follow_parent: bool,
    follow_links: bool,
}

impl ProbabilitySampler {
    /// Samples `ratio` (from 2^-56 to 1) of new traces, at the
    /// specification's default precision of 4 hex digits; parent-based.
    pub fn new(ratio: f64) -> Result<ProbabilitySampler, InvalidRatio> {
        Threshold::from_ratio(ratio, DEFAULT_PRECISION).map(ProbabilitySampler::with_threshold)
    }

    /// Samples at `threshold`; parent-based.
    pub fn with_threshold(threshold: Threshold) -> ProbabilitySampler {
        ProbabilitySampler {
            threshold,
            follow_parent: true,
            follow_links: false,
        }
    }

    /// Decides every span by the ratio, whatever its parent decided: the
    /// specification's bare `ProbabilitySampler`. Consistent: a parent kept
    /// at a lower ratio is kept here too.
    pub fn ignoring_parent(mut self) -> ProbabilitySampler {
        self.follow_parent = false;
        self
    }

    /// Every span that starts a trace and links to others is kept when any
    /// linked context is sampled and dropped when none is, instead of by
    /// the ratio: a kept trace then never links to a dropped trace that
    /// caused it, nor a dropped one to a kept one. Its probability is then
    /// unknown, so it carries no `th`.
    ///
    /// Without this, the sampler does so only for the spans tracebridge's
    /// consumers ask it to (a consumer in `link` mode, a batch span, the
    /// relay's correlation `link`), as
    /// [`crate::Instrumentation::with_link_sampling`] sets.
    pub fn following_links(mut self) -> ProbabilitySampler {
        self.follow_links = true;
        self
    }

    /// The rejection threshold.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// The decision for a span of `trace_id` under `parent` (invalid when
    /// the span starts a trace; it may still carry a `tracestate`), linked
    /// to `links`, as `asked`.
    fn decide(
        &self,
        parent: &SpanContext,
        trace_id: TraceId,
        links: &[Link],
        asked: Asked,
    ) -> SamplingResult {
        let has_parent = parent.is_valid();
        let trace_state = parent.trace_state();
        if has_parent && asked.follow_parent {
            return follow(parent, trace_id);
        }
        if !has_parent && asked.follow_links && !links.is_empty() {
            let sampled = links.iter().any(|link| link.span_context.is_sampled());
            let trace_state = ot_state::set(&with_randomness(trace_state, trace_id), "th", None);
            return result(sampled, trace_state);
        }
        let randomness = randomness(trace_state, trace_id);
        let trace_state = if has_parent {
            trace_state.clone()
        } else {
            with_randomness(trace_state, trace_id)
        };
        if self.threshold.keeps(randomness) {
            let th = self.threshold.to_string();
            result(true, ot_state::set(&trace_state, "th", Some(&th)))
        } else {
            result(false, ot_state::set(&trace_state, "th", None))
        }
    }
}

impl ShouldSample for ProbabilitySampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut asked = Asked {
            follow_parent: self.follow_parent,
            follow_links: self.follow_links,
        };
        match parent_context {
            Some(cx) => {
                asked.follow_links |= marks::links_decide(cx);
                asked.follow_parent &= !marks::randomness_decides(cx);
                self.decide(cx.span().span_context(), trace_id, links, asked)
            }
            None => self.decide(&SpanContext::NONE, trace_id, links, asked),
        }
    }
}

/// How one span is decided: the sampler's settings and what the span's
/// context asks ([`marks`]).
#[derive(Clone, Copy)]
struct Asked {
    /// A span with a parent follows its sampled flag.
    follow_parent: bool,
    /// A span that starts a trace with links is decided by them.
    follow_links: bool,
}

/// A child's decision: the parent's, with the parent's threshold kept when
/// it is consistent with the sampled flag and erased when not.
fn follow(parent: &SpanContext, trace_id: TraceId) -> SamplingResult {
    let trace_state = parent.trace_state();
    if !parent.is_sampled() {
        return result(false, trace_state.clone());
    }
    let consistent = match ot_state::get(trace_state, "th") {
        None => return result(true, trace_state.clone()),
        Some(th) => Threshold::parse_th(th)
            .is_some_and(|threshold| threshold.keeps(randomness(trace_state, trace_id))),
    };
    if consistent {
        result(true, trace_state.clone())
    } else {
        result(true, ot_state::set(trace_state, "th", None))
    }
}

/// The trace's randomness: its explicit `rv`, else its id's last 56 bits.
fn randomness(trace_state: &TraceState, trace_id: TraceId) -> Randomness {
    ot_state::get(trace_state, "rv")
        .and_then(Randomness::parse_rv)
        .unwrap_or_else(|| Randomness::of_trace_id(trace_id))
}

/// A new trace's state, with an explicit `rv` unless it has a valid one
/// (which is never overwritten).
fn with_randomness(trace_state: &TraceState, trace_id: TraceId) -> TraceState {
    if ot_state::get(trace_state, "rv")
        .and_then(Randomness::parse_rv)
        .is_some()
    {
        return trace_state.clone();
    }
    let rv = Randomness::of_trace_id(trace_id).to_string();
    ot_state::set(trace_state, "rv", Some(&rv))
}

fn result(sampled: bool, trace_state: TraceState) -> SamplingResult {
    SamplingResult {
        decision: if sampled {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        },
        attributes: Vec::new(),
        trace_state,
    }
}
