//! The per-request decisions, free of proxy-wasm: which source a request
//! belongs to, whether its method, size, content type and address are
//! acceptable, whether it is within its rate limits, whether its signature
//! holds, whether the source's rules keep it, what goes to the sidecar, and
//! what the sender is told when the sidecar answers. The glue feeds host
//! data (headers, body, shared data, clock) in and carries the decisions out.

use edgehook_proto::v1::{Event, Header, PublishAck};
use edgehook_rules::Input;
use prost::Message;

use crate::config::{FilterConfig, InvalidJson, PathMatch, Source, SourceRules, UnknownSource};
use crate::headers::Headers;
use crate::ip;
use crate::ratelimit::Limiter;
use crate::reply::{Outcome, Reason, Reply};
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
    client_address: ClientAddress,
}

/// The downstream address, asked of the host only when something needs it
/// (an IP rule, a per-client limit, an event to publish): a request refused
/// for its signature never pays for the lookup.
#[derive(Debug, Clone, Default)]
struct ClientAddress {
    known: std::cell::OnceCell<String>,
    fetch: Option<fn() -> String>,
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
    /// With the client address known up front.
    pub fn new(headers: Headers, end_of_stream: bool, client_address: String) -> Self {
        let head = RequestHead::with_address_from(headers, end_of_stream, String::new);
        head.set_client_address(client_address);
        head
    }

    /// With the client address read by `fetch` the first time it is needed.
    pub fn with_address_from(headers: Headers, end_of_stream: bool, fetch: fn() -> String) -> Self {
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
            client_address: ClientAddress {
                known: std::cell::OnceCell::new(),
                fetch: Some(fetch),
            },
        }
    }

    pub fn client_address(&self) -> &str {
        self.client_address
            .known
            .get_or_init(|| self.client_address.fetch.map(|f| f()).unwrap_or_default())
    }

    fn set_client_address(&self, address: String) {
        let _ = self.client_address.known.set(address);
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
    /// Answer now; `source` is the matched source's index, if any (for
    /// the metrics).
    Reply { source: Option<usize>, reply: Reply },
    /// Buffer the body for the source at this index.
    ReadBody { source: usize },
    /// No source matched and the config lets such requests through.
    PassThrough,
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

/// The guards that need no body, cheapest first: method, declared size,
/// content type, a body at all, the client address, then the per-client
/// rate limit (which touches shared data, so it comes last).
pub fn on_headers(cfg: &FilterConfig, head: &RequestHead, limiter: &Limiter<'_>) -> HeadDecision {
    let Some((index, source)) = route(cfg, head).and_then(|i| Some((i, cfg.sources.get(i)?)))
    else {
        return match cfg.unknown_source {
            UnknownSource::Reject => HeadDecision::Reply {
                source: None,
                reply: Reply::reject(Reason::UnknownSource, None),
            },
            UnknownSource::PassThrough => HeadDecision::PassThrough,
        };
    };
    match guard(source, head, limiter) {
        Some(reply) => HeadDecision::Reply {
            source: Some(index),
            reply,
        },
        None => HeadDecision::ReadBody { source: index },
    }
}

fn guard(source: &Source, head: &RequestHead, limiter: &Limiter<'_>) -> Option<Reply> {
    if !source.methods.contains(&head.method) {
        return Some(Reply::method_not_allowed(&source.methods));
    }
    if head
        .declared_length()
        .is_some_and(|n| n > source.max_body_bytes as u64)
    {
        return Some(Reply::reject(Reason::PayloadTooLarge, None));
    }
    if !content_type_allowed(&source.content_types, &head.headers) {
        return Some(Reply::reject(Reason::UnsupportedMediaType, None));
    }
    // A request that ended with its headers has no body to wait for: pausing
    // it would hang until the client gives up. Every scheme signs a body.
    if head.end_of_stream {
        return Some(Reply::reject(Reason::BodyRequired, None));
    }
    if !source.ip.restricts() && source.rate_limits.per_client.is_none() {
        return None;
    }
    let client = source
        .ip
        .client(ip::parse_address(head.client_address()), &head.headers);
    if !source.ip.admits(client) {
        return Some(Reply::reject(Reason::AddressDenied, None));
    }
    if let Err(limited) = limiter.per_client(&source.name, &source.rate_limits, client) {
        return Some(Reply::rate_limited(&limited));
    }
    None
}

/// The media type of `Content-Type` (before any `;`), case-insensitively,
/// against `type/subtype` or `type/*` entries. An empty list admits
/// anything, a missing header nothing else.
pub fn content_type_allowed(allowed: &[String], headers: &Headers) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(value) = headers.get("content-type") else {
        return false;
    };
    let media = value.split(|b| *b == b';').next().unwrap_or_default();
    let Ok(media) = std::str::from_utf8(media) else {
        return false;
    };
    let media = media.trim().to_ascii_lowercase();
    let Some((ty, _)) = media.split_once('/') else {
        return false;
    };
    allowed.iter().any(|a| match a.strip_suffix("/*") {
        Some(wanted) => wanted == ty,
        None => *a == media,
    })
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

/// Verification, then the source's verified-request limit (only requests
/// that proved who sent them spend the provider's budget), then the rules.
pub fn on_body(
    source: &Source,
    head: &RequestHead,
    body: &[u8],
    now_unix_ms: i64,
    limiter: &Limiter<'_>,
) -> BodyDecision {
    // The target (scheme, authority, path) comes from the same headers, for
    // the schemes that sign the URL.
    let req = SignedRequest::new(&head.headers, body, now_unix_ms.div_euclid(1000));
    let verified = match source.scheme.verify(&req) {
        Ok(v) => v,
        Err(f) => return BodyDecision::Reply(Reply::reject(f.reason, f.header)),
    };
    if let Err(limited) = limiter.verified(&source.name, &source.rate_limits) {
        return BodyDecision::Reply(Reply::rate_limited(&limited));
    }
    match keeps(&source.rules, verified.event_type.as_deref(), head, body) {
        Verdict::Keep => {}
        Verdict::Drop => return BodyDecision::Reply(Reply::filtered()),
        Verdict::NotJson => {
            return BodyDecision::Reply(Reply::reject(Reason::BodyNotJson, None));
        }
    }
    let headers = head
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(':') && !DROPPED_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| Header {
            name,
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
        client_address: head.client_address().to_string(),
        provider_event_id: verified.provider_event_id.unwrap_or_default(),
        event_type: verified.event_type.unwrap_or_default(),
        body: body.to_vec(),
        request_id: head.request_id(),
    };
    BodyDecision::Publish(event.encode_to_vec())
}

/// What a source's rules say about a verified event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Acked as filtered, never published.
    Drop,
    /// A rule reads `body.*`, the body is not JSON, and the source rejects
    /// such bodies.
    NotJson,
}

/// The event-type lists first (no parsing), then the JSON match.
pub fn keeps(
    rules: &SourceRules,
    event_type: Option<&str>,
    head: &RequestHead,
    body: &[u8],
) -> Verdict {
    if !rules.event_types.is_empty() && !rules.event_types.admits(event_type) {
        return Verdict::Drop;
    }
    let Some(matcher) = &rules.matcher else {
        return Verdict::Keep;
    };
    let lookup = |name: &str| head.headers.get(name);
    let input = Input::new(body, &head.query, &lookup);
    match matcher.evaluate(&input) {
        Ok(true) => Verdict::Keep,
        Ok(false) => Verdict::Drop,
        Err(_) => match rules.invalid_json {
            InvalidJson::Reject => Verdict::NotJson,
            InvalidJson::NoMatch => Verdict::Drop,
        },
    }
}

/// The name of the counter of `outcome` for `source` (or for requests no
/// source matched).
pub fn outcome_metric(source: Option<&str>, outcome: Outcome) -> String {
    match source {
        Some(name) => format!("edgehook.source.{name}.{}", outcome.code()),
        None => format!("edgehook.{}", outcome.code()),
    }
}

/// The histogram of microseconds a source's requests spent in the filter,
/// from their headers to the answer (the sidecar's ack included).
pub fn time_metric(source: &str) -> String {
    format!("edgehook.source.{source}.filter_time_us")
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
    use crate::ratelimit::tests::FakeStore;
    use crate::verify::standard_webhooks::{decode_secret, sign};

    const S: u64 = 1_000_000_000;

    fn limiter(store: &FakeStore) -> Limiter<'_> {
        Limiter {
            store,
            now_ns: 1_700_000_000 * S,
        }
    }

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
        let store = FakeStore::default();
        let status = |h: RequestHead| match on_headers(&c, &h, &limiter(&store)) {
            HeadDecision::Reply { reply, .. } => reply.status,
            HeadDecision::ReadBody { .. } => 0,
            HeadDecision::PassThrough => 1,
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
        match on_headers(
            &c,
            &head("DELETE", "/hooks/z", "example.com", &[], false),
            &limiter(&store),
        ) {
            HeadDecision::Reply { reply, source } => {
                assert_eq!(source, Some(1));
                assert!(reply.headers.contains(&("allow", "POST, PUT".into())))
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
        let store = FakeStore::default();
        let BodyDecision::Publish(bytes) =
            on_body(&c.sources[0], &h, body, 1_700_000_000_123, &limiter(&store))
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
        let store = FakeStore::default();
        match on_body(&c.sources[0], &h, b"{}", 1000, &limiter(&store)) {
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

    /// One source with `extra` fields, and the default unknown-source policy
    /// unless `top` overrides it.
    fn guarded(extra: &str, top: &str) -> FilterConfig {
        let json = format!(
            r#"{{{top}"sources":[{{"name":"g","match":{{"path":"/g"}},"verify":{{"scheme":"standard-webhooks","secrets":["{SECRET}"]}}{extra}}}]}}"#
        );
        FilterConfig::parse(json.as_bytes(), &|_| None).unwrap()
    }

    fn post_from(client: &str, extra: &[(&str, &[u8])]) -> RequestHead {
        let h = head("POST", "/g", "x", extra, false);
        RequestHead::new(h.headers, false, client.to_string())
    }

    fn reply_of(d: HeadDecision) -> Option<Reply> {
        match d {
            HeadDecision::Reply { reply, .. } => Some(reply),
            _ => None,
        }
    }

    #[test]
    fn content_types_match_the_media_type_only() {
        let allowed = vec!["application/json".to_string(), "text/*".to_string()];
        let h = |v: &[u8]| Headers::new([("Content-Type".to_string(), v.to_vec())]);
        for (value, ok) in [
            (&b"application/json"[..], true),
            (b"Application/JSON; charset=utf-8", true),
            (b" application/json ;x=y", true),
            (b"text/plain", true),
            (b"application/x-www-form-urlencoded", false),
            (b"application/jsonx", false),
            (b"json", false),
            (b"", false),
            (&[0xff, b'/', b'x'], false),
        ] {
            assert_eq!(content_type_allowed(&allowed, &h(value)), ok, "{value:?}");
        }
        assert!(!content_type_allowed(&allowed, &Headers::default()));
        assert!(content_type_allowed(&[], &Headers::default()));

        let c = guarded(r#","content_types":["application/json"]"#, "");
        let store = FakeStore::default();
        let r = reply_of(on_headers(
            &c,
            &post_from("1.2.3.4:5", &[("content-type", b"text/plain")]),
            &limiter(&store),
        ))
        .unwrap();
        assert_eq!(
            (r.status, r.outcome),
            (415, Outcome::Rejected(Reason::UnsupportedMediaType))
        );
    }

    #[test]
    fn addresses_are_checked_on_the_peer_or_the_trusted_forwarded_entry() {
        let store = FakeStore::default();
        let c = guarded(
            r#","ip":{"allow":["10.0.0.0/8"],"deny":["10.6.0.0/16"]}"#,
            "",
        );
        let status =
            |h: RequestHead| reply_of(on_headers(&c, &h, &limiter(&store))).map(|r| r.status);
        assert_eq!(status(post_from("10.1.2.3:4000", &[])), None);
        assert_eq!(status(post_from("10.6.1.1:4000", &[])), Some(403));
        assert_eq!(status(post_from("192.0.2.1:4000", &[])), Some(403));
        assert_eq!(
            status(post_from("", &[])),
            Some(403),
            "unknown peer, lists set"
        );
        // Without trusted hops a forged X-Forwarded-For changes nothing.
        assert_eq!(
            status(post_from(
                "192.0.2.1:4000",
                &[("x-forwarded-for", b"10.1.1.1")]
            )),
            Some(403)
        );

        let c = guarded(r#","ip":{"deny":["203.0.113.0/24"],"trusted_hops":1}"#, "");
        let status =
            |h: RequestHead| reply_of(on_headers(&c, &h, &limiter(&store))).map(|r| r.status);
        assert_eq!(
            status(post_from(
                "127.0.0.1:1",
                &[("x-forwarded-for", b"203.0.113.7")]
            )),
            Some(403)
        );
        // The client's own claim left of the proxy's entry is not believed.
        assert_eq!(
            status(post_from(
                "127.0.0.1:1",
                &[("x-forwarded-for", b"203.0.113.7, 198.51.100.1")]
            )),
            None
        );
        assert_eq!(
            status(post_from("127.0.0.1:1", &[])),
            Some(403),
            "no entry from the proxy: unknown, and a deny list exists"
        );
    }

    #[test]
    fn the_per_client_limit_applies_before_the_body_per_address() {
        let store = FakeStore::default();
        let c = guarded(
            r#","ip":{"trusted_hops":1},"rate_limit":{"per_client":{"rps":1,"burst":2}}"#,
            "",
        );
        let from = |addr: &[u8]| post_from("127.0.0.1:1", &[("x-forwarded-for", addr)]);
        let l = limiter(&store);
        assert!(matches!(
            on_headers(&c, &from(b"198.51.100.1"), &l),
            HeadDecision::ReadBody { .. }
        ));
        assert!(matches!(
            on_headers(&c, &from(b"198.51.100.1"), &l),
            HeadDecision::ReadBody { .. }
        ));
        let r = reply_of(on_headers(&c, &from(b"198.51.100.1"), &l)).unwrap();
        assert_eq!(
            (r.status, r.outcome),
            (429, Outcome::Rejected(Reason::ClientRateLimited))
        );
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "retry-after" && v == "1")
        );
        assert!(r.headers.iter().any(|(k, _)| *k == "ratelimit-policy"));
        // Another client still has its own burst.
        assert!(matches!(
            on_headers(&c, &from(b"198.51.100.2"), &l),
            HeadDecision::ReadBody { .. }
        ));
        // A second later the first has a token again.
        let later = Limiter {
            store: &store,
            now_ns: l.now_ns + S,
        };
        assert!(matches!(
            on_headers(&c, &from(b"198.51.100.1"), &later),
            HeadDecision::ReadBody { .. }
        ));
    }

    #[test]
    fn unknown_sources_are_refused_or_passed_through() {
        let store = FakeStore::default();
        let h = head("POST", "/elsewhere", "x", &[], false);
        let c = guarded("", "");
        match on_headers(&c, &h, &limiter(&store)) {
            HeadDecision::Reply {
                source: None,
                reply,
            } => {
                assert_eq!(reply.status, 404);
                assert_eq!(reply.body, br#"{"error":"unknown_source"}"#);
            }
            other => panic!("{other:?}"),
        }
        let c = guarded("", r#""unknown_source":"pass_through","#);
        assert_eq!(
            on_headers(&c, &h, &limiter(&store)),
            HeadDecision::PassThrough
        );
        // A matched source is still guarded.
        assert!(
            reply_of(on_headers(
                &c,
                &head("GET", "/g", "x", &[], true),
                &limiter(&store)
            ))
            .is_some()
        );
    }

    /// A signed request to `/g?query` with `extra` headers.
    fn signed(body: &[u8], query: &str, extra: &[(&str, &[u8])]) -> RequestHead {
        let sig = sign(
            &decode_secret(SECRET).unwrap(),
            "msg_r",
            1_700_000_000,
            body,
        );
        let mut pairs: Vec<(&str, &[u8])> = vec![
            ("webhook-id", b"msg_r"),
            ("webhook-timestamp", b"1700000000"),
            ("webhook-signature", sig.as_bytes()),
        ];
        pairs.extend_from_slice(extra);
        let path = if query.is_empty() {
            "/g".to_string()
        } else {
            format!("/g?{query}")
        };
        let h = head("POST", &path, "x", &pairs, false);
        RequestHead::new(h.headers, false, "127.0.0.1:9".into())
    }

    #[test]
    fn the_client_address_is_asked_of_the_host_only_when_needed() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static READS: AtomicUsize = AtomicUsize::new(0);
        fn fetch() -> String {
            READS.fetch_add(1, SeqCst);
            "198.51.100.7:4000".to_string()
        }
        let lazy = |h: RequestHead| RequestHead::with_address_from(h.headers, false, fetch);
        let store = FakeStore::default();
        let body = br#"{"type":"a"}"#;

        // No IP rule or per-client limit: a forged request never reads it.
        let open = guarded("", "");
        // Signed over another body.
        let forged = lazy(signed(br#"{"type":"b"}"#, "", &[]));
        assert!(matches!(
            on_headers(&open, &forged, &limiter(&store)),
            HeadDecision::ReadBody { .. }
        ));
        assert_eq!(decide(&open, &store, &forged, body), 401);
        assert_eq!(READS.load(SeqCst), 0);

        // An event that is published carries it, read once.
        let good = lazy(signed(body, "", &[]));
        match on_body(
            &open.sources[0],
            &good,
            body,
            1_700_000_000_000,
            &limiter(&store),
        ) {
            BodyDecision::Publish(m) => {
                let e = Event::decode(m.as_slice()).unwrap();
                assert_eq!(e.client_address, "198.51.100.7:4000");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(good.client_address(), "198.51.100.7:4000");
        assert_eq!(READS.load(SeqCst), 1);

        // An IP rule reads it at the headers.
        let denying = guarded(r#","ip":{"deny":["198.51.100.0/24"]}"#, "");
        let r = reply_of(on_headers(
            &denying,
            &lazy(signed(body, "", &[])),
            &limiter(&store),
        ));
        assert_eq!(r.map(|r| r.status), Some(403));
        assert_eq!(READS.load(SeqCst), 2);
    }

    fn decide(c: &FilterConfig, store: &FakeStore, h: &RequestHead, body: &[u8]) -> u32 {
        match on_body(&c.sources[0], h, body, 1_700_000_000_000, &limiter(store)) {
            BodyDecision::Publish(_) => 202,
            BodyDecision::Reply(r) => r.status,
        }
    }

    #[test]
    fn the_verified_limit_counts_only_verified_requests() {
        let store = FakeStore::default();
        let c = guarded(r#","rate_limit":{"verified":{"rps":1,"burst":2}}"#, "");
        let body = br#"{"type":"a"}"#;
        let good = signed(body, "", &[]);
        let mut forged = good.clone();
        forged.headers = Headers::new(good.headers.iter().map(|(k, v)| {
            (
                k.clone(),
                if k == "webhook-signature" {
                    b"v1,AAAA".to_vec()
                } else {
                    v.to_vec()
                },
            )
        }));
        for _ in 0..50 {
            assert_eq!(decide(&c, &store, &forged, body), 401);
        }
        assert_eq!(decide(&c, &store, &good, body), 202);
        assert_eq!(decide(&c, &store, &good, body), 202);
        match on_body(
            &c.sources[0],
            &good,
            body,
            1_700_000_000_000,
            &limiter(&store),
        ) {
            BodyDecision::Reply(r) => {
                assert_eq!(
                    (r.status, r.outcome),
                    (429, Outcome::Rejected(Reason::SourceRateLimited))
                );
                assert!(
                    r.headers
                        .iter()
                        .any(|(k, v)| *k == "ratelimit-policy" && v == r#""verified";q=2;w=2"#)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rules_keep_drop_or_refuse_verified_events() {
        // (what, rules, body, query, extra header, expected status)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [u8],
            &'a str,
            Option<(&'a str, &'a [u8])>,
            u32,
        );
        let cases: Vec<Case> = vec![
            ("no rules", "{}", br#"{"type":"ping"}"#, "", None, 202),
            (
                "allowed type",
                r#"{"event_types":{"allow":["invoice.*"]}}"#,
                br#"{"type":"invoice.paid"}"#,
                "",
                None,
                202,
            ),
            (
                "type not allowed",
                r#"{"event_types":{"allow":["invoice.*"]}}"#,
                br#"{"type":"ping"}"#,
                "",
                None,
                200,
            ),
            (
                "denied type",
                r#"{"event_types":{"deny":["*.draft"]}}"#,
                br#"{"type":"invoice.draft"}"#,
                "",
                None,
                200,
            ),
            (
                "deny wins",
                r#"{"event_types":{"allow":["*"],"deny":["ping"]}}"#,
                br#"{"type":"ping"}"#,
                "",
                None,
                200,
            ),
            (
                "no type, allow list",
                r#"{"event_types":{"allow":["*"]}}"#,
                br#"{"x":1}"#,
                "",
                None,
                200,
            ),
            (
                "$gte holds",
                r#"{"match":{"body.data.amount":{"$gte":100}}}"#,
                br#"{"data":{"amount":100}}"#,
                "",
                None,
                202,
            ),
            (
                "$gte fails",
                r#"{"match":{"body.data.amount":{"$gte":100}}}"#,
                br#"{"data":{"amount":99}}"#,
                "",
                None,
                200,
            ),
            (
                "array element",
                r#"{"match":{"body.items.sku":{"$startsWith":"A-"}}}"#,
                br#"{"items":[{"sku":"B-1"},{"sku":"A-2"}]}"#,
                "",
                None,
                202,
            ),
            (
                "header $in",
                r#"{"match":{"headers.x-env":{"$in":["prod"]}}}"#,
                br#"{}"#,
                "",
                Some(("x-env", b"prod")),
                202,
            ),
            (
                "header missing",
                r#"{"match":{"headers.x-env":{"$exists":true}}}"#,
                br#"{}"#,
                "",
                None,
                200,
            ),
            (
                "query $eq",
                r#"{"match":{"query.account":"acme"}}"#,
                br#"{}"#,
                "account=acme",
                None,
                202,
            ),
            (
                "$or",
                r#"{"match":{"$or":[{"body.a":1},{"body.b":2}]}}"#,
                br#"{"b":2}"#,
                "",
                None,
                202,
            ),
            (
                "$not",
                r#"{"match":{"$not":{"body.test":true}}}"#,
                br#"{"test":true}"#,
                "",
                None,
                200,
            ),
            (
                "not JSON, reject",
                r#"{"match":{"body.a":1}}"#,
                b"a=1",
                "",
                None,
                400,
            ),
            (
                "not JSON, no_match",
                r#"{"match":{"body.a":1},"invalid_json":"no_match"}"#,
                b"a=1",
                "",
                None,
                200,
            ),
            (
                "not JSON, rule needs no body",
                r#"{"match":{"query.a":"1"}}"#,
                b"a=1",
                "a=1",
                None,
                202,
            ),
        ];
        for (what, rules, body, query, header, want) in cases {
            let c = guarded(&format!(r#","rules":{rules}"#), "");
            let store = FakeStore::default();
            let extra: Vec<(&str, &[u8])> = header.into_iter().collect();
            let h = signed(body, query, &extra);
            assert_eq!(decide(&c, &store, &h, body), want, "{what}");
        }
        let c = guarded(r#","rules":{"event_types":{"allow":["x"]}}"#, "");
        let body = br#"{"type":"y"}"#;
        match on_body(
            &c.sources[0],
            &signed(body, "", &[]),
            body,
            1_700_000_000_000,
            &limiter(&FakeStore::default()),
        ) {
            BodyDecision::Reply(r) => assert_eq!(r, Reply::filtered()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metric_names() {
        assert_eq!(
            outcome_metric(Some("stripe"), Outcome::Accepted),
            "edgehook.source.stripe.accepted"
        );
        assert_eq!(
            outcome_metric(Some("gh"), Outcome::Rejected(Reason::SignatureMismatch)),
            "edgehook.source.gh.signature_mismatch"
        );
        assert_eq!(
            outcome_metric(None, Outcome::Rejected(Reason::UnknownSource)),
            "edgehook.unknown_source"
        );
        assert_eq!(time_metric("gh"), "edgehook.source.gh.filter_time_us");
    }
}
