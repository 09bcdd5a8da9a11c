//! The proxy-wasm adapter, and the only module that talks to the host.
//!
//! It reads what Envoy offers, hands it to `edge`, and carries the decision
//! back. It calls `hostcalls::*` directly because the SDK's trait helpers
//! unwrap host results and would trap the VM on a bad status or a non-UTF-8
//! header value. Client headers are read as bytes in the headers callback
//! (after that the host may no longer offer them). It also owns the host
//! side of rate limiting (shared data as a `SharedStore`) and the metrics.
//!
//! With `sidecar.batch`, a finished request parks its event in the worker's
//! `Batcher` instead of calling the sidecar; the root context sends what was
//! parked on each tick and answers every request from the batch ack. The
//! root makes and receives those calls so that the answer never depends on
//! one request's stream still being there.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::batch::{Batcher, TickPace, Waiting, tick_is_late};
use crate::config::FilterConfig;
use crate::edge::{self, BodyDecision, HeadDecision, PublishResult, RequestHead};
use crate::headers::Headers;
use crate::ratelimit::{Limiter, SharedStore, StoreError};
use crate::reply::{Outcome, Reason, Reply};

const INGEST_SERVICE: &str = "edgehook.v1.Ingest";
const PUBLISH_METHOD: &str = "Publish";
const PUBLISH_BATCH_METHOD: &str = "PublishBatch";

proxy_wasm::main! {{
    // Also installs the hook that logs a panic's message before the trap.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root {
        config: None,
        metrics: Rc::default(),
        batcher: Rc::default(),
        pace: TickPace::default(),
    }));
}}

struct Root {
    config: Option<Rc<FilterConfig>>,
    metrics: Rc<Metrics>,
    /// This worker's parked events (with `sidecar.batch`).
    batcher: Rc<RefCell<Batcher>>,
    pace: TickPace,
}

/// Sends a local reply on the effective context.
fn send(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_ref()))
        .collect();
    if let Err(status) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
        log::warn!("edgehook: could not send the local reply: {status:?}");
    }
}

impl Root {
    /// Answers a parked request from the root; a stream that is gone (the
    /// client hung up) is skipped.
    fn answer(&self, waiting: &Waiting, reply: &Reply) {
        if hostcalls::set_effective_context(waiting.context).is_err() {
            return;
        }
        self.metrics.outcome(Some(waiting.source), reply.outcome);
        let micros = now_ns().saturating_sub(waiting.started_ns) / 1000;
        self.metrics.time(waiting.source, micros);
        send(reply);
    }
}

/// Shared data, where the rate-limit buckets live for every worker.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// The host's wall clock in nanoseconds since the epoch (0 if unavailable).
fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The request's headers in one buffer, as the host serializes them. The
/// SDK's `get_map_bytes` would split them into a `String` and a `Vec` per
/// header (and panics on an unexpected status).
fn request_headers() -> Option<Headers> {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host fills both out-pointers; a non-null `data` is a
    // buffer of `size` bytes it obtained from `proxy_on_memory_allocate`,
    // which the SDK implements as a forgotten `Vec<u8>` of that capacity,
    // so it is ours to take back as one (as the SDK's own getters do).
    let raw = unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size)
            != Status::Ok
        {
            return None;
        }
        if data.is_null() {
            Vec::new()
        } else {
            Vec::from_raw_parts(data, size, size)
        }
    };
    Headers::from_serialized(raw).ok()
}

/// The downstream peer's `ip:port` ("" if the host has none).
fn client_address() -> String {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// Metric ids, defined once per VM in `on_configure`. Envoy keeps one stat
/// per name, so every worker's VM adds to the same counters. A metric the
/// host refused to define is `None` and simply not counted.
#[derive(Default)]
struct Metrics {
    /// Per source, per `Outcome::index()`.
    outcomes: Vec<Vec<Option<u32>>>,
    unknown_source: Option<u32>,
    passed_through: Option<u32>,
    /// Per source: microseconds from headers to answer.
    time_us: Vec<Option<u32>>,
    /// The filter's linear memory, summed over this Envoy's VMs.
    vm_memory: Option<u32>,
}

thread_local! {
    /// What this VM last added to the `vm_memory_bytes` gauge. Per VM, not
    /// per `Metrics`: a new configuration must not add the memory again.
    static VM_MEMORY_REPORTED: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

impl Metrics {
    fn define(config: &FilterConfig) -> Metrics {
        let define = |kind, name: &str| hostcalls::define_metric(kind, name).ok();
        Metrics {
            outcomes: config
                .sources
                .iter()
                .map(|s| {
                    // A request with a source is never an unknown source.
                    Outcome::all()
                        .map(|o| match o {
                            Outcome::Rejected(Reason::UnknownSource) => None,
                            o => {
                                define(MetricType::Counter, &edge::outcome_metric(Some(&s.name), o))
                            }
                        })
                        .collect()
                })
                .collect(),
            unknown_source: define(
                MetricType::Counter,
                &edge::outcome_metric(None, Outcome::Rejected(Reason::UnknownSource)),
            ),
            passed_through: define(MetricType::Counter, "edgehook.passed_through"),
            time_us: config
                .sources
                .iter()
                .map(|s| define(MetricType::Histogram, &edge::time_metric(&s.name)))
                .collect(),
            vm_memory: define(MetricType::Gauge, "edgehook.vm_memory_bytes"),
        }
    }

    /// Brings the gauge up to date with this VM's linear memory. Each VM
    /// adds only its own change, so with several workers the gauge is their
    /// sum; a host call is made only when the memory has grown, which after
    /// warm-up should be never.
    fn vm_memory(&self) {
        // At most 65,536 pages of 64 KiB in wasm32: no overflow in i64.
        let bytes = core::arch::wasm32::memory_size(0) as i64 * 65_536;
        let before = VM_MEMORY_REPORTED.with(|r| r.replace(bytes));
        if bytes != before
            && let Some(id) = self.vm_memory
        {
            let _ = hostcalls::increment_metric(id, bytes - before);
        }
    }

    fn count(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn outcome(&self, source: Option<usize>, outcome: Outcome) {
        let id = match source {
            Some(i) => self
                .outcomes
                .get(i)
                .and_then(|per| per.get(outcome.index()))
                .copied()
                .flatten(),
            None => self.unknown_source,
        };
        Metrics::count(id);
    }

    fn time(&self, source: usize, micros: u64) {
        if let Some(id) = self.time_us.get(source).copied().flatten() {
            let _ = hostcalls::record_metric(id, micros);
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // Read the ack while the root is the effective context.
        let ack = if status_code == 0 {
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .map(Option::unwrap_or_default)
        } else {
            let message = hostcalls::get_grpc_status().ok().and_then(|(_, m)| m);
            log::warn!(
                "edgehook: sidecar answered gRPC status {status_code} to a batch: {}",
                message.unwrap_or_default()
            );
            None
        };
        let replies = self.batcher.borrow_mut().answered(token_id, ack.as_deref());
        for (waiting, reply) in &replies {
            self.answer(waiting, reply);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(raw)) => raw,
            _ => {
                log::error!("edgehook: the plugin has no configuration");
                return false;
            }
        };
        match FilterConfig::parse(&raw, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                log::info!("edgehook: configured {} source(s)", config.sources.len());
                self.metrics = Rc::new(Metrics::define(&config));
                self.metrics.vm_memory();
                let tick = config
                    .sidecar
                    .batch
                    .map_or(std::time::Duration::ZERO, |b| b.tick);
                self.pace = TickPace::default();
                if let Err(status) = hostcalls::set_tick_period(tick) {
                    log::error!("edgehook: cannot set the batch tick: {status:?}");
                    return false;
                }
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                // Returning false rejects the config: startup fails, an xDS
                // update is NACKed, `envoy --mode validate` exits 1.
                log::error!("edgehook: invalid configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(batch) = config.sidecar.batch else {
            return;
        };
        if let Some(mean) = self.pace.tick(now_ns) {
            let (period_ms, mean_ms) = (batch.tick.as_millis(), mean.as_secs_f64() * 1000.0);
            if tick_is_late(mean, batch.tick) {
                log::warn!(
                    "edgehook: the batch tick of {period_ms} ms comes every {mean_ms:.1} ms on \
                     average, so parked requests wait longer than configured: Envoy's timers \
                     are coarse on this host; start Envoy with EVENT_PRECISE_TIMER=1 in its \
                     environment"
                );
            } else {
                log::info!(
                    "edgehook: the batch tick of {period_ms} ms comes every {mean_ms:.1} ms on average"
                );
            }
        }
        // Make every call first and answer failures after: an answer can
        // run other streams' callbacks, and a call is registered to
        // whichever context the SDK last ran.
        let mut failed = Vec::new();
        loop {
            let Some(out) = self.batcher.borrow_mut().take(batch.max_events) else {
                break;
            };
            match hostcalls::dispatch_grpc_call(
                &config.sidecar.cluster,
                INGEST_SERVICE,
                PUBLISH_BATCH_METHOD,
                Vec::new(),
                Some(&out.message),
                config.sidecar.timeout,
            ) {
                Ok(token) => self.batcher.borrow_mut().sent(token, out.waiting),
                Err(status) => {
                    log::warn!(
                        "edgehook: cannot call the sidecar on cluster {:?}: {status:?}",
                        config.sidecar.cluster
                    );
                    failed.extend(out.waiting);
                }
            }
        }
        let unavailable = Reply::reject(Reason::SidecarUnavailable, None);
        for waiting in &failed {
            self.answer(waiting, &unavailable);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would panic in the SDK; without a config (which
        // Envoy does not allow) every request is refused as unavailable.
        Some(Box::new(Stream {
            context_id,
            batcher: self.batcher.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            phase: Phase::Headers,
            head: RequestHead::default(),
            source: None,
            started_ns: 0,
        }))
    }
}

enum Phase {
    Headers,
    Buffering {
        source: usize,
    },
    AwaitingAck {
        token: u32,
    },
    /// Parked in the worker's batch; the root answers.
    AwaitingBatch,
    Replied,
    /// Not ours: every later callback continues.
    PassedThrough,
}

struct Stream {
    context_id: u32,
    batcher: Rc<RefCell<Batcher>>,
    config: Option<Rc<FilterConfig>>,
    metrics: Rc<Metrics>,
    phase: Phase,
    head: RequestHead,
    /// The matched source, once routed.
    source: Option<usize>,
    started_ns: u64,
}

impl Stream {
    fn reply(&mut self, reply: Reply) -> Action {
        self.phase = Phase::Replied;
        self.metrics.outcome(self.source, reply.outcome);
        if let Some(source) = self.source {
            let micros = now_ns().saturating_sub(self.started_ns) / 1000;
            self.metrics.time(source, micros);
        }
        send(&reply);
        Action::Pause
    }

    fn unavailable(&mut self) -> Action {
        self.reply(Reply::reject(Reason::SidecarUnavailable, None))
    }

    fn finish_body(&mut self, source: usize, size: usize) -> Action {
        let Some(config) = self.config.clone() else {
            return self.unavailable();
        };
        let Some(src) = config.sources.get(source) else {
            return self.unavailable();
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.unavailable(),
        };
        // The request's time is when its headers came: a body that trickles
        // in does not move the timestamp check, and it saves a clock read.
        let now = self.started_ns;
        let now_ms = i64::try_from(now / 1_000_000).unwrap_or(i64::MAX);
        let limiter = Limiter {
            store: &HostStore,
            now_ns: now,
        };
        match edge::on_body(src, &self.head, &body, now_ms, &limiter) {
            BodyDecision::Reply(r) => self.reply(r),
            BodyDecision::Publish(message) if config.sidecar.batch.is_some() => {
                let waiting = Waiting {
                    context: self.context_id,
                    source,
                    started_ns: self.started_ns,
                };
                self.batcher.borrow_mut().push(waiting, message);
                self.phase = Phase::AwaitingBatch;
                Action::Pause
            }
            BodyDecision::Publish(message) => {
                match hostcalls::dispatch_grpc_call(
                    &config.sidecar.cluster,
                    INGEST_SERVICE,
                    PUBLISH_METHOD,
                    Vec::new(),
                    Some(&message),
                    config.sidecar.timeout,
                ) {
                    Ok(token) => {
                        self.phase = Phase::AwaitingAck { token };
                        Action::Pause
                    }
                    Err(status) => {
                        // An unknown cluster fails here, synchronously.
                        log::warn!(
                            "edgehook: cannot call the sidecar on cluster {:?}: {status:?}",
                            config.sidecar.cluster
                        );
                        self.unavailable()
                    }
                }
            }
        }
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if !matches!(self.phase, Phase::AwaitingAck { token } if token == token_id) {
            return;
        }
        let reply = if status_code == 0 {
            match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size) {
                Ok(bytes) => edge::on_publish_result(PublishResult::Ok(&bytes.unwrap_or_default())),
                Err(_) => edge::on_publish_result(PublishResult::Failed {
                    grpc_status: status_code,
                }),
            }
        } else {
            let message = hostcalls::get_grpc_status().ok().and_then(|(_, m)| m);
            log::warn!(
                "edgehook: sidecar answered gRPC status {status_code}: {}",
                message.unwrap_or_default()
            );
            edge::on_publish_result(PublishResult::Failed {
                grpc_status: status_code,
            })
        };
        self.reply(reply);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.started_ns = now_ns();
        self.metrics.vm_memory();
        let Some(config) = self.config.clone() else {
            return self.unavailable();
        };
        // Header names are tokens Envoy's codecs have validated; values are
        // whatever the client sent, so they stay bytes.
        let Some(headers) = request_headers() else {
            return self.unavailable();
        };
        self.head = RequestHead::with_address_from(headers, end_of_stream, client_address);
        let limiter = Limiter {
            store: &HostStore,
            now_ns: self.started_ns,
        };
        match edge::on_headers(&config, &self.head, &limiter) {
            HeadDecision::Reply { source, reply } => {
                self.source = source;
                self.reply(reply)
            }
            HeadDecision::ReadBody { source } => {
                self.source = Some(source);
                self.phase = Phase::Buffering { source };
                // Needs allow_on_headers_stop_iteration, or the body never comes.
                Action::Pause
            }
            HeadDecision::PassThrough => {
                self.phase = Phase::PassedThrough;
                // The request is not ours: keep no copy of its headers.
                self.head = RequestHead::default();
                Metrics::count(self.metrics.passed_through);
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if matches!(self.phase, Phase::PassedThrough) {
            return Action::Continue;
        }
        let Phase::Buffering { source } = self.phase else {
            return Action::Pause;
        };
        let too_large = self
            .config
            .as_ref()
            .and_then(|c| c.sources.get(source))
            .and_then(|src| edge::body_too_large(src, body_size));
        if let Some(r) = too_large {
            return self.reply(r);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(source, body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if matches!(self.phase, Phase::PassedThrough) {
            return Action::Continue;
        }
        // Trailers end the request; the body is complete.
        let Phase::Buffering { source } = self.phase else {
            return Action::Pause;
        };
        self.finish_body(source, usize::MAX)
    }
}
