//! The fault suite (short version; `make soak` runs it longer). Nothing
//! acked is lost: under steady load through real Envoy, the sidecar is
//! killed with SIGKILL again and again, Envoy is restarted, the receiver
//! goes down, fails and hangs. Every request is classified: acked (2xx) and
//! delivered, acked and missing (must be zero), not acked (a provider would
//! retry; allowed either way). Deliveries of one event more than once are
//! counted and reported. Also: the disk floor, and damaged storage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;

use crate::harness::*;

/// Kill and restart cycles: a few in `make test`, more under `make soak`
/// (EDGEHOOK_SOAK_ROUNDS).
fn rounds(short: usize) -> usize {
    std::env::var("EDGEHOOK_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}
/// New acks to wait for between two kills, so each kill lands under load.
const ACKS_BETWEEN_KILLS: usize = 20;
/// Concurrent senders.
const SENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acked_event() {
    let receiver = Receiver::start().await;
    let mut sidecar = Sidecar::start(&fast_destination(&receiver.url("/in"), "")).await;
    let envoy = demo_envoy(sidecar.ingest_port, 1000).await;
    let load = Load::start(envoy.url("/hooks/demo"), SENDERS, "crash");
    let kills = rounds(5);
    for _ in 0..kills {
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        sidecar.kill();
        sidecar.restart().await;
    }
    load.more_acks(ACKS_BETWEEN_KILLS).await;
    let (acked, not_acked) = load.finish().await;
    let duplicates = all_delivered(&receiver, &acked).await;
    let unacked_delivered = receiver
        .delivered()
        .iter()
        .filter_map(|d| d.header("webhook-id"))
        .filter(|id| !acked.contains(*id))
        .collect::<HashSet<_>>()
        .len();
    eprintln!(
        "crash suite: {kills} SIGKILLs; acked {} (delivered {}, missing 0); not acked {not_acked}; \
         delivered but not acked {unacked_delivered}; duplicate deliveries {duplicates}",
        acked.len(),
        acked.len(),
    );
    assert!(acked.len() >= (kills + 1) * ACKS_BETWEEN_KILLS);
}

/// Senders posting signed demo webhooks to whatever URL `target` holds,
/// recording each event id that was acked, until `stop`.
struct Load {
    target: Arc<std::sync::Mutex<String>>,
    acked: Arc<std::sync::Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, senders: usize, tag: &str) -> Load {
        let target = Arc::new(std::sync::Mutex::new(url));
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for s in 0..senders {
            let (target, acked, refused, stop) =
                (target.clone(), acked.clone(), refused.clone(), stop.clone());
            let tag = tag.to_string();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let msg = format!("msg_{tag}_{s}_{n}");
                    let body = format!("{{\"sender\":{s},\"n\":{n}}}");
                    let url = target.lock().unwrap().clone();
                    let mut req = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    for (k, v) in standard_webhooks_headers(SECRET, &msg, now_s(), body.as_bytes())
                    {
                        req = req.header(k, v);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_string());
                        }
                        Ok(r) => {
                            assert_eq!(r.status().as_u16(), 503, "only 2xx or 503 from the edge");
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        // Envoy restarting: the connection is refused or reset.
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            // As a provider would, wait a little before the next try.
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                }
            }));
        }
        Load {
            target,
            acked,
            refused,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn more_acks(&self, n: usize) {
        let before = self.acked();
        eventually("more acks under load", || {
            (self.acked() >= before + n).then_some(())
        })
        .await;
    }

    async fn finish(mut self) -> (HashSet<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().iter().cloned().collect();
        (acked, self.refused.load(Ordering::SeqCst))
    }
}

/// Waits until every acked id was delivered; returns the duplicate count.
async fn all_delivered(receiver: &Receiver, acked: &HashSet<String>) -> usize {
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
    times.values().map(|n| n - 1).sum()
}

fn fast_destination(url: &str, extra: &str) -> String {
    format!(
        "[[destinations]]\nname = \"r\"\nurl = \"{url}\"\ntimeout_ms = 500\n\
         retry = {{ initial_ms = 50, max_delay_ms = 400, max_attempts = 1000, max_age_s = 600 }}\n\
         breaker = {{ failures = 5, cooldown_ms = 200, max_cooldown_ms = 1000 }}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_envoy_under_load_never_acks_what_was_not_stored() {
    let receiver = Receiver::start().await;
    let sidecar = Sidecar::start(&fast_destination(&receiver.url("/in"), "")).await;
    let options = || {
        EnvoyOptions::new(
            filter_config(json!([demo_source()]), 1000),
            sidecar.ingest_port,
        )
    };
    let mut envoy = Envoy::start(options()).await;
    let load = Load::start(envoy.url("/hooks/demo"), SENDERS, "envoy");
    for _ in 0..rounds(3) {
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        envoy.stop();
        envoy = Envoy::start(options()).await;
        *load.target.lock().unwrap() = envoy.url("/hooks/demo");
    }
    load.more_acks(ACKS_BETWEEN_KILLS).await;
    let (acked, refused) = load.finish().await;
    let duplicates = all_delivered(&receiver, &acked).await;
    eprintln!(
        "envoy restarts: acked {} (all delivered), refused or cut off {refused}, duplicate deliveries {duplicates}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_goes_down_fails_and_hangs_loses_nothing() {
    let mut receiver = Receiver::start().await;
    let sidecar = Sidecar::start(&fast_destination(&receiver.url("/in"), "")).await;
    let envoy = demo_envoy(sidecar.ingest_port, 1000).await;
    let load = Load::start(envoy.url("/hooks/demo"), SENDERS, "receiver");
    for _ in 0..rounds(1) {
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        receiver.set_default(Respond::Status(500));
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        receiver.down_now().await;
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        receiver.set_default(Respond::Hang);
        receiver.up().await;
        load.more_acks(ACKS_BETWEEN_KILLS).await;
        receiver.set_default(Respond::Status(200));
    }
    let (acked, refused) = load.finish().await;
    let duplicates = all_delivered(&receiver, &acked).await;
    eprintln!(
        "receiver faults: acked {} (all delivered), refused {refused}, duplicate deliveries {duplicates}",
        acked.len()
    );
}

#[tokio::test]
async fn under_the_disk_floor_the_edge_answers_503_and_ingest_resumes_by_itself() {
    let receiver = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let free = fs2::available_space(scratch.path()).unwrap();
    // The floor sits a margin under what is free now; a ballast file of
    // twice the margin pushes free space under it.
    let margin = (free / 8).min(512 << 20);
    let floor = free - margin;
    let sidecar = Sidecar::start(&format!(
        "[ingest]\nmin_free_disk_bytes = {floor}\n{}",
        fast_destination(&receiver.url("/in"), "")
    ))
    .await;
    assert_eq!(
        fs2::available_space(sidecar.data_dir().parent().unwrap()).unwrap() / (1 << 20),
        fs2::available_space(scratch.path()).unwrap() / (1 << 20),
        "the ballast and the data directory share a file system"
    );
    let envoy = demo_envoy(sidecar.ingest_port, 1000).await;
    let send = |n: usize| {
        let url = envoy.url("/hooks/demo");
        async move {
            let msg = format!("msg_disk_{n}");
            let body = format!("{{\"n\":{n}}}");
            send_signed(&url, &msg, body.as_bytes()).await
        }
    };
    let before = send(0).await;
    assert_eq!(before.status, 202, "{before:?}");

    let ballast = scratch.path().join("ballast");
    let file = std::fs::File::create(&ballast).unwrap();
    let len = i64::try_from(margin * 2).unwrap();
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, len) };
    assert_eq!(rc, 0, "posix_fallocate");
    let refused = send(1).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.body.contains("sidecar_unavailable"),
        "{}",
        refused.body
    );

    drop(file);
    std::fs::remove_file(&ballast).unwrap();
    let mut n = 2;
    let resumed = loop {
        let a = send(n).await;
        if a.status == 202 {
            break a;
        }
        assert_eq!(a.status, 503);
        n += 1;
        assert!(n < 500, "ingest did not resume after space came back");
    };
    let ids = [before.json()["id"].clone(), resumed.json()["id"].clone()];
    let got = receiver.wait_delivered(2).await;
    let delivered: Vec<&str> = got.iter().filter_map(|d| d.header("webhook-id")).collect();
    for id in &ids {
        assert!(delivered.contains(&id.as_str().unwrap()), "{id} delivered");
    }
    assert_eq!(got.len(), 2, "the refused event was never stored");
}

#[tokio::test]
async fn a_damaged_store_is_refused_at_start_with_the_path_named() {
    let receiver = Receiver::start().await;
    let mut sidecar = Sidecar::start(&fast_destination(&receiver.url("/in"), "")).await;
    let envoy = demo_envoy(sidecar.ingest_port, 1000).await;
    for i in 0..50 {
        let body = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(2000));
        let msg = format!("msg_damage_{i}");
        let a = send_signed(&envoy.url("/hooks/demo"), &msg, body.as_bytes()).await;
        assert_eq!(a.status, 202);
    }
    assert!(sidecar.stop().await.success());
    let db = sidecar.data_dir().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();

    let out = std::process::Command::new(edgehook_bin())
        .arg("serve")
        .arg("--config")
        .arg(sidecar.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on damaged storage: {stderr}"
    );
    assert!(
        stderr.contains(&sidecar.data_dir().display().to_string()) && stderr.contains("damaged"),
        "{stderr}"
    );
}
