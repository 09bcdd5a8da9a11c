//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 keyed with the Auth
//! Token over the URL Twilio called followed by the POST parameters (names
//! sorted, each name's distinct values sorted, `name + value`, URL-decoded).
//! JSON requests instead carry `bodySHA256=<hex>` in the query: the URL alone
//! is signed and the body must hash to that value.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::Hmac;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::url::{SignedUrl, port_variants};
use super::{
    Failure, Secrets, SignedRequest, Verified, any_key_matches, mac_bytes, optional_text,
    required_text,
};
use crate::reply::Reason;

const HEADER: &str = "x-twilio-signature";

#[derive(Debug, Clone)]
pub struct Twilio {
    pub secrets: Secrets,
    pub url: SignedUrl,
}

impl Twilio {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, HEADER)?;
        let claimed = STANDARD
            .decode(value)
            .map_err(|_| Failure::new(Reason::MalformedHeader, Some(HEADER)))?;
        let url = self
            .url
            .for_request(&req.target)
            .ok_or(Failure::new(Reason::MissingHeader, Some(":authority")))?;
        let mismatch = Failure::new(Reason::SignatureMismatch, None);

        let params = match body_hash_param(&url) {
            // The query is what Twilio signed; the body is bound by its hash.
            Some(claimed_hash) => {
                if claimed_hash != hex::encode(Sha256::digest(req.body)).into_bytes() {
                    return Err(mismatch);
                }
                Vec::new()
            }
            None if is_form(req) || req.body.is_empty() => canonical_params(req.body),
            // A JSON (or other) body without bodySHA256 would be unsigned.
            None => return Err(mismatch),
        };

        let keys = self.secrets.active(req.now_unix_s)?;
        let claimed = [claimed];
        // The SDKs accept the URL with and without the default port, since
        // proxies add or drop it; the WHATWG re-encoding twilio-node also
        // tries (e.g. ' as %27) is not attempted.
        let ok = port_variants(&url)
            .iter()
            .any(|u| any_key_matches::<Hmac<Sha1>>(&keys, &[u.as_bytes(), &params], &claimed));
        if !ok {
            return Err(mismatch);
        }
        Ok(Verified {
            provider_event_id: optional_text(req.headers, "i-twilio-idempotency-token")?
                .map(str::to_string),
            event_type: None,
        })
    }
}

/// `application/x-www-form-urlencoded`, or no content type at all.
fn is_form(req: &SignedRequest<'_>) -> bool {
    match req.headers.get("content-type") {
        None => true,
        Some(v) => {
            let media = v.split(|b| *b == b';').next().unwrap_or(v);
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        }
    }
}

/// The decoded `bodySHA256` query parameter of `url`, if any.
fn body_hash_param(url: &str) -> Option<Vec<u8>> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or(query);
    form_pairs(query.as_bytes())
        .find(|(name, _)| name == b"bodySHA256")
        .map(|(_, value)| value)
}

/// The `name=value` pairs of a form or query string, decoded. Empty
/// segments (`a=1&&b=2`) are skipped; a segment without `=` has an empty
/// value, as the frameworks Twilio's SDKs sit behind parse it.
fn form_pairs(text: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    text.split(|b| *b == b'&')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let mut kv = segment.splitn(2, |b| *b == b'=');
            let name = kv.next().unwrap_or_default();
            let value = kv.next().unwrap_or_default();
            (form_decode(name), form_decode(value))
        })
}

/// `+` is a space and `%XX` a byte; a `%` not followed by two hex digits is
/// kept as is, like Python's `unquote_plus`.
fn form_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let escaped = match (b, input.get(i + 1), input.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Names in byte order (`Sid` < `SidAccount`), each name's values
/// deduplicated and sorted, concatenated as `name + value`.
fn canonical_params(body: &[u8]) -> Vec<u8> {
    let mut params: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (name, value) in form_pairs(body) {
        params.entry(name).or_default().insert(value);
    }
    let mut out = Vec::with_capacity(body.len());
    for (name, values) in &params {
        for value in values {
            out.extend_from_slice(name);
            out.extend_from_slice(value);
        }
    }
    out
}

/// The `X-Twilio-Signature` Twilio would send for `url` and a form body;
/// `None` for a JSON request, whose `url` must already hold `bodySHA256`.
pub fn sign(token: &[u8], url: &str, form_body: Option<&[u8]>) -> String {
    let params = form_body.map(canonical_params).unwrap_or_default();
    STANDARD.encode(mac_bytes::<Hmac<Sha1>>(token, &[url.as_bytes(), &params]))
}

/// The `bodySHA256` query value for a JSON body.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::{RequestTarget, Secret};

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const FORM: &[u8] =
        b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";

    fn scheme() -> Twilio {
        Twilio {
            secrets: Secrets::new(vec![Secret::new(b"12345".to_vec(), None)]),
            url: SignedUrl::FromRequest { scheme: None },
        }
    }

    fn check(
        s: &Twilio,
        authority: &str,
        scheme: &str,
        path: &str,
        sig: &str,
        ctype: &str,
        body: &[u8],
    ) -> Result<Verified, Failure> {
        let h = Headers::new(
            [
                (HEADER, sig),
                ("content-type", ctype),
                (":authority", authority),
                (":scheme", scheme),
                (":path", path),
            ]
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, body, 0))
    }

    const FORM_TYPE: &str = "application/x-www-form-urlencoded";

    #[test]
    fn official_form_vectors_and_port_variants() {
        assert_eq!(
            sign(b"12345", URL, Some(FORM)),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let s = scheme();
        let path = "/myapp.php?foo=1&bar=2";
        assert!(
            check(
                &s,
                "mycompany.com",
                "https",
                path,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                FORM_TYPE,
                FORM
            )
            .is_ok()
        );
        // Signed with :443 but received without it, and the reverse.
        assert!(
            check(
                &s,
                "mycompany.com",
                "https",
                path,
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
                FORM_TYPE,
                FORM
            )
            .is_ok()
        );
        assert!(
            check(
                &s,
                "mycompany.com:443",
                "https",
                path,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                FORM_TYPE,
                FORM
            )
            .is_ok()
        );
        assert!(
            check(
                &s,
                "mycompany.com",
                "http",
                path,
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
                FORM_TYPE,
                FORM
            )
            .is_ok()
        );
        // A changed query string fails.
        let e = check(
            &s,
            "mycompany.com",
            "https",
            "/myapp.php?foo=1&bar=2&somethingUnexpected=true",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            FORM_TYPE,
            FORM,
        );
        assert_eq!(e.unwrap_err().reason, Reason::SignatureMismatch);
    }

    #[test]
    fn json_bodies_are_bound_by_their_hash() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let path = format!("/myapp.php?bodySHA256={}", body_sha256_hex(body));
        let url = format!("https://mycompany.com{path}");
        let sig = sign(b"12345", &url, None);
        assert_eq!(sig, "y77kIzt2vzLz71DgmJGsen2scGs=");
        let s = scheme();
        assert!(
            check(
                &s,
                "mycompany.com",
                "https",
                &path,
                &sig,
                "application/json",
                body
            )
            .is_ok()
        );
        let e = check(
            &s,
            "mycompany.com",
            "https",
            &path,
            &sig,
            "application/json",
            b"{}",
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::SignatureMismatch);
        // Without bodySHA256 a JSON body is unsigned, so refused.
        let sig = sign(b"12345", "https://mycompany.com/myapp.php", None);
        let e = check(
            &s,
            "mycompany.com",
            "https",
            "/myapp.php",
            &sig,
            "application/json",
            body,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::SignatureMismatch);
    }

    #[test]
    fn configured_url_replaces_host_and_path() {
        let s = Twilio {
            url: SignedUrl::Configured("https://mycompany.com/myapp.php".into()),
            ..scheme()
        };
        let h = Headers::new(
            [
                (HEADER, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                ("content-type", FORM_TYPE),
            ]
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        let mut req = SignedRequest::new(&h, FORM, 0);
        req.target = RequestTarget {
            scheme: Some("http"),
            authority: "10.0.0.1:8080",
            path_and_query: "/internal?foo=1&bar=2",
        };
        assert!(s.verify(&req).is_ok());
    }

    #[test]
    fn params_are_decoded_deduplicated_and_byte_sorted() {
        assert_eq!(
            canonical_params(b"b=2&a=%2B1&a=%2B1&a=0+x&&c"),
            b"a+1a0 xb2c".to_vec()
        );
        assert_eq!(
            canonical_params(b"SidAccount=2&Sid=1"),
            b"Sid1SidAccount2".to_vec()
        );
        assert_eq!(form_decode(b"%zz%4"), b"%zz%4".to_vec());
    }
}
