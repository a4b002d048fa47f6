//! Correlation by business request id, for messages whose producers cannot
//! be instrumented but do carry an id (groundwork for the relay's
//! `correlation = { ... }`; transport-agnostic, no broker client here).
//!
//! * [`RequestIdSource`]: where an id comes from — a header, an AMQP
//!   property, the Kafka key, or an RFC 6901 JSON pointer into the body.
//! * [`RequestIdExtractor`]: tries the sources in order; the first usable
//!   value wins. Bodies that are not JSON, missing fields, empty or over-long
//!   (> 256 bytes) values mean "no id", never an error.
//! * [`CorrelationStore`] / [`MemoryStore`]: request id → the context last
//!   seen carrying it (bounded, with a time to live), for `join` and `link`.
//! * [`derive_trace_id`]: the `derive` policy — a trace id that is a keyed
//!   hash (HMAC-SHA256, truncated to 16 bytes) of the request id, so any
//!   number of relay instances put the same id in the same trace without a
//!   shared store. W3C caveat: such trace ids are not random (the
//!   `random` trace-flag must not be set for them), and anyone holding the
//!   key can compute them.
//!
//! ```
//! use tracebridge::correlate::{MessageFields, RequestIdExtractor};
//!
//! struct Legacy<'a>(&'a [u8]);
//! impl MessageFields for Legacy<'_> {
//!     fn body(&self) -> Option<&[u8]> { Some(self.0) }
//! }
//! let extractor: RequestIdExtractor = "header:x-request-id, json:/meta/requestId".parse().unwrap();
//! let id = extractor.extract(&Legacy(br#"{"meta":{"requestId":"R-42"}}"#)).unwrap();
//! assert_eq!(id.as_str(), "R-42");
//! ```

mod resolve;
mod store;

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use opentelemetry::trace::TraceId;
use serde::de::{self, Deserialize, Deserializer};
use sha2::Sha256;

pub use resolve::{
    Correlator, FALLBACK_ATTRIBUTE, Fallback, MissingKey, OUTCOME_ATTRIBUTE, Outcome, Policy,
    Resolution, STORE_ERROR_ATTRIBUTE, derived_parent,
};
pub use store::{CorrelationStore, MemoryStore, RedisStore, Store, StoreError};

/// The longest request id accepted, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// A usable request id: UTF-8, not empty, at most [`MAX_REQUEST_ID_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Validates `bytes` as a request id.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        (!text.is_empty() && text.len() <= MAX_REQUEST_ID_LEN).then(|| Self(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a message offers to look an id up in. Every method defaults to
/// "not available", so a carrier implements only what its broker has.
pub trait MessageFields {
    /// A header's value (name compared case-insensitively by the carrier).
    fn header(&self, _name: &str) -> Option<&[u8]> {
        None
    }
    /// The AMQP `correlation_id` property.
    fn correlation_id(&self) -> Option<&str> {
        None
    }
    /// The AMQP `message_id` property.
    fn message_id(&self) -> Option<&str> {
        None
    }
    /// The Kafka record key.
    fn key(&self) -> Option<&[u8]> {
        None
    }
    /// The payload.
    fn body(&self) -> Option<&[u8]> {
        None
    }
}

/// One place a request id may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestIdSource {
    /// `header:NAME`.
    Header(String),
    /// `correlation_id` (AMQP property).
    CorrelationId,
    /// `message_id` (AMQP property).
    MessageId,
    /// `key` (Kafka key).
    Key,
    /// `json:/pointer` — RFC 6901 pointer into a JSON body.
    JsonPointer(String),
}

/// A request-id source that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a request id source (expected header:NAME, correlation_id, message_id, key, or json:/pointer)"
)]
pub struct BadSource(pub String);

impl FromStr for RequestIdSource {
    type Err = BadSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "correlation_id" => return Ok(Self::CorrelationId),
            "message_id" => return Ok(Self::MessageId),
            "key" => return Ok(Self::Key),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:").filter(|n| !n.is_empty()) {
            return Ok(Self::Header(name.to_owned()));
        }
        if let Some(pointer) = s.strip_prefix("json:")
            && (pointer.is_empty() || pointer.starts_with('/'))
        {
            return Ok(Self::JsonPointer(pointer.to_owned()));
        }
        Err(BadSource(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for RequestIdSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Tries each source in order; the first usable value wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdExtractor {
    sources: Vec<RequestIdSource>,
}

impl Default for RequestIdExtractor {
    /// `header:x-request-id`, then `correlation_id`.
    fn default() -> Self {
        Self {
            sources: vec![
                RequestIdSource::Header("x-request-id".into()),
                RequestIdSource::CorrelationId,
            ],
        }
    }
}

impl FromStr for RequestIdExtractor {
    type Err = BadSource;

    /// A comma-separated list of sources.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(
            s.split(',')
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()?,
        ))
    }
}

impl RequestIdExtractor {
    /// From sources in precedence order.
    pub fn new(sources: Vec<RequestIdSource>) -> Self {
        Self { sources }
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[RequestIdSource] {
        &self.sources
    }

    /// The first usable request id, if any. The body is parsed as JSON at
    /// most once, and only when a pointer source is reached.
    pub fn extract(&self, message: &impl MessageFields) -> Option<RequestId> {
        let mut json: Option<Option<serde_json::Value>> = None;
        for source in &self.sources {
            let found = match source {
                RequestIdSource::Header(name) => message.header(name).and_then(RequestId::new),
                RequestIdSource::CorrelationId => message
                    .correlation_id()
                    .and_then(|v| RequestId::new(v.as_bytes())),
                RequestIdSource::MessageId => message
                    .message_id()
                    .and_then(|v| RequestId::new(v.as_bytes())),
                RequestIdSource::Key => message.key().and_then(RequestId::new),
                RequestIdSource::JsonPointer(pointer) => {
                    let body = json.get_or_insert_with(|| {
                        message
                            .body()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    });
                    body.as_ref()
                        .and_then(|v| v.pointer(pointer))
                        .and_then(|v| match v {
                            serde_json::Value::String(s) => RequestId::new(s.as_bytes()),
                            serde_json::Value::Number(n) => {
                                RequestId::new(n.to_string().as_bytes())
                            }
                            _ => None,
                        })
                }
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// The `derive` policy's trace id: HMAC-SHA256 of the request id under
/// `key`, truncated to 16 bytes (never all zero, which W3C forbids).
pub fn derive_trace_id(key: &[u8], request_id: &RequestId) -> TraceId {
    trace_id_of(&derive_digest(key, request_id))
}

/// HMAC-SHA256 of the request id under `key`.
fn derive_digest(key: &[u8], request_id: &RequestId) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(request_id.as_str().as_bytes());
    mac.finalize().into_bytes().into()
}

fn trace_id_of(digest: &[u8; 32]) -> TraceId {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    if bytes == [0; 16] {
        bytes[15] = 1;
    }
    TraceId::from_bytes(bytes)
}

#[cfg(test)]
mod tests;
