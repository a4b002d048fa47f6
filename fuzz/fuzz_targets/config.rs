//! Relay config loading (environment expansion, TOML, validation): an
//! error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tracebridge::relay::RelayConfig::parse(text, "fuzz.toml", |name| {
            (name == "SET").then(|| "value".to_owned())
        });
    }
});
