//! Signature schemes: given a request's headers and raw body, decide whether
//! a provider really sent it, and pull out the provider's event id and type.
//!
//! Each scheme lives in its own module and is pure: the clock is an argument
//! and secrets come already decoded. Shared steps (reading a required header,
//! parsing a timestamp, the tolerance window, constant-time comparison) live
//! here so every scheme refuses malformed input the same way.

pub mod discord;
pub mod generic;
pub mod github;
pub mod paddle;
pub mod pagerduty;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod token;
pub mod twilio;
pub mod url;

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::headers::Headers;
use crate::reply::Reason;

/// A verification key. Its bytes never reach logs, errors or metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
    /// Unix seconds after which the key no longer verifies (rotation).
    not_after: Option<i64>,
}

impl Secret {
    pub fn new(key: Vec<u8>, not_after: Option<i64>) -> Self {
        Secret { key, not_after }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn active_at(&self, now_unix_s: i64) -> bool {
        self.not_after.is_none_or(|t| now_unix_s <= t)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The secrets of one source; several may be active at once during rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    pub fn new(secrets: Vec<Secret>) -> Self {
        Secrets(secrets)
    }

    /// The keys still valid at `now`; `Err` when rotation has left none.
    pub fn active(&self, now_unix_s: i64) -> Result<Vec<&[u8]>, Failure> {
        let keys: Vec<&[u8]> = self
            .0
            .iter()
            .filter(|s| s.active_at(now_unix_s))
            .map(Secret::key)
            .collect();
        if keys.is_empty() {
            Err(Failure::new(Reason::NoActiveSecret, None))
        } else {
            Ok(keys)
        }
    }
}

/// What a scheme looks at.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub headers: &'a Headers,
    pub body: &'a [u8],
    pub now_unix_s: i64,
    /// Where the request was sent; only schemes that sign the URL use it.
    pub target: RequestTarget<'a>,
}

impl<'a> SignedRequest<'a> {
    /// A request whose target is read from its own pseudo-headers.
    pub fn new(headers: &'a Headers, body: &'a [u8], now_unix_s: i64) -> Self {
        SignedRequest {
            headers,
            body,
            now_unix_s,
            target: RequestTarget::from_headers(headers),
        }
    }
}

/// The request target as the filter saw it. Twilio (and `{url}` in the
/// generic scheme) sign the URL the provider called, so it is rebuilt from
/// these when no public URL is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// `http` or `https`: `x-forwarded-proto` (the client-facing hop, when
    /// a load balancer terminates TLS first), else `:scheme`.
    pub scheme: Option<&'static str>,
    /// `:authority` as sent, port included: the SDKs sign it that way.
    pub authority: &'a str,
    /// `:path` as sent, query included.
    pub path_and_query: &'a str,
}

impl<'a> RequestTarget<'a> {
    pub fn from_headers(headers: &'a Headers) -> Self {
        // Pseudo-headers come from Envoy's codec; a non-UTF-8 value reads as
        // absent, and the signature check then fails on its own.
        let text = |name: &str| headers.get_str(name).ok().flatten().unwrap_or("");
        let forwarded = text("x-forwarded-proto")
            .split(',')
            .next()
            .unwrap_or("")
            .trim();
        let scheme = [forwarded, text(":scheme")].into_iter().find_map(|s| {
            if s.eq_ignore_ascii_case("https") {
                Some("https")
            } else if s.eq_ignore_ascii_case("http") {
                Some("http")
            } else {
                None
            }
        });
        RequestTarget {
            scheme,
            authority: text(":authority"),
            path_and_query: text(":path"),
        }
    }
}

/// What a successful verification learned about the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub provider_event_id: Option<String>,
    pub event_type: Option<String>,
}

/// Why verification failed, and which header was at fault when one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub header: Option<&'static str>,
}

impl Failure {
    pub fn new(reason: Reason, header: Option<&'static str>) -> Self {
        Failure { reason, header }
    }
}

/// The configured scheme of a source, with its decoded secrets.
#[derive(Debug, Clone)]
pub enum SignatureScheme {
    StandardWebhooks(standard_webhooks::StandardWebhooks),
    Github(github::Github),
    Stripe(stripe::Stripe),
    Slack(slack::Slack),
    Shopify(shopify::Shopify),
    Twilio(twilio::Twilio),
    Square(square::Square),
    Paddle(paddle::Paddle),
    Pagerduty(pagerduty::Pagerduty),
    Sendgrid(sendgrid::Sendgrid),
    Discord(discord::Discord),
    Hmac(generic::GenericHmac),
    Token(token::Token),
}

impl SignatureScheme {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        match self {
            SignatureScheme::StandardWebhooks(s) => s.verify(req),
            SignatureScheme::Github(s) => s.verify(req),
            SignatureScheme::Stripe(s) => s.verify(req),
            SignatureScheme::Slack(s) => s.verify(req),
            SignatureScheme::Shopify(s) => s.verify(req),
            SignatureScheme::Twilio(s) => s.verify(req),
            SignatureScheme::Square(s) => s.verify(req),
            SignatureScheme::Paddle(s) => s.verify(req),
            SignatureScheme::Pagerduty(s) => s.verify(req),
            SignatureScheme::Sendgrid(s) => s.verify(req),
            SignatureScheme::Discord(s) => s.verify(req),
            SignatureScheme::Hmac(s) => s.verify(req),
            SignatureScheme::Token(s) => s.verify(req),
        }
    }

    /// The configured secrets, whatever the scheme.
    pub fn secrets(&self) -> &Secrets {
        match self {
            SignatureScheme::StandardWebhooks(s) => &s.secrets,
            SignatureScheme::Github(s) => &s.secrets,
            SignatureScheme::Stripe(s) => &s.secrets,
            SignatureScheme::Slack(s) => &s.secrets,
            SignatureScheme::Shopify(s) => &s.secrets,
            SignatureScheme::Twilio(s) => &s.secrets,
            SignatureScheme::Square(s) => &s.secrets,
            SignatureScheme::Paddle(s) => &s.secrets,
            SignatureScheme::Pagerduty(s) => &s.secrets,
            SignatureScheme::Sendgrid(s) => &s.secrets,
            SignatureScheme::Discord(s) => &s.secrets,
            SignatureScheme::Hmac(s) => &s.secrets,
            SignatureScheme::Token(s) => &s.secrets,
        }
    }
}

/// A header that must be present and text.
pub(crate) fn required_text<'a>(
    headers: &'a Headers,
    name: &'static str,
) -> Result<&'a str, Failure> {
    match headers.get_str(name) {
        Ok(Some(v)) if !v.is_empty() => Ok(v),
        Ok(_) => Err(Failure::new(Reason::MissingHeader, Some(name))),
        Err(_) => Err(Failure::new(Reason::MalformedHeader, Some(name))),
    }
}

/// A header that may be absent; present but empty counts as absent, and
/// present but not UTF-8 is malformed.
pub(crate) fn optional_text<'a>(
    headers: &'a Headers,
    name: &'static str,
) -> Result<Option<&'a str>, Failure> {
    match headers.get_str(name) {
        Ok(Some(v)) if !v.is_empty() => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(_) => Err(Failure::new(Reason::MalformedHeader, Some(name))),
    }
}

/// Schemes whose libraries refuse an empty payload refuse it here too,
/// before any key is tried.
pub(crate) fn require_body(body: &[u8]) -> Result<(), Failure> {
    if body.is_empty() {
        Err(Failure::new(Reason::BodyRequired, None))
    } else {
        Ok(())
    }
}

/// Unix seconds written as plain ASCII digits: no sign, no fraction, no
/// spaces. Libraries that re-format looser input sign something other than
/// what was sent, so anything else is malformed.
pub(crate) fn parse_unix_seconds(text: &str, header: &'static str) -> Result<i64, Failure> {
    let malformed = Failure::new(Reason::MalformedHeader, Some(header));
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed);
    }
    text.parse().map_err(|_| malformed)
}

/// Which side of `now` a scheme's tolerance applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Too old and too new are both refused.
    Both,
    /// Only too old is refused (Stripe's libraries accept future timestamps).
    PastOnly,
}

/// A timestamp exactly `tolerance_s` away is still accepted, as in the
/// providers' own libraries.
pub(crate) fn check_tolerance(
    ts: i64,
    now: i64,
    tolerance_s: i64,
    window: Window,
) -> Result<(), Failure> {
    let too_old = now.saturating_sub(ts) > tolerance_s;
    let too_new = window == Window::Both && ts.saturating_sub(now) > tolerance_s;
    if too_old || too_new {
        Err(Failure::new(Reason::TimestampOutOfTolerance, None))
    } else {
        Ok(())
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<Hmac<sha2::Sha256>> {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac)
}

/// Constant-time check of a MAC against claimed bytes; a truncated or empty
/// claim never matches.
pub(crate) fn mac_matches<M: Mac + Clone>(mac: &M, claimed: &[u8]) -> bool {
    !claimed.is_empty() && mac.clone().verify_slice(claimed).is_ok()
}

/// Any MAC (`M` is `Hmac<Sha1>`, `Hmac<Sha256>`, ...) over the concatenation
/// of `parts`.
pub(crate) fn mac_over<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<M> {
    let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac)
}

/// Whether any of `keys` signs `parts` to any of the `claimed` MACs. Every
/// comparison is constant-time; which key matched is not secret.
pub(crate) fn any_key_matches<M: Mac + KeyInit + Clone>(
    keys: &[&[u8]],
    parts: &[&[u8]],
    claimed: &[Vec<u8>],
) -> bool {
    keys.iter().any(|key| {
        mac_over::<M>(key, parts).is_some_and(|mac| claimed.iter().any(|c| mac_matches(&mac, c)))
    })
}

/// The MAC of `parts` as bytes, for the `sign` helpers.
pub(crate) fn mac_bytes<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    mac_over::<M>(key, parts)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default()
}

/// Lower-case hex only: providers send it that way, and accepting other
/// spellings is how some libraries came to disagree with each other.
pub(crate) fn lower_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(text).ok()
}

/// Constant-time equality of two byte strings of any length: both are
/// hashed first, so neither the content nor the length of a configured
/// token leaks through timing.
pub(crate) fn ct_eq_any_len(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// A secret used as its UTF-8 text (every scheme except Standard Webhooks
/// and the public-key ones). Surrounding whitespace is refused rather than
/// trimmed: it changes the key, and is nearly always a pasted newline.
pub fn text_secret(text: &str) -> Result<Vec<u8>, &'static str> {
    if text.is_empty() {
        Err("is empty")
    } else if text.trim() != text {
        Err("has leading or trailing whitespace (a newline from a file?)")
    } else {
        Ok(text.as_bytes().to_vec())
    }
}

/// A JSON value as event metadata: strings as they are, integers in
/// decimal (Discord's interaction `type` is a number), anything else none.
pub(crate) fn json_scalar(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The event fields providers put in a JSON body, read in one pass that
/// skips everything else. All empty when the body is not a JSON object.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct BodyMeta {
    pub id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub kind: Option<serde_json::Value>,
    pub event_id: Option<serde_json::Value>,
    pub event_type: Option<serde_json::Value>,
    /// Slack's and PagerDuty's nested event object.
    pub event: Option<serde_json::Value>,
}

impl BodyMeta {
    pub fn parse(body: &[u8]) -> BodyMeta {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// A field of the nested `event` object.
    pub fn event_field(&self, name: &str) -> Option<String> {
        json_scalar(self.event.as_ref()?.get(name).cloned())
    }
}

/// The top-level `"type"` of a JSON body, when there is one.
pub(crate) fn json_type_field(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<TypeOnly>(body).ok()?.kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_plain_digits_only() {
        assert_eq!(parse_unix_seconds("1614265330", "t"), Ok(1614265330));
        for bad in [
            "",
            "+1614265330",
            "-5",
            "1614265330.0",
            " 1",
            "1614265330abc",
            "99999999999999",
        ] {
            assert_eq!(
                parse_unix_seconds(bad, "t").unwrap_err().reason,
                Reason::MalformedHeader,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tolerance_boundary_is_inclusive_and_window_sided() {
        assert!(check_tolerance(700, 1000, 300, Window::Both).is_ok());
        assert!(check_tolerance(699, 1000, 300, Window::Both).is_err());
        assert!(check_tolerance(1300, 1000, 300, Window::Both).is_ok());
        assert!(check_tolerance(1301, 1000, 300, Window::Both).is_err());
        assert!(check_tolerance(999_999, 1000, 300, Window::PastOnly).is_ok());
        assert!(check_tolerance(i64::MIN, i64::MAX, 300, Window::Both).is_err());
    }

    #[test]
    fn expired_secrets_are_not_active() {
        let s = Secrets::new(vec![
            Secret::new(b"old".to_vec(), Some(100)),
            Secret::new(b"new".to_vec(), None),
        ]);
        assert_eq!(s.active(100).unwrap(), vec![&b"old"[..], &b"new"[..]]);
        assert_eq!(s.active(101).unwrap(), vec![&b"new"[..]]);
        let only_old = Secrets::new(vec![Secret::new(b"old".to_vec(), Some(100))]);
        assert_eq!(
            only_old.active(101).unwrap_err().reason,
            Reason::NoActiveSecret
        );
    }

    #[test]
    fn shared_parsers_are_strict() {
        assert_eq!(lower_hex("00ff"), Some(vec![0, 255]));
        for bad in ["", "0", "00FF", "0x00", "zz"] {
            assert_eq!(lower_hex(bad), None, "{bad:?}");
        }
        assert_eq!(text_secret("s3cret").unwrap(), b"s3cret");
        assert!(
            text_secret("").is_err()
                && text_secret("s3cret\n").is_err()
                && text_secret(" s").is_err()
        );
        assert!(ct_eq_any_len(b"token", b"token"));
        assert!(!ct_eq_any_len(b"token", b"toke") && !ct_eq_any_len(b"", b"x"));
        assert_eq!(json_scalar(Some(serde_json::json!(1))), Some("1".into()));
        assert_eq!(json_scalar(Some(serde_json::json!("a"))), Some("a".into()));
        assert_eq!(json_scalar(Some(serde_json::json!({"a": 1}))), None);
        assert_eq!(json_scalar(Some(serde_json::json!(""))), None);
        let meta = BodyMeta::parse(br#"{"id":"evt_1","event":{"type":"message"},"data":[1,2]}"#);
        assert_eq!(
            (json_scalar(meta.id.clone()), meta.event_field("type")),
            (Some("evt_1".into()), Some("message".into()))
        );
        assert!(BodyMeta::parse(b"token=a&b=c").id.is_none());
    }

    #[test]
    fn the_target_prefers_the_forwarded_scheme() {
        let h = Headers::new(
            [
                (":scheme", "http"),
                ("x-forwarded-proto", "HTTPS, http"),
                (":authority", "a.com:8443"),
                (":path", "/x?y=1"),
            ]
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        let t = RequestTarget::from_headers(&h);
        assert_eq!(
            t,
            RequestTarget {
                scheme: Some("https"),
                authority: "a.com:8443",
                path_and_query: "/x?y=1"
            }
        );
        let h = Headers::new([
            (":scheme".to_string(), b"gopher".to_vec()),
            (":path".to_string(), vec![0xff]),
        ]);
        assert_eq!(RequestTarget::from_headers(&h), RequestTarget::default());
    }

    #[test]
    fn secret_debug_never_shows_the_key() {
        let s = Secret::new(b"hunter2".to_vec(), None);
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
