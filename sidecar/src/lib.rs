//! The edgehook sidecar: durable ingest and delivery of webhooks that the
//! Envoy filter verified. The modules follow the data's path:
//! `ingest` (gRPC from the filter, group commit) → `store` (sled) →
//! `dispatch` (per-destination delivery with retries); `routing` decides
//! which destinations get an event, `server` wires them together; `admin` is the
//! operator API and `metrics` the Prometheus view; `cli` holds the
//! subcommands that are clients.

pub mod activity;
pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error_chain;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod retention;
pub mod routing;
pub mod server;
pub mod signing;
pub mod store;
