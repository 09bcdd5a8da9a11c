//! The plugin configuration: the JSON in Envoy's `configuration` field,
//! parsed once per VM in `on_configure`. Unknown fields, bad values and
//! missing secrets are errors that name the field's path, so
//! `envoy --mode validate` refuses a broken config with a readable message.
//! Secret values never appear in an error.

use std::time::Duration;

use edgehook_rules::{EventTypes, Match};
use serde::Deserialize;

use crate::ip::{self, IpRules};
use crate::ratelimit::{self, Limit, RateLimits};
use crate::verify::generic::{self, GenericHmac, TimestampCheck};
use crate::verify::standard_webhooks::{self, StandardWebhooks};
use crate::verify::token::{self, Presented, Token};
use crate::verify::url::{self, SignedUrl};
use crate::verify::{
    Secret, Secrets, SignatureScheme, discord, github, paddle, pagerduty, sendgrid, shopify, slack,
    square, stripe, text_secret, twilio,
};

/// A configuration error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub sidecar: SidecarConfig,
    pub sources: Vec<Source>,
    /// What happens to a request no source matches.
    pub unknown_source: UnknownSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSource {
    /// 404 `{"error":"unknown_source"}`.
    Reject,
    /// Untouched, on to the next filter and the route (for a listener
    /// that also serves other traffic).
    PassThrough,
}

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The Envoy cluster (HTTP/2) that reaches the sidecar's ingest port.
    pub cluster: String,
    /// How long a publish may take before the sender gets 503.
    pub timeout: Duration,
    /// Per-worker batching: the events that arrive within one tick go to
    /// the sidecar as one `PublishBatch` call. `None`: one call per event.
    pub batch: Option<BatchConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// How often a worker sends what it gathered.
    pub tick: Duration,
    /// Most events in one call.
    pub max_events: usize,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub route: Route,
    pub scheme: SignatureScheme,
    /// Upper-case method names; anything else gets 405.
    pub methods: Vec<String>,
    pub max_body_bytes: usize,
    /// Lower-case media types (`type/subtype` or `type/*`); empty admits any.
    pub content_types: Vec<String>,
    pub ip: IpRules,
    pub rate_limits: RateLimits,
    pub rules: SourceRules,
}

/// Which verified events a source keeps; the rest are acked as filtered.
#[derive(Debug, Clone, Default)]
pub struct SourceRules {
    pub event_types: EventTypes,
    pub matcher: Option<Match>,
    pub invalid_json: InvalidJson,
}

/// What a body that is not JSON means to a rule that reads `body.*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InvalidJson {
    /// 400 `{"error":"body_not_json"}`.
    #[default]
    Reject,
    /// The rule does not match: the event is filtered (200).
    NoMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    /// Matched against `:authority` without its port, case-insensitively.
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

pub const DEFAULT_CLUSTER: &str = "edgehook_sidecar";
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Envoy's own buffering bounds what a filter can hold; past 64 MiB a
/// webhook is almost certainly not one.
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

// ---- the JSON as written --------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sidecar: RawSidecar,
    sources: Vec<RawSource>,
    unknown_source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    #[serde(default = "default_cluster")]
    cluster: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    batch: Option<RawBatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default = "default_batch_tick_ms")]
    tick_ms: u64,
    #[serde(default = "default_batch_max_events")]
    max_events: usize,
}

fn default_batch_tick_ms() -> u64 {
    1
}
fn default_batch_max_events() -> usize {
    256
}

impl Default for RawSidecar {
    fn default() -> Self {
        RawSidecar {
            cluster: default_cluster(),
            timeout_ms: default_timeout_ms(),
            batch: None,
        }
    }
}

fn default_cluster() -> String {
    DEFAULT_CLUSTER.to_string()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_methods() -> Vec<String> {
    vec!["POST".to_string()]
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    #[serde(rename = "match")]
    route: RawMatch,
    verify: RawVerify,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default)]
    content_types: Vec<String>,
    #[serde(default)]
    ip: RawIp,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    rules: RawRules,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIp {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    trusted_hops: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_client: Option<RawLimit>,
    verified: Option<RawLimit>,
    client_slots: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rps: f64,
    burst: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    event_types: RawEventTypes,
    #[serde(rename = "match")]
    matcher: Option<serde_json::Value>,
    invalid_json: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEventTypes {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    path: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
}

/// `verify` as written: one variant per scheme, named by `"scheme"`.
#[derive(Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
enum RawVerify {
    /// Svix sends the same scheme under `svix-*` headers.
    #[serde(alias = "svix")]
    StandardWebhooks {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Github {
        secrets: Vec<SecretSpec>,
        #[serde(default)]
        allow_sha1: bool,
    },
    Stripe {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Slack {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Shopify {
        secrets: Vec<SecretSpec>,
    },
    Twilio {
        secrets: Vec<SecretSpec>,
        url: Option<String>,
        url_scheme: Option<String>,
    },
    Square {
        secrets: Vec<SecretSpec>,
        notification_url: String,
    },
    Paddle {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Pagerduty {
        secrets: Vec<SecretSpec>,
    },
    Sendgrid {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Discord {
        secrets: Vec<SecretSpec>,
        tolerance_s: Option<i64>,
    },
    Hmac(RawHmac),
    Token {
        secrets: Vec<SecretSpec>,
        header: Option<String>,
        #[serde(default)]
        basic_auth: bool,
        id_header: Option<String>,
        event_type_header: Option<String>,
    },
}

/// The generic scheme's options. Enumerated values are strings checked by
/// hand, so their errors name the field (serde's would name only `verify`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHmac {
    secrets: Vec<SecretSpec>,
    header: String,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    timestamp_header: Option<String>,
    tolerance_s: Option<i64>,
    id_header: Option<String>,
    event_type_header: Option<String>,
    signed_content: Option<String>,
    url: Option<String>,
    url_scheme: Option<String>,
}

/// A secret as configured: inline text, or the name of an environment
/// variable of the Envoy process; either may carry an expiry for rotation.
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretSpec {
    Inline(String),
    Env {
        env: String,
        #[serde(default)]
        not_after: Option<String>,
    },
    Value {
        value: String,
        #[serde(default)]
        not_after: Option<String>,
    },
}

// ---- parsing and checking -------------------------------------------------

impl FilterConfig {
    /// Parses the plugin configuration. `env` looks up an environment
    /// variable (in the filter: the Envoy process environment via WASI).
    pub fn parse(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FilterConfig, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // serde's messages for secrets would not contain the value
            // (untagged enums report only that no variant matched).
            ConfigError::at(
                if path == "." {
                    "configuration".into()
                } else {
                    path
                },
                e.into_inner().to_string(),
            )
        })?;

        if raw.sidecar.cluster.is_empty() {
            return Err(ConfigError::at("sidecar.cluster", "must not be empty"));
        }
        if !(1..=60_000).contains(&raw.sidecar.timeout_ms) {
            return Err(ConfigError::at(
                "sidecar.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        let batch = match raw.sidecar.batch {
            None => None,
            Some(b) => {
                if !(1..=1000).contains(&b.tick_ms) {
                    return Err(ConfigError::at(
                        "sidecar.batch.tick_ms",
                        "must be between 1 and 1000",
                    ));
                }
                if !(1..=4096).contains(&b.max_events) {
                    return Err(ConfigError::at(
                        "sidecar.batch.max_events",
                        "must be between 1 and 4096",
                    ));
                }
                Some(BatchConfig {
                    tick: Duration::from_millis(b.tick_ms),
                    max_events: b.max_events,
                })
            }
        };
        if raw.sources.is_empty() {
            return Err(ConfigError::at(
                "sources",
                "at least one source is required",
            ));
        }
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.into_iter().enumerate() {
            let at = format!("sources[{i}]");
            let source = parse_source(s, &at, env)?;
            if sources.iter().any(|o: &Source| o.name == source.name) {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!("duplicate source name {:?}", source.name),
                ));
            }
            sources.push(source);
        }
        let unknown_source = match raw.unknown_source.as_deref().unwrap_or("reject") {
            "reject" => UnknownSource::Reject,
            "pass_through" => UnknownSource::PassThrough,
            _ => {
                return Err(ConfigError::at(
                    "unknown_source",
                    "must be \"reject\" or \"pass_through\"",
                ));
            }
        };
        Ok(FilterConfig {
            sidecar: SidecarConfig {
                cluster: raw.sidecar.cluster,
                timeout: Duration::from_millis(raw.sidecar.timeout_ms),
                batch,
            },
            sources,
            unknown_source,
        })
    }
}

fn parse_source(
    s: RawSource,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, ConfigError> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !name_ok {
        return Err(ConfigError::at(
            format!("{at}.name"),
            "must be 1-64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    let path = match (s.route.path, s.route.prefix) {
        (Some(p), None) => PathMatch::Exact(p),
        (None, Some(p)) => PathMatch::Prefix(p),
        _ => {
            return Err(ConfigError::at(
                format!("{at}.match"),
                "exactly one of \"path\" or \"prefix\" is required",
            ));
        }
    };
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &path;
    if !p.starts_with('/') {
        return Err(ConfigError::at(
            format!("{at}.match"),
            "paths start with '/'",
        ));
    }
    let host = s.route.host.map(|h| h.to_ascii_lowercase());

    if s.methods.is_empty() {
        return Err(ConfigError::at(
            format!("{at}.methods"),
            "must list at least one method",
        ));
    }
    let mut methods = Vec::with_capacity(s.methods.len());
    for (j, m) in s.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::at(
                format!("{at}.methods[{j}]"),
                "not an HTTP method",
            ));
        }
        methods.push(m.to_ascii_uppercase());
    }
    if !(1..=MAX_MAX_BODY_BYTES).contains(&s.max_body_bytes) {
        return Err(ConfigError::at(
            format!("{at}.max_body_bytes"),
            format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
        ));
    }

    let content_types = parse_content_types(&s.content_types, at)?;
    let ip = parse_ip(s.ip, &format!("{at}.ip"))?;
    let rate_limits = parse_rate_limit(s.rate_limit, &format!("{at}.rate_limit"))?;
    let rules = parse_rules(s.rules, &format!("{at}.rules"))?;
    let scheme = parse_verify(s.verify, &format!("{at}.verify"), env)?;

    Ok(Source {
        name: s.name,
        route: Route { path, host },
        scheme,
        methods,
        max_body_bytes: s.max_body_bytes,
        content_types,
        ip,
        rate_limits,
        rules,
    })
}

/// `type/subtype` or `type/*`, without parameters, stored lower-case.
fn parse_content_types(types: &[String], at: &str) -> Result<Vec<String>, ConfigError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
    };
    let mut out = Vec::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        let ok = match t.split_once('/') {
            Some((ty, "*")) => token(ty) && ty != "*",
            Some((ty, sub)) => token(ty) && token(sub) && ty != "*" && sub != "*",
            None => false,
        };
        if !ok {
            return Err(ConfigError::at(
                format!("{at}.content_types[{i}]"),
                "must be a media type such as application/json or text/* (no parameters)",
            ));
        }
        out.push(t.to_ascii_lowercase());
    }
    Ok(out)
}

/// Proxies in front of Envoy past this many are a configuration mistake.
pub const MAX_TRUSTED_HOPS: u32 = 16;

fn parse_ip(raw: RawIp, at: &str) -> Result<IpRules, ConfigError> {
    let cidrs = |list: &[String], field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, c)| {
                ip::parse_cidr(c).map_err(|why| ConfigError::at(format!("{at}.{field}[{i}]"), why))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    if raw.trusted_hops > MAX_TRUSTED_HOPS {
        return Err(ConfigError::at(
            format!("{at}.trusted_hops"),
            format!("must be between 0 and {MAX_TRUSTED_HOPS}"),
        ));
    }
    Ok(IpRules {
        allow: cidrs(&raw.allow, "allow")?,
        deny: cidrs(&raw.deny, "deny")?,
        trusted_hops: raw.trusted_hops,
    })
}

fn parse_rate_limit(raw: RawRateLimit, at: &str) -> Result<RateLimits, ConfigError> {
    let limit = |l: Option<RawLimit>, field: &str| -> Result<Option<Limit>, ConfigError> {
        let Some(l) = l else { return Ok(None) };
        if !(ratelimit::MIN_RPS..=ratelimit::MAX_RPS).contains(&l.rps) {
            return Err(ConfigError::at(
                format!("{at}.{field}.rps"),
                format!(
                    "must be between {} and {}",
                    ratelimit::MIN_RPS,
                    ratelimit::MAX_RPS
                ),
            ));
        }
        Limit::new(l.rps, l.burst).map(Some).ok_or_else(|| {
            ConfigError::at(
                format!("{at}.{field}.burst"),
                format!("must be between 1 and {}", ratelimit::MAX_BURST),
            )
        })
    };
    let client_slots = raw.client_slots.unwrap_or(ratelimit::DEFAULT_CLIENT_SLOTS);
    if !(1..=ratelimit::MAX_CLIENT_SLOTS).contains(&client_slots) {
        return Err(ConfigError::at(
            format!("{at}.client_slots"),
            format!("must be between 1 and {}", ratelimit::MAX_CLIENT_SLOTS),
        ));
    }
    Ok(RateLimits {
        per_client: limit(raw.per_client, "per_client")?,
        verified: limit(raw.verified, "verified")?,
        client_slots,
    })
}

fn parse_rules(raw: RawRules, at: &str) -> Result<SourceRules, ConfigError> {
    for (field, list) in [
        ("allow", &raw.event_types.allow),
        ("deny", &raw.event_types.deny),
    ] {
        if let Some(i) = list.iter().position(String::is_empty) {
            return Err(ConfigError::at(
                format!("{at}.event_types.{field}[{i}]"),
                "an empty pattern matches nothing; use \"*\" for every type",
            ));
        }
    }
    let matcher = match raw.matcher {
        None => None,
        Some(rule) => Some(
            Match::compile(&rule)
                .map_err(|e| ConfigError::at(format!("{at}.match{}", e.path), e.message))?,
        ),
    };
    let invalid_json = match raw.invalid_json.as_deref().unwrap_or("reject") {
        "reject" => InvalidJson::Reject,
        "no_match" => InvalidJson::NoMatch,
        _ => {
            return Err(ConfigError::at(
                format!("{at}.invalid_json"),
                "must be \"reject\" or \"no_match\"",
            ));
        }
    };
    Ok(SourceRules {
        event_types: EventTypes::new(&raw.event_types.allow, &raw.event_types.deny),
        matcher,
        invalid_json,
    })
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Secrets used as their text (HMAC keys and tokens).
fn text_secrets(specs: Vec<SecretSpec>, at: &str, env: Env<'_>) -> Result<Secrets, ConfigError> {
    resolve_secrets(specs, &format!("{at}.secrets"), env, &|t| {
        text_secret(t).map_err(str::to_string)
    })
}

fn parse_verify(raw: RawVerify, at: &str, env: Env<'_>) -> Result<SignatureScheme, ConfigError> {
    Ok(match raw {
        RawVerify::StandardWebhooks {
            secrets,
            tolerance_s,
        } => {
            let tolerance_s = tolerance(tolerance_s, standard_webhooks::DEFAULT_TOLERANCE_S, at)?;
            let secrets = resolve_secrets(secrets, &format!("{at}.secrets"), env, &|text| {
                standard_webhooks::decode_secret(text).map_err(str::to_string)
            })?;
            SignatureScheme::StandardWebhooks(StandardWebhooks {
                secrets,
                tolerance_s,
            })
        }
        RawVerify::Github {
            secrets,
            allow_sha1,
        } => SignatureScheme::Github(github::Github {
            secrets: text_secrets(secrets, at, env)?,
            allow_sha1,
        }),
        RawVerify::Stripe {
            secrets,
            tolerance_s,
        } => SignatureScheme::Stripe(stripe::Stripe {
            tolerance_s: tolerance(tolerance_s, stripe::DEFAULT_TOLERANCE_S, at)?,
            secrets: text_secrets(secrets, at, env)?,
        }),
        RawVerify::Slack {
            secrets,
            tolerance_s,
        } => SignatureScheme::Slack(slack::Slack {
            tolerance_s: tolerance(tolerance_s, slack::DEFAULT_TOLERANCE_S, at)?,
            secrets: text_secrets(secrets, at, env)?,
        }),
        RawVerify::Shopify { secrets } => SignatureScheme::Shopify(shopify::Shopify {
            secrets: text_secrets(secrets, at, env)?,
        }),
        RawVerify::Twilio {
            secrets,
            url,
            url_scheme,
        } => {
            let url = signed_url(url, url_scheme, at)?;
            SignatureScheme::Twilio(twilio::Twilio {
                secrets: text_secrets(secrets, at, env)?,
                url,
            })
        }
        RawVerify::Square {
            secrets,
            notification_url,
        } => {
            // Used verbatim (Square signs the URL as registered), so only
            // the shape is checked; a query is allowed here.
            let ok = (notification_url.starts_with("https://")
                || notification_url.starts_with("http://"))
                && !notification_url
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
            if !ok {
                return Err(ConfigError::at(
                    format!("{at}.notification_url"),
                    "must be the subscription's notification URL, starting with https://",
                ));
            }
            SignatureScheme::Square(square::Square {
                secrets: text_secrets(secrets, at, env)?,
                notification_url,
            })
        }
        RawVerify::Paddle {
            secrets,
            tolerance_s,
        } => SignatureScheme::Paddle(paddle::Paddle {
            tolerance_s: tolerance(tolerance_s, paddle::DEFAULT_TOLERANCE_S, at)?,
            secrets: text_secrets(secrets, at, env)?,
        }),
        RawVerify::Pagerduty { secrets } => SignatureScheme::Pagerduty(pagerduty::Pagerduty {
            secrets: text_secrets(secrets, at, env)?,
        }),
        RawVerify::Sendgrid {
            secrets,
            tolerance_s,
        } => SignatureScheme::Sendgrid(sendgrid::Sendgrid {
            tolerance_s: optional_tolerance(tolerance_s, at)?,
            secrets: resolve_secrets(secrets, &format!("{at}.secrets"), env, &|t| {
                sendgrid::decode_public_key(t).map_err(str::to_string)
            })?,
        }),
        RawVerify::Discord {
            secrets,
            tolerance_s,
        } => SignatureScheme::Discord(discord::Discord {
            tolerance_s: optional_tolerance(tolerance_s, at)?,
            secrets: resolve_secrets(secrets, &format!("{at}.secrets"), env, &|t| {
                discord::decode_public_key(t).map_err(str::to_string)
            })?,
        }),
        RawVerify::Hmac(raw) => SignatureScheme::Hmac(parse_hmac(raw, at, env)?),
        RawVerify::Token {
            secrets,
            header,
            basic_auth,
            id_header,
            event_type_header,
        } => {
            let presented = match (basic_auth, header) {
                (true, Some(_)) => {
                    return Err(ConfigError::at(
                        format!("{at}.header"),
                        "cannot be combined with basic_auth",
                    ));
                }
                (true, None) => Presented::BasicAuth,
                (false, None) => Presented::Header(token::DEFAULT_HEADER),
                (false, Some(h)) => Presented::Header(header_name(&h, &format!("{at}.header"))?),
            };
            SignatureScheme::Token(Token {
                secrets: resolve_secrets(secrets, &format!("{at}.secrets"), env, &|t| {
                    token::decode_token(t, basic_auth).map_err(str::to_string)
                })?,
                presented,
                id_header: optional_header_name(id_header, &format!("{at}.id_header"))?,
                event_type_header: optional_header_name(
                    event_type_header,
                    &format!("{at}.event_type_header"),
                )?,
            })
        }
    })
}

fn parse_hmac(raw: RawHmac, at: &str, env: Env<'_>) -> Result<GenericHmac, ConfigError> {
    let algorithm = match raw.algorithm.as_deref().unwrap_or("sha256") {
        "sha1" => generic::Algorithm::Sha1,
        "sha256" => generic::Algorithm::Sha256,
        "sha512" => generic::Algorithm::Sha512,
        _ => {
            return Err(ConfigError::at(
                format!("{at}.algorithm"),
                "must be sha1, sha256 or sha512",
            ));
        }
    };
    let encoding = match raw.encoding.as_deref().unwrap_or("hex") {
        "hex" => generic::Encoding::Hex,
        "base64" => generic::Encoding::Base64,
        "base64url" => generic::Encoding::Base64Url,
        _ => {
            return Err(ConfigError::at(
                format!("{at}.encoding"),
                "must be hex, base64 or base64url",
            ));
        }
    };
    let signed_content = generic::parse_template(raw.signed_content.as_deref().unwrap_or("{body}"))
        .map_err(|why| ConfigError::at(format!("{at}.signed_content"), why))?;
    let has = |p: generic::Part| signed_content.contains(&p);

    let timestamp = match (raw.timestamp_header, raw.tolerance_s) {
        (Some(h), tolerance_s) => {
            // A timestamp outside the MAC could be rewritten at will, so a
            // tolerance on it would protect nothing.
            if !has(generic::Part::Timestamp) {
                return Err(ConfigError::at(
                    format!("{at}.signed_content"),
                    "must contain {timestamp} when timestamp_header is set, or the timestamp is not signed",
                ));
            }
            Some(TimestampCheck {
                header: header_name(&h, &format!("{at}.timestamp_header"))?,
                tolerance_s: tolerance(tolerance_s, standard_webhooks::DEFAULT_TOLERANCE_S, at)?,
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::at(
                format!("{at}.tolerance_s"),
                "needs timestamp_header",
            ));
        }
        (None, None) if has(generic::Part::Timestamp) => {
            return Err(ConfigError::at(
                format!("{at}.timestamp_header"),
                "is required by {timestamp} in signed_content",
            ));
        }
        (None, None) => None,
    };
    let id_header = optional_header_name(raw.id_header, &format!("{at}.id_header"))?;
    if id_header.is_none() && has(generic::Part::Id) {
        return Err(ConfigError::at(
            format!("{at}.id_header"),
            "is required by {id} in signed_content",
        ));
    }
    if !has(generic::Part::Url) && (raw.url.is_some() || raw.url_scheme.is_some()) {
        let field = if raw.url.is_some() {
            "url"
        } else {
            "url_scheme"
        };
        return Err(ConfigError::at(
            format!("{at}.{field}"),
            "is only used with {url} in signed_content",
        ));
    }
    Ok(GenericHmac {
        header: header_name(&raw.header, &format!("{at}.header"))?,
        algorithm,
        encoding,
        prefix: raw.prefix.unwrap_or_default(),
        timestamp,
        id_header,
        event_type_header: optional_header_name(
            raw.event_type_header,
            &format!("{at}.event_type_header"),
        )?,
        url: signed_url(raw.url, raw.url_scheme, at)?,
        signed_content,
        secrets: text_secrets(raw.secrets, at, env)?,
    })
}

/// `url` (the public URL, checked) or a rebuilt one with `url_scheme`.
fn signed_url(
    url: Option<String>,
    url_scheme: Option<String>,
    at: &str,
) -> Result<SignedUrl, ConfigError> {
    match (url, url_scheme) {
        (Some(_), Some(_)) => Err(ConfigError::at(
            format!("{at}.url_scheme"),
            "only applies when url is not set (the URL is rebuilt)",
        )),
        (Some(u), None) => url::parse_configured(&u)
            .map(SignedUrl::Configured)
            .map_err(|why| ConfigError::at(format!("{at}.url"), why)),
        (None, scheme) => {
            let scheme = match scheme {
                Some(s) => Some(
                    url::parse_url_scheme(&s)
                        .map_err(|why| ConfigError::at(format!("{at}.url_scheme"), why))?,
                ),
                None => None,
            };
            Ok(SignedUrl::FromRequest { scheme })
        }
    }
}

/// A configured header name: an HTTP token, stored lower-case. Names are
/// interned as `&'static str` because a refusal names its header, and
/// `Failure` carries only static text (never request data).
fn header_name(name: &str, at: &str) -> Result<&'static str, ConfigError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
    {
        return Err(ConfigError::at(at, "must be an HTTP header name"));
    }
    Ok(intern(&name.to_ascii_lowercase()))
}

fn optional_header_name(
    name: Option<String>,
    at: &str,
) -> Result<Option<&'static str>, ConfigError> {
    name.map(|n| header_name(&n, at)).transpose()
}

/// Leaks each distinct name once per process: configurations are parsed
/// per VM and on every update, and re-parsing the same names must not grow
/// memory.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(existing) = names.iter().find(|n| **n == name) {
        return existing;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// Tolerances outside 1 s..1 h are mistakes: zero would refuse everything,
/// and a long window defeats replay protection.
fn tolerance(value: Option<i64>, default: i64, at: &str) -> Result<i64, ConfigError> {
    let t = value.unwrap_or(default);
    if (1..=3600).contains(&t) {
        Ok(t)
    } else {
        Err(ConfigError::at(
            format!("{at}.tolerance_s"),
            "must be between 1 and 3600 seconds",
        ))
    }
}

/// For schemes whose providers check no age by default.
fn optional_tolerance(value: Option<i64>, at: &str) -> Result<Option<i64>, ConfigError> {
    value.map(|t| tolerance(Some(t), t, at)).transpose()
}

fn resolve_secrets(
    specs: Vec<SecretSpec>,
    at: &str,
    env: Env<'_>,
    decode: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Secrets, ConfigError> {
    if specs.is_empty() {
        return Err(ConfigError::at(at, "at least one secret is required"));
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        let (text, not_after) = match spec {
            SecretSpec::Inline(v) => (v, None),
            SecretSpec::Value { value, not_after } => (value, not_after),
            SecretSpec::Env {
                env: name,
                not_after,
            } => match env(&name) {
                Some(v) if !v.is_empty() => (v, not_after),
                _ => {
                    return Err(ConfigError::at(
                        at,
                        format!(
                            "environment variable {name} is not set or empty (add it to vm_config.environment_variables.host_env_keys)"
                        ),
                    ));
                }
            },
        };
        let key = decode(&text).map_err(|why| ConfigError::at(&at, format!("secret {why}")))?;
        let not_after = match not_after {
            None => None,
            Some(t) => Some(parse_rfc3339(&t).ok_or_else(|| {
                ConfigError::at(
                    format!("{at}.not_after"),
                    "must be an RFC 3339 time such as 2027-01-01T00:00:00Z",
                )
            })?),
        };
        out.push(Secret::new(key, not_after));
    }
    Ok(Secrets::new(out))
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
        FilterConfig::parse(json.as_bytes(), &no_env)
    }

    fn one_source(extra: &str) -> String {
        format!(
            r#"{{"sources":[{{"name":"demo","match":{{"path":"/hooks/demo"}},"verify":{{"scheme":"standard-webhooks","secrets":["{SECRET}"]}}{extra}}}]}}"#
        )
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse(&one_source("")).unwrap();
        assert_eq!(c.sidecar.cluster, "edgehook_sidecar");
        assert_eq!(c.sidecar.timeout, Duration::from_millis(2000));
        let s = &c.sources[0];
        assert_eq!(s.methods, vec!["POST"]);
        assert_eq!(s.max_body_bytes, 1024 * 1024);
        assert_eq!(s.route.path, PathMatch::Exact("/hooks/demo".into()));
        let SignatureScheme::StandardWebhooks(sw) = &s.scheme else {
            panic!("not standard-webhooks")
        };
        assert_eq!(sw.tolerance_s, 300);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                one_source(r#","mehtods":["POST"]"#),
                "sources[0]",
                "mehtods",
            ),
            (
                one_source(r#","max_body_bytes":0"#),
                "sources[0].max_body_bytes",
                "between",
            ),
            (
                one_source(r#","methods":[]"#),
                "sources[0].methods",
                "at least one",
            ),
            (
                one_source("").replace("standard-webhooks", "nope"),
                "sources[0].verify",
                "unknown variant",
            ),
            (
                one_source("").replace(r#""secrets""#, r#""tolerance_s":0,"secrets""#),
                "sources[0].verify.tolerance_s",
                "between",
            ),
            (
                one_source("").replace(SECRET, "whsec_!!"),
                "sources[0].verify.secrets[0]",
                "base64",
            ),
            (
                r#"{"sources":[],"sidecar":{"timeout_ms":0}}"#.to_string(),
                "sidecar.timeout_ms",
                "",
            ),
            (
                r#"{"sources":[],"sidecar":{"batch":{"tick_ms":0}}}"#.to_string(),
                "sidecar.batch.tick_ms",
                "between 1 and 1000",
            ),
            (
                r#"{"sources":[],"sidecar":{"batch":{"max_events":5000}}}"#.to_string(),
                "sidecar.batch.max_events",
                "between 1 and 4096",
            ),
            (
                r#"{"sources":[],"sidecar":{"batch":{"tick":1}}}"#.to_string(),
                "sidecar.batch.tick",
                "unknown field",
            ),
            (r#"{"sources":[]}"#.to_string(), "sources", "at least one"),
        ];
        for (json, path, words) in cases {
            let e = parse(&json).unwrap_err();
            assert!(e.path.starts_with(path), "{json}: got {e}");
            assert!(e.message.contains(words), "{json}: got {e}");
        }
    }

    #[test]
    fn env_secrets_are_read_and_missing_ones_named_without_value() {
        let json = one_source("").replace(
            &format!("\"{SECRET}\""),
            r#"{"env":"DEMO_SECRET","not_after":"2027-01-01T00:00:00Z"}"#,
        );
        let env = |k: &str| (k == "DEMO_SECRET").then(|| SECRET.to_string());
        let c = FilterConfig::parse(json.as_bytes(), &env).unwrap();
        let SignatureScheme::StandardWebhooks(sw) = &c.sources[0].scheme else {
            panic!("not standard-webhooks")
        };
        assert!(sw.secrets.active(1_798_761_600).is_ok());
        assert!(sw.secrets.active(1_798_761_601).is_err());

        let e = parse(&json).unwrap_err();
        assert_eq!(e.path, "sources[0].verify.secrets[0]");
        assert!(e.message.contains("DEMO_SECRET"));

        let bad = one_source("").replace(SECRET, "whsec_!!notbase64");
        let e = parse(&bad).unwrap_err();
        assert!(!e.to_string().contains("notbase64"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_paths_are_refused() {
        let s = r#"{"name":"a","match":{"path":"/x"},"verify":{"scheme":"standard-webhooks","secrets":["whsec_aGk="]}}"#;
        let e = parse(&format!(r#"{{"sources":[{s},{s}]}}"#)).unwrap_err();
        assert_eq!(e.path, "sources[1].name");
        let e = parse(&one_source("").replace("/hooks/demo", "hooks")).unwrap_err();
        assert_eq!(e.path, "sources[0].match");
    }

    /// A config with one source whose `verify` is `verify`.
    fn with_verify(verify: &str) -> String {
        format!(
            r#"{{"sources":[{{"name":"demo","match":{{"path":"/hooks/demo"}},"verify":{verify}}}]}}"#
        )
    }

    const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const DISCORD_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn every_scheme_has_a_minimal_config() {
        let minimal = [
            r#"{"scheme":"standard-webhooks","secrets":["whsec_aGk="]}"#.to_string(),
            r#"{"scheme":"svix","secrets":["whsec_aGk="]}"#.to_string(),
            r#"{"scheme":"github","secrets":["s"]}"#.to_string(),
            r#"{"scheme":"stripe","secrets":["whsec_x"]}"#.to_string(),
            r#"{"scheme":"slack","secrets":["s"]}"#.to_string(),
            r#"{"scheme":"shopify","secrets":["s"]}"#.to_string(),
            r#"{"scheme":"twilio","secrets":["s"]}"#.to_string(),
            r#"{"scheme":"square","secrets":["s"],"notification_url":"https://a.com/sq"}"#
                .to_string(),
            r#"{"scheme":"paddle","secrets":["s"]}"#.to_string(),
            r#"{"scheme":"pagerduty","secrets":["s"]}"#.to_string(),
            format!(r#"{{"scheme":"sendgrid","secrets":["{SENDGRID_KEY}"]}}"#),
            format!(r#"{{"scheme":"discord","secrets":["{DISCORD_KEY}"]}}"#),
            r#"{"scheme":"hmac","secrets":["s"],"header":"X-Signature"}"#.to_string(),
            r#"{"scheme":"token","secrets":["s"]}"#.to_string(),
        ];
        for verify in minimal {
            let c = parse(&with_verify(&verify)).unwrap_or_else(|e| panic!("{verify}: {e}"));
            assert!(c.sources[0].scheme.secrets().active(0).is_ok());
        }
        let c = parse(&with_verify(r#"{"scheme":"paddle","secrets":["s"]}"#)).unwrap();
        let SignatureScheme::Paddle(p) = &c.sources[0].scheme else {
            panic!("not paddle")
        };
        assert_eq!(p.tolerance_s, 5);
        let c = parse(&with_verify(
            r#"{"scheme":"hmac","secrets":["s"],"header":"X-Signature"}"#,
        ))
        .unwrap();
        let SignatureScheme::Hmac(h) = &c.sources[0].scheme else {
            panic!("not hmac")
        };
        assert_eq!(
            (h.header, h.algorithm, h.encoding),
            (
                "x-signature",
                generic::Algorithm::Sha256,
                generic::Encoding::Hex
            )
        );
    }

    #[test]
    fn scheme_errors_name_the_field() {
        let cases: Vec<(String, &str, &str)> = vec![
            // Unknown scheme and unknown fields.
            (r#"{"scheme":"gitlab","secrets":["s"]}"#.into(), "sources[0].verify.scheme", "unknown variant `gitlab`"),
            (r#"{"scheme":"stripe","secrets":["s"],"tolerance":5}"#.into(), "sources[0].verify", "unknown field `tolerance`"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","algo":"sha1"}"#.into(), "sources[0].verify", "unknown field `algo`"),
            (r#"{"scheme":"github","secrets":["s"],"allow_sha1":"yes"}"#.into(), "sources[0].verify", "invalid type"),
            (r#"{"scheme":"square","secrets":["s"]}"#.into(), "sources[0].verify", "missing field `notification_url`"),
            (r#"{"scheme":"hmac","secrets":["s"]}"#.into(), "sources[0].verify", "missing field `header`"),
            // Secrets.
            (r#"{"scheme":"github","secrets":[]}"#.into(), "sources[0].verify.secrets", "at least one"),
            (r#"{"scheme":"github","secrets":[""]}"#.into(), "sources[0].verify.secrets[0]", "empty"),
            (r#"{"scheme":"slack","secrets":["s","s\n"]}"#.into(), "sources[0].verify.secrets[1]", "whitespace"),
            (r#"{"scheme":"sendgrid","secrets":["bm90IGEga2V5"]}"#.into(), "sources[0].verify.secrets[0]", "P-256"),
            (r#"{"scheme":"sendgrid","secrets":["%%%"]}"#.into(), "sources[0].verify.secrets[0]", "base64"),
            (r#"{"scheme":"discord","secrets":["abcd"]}"#.into(), "sources[0].verify.secrets[0]", "Ed25519"),
            (r#"{"scheme":"discord","secrets":["xyz"]}"#.into(), "sources[0].verify.secrets[0]", "hex"),
            (r#"{"scheme":"token","secrets":["nocolon"],"basic_auth":true}"#.into(), "sources[0].verify.secrets[0]", "user:password"),
            // Tolerances.
            (r#"{"scheme":"stripe","secrets":["s"],"tolerance_s":0}"#.into(), "sources[0].verify.tolerance_s", "between"),
            (r#"{"scheme":"slack","secrets":["s"],"tolerance_s":-1}"#.into(), "sources[0].verify.tolerance_s", "between"),
            (r#"{"scheme":"paddle","secrets":["s"],"tolerance_s":3601}"#.into(), "sources[0].verify.tolerance_s", "between"),
            (format!(r#"{{"scheme":"sendgrid","secrets":["{SENDGRID_KEY}"],"tolerance_s":0}}"#), "sources[0].verify.tolerance_s", "between"),
            (format!(r#"{{"scheme":"discord","secrets":["{DISCORD_KEY}"],"tolerance_s":99999}}"#), "sources[0].verify.tolerance_s", "between"),
            // URLs.
            (r#"{"scheme":"twilio","secrets":["s"],"url":"https://a.com/x?y=1"}"#.into(), "sources[0].verify.url", "query"),
            (r#"{"scheme":"twilio","secrets":["s"],"url":"a.com/x"}"#.into(), "sources[0].verify.url", "https://"),
            (r#"{"scheme":"twilio","secrets":["s"],"url_scheme":"ftp"}"#.into(), "sources[0].verify.url_scheme", "https"),
            (r#"{"scheme":"twilio","secrets":["s"],"url":"https://a.com/x","url_scheme":"https"}"#.into(), "sources[0].verify.url_scheme", "only applies"),
            (r#"{"scheme":"square","secrets":["s"],"notification_url":"a.com"}"#.into(), "sources[0].verify.notification_url", "https://"),
            // The generic scheme.
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","algorithm":"md5"}"#.into(), "sources[0].verify.algorithm", "sha256"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","encoding":"base32"}"#.into(), "sources[0].verify.encoding", "base64"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"bad header"}"#.into(), "sources[0].verify.header", "header name"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","signed_content":"{timestamp}"}"#.into(), "sources[0].verify.signed_content", "{body}"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","signed_content":"{nonce}{body}"}"#.into(), "sources[0].verify.signed_content", "unknown placeholder"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","signed_content":"{timestamp}.{body}"}"#.into(), "sources[0].verify.timestamp_header", "required"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","timestamp_header":"x-ts"}"#.into(), "sources[0].verify.signed_content", "not signed"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","tolerance_s":60}"#.into(), "sources[0].verify.tolerance_s", "timestamp_header"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","timestamp_header":"t","signed_content":"{timestamp}{body}","tolerance_s":0}"#.into(), "sources[0].verify.tolerance_s", "between"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","signed_content":"{id}.{body}"}"#.into(), "sources[0].verify.id_header", "required"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","url":"https://a.com/x"}"#.into(), "sources[0].verify.url", "{url}"),
            (r#"{"scheme":"hmac","secrets":["s"],"header":"x","event_type_header":":path"}"#.into(), "sources[0].verify.event_type_header", "header name"),
            // Tokens.
            (r#"{"scheme":"token","secrets":["u:p"],"basic_auth":true,"header":"x"}"#.into(), "sources[0].verify.header", "basic_auth"),
            (r#"{"scheme":"token","secrets":["s"],"header":""}"#.into(), "sources[0].verify.header", "header name"),
        ];
        for (verify, path, words) in cases {
            let e = parse(&with_verify(&verify)).unwrap_err();
            assert_eq!(e.path, path, "{verify}: got {e}");
            assert!(e.message.contains(words), "{verify}: got {e}");
        }
    }

    #[test]
    fn secret_values_never_appear_in_scheme_errors() {
        for verify in [
            r#"{"scheme":"slack","secrets":["hunter2 "]}"#,
            r#"{"scheme":"discord","secrets":["hunter2"]}"#,
            r#"{"scheme":"sendgrid","secrets":["hunter2"]}"#,
            r#"{"scheme":"token","secrets":["hunter2"],"basic_auth":true}"#,
        ] {
            let e = parse(&with_verify(verify)).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn header_names_are_interned_once() {
        assert!(std::ptr::eq(intern("x-interned"), intern("x-interned")));
    }

    #[test]
    fn guard_fields_parse_with_defaults() {
        let c = parse(&one_source("")).unwrap();
        let s = &c.sources[0];
        assert_eq!(c.unknown_source, UnknownSource::Reject);
        assert!(s.content_types.is_empty());
        assert_eq!(s.ip, IpRules::default());
        assert_eq!(s.rate_limits, RateLimits::default());
        assert!(s.rules.event_types.is_empty() && s.rules.matcher.is_none());
        assert_eq!(s.rules.invalid_json, InvalidJson::Reject);

        let c = parse(&one_source(
            r#","content_types":["Application/JSON","text/*"],
               "ip":{"allow":["10.0.0.0/8"],"deny":["10.6.6.0/24"],"trusted_hops":2},
               "rate_limit":{"per_client":{"rps":0.5,"burst":10},"verified":{"rps":200,"burst":400},"client_slots":64},
               "rules":{"event_types":{"allow":["invoice.*"],"deny":["invoice.draft"]},
                        "match":{"body.amount":{"$gte":100}},"invalid_json":"no_match"}"#,
        ))
        .unwrap();
        let s = &c.sources[0];
        assert_eq!(s.content_types, vec!["application/json", "text/*"]);
        assert_eq!(
            (s.ip.allow.len(), s.ip.deny.len(), s.ip.trusted_hops),
            (1, 1, 2)
        );
        assert_eq!(s.rate_limits.per_client.map(|l| l.burst()), Some(10));
        assert_eq!(s.rate_limits.verified.map(|l| l.window_s()), Some(2));
        assert_eq!(s.rate_limits.client_slots, 64);
        assert!(s.rules.event_types.admits(Some("invoice.paid")));
        assert!(!s.rules.event_types.admits(Some("invoice.draft")));
        assert!(s.rules.matcher.is_some());
        assert_eq!(s.rules.invalid_json, InvalidJson::NoMatch);

        let json = one_source("").replacen('{', r#"{"unknown_source":"pass_through","#, 1);
        assert_eq!(
            parse(&json).unwrap().unknown_source,
            UnknownSource::PassThrough
        );
    }

    #[test]
    fn guard_errors_name_the_field() {
        let cases = [
            (
                r#","content_types":["json"]"#,
                "sources[0].content_types[0]",
                "media type",
            ),
            (
                r#","content_types":["*/*"]"#,
                "sources[0].content_types[0]",
                "media type",
            ),
            (
                r#","content_types":["application/json; charset=utf-8"]"#,
                "sources[0].content_types[0]",
                "no parameters",
            ),
            (
                r#","ip":{"allow":["10.0.0.1/8"]}"#,
                "sources[0].ip.allow[0]",
                "bits set",
            ),
            (r#","ip":{"deny":["ten"]}"#, "sources[0].ip.deny[0]", "CIDR"),
            (
                r#","ip":{"trusted_hops":17}"#,
                "sources[0].ip.trusted_hops",
                "between",
            ),
            (
                r#","ip":{"alow":[]}"#,
                "sources[0].ip",
                "unknown field `alow`",
            ),
            (
                r#","rate_limit":{"verified":{"rps":0,"burst":1}}"#,
                "sources[0].rate_limit.verified.rps",
                "between",
            ),
            (
                r#","rate_limit":{"per_client":{"rps":1,"burst":0}}"#,
                "sources[0].rate_limit.per_client.burst",
                "between",
            ),
            (
                r#","rate_limit":{"verified":{"rps":1}}"#,
                "sources[0].rate_limit.verified",
                "missing field `burst`",
            ),
            (
                r#","rate_limit":{"client_slots":0}"#,
                "sources[0].rate_limit.client_slots",
                "between",
            ),
            (
                r#","rules":{"match":{"body.amount":{"$gtee":1}}}"#,
                r#"sources[0].rules.match["body.amount"].$gtee"#,
                "unknown operator",
            ),
            (
                r#","rules":{"match":{"bdy.amount":1}}"#,
                "sources[0].rules.match",
                "body",
            ),
            (
                r#","rules":{"match":[]}"#,
                "sources[0].rules.match",
                "JSON object",
            ),
            (
                r#","rules":{"event_types":{"allow":[""]}}"#,
                "sources[0].rules.event_types.allow[0]",
                "empty",
            ),
            (
                r#","rules":{"invalid_json":"drop"}"#,
                "sources[0].rules.invalid_json",
                "no_match",
            ),
            (
                r#","rules":{"types":[]}"#,
                "sources[0].rules",
                "unknown field `types`",
            ),
        ];
        for (extra, path, words) in cases {
            let e = parse(&one_source(extra)).unwrap_err();
            assert!(e.path.starts_with(path), "{extra}: got {e}");
            assert!(e.message.contains(words), "{extra}: got {e}");
        }
        let e =
            parse(&one_source("").replacen('{', r#"{"unknown_source":"allow","#, 1)).unwrap_err();
        assert_eq!(e.path, "unknown_source");
    }
}
