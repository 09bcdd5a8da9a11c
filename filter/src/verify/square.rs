//! Square: `x-square-hmacsha256-signature: <base64>`, HMAC-SHA256 of the
//! subscription's notification URL followed by the raw body, keyed with the
//! signature key's text. The URL is configured: it must be exactly the one
//! registered with Square, whatever host or path the request arrived on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::Hmac;
use sha2::Sha256;

use super::{
    BodyMeta, Failure, Secrets, SignedRequest, Verified, any_key_matches, json_scalar, mac_bytes,
    require_body, required_text,
};
use crate::reply::Reason;

const HEADER: &str = "x-square-hmacsha256-signature";

#[derive(Debug, Clone)]
pub struct Square {
    pub secrets: Secrets,
    pub notification_url: String,
}

impl Square {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        let claimed = STANDARD
            .decode(value)
            .map_err(|_| Failure::new(Reason::MalformedHeader, Some(HEADER)))?;
        require_body(req.body)?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(
            &keys,
            &[self.notification_url.as_bytes(), req.body],
            &[claimed],
        ) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let meta = BodyMeta::parse(req.body);
        Ok(Verified {
            provider_event_id: json_scalar(meta.event_id),
            event_type: json_scalar(meta.kind),
        })
    }
}

/// The signature header value Square would send.
pub fn sign(key: &[u8], notification_url: &str, body: &[u8]) -> String {
    STANDARD.encode(mac_bytes::<Hmac<Sha256>>(
        key,
        &[notification_url.as_bytes(), body],
    ))
}
