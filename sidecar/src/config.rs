//! The sidecar's configuration file (TOML). Every field has a default, and
//! the defaults run the demo. Secrets are inline or `{ env = "NAME" }`;
//! their values never appear in errors or `Debug` output.

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
    #[serde(default)]
    pub ingest: IngestConfig,
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
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: default_ingest_listen(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            max_message_bytes: default_max_message_bytes(),
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
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts in flight at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Signs deliveries with Standard Webhooks headers when set.
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Upper bound of the first retry's jittered delay is twice this.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Give up once the first attempt is this old.
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: default_initial_ms(),
            max_delay_ms: default_max_delay_ms(),
            max_attempts: default_max_attempts(),
            max_age_s: default_max_age_s(),
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

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
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
        for (i, d) in self.destinations.iter().enumerate() {
            let at = format!("destinations[{i}]");
            if d.name.is_empty()
                || self
                    .destinations
                    .iter()
                    .filter(|o| o.name == d.name)
                    .count()
                    > 1
            {
                return Err(format!("{at}.name: must be non-empty and unique"));
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
            if let Some(secret) = &d.signing_secret {
                let text = secret
                    .resolve()
                    .map_err(|e| format!("{at}.signing_secret: {e}"))?;
                crate::signing::decode_secret(&text)
                    .map_err(|e| format!("{at}.signing_secret: {e}"))?;
            }
        }
        Ok(())
    }
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
                max_age_s: 86_400
            }
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
        let s = SecretRef::Inline("topsecret".into());
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
