//! The sidecar's configuration file (TOML). Every field has a default, and
//! the defaults run the demo; the README's "Sidecar configuration" section
//! documents each one. Secrets are inline or `{ env = "NAME" }`; their
//! values never appear in errors or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where sled keeps events and delivery state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `fsync` (default): an acked event survives power loss. `flush`: it
    /// survives a crash of the process, not of the machine.
    #[serde(default)]
    pub durability: Durability,
    /// How long in-flight deliveries may run on once shutdown begins.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Fsync,
    Flush,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// gRPC from the Envoy filter.
    #[serde(default = "default_ingest_listen")]
    pub listen: SocketAddr,
    /// Events waiting for the writer; past this, Publish answers
    /// RESOURCE_EXHAUSTED and the edge answers 503.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most events committed by one flush.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Largest accepted Publish message (body plus headers).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Below this much free space on the data directory's file system,
    /// Publish answers RESOURCE_EXHAUSTED. 0 turns the check off.
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: default_ingest_listen(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            max_message_bytes: default_max_message_bytes(),
            min_free_disk_bytes: default_min_free_disk_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// sled's page cache.
    #[serde(default = "default_cache_capacity_bytes")]
    pub cache_capacity_bytes: u64,
    /// How often sled flushes delivery bookkeeping on its own (ingest
    /// always flushes before it acks).
    #[serde(default = "default_flush_every_ms")]
    pub flush_every_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_capacity_bytes: default_cache_capacity_bytes(),
            flush_every_ms: default_flush_every_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long an event is kept once every destination has it.
    #[serde(default = "default_delivered_s")]
    pub delivered_s: u64,
    /// How long a dead letter (and its event) is kept.
    #[serde(default = "default_dead_letters_s")]
    pub dead_letters_s: u64,
    /// How often the background sweep looks for expired events.
    #[serde(default = "default_sweep_interval_s")]
    pub sweep_interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delivered_s: default_delivered_s(),
            dead_letters_s: default_dead_letters_s(),
            sweep_interval_s: default_sweep_interval_s(),
        }
    }
}

/// The admin gRPC API (with health and reflection).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token every admin call must carry. Without one the admin API
    /// is not served.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
        }
    }
}

/// Prometheus `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    pub url: String,
    /// Sources this destination receives; empty means all.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Event-type globs (`invoice.*`); empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A JSON match on the event (the filter's rule operators), as a TOML
    /// table or a string of JSON.
    #[serde(default, rename = "match")]
    pub match_rule: Option<MatchRule>,
    /// Headers added to every delivery; values may be secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
    /// Provider headers (as received at the edge) passed on to the
    /// destination, by lower-case name.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts in flight at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Attempts started per second, with a burst; none by default.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Signs deliveries with Standard Webhooks headers when set.
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// 4xx statuses that are retried instead of dead-lettered at once.
    #[serde(default)]
    pub retry_statuses: Vec<u16>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Deliver in ingest order, one at a time; a failing event holds the
    /// ones behind it.
    #[serde(default)]
    pub ordered: bool,
}

/// The `match` rule as written: a TOML table, or JSON text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MatchRule {
    Json(String),
    Table(serde_json::Value),
}

impl MatchRule {
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        match self {
            MatchRule::Json(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
            MatchRule::Table(v) => Ok(v.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: f64,
    /// Attempts that may start at once after a quiet spell; default one
    /// second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The first retry comes after about this long (full jitter over twice
    /// this); later ones double, up to `max_delay_ms`.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Cap on any delay, `Retry-After` included.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Give up once the first attempt is this old.
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    /// An explicit schedule instead of exponential backoff: the delay before
    /// the 2nd, 3rd, ... attempt, without jitter (Svix's is
    /// `[5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000]`).
    #[serde(default)]
    pub schedule_ms: Option<Vec<u64>>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: default_initial_ms(),
            max_delay_ms: default_max_delay_ms(),
            max_attempts: default_max_attempts(),
            max_age_s: default_max_age_s(),
            schedule_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// The first cool-down before a half-open probe; it doubles each time a
    /// probe fails.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    #[serde(default = "default_max_cooldown_ms")]
    pub max_cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            cooldown_ms: default_cooldown_ms(),
            max_cooldown_ms: default_max_cooldown_ms(),
        }
    }
}

/// A secret given inline or read from the sidecar's environment.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    Inline(String),
    Env { env: String },
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Inline(_) => f.write_str("SecretRef::Inline(<redacted>)"),
            SecretRef::Env { env } => write!(f, "SecretRef::Env({env})"),
        }
    }
}

impl SecretRef {
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::Inline(v) if !v.is_empty() => Ok(v.clone()),
            SecretRef::Inline(_) => Err("is empty".into()),
            SecretRef::Env { env } => match std::env::var(env) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("environment variable {env} is not set or empty")),
            },
        }
    }
}

/// Headers a destination may not set or forward: ours (`webhook-*`) and the
/// ones that describe the connection rather than the event.
pub const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}
fn default_ingest_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_max_batch() -> usize {
    1024
}
fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_min_free_disk_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_cache_capacity_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_flush_every_ms() -> u64 {
    1000
}
fn default_delivered_s() -> u64 {
    7 * 86_400
}
fn default_dead_letters_s() -> u64 {
    30 * 86_400
}
fn default_sweep_interval_s() -> u64 {
    60
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7071))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_concurrency() -> usize {
    16
}
fn default_initial_ms() -> u64 {
    5_000
}
fn default_max_delay_ms() -> u64 {
    3_600_000
}
fn default_max_attempts() -> u32 {
    12
}
fn default_max_age_s() -> u64 {
    86_400
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    5_000
}
fn default_max_cooldown_ms() -> u64 {
    300_000
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.ingest.queue_capacity == 0 || self.ingest.max_batch == 0 {
            return Err("ingest.queue_capacity and ingest.max_batch must be at least 1".into());
        }
        let r = &self.retention;
        if r.delivered_s == 0 || r.dead_letters_s == 0 || r.sweep_interval_s == 0 {
            return Err(
                "retention.delivered_s, dead_letters_s and sweep_interval_s must be at least 1"
                    .into(),
            );
        }
        if let Some(token) = &self.admin.token {
            token.resolve().map_err(|e| format!("admin.token: {e}"))?;
        }
        for (i, d) in self.destinations.iter().enumerate() {
            check_destination(d, &format!("destinations[{i}]"))?;
            if self
                .destinations
                .iter()
                .filter(|o| o.name == d.name)
                .count()
                > 1
            {
                return Err(format!(
                    "destinations[{i}].name: {:?} is not unique",
                    d.name
                ));
            }
        }
        Ok(())
    }
}

fn check_destination(d: &DestinationConfig, at: &str) -> Result<(), String> {
    if d.name.is_empty() {
        return Err(format!("{at}.name: must not be empty"));
    }
    let url = reqwest::Url::parse(&d.url).map_err(|e| format!("{at}.url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{at}.url: must be http or https"));
    }
    if d.timeout_ms == 0 || d.max_concurrency == 0 {
        return Err(format!(
            "{at}: timeout_ms and max_concurrency must be at least 1"
        ));
    }
    let r = &d.retry;
    if r.initial_ms == 0 || r.max_delay_ms < r.initial_ms || r.max_attempts == 0 {
        return Err(format!(
            "{at}.retry: need initial_ms >= 1, max_delay_ms >= initial_ms and max_attempts >= 1"
        ));
    }
    if r.schedule_ms.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(format!(
            "{at}.retry.schedule_ms: must list at least one delay (or be left out)"
        ));
    }
    if let Some(rate) = &d.rate_limit
        && (!rate.per_second.is_finite() || rate.per_second <= 0.0 || rate.burst == Some(0))
    {
        return Err(format!(
            "{at}.rate_limit: per_second must be above 0 and burst at least 1"
        ));
    }
    let b = &d.breaker;
    if b.failures == 0 || b.cooldown_ms == 0 || b.max_cooldown_ms < b.cooldown_ms {
        return Err(format!(
            "{at}.breaker: need failures >= 1, cooldown_ms >= 1 and max_cooldown_ms >= cooldown_ms"
        ));
    }
    for s in &d.retry_statuses {
        if !(400..500).contains(s) {
            return Err(format!(
                "{at}.retry_statuses: {s} is not a 4xx status (5xx are always retried)"
            ));
        }
    }
    for name in d.headers.keys().chain(&d.forward_headers) {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{at}: {name:?} is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{at}: header {name:?} is set by edgehook and cannot be added or forwarded"
            ));
        }
    }
    for (name, value) in &d.headers {
        let v = value
            .resolve()
            .map_err(|e| format!("{at}.headers.{name}: {e}"))?;
        if reqwest::header::HeaderValue::from_str(&v).is_err() {
            return Err(format!("{at}.headers.{name}: not a valid header value"));
        }
    }
    if let Some(secret) = &d.signing_secret {
        let text = secret
            .resolve()
            .map_err(|e| format!("{at}.signing_secret: {e}"))?;
        crate::signing::decode_secret(&text).map_err(|e| format!("{at}.signing_secret: {e}"))?;
    }
    if let Some(rule) = &d.match_rule {
        let json = rule.to_json().map_err(|e| format!("{at}.match: {e}"))?;
        crate::routing::compile_match(&json).map_err(|e| format!("{at}.match: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_runs_on_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7071");
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
        assert!(c.admin.token.is_none());
        assert_eq!(c.retention.delivered_s, 7 * 86_400);
        assert_eq!(c.retention.dead_letters_s, 30 * 86_400);
        assert_eq!(c.ingest.min_free_disk_bytes, 256 * 1024 * 1024);
        assert!(c.destinations.is_empty());
    }

    #[test]
    fn destination_defaults_follow_the_design() {
        let c = Config::parse("[[destinations]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/x\"\n")
            .unwrap();
        let d = &c.destinations[0];
        assert_eq!((d.timeout_ms, d.max_concurrency), (10_000, 16));
        assert_eq!(
            d.retry,
            RetryConfig {
                initial_ms: 5000,
                max_delay_ms: 3_600_000,
                max_attempts: 12,
                max_age_s: 86_400,
                schedule_ms: None,
            }
        );
        assert_eq!(
            d.breaker,
            BreakerConfig {
                failures: 5,
                cooldown_ms: 5000,
                max_cooldown_ms: 300_000
            }
        );
        assert!(!d.ordered && d.rate_limit.is_none() && d.match_rule.is_none());
    }

    #[test]
    fn the_design_example_parses() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("EDGEHOOK_TEST_ADMIN_TOKEN", "t0ken") };
        let c = Config::parse(
            r#"
data_dir = "./data"
durability = "flush"
[ingest]
listen = "127.0.0.1:7070"
[admin]
listen = "127.0.0.1:7071"
token = { env = "EDGEHOOK_TEST_ADMIN_TOKEN" }
[metrics]
listen = "127.0.0.1:9464"
[[destinations]]
name = "billing"
url = "http://127.0.0.1:8081/webhooks"
sources = ["stripe"]
event_types = ["invoice.*"]
timeout_ms = 10000
max_concurrency = 16
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
retry = { initial_ms = 5000, max_delay_ms = 3600000, max_attempts = 12, max_age_s = 86400 }
rate_limit = { per_second = 20 }
headers = { x-team = "billing" }
forward_headers = ["stripe-signature"]
match = { "body.amount" = { "$gte" = 100 } }
"#,
        )
        .unwrap();
        assert_eq!(c.durability, Durability::Flush);
        assert_eq!(c.admin.token.unwrap().resolve().unwrap(), "t0ken");
        let d = &c.destinations[0];
        assert_eq!(d.sources, ["stripe"]);
        assert_eq!(
            d.match_rule.as_ref().unwrap().to_json().unwrap(),
            serde_json::json!({"body.amount": {"$gte": 100}})
        );
    }

    #[test]
    fn mistakes_are_named_and_secrets_not_shown() {
        assert!(
            Config::parse("dat_dir = 1")
                .unwrap_err()
                .contains("dat_dir")
        );
        let e = Config::parse("[[destinations]]\nname = \"a\"\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("destinations[0].url"), "{e}");
        let e = Config::parse(
            "[[destinations]]\nname = \"a\"\nurl = \"http://x\"\nsigning_secret = \"whsec_!!topsecret\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("signing_secret") && !e.contains("topsecret"),
            "{e}"
        );
        let e = Config::parse(
            "[[destinations]]\nname = \"a\"\nurl = \"http://x\"\nforward_headers = [\"Webhook-Id\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("Webhook-Id"), "{e}");
        let e = Config::parse(
            "[[destinations]]\nname = \"a\"\nurl = \"http://x\"\nretry_statuses = [503]\n",
        )
        .unwrap_err();
        assert!(e.contains("retry_statuses"), "{e}");
        let e = Config::parse(
            "[[destinations]]\nname = \"a\"\nurl = \"http://x\"\n[[destinations]]\nname = \"a\"\nurl = \"http://y\"\n",
        )
        .unwrap_err();
        assert!(e.contains("destinations[0].name"), "{e}");
        let s = SecretRef::Inline("topsecret".into());
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
