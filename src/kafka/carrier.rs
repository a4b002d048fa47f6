//! Carriers for rdkafka record headers.
//!
//! Kafka headers are an ordered, append-only list in which names may repeat
//! and values are raw bytes (or null). Reading takes the LAST header of a
//! name; writing rebuilds the list without the replaced names, keeping every
//! other header's name, value and position.

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use std::borrow::Cow;

use crate::propagation::{Format, HeaderReader, HeaderWriter, Transport};

/// Reads trace headers from any rdkafka [`Headers`] (borrowed from a
/// consumed message, or owned).
pub struct KafkaHeaderExtractor<'a, H: ?Sized>(pub &'a H);

/// The last header named `name` (any case) in `headers`.
pub(crate) fn header_bytes<'a, H: Headers + ?Sized>(
    headers: &'a H,
    name: &str,
) -> Option<&'a [u8]> {
    (0..headers.count())
        .rev()
        .filter_map(|i| headers.try_get(i))
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
}

/// Every header name in `headers`, in order.
pub(crate) fn header_names<H: Headers + ?Sized>(headers: &H) -> Vec<&str> {
    (0..headers.count())
        .filter_map(|i| headers.try_get(i))
        .map(|h| h.key)
        .collect()
}

impl<H: Headers + ?Sized> HeaderReader for KafkaHeaderExtractor<'_, H> {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        header_bytes(self.0, name)
    }

    fn header_names(&self) -> Vec<&str> {
        header_names(self.0)
    }
}

impl<H: Headers + ?Sized> Extractor for KafkaHeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.header_bytes(key)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.header_names()
    }
}

/// A record's headers read once, for the several lookups an extraction
/// makes (`traceparent`, `tracestate`, `baggage`, captured headers): each
/// read of a header crosses librdkafka's FFI and checks its name is UTF-8
/// (about 180 instructions), and a [`KafkaHeaderExtractor`] reads them
/// again for every lookup. The traced consumer reads through this.
#[derive(Debug, Clone, Default)]
pub struct KafkaHeaderIndex<'a> {
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> KafkaHeaderIndex<'a> {
    /// Reads `headers` (in order).
    pub fn new<H: Headers + ?Sized>(headers: &'a H) -> Self {
        Self {
            headers: (0..headers.count())
                .filter_map(|i| headers.try_get(i))
                .map(|h| (h.key, h.value))
                .collect(),
        }
    }
}

impl HeaderReader for KafkaHeaderIndex<'_> {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| *value)
    }

    fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(key, _)| *key).collect()
    }
}

impl Extractor for KafkaHeaderIndex<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.header_bytes(key)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.header_names()
    }
}

/// Writes trace headers into a record's headers with replace semantics.
///
/// Collects writes and removals, then [`KafkaHeaderInjector::finish`] builds
/// the final [`OwnedHeaders`]: the original headers minus every replaced name
/// (any case), in their original order, followed by the new trace headers.
/// When nothing is replaced the original list is extended in place.
#[derive(Default)]
pub struct KafkaHeaderInjector {
    existing: Option<OwnedHeaders>,
    /// Whether any existing header has the name of some format's field:
    /// found by one pass over the headers (each read crosses librdkafka's
    /// FFI), the first time a field is removed. When none has — the common
    /// record — removing a field costs nothing more.
    existing_has_fields: Option<bool>,
    removed: Vec<String>,
    added: Vec<(Cow<'static, str>, String)>,
}

/// Every format's Kafka field names, gathered once and grouped by length:
/// every removed field and every header of every traced record is checked
/// against them, so a name is compared only with the few of its length
/// (scanning them all was 1 200 instructions a message).
static FIELDS_BY_LENGTH: std::sync::LazyLock<Vec<Vec<&'static str>>> =
    std::sync::LazyLock::new(|| {
        let mut by_length: Vec<Vec<&'static str>> = Vec::new();
        for field in Format::ALL.iter().flat_map(|f| f.fields(Transport::Kafka)) {
            if by_length.len() <= field.len() {
                by_length.resize_with(field.len() + 1, Vec::new);
            }
            if !by_length[field.len()].contains(field) {
                by_length[field.len()].push(field);
            }
        }
        by_length
    });

/// The field names as long as `name`.
fn fields_of_length(name: &str) -> &'static [&'static str] {
    FIELDS_BY_LENGTH.get(name.len()).map_or(&[], Vec::as_slice)
}

/// Whether `name` is a field of some format (any case). The Kafka fields
/// are lower case, so each is compared with `name` folded byte by byte,
/// stopping at the first difference: an application header of a field's
/// length (`content-type`, `x-request-id`) differs within a few bytes,
/// where a memcmp and a case-folding pass per field cost 177 instructions
/// a header.
fn is_field(name: &str) -> bool {
    fields_of_length(name).iter().any(|field| {
        field
            .bytes()
            .zip(name.bytes())
            .all(|(f, n)| f == n.to_ascii_lowercase())
    })
}

/// The header names tracebridge writes, borrowed instead of copied per message.
fn intern(key: &str) -> Cow<'static, str> {
    fields_of_length(key)
        .iter()
        .find(|name| **name == key)
        .map_or_else(|| Cow::Owned(key.to_owned()), |name| Cow::Borrowed(*name))
}

impl KafkaHeaderInjector {
    /// Starts from a record's current headers (if any).
    pub fn new(existing: Option<OwnedHeaders>) -> Self {
        Self {
            existing,
            existing_has_fields: None,
            removed: Vec::new(),
            // `traceparent` and, at times, `tracestate` or `baggage`.
            added: Vec::with_capacity(2),
        }
    }

    /// The record's headers after injection.
    pub fn finish(self) -> OwnedHeaders {
        let existing = self.existing.unwrap_or_default();
        let is_replaced = |key: &str| self.removed.iter().any(|r| r.eq_ignore_ascii_case(key));
        // `removed` holds only names the record has: when it is empty — the
        // common record — the list is kept as is and appended to, without
        // another pass over it through librdkafka's FFI.
        let mut headers = if !self.removed.is_empty() {
            let mut rebuilt = OwnedHeaders::new_with_capacity(existing.count() + self.added.len());
            for header in existing.iter().filter(|h| !is_replaced(h.key)) {
                rebuilt = rebuilt.insert(header);
            }
            rebuilt
        } else {
            existing
        };
        for (key, value) in &self.added {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    }
}

impl KafkaHeaderInjector {
    /// Whether any existing header is named like some format's field: one
    /// pass over them (each read crosses librdkafka's FFI), the first time
    /// it is asked.
    fn existing_has_fields(&mut self) -> bool {
        let existing = &self.existing;
        *self.existing_has_fields.get_or_insert_with(|| {
            existing
                .as_ref()
                .is_some_and(|h| h.iter().any(|h| is_field(h.key)))
        })
    }

    /// Forgets `name` among the headers added so far.
    fn forget_added(&mut self, name: &str) {
        if !self.added.is_empty() {
            self.added.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
    }

    /// Marks `name` for removal if an existing header has it.
    fn remove_existing(&mut self, name: &str) {
        let present = self
            .existing
            .as_ref()
            .is_some_and(|h| h.iter().any(|h| h.key.eq_ignore_ascii_case(name)));
        if present && !self.removed.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            self.removed.push(name.to_owned());
        }
    }
}

impl Injector for KafkaHeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let name = intern(key);
        // A field name (the propagators write only those) needs no look at
        // the existing headers when none of them is a field.
        if matches!(name, Cow::Borrowed(_)) && !self.existing_has_fields() {
            self.forget_added(key);
        } else {
            self.remove(key);
        }
        self.added.push((name, value));
    }
}

impl HeaderWriter for KafkaHeaderInjector {
    fn transport(&self) -> Transport {
        Transport::Kafka
    }

    fn remove(&mut self, name: &str) {
        self.forget_added(name);
        // The common record has no field of any format: one pass over its
        // headers says so for every field.
        if is_field(name) && !self.existing_has_fields() {
            return;
        }
        self.remove_existing(name);
    }

    fn remove_fields(&mut self, fields: &[&'static str]) {
        for name in fields {
            self.forget_added(name);
        }
        if self.existing_has_fields() {
            for name in fields {
                self.remove_existing(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;
    use crate::propagation::Propagation;

    #[test]
    fn every_kafka_field_is_lower_case_and_found_in_any_case() {
        for field in Format::ALL.iter().flat_map(|f| f.fields(Transport::Kafka)) {
            assert_eq!(
                *field,
                field.to_ascii_lowercase(),
                "is_field folds names only"
            );
            assert!(is_field(field));
            assert!(
                is_field(&field.to_ascii_uppercase()),
                "{field} in upper case"
            );
        }
        for other in ["content-type", "x-request-id", "traceparenT2", "", "ce_"] {
            assert!(!is_field(other), "{other}");
        }
    }

    fn headers(pairs: &[(&str, Option<&[u8]>)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value: *value })
        })
    }

    fn pairs(h: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
        h.iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect()
    }

    fn cx() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn extractor_reads_the_last_duplicate_and_skips_null_values() {
        let h = headers(&[
            ("traceparent", Some(b"old")),
            ("TRACEPARENT", Some(b"new")),
            ("nothing", None),
        ]);
        let ex = KafkaHeaderExtractor(&h);
        assert_eq!(ex.header_bytes("traceparent"), Some(&b"new"[..]));
        assert_eq!(ex.header_bytes("nothing"), None);
        assert_eq!(
            ex.header_names(),
            vec!["traceparent", "TRACEPARENT", "nothing"]
        );
    }

    #[test]
    fn inject_leaves_exactly_one_traceparent_and_keeps_others_byte_exact() {
        let h = headers(&[
            (
                "traceparent",
                Some(b"00-11111111111111111111111111111111-1111111111111111-01"),
            ),
            ("app", Some(b"a")),
            ("Traceparent", Some(b"dup")),
            ("null", None),
            ("bin", Some(&[0, 1, 255])),
        ]);
        let mut injector = KafkaHeaderInjector::new(Some(h));
        Propagation::default().inject(&cx(), &mut injector);
        let out = pairs(&injector.finish());
        assert_eq!(
            out,
            vec![
                ("app".into(), Some(b"a".to_vec())),
                ("null".into(), None),
                ("bin".into(), Some(vec![0, 1, 255])),
                (
                    "traceparent".into(),
                    Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec())
                ),
            ]
        );
    }

    #[test]
    fn inject_without_existing_headers() {
        let mut injector = KafkaHeaderInjector::new(None);
        Propagation::default().inject(&cx(), &mut injector);
        let out = injector.finish();
        assert_eq!(out.count(), 1);
        let extracted = Propagation::default().extract(&KafkaHeaderExtractor(&out));
        assert_eq!(
            extracted.span_context().map(|s| s.span_id()),
            Some(SpanId::from_hex("00f067aa0ba902b7").unwrap())
        );
    }
}
