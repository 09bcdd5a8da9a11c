//! Discord interactions: Ed25519 over `timestamp + body`, the signature hex
//! in `X-Signature-Ed25519`, the timestamp in `X-Signature-Timestamp`. The
//! "secret" is the application's public key, 64 hex characters.

use ed25519_dalek::{Signature, VerifyingKey};

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, Window, check_tolerance, json_scalar,
    lower_hex, parse_unix_seconds, required_text,
};
use crate::reply::Reason;

const SIGNATURE: &str = "x-signature-ed25519";
const TIMESTAMP: &str = "x-signature-timestamp";

#[derive(Debug, Clone)]
pub struct Discord {
    /// Each secret's bytes are a 32-byte public key.
    pub secrets: Secrets,
    /// discord-interactions checks no age; a source may opt in.
    pub tolerance_s: Option<i64>,
}

fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    let array: &[u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(array)
        .ok()
        .filter(|k| !k.is_weak())
}

/// Decodes and checks a configured public key (hex, either case).
pub fn decode_public_key(text: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = hex::decode(text)
        .map_err(|_| "is not hex (expected the application's 64-character public key)")?;
    verifying_key(&bytes).ok_or("is not an Ed25519 public key (expected 64 hex characters)")?;
    Ok(bytes)
}

impl Discord {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let sig_text = required_text(req.headers, SIGNATURE)?;
        let ts_text = required_text(req.headers, TIMESTAMP)?;
        let ts = parse_unix_seconds(ts_text, TIMESTAMP)?;
        if let Some(tolerance) = self.tolerance_s {
            check_tolerance(ts, req.now_unix_s, tolerance, Window::Both)?;
        }
        let signature = lower_hex(sig_text)
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or(Failure::new(Reason::MalformedHeader, Some(SIGNATURE)))?;
        let mut message = Vec::with_capacity(ts_text.len().saturating_add(req.body.len()));
        message.extend_from_slice(ts_text.as_bytes());
        message.extend_from_slice(req.body);
        let keys = self.secrets.active(req.now_unix_s)?;
        // verify_strict also refuses malleable signatures and small-order
        // keys, which an honest signer never produces.
        let ok = keys.iter().any(|k| {
            verifying_key(k).is_some_and(|key| key.verify_strict(&message, &signature).is_ok())
        });
        if !ok {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let meta = BodyMeta::parse(req.body);
        Ok(Verified {
            provider_event_id: json_scalar(meta.id),
            event_type: json_scalar(meta.kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;
    use ed25519_dalek::{Signer, SigningKey};

    fn signing_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn check(
        sig: &str,
        ts: &str,
        body: &[u8],
        tolerance_s: Option<i64>,
        now: i64,
    ) -> Result<Verified, Failure> {
        let public = hex::encode(signing_key().verifying_key().as_bytes());
        let s = Discord {
            secrets: Secrets::new(vec![Secret::new(decode_public_key(&public).unwrap(), None)]),
            tolerance_s,
        };
        let h = Headers::new(
            [(SIGNATURE, sig), (TIMESTAMP, ts)]
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, body, now))
    }

    fn sign(ts: &str, body: &[u8]) -> String {
        hex::encode(
            signing_key()
                .sign(&[ts.as_bytes(), body].concat())
                .to_bytes(),
        )
    }

    #[test]
    fn a_signed_interaction_verifies_and_reports_its_type() {
        let body = br#"{"id":"123","type":1}"#;
        let v = check(&sign("1700000000", body), "1700000000", body, None, 0).unwrap();
        assert_eq!(
            (v.provider_event_id.as_deref(), v.event_type.as_deref()),
            (Some("123"), Some("1"))
        );
        let e = check(&sign("1700000000", body), "1700000001", body, None, 0).unwrap_err();
        assert_eq!(e.reason, Reason::SignatureMismatch);
        let e = check(&sign("1700000000", body), "1700000000", body, Some(300), 0).unwrap_err();
        assert_eq!(e.reason, Reason::TimestampOutOfTolerance);
        let e = check(
            &sign("1700000000", body)[..126],
            "1700000000",
            body,
            None,
            0,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::MalformedHeader);
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert!(decode_public_key("zz").is_err());
        assert!(decode_public_key(&"00".repeat(31)).is_err());
        // The identity point is a small-order (weak) key.
        assert!(decode_public_key(&format!("01{}", "00".repeat(31))).is_err());
    }
}
