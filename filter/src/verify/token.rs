//! Shared-token sources (GitLab's `X-Gitlab-Token`, or HTTP Basic auth):
//! the sender proves itself by presenting a configured token, compared in
//! constant time. There is no MAC, so the body is not bound to the token:
//! only use this where the provider offers nothing better.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{
    Failure, Secrets, SignedRequest, Verified, ct_eq_any_len, optional_text, required_text,
};
use crate::reply::Reason;

pub const DEFAULT_HEADER: &str = "x-gitlab-token";
const AUTHORIZATION: &str = "authorization";

/// Where the token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The whole value of this header.
    Header(&'static str),
    /// `Authorization: Basic`, compared as decoded `user:password`.
    BasicAuth,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub secrets: Secrets,
    pub presented: Presented,
    pub id_header: Option<&'static str>,
    pub event_type_header: Option<&'static str>,
}

/// A configured token; for Basic auth it must be `user:password`.
pub fn decode_token(text: &str, basic_auth: bool) -> Result<Vec<u8>, &'static str> {
    let key = super::text_secret(text)?;
    if basic_auth && !text.contains(':') {
        return Err("must be user:password for basic_auth");
    }
    Ok(key)
}

impl Token {
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let presented: Vec<u8> = match self.presented {
            Presented::Header(name) => required_text(req.headers, name)?.as_bytes().to_vec(),
            Presented::BasicAuth => {
                let value = required_text(req.headers, AUTHORIZATION)?;
                let malformed = Failure::new(Reason::MalformedHeader, Some(AUTHORIZATION));
                let (scheme, credentials) = value.split_once(' ').ok_or(malformed)?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(malformed);
                }
                STANDARD.decode(credentials.trim()).map_err(|_| malformed)?
            }
        };
        let keys = self.secrets.active(req.now_unix_s)?;
        if !keys.iter().any(|k| ct_eq_any_len(k, &presented)) {
            return Err(Failure::new(Reason::SignatureMismatch, None));
        }
        let header_text = |h: Option<&'static str>| -> Result<Option<String>, Failure> {
            match h {
                Some(h) => Ok(optional_text(req.headers, h)?.map(str::to_string)),
                None => Ok(None),
            }
        };
        Ok(Verified {
            provider_event_id: header_text(self.id_header)?,
            event_type: header_text(self.event_type_header)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use crate::verify::Secret;

    fn check(s: &Token, headers: &[(&str, &str)]) -> Result<Verified, Failure> {
        let h = Headers::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        s.verify(&SignedRequest::new(&h, b"{}", 0))
    }

    fn scheme(presented: Presented, tokens: &[&str]) -> Token {
        Token {
            secrets: Secrets::new(
                tokens
                    .iter()
                    .map(|t| Secret::new(t.as_bytes().to_vec(), None))
                    .collect(),
            ),
            presented,
            id_header: Some("x-gitlab-event-uuid"),
            event_type_header: Some("x-gitlab-event"),
        }
    }

    #[test]
    fn gitlab_tokens() {
        let s = scheme(
            Presented::Header(DEFAULT_HEADER),
            &["old-token", "new-token"],
        );
        let v = check(
            &s,
            &[
                ("X-Gitlab-Token", "new-token"),
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Event-UUID", "u1"),
            ],
        )
        .unwrap();
        assert_eq!(
            (v.provider_event_id.as_deref(), v.event_type.as_deref()),
            (Some("u1"), Some("Push Hook"))
        );
        for bad in ["new-toke", "new-token ", "new-tokenx", "NEW-TOKEN"] {
            assert_eq!(
                check(&s, &[("x-gitlab-token", bad)]).unwrap_err().reason,
                Reason::SignatureMismatch,
                "{bad}"
            );
        }
        assert_eq!(
            check(&s, &[("x-gitlab-token", "")]).unwrap_err().reason,
            Reason::MissingHeader
        );
    }

    #[test]
    fn basic_auth() {
        let s = scheme(Presented::BasicAuth, &["hook:s3cret"]);
        let good = format!("Basic {}", STANDARD.encode("hook:s3cret"));
        assert!(check(&s, &[("authorization", &good)]).is_ok());
        let wrong = format!("basic {}", STANDARD.encode("hook:s3cre"));
        assert_eq!(
            check(&s, &[("authorization", &wrong)]).unwrap_err().reason,
            Reason::SignatureMismatch
        );
        for bad in ["Bearer abc", "Basic", "Basic !!!"] {
            assert_eq!(
                check(&s, &[("authorization", bad)]).unwrap_err().reason,
                Reason::MalformedHeader,
                "{bad}"
            );
        }
        assert!(decode_token("nocolon", true).is_err());
        assert!(decode_token("nocolon", false).is_ok());
    }
}
