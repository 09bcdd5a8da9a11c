//! Starts the real parts on loopback: an HTTP `Receiver` in this process,
//! the `edgehook` sidecar binary as a child process (`Sidecar`), and Envoy
//! with the built `.wasm` (`Envoy`). Ports are chosen at run time: Envoy
//! binds port 0 and reports what it got through its admin API; the sidecar
//! gets a port probed free just before it starts.
//!
//! Every wait is on a condition (`eventually`) with a generous deadline, so
//! a slow CI machine makes a test slower, not red.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The demo source's secret (the Standard Webhooks spec's example key).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---- secrets never leak ------------------------------------------------

/// Secret values the suite uses. Every sidecar and Envoy log is scanned for
/// them when its process is dropped, and every answer `post` reads, so no
/// test can leak one unnoticed.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds a secret to the scan (tests that configure their own secrets call
/// this). The demo secret and its key part are always scanned.
pub fn register_secret(value: &str) {
    let mut s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
    }
}

/// Panics naming where a registered secret showed up.
pub fn assert_no_secret(what: &str, text: &str) {
    register_secret(SECRET);
    register_secret(SECRET.trim_start_matches("whsec_"));
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for secret in secrets {
        assert!(
            !text.contains(&secret),
            "a secret ({}...) appeared in {what}",
            secret.chars().take(4).collect::<String>()
        );
    }
}

/// How long any condition may take to come true before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

// ---- where things are --------------------------------------------------

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the sidecar crate sits in the workspace")
        .to_path_buf()
}

/// Envoy: `EDGEHOOK_ENVOY`, else `.venv/bin/envoy` (what `make` installs).
/// A missing Envoy fails the test: these tests never skip.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("EDGEHOOK_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {} (run `make envoy`, or set EDGEHOOK_ENVOY)",
        path.display()
    );
    path
}

/// The filter: `EDGEHOOK_WASM`, else the `make wasm` output.
pub fn wasm_path() -> PathBuf {
    let path = std::env::var_os("EDGEHOOK_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm32-wasip1/wasm/edgehook_filter.wasm"));
    assert!(
        path.exists(),
        "the filter .wasm is not at {} (run `make wasm`, or set EDGEHOOK_WASM)",
        path.display()
    );
    path
}

pub fn edgehook_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgehook"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `check` until it returns `Some`, failing the test after `DEADLINE`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    eventually_within(DEADLINE, what, &mut check).await
}

pub async fn eventually_within<T>(
    deadline: Duration,
    what: &str,
    check: &mut dyn FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP client for talking to Envoy and admin endpoints.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("a log file");
    let err = out.try_clone().expect("a second log handle");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

// ---- signing -----------------------------------------------------------

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Standard Webhooks headers for `body`, signed with `secret` at `ts`.
pub fn standard_webhooks_headers(
    secret: &str,
    id: &str,
    ts: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let key = edgehook_sidecar::signing::decode_secret(secret).unwrap();
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        (
            "webhook-signature".into(),
            edgehook_sidecar::signing::sign(&key, id, ts, body),
        ),
    ]
}

/// A request's answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// POSTs `body` signed for the demo source as Standard Webhooks message
/// `msg_id`, now.
pub async fn send_signed(url: &str, msg_id: &str, body: &[u8]) -> Answer {
    post(
        url,
        &standard_webhooks_headers(SECRET, msg_id, now_s(), body),
        body,
    )
    .await
}

pub async fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    let mut req = client().post(url).body(body.to_vec());
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let answer = Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    };
    assert_no_secret("an answer from the edge", &format!("{answer:?}"));
    answer
}

// ---- receiver ----------------------------------------------------------

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub enum Respond {
    Status(u16),
    /// A status with extra headers (for example `Retry-After`).
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Never answers (until the receiver stops).
    Hang,
    /// Answers with the status after a delay.
    Slow(u16, Duration),
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Delivery>>,
    /// Answers to give in order; `default` once they run out.
    script: Mutex<VecDeque<Respond>>,
    default: Mutex<Option<Respond>>,
    arrived: Notify,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A real HTTP server that records every request. It can be stopped and
/// started again on the same port, keeping what it recorded.
pub struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
    stop: Option<CancellationToken>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            port: 0,
            state: Arc::default(),
            stop: None,
        };
        r.serve().await;
        r
    }

    /// A receiver that is not listening yet (its port is reserved by
    /// number only); `up()` starts it.
    pub fn down() -> Receiver {
        Receiver {
            port: free_port(),
            state: Arc::default(),
            stop: None,
        }
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver port");
        self.port = listener.local_addr().unwrap().port();
        let state = self.state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(state, method, uri, headers, body).await }
            },
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        self.stop = Some(stop);
    }

    /// Starts listening again on the same port.
    pub async fn up(&mut self) {
        if self.stop.is_none() {
            self.serve().await;
        }
    }

    /// Stops listening: connections are refused until `up()`.
    pub async fn down_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
            // The listener is dropped when serve() returns.
            let port = self.port;
            eventually("the receiver port to close", || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_err()
                    .then_some(())
            })
            .await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers to give, in order, before falling back to the default (200).
    pub fn script(&self, answers: impl IntoIterator<Item = Respond>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn set_default(&self, answer: Respond) {
        *self.state.default.lock().unwrap() = Some(answer);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Delivery> {
        self.state.got.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Delivery> {
        self.requests()
            .into_iter()
            .filter(|d| (200..300).contains(&d.answered))
            .collect()
    }

    /// Waits until at least `n` requests were answered 2xx.
    pub async fn wait_delivered(&self, n: usize) -> Vec<Delivery> {
        self.wait_until(&format!("{n} deliveries"), |_, ok| ok.len() >= n)
            .await;
        self.delivered()
    }

    /// Waits until `done(all requests, delivered ones)` holds.
    pub async fn wait_until(
        &self,
        what: &str,
        mut done: impl FnMut(&[Delivery], &[Delivery]) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let arrived = self.state.arrived.notified();
            let all = self.requests();
            let ok: Vec<Delivery> = all
                .iter()
                .filter(|d| (200..300).contains(&d.answered))
                .cloned()
                .collect();
            if done(&all, &ok) {
                return;
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; the receiver got {} request(s): {:?}",
                all.len(),
                all.iter()
                    .map(|d| (d.header("webhook-id").unwrap_or("").to_string(), d.answered))
                    .collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), arrived).await;
        }
    }

    /// The most requests that were ever being handled at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

async fn handle(
    state: Arc<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| state.default.lock().unwrap().clone())
        .unwrap_or(Respond::Status(200));
    let (status, extra) = match answer {
        Respond::Status(s) => (s, Vec::new()),
        Respond::WithHeaders(s, h) => (s, h),
        Respond::Slow(s, d) => {
            tokio::time::sleep(d).await;
            (s, Vec::new())
        }
        Respond::Hang => {
            record(&state, method, uri, headers, body, 0);
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    record(&state, method, uri, headers, body, status);
    let mut resp = (StatusCode::from_u16(status).unwrap(), "ok").into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

fn record(
    state: &ReceiverState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
) {
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.got.lock().unwrap().push(Delivery {
        method,
        path: uri.path().to_string(),
        headers,
        body,
        answered,
    });
    state.arrived.notify_waiters();
}

// ---- sidecar -----------------------------------------------------------

/// The `edgehook serve` binary with a config generated for this test.
pub struct Sidecar {
    dir: tempfile::TempDir,
    pub ingest_port: u16,
    child: Option<Child>,
}

impl Sidecar {
    /// Starts the sidecar. `toml` is the rest of its config (destinations,
    /// retry policies); the harness sets `data_dir` and `ingest.listen`.
    pub async fn start(toml: &str) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut config: toml::Table = toml::from_str(toml).expect("test sidecar TOML");
        let ingest_port = free_port();
        config.insert(
            "data_dir".into(),
            dir.path().join("data").display().to_string().into(),
        );
        let ingest = config
            .entry("ingest")
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        ingest.insert("listen".into(), format!("127.0.0.1:{ingest_port}").into());
        // Tests run side by side: the metrics port must not be the fixed
        // default (the admin API is off unless a test gives it a token).
        let metrics = config
            .entry("metrics")
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        metrics
            .entry("listen")
            .or_insert_with(|| "127.0.0.1:0".into());
        std::fs::write(
            dir.path().join("edgehook.toml"),
            toml::to_string(&config).unwrap(),
        )
        .unwrap();
        let mut s = Sidecar {
            dir,
            ingest_port,
            child: None,
        };
        s.restart().await;
        s
    }

    /// A sidecar config with one destination named `name` at `url`, and a
    /// fast retry policy so tests do not wait minutes.
    pub fn destination_toml(name: &str, url: &str) -> String {
        format!(
            "[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\ntimeout_ms = 2000\n\
             retry = {{ initial_ms = 50, max_delay_ms = 400, max_attempts = 1000, max_age_s = 600 }}\n"
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgehook.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sidecar.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// (Re)starts the process on the same config, data and port, and waits
    /// until the ingest port accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the sidecar is already running");
        let mut cmd = Command::new(edgehook_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env("EDGEHOOK_LOG", "info,edgehook_sidecar=debug");
        let child = spawn_logged(&mut cmd, &self.log_path());
        self.child = Some(child);
        let port = self.ingest_port;
        let log = self.log_path();
        let child = self.child.as_mut().unwrap();
        eventually("the sidecar to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the sidecar exited with {status}:\n{}", tail(&log, 40));
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// SIGKILL: no shutdown work at all, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the graceful shutdown to finish.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the sidecar is running");
        signal(&child, libc::SIGTERM);
        eventually("the sidecar to exit", || child.try_wait().ok().flatten()).await
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- sidecar log ({}) ----\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 60)
            );
        }
        self.kill();
        if !std::thread::panicking() {
            assert_no_secret("the sidecar's log", &self.log());
        }
    }
}

// ---- envoy -------------------------------------------------------------

pub struct EnvoyOptions {
    /// The filter's plugin configuration (the JSON in Envoy's YAML).
    pub filter: Value,
    /// Where the `edgehook_sidecar` cluster points.
    pub sidecar_port: u16,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Environment variables of the Envoy process, each also listed in the
    /// VM's `host_env_keys` so the filter can read it.
    pub env: Vec<(String, String)>,
    pub failure_policy: &'static str,
    /// Envoy's log level (the filter's own logs are at `wasm:debug`).
    pub log_level: &'static str,
    /// Plain Envoy instead of the filter: the buffer filter reads the whole
    /// body, then a direct response answers 202 (the benchmark's baseline).
    pub baseline: bool,
    /// `EVENT_PRECISE_TIMER=1` in Envoy's environment, as the README says to
    /// run it: libevent's timers otherwise follow CLOCK_MONOTONIC_COARSE,
    /// 4 ms on many kernels, and so does the filter's batch tick.
    pub precise_timers: bool,
}

impl EnvoyOptions {
    pub fn new(filter: Value, sidecar_port: u16) -> Self {
        EnvoyOptions {
            filter,
            sidecar_port,
            concurrency: 1,
            env: Vec::new(),
            failure_policy: "FAIL_RELOAD",
            log_level: "info",
            baseline: false,
            precise_timers: true,
        }
    }
}

/// A filter config with the given sources and the sidecar timeout.
pub fn filter_config(sources: Value, timeout_ms: u64) -> Value {
    json!({
        "sidecar": {"cluster": "edgehook_sidecar", "timeout_ms": timeout_ms},
        "sources": sources,
    })
}

/// One Standard Webhooks source named `demo` at `/hooks/demo`.
pub fn demo_source() -> Value {
    json!({
        "name": "demo",
        "match": {"path": "/hooks/demo"},
        "verify": {"scheme": "standard-webhooks", "secrets": [SECRET]},
    })
}

/// Envoy with the demo source, publishing to the sidecar at `ingest_port`.
pub async fn demo_envoy(ingest_port: u16, timeout_ms: u64) -> Envoy {
    Envoy::start(EnvoyOptions::new(
        filter_config(json!([demo_source()]), timeout_ms),
        ingest_port,
    ))
    .await
}

/// Real Envoy with the built `.wasm`.
pub struct Envoy {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub admin: SocketAddr,
    pub port: u16,
}

impl Envoy {
    pub async fn start(opts: EnvoyOptions) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let yaml = envoy_yaml(&opts);
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, yaml).unwrap();
        let admin_file = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&config)
            .arg("--use-dynamic-base-id")
            .arg("--concurrency")
            .arg(opts.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-level")
            .arg(opts.log_level)
            .arg("--component-log-level")
            .arg(format!(
                "wasm:{}",
                if opts.log_level == "info" {
                    "debug"
                } else {
                    opts.log_level
                }
            ));
        if opts.precise_timers {
            cmd.env("EVENT_PRECISE_TIMER", "1");
        } else {
            cmd.env_remove("EVENT_PRECISE_TIMER");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = spawn_logged(&mut cmd, &log);
        let admin: SocketAddr = eventually("Envoy's admin address", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Envoy exited with {status}:\n{}", tail(&log, 60));
            }
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await;
        let mut envoy = Envoy {
            dir,
            child: Some(child),
            admin,
            port: 0,
        };
        let start = Instant::now();
        loop {
            if let Some(port) = envoy.listener_port().await {
                envoy.port = port;
                break;
            }
            if let Some(Ok(Some(status))) = envoy.child.as_mut().map(|c| c.try_wait()) {
                panic!("Envoy exited with {status}:\n{}", tail(&log, 60));
            }
            assert!(
                start.elapsed() < DEADLINE,
                "Envoy never became ready:\n{}",
                tail(&log, 60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        envoy
    }

    /// The bound port of the `webhooks` listener, once Envoy is ready.
    async fn listener_port(&self) -> Option<u16> {
        let ready = client()
            .get(format!("http://{}/ready", self.admin))
            .send()
            .await
            .ok()?;
        if !ready.status().is_success() {
            return None;
        }
        let text = client()
            .get(format!("http://{}/listeners?format=json", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let listeners: Value = serde_json::from_str(&text).ok()?;
        listeners["listener_statuses"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "webhooks")?["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .map(|p| p as u16)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Envoy's whole `/stats` text, histograms included.
    pub async fn stats_text(&self) -> String {
        let text = client()
            .get(format!("http://{}/stats", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_no_secret("Envoy's stats (the filter's metrics)", &text);
        text
    }

    /// Envoy's counters and gauges, by name.
    pub async fn stats(&self) -> BTreeMap<String, i64> {
        let text = self.stats_text().await;
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    pub async fn stat(&self, name: &str) -> i64 {
        self.stats().await.get(name).copied().unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The Envoy process, for reading its memory.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log ({}) ----\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 60)
            );
        }
        self.stop();
        if !std::thread::panicking() {
            assert_no_secret("Envoy's log (the filter logs there)", &self.log());
        }
    }
}

/// The bootstrap YAML `Envoy::start` would run with `opts`, for tests that
/// hand it to `envoy --mode validate`.
pub fn envoy_config_yaml(opts: &EnvoyOptions) -> String {
    envoy_yaml(opts)
}

fn envoy_yaml(opts: &EnvoyOptions) -> String {
    let (route, http_filters) = if opts.baseline {
        (BASELINE_ROUTE.to_string(), BASELINE_FILTERS.to_string())
    } else {
        (FILTER_ROUTE.to_string(), filter_http_filters(opts))
    };
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: webhooks
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: webhooks
          route_config:
            virtual_hosts:
            - name: webhooks
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
{route}
          http_filters:
{http_filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: edgehook_sidecar
    connect_timeout: 0.25s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: edgehook_sidecar
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {sidecar} }} }} }}
  - name: upstream
    connect_timeout: 0.25s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#,
        sidecar = opts.sidecar_port,
        upstream = free_port(),
    )
}

const FILTER_ROUTE: &str = r#"                route: { cluster: upstream, timeout: 5s }
                request_body_buffer_limit: 8388608"#;

const BASELINE_ROUTE: &str = r#"                direct_response: { status: 202, body: { inline_string: '{"id":"baseline"}' } }"#;

const BASELINE_FILTERS: &str = r#"          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: 8388608"#;

fn filter_http_filters(opts: &EnvoyOptions) -> String {
    // JSON is YAML: the plugin configuration goes in as one quoted string.
    let filter = serde_json::to_string(&opts.filter).unwrap();
    let filter_yaml = serde_json::to_string(&filter).unwrap();
    let env_keys =
        serde_json::to_string(&opts.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .unwrap();
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: edgehook
                root_id: edgehook
                allow_on_headers_stop_iteration: true
                failure_policy: {policy}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {filter_yaml}
                vm_config:
                  vm_id: edgehook
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{wasm}" }} }}
                  environment_variables:
                    host_env_keys: {env_keys}"#,
        policy = opts.failure_policy,
        wasm = wasm_path().display(),
    )
}

// ---- the whole path ----------------------------------------------------

/// Receiver, sidecar delivering to it, and Envoy publishing to the sidecar.
pub struct Stack {
    pub receiver: Receiver,
    pub sidecar: Sidecar,
    pub envoy: Envoy,
}

impl Stack {
    /// The demo: one Standard Webhooks source, one destination.
    pub async fn demo() -> Stack {
        Stack::start(json!([demo_source()]), "").await
    }

    /// Envoy with `sources`; a sidecar whose one destination `receiver` is
    /// the test's receiver, plus `sidecar_toml`.
    pub async fn start(sources: Value, sidecar_toml: &str) -> Stack {
        let receiver = Receiver::start().await;
        Stack::start_with(receiver, sources, sidecar_toml).await
    }

    pub async fn start_with(receiver: Receiver, sources: Value, sidecar_toml: &str) -> Stack {
        let toml = format!(
            "{sidecar_toml}\n{}",
            Sidecar::destination_toml("receiver", &receiver.url("/webhooks"))
        );
        let sidecar = Sidecar::start(&toml).await;
        let envoy = Envoy::start(EnvoyOptions::new(
            filter_config(sources, 2000),
            sidecar.ingest_port,
        ))
        .await;
        Stack {
            receiver,
            sidecar,
            envoy,
        }
    }

    /// POSTs a freshly signed demo webhook; returns the answer.
    pub async fn send_demo(&self, id: &str, body: &[u8]) -> Answer {
        let headers = standard_webhooks_headers(SECRET, id, now_s(), body);
        post(&self.envoy.url("/hooks/demo"), &headers, body).await
    }
}

/// Writes `text` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}
