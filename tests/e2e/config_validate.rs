//! `envoy --mode validate` on the bootstrap the harness runs: Envoy loads
//! the filter and runs `on_configure`, so each invalid `verify` block makes
//! validation fail with the path of the field at fault (and the variable's
//! name for a missing environment secret), never with a secret's value.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;

/// A secret that appears in the invalid configurations; it must never be
/// echoed back.
const CANARY: &str = "whsec_Y2FuYXJ5LWUyZS12YWxpZGF0ZQ==";
const MISSING_VAR: &str = "EDGEHOOK_E2E_NEVER_SET";

/// Runs `envoy --mode validate` on the harness's YAML for `verify`; returns
/// whether it passed and everything it printed.
fn validate(verify: Value) -> (bool, String) {
    let sources =
        json!([{ "name": "checked", "match": { "path": "/hooks/checked" }, "verify": verify }]);
    let opts = EnvoyOptions::new(filter_config(sources, 2000), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "envoy.yaml", &envoy_config_yaml(&opts));
    let out = Command::new(envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .arg("--use-dynamic-base-id")
        .env_remove(MISSING_VAR)
        .output()
        .expect("envoy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_valid_verify_block_passes_validation() {
    register_secret(CANARY);
    let (ok, out) = validate(json!({ "scheme": "standard-webhooks", "secrets": [CANARY] }));
    assert!(ok, "a valid config must validate:\n{out}");
    assert_no_secret("envoy --mode validate output", &out);
}

#[test]
fn each_invalid_verify_block_fails_validation_naming_the_field() {
    register_secret(CANARY);
    register_secret("hunter2-e2e-not-a-key");
    // (what, verify, texts the output must contain)
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "unknown scheme",
            json!({ "scheme": "gitlab-hmac", "secrets": [CANARY] }),
            vec!["sources[0].verify", "gitlab-hmac"],
        ),
        (
            "unknown field",
            json!({ "scheme": "stripe", "secrets": [CANARY], "tolerance": 300 }),
            vec!["sources[0].verify", "unknown field `tolerance`"],
        ),
        (
            "bad secret encoding (Standard Webhooks key not base64)",
            json!({ "scheme": "standard-webhooks", "secrets": [CANARY, "whsec_hunter2-e2e-not-a-key!"] }),
            vec!["sources[0].verify.secrets[1]"],
        ),
        (
            "bad secret encoding (SendGrid key not a P-256 key)",
            json!({ "scheme": "sendgrid", "secrets": ["hunter2-e2e-not-a-key"] }),
            vec!["sources[0].verify.secrets[0]"],
        ),
        (
            "bad secret encoding (Discord key not hex)",
            json!({ "scheme": "discord", "secrets": ["hunter2-e2e-not-a-key"] }),
            vec!["sources[0].verify.secrets[0]", "hex"],
        ),
        (
            "tolerance out of range (zero)",
            json!({ "scheme": "stripe", "secrets": [CANARY], "tolerance_s": 0 }),
            vec!["sources[0].verify.tolerance_s"],
        ),
        (
            "tolerance out of range (too large)",
            json!({ "scheme": "standard-webhooks", "secrets": [CANARY], "tolerance_s": 86_400_000 }),
            vec!["sources[0].verify.tolerance_s"],
        ),
        (
            "missing environment variable",
            json!({ "scheme": "github", "secrets": [CANARY, { "env": MISSING_VAR }] }),
            vec!["sources[0].verify.secrets[1]", MISSING_VAR],
        ),
    ];
    // Each run loads and compiles the module, about a second: run them
    // side by side.
    let results: Vec<(bool, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(_, verify, _)| scope.spawn(|| validate(verify.clone())))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for ((what, _, expected), (ok, out)) in cases.into_iter().zip(results) {
        assert!(!ok, "{what}: validation passed:\n{out}");
        assert!(
            out.contains("invalid configuration"),
            "{what}: the filter's own message is missing:\n{out}"
        );
        for text in expected {
            assert!(out.contains(text), "{what}: {text:?} not named:\n{out}");
        }
        assert_no_secret(&format!("envoy --mode validate output ({what})"), &out);
    }
}
