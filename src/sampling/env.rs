//! [`ProbabilitySampler`] chosen through `OTEL_TRACES_SAMPLER` / `_ARG`.

use super::sampler::ProbabilitySampler;
use super::threshold::Threshold;

/// What `OTEL_TRACES_SAMPLER` / `_ARG` ask of tracebridge.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SamplerFromEnv {
    /// A sampler the SDK reads and builds itself (`always_on`,
    /// `parentbased_traceidratio`, …, or nothing set).
    Sdk,
    /// `probability` or `parentbased_probability`: the specification's
    /// `ProbabilitySampler`, bare or parent-based, at `_ARG`.
    Probability {
        /// The sampler to install.
        sampler: ProbabilitySampler,
        /// Set when `_ARG` was not a valid ratio and the ratio 1 is used
        /// instead, as the specification asks; says what was wrong.
        warning: Option<String>,
    },
}

/// Reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` through `var`.
///
/// The specification names no variable value for its `ProbabilitySampler`
/// yet; tracebridge takes the sampler's name as the specification's
/// declarative configuration spells it, `probability`, and
/// `parentbased_probability` for `ParentBased(root=ProbabilitySampler)`.
/// `traceidratio` and `parentbased_traceidratio` stay the SDK's samplers:
/// the specification forbids changing them before 1 January 2027.
///
/// ```
/// use tracebridge::sampling::{SamplerFromEnv, sampler_from_env};
///
/// let env = |name: &str| match name {
///     "OTEL_TRACES_SAMPLER" => Some("parentbased_probability".to_owned()),
///     "OTEL_TRACES_SAMPLER_ARG" => Some("0.1".to_owned()),
///     _ => None,
/// };
/// let SamplerFromEnv::Probability { sampler, warning: None } = sampler_from_env(env) else {
///     panic!("a probability sampler");
/// };
/// assert_eq!(sampler.threshold().to_string(), "e666");
/// ```
pub fn sampler_from_env(var: impl Fn(&str) -> Option<String>) -> SamplerFromEnv {
    let follow_parent = match var("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        Some("parentbased_probability") => true,
        Some("probability") => false,
        _ => return SamplerFromEnv::Sdk,
    };
    let every_trace = || ProbabilitySampler::with_threshold(Threshold::ALWAYS);
    let asked = match var("OTEL_TRACES_SAMPLER_ARG") {
        None => Ok(every_trace()),
        Some(arg) => match arg.trim().parse::<f64>() {
            Ok(ratio) => ProbabilitySampler::new(ratio)
                .map_err(|invalid| format!("OTEL_TRACES_SAMPLER_ARG: {invalid}")),
            Err(_) => Err(format!("OTEL_TRACES_SAMPLER_ARG `{arg}` is not a number")),
        },
    };
    // The specification: an invalid `_ARG` is reported, then ignored.
    let (sampler, warning) = match asked {
        Ok(sampler) => (sampler, None),
        Err(why) => (every_trace(), Some(format!("{why}; sampling every trace"))),
    };
    SamplerFromEnv::Probability {
        sampler: if follow_parent {
            sampler
        } else {
            sampler.ignoring_parent()
        },
        warning,
    }
}
