//! Kafka headers → AMQP table → Kafka headers through the relay's
//! translation: never a panic, no name AMQP cannot carry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|pairs: Vec<(String, Option<Vec<u8>>)>| {
    tracebridge::relay::fuzzing::kafka_round_trip(&pairs);
});
