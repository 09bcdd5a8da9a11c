//! One delivery attempt: the outbound request (original body and content
//! type, `webhook-id`, Standard Webhooks signature when the destination has
//! a secret, forwarded and configured headers) and the transport that sends
//! it under its own timeout. Building the request is plain code; sending it
//! is behind `Transport` so the delivery loop's timing can be tested on a
//! paused clock, while every HTTP test uses `HttpTransport` against real
//! receivers.

use crate::error_chain::error_chain;
use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::Destination;
use super::outcome::{AttemptResult, parse_retry_after};
use crate::store::StoredEvent;

/// How much of a receiver's response body is kept with an attempt and in a
/// dead letter.
pub const KEPT_RESPONSE_BYTES: usize = 4096;

/// An HTTP POST, ready to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// The request for one attempt at `now_s` (unix seconds, for the signature).
pub fn outbound(dest: &Destination, event: &StoredEvent, now_s: i64) -> Outbound {
    let mut headers = HeaderMap::new();
    let Some(inner) = &event.event else {
        return Outbound {
            url: dest.url.clone(),
            headers,
            body: Vec::new(),
            timeout: dest.timeout,
        };
    };
    for h in &inner.headers {
        if dest.forward_headers.contains(&h.name)
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(&h.value),
            )
        {
            headers.append(name, value);
        }
    }
    for (name, value) in &dest.headers {
        headers.insert(name.clone(), value.clone());
    }
    let content_type = inner
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .and_then(|h| HeaderValue::from_bytes(&h.value).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    headers.insert(reqwest::header::CONTENT_TYPE, content_type);
    if let Ok(id) = HeaderValue::from_str(&event.id) {
        headers.insert("webhook-id", id);
    }
    if !inner.request_id.is_empty()
        && let Ok(v) = HeaderValue::from_str(&inner.request_id)
    {
        headers.insert("x-request-id", v);
    }
    if let Some(key) = &dest.signing_key {
        let signature = crate::signing::sign(key, &event.id, now_s, &inner.body);
        headers.insert("webhook-timestamp", HeaderValue::from(now_s));
        if let Ok(v) = HeaderValue::from_str(&signature) {
            headers.insert("webhook-signature", v);
        }
    }
    Outbound {
        url: dest.url.clone(),
        headers,
        body: inner.body.clone(),
        timeout: dest.timeout,
    }
}

/// Sends one request and says what came back. Must not fail in any other
/// way than through `AttemptResult`.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, request: Outbound) -> impl Future<Output = AttemptResult> + Send;
}

/// The real one: reqwest, redirects not followed, the attempt's timeout
/// covering connect, request and the kept part of the response.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new() -> Result<HttpTransport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("edgehook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTransport { client })
    }
}

impl Transport for HttpTransport {
    fn send(&self, request: Outbound) -> impl Future<Output = AttemptResult> + Send {
        let client = self.client.clone();
        async move {
            let timeout = request.timeout;
            let sent = client
                .post(&request.url)
                .timeout(timeout)
                .headers(request.headers)
                .body(request.body)
                .send();
            let exchange = async {
                match sent.await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        let body = read_prefix(response, KEPT_RESPONSE_BYTES).await;
                        AttemptResult::Response {
                            status,
                            retry_after,
                            body,
                        }
                    }
                    Err(e) if e.is_timeout() => AttemptResult::Timeout,
                    Err(e) if e.is_connect() => AttemptResult::ConnectError(error_chain(&e)),
                    Err(e) => AttemptResult::OtherError(error_chain(&e)),
                }
            };
            // reqwest's timeout covers the body too; this is the backstop.
            tokio::time::timeout(timeout + Duration::from_millis(100), exchange)
                .await
                .unwrap_or(AttemptResult::Timeout)
        }
    }
}

async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationConfig;
    use edgehook_proto::v1::{Event, Header};

    fn dest(extra: &str) -> Destination {
        let c: DestinationConfig = toml::from_str(&format!(
            "name = \"d\"\nurl = \"http://127.0.0.1:1/in\"\n{extra}"
        ))
        .unwrap();
        Destination::from_config(1, &c).unwrap()
    }

    fn event() -> StoredEvent {
        let h = |n: &str, v: &[u8]| Header {
            name: n.into(),
            value: v.to_vec(),
        };
        StoredEvent {
            id: "evt_1".into(),
            event: Some(Event {
                body: br#"{"a":1}"#.to_vec(),
                headers: vec![
                    h("content-type", b"application/json; charset=utf-8"),
                    h("stripe-signature", b"t=1,v1=abc"),
                    h("x-other", b"no"),
                ],
                request_id: "req-9".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn carries_the_body_type_id_and_request_id_and_nothing_unasked() {
        let o = outbound(&dest(""), &event(), 1_700_000_000);
        assert_eq!(o.body, br#"{"a":1}"#);
        assert_eq!(o.headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(o.headers["webhook-id"], "evt_1");
        assert_eq!(o.headers["x-request-id"], "req-9");
        assert!(o.headers.get("webhook-signature").is_none());
        assert!(o.headers.get("stripe-signature").is_none());
        assert!(o.headers.get("x-other").is_none());
    }

    #[test]
    fn forwards_allowlisted_headers_adds_configured_ones_and_signs() {
        let d = dest(
            "forward_headers = [\"stripe-signature\"]\nheaders = { x-team = \"billing\" }\n\
             signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        );
        let o = outbound(&d, &event(), 1_700_000_000);
        assert_eq!(o.headers["stripe-signature"], "t=1,v1=abc");
        assert_eq!(o.headers["x-team"], "billing");
        assert_eq!(o.headers["webhook-timestamp"], "1700000000");
        let key = crate::signing::decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(crate::signing::verify(
            &key,
            "evt_1",
            1_700_000_000,
            &o.body,
            o.headers["webhook-signature"].to_str().unwrap()
        ));
    }
}
