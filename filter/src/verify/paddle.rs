//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>`, HMAC-SHA256 of
//! `"{ts}:{body}"` (a colon, not a dot) keyed with the secret's text. The
//! SDK allows only 5 s of age, and only checks the past side.

use hmac::Hmac;
use sha2::Sha256;

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, Window, any_key_matches, check_tolerance,
    json_scalar, lower_hex, mac_bytes, parse_unix_seconds, required_text,
};
use crate::reply::Reason;

const HEADER: &str = "paddle-signature";
pub const DEFAULT_TOLERANCE_S: i64 = 5;

#[derive(Debug, Clone)]
pub struct Paddle {
    pub secrets: Secrets,
    pub tolerance_s: i64,
}

/// `ts` and every `h1` of a header. paddle-node-sdk keeps only the last
/// `h1`; accepting any of them is a superset that is just as safe (each is
/// a full MAC under our key) and survives Paddle's rotation, when a
/// notification carries one `h1` per active secret.
fn parse_header(value: &str) -> Result<(&str, Vec<Vec<u8>>), Failure> {
    let malformed = Failure::new(Reason::MalformedHeader, Some(HEADER));
    let mut ts = None;
    let mut h1 = Vec::new();
    let mut any_h1 = false;
    for (key, val) in value.split(';').filter_map(|item| item.split_once('=')) {
        match key {
            "ts" if ts.is_some() => return Err(malformed),
            "ts" => ts = Some(val),
            "h1" => {
                any_h1 = true;
                h1.extend(lower_hex(val));
            }
            _ => {}
        }
    }
    match ts {
        Some(ts) if any_h1 => Ok((ts, h1)),
        _ => Err(malformed),
    }
}

impl Paddle {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        let (ts_text, claimed) = parse_header(value)?;
        let ts = parse_unix_seconds(ts_text, HEADER)?;
        check_tolerance(ts, req.now_unix_s, self.tolerance_s, Window::PastOnly)?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(&keys, &[ts_text.as_bytes(), b":", req.body], &claimed)
        {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let meta = BodyMeta::parse(req.body);
        Ok(Verified {
            provider_event_id: json_scalar(meta.event_id),
            event_type: json_scalar(meta.event_type),
        })
    }
}

/// The `Paddle-Signature` value Paddle would send.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "ts={ts};h1={}",
        hex::encode(mac_bytes::<Hmac<Sha256>>(
            secret,
            &[ts.as_bytes(), b":", body]
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn check(header: &str, body: &[u8], now: i64) -> Result<Verified, Failure> {
        let s = Paddle {
            secrets: Secrets::new(vec![Secret::new(b"VALID_SECRET".to_vec(), None)]),
            tolerance_s: DEFAULT_TOLERANCE_S,
        };
        let h = Headers::new([(HEADER.to_string(), header.as_bytes().to_vec())]);
        s.verify(&SignedRequest::new(&h, body, now))
    }

    #[test]
    fn official_vector_boundary_and_metadata() {
        let body = br#"{"data": ["1", "2"]}"#;
        let sig = sign(b"VALID_SECRET", 1698796800, body);
        assert_eq!(
            sig,
            "ts=1698796800;h1=a300428748dce5c70e4da19bffd60769591ea969c99dea3105d0ec9612cf43f9"
        );
        assert!(check(&sig, body, 1698796805).is_ok());
        assert_eq!(
            check(&sig, body, 1698796806).unwrap_err().reason,
            Reason::TimestampOutOfTolerance
        );
        let body = br#"{"event_id":"evt_01","event_type":"transaction.completed"}"#;
        let v = check(
            &format!("{};h1=00;h2=ff", sign(b"VALID_SECRET", 9, body)),
            body,
            9,
        )
        .unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("evt_01"));
        assert_eq!(v.event_type.as_deref(), Some("transaction.completed"));
    }

    #[test]
    fn missing_parts_are_malformed() {
        for bad in [
            "invalid_header",
            "ts=1",
            "h1=00",
            "ts=1;ts=1;h1=00",
            "ts=x;h1=00",
        ] {
            assert_eq!(
                check(bad, b"{}", 1).unwrap_err().reason,
                Reason::MalformedHeader,
                "{bad}"
            );
        }
    }
}
