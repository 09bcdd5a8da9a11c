//! Signature verification through real Envoy, for every scheme: requests
//! signed fresh here, the way each provider signs them (with our own HMAC,
//! ECDSA and Ed25519 code, not the filter's), are acked and delivered byte
//! for byte; tampered ones get 401 with the reason; the provider's event id
//! reaches the sidecar (a second delivery of it is a duplicate) and its
//! event type drives routing. Also rotation, secrets from the Envoy
//! environment, and replays outside the tolerance.
//!
//! One Envoy and one sidecar carry a source per scheme, to keep the suite
//! fast.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::harness::*;

// ---- signing, as the providers do it -------------------------------------

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn sha256_mac(key: &str, parts: &[&[u8]]) -> Vec<u8> {
    mac::<Hmac<Sha256>>(key.as_bytes(), parts)
}

fn github_sha1(body: &[u8]) -> String {
    format!(
        "sha1={}",
        hex::encode(mac::<Hmac<sha1::Sha1>>(GITHUB_SECRET.as_bytes(), &[body]))
    )
}

/// A fixed Ed25519 key for the Discord source (any 32 bytes are a seed).
fn discord_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// A fixed P-256 key for the SendGrid source.
fn sendgrid_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap()
}

/// The verification key as SendGrid shows it: base64 SubjectPublicKeyInfo.
fn sendgrid_public_key() -> String {
    // The fixed DER header of an uncompressed P-256 point's SPKI.
    let spki_prefix = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    let point = sendgrid_key().verifying_key().to_sec1_point(false);
    STANDARD.encode([spki_prefix.as_slice(), point.as_bytes()].concat())
}

fn sendgrid_sign(key: &p256::ecdsa::SigningKey, ts: &str, body: &[u8]) -> String {
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = key.sign(&[ts.as_bytes(), body].concat());
    STANDARD.encode(sig.to_der().as_bytes())
}

fn discord_sign(key: &ed25519_dalek::SigningKey, ts: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer as _;
    hex::encode(key.sign(&[ts.as_bytes(), body].concat()).to_bytes())
}

/// Twilio: HMAC-SHA1 over the URL, then each form parameter (sorted by
/// name, then value, decoded) as `name + value`; base64.
fn twilio_sign(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = form.to_vec();
    params.sort();
    let mut s = url.to_string();
    for (k, v) in params {
        s.push_str(k);
        s.push_str(v);
    }
    STANDARD.encode(mac::<Hmac<sha1::Sha1>>(token.as_bytes(), &[s.as_bytes()]))
}

/// `application/x-www-form-urlencoded` for simple ASCII values.
fn form_encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---- the sources ---------------------------------------------------------

const GITHUB_SECRET: &str = "gh-e2e-It's a Secret to Everybody";
const STRIPE_SECRET: &str = "whsec_stripe_e2e_0123456789";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SHOPIFY_SECRET: &str = "shpss_e2e_steffi";
const TWILIO_TOKEN: &str = "twilio-e2e-auth-token";
const SQUARE_KEY: &str = "sq0wss-e2e-Xx_aBc123";
const SQUARE_URL: &str = "https://hooks.example.com/hooks/square";
const PADDLE_SECRET: &str = "pdl_ntfset_e2e_secret";
const PAGERDUTY_SECRET: &str = "pd-e2e-c2VjcmV0LWxvb2tzLWxpa2UtYmFzZTY0";
const HMAC_SECRET: &str = "acme-e2e-secret";
const GITLAB_TOKEN: &str = "glpat-e2e-token";
const BASIC_CREDENTIALS: &str = "hooks:e2e-password";
/// Where Twilio's JSON webhooks are registered; the request goes to Envoy
/// on loopback, so the public URL is configured.
const TWILIO_PUBLIC_URL: &str = "https://hooks.example.com/hooks/twilio-json";

fn register_all() {
    for s in [
        SECRET,
        GITHUB_SECRET,
        STRIPE_SECRET,
        SLACK_SECRET,
        SHOPIFY_SECRET,
        TWILIO_TOKEN,
        SQUARE_KEY,
        PADDLE_SECRET,
        PAGERDUTY_SECRET,
        HMAC_SECRET,
        GITLAB_TOKEN,
        BASIC_CREDENTIALS,
        ENV_SECRET,
        ROTATED_OLD,
        ROTATED_NEW,
    ] {
        register_secret(s);
    }
}

fn source(name: &str, verify: Value) -> Value {
    json!({ "name": name, "match": { "path": format!("/hooks/{name}") }, "verify": verify })
}

fn scheme_sources() -> Value {
    json!([
        source(
            "standard-webhooks",
            json!({ "scheme": "standard-webhooks", "secrets": [SECRET] })
        ),
        source(
            "github",
            json!({ "scheme": "github", "secrets": [GITHUB_SECRET] })
        ),
        source(
            "github-sha1",
            json!({ "scheme": "github", "secrets": [GITHUB_SECRET], "allow_sha1": true })
        ),
        source(
            "stripe",
            json!({ "scheme": "stripe", "secrets": [STRIPE_SECRET] })
        ),
        source(
            "slack",
            json!({ "scheme": "slack", "secrets": [SLACK_SECRET] })
        ),
        source(
            "shopify",
            json!({ "scheme": "shopify", "secrets": [SHOPIFY_SECRET] })
        ),
        // The URL rebuilt from the request (:scheme, :authority, :path).
        source(
            "twilio",
            json!({ "scheme": "twilio", "secrets": [TWILIO_TOKEN] })
        ),
        source(
            "twilio-json",
            json!({ "scheme": "twilio", "secrets": [TWILIO_TOKEN], "url": TWILIO_PUBLIC_URL })
        ),
        source(
            "square",
            json!({ "scheme": "square", "secrets": [SQUARE_KEY], "notification_url": SQUARE_URL })
        ),
        source(
            "paddle",
            json!({ "scheme": "paddle", "secrets": [PADDLE_SECRET] })
        ),
        source(
            "pagerduty",
            json!({ "scheme": "pagerduty", "secrets": [PAGERDUTY_SECRET] })
        ),
        source(
            "sendgrid",
            json!({ "scheme": "sendgrid", "secrets": [sendgrid_public_key()] })
        ),
        source(
            "discord",
            json!({ "scheme": "discord", "secrets": [hex::encode(discord_key().verifying_key().as_bytes())] })
        ),
        source(
            "hmac",
            json!({
                "scheme": "hmac",
                "secrets": [HMAC_SECRET],
                "header": "X-Acme-Signature",
                "algorithm": "sha512",
                "encoding": "base64url",
                "prefix": "v2=",
                "timestamp_header": "X-Acme-Timestamp",
                "tolerance_s": 120,
                "id_header": "X-Acme-Delivery",
                "event_type_header": "X-Acme-Event",
                "signed_content": "{timestamp}.{id}.{url}.{body}",
                "url": "https://hooks.example.com/hooks/hmac",
            })
        ),
        source(
            "gitlab",
            json!({
                "scheme": "token",
                "secrets": [GITLAB_TOKEN],
                "id_header": "X-Gitlab-Event-UUID",
                "event_type_header": "X-Gitlab-Event",
            })
        ),
        source(
            "basic",
            json!({ "scheme": "token", "secrets": [BASIC_CREDENTIALS], "basic_auth": true })
        ),
    ])
}

/// One request to one source.
#[derive(Clone)]
struct Signed {
    source: &'static str,
    /// Path and query (Twilio and the generic scheme sign the query).
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Signed {
    fn new(source: &'static str, headers: Vec<(String, String)>, body: &[u8]) -> Signed {
        Signed {
            source,
            target: format!("/hooks/{source}"),
            headers,
            body: body.to_vec(),
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Signed {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn without_header(mut self, name: &str) -> Signed {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn with_body(mut self, body: &[u8]) -> Signed {
        self.body = body.to_vec();
        self
    }

    async fn send(&self, envoy: &Envoy) -> Answer {
        post(&envoy.url(&self.target), &self.headers, &self.body).await
    }
}

/// What a scheme's case expects.
struct Case {
    /// A request signed now, as the provider would send it.
    good: Signed,
    /// The provider's event type, when the scheme reads one.
    event_type: Option<&'static str>,
    /// Whether the provider sends an event id (then a second delivery of
    /// the same event is a duplicate).
    has_event_id: bool,
    /// A tampered request and the reason it must be refused with.
    tampered: Vec<(&'static str, Signed, &'static str)>,
}

fn cases(envoy_port: u16) -> Vec<Case> {
    let now = now_s();
    let ts = now.to_string();
    let mut out = Vec::new();

    // Standard Webhooks, and the same scheme under Svix's header names.
    let body = br#"{"type":"sw.created","data":{"n":1,"note":"caf\u00e9"}}"#;
    let good = Signed::new(
        "standard-webhooks",
        standard_webhooks_headers(SECRET, "msg_sw_e2e_1", now, body),
        body,
    );
    out.push(Case {
        tampered: vec![
            (
                "body changed",
                good.clone()
                    .with_body(br#"{"type":"sw.created","data":{"n":2}}"#),
                "signature_mismatch",
            ),
            (
                "timestamp moved by one second",
                good.clone()
                    .with_header("webhook-timestamp", &(now + 1).to_string()),
                "signature_mismatch",
            ),
        ],
        good,
        event_type: Some("sw.created"),
        has_event_id: true,
    });
    let body = br#"{"type":"svix.created","data":{"via":"svix"}}"#;
    let svix: Vec<(String, String)> =
        standard_webhooks_headers(SECRET, "msg_svix_e2e_1", now, body)
            .into_iter()
            .map(|(k, v)| (k.replace("webhook-", "svix-"), v))
            .collect();
    let good = Signed::new("standard-webhooks", svix, body);
    out.push(Case {
        tampered: vec![(
            "svix signature without its timestamp",
            good.clone().without_header("svix-timestamp"),
            "missing_header",
        )],
        good,
        event_type: Some("svix.created"),
        has_event_id: true,
    });

    // GitHub.
    let body = br#"{"action":"opened","zen":"Keep it logically awesome.\u001B"}"#;
    let sig = format!("sha256={}", hex::encode(sha256_mac(GITHUB_SECRET, &[body])));
    let good = Signed::new(
        "github",
        h(&[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-GitHub-Event", "pull_request"),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![
            (
                "no signature header",
                good.clone().without_header("X-Hub-Signature-256"),
                "missing_header",
            ),
            (
                "only the legacy SHA-1 header, not enabled",
                good.clone()
                    .without_header("X-Hub-Signature-256")
                    .with_header("X-Hub-Signature", &github_sha1(body)),
                "missing_header",
            ),
            (
                "upper-case hex",
                good.clone()
                    .with_header("X-Hub-Signature-256", &sig.to_uppercase()),
                "malformed_header",
            ),
        ],
        good,
        event_type: Some("pull_request"),
        has_event_id: true,
    });

    // GitHub's legacy SHA-1 header, where a source enables it.
    let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let good = Signed::new(
        "github-sha1",
        h(&[
            ("X-Hub-Signature", &github_sha1(body)),
            ("X-GitHub-Delivery", "d2a1e2e0-sha1-11e3-81ab-4c9367dc0958"),
            ("X-GitHub-Event", "ping"),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "SHA-1 over another body",
            good.clone()
                .with_body(br#"{"zen":"Design for success.","hook_id":1}"#),
            "signature_mismatch",
        )],
        good,
        event_type: Some("ping"),
        has_event_id: true,
    });

    // Stripe: the secret is the whsec_ text itself; future timestamps pass.
    let body = b"{\n  \"id\": \"evt_e2e_1\",\n  \"type\": \"invoice.paid\"\n}\n";
    let stripe = |t: i64, body: &[u8]| {
        let sig = hex::encode(sha256_mac(
            STRIPE_SECRET,
            &[t.to_string().as_bytes(), b".", body],
        ));
        format!("t={t},v1={sig},v0=deadbeef")
    };
    let good = Signed::new(
        "stripe",
        h(&[("Stripe-Signature", &stripe(now, body))]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "signed 301 s ago",
            good.clone()
                .with_header("Stripe-Signature", &stripe(now - 301, body)),
            "timestamp_out_of_tolerance",
        )],
        good,
        event_type: Some("invoice.paid"),
        has_event_id: true,
    });
    let body = br#"{"id":"evt_e2e_future","type":"invoice.created"}"#;
    out.push(Case {
        good: Signed::new(
            "stripe",
            h(&[("Stripe-Signature", &stripe(now + 3600, body))]),
            body,
        ),
        event_type: Some("invoice.created"),
        has_event_id: true,
        tampered: vec![],
    });

    // Slack.
    let body = br#"{"type":"event_callback","event_id":"Ev0E2E","event":{"type":"app_mention","text":"hi"}}"#;
    let slack = |t: i64| {
        format!(
            "v0={}",
            hex::encode(sha256_mac(
                SLACK_SECRET,
                &[b"v0:", t.to_string().as_bytes(), b":", body]
            ))
        )
    };
    let good = Signed::new(
        "slack",
        h(&[
            ("X-Slack-Request-Timestamp", &ts),
            ("X-Slack-Signature", &slack(now)),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "signed 6 minutes in the future",
            good.clone()
                .with_header("X-Slack-Request-Timestamp", &(now + 360).to_string())
                .with_header("X-Slack-Signature", &slack(now + 360)),
            "timestamp_out_of_tolerance",
        )],
        good,
        event_type: Some("app_mention"),
        has_event_id: true,
    });

    // Shopify.
    let body = br#"{"id":820982911946154500,"email":"jon@example.com"}"#;
    let good = Signed::new(
        "shopify",
        h(&[
            (
                "X-Shopify-Hmac-Sha256",
                &STANDARD.encode(sha256_mac(SHOPIFY_SECRET, &[body])),
            ),
            ("X-Shopify-Topic", "orders/create"),
            (
                "X-Shopify-Webhook-Id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
            ("X-Shopify-Shop-Domain", "e2e.myshopify.com"),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "signed with another app's secret",
            good.clone().with_header(
                "X-Shopify-Hmac-Sha256",
                &STANDARD.encode(sha256_mac("another-secret", &[body])),
            ),
            "signature_mismatch",
        )],
        good,
        event_type: Some("orders/create"),
        has_event_id: true,
    });

    // Twilio, form body: the URL rebuilt from the request as Envoy saw it
    // (scheme, host and port, path, query).
    let form = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];
    let body = form_encode(&form);
    let target = "/hooks/twilio?foo=1&bar=2";
    let url = format!("http://127.0.0.1:{envoy_port}{target}");
    let good = Signed {
        source: "twilio",
        target: target.to_string(),
        headers: h(&[
            (
                "X-Twilio-Signature",
                &twilio_sign(TWILIO_TOKEN, &url, &form),
            ),
            ("I-Twilio-Idempotency-Token", "twilio-e2e-idem-1"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]),
        body: body.clone().into_bytes(),
    };
    let mut changed = form;
    changed[2] = ("Digits", "9999");
    let mut other_query = good.clone();
    other_query.target = "/hooks/twilio?foo=1&bar=2&somethingUnexpected=true".into();
    out.push(Case {
        tampered: vec![
            (
                "a form parameter changed",
                good.clone().with_body(form_encode(&changed).as_bytes()),
                "signature_mismatch",
            ),
            ("query changed", other_query, "signature_mismatch"),
        ],
        good,
        event_type: None,
        has_event_id: true,
    });

    // Twilio, JSON body: the public URL with bodySHA256, signed with :443.
    let body = br#"{"property": "value", "boolean": true}"#;
    let hash = hex::encode(Sha256::digest(body));
    let target = format!("/hooks/twilio-json?bodySHA256={hash}");
    let signed_url = format!("https://hooks.example.com:443/hooks/twilio-json?bodySHA256={hash}");
    let good = Signed {
        source: "twilio-json",
        target,
        headers: h(&[
            (
                "X-Twilio-Signature",
                &twilio_sign(TWILIO_TOKEN, &signed_url, &[]),
            ),
            ("I-Twilio-Idempotency-Token", "twilio-e2e-idem-json"),
        ]),
        body: body.to_vec(),
    };
    out.push(Case {
        tampered: vec![(
            "body no longer matches bodySHA256",
            good.clone()
                .with_body(br#"{"property": "value", "boolean": false}"#),
            "signature_mismatch",
        )],
        good,
        event_type: None,
        has_event_id: true,
    });

    // Square: the registered notification URL, then the body.
    let body = br#"{"merchant_id":"6SSW7HV8K2ST5","type":"payment.created","event_id":"6a8f5f28-54a1-4eb0-a98a-3111513fd4fc","data":{"id":"e2e"}}"#;
    let square = |url: &str| STANDARD.encode(sha256_mac(SQUARE_KEY, &[url.as_bytes(), body]));
    let good = Signed::new(
        "square",
        h(&[("X-Square-HmacSha256-Signature", &square(SQUARE_URL))]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "signed for another notification URL",
            good.clone().with_header(
                "X-Square-HmacSha256-Signature",
                &square("https://hooks.example.com/hooks/other"),
            ),
            "signature_mismatch",
        )],
        good,
        event_type: Some("payment.created"),
        has_event_id: true,
    });

    // Paddle: `ts:body`, a 5 s tolerance.
    let body =
        br#"{"event_id":"evt_01e2e","event_type":"transaction.completed","data":{"id":"txn_1"}}"#;
    let paddle = |t: i64| {
        format!(
            "ts={t};h1={}",
            hex::encode(sha256_mac(
                PADDLE_SECRET,
                &[t.to_string().as_bytes(), b":", body]
            ))
        )
    };
    let good = Signed::new("paddle", h(&[("Paddle-Signature", &paddle(now))]), body);
    out.push(Case {
        tampered: vec![(
            "signed 60 s ago",
            good.clone()
                .with_header("Paddle-Signature", &paddle(now - 60)),
            "timestamp_out_of_tolerance",
        )],
        good,
        event_type: Some("transaction.completed"),
        has_event_id: true,
    });

    // PagerDuty: `v1=` entries, comma-separated (rotation).
    let body = br#"{"event":{"id":"5ac64822-4adc-4fda-ade0-410becf0de4f","event_type":"incident.triggered","data":{}}}"#;
    let sig = hex::encode(sha256_mac(PAGERDUTY_SECRET, &[body]));
    let good = Signed::new(
        "pagerduty",
        h(&[(
            "X-PagerDuty-Signature",
            &format!(
                "v1={},v1={sig}",
                hex::encode(sha256_mac("old-key", &[body]))
            ),
        )]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "signature truncated",
            good.clone()
                .with_header("X-PagerDuty-Signature", &format!("v1={}", &sig[..32])),
            "signature_mismatch",
        )],
        good,
        event_type: Some("incident.triggered"),
        has_event_id: true,
    });

    // SendGrid: ECDSA P-256 over `timestamp + body`; the body ends in CRLF.
    let body =
        b"[{\"email\":\"e2e@example.com\",\"event\":\"processed\",\"sg_event_id\":\"e2e1\"}]\r\n";
    let good = Signed::new(
        "sendgrid",
        h(&[
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                &sendgrid_sign(&sendgrid_key(), &ts, body),
            ),
            ("X-Twilio-Email-Event-Webhook-Timestamp", &ts),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "timestamp changed",
            good.clone().with_header(
                "X-Twilio-Email-Event-Webhook-Timestamp",
                &(now + 1).to_string(),
            ),
            "signature_mismatch",
        )],
        good,
        event_type: None,
        has_event_id: false,
    });

    // Discord: Ed25519 over `timestamp + body`.
    let body = br#"{"id":"1100000000000000001","type":2,"data":{"name":"e2e"}}"#;
    let good = Signed::new(
        "discord",
        h(&[
            (
                "X-Signature-Ed25519",
                &discord_sign(&discord_key(), &ts, body),
            ),
            ("X-Signature-Timestamp", &ts),
        ]),
        body,
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    out.push(Case {
        tampered: vec![(
            "signed by another application's key",
            good.clone()
                .with_header("X-Signature-Ed25519", &discord_sign(&stranger, &ts, body)),
            "signature_mismatch",
        )],
        good,
        event_type: Some("2"),
        has_event_id: true,
    });

    // Generic HMAC: SHA-512, base64url, a prefix, and a template over the
    // timestamp, the delivery id, the configured URL (plus the query) and
    // the body.
    let body = br#"{"kind":"acme"}"#;
    let target = "/hooks/hmac?tenant=e2e";
    let acme = |t: &str, id: &str| {
        let url = "https://hooks.example.com/hooks/hmac?tenant=e2e";
        let m = mac::<Hmac<Sha512>>(
            HMAC_SECRET.as_bytes(),
            &[
                t.as_bytes(),
                b".",
                id.as_bytes(),
                b".",
                url.as_bytes(),
                b".",
                body,
            ],
        );
        format!("v2={}", URL_SAFE_NO_PAD.encode(m))
    };
    let good = Signed {
        source: "hmac",
        target: target.to_string(),
        headers: h(&[
            ("X-Acme-Signature", &acme(&ts, "acme-e2e-1")),
            ("X-Acme-Timestamp", &ts),
            ("X-Acme-Delivery", "acme-e2e-1"),
            ("X-Acme-Event", "widget.updated"),
        ]),
        body: body.to_vec(),
    };
    out.push(Case {
        tampered: vec![
            (
                "timestamp not plain digits",
                good.clone()
                    .with_header("X-Acme-Timestamp", &format!("+{ts}")),
                "malformed_header",
            ),
            (
                "delivery id changed",
                good.clone().with_header("X-Acme-Delivery", "acme-e2e-2"),
                "signature_mismatch",
            ),
        ],
        good,
        event_type: Some("widget.updated"),
        has_event_id: true,
    });

    // Token (GitLab), and Basic auth.
    let body = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let good = Signed::new(
        "gitlab",
        h(&[
            ("X-Gitlab-Token", GITLAB_TOKEN),
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", "e2e-gitlab-uuid-1"),
        ]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "a prefix of the token",
            good.clone()
                .with_header("X-Gitlab-Token", &GITLAB_TOKEN[..GITLAB_TOKEN.len() - 1]),
            "signature_mismatch",
        )],
        good,
        event_type: Some("Push Hook"),
        has_event_id: true,
    });
    let body = br#"{"basic":"auth"}"#;
    let good = Signed::new(
        "basic",
        h(&[(
            "Authorization",
            &format!("Basic {}", STANDARD.encode(BASIC_CREDENTIALS)),
        )]),
        body,
    );
    out.push(Case {
        tampered: vec![(
            "wrong password",
            good.clone().with_header(
                "Authorization",
                &format!("Basic {}", STANDARD.encode("hooks:guess")),
            ),
            "signature_mismatch",
        )],
        good,
        event_type: None,
        has_event_id: false,
    });
    out
}

/// The sidecar: every event goes to `/webhooks`; per source with an event
/// type, a destination subscribed to exactly that (source, type) gets it
/// at `/typed/<source>`, so a delivery there proves the type was read.
fn sidecar_toml(receiver: &Receiver, cases: &[Case]) -> String {
    let mut toml = String::new();
    let mut typed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in cases {
        if let Some(t) = c.event_type {
            typed.entry(c.good.source).or_default().push(t);
        }
    }
    for (source, types) in typed {
        toml.push_str(&format!(
            "[[destinations]]\nname = \"typed-{source}\"\nurl = \"{}\"\nsources = [\"{source}\"]\n\
             event_types = {}\ntimeout_ms = 2000\n\
             retry = {{ initial_ms = 50, max_delay_ms = 400, max_attempts = 1000, max_age_s = 600 }}\n",
            receiver.url(&format!("/typed/{source}")),
            serde_json::to_string(&types).unwrap(),
        ));
    }
    toml
}

/// Receiver, sidecar and Envoy with `sources`, `sidecar_toml` and `env`
/// (the Envoy process environment, readable by the filter).
async fn start_stack(
    sources: Value,
    sidecar_toml: impl FnOnce(&Receiver) -> String,
    env: Vec<(String, String)>,
) -> Stack {
    register_all();
    let receiver = Receiver::start().await;
    let toml = format!(
        "{}\n{}",
        sidecar_toml(&receiver),
        Sidecar::destination_toml("receiver", &receiver.url("/webhooks"))
    );
    let sidecar = Sidecar::start(&toml).await;
    let mut opts = EnvoyOptions::new(filter_config(sources, 2000), sidecar.ingest_port);
    opts.env = env;
    let envoy = Envoy::start(opts).await;
    Stack {
        receiver,
        sidecar,
        envoy,
    }
}

fn deliveries_at<'a>(all: &'a [Delivery], path: &str, body: &[u8]) -> Vec<&'a Delivery> {
    all.iter()
        .filter(|d| d.path == path && d.body.as_ref() == body)
        .collect()
}

#[tokio::test]
async fn every_scheme_accepts_fresh_signatures_and_refuses_tampered_requests() {
    // The Twilio case signs the URL Envoy sees, so Envoy's port must be
    // known first: the cases are built once it runs, and only the
    // destinations (which need no signatures) before.
    let layout = cases(0);
    let stack = start_stack(
        scheme_sources(),
        |r: &Receiver| sidecar_toml(r, &layout),
        vec![],
    )
    .await;
    let cases = cases(stack.envoy.port);

    let mut ids = Vec::new();
    for c in &cases {
        let a = c.good.send(&stack.envoy).await;
        assert_eq!(a.status, 202, "{} (fresh signature): {a:?}", c.good.source);
        assert!(
            a.json().get("duplicate").is_none(),
            "{}: {a:?}",
            c.good.source
        );
        ids.push(a.json()["id"].as_str().unwrap().to_string());
    }

    for c in &cases {
        for (what, req, reason) in &c.tampered {
            let a = req.send(&stack.envoy).await;
            assert_eq!(a.status, 401, "{} ({what}): {a:?}", c.good.source);
            assert_eq!(
                a.json()["error"],
                *reason,
                "{} ({what}): {a:?}",
                c.good.source
            );
        }
    }

    // The provider sends the same event again, signed anew: the sidecar
    // knows its id and keeps the first.
    for (c, id) in self::cases(stack.envoy.port).iter().zip(&ids) {
        if !c.has_event_id {
            continue;
        }
        let a = c.good.send(&stack.envoy).await;
        assert_eq!(a.status, 202, "{} (again): {a:?}", c.good.source);
        assert_eq!(
            a.json()["duplicate"],
            true,
            "{} (again): {a:?}",
            c.good.source
        );
        assert_eq!(a.json()["id"], id.as_str(), "{} (again)", c.good.source);
    }

    let expected = |all: &[Delivery]| {
        cases.iter().all(|c| {
            !deliveries_at(all, "/webhooks", &c.good.body).is_empty()
                && c.event_type.is_none_or(|_| {
                    !deliveries_at(all, &format!("/typed/{}", c.good.source), &c.good.body)
                        .is_empty()
                })
        })
    };
    stack
        .receiver
        .wait_until("every scheme's event delivered", |_, delivered| {
            expected(delivered)
        })
        .await;

    let delivered = stack.receiver.delivered();
    for (c, id) in cases.iter().zip(&ids) {
        let got = deliveries_at(&delivered, "/webhooks", &c.good.body);
        assert_eq!(
            got.len(),
            1,
            "{}: delivered once, byte for byte",
            c.good.source
        );
        assert_eq!(
            got[0].header("webhook-id"),
            Some(id.as_str()),
            "{}",
            c.good.source
        );
    }
    // Nothing tampered got through: every delivery is one of the good ones.
    let typed = cases.iter().filter(|c| c.event_type.is_some()).count();
    assert_eq!(
        stack.receiver.requests().len(),
        cases.len() + typed,
        "only the good requests were delivered"
    );
}

// ---- rotation, environment secrets, replays ------------------------------

const ROTATED_OLD: &str = "rotated-e2e-old-secret";
const ROTATED_NEW: &str = "rotated-e2e-new-secret";
const ENV_SECRET: &str = "whsec_from_the_envoy_environment_e2e";
const ENV_VAR: &str = "EDGEHOOK_E2E_STRIPE_SECRET";

fn github_signed(secret: &str, delivery: &str, body: &[u8]) -> Signed {
    let sig = format!("sha256={}", hex::encode(sha256_mac(secret, &[body])));
    Signed::new(
        "rotated",
        h(&[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Delivery", delivery),
            ("X-GitHub-Event", "push"),
        ]),
        body,
    )
}

#[tokio::test]
async fn rotation_env_secrets_and_replays_outside_the_tolerance() {
    let sources = json!([
        source(
            "rotated",
            json!({
                "scheme": "github",
                "secrets": [
                    { "value": ROTATED_OLD, "not_after": "2020-01-01T00:00:00Z" },
                    { "value": ROTATED_NEW, "not_after": "2999-01-01T00:00:00Z" },
                ],
            })
        ),
        source(
            "from-env",
            json!({ "scheme": "stripe", "secrets": [{ "env": ENV_VAR }] })
        ),
        source(
            "replayed",
            json!({ "scheme": "standard-webhooks", "secrets": [SECRET], "tolerance_s": 60 })
        ),
    ]);
    let stack = start_stack(
        sources,
        |_| String::new(),
        vec![(ENV_VAR.to_string(), ENV_SECRET.to_string())],
    )
    .await;
    let now = now_s();

    // Rotation: the expired key is refused, the current one accepted.
    let body = br#"{"ref":"refs/heads/main","rotation":true}"#;
    let old = github_signed(ROTATED_OLD, "rot-old", body)
        .send(&stack.envoy)
        .await;
    assert_eq!(old.status, 401, "{old:?}");
    assert_eq!(old.json()["error"], "signature_mismatch");
    let new = github_signed(ROTATED_NEW, "rot-new", body)
        .send(&stack.envoy)
        .await;
    assert_eq!(new.status, 202, "{new:?}");

    // A secret read from the Envoy process environment.
    let env_body = br#"{"id":"evt_env_e2e","type":"charge.succeeded"}"#;
    let stripe = |secret: &str| {
        let sig = hex::encode(sha256_mac(
            secret,
            &[now.to_string().as_bytes(), b".", env_body],
        ));
        Signed::new(
            "from-env",
            h(&[("Stripe-Signature", &format!("t={now},v1={sig}"))]),
            env_body,
        )
    };
    let a = stripe(ENV_SECRET).send(&stack.envoy).await;
    assert_eq!(a.status, 202, "{a:?}");
    let a = stripe("whsec_not_the_env_secret").send(&stack.envoy).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.json()["error"], "signature_mismatch");

    // A request captured and replayed later than the tolerance allows;
    // it was genuinely signed, so only its age refuses it.
    let replay_body = br#"{"type":"replayed"}"#;
    for age in [61, 3600] {
        let a = post(
            &stack.envoy.url("/hooks/replayed"),
            &standard_webhooks_headers(
                SECRET,
                &format!("msg_replay_{age}"),
                now - age,
                replay_body,
            ),
            replay_body,
        )
        .await;
        assert_eq!(a.status, 401, "{age} s old: {a:?}");
        assert_eq!(
            a.json()["error"],
            "timestamp_out_of_tolerance",
            "{age} s old"
        );
    }
    let fresh = post(
        &stack.envoy.url("/hooks/replayed"),
        &standard_webhooks_headers(SECRET, "msg_replay_fresh", now, replay_body),
        replay_body,
    )
    .await;
    assert_eq!(fresh.status, 202, "{fresh:?}");

    let got = stack.receiver.wait_delivered(3).await;
    let mut bodies: Vec<&[u8]> = got.iter().map(|d| d.body.as_ref()).collect();
    bodies.sort();
    let mut want: Vec<&[u8]> = vec![body, env_body, replay_body];
    want.sort();
    assert_eq!(
        bodies, want,
        "exactly the three accepted requests were delivered"
    );
    let env_log = stack.envoy.log();
    assert!(!env_log.contains(ENV_SECRET));
}
