//! What the sender is told. Every refusal has a status code and a stable,
//! machine-readable reason; bodies are JSON built from fixed strings, never
//! from request data or secrets.

use serde_json::json;

/// Why the filter refused (or could not take) a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownSource,
    MethodNotAllowed,
    BodyRequired,
    PayloadTooLarge,
    MissingHeader,
    MalformedHeader,
    TimestampOutOfTolerance,
    SignatureMismatch,
    NoActiveSecret,
    SidecarUnavailable,
}

impl Reason {
    /// The code in `{"error": ...}` and in metric names.
    pub fn code(self) -> &'static str {
        match self {
            Reason::UnknownSource => "unknown_source",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::BodyRequired => "body_required",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::MissingHeader => "missing_header",
            Reason::MalformedHeader => "malformed_header",
            Reason::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Reason::SignatureMismatch => "signature_mismatch",
            Reason::NoActiveSecret => "no_active_secret",
            Reason::SidecarUnavailable => "sidecar_unavailable",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            Reason::UnknownSource => 404,
            Reason::MethodNotAllowed => 405,
            Reason::BodyRequired => 400,
            Reason::PayloadTooLarge => 413,
            Reason::MissingHeader
            | Reason::MalformedHeader
            | Reason::TimestampOutOfTolerance
            | Reason::SignatureMismatch
            | Reason::NoActiveSecret => 401,
            Reason::SidecarUnavailable => 503,
        }
    }

    pub const ALL: [Reason; 10] = [
        Reason::UnknownSource,
        Reason::MethodNotAllowed,
        Reason::BodyRequired,
        Reason::PayloadTooLarge,
        Reason::MissingHeader,
        Reason::MalformedHeader,
        Reason::TimestampOutOfTolerance,
        Reason::SignatureMismatch,
        Reason::NoActiveSecret,
        Reason::SidecarUnavailable,
    ];
}

/// A local reply: the filter answers the sender itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Seconds a sender is asked to wait when the sidecar cannot take an event.
pub const SIDECAR_RETRY_AFTER_S: u32 = 5;

impl Reply {
    fn json(status: u32, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A refusal. `header` names the header at fault, when there is one; it
    /// always comes from the configuration or a scheme, never the request.
    pub fn reject(reason: Reason, header: Option<&'static str>) -> Reply {
        let body = match header {
            Some(h) => json!({ "error": reason.code(), "header": h }),
            None => json!({ "error": reason.code() }),
        };
        let mut reply = Reply::json(reason.status(), body);
        if reason == Reason::SidecarUnavailable {
            reply
                .headers
                .push(("retry-after", SIDECAR_RETRY_AFTER_S.to_string()));
        }
        reply
    }

    /// 405 with the `Allow` header listing what the source accepts.
    pub fn method_not_allowed(allowed: &[String]) -> Reply {
        let mut reply = Reply::reject(Reason::MethodNotAllowed, None);
        reply.headers.push(("allow", allowed.join(", ")));
        reply
    }

    /// 202: the sidecar has the event on disk.
    pub fn accepted(event_id: &str, duplicate: bool) -> Reply {
        let body = if duplicate {
            json!({ "id": event_id, "duplicate": true })
        } else {
            json!({ "id": event_id })
        };
        Reply::json(202, body)
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
        assert_eq!(r.status, 202);
        assert_eq!(r.body, br#"{"id":"evt_1"}"#);
        let d: serde_json::Value =
            serde_json::from_slice(&Reply::accepted("evt_1", true).body).unwrap();
        assert_eq!(d["duplicate"], true);
    }
}
