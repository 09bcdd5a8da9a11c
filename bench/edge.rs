//! The edge: Envoy with the filter against plain Envoy, with the same load
//! generator at the same concurrency, for each path a webhook can take; the
//! full path's latency at a fixed rate; and the filter's memory as requests
//! go by.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::{self, Envoy, EnvoyOptions};
use crate::load;
use crate::noise::{Rounds, StealMeter};
use crate::sidecar::{Sidecar, rss_of};
use crate::wrk::{self, WrkResult, WrkSettings};

/// The secret of the `full` source (generic HMAC over the body, hex).
const FULL_SECRET: &str = "bench-secret";

/// Sources for the three filter paths: `sw` (Standard Webhooks, with a rule
/// that drops every event whose type is not `invoice.*`) serves the reject
/// and the filtered paths; `full` has no provider event id, so each request
/// is a new event that is stored (a fixed Standard Webhooks id would be
/// deduplicated, which is not the path to measure).
fn sources() -> Value {
    json!([
        {
            "name": "sw",
            "match": {"path": "/hooks/sw"},
            "verify": {"scheme": "standard-webhooks", "secrets": [harness::SECRET]},
            "max_body_bytes": 1_048_576,
            "rules": {"event_types": {"allow": ["invoice.*"]}}
        },
        {
            "name": "full",
            "match": {"path": "/hooks/full"},
            "verify": {"scheme": "hmac", "secrets": [FULL_SECRET], "header": "x-signature",
                       "algorithm": "sha256", "encoding": "hex"},
            "max_body_bytes": 1_048_576
        }
    ])
}

pub fn body(bytes: usize) -> Vec<u8> {
    let head = r#"{"type":"bench.dropped","pad":""#;
    let tail = r#""}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

fn full_headers(body: &[u8]) -> Vec<(String, String)> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(FULL_SECRET.as_bytes()).unwrap();
    mac.update(body);
    vec![
        ("content-type".into(), "application/json".into()),
        (
            "x-signature".into(),
            hex::encode(mac.finalize().into_bytes()),
        ),
    ]
}

fn sw_headers(body: &[u8], valid: bool) -> Vec<(String, String)> {
    let mut h =
        harness::standard_webhooks_headers(harness::SECRET, "msg_bench", harness::now_s(), body);
    if !valid {
        for (k, v) in &mut h {
            if k == "webhook-signature" {
                *v = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
            }
        }
    }
    h.push(("content-type".into(), "application/json".into()));
    h
}

/// (what, which Envoy, route, headers, the status every answer must have)
type Case<'a> = (&'static str, &'a Envoy, &'a str, Vec<(String, String)>, u16);

#[derive(Debug, Clone, Serialize)]
pub struct PathRun {
    pub path: &'static str,
    pub body_bytes: usize,
    pub expect_status: u16,
    /// Each round's run; the median round (by requests/s) is the one
    /// reported.
    pub rounds: Rounds<WrkResult>,
    /// The median round's throughput as a share of plain Envoy's median
    /// round with the same body.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    pub wrk: String,
    pub settings: WrkSettings,
    /// Rounds of every path, interleaved.
    pub rounds: u32,
    pub envoy_workers: u32,
    pub runs: Vec<PathRun>,
}

/// Plain Envoy (`baseline`), or Envoy with the filter making one call per
/// event, or batching per worker (`batch`).
async fn envoy(baseline: bool, batch: bool, sidecar_port: u16) -> Envoy {
    let mut filter = harness::filter_config(sources(), 2000);
    if batch {
        filter["sidecar"]["batch"] = json!({"tick_ms": 1});
    }
    let mut opts = EnvoyOptions::new(filter, sidecar_port);
    opts.baseline = baseline;
    opts.log_level = "warn";
    opts.concurrency = 1;
    Envoy::start(opts).await
}

pub async fn edge(settings: &WrkSettings, rounds: u32, body_sizes: &[usize]) -> EdgeReport {
    let scratch = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start("");
    let plain = envoy(true, false, sidecar.port).await;
    let filtered = envoy(false, false, sidecar.port).await;
    let batched = envoy(false, true, sidecar.port).await;
    let mut runs = Vec::new();
    for &size in body_sizes {
        let b = body(size);
        let cases: [Case; 5] = [
            (
                "baseline (plain Envoy, buffer + direct response)",
                &plain,
                "/hooks/sw",
                sw_headers(&b, true),
                202,
            ),
            (
                "reject (bad signature)",
                &filtered,
                "/hooks/sw",
                sw_headers(&b, false),
                401,
            ),
            (
                "verify + drop by rule",
                &filtered,
                "/hooks/sw",
                sw_headers(&b, true),
                200,
            ),
            (
                "full, one call per event: verify, publish, durable store",
                &filtered,
                "/hooks/full",
                full_headers(&b),
                202,
            ),
            (
                "full, batched per worker (the shipped configs)",
                &batched,
                "/hooks/full",
                full_headers(&b),
                202,
            ),
        ];
        // Rounds interleave the paths, so that a stretch of stolen CPU time
        // falls on all of them rather than on one.
        let mut samples: Vec<Vec<(WrkResult, f64)>> = vec![Vec::new(); cases.len()];
        for _ in 0..rounds.max(1) {
            for ((path, envoy, route, headers, expect), samples) in cases.iter().zip(&mut samples) {
                let url = envoy.url(route);
                wrk::warm_up(&url, headers, &b, scratch.path());
                let steal = StealMeter::start();
                let result = wrk::run(&url, headers, &b, settings, scratch.path());
                assert!(
                    result.share(*expect) > 0.999,
                    "{path}: expected {expect} answers, got {:?}",
                    result.statuses
                );
                samples.push((result, steal.stolen_share()));
            }
        }
        let mut baseline_rps = 0.0;
        for ((path, _, _, _, expect), samples) in cases.iter().zip(samples) {
            let rounds = Rounds::of(samples, |r: &WrkResult| r.rps);
            if baseline_rps == 0.0 {
                baseline_rps = rounds.median.rps;
            }
            runs.push(PathRun {
                path,
                body_bytes: size,
                expect_status: *expect,
                ratio: rounds.median.rps / baseline_rps,
                rounds,
            });
        }
    }
    EdgeReport {
        wrk: wrk::version(),
        settings: settings.clone(),
        rounds,
        envoy_workers: 1,
        runs,
    }
}

/// The full path at a fixed rate below saturation: latency is service
/// time, measured from when each request was due.
pub async fn fixed_rate(rps: u64, seconds: u64) -> load::FixedRateResult {
    let sidecar = Sidecar::start("");
    let envoy = envoy(false, true, sidecar.port).await;
    let b = body(1024);
    let headers = full_headers(&b);
    let url = envoy.url("/hooks/full");
    // Warm the connection pool and the VM.
    load::fixed_rate(&url, 200, Duration::from_secs(1), 202, |_| {
        (headers.clone(), b.clone())
    })
    .await;
    load::fixed_rate(&url, rps, Duration::from_secs(seconds), 202, |_| {
        (headers.clone(), b.clone())
    })
    .await
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryRun {
    /// (requests so far, Envoy's resident bytes, the filter VM's linear
    /// memory in bytes) after each round.
    pub samples: Vec<(u64, u64, u64)>,
    /// Growth of the VM's linear memory from the first sample (after
    /// warm-up) to the last: exact, and what the goal is judged on.
    pub vm_growth_bytes: i64,
    /// Growth of Envoy's resident memory over the same requests; it also
    /// moves with Envoy's own buffers and allocator.
    pub rss_growth_bytes: i64,
}

/// The filter VM's linear memory (the filter's own gauge) and Envoy's
/// resident memory, with one worker so one VM serving, after rounds of
/// requests through the filter's verify path.
pub async fn filter_memory(rounds: u64, per_round: u64) -> MemoryRun {
    let sidecar = Sidecar::start("");
    let envoy = envoy(false, true, sidecar.port).await;
    let pid = envoy.pid().expect("Envoy runs");
    let b = body(1024);
    let headers = sw_headers(&b, false);
    let url = envoy.url("/hooks/sw");
    let mut samples = Vec::new();
    let mut sent = 0;
    for _ in 0..=rounds {
        let r = load::fixed_rate(
            &url,
            5_000,
            Duration::from_secs_f64(per_round as f64 / 5_000.0),
            401,
            |_| (headers.clone(), b.clone()),
        )
        .await;
        sent += r.sent;
        let vm = envoy.stat("wasmcustom.edgehook.vm_memory_bytes").await;
        samples.push((sent, rss_of(pid).0, u64::try_from(vm).unwrap_or(0)));
    }
    let growth = |pick: fn(&(u64, u64, u64)) -> u64| {
        let first = samples.first().map_or(0, |s| pick(s) as i64);
        samples.last().map_or(0, |s| pick(s) as i64) - first
    };
    MemoryRun {
        vm_growth_bytes: growth(|s| s.2),
        rss_growth_bytes: growth(|s| s.1),
        samples,
    }
}
