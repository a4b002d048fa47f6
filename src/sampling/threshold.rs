//! The numbers of consistent probability sampling, exactly as the
//! OpenTelemetry specification states them
//! (`trace/tracestate-probability-sampling.md`, `trace/tracestate-handling.md`):
//! a 56-bit rejection threshold `T`, a 56-bit randomness `R`, and "keep when
//! `R >= T`".

use std::fmt;

use opentelemetry::trace::TraceId;

/// 2^56: the number of distinct thresholds and randomness values.
const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// The low 56 bits.
const RANDOMNESS_MASK: u64 = MAX_ADJUSTED_COUNT - 1;
/// `th` and `rv` hold at most this many hex digits (56 bits).
const DIGITS: usize = 14;
/// The specification's advised default precision, in hex digits.
pub(crate) const DEFAULT_PRECISION: u8 = 4;

/// A rejection threshold: of 2^56 equally likely randomness values, those
/// below it are dropped. `0` keeps everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

/// Why a sampling ratio cannot become a [`Threshold`].
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error(
    "sampling ratio {0} is outside what probability sampling can express: \
     give a number from 2^-56 (about 1.4e-17) to 1"
)]
pub struct InvalidRatio(pub f64);

impl Threshold {
    /// Keeps every span: `th:0`.
    pub const ALWAYS: Threshold = Threshold(0);

    /// The threshold for sampling `ratio` of traces, rounded to `precision`
    /// significant hex digits (1 to 12; the specification advises 4) by the
    /// specification's algorithm: `(1 - ratio) · 2^56`, the precision
    /// raised by one digit for each leading `f`, so that small ratios keep
    /// their significant digits.
    pub fn from_ratio(ratio: f64, precision: u8) -> Result<Threshold, InvalidRatio> {
        // `!(a <= x)` also refuses NaN.
        if !(ratio <= 1.0 && ratio >= 1.0 / MAX_ADJUSTED_COUNT as f64) {
            return Err(InvalidRatio(ratio));
        }
        if ratio == 1.0 {
            return Ok(Threshold::ALWAYS);
        }
        // frexp's exponent: ratio = m · 2^exp, m in [0.5, 1). Ratios are
        // normal numbers here (2^-56 is far above the subnormals).
        let exp = ((ratio.to_bits() >> 52) & 0x7ff) as i32 - 1022;
        let precision = (i32::from(precision.clamp(1, 12)) + (-exp) / 4).clamp(1, 12) as usize;
        // 2 - ratio lies in [1, 2): its 52 mantissa bits are 13 hex digits
        // of the rejection probability. Half a last digit rounds them.
        let rejection = 2.0 - ratio + 0.5 * 16f64.powi(-(precision as i32));
        let digits = if rejection >= 2.0 {
            0x000f_ffff_ffff_ffff
        } else {
            rejection.to_bits() & 0x000f_ffff_ffff_ffff
        };
        // Keep `precision` of the 13 digits, then widen 52 bits to 56.
        let kept = digits >> (4 * (13 - precision)) << (4 * (13 - precision));
        Ok(Threshold(kept << 4))
    }

    /// The threshold as a 56-bit number.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The share of traces kept, from 2^-56 to 1.
    pub fn ratio(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// Whether `randomness` is kept: `R >= T`.
    pub fn keeps(self, randomness: Randomness) -> bool {
        randomness.0 >= self.0
    }

    /// Reads a `th` value: 1 to 14 lower-case hex digits, extended with
    /// trailing zeros to 14.
    pub fn parse_th(th: &str) -> Option<Threshold> {
        let value = parse_hex(th, 1..=DIGITS)?;
        Some(Threshold(value << (4 * (DIGITS - th.len()))))
    }
}

/// The `th` encoding: 14 hex digits without the trailing zeros; `0` for
/// [`Threshold::ALWAYS`].
impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0");
        }
        let digits = format!("{:014x}", self.0);
        f.write_str(digits.trim_end_matches('0'))
    }
}

/// A trace's 56 random bits: the explicit `rv`, or the trace id's
/// least-significant 7 bytes (W3C Trace Context Level 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// The least-significant 56 bits of `trace_id`.
    pub fn of_trace_id(trace_id: TraceId) -> Randomness {
        let bytes = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        Randomness(u64::from_be_bytes(low) & RANDOMNESS_MASK)
    }

    /// The low 56 bits of `value`.
    pub fn from_bits(value: u64) -> Randomness {
        Randomness(value & RANDOMNESS_MASK)
    }

    /// Reads an `rv` value: exactly 14 lower-case hex digits.
    pub fn parse_rv(rv: &str) -> Option<Randomness> {
        parse_hex(rv, DIGITS..=DIGITS).map(Randomness)
    }

    /// The value as a 56-bit number.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// The `rv` encoding: exactly 14 lower-case hex digits.
impl fmt::Display for Randomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:014x}", self.0)
    }
}

/// `text` as a number when it is `len` lower-case hex digits.
fn parse_hex(text: &str, len: std::ops::RangeInclusive<usize>) -> Option<u64> {
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if !len.contains(&text.len()) || !text.as_bytes().iter().all(lower_hex) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The specification's table of 1-in-N ratios at precisions 3, 4, 5
    /// (`tracestate-probability-sampling.md`, "Converting floating-point
    /// probability to threshold value").
    #[test]
    fn thresholds_match_the_specification_table() {
        let table: [(f64, [&str; 3]); 13] = [
            (1.0, ["0", "0", "0"]),
            (0.5, ["8", "8", "8"]),
            (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
            (0.25, ["c", "c", "c"]),
            (0.2, ["ccd", "cccd", "ccccd"]),
            (0.125, ["e", "e", "e"]),
            (0.1, ["e66", "e666", "e6666"]),
            (0.0625, ["f", "f", "f"]),
            (0.01, ["fd71", "fd70a", "fd70a4"]),
            (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
            (0.0001, ["fff972", "fff9724", "fff97247"]),
            (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
            (0.000001, ["ffffef4", "ffffef39", "ffffef391"]),
        ];
        for (ratio, expected) in table {
            for (precision, th) in [3, 4, 5].into_iter().zip(expected) {
                let threshold = Threshold::from_ratio(ratio, precision).unwrap();
                assert_eq!(
                    threshold.to_string(),
                    th,
                    "ratio {ratio}, precision {precision}"
                );
                assert_eq!(Threshold::parse_th(th), Some(threshold));
            }
        }
    }

    /// The specification's worked examples of `th` and `rv`.
    #[test]
    fn encodings_match_the_specification_examples() {
        // "th:c": 75 % rejected, 25 % kept.
        let c = Threshold::parse_th("c").unwrap();
        assert_eq!(c.value(), 0xc0_0000_0000_0000);
        assert_eq!(c.ratio(), 0.25);
        // 1 % at 5 digits: 0xfd70a400000000, written `fd70a4`.
        assert_eq!(
            Threshold::parse_th("fd70a4").unwrap().value(),
            0xfd_70a4_0000_0000
        );
        assert_eq!(Threshold::ALWAYS.to_string(), "0");
        assert_eq!(Threshold::parse_th("0"), Some(Threshold::ALWAYS));
        // rv:6e6d1a75832a2f is kept from 56.9 % up, not at 25 %.
        let rv = Randomness::parse_rv("6e6d1a75832a2f").unwrap();
        assert_eq!(rv.to_string(), "6e6d1a75832a2f");
        assert!(Threshold::from_ratio(0.57, 4).unwrap().keeps(rv));
        assert!(!c.keeps(rv));
        // Randomness is the trace id's last 7 bytes.
        let trace_id = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(
            Randomness::of_trace_id(trace_id).value(),
            0xce_929d_0e0e_4736
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for th in ["", "E6", "e6g", "fffffffffffffff", " e6", "-1"] {
            assert_eq!(Threshold::parse_th(th), None, "th {th:?}");
        }
        for rv in [
            "",
            "6e6d1a75832a2",
            "6e6d1a75832a2f0",
            "6E6D1A75832A2F",
            "6e6d1a7583 a2f",
        ] {
            assert_eq!(Randomness::parse_rv(rv), None, "rv {rv:?}");
        }
        for ratio in [0.0, -0.1, 1.0000001, f64::NAN, f64::INFINITY, 1e-18] {
            assert!(Threshold::from_ratio(ratio, 4).is_err(), "ratio {ratio}");
        }
        assert!(Threshold::from_ratio(1.0 / (1u64 << 56) as f64, 4).is_ok());
    }

    proptest! {
        /// Encoding and decoding are inverse, thresholds grow as ratios
        /// shrink (so a higher ratio keeps all a lower one keeps: the
        /// definition of consistency), and the kept share is within the
        /// rounding of the asked ratio.
        #[test]
        fn thresholds_round_trip_order_and_approximate(
            a in 1e-15f64..=1.0,
            b in 1e-15f64..=1.0,
            precision in 1u8..=12,
            r in any::<u64>(),
        ) {
            let (ta, tb) = (
                Threshold::from_ratio(a, precision).unwrap(),
                Threshold::from_ratio(b, precision).unwrap(),
            );
            prop_assert_eq!(Threshold::parse_th(&ta.to_string()), Some(ta));
            prop_assert!(ta.value() < MAX_ADJUSTED_COUNT);
            if a >= b {
                prop_assert!(ta <= tb);
                let randomness = Randomness::from_bits(r);
                prop_assert!(!tb.keeps(randomness) || ta.keeps(randomness));
            }
            // Rounding to `precision` significant digits: relative error
            // of the kept share at most one part in 16^(precision - 1),
            // while the raised precision stays under the 12-digit cap.
            if a >= 1e-4 && precision <= 8 {
                let relative = (ta.ratio() - a).abs() / a;
                prop_assert!(
                    relative <= 16f64.powi(-(i32::from(precision) - 1)),
                    "{} vs {}", ta.ratio(), a
                );
            }
            let rv = Randomness::from_bits(r);
            prop_assert_eq!(Randomness::parse_rv(&rv.to_string()), Some(rv));
        }
    }
}
