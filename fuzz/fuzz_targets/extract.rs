//! Extraction of every supported format from arbitrary Kafka headers:
//! never a panic, whatever the names and bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders};
use tracebridge::kafka::KafkaHeaderExtractor;
use tracebridge::{Format, Propagation};

fuzz_target!(|pairs: Vec<(String, Option<Vec<u8>>)>| {
    let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key: key.as_str(),
            value: value.as_deref(),
        })
    });
    let propagation = Propagation::default().with_extract(Format::ALL);
    let extracted = propagation.extract(&KafkaHeaderExtractor(&headers));
    let _ = extracted.problem_summary();
});
