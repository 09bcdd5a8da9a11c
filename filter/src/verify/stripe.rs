//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256
//! of `"{t}.{body}"` keyed with the `whsec_...` secret's text as is (not
//! base64-decoded, unlike Standard Webhooks). Only stale timestamps are
//! refused, as in Stripe's SDKs; event id and type come from the body.

use hmac::Hmac;
use sha2::Sha256;

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, Window, any_key_matches, check_tolerance,
    json_scalar, lower_hex, mac_bytes, parse_unix_seconds, require_body, required_text,
};
use crate::reply::Reason;

const HEADER: &str = "stripe-signature";
pub const DEFAULT_TOLERANCE_S: i64 = 300;

#[derive(Debug, Clone)]
pub struct Stripe {
    pub secrets: Secrets,
    pub tolerance_s: i64,
}

/// `t` and the `v1` signatures of a header; other schemes (`v0`) are
/// ignored, and items without `=` are skipped as stripe-node does.
fn parse_header(value: &str) -> Result<(&str, Vec<Vec<u8>>), Failure> {
    let malformed = Failure::new(Reason::MalformedHeader, Some(HEADER));
    let mut t = None;
    let mut v1 = Vec::new();
    for (key, val) in value.split(',').filter_map(|item| item.split_once('=')) {
        match key {
            // Two timestamps would make "which one was signed" ambiguous.
            "t" if t.is_some() => return Err(malformed),
            "t" => t = Some(val),
            "v1" => v1.extend(lower_hex(val)),
            _ => {}
        }
    }
    Ok((t.ok_or(malformed)?, v1))
}

impl Stripe {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        let (t, claimed) = parse_header(value)?;
        let ts = parse_unix_seconds(t, HEADER)?;
        require_body(req.body)?;
        check_tolerance(ts, req.now_unix_s, self.tolerance_s, Window::PastOnly)?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(&keys, &[t.as_bytes(), b".", req.body], &claimed) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let meta = BodyMeta::parse(req.body);
        Ok(Verified {
            provider_event_id: json_scalar(meta.id),
            event_type: json_scalar(meta.kind),
        })
    }
}

/// The `Stripe-Signature` value Stripe would send (`generateTestHeaderString`).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    format!(
        "t={t},v1={}",
        hex::encode(mac_bytes::<Hmac<Sha256>>(
            secret,
            &[t.as_bytes(), b".", body]
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn check(header: &str, body: &[u8], now: i64) -> Result<Verified, Failure> {
        let s = Stripe {
            secrets: Secrets::new(vec![Secret::new(b"whsec_test_secret".to_vec(), None)]),
            tolerance_s: DEFAULT_TOLERANCE_S,
        };
        let h = Headers::new([(HEADER.to_string(), header.as_bytes().to_vec())]);
        s.verify(&SignedRequest::new(&h, body, now))
    }

    #[test]
    fn verifies_with_extra_entries_and_reads_the_body() {
        let sig = sign(b"whsec_test_secret", 1000, BODY);
        let v = check(&format!("{sig},v1=potato,v0=abcd,x"), BODY, 1000).unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("evt_1"));
        assert_eq!(v.event_type.as_deref(), Some("invoice.paid"));
    }

    #[test]
    fn only_stale_timestamps_are_refused() {
        let sig = sign(b"whsec_test_secret", 1000, BODY);
        assert!(check(&sig, BODY, 1300).is_ok());
        assert_eq!(
            check(&sig, BODY, 1301).unwrap_err().reason,
            Reason::TimestampOutOfTolerance
        );
        assert!(check(&sig, BODY, 0).is_ok());
    }

    #[test]
    fn malformed_headers() {
        for bad in [
            "t=,v1=00",
            "t,v1=,v0=",
            "t,,",
            ",,",
            "t",
            "t=1,t=1,v1=00",
            "t=+1,v1=00",
        ] {
            assert_eq!(
                check(bad, BODY, 1).unwrap_err().reason,
                Reason::MalformedHeader,
                "{bad}"
            );
        }
        assert_eq!(
            check("t=1,v0=00", BODY, 1).unwrap_err().reason,
            Reason::SignatureMismatch
        );
        let sig = sign(b"whsec_test_secret", 1000, b"");
        assert_eq!(
            check(&sig, b"", 1000).unwrap_err().reason,
            Reason::BodyRequired
        );
    }
}
