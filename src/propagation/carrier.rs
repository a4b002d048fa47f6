//! The two traits every message-header carrier implements, and small helpers.
//!
//! Broker clients store header values as bytes, and foreign clients write
//! whatever they like, so reading works on bytes ([`HeaderReader`]) and the
//! UTF-8 view opentelemetry's [`Extractor`] wants is derived from it: a value
//! that is not UTF-8 is simply absent to a propagator, and the validation in
//! [`super::Propagation::extract`] can still say *why* it was ignored.

use opentelemetry::propagation::{Extractor, Injector};

/// The broker a carrier belongs to. It decides header names where formats
/// differ by transport (CloudEvents: `ce_` on Kafka, `cloudEvents_` on AMQP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Apache Kafka record headers.
    Kafka,
    /// AMQP 0-9-1 message `headers` table.
    Amqp,
}

/// Read access to message headers as raw bytes.
///
/// Implementations follow the propagation rules: names compare
/// ASCII-case-insensitively, and when a name repeats the LAST value wins
/// (Kafka headers are append-only, so a stale `traceparent` may precede the
/// current one).
pub trait HeaderReader {
    /// The value of the last header named `name` (case-insensitive), if any.
    fn header_bytes(&self, name: &str) -> Option<&[u8]>;

    /// All header names, in carrier order (duplicates included).
    fn header_names(&self) -> Vec<&str>;
}

/// Write access to message headers with replace semantics.
///
/// [`Injector::set`] must REPLACE every header of that name (any case) and
/// leave all other headers untouched.
pub trait HeaderWriter: Injector {
    /// Which transport these headers travel on.
    fn transport(&self) -> Transport;

    /// Removes every header named `name` (case-insensitive).
    fn remove(&mut self, name: &str);

    /// Removes every header named like one of `fields`, which are the
    /// header names of some [`Format`](super::Format) on this transport
    /// (`Format::fields`). A carrier that can tell in one pass that it holds
    /// none of any format's fields skips the rest.
    fn remove_fields(&mut self, fields: &[&'static str]) {
        for name in fields {
            self.remove(name);
        }
    }

    /// [`Injector::set`] for a value given as bytes (tracebridge's own
    /// ASCII `traceparent`): a carrier that copies bytes into the message
    /// takes them without the `String` `set` needs.
    fn set_bytes(&mut self, key: &str, value: &[u8]) {
        self.set(key, String::from_utf8_lossy(value).into_owned());
    }
}

/// Adapts any [`HeaderReader`] to opentelemetry's [`Extractor`]; values that
/// are not UTF-8 read as absent.
pub struct ReaderExtractor<'a, R: ?Sized>(pub &'a R);

impl<R: HeaderReader + ?Sized> Extractor for ReaderExtractor<'_, R> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .header_bytes(key)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.header_names()
    }
}

/// An [`Injector`] that writes `{prefix}{key}` into another injector.
pub(crate) struct PrefixedInjector<'a> {
    pub(crate) inner: &'a mut dyn HeaderWriter,
    pub(crate) prefix: &'static str,
}

impl Injector for PrefixedInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.inner.set(&format!("{}{key}", self.prefix), value);
    }
}

impl HeaderWriter for PrefixedInjector<'_> {
    fn transport(&self) -> Transport {
        self.inner.transport()
    }

    fn remove(&mut self, name: &str) {
        self.inner.remove(&format!("{}{name}", self.prefix));
    }

    fn set_bytes(&mut self, key: &str, value: &[u8]) {
        self.inner
            .set_bytes(&format!("{}{key}", self.prefix), value);
    }
}

/// Forwards to a [`HeaderWriter`] but drops empty values: the SDK writes an
/// empty `tracestate` when there is none, which W3C treats as absent anyway
/// and which would only cost bytes on every message.
pub(crate) struct SkipEmpty<'a>(pub(crate) &'a mut dyn Injector);

impl Injector for SkipEmpty<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.set(key, value);
        }
    }
}

/// Ordered `(name, value)` headers in memory: the carrier for tests,
/// benchmarks and anything that is not a broker message.
///
/// It follows the same rules as the broker carriers (case-insensitive
/// names, last duplicate wins, `set` replaces).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderVec {
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Which transport's header names to write.
    pub transport: Option<Transport>,
}

impl HeaderVec {
    /// An empty header list for `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            headers: Vec::new(),
            transport: Some(transport),
        }
    }

    /// Appends a header (duplicates allowed, as on Kafka).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Every header with this exact name, in order.
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

impl HeaderReader for HeaderVec {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }
}

impl Injector for HeaderVec {
    fn set(&mut self, key: &str, value: String) {
        self.remove(key);
        self.headers.push((key.to_owned(), value.into_bytes()));
    }
}

impl HeaderWriter for HeaderVec {
    fn transport(&self) -> Transport {
        self.transport.unwrap_or(Transport::Kafka)
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_duplicate_wins_and_names_ignore_case() {
        let mut h = HeaderVec::new(Transport::Kafka);
        h.push("TraceParent", "first").push("traceparent", "second");
        assert_eq!(h.header_bytes("traceparent"), Some(&b"second"[..]));
        assert_eq!(h.header_bytes("TRACEPARENT"), Some(&b"second"[..]));
    }

    #[test]
    fn non_utf8_reads_as_absent_through_extractor() {
        let mut h = HeaderVec::new(Transport::Kafka);
        h.push("traceparent", vec![0xff, 0xfe, 0x00]);
        assert_eq!(ReaderExtractor(&h).get("traceparent"), None);
    }

    #[test]
    fn set_replaces_every_case_variant_and_keeps_others_in_order() {
        let mut h = HeaderVec::new(Transport::Kafka);
        h.push("a", "1")
            .push("Traceparent", "old1")
            .push("b", "2")
            .push("traceparent", "old2");
        h.set("traceparent", "new".into());
        assert_eq!(
            h.headers,
            vec![
                ("a".into(), b"1".to_vec()),
                ("b".into(), b"2".to_vec()),
                ("traceparent".into(), b"new".to_vec()),
            ]
        );
    }
}
