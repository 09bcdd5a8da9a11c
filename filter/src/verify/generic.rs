//! The generic HMAC scheme (`"scheme": "hmac"`), for providers without a
//! dedicated module: one signature header, an HMAC (SHA-1/256/512) of a
//! configured template over the body and optionally a timestamp, id and URL
//! header, hex or base64, with an optional prefix such as `sha256=`.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::Hmac;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::url::{SignedUrl, port_variants};
use super::{
    Failure, Secrets, SignedRequest, Verified, Window, any_key_matches, check_tolerance, mac_bytes,
    optional_text, parse_unix_seconds, required_text,
};
use crate::reply::Reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Either case: the bytes compared are the same.
    Hex,
    /// Standard alphabet, canonical padding.
    Base64,
    /// URL-safe alphabet, padding optional (it is usually left off).
    Base64Url,
}

/// One piece of the signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Body,
    Timestamp,
    Id,
    Url,
}

/// The timestamp header and how far from now it may be (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampCheck {
    pub header: &'static str,
    pub tolerance_s: i64,
}

#[derive(Debug, Clone)]
pub struct GenericHmac {
    pub secrets: Secrets,
    pub header: &'static str,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Required before the encoded MAC, e.g. `sha256=`; may be empty.
    pub prefix: String,
    pub timestamp: Option<TimestampCheck>,
    pub id_header: Option<&'static str>,
    pub event_type_header: Option<&'static str>,
    pub signed_content: Vec<Part>,
    /// Used only when `signed_content` has `{url}`.
    pub url: SignedUrl,
}

/// Parses a template such as `{timestamp}.{body}`. `{` always opens a
/// placeholder; `{body}` must appear, or the payload would go unsigned.
pub fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            parts.push(Part::Literal(rest.to_string()));
            break;
        };
        let (literal, after) = rest.split_at(open);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.to_string()));
        }
        let Some((name, tail)) = after.strip_prefix('{').and_then(|a| a.split_once('}')) else {
            return Err("has a '{' without a closing '}'".to_string());
        };
        parts.push(match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            "url" => Part::Url,
            other => {
                return Err(format!(
                    "has an unknown placeholder {{{other}}} (known: {{body}} {{timestamp}} {{id}} {{url}})"
                ));
            }
        });
        rest = tail;
    }
    if !parts.contains(&Part::Body) {
        return Err("must contain {body}".to_string());
    }
    Ok(parts)
}

const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Encoding {
    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Hex => hex::decode(text).ok(),
            Encoding::Base64 => STANDARD.decode(text).ok(),
            Encoding::Base64Url => BASE64URL.decode(text).ok(),
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => STANDARD.encode(bytes),
            Encoding::Base64Url => BASE64URL.encode(bytes),
        }
    }
}

impl Algorithm {
    fn matches(self, keys: &[&[u8]], parts: &[&[u8]], claimed: &[Vec<u8>]) -> bool {
        match self {
            Algorithm::Sha1 => any_key_matches::<Hmac<Sha1>>(keys, parts, claimed),
            Algorithm::Sha256 => any_key_matches::<Hmac<Sha256>>(keys, parts, claimed),
            Algorithm::Sha512 => any_key_matches::<Hmac<Sha512>>(keys, parts, claimed),
        }
    }

    fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Algorithm::Sha1 => mac_bytes::<Hmac<Sha1>>(key, parts),
            Algorithm::Sha256 => mac_bytes::<Hmac<Sha256>>(key, parts),
            Algorithm::Sha512 => mac_bytes::<Hmac<Sha512>>(key, parts),
        }
    }
}

/// The values the template's placeholders stand for in one request.
struct Values<'a> {
    body: &'a [u8],
    timestamp: &'a str,
    id: &'a str,
    url: &'a str,
}

impl GenericHmac {
    fn content<'a>(&'a self, v: &Values<'a>) -> Vec<&'a [u8]> {
        self.signed_content
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_bytes(),
                Part::Body => v.body,
                Part::Timestamp => v.timestamp.as_bytes(),
                Part::Id => v.id.as_bytes(),
                Part::Url => v.url.as_bytes(),
            })
            .collect()
    }

    fn signs_url(&self) -> bool {
        self.signed_content.contains(&Part::Url)
    }

    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = required_text(req.headers, self.header)?;
        let claimed = value
            .strip_prefix(self.prefix.as_str())
            .and_then(|encoded| self.encoding.decode(encoded))
            .ok_or(Failure::new(Reason::MalformedHeader, Some(self.header)))?;

        let timestamp = match self.timestamp {
            Some(check) => {
                let text = required_text(req.headers, check.header)?;
                let ts = parse_unix_seconds(text, check.header)?;
                check_tolerance(ts, req.now_unix_s, check.tolerance_s, Window::Both)?;
                text
            }
            None => "",
        };
        // An id that is signed must be there; one that is only metadata may not.
        let id = match self.id_header {
            Some(h) if self.signed_content.contains(&Part::Id) => {
                Some(required_text(req.headers, h)?)
            }
            Some(h) => optional_text(req.headers, h)?,
            None => None,
        };
        let urls = if self.signs_url() {
            let url = self
                .url
                .for_request(&req.target)
                .ok_or(Failure::new(Reason::MissingHeader, Some(":authority")))?;
            port_variants(&url)
        } else {
            vec![String::new()]
        };

        let keys = self.secrets.active(req.now_unix_s)?;
        let claimed = [claimed];
        let ok = urls.iter().any(|url| {
            let values = Values {
                body: req.body,
                timestamp,
                id: id.unwrap_or(""),
                url,
            };
            self.algorithm
                .matches(&keys, &self.content(&values), &claimed)
        });
        if !ok {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let event_type = match self.event_type_header {
            Some(h) => optional_text(req.headers, h)?.map(str::to_string),
            None => None,
        };
        Ok(Verified {
            provider_event_id: id.map(str::to_string),
            event_type,
        })
    }

    /// The signature header value a sender configured like this would send.
    pub fn sign(&self, key: &[u8], body: &[u8], timestamp: &str, id: &str, url: &str) -> String {
        let values = Values {
            body,
            timestamp,
            id,
            url,
        };
        format!(
            "{}{}",
            self.prefix,
            self.encoding
                .encode(&self.algorithm.mac(key, &self.content(&values)))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn scheme(template: &str, encoding: Encoding, prefix: &str) -> GenericHmac {
        GenericHmac {
            secrets: Secrets::new(vec![Secret::new(b"key".to_vec(), None)]),
            header: "x-sig",
            algorithm: Algorithm::Sha256,
            encoding,
            prefix: prefix.to_string(),
            timestamp: Some(TimestampCheck {
                header: "x-ts",
                tolerance_s: 300,
            }),
            id_header: Some("x-id"),
            event_type_header: Some("x-event"),
            signed_content: parse_template(template).unwrap(),
            url: SignedUrl::FromRequest {
                scheme: Some("https"),
            },
        }
    }

    fn check(
        s: &GenericHmac,
        headers: &[(&str, &str)],
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Failure> {
        let h = Headers::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, body, now))
    }

    #[test]
    fn templates_parse_strictly() {
        assert_eq!(
            parse_template("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body
            ]
        );
        assert_eq!(
            parse_template("{url}{body}").unwrap(),
            vec![Part::Url, Part::Body]
        );
        assert!(
            parse_template("{timestamp}")
                .unwrap_err()
                .contains("{body}")
        );
        assert!(
            parse_template("{bdy}")
                .unwrap_err()
                .contains("unknown placeholder {bdy}")
        );
        assert!(parse_template("{body").unwrap_err().contains("closing"));
    }

    #[test]
    fn a_typeform_like_source_verifies() {
        // Typeform: sha256= prefix, base64, body only.
        let mut s = scheme("{body}", Encoding::Base64, "sha256=");
        s.timestamp = None;
        let sig = s.sign(b"key", b"{}", "", "", "");
        assert!(sig.starts_with("sha256="));
        let v = check(
            &s,
            &[
                ("x-sig", &sig),
                ("x-id", "e1"),
                ("x-event", "form_response"),
            ],
            b"{}",
            0,
        )
        .unwrap();
        assert_eq!(
            (v.provider_event_id.as_deref(), v.event_type.as_deref()),
            (Some("e1"), Some("form_response"))
        );
        let bare = sig.trim_start_matches("sha256=");
        assert_eq!(
            check(&s, &[("x-sig", bare)], b"{}", 0).unwrap_err().reason,
            Reason::MalformedHeader
        );
    }

    #[test]
    fn timestamp_id_and_url_are_signed() {
        let s = scheme("{id}.{timestamp}.{url}.{body}", Encoding::Base64Url, "");
        let sig = s.sign(b"key", b"x", "1000", "msg", "https://a.com/h?q=1");
        let headers = [
            ("x-sig", sig.as_str()),
            ("x-ts", "1000"),
            ("x-id", "msg"),
            (":authority", "a.com"),
            (":path", "/h?q=1"),
        ];
        assert!(check(&s, &headers, b"x", 1000).is_ok());
        assert_eq!(
            check(&s, &headers, b"x", 1301).unwrap_err().reason,
            Reason::TimestampOutOfTolerance
        );
        let moved = [
            headers[0],
            headers[1],
            headers[2],
            headers[3],
            (":path", "/other?q=1"),
        ];
        assert_eq!(
            check(&s, &moved, b"x", 1000).unwrap_err().reason,
            Reason::SignatureMismatch
        );
        let no_id = [headers[0], headers[1], headers[3], headers[4]];
        assert_eq!(
            check(&s, &no_id, b"x", 1000).unwrap_err().reason,
            Reason::MissingHeader
        );
        // Upper-case hex is the same MAC.
        let hex = GenericHmac {
            encoding: Encoding::Hex,
            ..s.clone()
        };
        let upper = hex
            .sign(b"key", b"x", "1000", "msg", "https://a.com/h?q=1")
            .to_uppercase();
        let headers = [
            ("x-sig", upper.as_str()),
            headers[1],
            headers[2],
            headers[3],
            headers[4],
        ];
        assert!(check(&hex, &headers, b"x", 1000).is_ok());
    }
}
