//! Retention: removes delivered events and dead letters once they are older
//! than the configured times. It walks the events in small steps, each its
//! own blocking call, so ingest's commits interleave with it and never wait
//! long behind a sweep.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::RetentionConfig;
use crate::store::{Retention, Store};

/// Events looked at per step.
const STEP: usize = 512;

impl From<&RetentionConfig> for Retention {
    fn from(c: &RetentionConfig) -> Self {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Retention {
            delivered_ms: ms(c.delivered_s),
            dead_letters_ms: ms(c.dead_letters_s),
        }
    }
}

/// One full pass over the events; returns how many were removed.
pub async fn sweep_once(store: &Arc<dyn Store>, retention: Retention, clock: Clock) -> u64 {
    let mut from = 0;
    let mut removed = 0;
    loop {
        let s = store.clone();
        let now = clock.now_ms();
        let step = tokio::task::spawn_blocking(move || s.sweep(now, retention, from, STEP)).await;
        match step {
            Ok(Ok(swept)) => {
                removed += swept.removed;
                match swept.next_seq {
                    Some(next) => from = next,
                    None => return removed,
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "retention sweep failed; will try again later");
                return removed;
            }
            Err(_) => return removed,
        }
    }
}

/// Sweeps every `sweep_interval_s` until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let retention = Retention::from(&config);
    let every = Duration::from_secs(config.sweep_interval_s.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let removed = sweep_once(&store, retention, clock).await;
        if removed > 0 {
            tracing::info!(removed, "retention removed expired events");
        }
    }
}
