//! The sidecar alone: durable ingest through gRPC, delivery to a local
//! receiver (and draining a backlog), and a large backlog's disk, memory
//! and restart time. The sidecar runs as its own process, as in production.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::load;
use crate::noise::StealMeter;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `edgehook serve` (the build this benchmark was built with) on its own
/// data directory, logging at `info` as a deployment would.
pub struct Sidecar {
    child: Option<Child>,
    pub port: u16,
    /// `/metrics`, on a port of its own so that sidecars running at the same
    /// time (other benchmarks, tests) do not take each other's.
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(extra_toml: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let metrics_port = free_port();
        std::fs::write(
            dir.path().join("edgehook.toml"),
            format!(
                "data_dir = \"{}\"\n{extra_toml}\n[ingest]\nlisten = \"127.0.0.1:{port}\"\nmin_free_disk_bytes = 0\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config written");
        let mut s = Sidecar {
            child: None,
            port,
            metrics_port,
            dir,
        };
        s.spawn();
        s
    }

    /// Starts the process and returns once ingest accepts connections.
    pub fn spawn(&mut self) -> Instant {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_edgehook"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("edgehook.toml"))
            .env("EDGEHOOK_LOG", "info,edgehook_sidecar::ingest=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edgehook serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the sidecar did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        started
    }

    /// SIGTERM and wait: the data directory is then complete on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sidecar.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (resident now, peak resident) in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let Some(child) = &self.child else {
            return (0, 0);
        };
        rss_of(child.id())
    }

    /// CPU seconds the process has used since it started.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| cpu_seconds_of(c.id()))
    }

    /// Delivery attempts made since the process started, whatever their
    /// outcome (`edgehook_delivery_attempts_total` summed).
    pub async fn delivery_attempts(&self) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .expect("/metrics listens");
        // HTTP/1.0: the answer is the bytes up to the close, never chunked.
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("/metrics asked");
        let mut text = String::new();
        conn.read_to_string(&mut text).await.expect("/metrics read");
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
        text.lines()
            .filter(|l| l.starts_with("edgehook_delivery_attempts_total{"))
            .filter_map(|l| l.rsplit(' ').next())
            .map(|v| v.parse::<f64>().expect("a counter value") as u64)
            .sum()
    }

    /// Mean and largest group-commit batch, from the writer's debug lines.
    pub fn batches(&self) -> (f64, u64) {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let sizes: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("group commit"))
            .filter_map(|l| l.split("batch=").nth(1))
            .filter_map(|v| v.split_whitespace().next())
            .filter_map(|v| v.parse().ok())
            .collect();
        let sum: u64 = sizes.iter().sum();
        (
            sum as f64 / sizes.len().max(1) as f64,
            sizes.iter().copied().max().unwrap_or(0),
        )
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// VmRSS and VmHWM of a process, in bytes.
pub fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime (fields 14 and 15 of proc(5)), in clock ticks of
    // 1/100 s on every Linux this runs on.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

pub fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub durability: &'static str,
    pub clients: usize,
    pub events_per_s: f64,
    pub acked: u64,
    pub failed: u64,
    pub mean_batch: f64,
    pub max_batch: u64,
    /// The sidecar's CPU time (user + system) per acked event.
    pub sidecar_cpu_us_per_event: f64,
    /// The machine's CPU time stolen by the hypervisor during the run.
    pub stolen_share: f64,
}

pub async fn ingest(durability: &'static str, clients: usize, seconds: f64) -> IngestRun {
    let sidecar = Sidecar::start(&format!("durability = \"{durability}\""));
    let cpu_before = sidecar.cpu_seconds();
    let steal = StealMeter::start();
    let r = load::publish(
        sidecar.port,
        clients,
        Duration::from_secs_f64(seconds),
        u64::MAX,
        vec![b'x'; 1024],
    )
    .await;
    let stolen_share = steal.stolen_share();
    let cpu_s = sidecar.cpu_seconds() - cpu_before;
    let (mean_batch, max_batch) = sidecar.batches();
    IngestRun {
        durability,
        clients,
        events_per_s: r.events_per_s,
        acked: r.acked,
        failed: r.failed,
        mean_batch,
        max_batch,
        sidecar_cpu_us_per_event: cpu_s * 1e6 / r.acked.max(1) as f64,
        stolen_share,
    }
}

/// A receiver that does as little as possible: counts answers and
/// remembers which event ids got a 2xx. `fail_every` > 0 answers 500 to
/// one request in that many.
#[derive(Default)]
pub struct FastReceiver {
    requests: AtomicU64,
    delivered: Mutex<HashSet<String>>,
    fail_every: AtomicU64,
}

impl FastReceiver {
    pub async fn serve(self: &Arc<Self>, port: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("receiver port");
        let me = self.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let me = me.clone();
            async move {
                let n = me.requests.fetch_add(1, Ordering::Relaxed) + 1;
                let every = me.fail_every.load(Ordering::Relaxed);
                if every > 0 && n.is_multiple_of(every) {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                    me.delivered.lock().unwrap().insert(id.to_string());
                }
                StatusCode::OK
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    pub fn delivered(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Publishes `events` 1 KiB events from 256 publishers, each acked;
/// returns how long that took in seconds.
async fn fill_backlog(sidecar: &Sidecar, events: u64) -> f64 {
    let started = Instant::now();
    let published = load::publish(
        sidecar.port,
        256,
        Duration::from_secs(3600),
        events,
        vec![b'x'; 1024],
    )
    .await;
    assert_eq!(published.acked, events, "every event acked");
    started.elapsed().as_secs_f64()
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub events: u64,
    pub failure_share: f64,
    pub publish_s: f64,
    pub drain_s: f64,
    pub deliveries_per_s: f64,
    pub requests: u64,
}

/// A breaker that never opens: the drain benchmark's receiver fails one
/// answer in ten on purpose, and that must not pause delivery.
const NEVER_OPENS: &str = "{ failures = 1000000, cooldown_ms = 1000 }";

/// The sidecar's default breaker (`BreakerConfig::default()`), written out
/// so that the report says what was measured.
const DEFAULT_BREAKER: &str = "{ failures = 5, cooldown_ms = 5000, max_cooldown_ms = 300000 }";

fn destination_toml(port: u16, breaker: &str) -> String {
    format!(
        "[[destinations]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{port}/in\"\n\
         max_concurrency = 128\ntimeout_ms = 5000\n\
         retry = {{ initial_ms = 100, max_delay_ms = 1000, max_attempts = 100, max_age_s = 3600 }}\n\
         breaker = {breaker}\n"
    )
}

/// Publishes `events` with the receiver down (a backlog), then starts the
/// receiver and times until every event has been delivered.
pub async fn drain(events: u64, fail_every: u64) -> DrainRun {
    let port = free_port();
    let sidecar = Sidecar::start(&format!(
        "durability = \"flush\"\n{}",
        destination_toml(port, NEVER_OPENS)
    ));
    let publish_s = fill_backlog(&sidecar, events).await;
    let receiver = Arc::new(FastReceiver::default());
    receiver.fail_every.store(fail_every, Ordering::Relaxed);
    let start = Instant::now();
    receiver.serve(port).await;
    let deadline = start + Duration::from_secs(600);
    while (receiver.delivered() as u64) < events {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = start.elapsed().as_secs_f64();
    DrainRun {
        events,
        failure_share: if fail_every == 0 {
            0.0
        } else {
            1.0 / fail_every as f64
        },
        publish_s,
        drain_s,
        deliveries_per_s: events as f64 / drain_s,
        requests: receiver.requests(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BacklogRun {
    pub events: u64,
    pub body_bytes: usize,
    pub publish_s: f64,
    /// The destination's breaker while the backlog built up.
    pub fill_breaker: &'static str,
    /// Delivery attempts the sidecar made while the backlog built up (each
    /// one failed: the receiver was down).
    pub fill_attempts: u64,
    pub disk_bytes: u64,
    pub disk_bytes_per_event: f64,
    /// Of `disk_bytes`: the event log (`bodies/`) and the rest (sled).
    pub log_bytes_per_event: f64,
    pub sled_bytes_per_event: f64,
    pub restart_to_first_delivery_s: f64,
    pub rss_at_first_delivery_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// A large undelivered backlog: its size on disk, and what a restart costs.
/// It builds up as it would in production, with the receiver down and the
/// default circuit breaker, which opens after a few failures and then lets
/// through one probe per cool-down, so the fill costs at most one round of
/// attempts (`max_concurrency`) and a probe now and then. After the restart
/// the receiver is up and the breaker starts closed (its state is not
/// stored), so the first delivery waits only for the store to open.
pub async fn backlog(events: u64) -> BacklogRun {
    let port = free_port();
    let mut sidecar = Sidecar::start(&destination_toml(port, DEFAULT_BREAKER));
    let publish_s = fill_backlog(&sidecar, events).await;
    let fill_attempts = sidecar.delivery_attempts().await;
    sidecar.stop();
    let disk_bytes = dir_bytes(&sidecar.data_dir());
    let log_bytes = dir_bytes(&sidecar.data_dir().join("bodies"));

    let receiver = Arc::new(FastReceiver::default());
    receiver.serve(port).await;
    let restarted = sidecar.spawn();
    let deadline = restarted + Duration::from_secs(120);
    while receiver.delivered() == 0 {
        assert!(Instant::now() < deadline, "no delivery after the restart");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = restarted.elapsed().as_secs_f64();
    let (rss_now, _) = sidecar.rss();
    // Let it work through part of the backlog to see the peak under load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, peak) = sidecar.rss();
    let per_event = |bytes: u64| bytes as f64 / events as f64;
    let run = BacklogRun {
        events,
        body_bytes: 1024,
        publish_s,
        fill_breaker: DEFAULT_BREAKER,
        fill_attempts,
        disk_bytes,
        disk_bytes_per_event: per_event(disk_bytes),
        log_bytes_per_event: per_event(log_bytes),
        sled_bytes_per_event: per_event(disk_bytes - log_bytes),
        restart_to_first_delivery_s: first,
        rss_at_first_delivery_bytes: rss_now,
        peak_rss_bytes: peak,
    };
    eprintln!("{run:?}");
    run
}
