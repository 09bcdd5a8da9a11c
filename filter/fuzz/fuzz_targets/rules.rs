//! The rules engine: any rule either compiles or is refused, and any
//! compiled rule evaluates any body, query and headers without panicking.
#![no_main]

use edgehook_rules::{Input, Match};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The rule's JSON, a 0 byte, then the body; the query is the body's tail.
    let (rule, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(rule) = serde_json::from_slice::<serde_json::Value>(rule) else { return };
    let Ok(compiled) = Match::compile(&rule) else { return };
    let query = std::str::from_utf8(&body[body.len() / 2..]).unwrap_or("");
    let headers = |name: &str| (name.len() % 3 == 0).then_some(&body[..body.len() / 2]);
    let _ = compiled.evaluate(&Input::new(body, query, &headers));
});
