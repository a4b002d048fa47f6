//! An AMQP header table as it arrives on the wire (parsed from arbitrary
//! bytes, as lapin parses a foreign client's) → Kafka headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, table)) = lapin::types::parsing::parse_field_table(data) {
        tracebridge::relay::fuzzing::amqp_to_kafka(table);
    }
});
