//! The edge's guards through real Envoy with two workers: method, size,
//! content type and address refusals before the body; the two rate limits
//! (per client before verification, per source on verified requests only),
//! shared by both workers through shared data; the source's rules acking
//! events as filtered without publishing them; and the per-source metrics.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const WORKERS: u32 = 2;

/// Envoy with two workers and `sources`; its sidecar cluster points at
/// `sidecar_port`.
async fn envoy(sources: Value, sidecar_port: u16) -> Envoy {
    let mut opts = EnvoyOptions::new(filter_config(sources, 2000), sidecar_port);
    opts.concurrency = WORKERS;
    Envoy::start(opts).await
}

/// Receiver, sidecar and a two-worker Envoy.
async fn stack(sources: Value) -> Stack {
    let receiver = Receiver::start().await;
    let sidecar = Sidecar::start(&Sidecar::destination_toml(
        "receiver",
        &receiver.url("/webhooks"),
    ))
    .await;
    let envoy = envoy(sources, sidecar.ingest_port).await;
    Stack {
        receiver,
        sidecar,
        envoy,
    }
}

/// Envoy's whole `/stats` text (histograms included, which `stats()`
/// leaves out).
async fn stats_text(envoy: &Envoy) -> String {
    envoy.stats_text().await
}

/// The demo source under another name and path, with `extra` fields.
fn source(name: &str, extra: Value) -> Value {
    let mut s = demo_source();
    s["name"] = json!(name);
    s["match"] = json!({"path": format!("/hooks/{name}")});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn signed(id: &str, body: &[u8]) -> Vec<(String, String)> {
    standard_webhooks_headers(SECRET, id, now_s(), body)
}

fn with(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.push((name.into(), value.into()));
    headers
}

/// Sends the head and one chunk of a chunked body that never ends, and
/// returns the status Envoy answers with meanwhile (0 if none in 10 s).
async fn chunked_without_end(port: u16, path: &str, chunk: &[u8]) -> u16 {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(chunk).await.unwrap();
    conn.write_all(b"\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn size_method_type_and_address_guards_answer_before_the_body() {
    // No sidecar: nothing here may reach it.
    let envoy = envoy(
        json!([
            source(
                "open",
                json!({"max_body_bytes": 64, "content_types": ["application/json"]})
            ),
            source("closed", json!({"ip": {"deny": ["127.0.0.0/8"]}})),
            source(
                "proxied",
                json!({"ip": {"deny": ["203.0.113.0/24"], "trusted_hops": 1}})
            ),
        ]),
        free_port(),
    )
    .await;
    let open = envoy.url("/hooks/open");
    let small = br#"{"type":"ping"}"#;

    let a = post(&open, &[], &[b'x'; 65]).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (413, Some("payload_too_large")),
        "{a:?}"
    );
    // No Content-Length: refused once the buffered body passes the limit,
    // while the sender is still sending.
    assert_eq!(
        chunked_without_end(envoy.port, "/hooks/open", &[b'x'; 100]).await,
        413
    );

    let get = client().get(&open).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let a = post(
        &open,
        &[("content-type".into(), "text/plain".into())],
        small,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (415, Some("unsupported_media_type")),
        "{a:?}"
    );
    let a = post(
        &open,
        &[(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        small,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (401, Some("missing_header")),
        "parameters do not change the media type: {a:?}"
    );

    let a = post(&open, &[], b"").await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (400, Some("body_required")),
        "{a:?}"
    );

    let a = post(&envoy.url("/hooks/closed"), &signed("m1", small), small).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (403, Some("address_denied")),
        "a signed request from a denied address: {a:?}"
    );

    // Behind one trusted proxy the client is the entry it appended.
    let proxied = envoy.url("/hooks/proxied");
    let a = post(
        &proxied,
        &[("x-forwarded-for".into(), "203.0.113.9".into())],
        small,
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    let a = post(
        &proxied,
        &[("x-forwarded-for".into(), "203.0.113.9, 198.51.100.4".into())],
        small,
    )
    .await;
    assert_eq!(a.status, 401, "a forged entry left of the proxy's: {a:?}");

    let a = post(&envoy.url("/nowhere"), &[], small).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (404, Some("unknown_source")),
        "{a:?}"
    );

    let stats = envoy.stats().await;
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    assert_eq!(stat("wasmcustom.edgehook.source.open.payload_too_large"), 2);
    assert_eq!(
        stat("wasmcustom.edgehook.source.open.method_not_allowed"),
        1
    );
    assert_eq!(
        stat("wasmcustom.edgehook.source.open.unsupported_media_type"),
        1
    );
    assert_eq!(stat("wasmcustom.edgehook.source.open.body_required"), 1);
    assert_eq!(stat("wasmcustom.edgehook.source.open.missing_header"), 1);
    assert_eq!(stat("wasmcustom.edgehook.source.closed.address_denied"), 1);
    assert_eq!(stat("wasmcustom.edgehook.source.proxied.address_denied"), 1);
    assert_eq!(stat("wasmcustom.edgehook.unknown_source"), 1);
    // The VMs' linear memory: whole 64 KiB wasm pages, at least one per VM.
    let vm_memory = stat("wasmcustom.edgehook.vm_memory_bytes");
    assert!(
        vm_memory >= 65_536 && vm_memory % 65_536 == 0,
        "{vm_memory}"
    );
    // Histograms show their values after Envoy's next stats flush (5 s).
    let started = Instant::now();
    let line = loop {
        let text = stats_text(&envoy).await;
        let line = text
            .lines()
            .find(|l| l.starts_with("wasmcustom.edgehook.source.open.filter_time_us: P0("))
            .map(str::to_string);
        if let Some(line) = line {
            break line;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no filter_time_us values in /stats"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!line.contains("nan"), "{line}");
    assert_eq!(stat("wasm.edgehook.vm_reload_success"), 0);
}

/// Connections each worker accepted on the webhooks listener.
fn per_worker_connections(stats: &std::collections::BTreeMap<String, i64>) -> Vec<i64> {
    (0..WORKERS)
        .map(|w| {
            stats
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("listener.127.0.0.1_")
                        && k.ends_with(&format!(".worker_{w}.downstream_cx_total"))
                })
                .map(|(_, v)| *v)
                .sum()
        })
        .collect()
}

#[tokio::test]
async fn a_burst_over_the_verified_limit_gets_429_and_both_workers_share_one_bucket() {
    let (rps, burst) = (2.0, 5u64);
    let stack = stack(json!([source(
        "limited",
        json!({"rate_limit": {"verified": {"rps": rps, "burst": burst}}})
    )]))
    .await;
    let url = stack.envoy.url("/hooks/limited");

    // Each request on its own connection, so the kernel spreads them over
    // both workers.
    let started = Instant::now();
    let sends = (0..40).map(|i| {
        let url = url.clone();
        async move {
            let body = format!(r#"{{"type":"burst","n":{i}}}"#).into_bytes();
            post(&url, &signed(&format!("msg_burst_{i}"), &body), &body).await
        }
    });
    let answers = futures_join_all(sends).await;
    let elapsed = started.elapsed().as_secs_f64();

    let accepted = answers.iter().filter(|a| a.status == 202).count() as u64;
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        accepted + limited.len() as u64,
        40,
        "every answer is 202 or 429: {answers:?}"
    );
    // The bucket is shared: both workers together get the burst plus what
    // the rate earned meanwhile, plus one token of tolerance for the refill
    // at millisecond granularity.
    let most = burst + (rps * elapsed).floor() as u64 + 1;
    assert!(
        (burst..=most).contains(&accepted),
        "{accepted} accepted in {elapsed:.2} s; expected {burst}..={most}"
    );
    for a in &limited {
        assert_eq!(a.json()["error"], "source_rate_limited", "{a:?}");
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=1).contains(&retry), "{a:?}");
        assert_eq!(a.header("ratelimit-policy"), Some(r#""verified";q=5;w=3"#));
        assert_eq!(a.header("ratelimit"), Some(r#""verified";r=0;t=1"#));
    }

    let stats = stack.envoy.stats().await;
    let workers = per_worker_connections(&stats);
    eprintln!(
        "burst: {accepted} of 40 accepted in {elapsed:.2} s (bound {most}); connections per worker {workers:?}"
    );
    assert!(
        workers.iter().all(|n| *n > 0),
        "both workers served: {workers:?}"
    );
    assert_eq!(
        stats
            .get("wasmcustom.edgehook.source.limited.accepted")
            .copied(),
        Some(accepted as i64)
    );
    assert_eq!(
        stats
            .get("wasmcustom.edgehook.source.limited.source_rate_limited")
            .copied(),
        Some(limited.len() as i64)
    );
    stack.receiver.wait_delivered(accepted as usize).await;
}

#[tokio::test]
async fn unsigned_floods_spend_only_their_own_client_budget() {
    let stack = stack(json!([source(
        "guarded",
        json!({
            "ip": {"trusted_hops": 1},
            "rate_limit": {
                "per_client": {"rps": 1, "burst": 10},
                "verified": {"rps": 0.01, "burst": 3},
            },
        })
    )]))
    .await;
    let url = stack.envoy.url("/hooks/guarded");
    let body = br#"{"type":"ping"}"#;

    // An attacker behind the trusted proxy floods unsigned requests.
    let started = Instant::now();
    let flood = (0..40).map(|_| {
        let url = url.clone();
        async move {
            post(
                &url,
                &[("x-forwarded-for".into(), "198.51.100.66".into())],
                body,
            )
            .await
        }
    });
    let answers = futures_join_all(flood).await;
    let elapsed = started.elapsed().as_secs_f64();
    let unsigned = answers.iter().filter(|a| a.status == 401).count() as u64;
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(unsigned + limited.len() as u64, 40, "{answers:?}");
    assert!(
        (10..=10 + elapsed.floor() as u64 + 1).contains(&unsigned),
        "{unsigned} reached verification in {elapsed:.2} s"
    );
    for a in &limited {
        assert_eq!(a.json()["error"], "client_rate_limited", "{a:?}");
        assert!(a.header("retry-after").is_some());
        assert_eq!(
            a.header("ratelimit-policy"),
            Some(r#""per_client";q=10;w=10"#)
        );
    }

    // The provider, another client, still has the source's whole verified
    // budget: the flood spent none of it.
    let provider = |id: &str| {
        with(
            signed(id, body),
            "x-forwarded-for",
            "attacker-claim, 203.0.113.10",
        )
    };
    for i in 0..3 {
        let a = post(&url, &provider(&format!("msg_provider_{i}")), body).await;
        assert_eq!(a.status, 202, "verified request {i}: {a:?}");
    }
    let a = post(&url, &provider("msg_provider_over"), body).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (429, Some("source_rate_limited")),
        "{a:?}"
    );
    stack.receiver.wait_delivered(3).await;

    let stats = stack.envoy.stats().await;
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    assert_eq!(
        stat("wasmcustom.edgehook.source.guarded.missing_header"),
        unsigned as i64
    );
    assert_eq!(
        stat("wasmcustom.edgehook.source.guarded.client_rate_limited"),
        limited.len() as i64
    );
    assert_eq!(stat("wasmcustom.edgehook.source.guarded.accepted"), 3);
    assert_eq!(
        stat("wasmcustom.edgehook.source.guarded.source_rate_limited"),
        1
    );
}

#[tokio::test]
async fn a_filtered_event_gets_200_and_never_reaches_the_receiver() {
    let stack = stack(json!([source(
        "billing",
        json!({"rules": {
            "event_types": {"allow": ["invoice.*"]},
            "match": {"body.amount": {"$gte": 100}},
        }})
    )]))
    .await;
    let url = stack.envoy.url("/hooks/billing");
    for (id, body) in [
        ("msg_ping", &br#"{"type":"ping","amount":500}"#[..]),
        ("msg_small", br#"{"type":"invoice.paid","amount":5}"#),
    ] {
        let a = post(&url, &signed(id, body), body).await;
        assert_eq!(a.status, 200, "{id}: {a:?}");
        assert_eq!(a.json(), json!({"status": "filtered"}));
    }
    let kept = br#"{"type":"invoice.paid","amount":500}"#;
    let a = post(
        &url,
        &with(signed("msg_kept", kept), "x-request-id", "req-guards-1"),
        kept,
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");

    // The kept event is the sentinel: the filtered ones were answered
    // before it was sent, so had they been published they would be here.
    let got = stack.receiver.wait_delivered(1).await;
    assert_eq!(stack.receiver.requests().len(), 1);
    assert_eq!(got[0].body.as_ref(), kept);
    assert_eq!(
        got[0].header("x-request-id"),
        Some("req-guards-1"),
        "one request id from edge to delivery"
    );

    let stats = stack.envoy.stats().await;
    assert_eq!(
        stats.get("wasmcustom.edgehook.source.billing.filtered"),
        Some(&2)
    );
    assert_eq!(
        stats.get("wasmcustom.edgehook.source.billing.accepted"),
        Some(&1)
    );
}

/// Runs the requests concurrently (each on its own connection) and
/// returns every answer.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<Answer>
where
    F: std::future::Future<Output = Answer> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    set.join_all().await
}

#[tokio::test]
async fn with_pass_through_an_unknown_path_goes_on_to_the_route() {
    let mut config = filter_config(json!([demo_source()]), 2000);
    config["unknown_source"] = json!("pass_through");
    let mut opts = EnvoyOptions::new(config, free_port());
    opts.concurrency = WORKERS;
    let envoy = Envoy::start(opts).await;

    // The route's cluster has nothing listening: Envoy's own 503 shows the
    // request went past the filter to the router.
    let a = post(&envoy.url("/not-a-webhook"), &[], b"{}").await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(!a.body.contains("unknown_source"), "{a:?}");
    let stats = envoy.stats().await;
    assert!(
        stats["cluster.upstream.upstream_cx_total"] >= 1,
        "the upstream was tried"
    );
    assert_eq!(stats["wasmcustom.edgehook.passed_through"], 1);

    // A source's path is still the filter's.
    let a = post(&envoy.url("/hooks/demo"), &[], b"{}").await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (401, Some("missing_header")),
        "{a:?}"
    );
}
