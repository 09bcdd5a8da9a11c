//! The edgehook filter.
//!
//! Everything that decides lives in plain modules that never touch
//! proxy-wasm, so the host target tests them: `config` (the plugin JSON),
//! `headers` (client headers as bytes), `verify` (signature schemes), `ip`
//! (client address and CIDR lists), `ratelimit` (token buckets over a
//! shared store), `edge` (the per-request decisions, rules included) and
//! `reply` (what the sender is told).
//! `glue` is the thin proxy-wasm adapter and exists only in the wasm build.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod batch;
pub mod config;
pub mod edge;
pub mod headers;
pub mod ip;
pub mod ratelimit;
pub mod reply;
pub mod verify;

#[cfg(target_arch = "wasm32")]
mod glue;
