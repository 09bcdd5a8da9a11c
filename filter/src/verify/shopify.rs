//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the raw body
//! keyed with the app's client secret text. No timestamp: replays are
//! caught downstream by deduplicating on `X-Shopify-Webhook-Id`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::Hmac;
use sha2::Sha256;

use super::{
    Failure, Secrets, SignedRequest, Verified, any_key_matches, mac_bytes, optional_text,
    require_body, required_text,
};
use crate::reply::Reason;

const HEADER: &str = "x-shopify-hmac-sha256";

#[derive(Debug, Clone)]
pub struct Shopify {
    pub secrets: Secrets,
}

impl Shopify {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        let claimed = STANDARD
            .decode(value)
            .map_err(|_| Failure::new(Reason::MalformedHeader, Some(HEADER)))?;
        // shopify-api-php refuses an empty body before computing anything.
        require_body(req.body)?;
        let keys = self.secrets.active(req.now_unix_s)?;
        if !any_key_matches::<Hmac<Sha256>>(&keys, &[req.body], &[claimed]) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        // The topic and shop headers are metadata, not required: the HMAC
        // is what proves the sender (the libraries that also demand them
        // disagree with an HMAC-only check; both are safe).
        Ok(Verified {
            provider_event_id: optional_text(req.headers, "x-shopify-webhook-id")?
                .map(str::to_string),
            event_type: optional_text(req.headers, "x-shopify-topic")?.map(str::to_string),
        })
    }
}

/// The `X-Shopify-Hmac-Sha256` value Shopify would send.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    STANDARD.encode(mac_bytes::<Hmac<Sha256>>(secret, &[body]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    #[test]
    fn official_vector_and_metadata() {
        assert_eq!(
            sign(b"steffi", br#"{"foo":"bar"}"#),
            "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo="
        );
        let s = Shopify {
            secrets: Secrets::new(vec![Secret::new(b"steffi".to_vec(), None)]),
        };
        let h = Headers::new(
            [
                (HEADER, "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo="),
                ("X-Shopify-Webhook-Id", "b54557e4"),
                ("X-Shopify-Topic", "orders/create"),
            ]
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        let v = s
            .verify(&SignedRequest::new(&h, br#"{"foo":"bar"}"#, 0))
            .unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("b54557e4"));
        assert_eq!(v.event_type.as_deref(), Some("orders/create"));
        assert_eq!(
            s.verify(&SignedRequest::new(&h, b"", 0))
                .unwrap_err()
                .reason,
            Reason::BodyRequired
        );
    }
}
