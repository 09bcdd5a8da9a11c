//! The load generators wrk cannot be: an open-loop HTTP generator at a fixed
//! rate (latency is measured from when each request was due, so a stall
//! shows up as the queueing it causes instead of being hidden), and
//! concurrent gRPC publishers straight into the sidecar's ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgehook_proto::v1::Event;
use edgehook_proto::v1::ingest_client::IngestClient;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Mutex;

#[derive(Debug, Clone, Serialize)]
pub struct FixedRateResult {
    pub target_rps: u64,
    pub seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// POSTs at `rps` for `duration`; `request(i)` gives the i-th request's
/// headers and body (each can be unique). `ok_status` is what counts as
/// success.
pub async fn fixed_rate(
    url: &str,
    rps: u64,
    duration: Duration,
    ok_status: u16,
    request: impl Fn(u64) -> (Vec<(String, String)>, Vec<u8>),
) -> FixedRateResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = rps * duration.as_secs().max(1);
    let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let (headers, body) = request(i);
        let mut req = client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (hist, ok, failed) = (hist.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            let good = match req.send().await {
                Ok(r) => r.status().as_u16() == ok_status && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let latency = due.elapsed().as_micros() as u64;
            hist.lock().await.record(latency.max(1)).ok();
            if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
        });
        // Reap finished requests as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let h = hist.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    FixedRateResult {
        target_rps: rps,
        seconds: start.elapsed().as_secs_f64(),
        sent: total,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestResult {
    pub clients: usize,
    pub seconds: f64,
    pub acked: u64,
    pub failed: u64,
    pub events_per_s: f64,
}

/// `clients` concurrent publishers, each sending one event at a time to
/// the sidecar's ingest for `duration` (or until `max_events` in all).
pub async fn publish(
    ingest_port: u16,
    clients: usize,
    duration: Duration,
    max_events: u64,
    body: Vec<u8>,
) -> IngestResult {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{ingest_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let (acked, failed, issued) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut client = IngestClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let (acked, failed, issued, body) =
            (acked.clone(), failed.clone(), issued.clone(), body.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_events {
                let event = Event {
                    source: "bench".into(),
                    received_at_ms: edgehook_sidecar::clock::now_ms(),
                    method: "POST".into(),
                    path: "/hooks/bench".into(),
                    event_type: "invoice.paid".into(),
                    body: body.clone(),
                    ..Default::default()
                };
                match client.publish(event).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = start.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    IngestResult {
        clients,
        seconds,
        acked,
        failed: failed.load(Ordering::Relaxed),
        events_per_s: acked as f64 / seconds.max(1e-9),
    }
}
