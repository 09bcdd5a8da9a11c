//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body
//! keyed with the webhook secret's text. The legacy SHA-1 header is read only
//! when the source opts in, and never when the SHA-256 one is present.

use hmac::Hmac;
use sha1::Sha1;
use sha2::Sha256;

use super::{
    Failure, Secrets, SignedRequest, Verified, any_key_matches, lower_hex, mac_bytes,
    optional_text, required_text,
};
use crate::reply::Reason;

const SHA256_HEADER: &str = "x-hub-signature-256";
const SHA1_HEADER: &str = "x-hub-signature";

#[derive(Debug, Clone)]
pub struct Github {
    pub secrets: Secrets,
    /// Accept `X-Hub-Signature: sha1=...` when no SHA-256 header came.
    pub allow_sha1: bool,
}

impl Github {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let use_sha1 = self.allow_sha1
            && req.headers.get(SHA256_HEADER).is_none()
            && req.headers.get(SHA1_HEADER).is_some();
        let (header, prefix) = if use_sha1 {
            (SHA1_HEADER, "sha1=")
        } else {
            (SHA256_HEADER, "sha256=")
        };
        let value = required_text(req.headers, header)?;
        // Strict like octokit's Node verify(): the prefix and lower-case hex
        // are required (its web build's looser parsing is a known divergence).
        let claimed = value
            .strip_prefix(prefix)
            .and_then(lower_hex)
            .ok_or(Failure::new(Reason::MalformedHeader, Some(header)))?;
        let keys = self.secrets.active(req.now_unix_s)?;
        let parts: &[&[u8]] = &[req.body];
        let claimed = [claimed];
        let ok = if use_sha1 {
            any_key_matches::<Hmac<Sha1>>(&keys, parts, &claimed)
        } else {
            any_key_matches::<Hmac<Sha256>>(&keys, parts, &claimed)
        };
        if !ok {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        Ok(Verified {
            provider_event_id: optional_text(req.headers, "x-github-delivery")?.map(str::to_string),
            event_type: optional_text(req.headers, "x-github-event")?.map(str::to_string),
        })
    }
}

/// The `X-Hub-Signature-256` value GitHub would send.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac_bytes::<Hmac<Sha256>>(secret, &[body]))
    )
}

/// The legacy `X-Hub-Signature` value.
pub fn sign_sha1(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha1={}",
        hex::encode(mac_bytes::<Hmac<Sha1>>(secret, &[body]))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn scheme(allow_sha1: bool) -> Github {
        Github {
            secrets: Secrets::new(vec![Secret::new(
                b"It's a Secret to Everybody".to_vec(),
                None,
            )]),
            allow_sha1,
        }
    }

    fn check(s: &Github, headers: &[(&str, &str)], body: &[u8]) -> Result<Verified, Failure> {
        let h = Headers::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, body, 0))
    }

    #[test]
    fn docs_vector_and_metadata() {
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let v = check(
            &scheme(false),
            &[
                (SHA256_HEADER, &sig),
                ("X-GitHub-Delivery", "72d3162e"),
                ("X-GitHub-Event", "push"),
            ],
            b"Hello, World!",
        )
        .unwrap();
        assert_eq!(v.provider_event_id.as_deref(), Some("72d3162e"));
        assert_eq!(v.event_type.as_deref(), Some("push"));
    }

    #[test]
    fn sha1_only_when_allowed_and_never_as_a_downgrade() {
        let body = b"Hello, World!";
        let sha1 = sign_sha1(b"It's a Secret to Everybody", body);
        let e = check(&scheme(false), &[(SHA1_HEADER, &sha1)], body).unwrap_err();
        assert_eq!(
            (e.reason, e.header),
            (Reason::MissingHeader, Some(SHA256_HEADER))
        );
        assert!(check(&scheme(true), &[(SHA1_HEADER, &sha1)], body).is_ok());
        // With both headers, a forged SHA-256 is not rescued by a good SHA-1.
        let bad256 = format!("sha256={}", "0".repeat(64));
        assert!(
            check(
                &scheme(true),
                &[(SHA1_HEADER, &sha1), (SHA256_HEADER, &bad256)],
                body
            )
            .is_err()
        );
    }

    #[test]
    fn bare_or_upper_case_hex_is_malformed() {
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        for bad in [
            sig.trim_start_matches("sha256=").to_string(),
            sig.to_uppercase(),
            "sha256=".into(),
        ] {
            let e = check(&scheme(false), &[(SHA256_HEADER, &bad)], b"Hello, World!").unwrap_err();
            assert_eq!(e.reason, Reason::MalformedHeader, "{bad}");
        }
    }
}
