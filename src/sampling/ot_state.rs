//! The OpenTelemetry entry of `tracestate`, `ot=k1:v1;k2:v2`
//! (`trace/tracestate-handling.md`): reading one sub-key and setting or
//! erasing one while every other sub-key stays as it was.

use opentelemetry::trace::TraceState;

/// The `tracestate` key OpenTelemetry's own concerns share.
const OT_KEY: &str = "ot";
/// The whole `ot` value may not exceed this many characters.
const OT_VALUE_MAX: usize = 256;

/// The value of `key` in the `ot` entry of `trace_state`.
pub(crate) fn get<'a>(trace_state: &'a TraceState, key: &str) -> Option<&'a str> {
    trace_state
        .get(OT_KEY)?
        .split(';')
        .find_map(|member| member.strip_prefix(key)?.strip_prefix(':'))
}

/// `trace_state` with `key` set to `value` in its `ot` entry, or erased
/// when `value` is `None`; the other sub-keys keep their order. When the
/// result would be invalid (over 256 characters, or a character `ot`
/// forbids), `trace_state` is returned unchanged, as the specification
/// advises.
pub(crate) fn set(trace_state: &TraceState, key: &str, value: Option<&str>) -> TraceState {
    let current = trace_state.get(OT_KEY).unwrap_or("");
    let mut members: Vec<String> = current
        .split(';')
        .filter(|member| !member.is_empty())
        .filter(|member| {
            member
                .strip_prefix(key)
                .is_none_or(|rest| !rest.starts_with(':'))
        })
        .map(str::to_owned)
        .collect();
    if let Some(value) = value {
        members.push(format!("{key}:{value}"));
    }
    let updated = members.join(";");
    if updated == current {
        return trace_state.clone();
    }
    if updated.is_empty() {
        return trace_state
            .delete(OT_KEY)
            .unwrap_or_else(|_| trace_state.clone());
    }
    if updated.len() > OT_VALUE_MAX {
        return trace_state.clone();
    }
    trace_state
        .insert(OT_KEY, updated)
        .unwrap_or_else(|_| trace_state.clone())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn state(header: &str) -> TraceState {
        TraceState::from_str(header).unwrap()
    }

    #[test]
    fn reads_one_sub_key_among_others() {
        let ts = state("vendor=x,ot=p:8;th:e666;rv:6e6d1a75832a2f,other=y");
        assert_eq!(get(&ts, "th"), Some("e666"));
        assert_eq!(get(&ts, "rv"), Some("6e6d1a75832a2f"));
        assert_eq!(get(&ts, "p"), Some("8"));
        assert_eq!(get(&ts, "t"), None, "a prefix of a key is not the key");
        assert_eq!(get(&state("vendor=x"), "th"), None);
    }

    /// The specification's examples: `k1:13` set into `ot=p:8;r:62` and
    /// into `ot=p:8;k1:7;r:62`.
    #[test]
    fn sets_and_erases_keeping_the_other_sub_keys() {
        let set_k1 = |header| set(&state(header), "k1", Some("13")).header();
        assert_eq!(set_k1("ot=p:8;r:62"), "ot=p:8;r:62;k1:13");
        assert_eq!(set_k1("ot=p:8;k1:7;r:62"), "ot=p:8;r:62;k1:13");
        assert_eq!(
            set(&state("a=1,ot=th:c;rv:6e6d1a75832a2f"), "th", None).header(),
            "ot=rv:6e6d1a75832a2f,a=1",
        );
        assert_eq!(set(&state("a=1,ot=th:c"), "th", None).header(), "a=1");
        assert_eq!(set(&state("a=1"), "th", Some("8")).header(), "ot=th:8,a=1");
        // Unchanged: same value, or a result over 256 characters.
        assert_eq!(
            set(&state("a=1,ot=th:8"), "th", Some("8")).header(),
            "a=1,ot=th:8"
        );
        let long = format!("ot=x:{}", "y".repeat(250));
        assert_eq!(set(&state(&long), "th", Some("8")).header(), long);
    }
}
