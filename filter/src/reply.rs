//! What the sender is told. Every refusal has a status code and a stable,
//! machine-readable reason; bodies are JSON built from fixed strings, never
//! from request data or secrets. Every reply also carries its `Outcome`,
//! which is what the metrics count.

use std::borrow::Cow;

use serde_json::json;

use crate::ratelimit::{Limited, Policy};

/// Why the filter refused (or could not take) a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownSource,
    MethodNotAllowed,
    UnsupportedMediaType,
    BodyRequired,
    PayloadTooLarge,
    AddressDenied,
    ClientRateLimited,
    MissingHeader,
    MalformedHeader,
    TimestampOutOfTolerance,
    SignatureMismatch,
    NoActiveSecret,
    SourceRateLimited,
    BodyNotJson,
    SidecarUnavailable,
}

impl Reason {
    /// The code in `{"error": ...}` and in metric names.
    pub fn code(self) -> &'static str {
        match self {
            Reason::UnknownSource => "unknown_source",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::BodyRequired => "body_required",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::AddressDenied => "address_denied",
            Reason::ClientRateLimited => "client_rate_limited",
            Reason::MissingHeader => "missing_header",
            Reason::MalformedHeader => "malformed_header",
            Reason::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Reason::SignatureMismatch => "signature_mismatch",
            Reason::NoActiveSecret => "no_active_secret",
            Reason::SourceRateLimited => "source_rate_limited",
            Reason::BodyNotJson => "body_not_json",
            Reason::SidecarUnavailable => "sidecar_unavailable",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            Reason::UnknownSource => 404,
            Reason::MethodNotAllowed => 405,
            Reason::UnsupportedMediaType => 415,
            Reason::BodyRequired | Reason::BodyNotJson => 400,
            Reason::PayloadTooLarge => 413,
            Reason::AddressDenied => 403,
            Reason::ClientRateLimited | Reason::SourceRateLimited => 429,
            Reason::MissingHeader
            | Reason::MalformedHeader
            | Reason::TimestampOutOfTolerance
            | Reason::SignatureMismatch
            | Reason::NoActiveSecret => 401,
            Reason::SidecarUnavailable => 503,
        }
    }

    pub const ALL: [Reason; 15] = [
        Reason::UnknownSource,
        Reason::MethodNotAllowed,
        Reason::UnsupportedMediaType,
        Reason::BodyRequired,
        Reason::PayloadTooLarge,
        Reason::AddressDenied,
        Reason::ClientRateLimited,
        Reason::MissingHeader,
        Reason::MalformedHeader,
        Reason::TimestampOutOfTolerance,
        Reason::SignatureMismatch,
        Reason::NoActiveSecret,
        Reason::SourceRateLimited,
        Reason::BodyNotJson,
        Reason::SidecarUnavailable,
    ];
}

/// How a request ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 202: on the sidecar's disk.
    Accepted,
    /// 202: the sidecar already had this provider event.
    Duplicate,
    /// 200: verified, but the source's rules drop it.
    Filtered,
    Rejected(Reason),
}

impl Outcome {
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Filtered => "filtered",
            Outcome::Rejected(reason) => reason.code(),
        }
    }

    /// Every outcome, each once: what is defined as a counter per source.
    pub fn all() -> impl Iterator<Item = Outcome> {
        [Outcome::Accepted, Outcome::Duplicate, Outcome::Filtered]
            .into_iter()
            .chain(Reason::ALL.into_iter().map(Outcome::Rejected))
    }

    /// This outcome's position in `all()`.
    pub fn index(self) -> usize {
        Outcome::all().position(|o| o == self).unwrap_or(0)
    }
}

/// A local reply: the filter answers the sender itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

/// Seconds a sender is asked to wait when the sidecar cannot take an event.
pub const SIDECAR_RETRY_AFTER_S: u32 = 5;

impl Reply {
    fn json(status: u32, body: Vec<u8>, outcome: Outcome) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", Cow::Borrowed("application/json"))],
            body,
            outcome,
        }
    }

    /// A refusal. `header` names the header at fault, when there is one; it
    /// always comes from the configuration or a scheme, never the request.
    pub fn reject(reason: Reason, header: Option<&'static str>) -> Reply {
        // Refusals are most of what a filter under attack sends: the common
        // one is spliced from fixed strings rather than built as a JSON value.
        let body = match header {
            Some(h) => json!({ "error": reason.code(), "header": h })
                .to_string()
                .into_bytes(),
            None => [br#"{"error":""#, reason.code().as_bytes(), br#""}"#].concat(),
        };
        let mut reply = Reply::json(reason.status(), body, Outcome::Rejected(reason));
        if reason == Reason::SidecarUnavailable {
            reply
                .headers
                .push(("retry-after", Cow::Owned(SIDECAR_RETRY_AFTER_S.to_string())));
        }
        reply
    }

    /// 405 with the `Allow` header listing what the source accepts.
    pub fn method_not_allowed(allowed: &[String]) -> Reply {
        let mut reply = Reply::reject(Reason::MethodNotAllowed, None);
        reply
            .headers
            .push(("allow", Cow::Owned(allowed.join(", "))));
        reply
    }

    /// 429 with `Retry-After` and the IETF httpapi draft's `RateLimit-Policy`
    /// and `RateLimit` fields: the quota is the bucket's burst, the window
    /// the time it takes to fill, and `t` the seconds until a token.
    pub fn rate_limited(limited: &Limited) -> Reply {
        let reason = match limited.policy {
            Policy::PerClient => Reason::ClientRateLimited,
            Policy::Verified => Reason::SourceRateLimited,
        };
        let mut reply = Reply::reject(reason, None);
        let name = limited.policy.name();
        let wait = limited.retry_after_s();
        reply
            .headers
            .push(("retry-after", Cow::Owned(wait.to_string())));
        reply.headers.push((
            "ratelimit-policy",
            Cow::Owned(format!(
                "\"{name}\";q={};w={}",
                limited.limit.burst(),
                limited.limit.window_s()
            )),
        ));
        reply
            .headers
            .push(("ratelimit", Cow::Owned(format!("\"{name}\";r=0;t={wait}"))));
        reply
    }

    /// 200: verified, and dropped by the source's rules. A 2xx so that the
    /// provider does not retry it.
    pub fn filtered() -> Reply {
        Reply::json(200, br#"{"status":"filtered"}"#.to_vec(), Outcome::Filtered)
    }

    /// 202: the sidecar has the event on disk. The id is the sidecar's own
    /// (an `evt_` id it generated), never request data.
    pub fn accepted(event_id: &str, duplicate: bool) -> Reply {
        let (tail, outcome): (&[u8], _) = if duplicate {
            (br#","duplicate":true}"#, Outcome::Duplicate)
        } else {
            (b"}", Outcome::Accepted)
        };
        let id = serde_json::Value::from(event_id).to_string();
        Reply::json(202, [br#"{"id":"#, id.as_bytes(), tail].concat(), outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_code_and_an_error_status() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert!(Reason::ALL.iter().all(|r| r.status() >= 400));
        let outcomes: Vec<_> = Outcome::all().collect();
        assert_eq!(outcomes.len(), Reason::ALL.len() + 3);
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }

    #[test]
    fn rate_limited_replies_carry_the_draft_headers() {
        let limited = Limited {
            policy: Policy::Verified,
            limit: crate::ratelimit::Limit::new(200.0, 400).unwrap(),
            wait_ms: 1500,
        };
        let r = Reply::rate_limited(&limited);
        assert_eq!(r.status, 429);
        assert_eq!(r.outcome, Outcome::Rejected(Reason::SourceRateLimited));
        assert_eq!(r.body, br#"{"error":"source_rate_limited"}"#);
        let h = |name| {
            r.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_ref())
        };
        assert_eq!(h("retry-after"), Some("2"));
        assert_eq!(h("ratelimit-policy"), Some(r#""verified";q=400;w=2"#));
        assert_eq!(h("ratelimit"), Some(r#""verified";r=0;t=2"#));
    }

    #[test]
    fn filtered_is_a_fixed_2xx() {
        let r = Reply::filtered();
        assert_eq!((r.status, r.outcome), (200, Outcome::Filtered));
        assert_eq!(r.body, br#"{"status":"filtered"}"#);
    }

    #[test]
    fn sidecar_unavailable_asks_to_retry_later() {
        let r = Reply::reject(Reason::SidecarUnavailable, None);
        assert_eq!(r.status, 503);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "retry-after" && v == "5")
        );
        assert_eq!(r.body, br#"{"error":"sidecar_unavailable"}"#);
    }

    #[test]
    fn accepted_body_carries_the_id() {
        let r = Reply::accepted("evt_1", false);
        assert_eq!((r.status, r.outcome), (202, Outcome::Accepted));
        assert_eq!(Reply::accepted("evt_1", true).outcome, Outcome::Duplicate);
        assert_eq!(r.body, br#"{"id":"evt_1"}"#);
        let d: serde_json::Value =
            serde_json::from_slice(&Reply::accepted("evt_1", true).body).unwrap();
        assert_eq!(d["duplicate"], true);
    }
}
