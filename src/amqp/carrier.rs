//! Carriers for the AMQP 0-9-1 `headers` table (lapin's [`FieldTable`]).
//!
//! Foreign clients write trace headers as long strings (`S`, what Python's
//! pika instrumentation writes), short strings, or byte arrays (`x`, a pika
//! app that sets bytes): all three are read. tracebridge writes long strings.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};

use crate::propagation::{HeaderReader, HeaderWriter, Transport};

/// Reads trace headers from an AMQP `headers` table.
pub struct AmqpHeaderExtractor<'a>(pub &'a FieldTable);

impl AmqpHeaderExtractor<'_> {
    fn value_bytes(value: &AMQPValue) -> Option<&[u8]> {
        match value {
            AMQPValue::LongString(s) => Some(s.as_bytes()),
            AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
            AMQPValue::ByteArray(b) => Some(b.as_slice()),
            _ => None,
        }
    }
}

/// The value of header `name` in `table` as bytes, when it is a string or
/// byte array. A table's names are unique but may differ only in case: the
/// exact spelling wins, then the last case-insensitive match.
pub(crate) fn header_bytes<'a>(table: &'a FieldTable, name: &str) -> Option<&'a [u8]> {
    let map = table.inner();
    map.get(name)
        .or_else(|| {
            map.iter()
                .rev()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .and_then(AmqpHeaderExtractor::value_bytes)
}

impl HeaderReader for AmqpHeaderExtractor<'_> {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        header_bytes(self.0, name)
    }

    fn header_names(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

impl Extractor for AmqpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.header_bytes(key)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.header_names()
    }
}

/// Writes trace headers into an AMQP `headers` table as long strings,
/// replacing any header of the same name in any case.
pub struct AmqpHeaderInjector<'a>(pub &'a mut FieldTable);

impl AmqpHeaderInjector<'_> {
    /// Replaces every header named `key` (any case) with `value`.
    fn put(&mut self, key: &str, value: LongString) {
        self.remove(key);
        self.0
            .insert(ShortString::from(key), AMQPValue::LongString(value));
    }
}

impl Injector for AmqpHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.put(key, LongString::from(value));
    }
}

impl HeaderWriter for AmqpHeaderInjector<'_> {
    fn transport(&self) -> Transport {
        Transport::Amqp
    }

    fn set_bytes(&mut self, key: &str, value: &[u8]) {
        self.put(key, LongString::from(value.to_vec()));
    }

    fn remove(&mut self, name: &str) {
        let present = self
            .0
            .inner()
            .keys()
            .any(|k| k.as_str().eq_ignore_ascii_case(name));
        // lapin's FieldTable has no `remove`; rebuild only when needed.
        if present {
            let mut map = self.0.inner().clone();
            map.retain(|k, _| !k.as_str().eq_ignore_ascii_case(name));
            *self.0 = FieldTable::from(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::ByteArray;
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;
    use crate::propagation::Propagation;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";

    #[test]
    fn reads_long_short_and_byte_array_values() {
        for value in [
            AMQPValue::LongString(LongString::from(TP)),
            AMQPValue::ShortString(ShortString::from(TP)),
            AMQPValue::ByteArray(ByteArray::from(TP.as_bytes().to_vec())),
        ] {
            let mut table = FieldTable::default();
            table.insert("traceparent".into(), value.clone());
            let extracted = Propagation::default().extract(&AmqpHeaderExtractor(&table));
            let sc = extracted
                .span_context()
                .unwrap_or_else(|| panic!("{value:?}"));
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(sc.is_sampled(), "flags 03 means sampled");
        }
    }

    #[test]
    fn non_string_values_and_bad_bytes_are_ignored() {
        let mut table = FieldTable::default();
        table.insert("traceparent".into(), AMQPValue::LongInt(5));
        assert!(
            Propagation::default()
                .extract(&AmqpHeaderExtractor(&table))
                .span_context()
                .is_none()
        );
        table.insert(
            "traceparent".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![0xff, 0xfe])),
        );
        let extracted = Propagation::default().extract(&AmqpHeaderExtractor(&table));
        assert!(extracted.span_context().is_none());
        assert!(extracted.problem_summary().unwrap().contains("UTF-8"));
    }

    #[test]
    fn inject_replaces_case_variants_writes_long_strings_and_keeps_other_headers() {
        let mut table = FieldTable::default();
        table.insert("Traceparent".into(), AMQPValue::LongString("stale".into()));
        table.insert("x-app".into(), AMQPValue::LongInt(7));
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        Propagation::default().inject(&cx, &mut AmqpHeaderInjector(&mut table));
        let keys: Vec<_> = table
            .inner()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(keys, vec!["traceparent", "x-app"]);
        assert_eq!(
            table.inner().get("traceparent"),
            Some(&AMQPValue::LongString(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()
            ))
        );
        assert_eq!(table.inner().get("x-app"), Some(&AMQPValue::LongInt(7)));
    }
}
