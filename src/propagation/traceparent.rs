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

/// Longest `traceparent` we read. The spec puts no bound on future versions;
/// this keeps a hostile header from costing more than a small copy.
pub(crate) const MAX_TRACEPARENT_LEN: usize = 512;

/// Checks `value` against the W3C grammar.
///
/// Future versions (`01`–`fe`) are accepted when their first four fields are
/// well-formed and anything after them starts with `-`, as the spec asks.
/// The flags byte may be anything: only the sampled bit is interpreted.
pub(crate) fn validate(value: &[u8]) -> Result<(), InvalidReason> {
    if value.len() > MAX_TRACEPARENT_LEN {
        return Err(InvalidReason::TooLong {
            len: value.len(),
            max: MAX_TRACEPARENT_LEN,
        });
    }
    if std::str::from_utf8(value).is_err() {
        return Err(InvalidReason::NotUtf8);
    }
    if value.len() < VERSION_00_LEN {
        return Err(InvalidReason::Malformed(
            "traceparent is shorter than 55 characters",
        ));
    }
    let version = &value[0..2];
    if !is_lower_hex(version) {
        return Err(InvalidReason::Malformed(
            "version is not two lower-case hex digits",
        ));
    }
    if version == b"ff" {
        return Err(InvalidReason::Malformed("version ff is forbidden"));
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return Err(InvalidReason::Malformed(
            "fields are not separated by '-' at the right places",
        ));
    }
    let trace_id = &value[3..35];
    let span_id = &value[36..52];
    let flags = &value[53..55];
    if !is_lower_hex(trace_id) {
        return Err(InvalidReason::Malformed(
            "trace-id is not 32 lower-case hex digits",
        ));
    }
    if !is_lower_hex(span_id) {
        return Err(InvalidReason::Malformed(
            "parent-id is not 16 lower-case hex digits",
        ));
    }
    if !is_lower_hex(flags) {
        return Err(InvalidReason::Malformed(
            "trace-flags is not two lower-case hex digits",
        ));
    }
    if trace_id.iter().all(|&b| b == b'0') {
        return Err(InvalidReason::Malformed("trace-id is all zeros"));
    }
    if span_id.iter().all(|&b| b == b'0') {
        return Err(InvalidReason::Malformed("parent-id is all zeros"));
    }
    if version == b"00" && value.len() != VERSION_00_LEN {
        return Err(InvalidReason::Malformed(
            "version 00 has data after trace-flags",
        ));
    }
    if value.len() > VERSION_00_LEN && value[VERSION_00_LEN] != b'-' {
        return Err(InvalidReason::Malformed(
            "data after trace-flags does not start with '-'",
        ));
    }
    Ok(())
}

/// Validates `value` (see [`validate`]) and reads its ids and flags — only
/// the sampled bit kept, as the W3C spec and the SDK do — without the
/// SDK parser's splitting and allocating.
pub(crate) fn parse(value: &[u8]) -> Result<(TraceId, SpanId, TraceFlags), InvalidReason> {
    validate(value)?;
    // Validated: every digit below is lower-case hex.
    fn number(hex: &[u8]) -> u128 {
        hex.iter().fold(0, |n, &digit| {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                _ => digit - b'a' + 10,
            };
            (n << 4) | u128::from(nibble)
        })
    }
    let trace_id = TraceId::from(number(&value[3..35]));
    // 16 hex digits and 2 hex digits: the conversions cannot fail.
    let span_id = SpanId::from(u64::try_from(number(&value[36..52])).unwrap_or_default());
    let flags = u8::try_from(number(&value[53..55])).unwrap_or_default();
    Ok((
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

/// The version-00 `traceparent` of `span_context`, with only the sampled
/// bit of its flags (as the SDK writes it): 55 bytes written into a fixed
/// buffer, hex by table.
pub(crate) fn write(span_context: &SpanContext) -> String {
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
    let flags = (span_context.trace_flags() & TraceFlags::SAMPLED).to_u8();
    hex([flags], &mut buf[53..55]);
    // Every byte is ASCII: this never takes the fallback.
    String::from_utf8(buf.to_vec()).unwrap_or_default()
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
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
