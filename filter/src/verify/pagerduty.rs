//! PagerDuty (v3 webhooks): `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`,
//! HMAC-SHA256 of the raw body keyed with the secret's text (it looks like
//! base64 but is not decoded). Several `v1` entries appear during rotation.

use hmac::Hmac;
use sha2::Sha256;

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, any_key_matches, lower_hex, mac_bytes,
    require_body, required_text,
};
use crate::reply::Reason;

const HEADER: &str = "x-pagerduty-signature";

#[derive(Debug, Clone)]
pub struct Pagerduty {
    pub secrets: Secrets,
}

impl Pagerduty {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        // Entries that are not `v1=<hex>` are ignored, never an error.
        let claimed: Vec<Vec<u8>> = value
            .split(',')
            .filter_map(|entry| entry.trim().strip_prefix("v1="))
            .filter_map(lower_hex)
            .collect();
        require_body(req.body)?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(&keys, &[req.body], &claimed) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let meta = BodyMeta::parse(req.body);
        Ok(Verified {
            provider_event_id: meta.event_field("id"),
            event_type: meta.event_field("event_type"),
        })
    }
}

/// The signature header value PagerDuty would send with one key.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac_bytes::<Hmac<Sha256>>(secret, &[body]))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    #[test]
    fn any_v1_entry_may_match_and_the_event_is_read() {
        let s = Pagerduty {
            secrets: Secrets::new(vec![Secret::new(b"k".to_vec(), None)]),
        };
        let body = br#"{"event":{"id":"01BW","event_type":"incident.triggered"}}"#;
        let header = format!("v1={}, v2=zz,{}", "0".repeat(64), sign(b"k", body));
        let h = Headers::new([(HEADER.to_string(), header.into_bytes())]);
        let v = s.verify(&SignedRequest::new(&h, body, 0)).unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("01BW"));
        assert_eq!(v.event_type.as_deref(), Some("incident.triggered"));
    }
}
