//! Bad input through real Envoy, on one worker: each gets a clear status,
//! nothing panics the filter's VM, and the next good request on the same
//! worker is still verified and acked. Answers never echo request data.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// The demo source with a small body limit, one Envoy worker.
async fn stack() -> Stack {
    let mut source = demo_source();
    source["max_body_bytes"] = json!(1024);
    Stack::start(json!([source]), "").await
}

/// A good request still gets 202, and the VM never had to be reloaded.
async fn still_serving(stack: &Stack, n: usize) {
    let a = stack
        .send_demo(&format!("msg_after_{n}"), br#"{"ok":true}"#)
        .await;
    assert_eq!(a.status, 202, "after case {n}: {a:?}");
    assert_eq!(
        stack.envoy.stat("wasm.edgehook.vm_reload_success").await,
        0,
        "the filter's VM trapped (case {n})"
    );
}

/// Writes `head` then `body` on a raw connection and returns the status
/// line's code, or 0 when the connection was closed without an answer.
async fn raw(port: u16, head: String, body: &[u8], close_after: bool) -> u16 {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    if close_after {
        conn.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn signed_head(body: &[u8], content_length: usize, extra: &str) -> String {
    let mut head = format!(
        "POST /hooks/demo HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n{extra}"
    );
    for (k, v) in standard_webhooks_headers(SECRET, "msg_raw", now_s(), body) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test]
async fn oversized_and_odd_headers_get_a_4xx_and_the_worker_keeps_serving() {
    let stack = stack().await;
    let url = stack.envoy.url("/hooks/demo");
    let body = br#"{"type":"ping"}"#;

    // One very long header value.
    let mut headers = standard_webhooks_headers(SECRET, "msg_long", now_s(), body);
    headers.push(("x-long".into(), "a".repeat(100 * 1024)));
    let a = post(&url, &headers, body).await;
    assert!((400..500).contains(&a.status), "{a:?}");
    still_serving(&stack, 1).await;

    // Thousands of headers.
    let mut headers = standard_webhooks_headers(SECRET, "msg_many", now_s(), body);
    for i in 0..2000 {
        headers.push((format!("x-h{i}"), "v".into()));
    }
    let a = post(&url, &headers, body).await;
    assert!((400..500).contains(&a.status), "{a:?}");
    still_serving(&stack, 2).await;

    // A signature header of raw bytes and a timestamp that is not digits.
    let mut headers = standard_webhooks_headers(SECRET, "msg_odd", now_s(), body);
    headers.retain(|(k, _)| k != "webhook-timestamp");
    headers.push(("webhook-timestamp".into(), "1e9".into()));
    let a = post(&url, &headers, body).await;
    assert_eq!(a.status, 401, "{a:?}");
    still_serving(&stack, 3).await;
}

#[tokio::test]
async fn bodies_at_and_over_the_limit_truncated_or_mislabelled() {
    let stack = stack().await;
    let port = stack.envoy.port;

    // Exactly at the limit: accepted. One byte over: 413.
    let at = vec![b' '; 1024];
    let mut at_limit = at.clone();
    at_limit[0] = b'{';
    at_limit[1023] = b'}';
    let a = post(
        &stack.envoy.url("/hooks/demo"),
        &standard_webhooks_headers(SECRET, "msg_at", now_s(), &at_limit),
        &at_limit,
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let mut over = at_limit.clone();
    over.push(b' ');
    let a = post(
        &stack.envoy.url("/hooks/demo"),
        &standard_webhooks_headers(SECRET, "msg_over", now_s(), &over),
        &over,
    )
    .await;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("payload_too_large"), "{}", a.body);
    still_serving(&stack, 1).await;

    // A body cut short: the sender promised 200 bytes, sent 20, and hung up.
    let body = br#"{"type":"truncated"}"#;
    let code = raw(port, signed_head(body, 200, ""), body, true).await;
    assert!(code == 0 || (400..600).contains(&code), "{code}");
    still_serving(&stack, 2).await;

    // A content-length shorter than the body: the signature no longer
    // matches what Envoy reads as the body.
    let body = br#"{"type":"short-length"}"#;
    let code = raw(
        port,
        signed_head(body, 10, "connection: close\r\n"),
        body,
        false,
    )
    .await;
    assert_eq!(code, 401);
    still_serving(&stack, 3).await;

    // Invalid JSON with a valid signature is still an event (no rule needs
    // its fields here).
    let body = b"{not json";
    let code = raw(
        port,
        signed_head(body, body.len(), "connection: close\r\n"),
        body,
        false,
    )
    .await;
    assert_eq!(code, 202);
    still_serving(&stack, 4).await;
}

#[tokio::test]
async fn a_slow_sender_is_served() {
    let stack = stack().await;
    let body = br#"{"type":"slow","pad":"0123456789012345678901234567890123456789"}"#;
    let mut conn = TcpStream::connect(("127.0.0.1", stack.envoy.port))
        .await
        .unwrap();
    conn.write_all(signed_head(body, body.len(), "connection: close\r\n").as_bytes())
        .await
        .unwrap();
    for chunk in body.chunks(16) {
        conn.write_all(chunk).await.unwrap();
        conn.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    stack.receiver.wait_delivered(1).await;
}

#[tokio::test]
async fn answers_never_echo_request_data() {
    let stack = stack().await;
    let marker = "<script>alert(1)</script>";
    let encoded = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let body = format!(r#"{{"type":"{marker}"}}"#);
    let mut headers = standard_webhooks_headers(SECRET, marker, now_s(), body.as_bytes());
    headers.push(("x-anything".into(), marker.into()));
    for (path, expect) in [
        (format!("/hooks/{encoded}"), 404),
        ("/hooks/demo".to_string(), 202),
    ] {
        let a = post(&stack.envoy.url(&path), &headers, body.as_bytes()).await;
        assert_eq!(a.status, expect, "{a:?}");
        for needle in ["<script", "alert(1)", encoded] {
            assert!(!a.body.contains(needle), "{path}: {}", a.body);
            for (k, v) in &a.headers {
                assert!(
                    !v.to_str().unwrap_or("").contains(needle),
                    "{path}: header {k} echoes the request"
                );
            }
        }
    }
    // A tampered signature: the 401 names the reason, not the value.
    headers.retain(|(k, _)| k != "webhook-signature");
    headers.push(("webhook-signature".into(), format!("v1,{marker}")));
    let a = post(&stack.envoy.url("/hooks/demo"), &headers, body.as_bytes()).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(!a.body.contains("script"), "{}", a.body);
}
