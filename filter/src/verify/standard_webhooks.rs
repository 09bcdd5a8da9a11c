//! Standard Webhooks (and Svix, which sends the same scheme under `svix-*`
//! header names): HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, base64, in a
//! space-separated list of `v1,<sig>` entries; `whsec_` secrets are base64.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use super::{
    Failure, Secrets, SignedRequest, Verified, Window, check_tolerance, hmac_sha256,
    json_type_field, mac_matches, parse_unix_seconds, required_text,
};
use crate::reply::Reason;

pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// The header names of one flavour of the scheme.
struct HeaderSet {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: HeaderSet = HeaderSet {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

const SVIX: HeaderSet = HeaderSet {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    pub secrets: Secrets,
    pub tolerance_s: i64,
}

/// Decodes a `whsec_` secret (the prefix is optional). Padding is optional
/// too, as the Python library allows, and so are non-zero bits in the last
/// character (Python's decoder drops them; vector sw-27 depends on it). The
/// alphabet is the standard one. Leniency here only widens which spellings
/// of a key are accepted in configuration, never what a request must prove.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, &'static str> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    match LENIENT.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("is empty"),
        Err(_) => Err("is not base64 (expected whsec_ followed by standard base64)"),
    }
}

impl StandardWebhooks {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        // Svix's libraries prefer the svix-* set when both are present.
        let names = if req.headers.get(SVIX.id).is_some() {
            &SVIX
        } else {
            &WEBHOOK
        };
        let id = required_text(req.headers, names.id)?;
        let ts_text = required_text(req.headers, names.timestamp)?;
        let signatures = required_text(req.headers, names.signature)?;
        let ts = parse_unix_seconds(ts_text, names.timestamp)?;
        check_tolerance(ts, req.now_unix_s, self.tolerance_s, Window::Both)?;

        let claimed: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
            .collect();
        for key in self.secrets.active(req.now_unix_s)? {
            let Some(mac) = hmac_sha256(
                key,
                &[id.as_bytes(), b".", ts_text.as_bytes(), b".", req.body],
            ) else {
                continue;
            };
            if claimed.iter().any(|c| mac_matches(&mac, c)) {
                return Ok(Verified {
                    provider_event_id: Some(id.to_string()),
                    event_type: json_type_field(req.body),
                });
            }
        }
        Err(Failure::new(Reason::SignatureMismatch, None))
    }
}

/// Signs like a Standard Webhooks sender; used by tests and by `edgehook send`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    match hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]) {
        Some(mac) => {
            use hmac::Mac;
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn scheme(secret: &str) -> StandardWebhooks {
        StandardWebhooks {
            secrets: Secrets::new(vec![Secret::new(decode_secret(secret).unwrap(), None)]),
            tolerance_s: DEFAULT_TOLERANCE_S,
        }
    }

    fn check(
        s: &StandardWebhooks,
        headers: &[(&str, &str)],
        body: &str,
        now: i64,
    ) -> Result<Verified, Failure> {
        let h = Headers::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, body.as_bytes(), now))
    }

    #[test]
    fn sign_matches_the_official_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn reasons_are_specific() {
        let s = scheme("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let ok = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", sig),
        ];
        assert!(check(&s, &ok, body, 1614265330).is_ok());
        assert_eq!(
            check(&s, &ok, "{}", 1614265330).unwrap_err().reason,
            Reason::SignatureMismatch
        );
        assert_eq!(
            check(&s, &ok, body, 1614265330 + 301).unwrap_err().reason,
            Reason::TimestampOutOfTolerance
        );
        let missing = check(&s, &ok[..2], body, 1614265330).unwrap_err();
        assert_eq!(
            (missing.reason, missing.header),
            (Reason::MissingHeader, Some("webhook-signature"))
        );
        let truncated = [ok[0], ok[1], ("webhook-signature", "v1,g0hM9SsE")];
        assert_eq!(
            check(&s, &truncated, body, 1614265330).unwrap_err().reason,
            Reason::SignatureMismatch
        );
        let empty = [ok[0], ok[1], ("webhook-signature", "v1,")];
        assert_eq!(
            check(&s, &empty, body, 1614265330).unwrap_err().reason,
            Reason::SignatureMismatch
        );
    }

    #[test]
    fn event_type_comes_from_the_body() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"type":"invoice.paid","data":{}}"#;
        let sig = sign(&key, "msg_1", 1000, body.as_bytes());
        let v = check(
            &scheme("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            &[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", "1000"),
                ("webhook-signature", &sig),
            ],
            body,
            1000,
        )
        .unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("msg_1"));
        assert_eq!(v.event_type.as_deref(), Some("invoice.paid"));
    }

    #[test]
    fn secrets_must_be_base64_and_not_empty() {
        assert!(decode_secret("whsec_").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert_eq!(decode_secret("whsec_aGk=").unwrap(), b"hi");
        assert_eq!(decode_secret("aGk").unwrap(), b"hi");
        // sw-27: unpadded, with non-zero trailing bits in the last character.
        assert_eq!(
            decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS")
                .unwrap()
                .len(),
            23
        );
        assert!(decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-").is_err());
    }
}
