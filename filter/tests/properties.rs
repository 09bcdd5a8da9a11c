//! Property tests over every scheme, through the public API: a freshly
//! signed request verifies; changing any byte of the body, the timestamp,
//! the signature or anything else signed makes it fail; and arbitrary bytes
//! in any header the schemes read never panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edgehook_filter::config::FilterConfig;
use edgehook_filter::headers::Headers;
use edgehook_filter::verify::{
    SignatureScheme, SignedRequest, github, paddle, pagerduty, shopify, slack, square,
    standard_webhooks, stripe, twilio,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// One freshly signed request for one configured scheme.
struct Case {
    name: &'static str,
    scheme: SignatureScheme,
    headers: Vec<(String, Vec<u8>)>,
    /// Headers any byte of which is covered by the signature.
    signed_headers: Vec<&'static str>,
    /// Twilio signs decoded form parameters, not body bytes: a change that
    /// decodes to the same parameters (`+` for a space, `%41` for `A`) is
    /// rightly still valid. Holds the signing inputs to tell.
    form_signing: Option<(String, String)>,
    /// The generic scheme reads hex in either case.
    case_insensitive_signature: bool,
}

fn scheme(verify: Value) -> SignatureScheme {
    let config =
        json!({ "sources": [ { "name": "p", "match": { "prefix": "/" }, "verify": verify } ] });
    FilterConfig::parse(config.to_string().as_bytes(), &|_| None)
        .unwrap()
        .sources
        .remove(0)
        .scheme
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn generic(
    verify: Value,
) -> (
    SignatureScheme,
    edgehook_filter::verify::generic::GenericHmac,
) {
    let s = scheme(verify);
    let SignatureScheme::Hmac(g) = &s else {
        panic!("not hmac")
    };
    let g = g.clone();
    (s, g)
}

/// Every HMAC scheme, signed over `body` at `ts` with `secret`.
fn hmac_cases(secret: &str, body: &[u8], ts: i64) -> Vec<Case> {
    let key = secret.as_bytes();
    let t = ts.to_string();
    let mut cases = Vec::new();
    let plain =
        |name, verify: Value, headers: Vec<(String, Vec<u8>)>, signed: Vec<&'static str>| Case {
            name,
            scheme: scheme(verify),
            headers,
            signed_headers: signed,
            form_signing: None,
            case_insensitive_signature: false,
        };

    let whsec = format!("whsec_{}", STANDARD.encode(key));
    let sw_key = standard_webhooks::decode_secret(&whsec).unwrap();
    let sw_sig = standard_webhooks::sign(&sw_key, "msg_1", ts, body);
    for (name, prefix) in [("standard-webhooks", "webhook"), ("svix", "svix")] {
        let (id, tsh, sig): (&'static str, &'static str, &'static str) = if prefix == "svix" {
            ("svix-id", "svix-timestamp", "svix-signature")
        } else {
            ("webhook-id", "webhook-timestamp", "webhook-signature")
        };
        cases.push(plain(
            name,
            json!({ "scheme": name, "secrets": [whsec] }),
            pairs(&[(id, "msg_1"), (tsh, &t), (sig, &sw_sig)]),
            vec![id, tsh, sig],
        ));
    }
    cases.push(plain(
        "github",
        json!({ "scheme": "github", "secrets": [secret] }),
        pairs(&[("x-hub-signature-256", &github::sign(key, body))]),
        vec!["x-hub-signature-256"],
    ));
    cases.push(plain(
        "stripe",
        json!({ "scheme": "stripe", "secrets": [secret] }),
        pairs(&[("stripe-signature", &stripe::sign(key, ts, body))]),
        vec!["stripe-signature"],
    ));
    cases.push(plain(
        "slack",
        json!({ "scheme": "slack", "secrets": [secret] }),
        pairs(&[
            ("x-slack-request-timestamp", &t),
            ("x-slack-signature", &slack::sign(key, ts, body)),
        ]),
        vec!["x-slack-request-timestamp", "x-slack-signature"],
    ));
    cases.push(plain(
        "shopify",
        json!({ "scheme": "shopify", "secrets": [secret] }),
        pairs(&[("x-shopify-hmac-sha256", &shopify::sign(key, body))]),
        vec!["x-shopify-hmac-sha256"],
    ));
    let square_url = "https://example.com/hooks/square";
    cases.push(plain(
        "square",
        json!({ "scheme": "square", "secrets": [secret], "notification_url": square_url }),
        pairs(&[(
            "x-square-hmacsha256-signature",
            &square::sign(key, square_url, body),
        )]),
        vec!["x-square-hmacsha256-signature"],
    ));
    cases.push(plain(
        "paddle",
        json!({ "scheme": "paddle", "secrets": [secret] }),
        pairs(&[("paddle-signature", &paddle::sign(key, ts, body))]),
        vec!["paddle-signature"],
    ));
    cases.push(plain(
        "pagerduty",
        json!({ "scheme": "pagerduty", "secrets": [secret] }),
        pairs(&[("x-pagerduty-signature", &pagerduty::sign(key, body))]),
        vec!["x-pagerduty-signature"],
    ));

    // Twilio, form: the URL is configured, so host and path come from the
    // configuration and only the signature header is request data.
    let url = "https://example.com/hooks/twilio";
    cases.push(Case {
        form_signing: Some((secret.to_string(), url.to_string())),
        ..plain(
            "twilio-form",
            json!({ "scheme": "twilio", "secrets": [secret], "url": url }),
            pairs(&[
                ("x-twilio-signature", &twilio::sign(key, url, Some(body))),
                ("content-type", "application/x-www-form-urlencoded"),
                (":authority", "internal:10000"),
                (":path", "/internal"),
            ]),
            vec!["x-twilio-signature"],
        )
    });
    // Twilio, JSON: the URL is rebuilt from the request and carries the
    // body's hash in its query.
    let path = format!(
        "/hooks/twilio?a=1&bodySHA256={}",
        twilio::body_sha256_hex(body)
    );
    let url = format!("https://example.com{path}");
    cases.push(plain(
        "twilio-json",
        json!({ "scheme": "twilio", "secrets": [secret], "url_scheme": "https" }),
        pairs(&[
            ("x-twilio-signature", &twilio::sign(key, &url, None)),
            ("content-type", "application/json"),
            (":authority", "example.com"),
            (":path", &path),
        ]),
        vec!["x-twilio-signature", ":authority", ":path"],
    ));

    // The generic scheme in three shapes.
    let (s, g) = generic(
        json!({ "scheme": "hmac", "secrets": [secret], "header": "x-sig", "algorithm": "sha1", "prefix": "sha1=" }),
    );
    cases.push(Case {
        name: "hmac-sha1-hex",
        scheme: s,
        headers: pairs(&[("x-sig", &g.sign(key, body, "", "", ""))]),
        signed_headers: vec!["x-sig"],
        form_signing: None,
        case_insensitive_signature: true,
    });
    let (s, g) = generic(json!({
        "scheme": "hmac", "secrets": [secret], "header": "x-sig", "algorithm": "sha512", "encoding": "base64url",
        "timestamp_header": "x-ts", "id_header": "x-id", "signed_content": "{id}.{timestamp}.{body}"
    }));
    cases.push(plain_generic(
        "hmac-sha512-b64url",
        s,
        pairs(&[
            ("x-sig", &g.sign(key, body, &t, "e1", "")),
            ("x-ts", &t),
            ("x-id", "e1"),
        ]),
        vec!["x-sig", "x-ts", "x-id"],
    ));
    let (s, g) = generic(json!({
        "scheme": "hmac", "secrets": [secret], "header": "x-sig", "encoding": "base64",
        "signed_content": "{url}|{body}", "url_scheme": "https"
    }));
    let sig = g.sign(key, body, "", "", "https://example.com/h?x=1");
    cases.push(plain_generic(
        "hmac-sha256-b64-url",
        s,
        pairs(&[
            ("x-sig", &sig),
            (":authority", "example.com"),
            (":path", "/h?x=1"),
        ]),
        vec!["x-sig", ":authority", ":path"],
    ));
    cases
}

fn plain_generic(
    name: &'static str,
    scheme: SignatureScheme,
    headers: Vec<(String, Vec<u8>)>,
    signed: Vec<&'static str>,
) -> Case {
    Case {
        name,
        scheme,
        headers,
        signed_headers: signed,
        form_signing: None,
        case_insensitive_signature: false,
    }
}

fn verify(case: &Case, headers: &[(String, Vec<u8>)], body: &[u8], now: i64) -> bool {
    let h = Headers::new(headers.iter().cloned());
    case.scheme
        .verify(&SignedRequest::new(&h, body, now))
        .is_ok()
}

fn flip(bytes: &[u8], at: &Index, delta: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let i = at.index(out.len());
    out[i] ^= delta;
    out
}

proptest! {
    // Integration tests have no lib.rs for proptest to store regressions beside.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn signed_requests_verify_and_any_changed_byte_fails(
        secret in "[A-Za-z0-9_.+/-]{1,48}",
        body in vec(any::<u8>(), 1..160),
        ts in 1_000_000_000i64..2_000_000_000,
        age in 0i64..=5,
        at in any::<Index>(),
        delta in 1u8..=255,
    ) {
        let now = ts + age;
        for case in hmac_cases(&secret, &body, ts) {
            prop_assert!(verify(&case, &case.headers, &body, now), "{}: a fresh signature failed", case.name);

            let changed = flip(&body, &at, delta);
            let still_same = case.form_signing.as_ref().is_some_and(|(token, url)| {
                twilio::sign(token.as_bytes(), url, Some(&changed)) == twilio::sign(token.as_bytes(), url, Some(&body))
            });
            prop_assert_eq!(verify(&case, &case.headers, &changed, now), still_same, "{}: body changed", case.name);

            for name in &case.signed_headers {
                let mut headers = case.headers.clone();
                let slot = headers.iter_mut().find(|(n, _)| n == name).unwrap();
                let original = slot.1.clone();
                let mutated = flip(&original, &at, delta);
                slot.1 = mutated.clone();
                // Hex digits may change case; a prefix (`sha1=`) may not.
                let prefix = original.iter().position(|&b| b == b'=').map_or(0, |i| i + 1);
                let same_hex = case.case_insensitive_signature
                    && *name == "x-sig"
                    && mutated.eq_ignore_ascii_case(&original)
                    && mutated[..prefix] == original[..prefix];
                prop_assert_eq!(
                    verify(&case, &headers, &body, now),
                    same_hex,
                    "{}: {} changed to {:?}",
                    case.name,
                    name,
                    String::from_utf8_lossy(&mutated)
                );
            }

            // Another key does not verify it.
            let other = scheme_with_other_secret(&case);
            if let Some(other) = other {
                let h = Headers::new(case.headers.iter().cloned());
                prop_assert!(other.verify(&SignedRequest::new(&h, &body, now)).is_err(), "{}: wrong key verified", case.name);
            }
        }
    }
}

/// The same scheme with a key nobody signed with, where the config shape
/// allows swapping it simply.
fn scheme_with_other_secret(case: &Case) -> Option<SignatureScheme> {
    let verify = match case.name {
        "github" | "stripe" | "slack" | "shopify" | "paddle" | "pagerduty" => {
            json!({ "scheme": case.name, "secrets": ["not-the-key!"] })
        }
        "standard-webhooks" | "svix" => {
            json!({ "scheme": case.name, "secrets": ["whsec_bm90LXRoZS1rZXkh"] })
        }
        _ => return None,
    };
    Some(scheme(verify))
}

/// Header values that reach past the first checks: arbitrary bytes, and
/// strings shaped like the real thing.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..80),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        "(t|ts|v1|v0|h1|sha256|sha1)[=,;]?[0-9a-f]{0,70}([,;] ?(t|v1|h1)=[0-9a-zA-Z+/=]{0,70}){0,3}".prop_map(String::into_bytes),
        "v1,[A-Za-z0-9+/]{0,44}={0,2}( v1,[A-Za-z0-9+/=]{0,44})?".prop_map(String::into_bytes),
        "[0-9]{0,14}".prop_map(String::into_bytes),
        "(https?|ftp|)(://)?[a-z.:@\\[\\]0-9]{0,20}/?[a-z?=&%0-9A-F]{0,30}".prop_map(String::into_bytes),
        "Basic [A-Za-z0-9+/=]{0,40}".prop_map(String::into_bytes),
    ]
}

/// Every header any scheme reads.
const READ_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-delivery",
    "x-github-event",
    "stripe-signature",
    "x-slack-request-timestamp",
    "x-slack-signature",
    "x-shopify-hmac-sha256",
    "x-shopify-webhook-id",
    "x-shopify-topic",
    "x-twilio-signature",
    "i-twilio-idempotency-token",
    "content-type",
    "x-square-hmacsha256-signature",
    "paddle-signature",
    "x-pagerduty-signature",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-sig",
    "x-ts",
    "x-id",
    "x-event",
    "x-gitlab-token",
    "x-gitlab-event",
    "authorization",
    ":authority",
    ":path",
    ":scheme",
    "x-forwarded-proto",
];

fn every_scheme() -> Vec<SignatureScheme> {
    let sendgrid_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    let discord_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    [
        json!({ "scheme": "standard-webhooks", "secrets": ["whsec_aGVsbG8="] }),
        json!({ "scheme": "github", "secrets": ["k"], "allow_sha1": true }),
        json!({ "scheme": "stripe", "secrets": ["k"] }),
        json!({ "scheme": "slack", "secrets": ["k"] }),
        json!({ "scheme": "shopify", "secrets": ["k"] }),
        json!({ "scheme": "twilio", "secrets": ["k"] }),
        json!({ "scheme": "twilio", "secrets": ["k"], "url": "https://a.com/x" }),
        json!({ "scheme": "square", "secrets": ["k"], "notification_url": "https://a.com/x" }),
        json!({ "scheme": "paddle", "secrets": ["k"] }),
        json!({ "scheme": "pagerduty", "secrets": ["k"] }),
        json!({ "scheme": "sendgrid", "secrets": [sendgrid_key], "tolerance_s": 300 }),
        json!({ "scheme": "discord", "secrets": [discord_key], "tolerance_s": 300 }),
        json!({ "scheme": "hmac", "secrets": ["k"], "header": "x-sig", "timestamp_header": "x-ts", "id_header": "x-id",
                "event_type_header": "x-event", "signed_content": "{id}{timestamp}{url}{body}" }),
        json!({ "scheme": "hmac", "secrets": ["k"], "header": "x-sig", "encoding": "base64url", "prefix": "v1=" }),
        json!({ "scheme": "token", "secrets": ["k"], "event_type_header": "x-gitlab-event" }),
        json!({ "scheme": "token", "secrets": ["u:p"], "basic_auth": true }),
    ]
    .into_iter()
    .map(scheme)
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_header_bytes_never_panic(
        values in vec(proptest::option::of(header_value()), READ_HEADERS.len()),
        body in prop_oneof![vec(any::<u8>(), 0..64), "[a-z=&%+0-9A-F]{0,40}".prop_map(String::into_bytes)],
        now in prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()],
    ) {
        let headers = Headers::new(
            READ_HEADERS.iter().zip(values).filter_map(|(name, v)| v.map(|v| (name.to_string(), v))),
        );
        for s in every_scheme() {
            let _ = s.verify(&SignedRequest::new(&headers, &body, now));
        }
    }
}

/// The public-key schemes: signed with a key derived from `seed`, checked
/// with its public half as a user would configure it.
fn public_key_cases(seed: [u8; 32], body: &[u8], ts: i64) -> Vec<Case> {
    use ed25519_dalek::Signer as _;
    let t = ts.to_string();
    let message = [t.as_bytes(), body].concat();

    let ed = ed25519_dalek::SigningKey::from_bytes(&seed);
    let discord = Case {
        name: "discord",
        scheme: scheme(
            json!({ "scheme": "discord", "secrets": [hex::encode(ed.verifying_key().as_bytes())], "tolerance_s": 60 }),
        ),
        headers: pairs(&[
            (
                "x-signature-ed25519",
                &hex::encode(ed.sign(&message).to_bytes()),
            ),
            ("x-signature-timestamp", &t),
        ]),
        signed_headers: vec!["x-signature-ed25519", "x-signature-timestamp"],
        form_signing: None,
        case_insensitive_signature: false,
    };

    // Any 32 bytes below the group order are a P-256 key; a seed that is
    // not is vanishingly rare, and then only Discord is checked.
    let Ok(ec) = p256::ecdsa::SigningKey::from_slice(&seed) else {
        return vec![discord];
    };
    // SubjectPublicKeyInfo for an uncompressed P-256 point: the fixed
    // algorithm header, then the point.
    let spki_prefix = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    let point = ec.verifying_key().to_sec1_point(false);
    let public = STANDARD.encode([spki_prefix.as_slice(), point.as_bytes()].concat());
    let sig: p256::ecdsa::Signature = ec.sign(&message);
    let sendgrid = Case {
        name: "sendgrid",
        scheme: scheme(json!({ "scheme": "sendgrid", "secrets": [public] })),
        headers: pairs(&[
            (
                "x-twilio-email-event-webhook-signature",
                &STANDARD.encode(sig.to_der().as_bytes()),
            ),
            ("x-twilio-email-event-webhook-timestamp", &t),
        ]),
        signed_headers: vec![
            "x-twilio-email-event-webhook-signature",
            "x-twilio-email-event-webhook-timestamp",
        ],
        form_signing: None,
        case_insensitive_signature: false,
    };
    vec![discord, sendgrid]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn public_key_signatures_verify_and_any_changed_byte_fails(
        seed in any::<[u8; 32]>(),
        body in vec(any::<u8>(), 1..160),
        ts in 1_000_000_000i64..2_000_000_000,
        at in any::<Index>(),
        delta in 1u8..=255,
    ) {
        for case in public_key_cases(seed, &body, ts) {
            prop_assert!(verify(&case, &case.headers, &body, ts), "{}: a fresh signature failed", case.name);
            prop_assert!(!verify(&case, &case.headers, &flip(&body, &at, delta), ts), "{}: body changed", case.name);
            for name in &case.signed_headers {
                let mut headers = case.headers.clone();
                let slot = headers.iter_mut().find(|(n, _)| n == name).unwrap();
                slot.1 = flip(&slot.1, &at, delta);
                prop_assert!(!verify(&case, &headers, &body, ts), "{}: {} changed", case.name, name);
            }
        }
    }
}

proptest! {
    /// The host's serialized header map: any pairs come back as they went
    /// in, and any bytes at all parse or are refused without a panic.
    #[test]
    fn header_maps_round_trip_and_garbage_never_panics(
        pairs in vec(("[a-z-]{1,12}", vec(any::<u8>(), 0..40)), 0..12),
        garbage in vec(any::<u8>(), 0..200),
    ) {
        let h = Headers::new(pairs.clone());
        let back: Vec<(String, Vec<u8>)> = h.iter().map(|(n, v)| (n, v.to_vec())).collect();
        prop_assert_eq!(back, pairs.clone());
        for (name, _) in &pairs {
            prop_assert!(h.get(&name.to_uppercase()).is_some());
        }
        let _ = Headers::from_serialized(garbage);
    }
}
