//! The delivery engine against real HTTP receivers: retries and their
//! waiting, what is given up on at once, per-attempt timeouts, the
//! concurrency cap, isolation between destinations, outbound signatures,
//! dedupe of provider retries, and ordered delivery. Events enter through
//! real Envoy with the filter, as in production.

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{KeyInit, Mac};

use crate::harness::*;

/// A retry policy fast enough for tests.
const FAST_RETRY: &str =
    "retry = { initial_ms = 50, max_delay_ms = 400, max_attempts = 1000, max_age_s = 600 }";

fn destination(name: &str, url: &str, extra: &str) -> String {
    format!("[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\ntimeout_ms = 2000\n{extra}\n")
}

/// A sidecar with exactly `toml`'s destinations, behind Envoy with the demo
/// source.
async fn start(toml: &str) -> (Sidecar, Envoy) {
    let sidecar = Sidecar::start(toml).await;
    let envoy = demo_envoy(sidecar.ingest_port, 2000).await;
    (sidecar, envoy)
}

/// Sends a signed demo webhook; returns the event id from the 202.
async fn send(envoy: &Envoy, msg_id: &str, body: &[u8]) -> String {
    let headers = standard_webhooks_headers(SECRET, msg_id, now_s(), body);
    let a = post(&envoy.url("/hooks/demo"), &headers, body).await;
    assert_eq!(a.status, 202, "{a:?}");
    a.json()["id"].as_str().unwrap().to_string()
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.header("webhook-id").unwrap_or_default().to_string())
        .collect()
}

async fn wait_for_log(sidecar: &Sidecar, what: &str, needle: &str) {
    let path = sidecar.log_path();
    eventually(what, || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|l| l.contains(needle))
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_event_on_the_fourth_attempt() {
    let receiver = Receiver::start().await;
    receiver.script([
        Respond::Status(500),
        Respond::Status(503),
        Respond::Status(502),
    ]);
    let (sidecar, envoy) = start(&destination("r", &receiver.url("/in"), FAST_RETRY)).await;
    let id = send(&envoy, "msg_flaky", br#"{"n":1}"#).await;
    receiver.wait_delivered(1).await;
    wait_for_log(&sidecar, "the delivery to be recorded", "delivered").await;
    let all = receiver.requests();
    assert_eq!(
        all.iter().map(|d| d.answered).collect::<Vec<_>>(),
        [500, 503, 502, 200]
    );
    assert!(
        ids(&all).iter().all(|i| *i == id),
        "one webhook-id on every attempt"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start().await;
    receiver.script([Respond::WithHeaders(429, vec![("retry-after", "2".into())])]);
    // Without Retry-After the retry would come within 100 ms.
    let retry =
        "retry = { initial_ms = 50, max_delay_ms = 10000, max_attempts = 5, max_age_s = 600 }";
    let (_sidecar, envoy) = start(&destination("r", &receiver.url("/in"), retry)).await;
    send(&envoy, "msg_later", b"{}").await;
    receiver
        .wait_until("the 429", |all, _| !all.is_empty())
        .await;
    let first = Instant::now();
    receiver.wait_delivered(1).await;
    let gap = first.elapsed();
    assert_eq!(receiver.requests().len(), 2);
    assert!(
        gap >= Duration::from_millis(1_800),
        "the retry came {gap:?} after a Retry-After of 2 s"
    );
}

#[tokio::test]
async fn a_4xx_is_dead_lettered_at_once_with_the_reason() {
    let receiver = Receiver::start().await;
    receiver.script([Respond::Status(400), Respond::Status(410)]);
    let (sidecar, envoy) = start(&destination("r", &receiver.url("/in"), FAST_RETRY)).await;
    let bad = send(&envoy, "msg_400", b"{}").await;
    receiver
        .wait_until("the 400", |all, _| all.len() == 1)
        .await;
    let gone = send(&envoy, "msg_410", b"{}").await;
    receiver
        .wait_until("the 410", |all, _| all.len() == 2)
        .await;
    for (id, status) in [(&bad, 400), (&gone, 410)] {
        let path = sidecar.log_path();
        eventually("the dead letter in the log", || {
            let log = std::fs::read_to_string(&path).ok()?;
            log.lines()
                .find(|l| l.contains("dead-lettered") && l.contains(id.as_str()))
                .filter(|l| l.contains(&format!("status={status}")))
                .map(|_| ())
        })
        .await;
    }
    // A third event is delivered, and nothing more came for the first two.
    let ok = send(&envoy, "msg_ok", b"{}").await;
    let delivered = receiver.wait_delivered(1).await;
    assert_eq!(ids(&delivered), [ok]);
    assert_eq!(receiver.requests().len(), 3, "no retry of a 400 or a 410");
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let receiver = Receiver::start().await;
    receiver.script([Respond::Hang]);
    let extra = format!("{FAST_RETRY}\n");
    let toml = destination("r", &receiver.url("/in"), &extra)
        .replace("timeout_ms = 2000", "timeout_ms = 300");
    let (sidecar, envoy) = start(&toml).await;
    let id = send(&envoy, "msg_hang", b"{}").await;
    let got = receiver.wait_delivered(1).await;
    assert_eq!(ids(&got), [id]);
    assert_eq!(receiver.requests().len(), 2, "one hung attempt, one retry");
    wait_for_log(&sidecar, "the timeout in the log", "timed out").await;
}

#[tokio::test]
async fn a_slow_receiver_never_sees_more_requests_than_the_cap() {
    let receiver = Receiver::start().await;
    receiver.set_default(Respond::Slow(200, Duration::from_millis(250)));
    let extra = format!("{FAST_RETRY}\nmax_concurrency = 2");
    let (_sidecar, envoy) = start(&destination("r", &receiver.url("/in"), &extra)).await;
    for i in 0..8 {
        send(&envoy, &format!("msg_slow_{i}"), b"{}").await;
    }
    receiver.wait_delivered(8).await;
    assert_eq!(
        receiver.max_concurrent(),
        2,
        "the cap is reached, never passed"
    );
}

#[tokio::test]
async fn a_hanging_destination_does_not_delay_a_healthy_one() {
    let healthy = Receiver::start().await;
    let stuck = Receiver::start().await;
    stuck.set_default(Respond::Hang);
    let toml = format!(
        "{}{}",
        destination("healthy", &healthy.url("/in"), FAST_RETRY),
        destination("stuck", &stuck.url("/in"), FAST_RETRY)
            .replace("timeout_ms = 2000", "timeout_ms = 60000"),
    );
    let (sidecar, envoy) = start(&toml).await;
    for i in 0..5 {
        send(&envoy, &format!("msg_iso_{i}"), b"{}").await;
    }
    healthy.wait_delivered(5).await;
    stuck
        .wait_until("the stuck destination's attempts", |all, _| all.len() == 5)
        .await;
    assert!(
        !sidecar.log().contains("timed out"),
        "every delivery to the healthy destination came while the stuck one's first attempts hung"
    );
}

#[tokio::test]
async fn outbound_signatures_verify_with_the_standard_webhooks_algorithm() {
    let receiver = Receiver::start().await;
    let secret_b64 = "c2lnbmluZyBrZXkgZm9yIHRoZSB0ZXN0IGRlc3RpbmF0aW9u";
    register_secret(secret_b64);
    let extra = format!("{FAST_RETRY}\nsigning_secret = \"whsec_{secret_b64}\"");
    let (sidecar, envoy) = start(&destination("r", &receiver.url("/in"), &extra)).await;
    let body = br#"{"type":"invoice.paid","amount":7}"#;
    let id = send(&envoy, "msg_signed", body).await;
    let got = receiver.wait_delivered(1).await;
    let d = &got[0];
    let ts = d.header("webhook-timestamp").unwrap();
    assert!((ts.parse::<i64>().unwrap() - now_s()).abs() < 60);
    // The Standard Webhooks algorithm, written out here rather than taken
    // from the sidecar: HMAC-SHA256 over "id.timestamp.body" with the
    // base64-decoded secret, sent as "v1,<base64>".
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(d.header("webhook-id"), Some(id.as_str()));
    assert!(
        d.header("webhook-signature")
            .unwrap()
            .split(' ')
            .any(|s| s == expected),
        "{:?} does not hold {expected}",
        d.header("webhook-signature")
    );
    assert!(
        !sidecar.log().contains(secret_b64),
        "the secret is not logged"
    );
}

#[tokio::test]
async fn the_same_provider_event_id_twice_is_delivered_once() {
    let receiver = Receiver::start().await;
    let (_sidecar, envoy) = start(&destination("r", &receiver.url("/in"), FAST_RETRY)).await;
    let first = send(&envoy, "msg_twice", br#"{"a":1}"#).await;
    // The provider retries the same message (signed again, later).
    let again = send(&envoy, "msg_twice", br#"{"a":1}"#).await;
    assert_eq!(again, first, "the retry is acked with the first event's id");
    // Dedupe happens before the ack, so once a later event is delivered,
    // the retry can no longer produce a delivery.
    let other = send(&envoy, "msg_other", br#"{"a":2}"#).await;
    receiver
        .wait_until("both events", |_, ok| ok.len() >= 2)
        .await;
    let mut got = ids(&receiver.requests());
    got.sort();
    let mut want = vec![first, other];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_ordered_destination_delivers_in_ingest_order_and_a_failure_holds_the_rest() {
    let receiver = Receiver::start().await;
    receiver.script([Respond::Status(500), Respond::Status(500)]);
    let extra = format!("{FAST_RETRY}\nordered = true");
    let (_sidecar, envoy) = start(&destination("r", &receiver.url("/in"), &extra)).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(send(&envoy, &format!("msg_ord_{i}"), b"{}").await);
    }
    receiver.wait_delivered(4).await;
    let all = receiver.requests();
    assert_eq!(
        all.iter().map(|d| d.answered).collect::<Vec<_>>(),
        [500, 500, 200, 200, 200, 200]
    );
    let order = ids(&all);
    assert_eq!(
        order[..3],
        [sent[0].clone(), sent[0].clone(), sent[0].clone()]
    );
    assert_eq!(order[3..], sent[1..]);
    assert_eq!(receiver.max_concurrent(), 1);
}

#[tokio::test]
async fn sigterm_lets_an_attempt_in_flight_finish_and_records_it() {
    let receiver = Receiver::start().await;
    receiver.script([Respond::Slow(200, Duration::from_millis(700))]);
    let (mut sidecar, envoy) = start(&destination("r", &receiver.url("/in"), FAST_RETRY)).await;
    let first = send(&envoy, "msg_term_1", b"{}").await;
    eventually("the attempt to be in flight", || {
        (receiver.max_concurrent() >= 1).then_some(())
    })
    .await;
    let status = sidecar.stop().await;
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert_eq!(ids(&receiver.delivered()), std::slice::from_ref(&first));

    // After the restart the finished attempt is not made again.
    sidecar.restart().await;
    let second = send(&envoy, "msg_term_2", b"{}").await;
    receiver.wait_delivered(2).await;
    assert_eq!(ids(&receiver.requests()), [first, second]);
}

#[test]
#[should_panic(expected = "a secret (whse...) appeared in a test string")]
fn the_suite_wide_secret_scan_catches_a_leak() {
    assert_no_secret("a test string", &format!("config: {SECRET}"));
}
