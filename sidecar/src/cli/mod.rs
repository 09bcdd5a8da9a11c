//! Subcommands that are clients or helpers, not the sidecar itself: the
//! admin CLI (`events`, `dlq`, `destinations`, `stats`, over `admin`'s
//! connection, printed by `output`), and `send`/`receive` for trying the
//! gateway by hand.

pub mod admin;
pub mod destinations;
pub mod dlq;
pub mod events;
pub mod output;
pub mod receive;
pub mod send;
pub mod stats;
