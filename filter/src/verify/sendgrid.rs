//! SendGrid Event Webhook: ECDSA P-256 / SHA-256 over `timestamp + body`,
//! the signature base64 DER in `X-Twilio-Email-Event-Webhook-Signature`, the
//! timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`. The "secret" is the
//! verification public key, base64 DER (SubjectPublicKeyInfo) as SendGrid
//! shows it, or the same wrapped in PEM armour.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::MultipartVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::{
    Failure, Secrets, SignedRequest, Verified, Window, check_tolerance, parse_unix_seconds,
    required_text,
};
use crate::reply::Reason;

const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

#[derive(Debug, Clone)]
pub struct Sendgrid {
    /// Each secret's bytes are a public key, DER.
    pub secrets: Secrets,
    /// SendGrid's libraries check no age; a source may opt in.
    pub tolerance_s: Option<i64>,
}

/// Decodes and checks a configured public key; the bytes kept are the DER.
pub fn decode_public_key(text: &str) -> Result<Vec<u8>, &'static str> {
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| "is not base64 (expected the verification key as base64 DER)")?;
    VerifyingKey::from_public_key_der(&der)
        .map_err(|_| "is not a P-256 public key (SubjectPublicKeyInfo DER)")?;
    Ok(der)
}

impl Sendgrid {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let sig_text = required_text(req.headers, SIGNATURE)?;
        let ts_text = required_text(req.headers, TIMESTAMP)?;
        let ts = parse_unix_seconds(ts_text, TIMESTAMP)?;
        if let Some(tolerance) = self.tolerance_s {
            check_tolerance(ts, req.now_unix_s, tolerance, Window::Both)?;
        }
        let signature = STANDARD
            .decode(sig_text)
            .ok()
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or(Failure::new(Reason::MalformedHeader, Some(SIGNATURE)))?;
        let keys = self.secrets.active(req.now_unix_s)?;
        let ok = keys.iter().any(|der| {
            VerifyingKey::from_public_key_der(der).is_ok_and(|key| {
                key.multipart_verify(&[ts_text.as_bytes(), req.body], &signature)
                    .is_ok()
            })
        });
        if !ok {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        // A delivery batches many events, each with its own sg_event_id:
        // there is no single id or type for the request.
        Ok(Verified::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

    fn scheme(tolerance_s: Option<i64>) -> Sendgrid {
        Sendgrid {
            secrets: Secrets::new(vec![Secret::new(decode_public_key(KEY).unwrap(), None)]),
            tolerance_s,
        }
    }

    fn check(s: &Sendgrid, sig: &str, ts: &str, now: i64) -> Result<Verified, Failure> {
        let h = Headers::new(
            [(SIGNATURE, sig), (TIMESTAMP, ts)]
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, b"x", now))
    }

    #[test]
    fn keys_may_be_pem_and_junk_is_refused() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &KEY[..40],
            &KEY[40..]
        );
        assert_eq!(
            decode_public_key(&pem).unwrap(),
            decode_public_key(KEY).unwrap()
        );
        assert!(decode_public_key("bm90IGEga2V5").is_err());
        assert!(decode_public_key("!!").is_err());
    }

    #[test]
    fn malformed_signatures_and_optional_tolerance() {
        let s = scheme(None);
        assert_eq!(
            check(&s, "AAAA", "1", 1).unwrap_err().reason,
            Reason::MalformedHeader
        );
        assert_eq!(
            check(&s, "!", "1", 1).unwrap_err().reason,
            Reason::MalformedHeader
        );
        assert_eq!(
            check(&s, "AAAA", "1.5", 1).unwrap_err().reason,
            Reason::MalformedHeader
        );
        let e = check(&scheme(Some(60)), "AAAA", "1", 1000).unwrap_err();
        assert_eq!(e.reason, Reason::TimestampOutOfTolerance);
    }
}
