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
/// [`KafkaHeaderInjector::finish`] gives the final [`OwnedHeaders`]: the
/// original headers minus every replaced name (any case), in their original
/// order, followed by the new trace headers.
///
/// The common record — none of its headers is a context field — takes the
/// fields straight into its header list (librdkafka copies the bytes), with
/// nothing allocated or rebuilt per message; anything else is collected and
/// the list rebuilt once, in `finish`.
#[derive(Default)]
pub struct KafkaHeaderInjector {
    /// The record's headers, then the fields appended straight to them.
    headers: Option<OwnedHeaders>,
    /// Whether any original header is named like some format's field: found
    /// by one pass over the headers (each read crosses librdkafka's FFI),
    /// the first time it matters — before any field is appended.
    existing_has_fields: Option<bool>,
    /// The fields appended straight to `headers`, one bit per entry of
    /// [`FIELDS`].
    appended: u32,
    /// Names whose headers in `headers` go when `finish` rebuilds it.
    removed: Vec<String>,
    /// Headers `finish` appends: writes that could not go straight in.
    added: Vec<(Cow<'static, str>, Vec<u8>)>,
}

/// Every format's Kafka field name, once each: an index here is a field's
/// bit in [`KafkaHeaderInjector::appended`].
static FIELDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut fields: Vec<&'static str> = Vec::new();
    for field in Format::ALL.iter().flat_map(|f| f.fields(Transport::Kafka)) {
        if !fields.contains(field) {
            fields.push(field);
        }
    }
    fields
});

/// [`FIELDS`]' indexes grouped by name length: every removed field and every
/// header of every traced record is checked against them, so a name is
/// compared only with the few of its length (scanning them all was 1 200
/// instructions a message).
static FIELDS_BY_LENGTH: std::sync::LazyLock<Vec<Vec<usize>>> = std::sync::LazyLock::new(|| {
    let mut by_length: Vec<Vec<usize>> = Vec::new();
    for (index, field) in FIELDS.iter().enumerate() {
        if by_length.len() <= field.len() {
            by_length.resize_with(field.len() + 1, Vec::new);
        }
        by_length[field.len()].push(index);
    }
    by_length
});

/// The index in [`FIELDS`] of the field of `name`'s length that `matches`.
fn find_field(name: &str, matches: impl Fn(&str) -> bool) -> Option<usize> {
    let of_length = FIELDS_BY_LENGTH.get(name.len())?;
    of_length
        .iter()
        .copied()
        .find(|&index| matches(FIELDS[index]))
}

/// The index in [`FIELDS`] of the field named `name` (any case). The Kafka
/// fields are lower case, so each of `name`'s length is compared with
/// `name` folded byte by byte, stopping at the first difference: an
/// application header of a field's length (`content-type`,
/// `x-request-id`) differs within a few bytes, where a memcmp and a
/// case-folding pass per field cost 177 instructions a header.
fn field_index(name: &str) -> Option<usize> {
    find_field(name, |field| {
        field
            .bytes()
            .zip(name.bytes())
            .all(|(f, n)| f == n.to_ascii_lowercase())
    })
}

/// The index in [`FIELDS`] of the field spelled exactly `name`: what the
/// propagators write, found by one memcmp instead of the folding compare.
fn exact_field_index(name: &str) -> Option<usize> {
    find_field(name, |field| field == name)
}

/// Whether `name` is a field of some format (any case).
fn is_field(name: &str) -> bool {
    field_index(name).is_some()
}

impl KafkaHeaderInjector {
    /// Starts from a record's current headers (if any).
    pub fn new(existing: Option<OwnedHeaders>) -> Self {
        Self {
            headers: existing,
            ..Self::default()
        }
    }

    /// The record's headers after injection.
    pub fn finish(self) -> OwnedHeaders {
        let existing = self.headers.unwrap_or_default();
        if self.removed.is_empty() && self.added.is_empty() {
            return existing;
        }
        let is_replaced = |key: &str| self.removed.iter().any(|r| r.eq_ignore_ascii_case(key));
        // `removed` holds only names the list has: when it is empty the
        // list is kept and appended to, without another pass over it
        // through librdkafka's FFI.
        let mut headers = if self.removed.is_empty() {
            existing
        } else {
            let mut rebuilt = OwnedHeaders::new_with_capacity(existing.count() + self.added.len());
            for header in existing.iter().filter(|h| !is_replaced(h.key)) {
                rebuilt = rebuilt.insert(header);
            }
            rebuilt
        };
        for (key, value) in &self.added {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        headers
    }

    /// Whether any original header is named like some format's field: one
    /// pass over them (each read crosses librdkafka's FFI), the first time
    /// it is asked — always before a field is appended.
    fn existing_has_fields(&mut self) -> bool {
        let headers = &self.headers;
        *self.existing_has_fields.get_or_insert_with(|| {
            headers
                .as_ref()
                .is_some_and(|h| h.iter().any(|h| is_field(h.key)))
        })
    }

    /// Writes `key`: appended straight to the headers when it is a field
    /// that neither the record nor an earlier write has, and nothing waits
    /// for `finish`; otherwise after removing every header of that name,
    /// for `finish` to append.
    fn put(&mut self, key: &str, value: Cow<'_, [u8]>) {
        let exact = exact_field_index(key);
        if let Some(index) = exact
            && self.appended & (1 << index) == 0
            && self.added.is_empty()
            && self.removed.is_empty()
            && !self.existing_has_fields()
        {
            self.appended |= 1 << index;
            let headers = self.headers.take().unwrap_or_default();
            self.headers = Some(headers.insert(Header {
                key,
                value: Some(value.as_ref()),
            }));
            return;
        }
        self.remove(key);
        let name = exact.map_or_else(|| Cow::Owned(key.to_owned()), |i| Cow::Borrowed(FIELDS[i]));
        self.added.push((name, value.into_owned()));
    }

    /// Forgets `name` among the headers added so far; whether it had been
    /// appended straight to the headers (then `finish` must drop it).
    fn forget_written(&mut self, name: &str) -> bool {
        if !self.added.is_empty() {
            self.added.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
        if self.appended == 0 {
            return false;
        }
        let bit = field_index(name).map_or(0, |index| 1 << index);
        let appended = self.appended & bit != 0;
        self.appended &= !bit;
        appended
    }

    /// Marks `name` for removal if the headers have it.
    fn remove_existing(&mut self, name: &str) {
        let present = self
            .headers
            .as_ref()
            .is_some_and(|h| h.iter().any(|h| h.key.eq_ignore_ascii_case(name)));
        if present && !self.removed.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            self.removed.push(name.to_owned());
        }
    }
}

impl Injector for KafkaHeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.put(key, Cow::Owned(value.into_bytes()));
    }
}

impl HeaderWriter for KafkaHeaderInjector {
    fn transport(&self) -> Transport {
        Transport::Kafka
    }

    fn remove(&mut self, name: &str) {
        let appended = self.forget_written(name);
        // The common record has no field of any format: one pass over its
        // headers says so for every field.
        if appended || !is_field(name) || self.existing_has_fields() {
            self.remove_existing(name);
        }
    }

    fn remove_fields(&mut self, fields: &[&'static str]) {
        // The common record, before anything is written: no field to
        // remove, said by the one pass over its headers.
        if self.appended == 0 && self.added.is_empty() && !self.existing_has_fields() {
            return;
        }
        for name in fields {
            self.remove(name);
        }
    }

    fn set_bytes(&mut self, key: &str, value: &[u8]) {
        self.put(key, Cow::Borrowed(value));
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
        assert!(FIELDS.len() <= 32, "a field's bit must fit `appended`");
    }

    #[test]
    fn writes_appended_straight_in_still_replace() {
        let app = || headers(&[("app", Some(b"a"))]);
        // Set twice: the second value only.
        let mut injector = KafkaHeaderInjector::new(Some(app()));
        injector.set_bytes("traceparent", b"one");
        injector.set("traceparent", "two".into());
        assert_eq!(
            pairs(&injector.finish()),
            vec![
                ("app".into(), Some(b"a".to_vec())),
                ("traceparent".into(), Some(b"two".to_vec())),
            ]
        );
        // Removed after it went in (any case), then written again.
        let mut injector = KafkaHeaderInjector::new(Some(app()));
        injector.set_bytes("traceparent", b"one");
        injector.remove("TraceParent");
        injector.set_bytes("baggage", b"k=v");
        injector.set_bytes("traceparent", b"three");
        assert_eq!(
            pairs(&injector.finish()),
            vec![
                ("app".into(), Some(b"a".to_vec())),
                ("baggage".into(), Some(b"k=v".to_vec())),
                ("traceparent".into(), Some(b"three".to_vec())),
            ]
        );
        // Removed and not written again: gone.
        let mut injector = KafkaHeaderInjector::new(None);
        injector.set_bytes("tracestate", b"a=1");
        injector.remove_fields(Format::TraceContext.fields(Transport::Kafka));
        assert_eq!(pairs(&injector.finish()), vec![]);
        // A name that is not a field, beside fields, in the order written.
        let mut injector = KafkaHeaderInjector::new(Some(app()));
        injector.set("x-custom", "1".into());
        injector.set_bytes("traceparent", b"tp");
        injector.set("APP", "b".into());
        assert_eq!(
            pairs(&injector.finish()),
            vec![
                ("x-custom".into(), Some(b"1".to_vec())),
                ("traceparent".into(), Some(b"tp".to_vec())),
                ("APP".into(), Some(b"b".to_vec())),
            ]
        );
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
