//! Nothing acked is lost: under steady load through real Envoy, the sidecar
//! is killed with SIGKILL again and again and restarted each time. Every
//! request is classified: acked (2xx) and delivered, acked and missing
//! (must be zero), not acked (a provider would retry; allowed either way).
//! Deliveries of one event more than once are counted and reported.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;

use crate::harness::*;

/// Kill and restart cycles in the short run (`make test`).
const KILLS: usize = 5;
/// New acks to wait for between two kills, so each kill lands under load.
const ACKS_BETWEEN_KILLS: usize = 20;
/// Concurrent senders.
const SENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acked_event() {
    let receiver = Receiver::start().await;
    let toml = format!(
        "[[destinations]]\nname = \"r\"\nurl = \"{}\"\ntimeout_ms = 2000\n\
         retry = {{ initial_ms = 50, max_delay_ms = 400, max_attempts = 1000, max_age_s = 600 }}\n",
        receiver.url("/in")
    );
    let mut sidecar = Sidecar::start(&toml).await;
    let envoy = Envoy::start(EnvoyOptions::new(
        filter_config(json!([demo_source()]), 1000),
        sidecar.ingest_port,
    ))
    .await;
    let url = envoy.url("/hooks/demo");

    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let not_acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (url, acked, not_acked, stop) =
            (url.clone(), acked.clone(), not_acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let msg = format!("msg_crash_{s}_{n}");
                let body = format!("{{\"sender\":{s},\"n\":{n}}}");
                let headers = standard_webhooks_headers(SECRET, &msg, now_s(), body.as_bytes());
                let a = post(&url, &headers, body.as_bytes()).await;
                match a.status {
                    202 => acked
                        .lock()
                        .unwrap()
                        .push(a.json()["id"].as_str().unwrap().to_string()),
                    503 => {
                        not_acked.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("unexpected answer {other}: {}", a.body),
                }
            }
        }));
    }

    for _ in 0..KILLS {
        let before = acked.lock().unwrap().len();
        eventually("more acks under load", || {
            (acked.lock().unwrap().len() >= before + ACKS_BETWEEN_KILLS).then_some(())
        })
        .await;
        sidecar.kill();
        sidecar.restart().await;
    }
    let before = acked.lock().unwrap().len();
    eventually("acks after the last restart", || {
        (acked.lock().unwrap().len() >= before + ACKS_BETWEEN_KILLS).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }

    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    receiver
        .wait_until("every acked event delivered", |_, ok| {
            let got: HashSet<&str> = ok.iter().filter_map(|d| d.header("webhook-id")).collect();
            acked.iter().all(|id| got.contains(id.as_str()))
        })
        .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for d in receiver.delivered() {
        *times
            .entry(d.header("webhook-id").unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let duplicates: usize = times.values().map(|n| n - 1).sum();
    let unacked_delivered = times.keys().filter(|id| !acked.contains(*id)).count();
    eprintln!(
        "crash suite: {KILLS} SIGKILLs; acked {} (delivered {}, missing 0); not acked {}; \
         delivered but not acked {unacked_delivered}; duplicate deliveries {duplicates}",
        acked.len(),
        acked.len(),
        not_acked.load(Ordering::SeqCst),
    );
    assert!(acked.len() >= (KILLS + 1) * ACKS_BETWEEN_KILLS);
}
