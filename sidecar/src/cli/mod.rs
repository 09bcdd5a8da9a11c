//! Subcommands that are clients or helpers, not the sidecar itself.

pub mod receive;
pub mod send;
