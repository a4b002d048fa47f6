//! What tracebridge may record of values that identify people or
//! accounts: Kafka message keys, request (correlation) ids and the message
//! headers a user asks to capture.
//!
//! Each kind is recorded as is, hashed (HMAC-SHA256 under a key the
//! operator holds: equal values still group, the value cannot be read
//! back), or left out. The default leaves keys and request ids out: they
//! are often a user or account id, and telemetry is the wrong place for
//! one unless someone chose to put it there.

use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit as _, Mac as _};

/// How one kind of sensitive value is recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Treatment {
    /// The value itself.
    AsIs,
    /// `hmac-sha256:` and the first 16 bytes of HMAC-SHA256(key, value), in
    /// hex: stable for one key, so values still group across processes.
    Hashed,
    /// Not recorded.
    #[default]
    Omitted,
}

impl Treatment {
    /// Parses `as-is`, `hashed` or `omitted`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "as-is" => Some(Treatment::AsIs),
            "hashed" => Some(Treatment::Hashed),
            "omitted" => Some(Treatment::Omitted),
            _ => None,
        }
    }

    /// How configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Treatment::AsIs => "as-is",
            Treatment::Hashed => "hashed",
            Treatment::Omitted => "omitted",
        }
    }
}

/// The HMAC key of [`Treatment::Hashed`]. Its `Debug` never shows it.
#[derive(Clone)]
pub struct HashKey(Arc<[u8]>);

impl HashKey {
    /// A key from its bytes; at least 16 of them.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, PolicyError> {
        let bytes = bytes.as_ref();
        if bytes.len() < 16 {
            return Err(PolicyError::ShortKey { len: bytes.len() });
        }
        Ok(Self(Arc::from(bytes)))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `hashed` was chosen without a key.
    #[error(
        "{what} are to be hashed but no hash key is set (TRACEBRIDGE_ATTRIBUTE_HASH_KEY, or the relay's [telemetry] attribute_hash_key)"
    )]
    MissingKey {
        /// Which kind of value.
        what: &'static str,
    },
    /// The key is too short to resist guessing.
    #[error("the attribute hash key has {len} bytes; at least 16 are needed")]
    ShortKey {
        /// Its length.
        len: usize,
    },
    /// A value that is none of `as-is`, `hashed`, `omitted`.
    #[error("{variable}={value:?}: expected as-is, hashed or omitted")]
    BadTreatment {
        /// Where it was read.
        variable: &'static str,
        /// What it said.
        value: String,
    },
    /// A header name that cannot be an attribute.
    #[error("capture header {name:?} is not a header name (letters, digits, '-', '_', '.')")]
    BadHeaderName {
        /// The name.
        name: String,
    },
}

/// Environment variables the library reads ([`AttributePolicy::from_env`]).
pub mod env {
    /// `as-is`, `hashed` or `omitted` (default) for Kafka message keys.
    pub const MESSAGE_KEYS: &str = "TRACEBRIDGE_RECORD_MESSAGE_KEYS";
    /// The same for request ids (`messaging.message.conversation_id`).
    pub const REQUEST_IDS: &str = "TRACEBRIDGE_RECORD_REQUEST_IDS";
    /// The same for captured headers (default `as-is`: they are named one
    /// by one).
    pub const CAPTURED_HEADERS: &str = "TRACEBRIDGE_RECORD_CAPTURED_HEADERS";
    /// Comma-separated header names to record as span attributes.
    pub const CAPTURE_HEADERS: &str = "TRACEBRIDGE_CAPTURE_HEADERS";
    /// The HMAC key for `hashed` (at least 16 bytes).
    pub const HASH_KEY: &str = "TRACEBRIDGE_ATTRIBUTE_HASH_KEY";
}

/// The prefix of a captured header's attribute (the Java agent's name:
/// `messaging.header.<name>`, lowercase, `-` written `_`, a string array).
pub const CAPTURED_HEADER_PREFIX: &str = "messaging.header.";

/// What may be recorded of message keys, request ids and captured headers.
///
/// ```
/// use tracebridge::semconv::{AttributePolicy, HashKey, Treatment};
/// let policy = AttributePolicy::default()
///     .with_message_keys(Treatment::Hashed)
///     .with_hash_key(HashKey::new("0123456789abcdef")?)
///     .build()?;
/// let hashed = policy.message_key("user-42").expect("hashed, not omitted");
/// assert!(hashed.starts_with("hmac-sha256:") && !hashed.contains("user-42"));
/// assert_eq!(policy.request_id("req-1"), None, "request ids are left out by default");
/// # Ok::<(), tracebridge::semconv::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributePolicy {
    message_keys: Treatment,
    request_ids: Treatment,
    captured_headers: Treatment,
    /// Lowercased names, each with its attribute key.
    capture: Arc<[(String, String)]>,
    hash_key: Option<HashKey>,
}

impl PartialEq for HashKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for HashKey {}

impl Default for AttributePolicy {
    /// Keys and request ids left out; no header captured.
    fn default() -> Self {
        Self {
            message_keys: Treatment::Omitted,
            request_ids: Treatment::Omitted,
            captured_headers: Treatment::AsIs,
            capture: Arc::from(Vec::new()),
            hash_key: None,
        }
    }
}

impl AttributePolicy {
    /// Records everything as is (tracebridge before the policy existed).
    pub fn record_all() -> Self {
        Self {
            message_keys: Treatment::AsIs,
            request_ids: Treatment::AsIs,
            ..Self::default()
        }
    }

    /// How Kafka message keys are recorded.
    pub fn with_message_keys(mut self, treatment: Treatment) -> Self {
        self.message_keys = treatment;
        self
    }

    /// How request ids are recorded.
    pub fn with_request_ids(mut self, treatment: Treatment) -> Self {
        self.request_ids = treatment;
        self
    }

    /// How captured headers are recorded.
    pub fn with_captured_headers(mut self, treatment: Treatment) -> Self {
        self.captured_headers = treatment;
        self
    }

    /// Headers to record as span attributes (names, any case).
    pub fn with_capture(mut self, names: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.capture = names
            .into_iter()
            .map(|n| {
                let name = n.as_ref().trim().to_ascii_lowercase();
                let key = format!("{CAPTURED_HEADER_PREFIX}{}", name.replace('-', "_"));
                (name, key)
            })
            .collect();
        self
    }

    /// The key for [`Treatment::Hashed`].
    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Checks the policy: `hashed` needs a key; captured names must be
    /// header names.
    pub fn build(self) -> Result<Self, PolicyError> {
        for (treatment, what) in [
            (self.message_keys, "message keys"),
            (self.request_ids, "request ids"),
            (self.captured_headers, "captured headers"),
        ] {
            if treatment == Treatment::Hashed && self.hash_key.is_none() {
                return Err(PolicyError::MissingKey { what });
            }
        }
        if let Some((name, _)) = self.capture.iter().find(|(name, _)| {
            name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }) {
            return Err(PolicyError::BadHeaderName { name: name.clone() });
        }
        Ok(self)
    }

    /// From the [`env`](mod@env) variables (unset ones keep the defaults).
    pub fn from_env() -> Result<Self, PolicyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`AttributePolicy::from_env`] over any lookup (tests, config).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        let treatment = |variable: &'static str| -> Result<Option<Treatment>, PolicyError> {
            match lookup(variable).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(value) => Treatment::parse(&value)
                    .map(Some)
                    .ok_or(PolicyError::BadTreatment { variable, value }),
            }
        };
        if let Some(t) = treatment(env::MESSAGE_KEYS)? {
            policy.message_keys = t;
        }
        if let Some(t) = treatment(env::REQUEST_IDS)? {
            policy.request_ids = t;
        }
        if let Some(t) = treatment(env::CAPTURED_HEADERS)? {
            policy.captured_headers = t;
        }
        if let Some(names) = lookup(env::CAPTURE_HEADERS) {
            policy = policy.with_capture(names.split(',').filter(|n| !n.trim().is_empty()));
        }
        if let Some(key) = lookup(env::HASH_KEY).filter(|k| !k.is_empty()) {
            policy.hash_key = Some(HashKey::new(key)?);
        }
        policy.build()
    }

    /// The hash key as text, for redaction from error messages.
    #[cfg_attr(not(all(feature = "kafka", feature = "amqp")), allow(dead_code))]
    #[cfg(feature = "relay")]
    pub(crate) fn hash_key_text(&self) -> Option<String> {
        self.hash_key
            .as_ref()
            .map(|key| String::from_utf8_lossy(&key.0).into_owned())
    }

    /// How keys are treated.
    pub fn message_keys(&self) -> Treatment {
        self.message_keys
    }

    /// How request ids are treated.
    pub fn request_ids(&self) -> Treatment {
        self.request_ids
    }

    /// A Kafka message key as it may be recorded (None: leave it out).
    pub fn message_key(&self, key: &str) -> Option<String> {
        self.treat(self.message_keys, key)
    }

    /// A request id as it may be recorded (None: leave it out).
    pub fn request_id(&self, id: &str) -> Option<String> {
        self.treat(self.request_ids, id)
    }

    /// The captured headers, as `(lowercase name, attribute key)`.
    pub fn captured(&self) -> &[(String, String)] {
        &self.capture
    }

    /// A captured header's value as it may be recorded.
    pub fn captured_header(&self, value: &str) -> Option<String> {
        self.treat(self.captured_headers, value)
    }

    fn treat(&self, treatment: Treatment, value: &str) -> Option<String> {
        match treatment {
            Treatment::AsIs => Some(value.to_owned()),
            Treatment::Omitted => None,
            // `build` guarantees a key; without one, leave it out rather
            // than reveal it.
            Treatment::Hashed => self.hash_key.as_ref().map(|key| hashed(key, value)),
        }
    }
}

/// `hmac-sha256:` + hex of the first 16 bytes of the MAC.
fn hashed(key: &HashKey, value: &str) -> String {
    use std::fmt::Write as _;
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&key.0) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; unreachable, and never the value.
        Err(_) => return "hmac-sha256:invalid-key".to_owned(),
    };
    // Domain separation: the relay's `derive` correlation hashes request
    // ids too, and its digest is a trace id.
    mac.update(b"tracebridge attribute\0");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(12 + 32);
    text.push_str("hmac-sha256:");
    for byte in &digest[..16] {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashKey {
        HashKey::new("0123456789abcdef").expect("16 bytes")
    }

    #[test]
    fn each_treatment_records_what_it_says() {
        let policy = AttributePolicy::default()
            .with_message_keys(Treatment::AsIs)
            .with_request_ids(Treatment::Hashed)
            .with_hash_key(key())
            .build()
            .expect("valid");
        assert_eq!(policy.message_key("user-42").as_deref(), Some("user-42"));
        let hashed = policy.request_id("req-9").expect("hashed");
        assert_eq!(hashed.len(), "hmac-sha256:".len() + 32);
        assert!(!hashed.contains("req-9"));
        // Stable for one key (two relays group alike), different under another.
        let again = AttributePolicy::default()
            .with_request_ids(Treatment::Hashed)
            .with_hash_key(key())
            .build()
            .expect("valid");
        assert_eq!(again.request_id("req-9"), Some(hashed.clone()));
        let other = AttributePolicy::default()
            .with_request_ids(Treatment::Hashed)
            .with_hash_key(HashKey::new("fedcba9876543210").expect("16"))
            .build()
            .expect("valid");
        assert_ne!(other.request_id("req-9"), Some(hashed));
        assert_eq!(AttributePolicy::default().message_key("user-42"), None);
    }

    #[test]
    fn bad_policies_are_refused_with_what_to_fix() {
        let err = AttributePolicy::default()
            .with_message_keys(Treatment::Hashed)
            .build()
            .expect_err("no key");
        assert!(
            err.to_string().contains("TRACEBRIDGE_ATTRIBUTE_HASH_KEY"),
            "{err}"
        );
        assert_eq!(
            HashKey::new("short").expect_err("5 bytes"),
            PolicyError::ShortKey { len: 5 }
        );
        let err =
            AttributePolicy::from_lookup(|n| (n == env::MESSAGE_KEYS).then(|| "hash".to_owned()))
                .expect_err("typo");
        assert!(
            err.to_string()
                .contains("TRACEBRIDGE_RECORD_MESSAGE_KEYS=\"hash\""),
            "{err}"
        );
        let err = AttributePolicy::default()
            .with_capture(["x tenant"])
            .build()
            .expect_err("space");
        assert!(matches!(err, PolicyError::BadHeaderName { .. }));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let secret = "s3cr3t-s3cr3t-s3cr3t";
        let policy = AttributePolicy::default().with_hash_key(HashKey::new(secret).expect("long"));
        assert!(!format!("{policy:?}").contains(secret));
    }

    #[test]
    fn captured_headers_use_the_java_agents_names() {
        let policy = AttributePolicy::from_lookup(|n| {
            (n == env::CAPTURE_HEADERS).then(|| "X-Tenant, tenant_region".to_owned())
        })
        .expect("valid");
        assert_eq!(
            policy.captured(),
            &[
                (
                    "x-tenant".to_owned(),
                    "messaging.header.x_tenant".to_owned()
                ),
                (
                    "tenant_region".to_owned(),
                    "messaging.header.tenant_region".to_owned()
                ),
            ]
        );
    }
}
