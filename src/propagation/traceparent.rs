//! Strict W3C `traceparent` validation, layered over the SDK's parser.
//!
//! The SDK's `TraceContextPropagator` is lenient in ways that matter on a
//! message bus: it accepts short hex ids (`00-ab-cd-01`), a trailing `-` on
//! version 00, and surrounding whitespace. This module checks the exact
//! grammar of <https://www.w3.org/TR/trace-context/#traceparent-header> first
//! and says which rule failed; the SDK then does the parsing.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};

use super::InvalidReason;

/// Length of a version-00 `traceparent`: `vv-32hex-16hex-ff`.
const VERSION_00_LEN: usize = 55;

/// The trace flags W3C Trace Context Level 2 defines: sampled and random.
const KNOWN_FLAGS: TraceFlags = TraceFlags::new(0x03);

/// Longest `traceparent` we read. The spec puts no bound on future versions;
/// this keeps a hostile header from costing more than a small copy.
pub(crate) const MAX_TRACEPARENT_LEN: usize = 512;

/// Checks `value` against the W3C grammar (see [`parse`]).
#[cfg(test)]
pub(crate) fn validate(value: &[u8]) -> Result<(), InvalidReason> {
    parse(value).map(|_| ())
}

/// Each byte's value as a lower-case hex digit, or [`NOT_HEX`].
static HEX_VALUE: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};
const NOT_HEX: u8 = 0xff;

/// `hex` (2 × N lower-case hex digits) as N bytes; `None` when a digit is
/// not lower-case hex. One table lookup a digit, and one check for all of
/// them at the end ([`NOT_HEX`] has high bits no digit has): folding the
/// digits into a `u128` after a separate validating pass was 1 400
/// instructions a header, a check per digit pair 390.
fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    let mut seen = 0u8;
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        seen |= high | low;
        *byte = (high << 4) | low;
    }
    (seen & !0x0f == 0).then_some(bytes)
}

/// Checks `value` against the W3C grammar and reads its ids and flags —
/// the two Trace Context Level 2 defines, sampled and random; the SDK's
/// parser keeps only the sampled one — without the SDK parser's splitting
/// and allocating.
///
/// Future versions (`01`–`fe`) are accepted when their first four fields are
/// well-formed and anything after them starts with `-`, as the spec asks.
/// The flags byte may be anything: bits Level 2 does not define are
/// dropped, as it asks.
pub(crate) fn parse(value: &[u8]) -> Result<(TraceId, SpanId, TraceFlags), InvalidReason> {
    if value.len() > MAX_TRACEPARENT_LEN {
        return Err(InvalidReason::TooLong {
            len: value.len(),
            max: MAX_TRACEPARENT_LEN,
        });
    }
    let parsed = parse_text(value);
    // A value that parsed as 55 bytes is hex digits and dashes: text by
    // construction, without a UTF-8 pass (120 instructions a header).
    if (parsed.is_err() || value.len() != VERSION_00_LEN) && std::str::from_utf8(value).is_err() {
        return Err(InvalidReason::NotUtf8);
    }
    parsed
}

/// [`parse`] once the length is bounded; says nothing of UTF-8.
fn parse_text(value: &[u8]) -> Result<(TraceId, SpanId, TraceFlags), InvalidReason> {
    let malformed = |why| Err(InvalidReason::Malformed(why));
    if value.len() < VERSION_00_LEN {
        return malformed("traceparent is shorter than 55 characters");
    }
    let Some([version]) = decode::<1>(&value[0..2]) else {
        return malformed("version is not two lower-case hex digits");
    };
    if version == 0xff {
        return malformed("version ff is forbidden");
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return malformed("fields are not separated by '-' at the right places");
    }
    let Some(trace_id) = decode::<16>(&value[3..35]) else {
        return malformed("trace-id is not 32 lower-case hex digits");
    };
    let Some(span_id) = decode::<8>(&value[36..52]) else {
        return malformed("parent-id is not 16 lower-case hex digits");
    };
    let Some([flags]) = decode::<1>(&value[53..55]) else {
        return malformed("trace-flags is not two lower-case hex digits");
    };
    if trace_id == [0; 16] {
        return malformed("trace-id is all zeros");
    }
    if span_id == [0; 8] {
        return malformed("parent-id is all zeros");
    }
    if version == 0 && value.len() != VERSION_00_LEN {
        return malformed("version 00 has data after trace-flags");
    }
    if value.len() > VERSION_00_LEN && value[VERSION_00_LEN] != b'-' {
        return malformed("data after trace-flags does not start with '-'");
    }
    Ok((
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags) & KNOWN_FLAGS,
    ))
}

/// The version-00 `traceparent` of `span_context`, with its sampled and
/// random flags (the SDK writes only the sampled one; see
/// [`crate::sampling::outgoing_flags`] for the random flag of a trace the
/// consistent sampler started): 55 ASCII bytes, hex by table,
/// returned on the stack — carriers copy them into the message, so a
/// `String` would only be allocated, checked as UTF-8 and freed again.
pub(crate) fn write(span_context: &SpanContext) -> [u8; VERSION_00_LEN] {
    /// Each byte's two lower-case hex digits: one lookup a byte, where
    /// two shifts, masks and lookups were 390 instructions a header.
    static HEX_PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut byte = 0;
        while byte < 256 {
            pairs[byte] = [HEX[byte >> 4], HEX[byte & 0x0f]];
            byte += 1;
        }
        pairs
    };
    fn hex<const N: usize>(bytes: [u8; N], out: &mut [u8]) {
        for (byte, pair) in bytes.into_iter().zip(out.chunks_exact_mut(2)) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
    }
    let mut buf = [b'-'; VERSION_00_LEN];
    buf[..2].copy_from_slice(b"00");
    hex(span_context.trace_id().to_bytes(), &mut buf[3..35]);
    hex(span_context.span_id().to_bytes(), &mut buf[36..52]);
    let flags = (crate::sampling::outgoing_flags(span_context) & KNOWN_FLAGS).to_u8();
    hex([flags], &mut buf[53..55]);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_w3c_examples_and_any_flags() {
        for (value, why) in [
            (VALID, "spec example, sampled"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                "not sampled",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                "Python SDK writes 03",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                "unknown flags",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "future version",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future",
                "future version with more fields",
            ),
        ] {
            assert_eq!(validate(value.as_bytes()), Ok(()), "{why}: {value}");
        }
    }

    #[test]
    fn rejects_every_rule_break_with_its_reason() {
        let long = format!("01-{}", "a".repeat(600));
        for (value, why) in [
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff is forbidden",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace-id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent-id is all zeros",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace-id is not 32 lower-case hex digits",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                "parent-id is not 16 lower-case hex digits",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                "trace-flags is not two lower-case hex digits",
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version is not two lower-case hex digits",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "version 00 has data after trace-flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "version 00 has data after trace-flags",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "data after trace-flags does not start with '-'",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                "fields are not separated by '-' at the right places",
            ),
            ("00-ab-cd-01", "traceparent is shorter than 55 characters"),
            ("", "traceparent is shorter than 55 characters"),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version is not two lower-case hex digits",
            ),
        ] {
            match validate(value.as_bytes()) {
                Err(InvalidReason::Malformed(reason)) => assert_eq!(reason, why, "{value}"),
                other => panic!("{value}: expected Malformed({why}), got {other:?}"),
            }
        }
        assert_eq!(
            validate(long.as_bytes()),
            Err(InvalidReason::TooLong {
                len: long.len(),
                max: MAX_TRACEPARENT_LEN
            })
        );
        let mut not_utf8 = VALID.as_bytes().to_vec();
        not_utf8[10] = 0xff;
        assert_eq!(validate(&not_utf8), Err(InvalidReason::NotUtf8));
    }
}
