//! One delivery attempt: the outbound request (original body and content
//! type, `webhook-id`, Standard Webhooks signature when the destination has
//! a secret) under its own timeout, and what came back.

use std::time::{Duration, SystemTime};

use super::outcome::{AttemptResult, parse_retry_after};
use crate::store::StoredEvent;

/// How much of a receiver's response body is kept for dead letters.
pub const KEPT_RESPONSE_BYTES: usize = 4096;

pub struct Target<'a> {
    pub url: &'a str,
    pub timeout: Duration,
    pub signing_key: Option<&'a [u8]>,
}

pub async fn attempt(
    client: &reqwest::Client,
    target: &Target<'_>,
    event: &StoredEvent,
) -> AttemptResult {
    let Some(inner) = &event.event else {
        return AttemptResult::OtherError("stored event has no payload".into());
    };
    let content_type = inner
        .headers
        .iter()
        .find(|h| h.name == "content-type")
        .map(|h| h.value.clone())
        .unwrap_or_else(|| b"application/octet-stream".to_vec());
    let mut request = client
        .post(target.url)
        .timeout(target.timeout)
        .header("content-type", content_type)
        .header("webhook-id", &event.id)
        .body(inner.body.clone());
    if !inner.request_id.is_empty() {
        request = request.header("x-request-id", &inner.request_id);
    }
    if let Some(key) = target.signing_key {
        let ts = crate::clock::now_ms().div_euclid(1000);
        request = request.header("webhook-timestamp", ts.to_string()).header(
            "webhook-signature",
            crate::signing::sign(key, &event.id, ts, &inner.body),
        );
    }
    match request.send().await {
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

/// reqwest's top-level message says little ("error sending request"); the
/// cause chain says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
