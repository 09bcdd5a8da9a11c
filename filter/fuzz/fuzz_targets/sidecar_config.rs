//! The sidecar's TOML configuration: any text is a config or an error.
#![no_main]

use edgehook_sidecar::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text);
    }
});
