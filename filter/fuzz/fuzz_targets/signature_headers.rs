//! Every scheme's header parsers and verification, on arbitrary header
//! bytes, body and clock: nothing may panic (a panic kills the filter's VM).
#![no_main]

use edgehook_filter::config::FilterConfig;
use edgehook_filter::headers::Headers;
use edgehook_filter::verify::{SignatureScheme, SignedRequest};
use libfuzzer_sys::fuzz_target;

/// Every header any scheme reads (and the pseudo-headers the URL schemes use).
const HEADERS: &[&str] = &[
    "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp",
    "svix-signature", "x-hub-signature-256", "x-hub-signature", "x-github-delivery",
    "x-github-event", "stripe-signature", "x-slack-request-timestamp", "x-slack-signature",
    "x-shopify-hmac-sha256", "x-shopify-webhook-id", "x-shopify-topic", "x-twilio-signature",
    "i-twilio-idempotency-token", "content-type", "x-square-hmacsha256-signature",
    "paddle-signature", "x-pagerduty-signature", "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp", "x-signature-ed25519", "x-signature-timestamp",
    "x-sig", "x-ts", "x-id", "x-event", "x-gitlab-token", "authorization", ":authority", ":path",
    ":scheme", "x-forwarded-proto",
];

const SCHEMES: &[&str] = &[
    r#"{"scheme":"standard-webhooks","secrets":["whsec_aGVsbG8="]}"#,
    r#"{"scheme":"github","secrets":["k"],"allow_sha1":true}"#,
    r#"{"scheme":"stripe","secrets":["k"]}"#,
    r#"{"scheme":"slack","secrets":["k"]}"#,
    r#"{"scheme":"shopify","secrets":["k"]}"#,
    r#"{"scheme":"twilio","secrets":["k"]}"#,
    r#"{"scheme":"square","secrets":["k"],"notification_url":"https://a.com/x"}"#,
    r#"{"scheme":"paddle","secrets":["k"]}"#,
    r#"{"scheme":"pagerduty","secrets":["k"]}"#,
    r#"{"scheme":"sendgrid","secrets":["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="],"tolerance_s":300}"#,
    r#"{"scheme":"discord","secrets":["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"],"tolerance_s":300}"#,
    r#"{"scheme":"hmac","secrets":["k"],"header":"x-sig","timestamp_header":"x-ts","id_header":"x-id","event_type_header":"x-event","signed_content":"{id}{timestamp}{url}{body}"}"#,
    r#"{"scheme":"hmac","secrets":["k"],"header":"x-sig","encoding":"base64url","prefix":"v1="}"#,
    r#"{"scheme":"token","secrets":["k"]}"#,
    r#"{"scheme":"token","secrets":["u:p"],"basic_auth":true}"#,
];

fn schemes() -> Vec<SignatureScheme> {
    SCHEMES
        .iter()
        .filter_map(|verify| {
            let json = format!(
                r#"{{"sources":[{{"name":"p","match":{{"prefix":"/"}},"verify":{verify}}}]}}"#
            );
            FilterConfig::parse(json.as_bytes(), &|_| None)
                .ok()
                .and_then(|c| c.sources.into_iter().next())
                .map(|s| s.scheme)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SCHEMES_BUILT: Vec<SignatureScheme> = schemes();
    }
    // [scheme][clock: 8 bytes] then records [header index][len][value], then the body.
    let Some((&which, rest)) = data.split_first() else { return };
    let Some((clock, mut rest)) = rest.split_at_checked(8) else { return };
    let now = i64::from_le_bytes(clock.try_into().unwrap_or([0; 8]));
    let mut pairs = Vec::new();
    while let [h, len, tail @ ..] = rest {
        if *h == 0xff {
            rest = tail;
            break;
        }
        let len = usize::from(*len).min(tail.len());
        let (value, next) = tail.split_at(len);
        pairs.push((HEADERS[usize::from(*h) % HEADERS.len()].to_string(), value.to_vec()));
        rest = next;
    }
    let headers = Headers::new(pairs);
    SCHEMES_BUILT.with(|schemes| {
        if let Some(scheme) = schemes.get(usize::from(which) % schemes.len().max(1)) {
            let _ = scheme.verify(&SignedRequest::new(&headers, rest, now));
        }
    });
});
