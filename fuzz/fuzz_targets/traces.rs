//! `tracebridge traces` on any file: read, drawn tree by tree and as
//! journeys, never a panic, a hang or a stack overflow (cycles of parents,
//! repeated ids, deep chains, bytes that are not text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::traces::{Options, Traces};

fuzz_target!(|data: &[u8]| {
    for journeys in [false, true] {
        let options = Options {
            journeys,
            ..Options::default()
        };
        if let Ok(traces) = Traces::read(data, &options) {
            let _ = traces.render(&options, journeys);
        }
    }
});
