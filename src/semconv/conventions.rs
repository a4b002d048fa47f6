//! Which attribute keys are emitted ([`Conventions`]: the pinned version,
//! `messaging/dup`) and, with the [`AttributePolicy`], the [`AttributeRules`]
//! in force.

use std::sync::OnceLock;

use super::{AttributePolicy, Keys, SEMCONV_VERSION_ENV, SemconvVersion, UnknownSemconvVersion};

/// Which attribute keys to emit: the pinned version's
/// ([`SEMCONV_VERSION_ENV`], default v1.45), plus the pre-1.26 keys with
/// `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conventions {
    /// The version whose keys are emitted.
    pub version: SemconvVersion,
    /// Also emit the pre-1.26 keys (`messaging/dup`).
    pub duplicate_pre_1_26: bool,
}

impl Conventions {
    /// One version's keys alone.
    pub fn new(version: SemconvVersion) -> Self {
        Self {
            version,
            duplicate_pre_1_26: false,
        }
    }

    /// Whether an `OTEL_SEMCONV_STABILITY_OPT_IN` value (comma-separated)
    /// asks for the pre-1.26 keys too.
    pub fn opts_into_duplicates(opt_in: &str) -> bool {
        opt_in.split(',').any(|v| v.trim() == "messaging/dup")
    }

    /// From [`SEMCONV_VERSION_ENV`] and `OTEL_SEMCONV_STABILITY_OPT_IN`.
    pub fn try_from_env() -> Result<Self, UnknownSemconvVersion> {
        let version = match std::env::var(SEMCONV_VERSION_ENV) {
            Ok(text) if !text.trim().is_empty() => SemconvVersion::parse(&text)?,
            _ => SemconvVersion::default(),
        };
        Ok(Self {
            version,
            duplicate_pre_1_26: Self::opts_into_duplicates(
                &std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN").unwrap_or_default(),
            ),
        })
    }

    /// [`Conventions::try_from_env`], read once per process; an unknown
    /// version is reported once on stderr and the default used (the relay
    /// refuses it at start instead).
    pub fn from_env() -> Self {
        static CONVENTIONS: OnceLock<Conventions> = OnceLock::new();
        *CONVENTIONS.get_or_init(|| {
            Self::try_from_env().unwrap_or_else(|err| {
                eprintln!("tracebridge: {err} (in {SEMCONV_VERSION_ENV}); using 1.45");
                Self::default()
            })
        })
    }

    /// The chosen version's keys.
    pub fn keys(self) -> &'static Keys {
        self.version.keys()
    }

    /// The pre-1.26 key beside `current`, when asked for and different.
    pub(super) fn duplicate(
        self,
        current: Option<&'static str>,
        old: Option<&'static str>,
    ) -> Option<&'static str> {
        old.filter(|old| self.duplicate_pre_1_26 && Some(*old) != current)
    }
}

/// Everything that decides a messaging span's attribute keys and values:
/// the [`Conventions`] and the [`AttributePolicy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeRules {
    /// Which keys.
    pub conventions: Conventions,
    /// Which sensitive values, and how.
    pub policy: AttributePolicy,
}

impl AttributeRules {
    /// From the environment: [`Conventions::from_env`] and
    /// [`AttributePolicy::from_env`] (a bad policy is reported once on
    /// stderr and the default, which records no key or request id, used).
    pub fn from_env() -> Self {
        static POLICY: OnceLock<AttributePolicy> = OnceLock::new();
        let policy = POLICY.get_or_init(|| {
            AttributePolicy::from_env().unwrap_or_else(|err| {
                eprintln!("tracebridge: {err}; recording no message key, request id or header");
                AttributePolicy::default()
            })
        });
        Self {
            conventions: Conventions::from_env(),
            policy: policy.clone(),
        }
    }
}
