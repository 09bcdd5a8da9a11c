//! The sidecar's Prometheus metrics and `GET /metrics`. Ingest and dispatch
//! count what happens as it happens (through `Metrics`); what the store
//! already knows (queue depths, oldest due age, dead letters, storage bytes)
//! is read from it at scrape time, so it can never drift. The breaker state
//! and the recent success rate live here too, for the admin API to read.
//! Labels are source and destination names and outcome words: never a
//! secret, a URL or a body.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dispatch::breaker::BreakerState;
use crate::store::Store;

/// How many of a destination's latest attempts the success rate covers.
pub const RECENT_ATTEMPTS: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    destination: String,
    /// "delivered", "retry" or "give_up".
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms .. ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    ingested: Family<SourceLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    latency: HistogramFamily<DestLabels>,
    queue_depth: Family<DestLabels, Gauge>,
    oldest_due_age: Family<DestLabels, Gauge>,
    dead_letters: Family<DestLabels, Gauge>,
    breaker: Family<DestLabels, Gauge>,
    in_flight: Family<DestLabels, Gauge>,
    storage_bytes: Gauge,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    unauthenticated: Counter,
    /// Each destination's latest outcomes, true for delivered.
    recent: Mutex<HashMap<String, VecDeque<bool>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgehook");
        let m = Metrics {
            ingested: Family::default(),
            duplicates: Family::default(),
            attempts: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            queue_depth: Family::default(),
            oldest_due_age: Family::default(),
            dead_letters: Family::default(),
            breaker: Family::default(),
            in_flight: Family::default(),
            storage_bytes: Gauge::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            unauthenticated: Counter::default(),
            recent: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "events_ingested",
            "Events stored, per source (duplicates not included)",
            m.ingested.clone(),
        );
        registry.register(
            "events_deduplicated",
            "Events acked as duplicates of a stored event (same source and provider event id)",
            m.duplicates.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts, per destination and outcome (delivered, retry, give_up)",
            m.attempts.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "How long delivery attempts took, per destination",
            m.latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Deliveries waiting or in flight, per destination",
            m.queue_depth.clone(),
        );
        registry.register(
            "oldest_due_age_seconds",
            "How long the oldest due delivery has waited, per destination (0: none due)",
            m.oldest_due_age.clone(),
        );
        registry.register(
            "dead_letters",
            "Deliveries now in the dead-letter queue, per destination",
            m.dead_letters.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker per destination: 0 closed, 1 open, 2 half-open",
            m.breaker.clone(),
        );
        registry.register(
            "in_flight",
            "Delivery attempts in flight, per destination",
            m.in_flight.clone(),
        );
        registry.register(
            "storage_bytes",
            "Size of the data directory on disk",
            m.storage_bytes.clone(),
        );
        registry.register(
            "group_commit_batch_size",
            "Events per group commit",
            m.commit_batch.clone(),
        );
        registry.register(
            "group_commit_seconds",
            "How long a group commit (write and flush) took",
            m.commit_seconds.clone(),
        );
        registry.register(
            "admin_unauthenticated",
            "Admin calls refused for a missing or wrong token",
            m.unauthenticated.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One event acked by ingest.
    pub fn ingested(&self, source: &str, duplicate: bool) {
        let labels = SourceLabels {
            source: source.to_string(),
        };
        if duplicate {
            self.duplicates.get_or_create(&labels).inc();
        } else {
            self.ingested.get_or_create(&labels).inc();
        }
    }

    /// One group commit of `batch` events that took `took`.
    pub fn group_commit(&self, batch: usize, took: Duration) {
        self.commit_batch.observe(batch as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// One recorded delivery attempt; `outcome` is "delivered", "retry" or
    /// "give_up".
    pub fn attempted(&self, destination: &str, outcome: &str, took: Duration) {
        self.attempts
            .get_or_create(&AttemptLabels {
                destination: destination.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&dest(destination))
            .observe(took.as_secs_f64());
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let ring = recent.entry(destination.to_string()).or_default();
        if ring.len() == RECENT_ATTEMPTS {
            ring.pop_front();
        }
        ring.push_back(outcome == "delivered");
    }

    pub fn set_breaker(&self, destination: &str, state: BreakerState) {
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.breaker.get_or_create(&dest(destination)).set(value);
    }

    pub fn breaker(&self, destination: &str) -> BreakerState {
        match self.breaker.get_or_create(&dest(destination)).get() {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn set_in_flight(&self, destination: &str, n: usize) {
        self.in_flight
            .get_or_create(&dest(destination))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn in_flight(&self, destination: &str) -> u32 {
        u32::try_from(self.in_flight.get_or_create(&dest(destination)).get()).unwrap_or(0)
    }

    /// Delivered / attempts over the destination's last `RECENT_ATTEMPTS`
    /// attempts since start; `None` before the first.
    pub fn success_rate(&self, destination: &str) -> Option<f64> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let ring = recent.get(destination).filter(|r| !r.is_empty())?;
        let ok = ring.iter().filter(|d| **d).count();
        Some(ok as f64 / ring.len() as f64)
    }

    pub fn unauthenticated(&self) {
        self.unauthenticated.inc();
    }

    /// Reads what the store knows into the gauges. Blocking (sled).
    pub fn refresh(&self, store: &dyn Store, now_ms: i64) {
        let destinations = match store.destinations() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot list destinations");
                return;
            }
        };
        let totals = store.totals().ok();
        for (name, id) in destinations {
            let labels = dest(&name);
            // Present from the first scrape, before anything changed them.
            let _ = self.breaker.get_or_create(&labels);
            let _ = self.in_flight.get_or_create(&labels);
            if let Ok(q) = store.queue_stats(id) {
                self.queue_depth
                    .get_or_create(&labels)
                    .set(i64::try_from(q.depth).unwrap_or(i64::MAX));
                let age_s = q
                    .oldest_due_ms
                    .map_or(0, |due| (now_ms - due).max(0) / 1000);
                self.oldest_due_age.get_or_create(&labels).set(age_s);
            }
            if let Some(t) = totals.as_ref().and_then(|t| t.destinations.get(&id)) {
                self.dead_letters
                    .get_or_create(&labels)
                    .set(i64::try_from(t.dead_now).unwrap_or(i64::MAX));
            }
        }
        if let Ok(bytes) = store.size_on_disk() {
            self.storage_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn dest(name: &str) -> DestLabels {
    DestLabels {
        destination: name.to_string(),
    }
}

/// The classic Prometheus text format (version 0.0.4) of an OpenMetrics
/// exposition: a counter's HELP and TYPE lines name its `_total` sample,
/// and there are no `# UNIT` or `# EOF` lines.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(r) => out.push_str(&r),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` until `shutdown` is cancelled: OpenMetrics to a
/// scraper that asks for it (Prometheus does), the classic text format to
/// anything else (curl, older tools).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    clock: crate::clock::Clock,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let metrics = metrics.clone();
            let store = store.clone();
            let openmetrics = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    metrics.refresh(store.as_ref(), clock.now_ms());
                    metrics.encode()
                })
                .await;
                match text {
                    Ok(text) if openmetrics => {
                        (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], text)
                            .into_response()
                    }
                    Ok(text) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                        prometheus_text(&text),
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.ingested("stripe", false);
        m.attempted("billing", "delivered", Duration::from_millis(12));
        let om = m.encode();
        assert!(
            om.contains("# TYPE edgehook_events_ingested counter"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let text = prometheus_text(&om);
        assert!(text.contains("# TYPE edgehook_events_ingested_total counter"));
        assert!(text.contains("# HELP edgehook_events_ingested_total Events stored"));
        assert!(text.contains("edgehook_events_ingested_total{source=\"stripe\"} 1"));
        assert!(text.contains("# TYPE edgehook_delivery_duration_seconds histogram"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn the_success_rate_covers_the_latest_attempts() {
        let m = Metrics::new();
        assert_eq!(m.success_rate("billing"), None);
        for _ in 0..RECENT_ATTEMPTS {
            m.attempted("billing", "retry", Duration::ZERO);
        }
        assert_eq!(m.success_rate("billing"), Some(0.0));
        for _ in 0..RECENT_ATTEMPTS / 4 {
            m.attempted("billing", "delivered", Duration::ZERO);
        }
        assert_eq!(m.success_rate("billing"), Some(0.25));
    }
}
