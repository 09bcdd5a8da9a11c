//! The filter's plugin configuration parser: any bytes give a config or an
//! error naming a field, never a panic (on_configure runs in the VM).
#![no_main]

use edgehook_filter::config::FilterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = FilterConfig::parse(data, &|name| (name.len() % 2 == 0).then(|| "whsec_aGVsbG8=".to_string()));
});
