//! The per-request decisions, free of proxy-wasm: which source a request
//! belongs to, whether its method and size are acceptable, whether its
//! signature holds, what goes to the sidecar, and what the sender is told
//! when the sidecar answers. The glue feeds host data in and carries the
//! decisions out.

use edgehook_proto::v1::{Event, Header, PublishAck};
use prost::Message;

use crate::config::{FilterConfig, PathMatch, Source};
use crate::headers::Headers;
use crate::reply::{Reason, Reply};
use crate::verify::SignedRequest;

/// The request line and headers, read once in the headers callback.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// `:path` up to the `?`.
    pub path: String,
    /// After the `?`, without it.
    pub query: String,
    /// `:authority` without the port, lower-case.
    pub host: String,
    pub headers: Headers,
    /// True when the headers were the whole request (no body will follow).
    pub end_of_stream: bool,
    pub client_address: String,
}

/// Headers that never leave the edge: credentials, and what belongs to the
/// hop rather than the webhook.
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "x-request-id",
];

impl RequestHead {
    pub fn new(headers: Headers, end_of_stream: bool, client_address: String) -> Self {
        // Pseudo-headers are produced by Envoy's codec; a non-UTF-8 byte in
        // them reads as "not ours" rather than failing.
        let text = |name: &str| {
            headers
                .get_str(name)
                .ok()
                .flatten()
                .unwrap_or("")
                .to_string()
        };
        let method = text(":method");
        let full_path = text(":path");
        let (path, query) = match full_path.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (full_path, String::new()),
        };
        let authority = text(":authority");
        let host = strip_port(&authority).to_ascii_lowercase();
        RequestHead {
            method,
            path,
            query,
            host,
            headers,
            end_of_stream,
            client_address,
        }
    }

    fn request_id(&self) -> String {
        self.headers
            .get_str("x-request-id")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_string()
    }

    /// `Content-Length`, when present and well-formed.
    fn declared_length(&self) -> Option<u64> {
        let v = self.headers.get("content-length")?;
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(v).ok()?.parse().ok()
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// What to do once the headers are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadDecision {
    Reply(Reply),
    /// Buffer the body for the source at this index.
    ReadBody {
        source: usize,
    },
}

/// The source a request belongs to: the first that matches, in config order.
pub fn route(cfg: &FilterConfig, head: &RequestHead) -> Option<usize> {
    cfg.sources.iter().position(|s| {
        let path_ok = match &s.route.path {
            PathMatch::Exact(p) => head.path == *p,
            PathMatch::Prefix(p) => head.path.starts_with(p.as_str()),
        };
        path_ok && s.route.host.as_ref().is_none_or(|h| *h == head.host)
    })
}

pub fn on_headers(cfg: &FilterConfig, head: &RequestHead) -> HeadDecision {
    let Some(index) = route(cfg, head) else {
        return HeadDecision::Reply(Reply::reject(Reason::UnknownSource, None));
    };
    let Some(source) = cfg.sources.get(index) else {
        return HeadDecision::Reply(Reply::reject(Reason::UnknownSource, None));
    };
    if !source.methods.contains(&head.method) {
        return HeadDecision::Reply(Reply::method_not_allowed(&source.methods));
    }
    if head
        .declared_length()
        .is_some_and(|n| n > source.max_body_bytes as u64)
    {
        return HeadDecision::Reply(Reply::reject(Reason::PayloadTooLarge, None));
    }
    // A request that ended with its headers has no body to wait for: pausing
    // it would hang until the client gives up.
    if head.end_of_stream {
        return HeadDecision::Reply(Reply::reject(Reason::BodyRequired, None));
    }
    HeadDecision::ReadBody { source: index }
}

/// Checked on every body chunk: `buffered` is the total so far.
pub fn body_too_large(source: &Source, buffered: usize) -> Option<Reply> {
    (buffered > source.max_body_bytes).then(|| Reply::reject(Reason::PayloadTooLarge, None))
}

/// What to do with a complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecision {
    Reply(Reply),
    /// Send this encoded `Event` to the sidecar and answer when it acks.
    Publish(Vec<u8>),
}

pub fn on_body(source: &Source, head: &RequestHead, body: &[u8], now_unix_ms: i64) -> BodyDecision {
    // The target (scheme, authority, path) comes from the same headers, for
    // the schemes that sign the URL.
    let req = SignedRequest::new(&head.headers, body, now_unix_ms.div_euclid(1000));
    let verified = match source.scheme.verify(&req) {
        Ok(v) => v,
        Err(f) => return BodyDecision::Reply(Reply::reject(f.reason, f.header)),
    };
    let headers = head
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(':') && !DROPPED_HEADERS.contains(name))
        .map(|(name, value)| Header {
            name: name.to_string(),
            value: value.to_vec(),
        })
        .collect();
    let event = Event {
        source: source.name.clone(),
        received_at_ms: now_unix_ms,
        method: head.method.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        headers,
        client_address: head.client_address.clone(),
        provider_event_id: verified.provider_event_id.unwrap_or_default(),
        event_type: verified.event_type.unwrap_or_default(),
        body: body.to_vec(),
        request_id: head.request_id(),
    };
    BodyDecision::Publish(event.encode_to_vec())
}

/// How the publish call ended, as the host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult<'a> {
    /// gRPC status 0 with the encoded `PublishAck`.
    Ok(&'a [u8]),
    /// Any non-zero gRPC status: unreachable, timed out (Envoy reports 14
    /// for both), or refused by the sidecar (8 when its queue is full).
    Failed { grpc_status: u32 },
}

/// The answer to the sender once the sidecar has spoken. Only a decodable
/// ack with an id is a 2xx: anything else might not be on disk.
pub fn on_publish_result(result: PublishResult<'_>) -> Reply {
    match result {
        PublishResult::Ok(bytes) => match PublishAck::decode(bytes) {
            Ok(ack) if !ack.event_id.is_empty() => Reply::accepted(&ack.event_id, ack.duplicate),
            _ => Reply::reject(Reason::SidecarUnavailable, None),
        },
        PublishResult::Failed { .. } => Reply::reject(Reason::SidecarUnavailable, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::standard_webhooks::{decode_secret, sign};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config() -> FilterConfig {
        let json = format!(
            r#"{{"sources":[
              {{"name":"exact","match":{{"path":"/hooks/a"}},"verify":{{"scheme":"standard-webhooks","secrets":["{SECRET}"]}},"max_body_bytes":100}},
              {{"name":"hosted","match":{{"prefix":"/hooks/","host":"example.com"}},"verify":{{"scheme":"standard-webhooks","secrets":["{SECRET}"]}},"methods":["POST","PUT"]}}
            ]}}"#
        );
        FilterConfig::parse(json.as_bytes(), &|_| None).unwrap()
    }

    fn head(
        method: &str,
        path: &str,
        authority: &str,
        extra: &[(&str, &[u8])],
        eos: bool,
    ) -> RequestHead {
        let mut pairs = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), authority.as_bytes().to_vec()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_vec())));
        RequestHead::new(Headers::new(pairs), eos, "127.0.0.1:5000".into())
    }

    #[test]
    fn routes_by_exact_path_then_prefix_and_host() {
        let c = config();
        assert_eq!(
            route(&c, &head("POST", "/hooks/a?x=1", "any", &[], false)),
            Some(0)
        );
        assert_eq!(
            route(
                &c,
                &head("POST", "/hooks/b", "Example.com:8443", &[], false)
            ),
            Some(1)
        );
        assert_eq!(
            route(&c, &head("POST", "/hooks/b", "other.com", &[], false)),
            None
        );
        assert_eq!(
            route(&c, &head("POST", "/other", "example.com", &[], false)),
            None
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn guards_answer_before_the_body() {
        let c = config();
        let status = |h: RequestHead| match on_headers(&c, &h) {
            HeadDecision::Reply(r) => r.status,
            HeadDecision::ReadBody { .. } => 0,
        };
        assert_eq!(status(head("POST", "/nope", "x", &[], false)), 404);
        assert_eq!(status(head("GET", "/hooks/a", "x", &[], false)), 405);
        assert_eq!(
            status(head(
                "POST",
                "/hooks/a",
                "x",
                &[("content-length", b"101")],
                false
            )),
            413
        );
        assert_eq!(status(head("POST", "/hooks/a", "x", &[], true)), 400);
        assert_eq!(
            status(head(
                "POST",
                "/hooks/a",
                "x",
                &[("content-length", b"100")],
                false
            )),
            0
        );
        match on_headers(&c, &head("DELETE", "/hooks/z", "example.com", &[], false)) {
            HeadDecision::Reply(r) => {
                assert!(r.headers.contains(&("allow", "POST, PUT".to_string())))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_verified_body_becomes_an_event_without_credentials() {
        let c = config();
        let body = br#"{"type":"ping"}"#;
        let sig = sign(
            &decode_secret(SECRET).unwrap(),
            "msg_1",
            1_700_000_000,
            body,
        );
        let h = head(
            "POST",
            "/hooks/a?x=1",
            "x",
            &[
                ("webhook-id", b"msg_1"),
                ("webhook-timestamp", b"1700000000"),
                ("webhook-signature", sig.as_bytes()),
                ("authorization", b"Bearer secret"),
                ("cookie", b"a=b"),
                ("x-request-id", b"req-1"),
                ("x-odd", &[0xff, 0xfe]),
            ],
            false,
        );
        let BodyDecision::Publish(bytes) = on_body(&c.sources[0], &h, body, 1_700_000_000_123)
        else {
            panic!("not published")
        };
        let e = Event::decode(bytes.as_slice()).unwrap();
        assert_eq!(e.source, "exact");
        assert_eq!((e.path.as_str(), e.query.as_str()), ("/hooks/a", "x=1"));
        assert_eq!(e.provider_event_id, "msg_1");
        assert_eq!(e.event_type, "ping");
        assert_eq!(e.request_id, "req-1");
        assert_eq!(e.body, body);
        assert_eq!(e.received_at_ms, 1_700_000_000_123);
        let names: Vec<_> = e.headers.iter().map(|h| h.name.as_str()).collect();
        assert!(
            !names.contains(&"authorization")
                && !names.contains(&"cookie")
                && !names.contains(&":path")
        );
        assert!(
            e.headers
                .iter()
                .any(|h| h.name == "x-odd" && h.value == [0xff, 0xfe])
        );
    }

    #[test]
    fn non_utf8_signature_header_is_a_401_not_a_crash() {
        let c = config();
        let h = head(
            "POST",
            "/hooks/a",
            "x",
            &[
                ("webhook-id", b"m"),
                ("webhook-timestamp", b"1"),
                ("webhook-signature", &[b'v', b'1', b',', 0xff]),
            ],
            false,
        );
        match on_body(&c.sources[0], &h, b"{}", 1000) {
            BodyDecision::Reply(r) => {
                assert_eq!(r.status, 401);
                assert_eq!(
                    r.body,
                    br#"{"error":"malformed_header","header":"webhook-signature"}"#
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_decodable_ack_is_a_2xx() {
        let ack = PublishAck {
            event_id: "evt_1".into(),
            duplicate: false,
        }
        .encode_to_vec();
        assert_eq!(on_publish_result(PublishResult::Ok(&ack)).status, 202);
        assert_eq!(
            on_publish_result(PublishResult::Ok(b"\xff\xff")).status,
            503
        );
        assert_eq!(on_publish_result(PublishResult::Ok(b"")).status, 503);
        assert_eq!(
            on_publish_result(PublishResult::Failed { grpc_status: 14 }).status,
            503
        );
    }
}
