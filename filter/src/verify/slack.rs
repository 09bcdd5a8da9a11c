//! Slack: `X-Slack-Signature: v0=<hex>` over `"v0:{timestamp}:{body}"` with
//! `X-Slack-Request-Timestamp`, HMAC-SHA256 keyed with the signing secret's
//! text, timestamps within ±300 s. Form bodies (slash commands,
//! interactivity) are hashed exactly as received.

use hmac::Hmac;
use sha2::Sha256;

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, Window, any_key_matches, check_tolerance,
    json_scalar, lower_hex, mac_bytes, parse_unix_seconds, required_text,
};
use crate::reply::Reason;

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";
pub const DEFAULT_TOLERANCE_S: i64 = 300;

#[derive(Debug, Clone)]
pub struct Slack {
    pub secrets: Secrets,
    pub tolerance_s: i64,
}

impl Slack {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let ts_text = required_text(req.headers, TIMESTAMP)?;
        let value = required_text(req.headers, SIGNATURE)?;
        let ts = parse_unix_seconds(ts_text, TIMESTAMP)?;
        // Both directions, as python-slack-sdk; bolt-js refuses only stale
        // ones. A clock 5 minutes ahead is no more plausible than behind.
        check_tolerance(ts, req.now_unix_s, self.tolerance_s, Window::Both)?;
        // `v0` is the only version; bolt-js refuses any other.
        let claimed = value
            .strip_prefix("v0=")
            .and_then(lower_hex)
            .ok_or(Failure::new(Reason::MalformedHeader, Some(SIGNATURE)))?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(
            &keys,
            &[b"v0:", ts_text.as_bytes(), b":", req.body],
            &[claimed],
        ) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        // Events API bodies are JSON: the event's own type is the useful
        // one (`message`), else the envelope's (`url_verification`).
        let meta = BodyMeta::parse(req.body);
        let event_type = meta.event_field("type").or_else(|| json_scalar(meta.kind));
        Ok(Verified {
            provider_event_id: json_scalar(meta.event_id),
            event_type,
        })
    }
}

/// The `X-Slack-Signature` value Slack would send.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "v0={}",
        hex::encode(mac_bytes::<Hmac<Sha256>>(
            secret,
            &[b"v0:", ts.as_bytes(), b":", body]
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn check(ts: &str, sig: &str, body: &[u8], now: i64) -> Result<Verified, Failure> {
        let s = Slack {
            secrets: Secrets::new(vec![Secret::new(
                b"8f742231b10e8888abcd99yyyzzz85a5".to_vec(),
                None,
            )]),
            tolerance_s: DEFAULT_TOLERANCE_S,
        };
        let h = Headers::new([
            (TIMESTAMP.to_string(), ts.as_bytes().to_vec()),
            (SIGNATURE.to_string(), sig.as_bytes().to_vec()),
        ]);
        s.verify(&SignedRequest::new(&h, body, now))
    }

    #[test]
    fn event_type_prefers_the_inner_event() {
        let key = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#;
        let v = check("1000", &sign(key, 1000, body), body, 1000).unwrap();
        assert_eq!(
            (v.provider_event_id.as_deref(), v.event_type.as_deref()),
            (Some("Ev1"), Some("message"))
        );
        let body = br#"{"type":"url_verification","challenge":"x"}"#;
        let v = check("1000", &sign(key, 1000, body), body, 1000).unwrap();
        assert_eq!(v.event_type.as_deref(), Some("url_verification"));
        let body = b"token=x&command=%2Fhi";
        let v = check("1000", &sign(key, 1000, body), body, 1000).unwrap();
        assert_eq!(v, Verified::default());
    }

    #[test]
    fn future_timestamps_are_refused_and_versions_checked() {
        let key = b"8f742231b10e8888abcd99yyyzzz85a5";
        let sig = sign(key, 1000, b"x");
        assert_eq!(
            check("1000", &sig, b"x", 699).unwrap_err().reason,
            Reason::TimestampOutOfTolerance
        );
        let v1 = sig.replace("v0=", "v1=");
        assert_eq!(
            check("1000", &v1, b"x", 1000).unwrap_err().reason,
            Reason::MalformedHeader
        );
    }
}
