//! One destination's delivery loop. It owns the destination's concurrency
//! cap and retry policy; it reads due jobs from the store, runs attempts,
//! and writes each outcome back. It sleeps until the next due time or until
//! ingest wakes it. A failing destination stalls only its own loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{Target, attempt};
use super::outcome::{AttemptResult, Verdict, classify};
use super::retry::RetryPolicy;
use crate::clock::now_ms;
use crate::store::{DeadLetter, DestId, JobKey, Store, StoreError};

pub struct Destination {
    pub id: DestId,
    pub name: String,
    pub url: String,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub signing_key: Option<Vec<u8>>,
    pub retry: RetryPolicy,
}

/// How long a store error makes the loop wait before it looks again.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

pub async fn run(
    dest: Arc<Destination>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut in_flight: JoinSet<(JobKey, AttemptResult)> = JoinSet::new();
    let mut keys: HashSet<JobKey> = HashSet::new();
    loop {
        let mut next_due: Option<u64> = None;
        let free = dest.max_concurrency.saturating_sub(in_flight.len());
        if free > 0 {
            let now = u64::try_from(now_ms()).unwrap_or(0);
            match store.due(dest.id, now, free, &|k| keys.contains(k)) {
                Ok(due) => {
                    next_due = due.next_due_ms;
                    for job in due.ready {
                        start(&mut in_flight, &mut keys, job, &dest, &store, &client);
                    }
                }
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "cannot read the due-queue");
                    next_due = Some(now + STORE_ERROR_BACKOFF.as_millis() as u64);
                }
            }
        }
        let sleep_for = next_due.map(|at| {
            Duration::from_millis(at.saturating_sub(u64::try_from(now_ms()).unwrap_or(0)))
        });
        tokio::select! {
            Some(done) = in_flight.join_next() => {
                if let Ok((job, result)) = done {
                    keys.remove(&job);
                    if let Err(e) = record(&dest, store.as_ref(), &job, result) {
                        tracing::error!(destination = %dest.name, error = %e, "cannot record an attempt; it will be retried");
                    }
                }
            }
            _ = wake.notified() => {}
            _ = sleep_or_forever(sleep_for) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Let attempts in flight finish within the grace period; whatever is
    // cut off stays in the due-queue and is retried after the restart.
    let drain = async {
        while let Some(done) = in_flight.join_next().await {
            if let Ok((job, result)) = done {
                let _ = record(&dest, store.as_ref(), &job, result);
            }
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(destination = %dest.name, "attempts still in flight after the grace period were cut off");
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn start(
    in_flight: &mut JoinSet<(JobKey, AttemptResult)>,
    keys: &mut HashSet<JobKey>,
    job: JobKey,
    dest: &Arc<Destination>,
    store: &Arc<dyn Store>,
    client: &reqwest::Client,
) {
    keys.insert(job);
    let (dest, store, client) = (dest.clone(), store.clone(), client.clone());
    in_flight.spawn(async move {
        let event = match store.event(job.seq) {
            Ok(Some(e)) => e,
            Ok(None) => {
                return (
                    job,
                    AttemptResult::OtherError("event is missing from the store".into()),
                );
            }
            Err(e) => return (job, AttemptResult::OtherError(e.to_string())),
        };
        let target = Target {
            url: &dest.url,
            timeout: dest.timeout,
            signing_key: dest.signing_key.as_deref(),
        };
        (job, attempt(&client, &target, &event).await)
    });
}

/// Writes an attempt's outcome: delivered, rescheduled, or dead-lettered.
fn record(
    dest: &Destination,
    store: &dyn Store,
    job: &JobKey,
    result: AttemptResult,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut state = store.job(job)?.unwrap_or_default();
    state.attempts += 1;
    if state.first_attempt_ms == 0 {
        state.first_attempt_ms = now;
    }
    state.last_status = u32::from(result.status());
    state.last_error = result.describe();
    let event_id = store.event(job.seq)?.map(|e| e.id).unwrap_or_default();
    let verdict = classify(&result);
    let retry_in = match verdict {
        Verdict::Delivered => None,
        Verdict::GiveUp => None,
        Verdict::Retry { retry_after } => {
            let age =
                Duration::from_millis(u64::try_from(now - state.first_attempt_ms).unwrap_or(0));
            dest.retry
                .next_delay(state.attempts, age, retry_after, &mut rand::rng())
        }
    };
    match (verdict, retry_in) {
        (Verdict::Delivered, _) => {
            tracing::info!(event_id, destination = %dest.name, attempt = state.attempts, status = result.status(), "delivered");
            store.delivered(job)
        }
        (_, Some(delay)) => {
            tracing::info!(event_id, destination = %dest.name, attempt = state.attempts, outcome = %state.last_error, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
            let due = u64::try_from(now)
                .unwrap_or(0)
                .saturating_add(delay.as_millis() as u64);
            store.reschedule(job, &state, due)
        }
        (_, None) => {
            tracing::warn!(event_id, destination = %dest.name, attempt = state.attempts, outcome = %state.last_error, "giving up; dead-lettered");
            let body = match &result {
                AttemptResult::Response { body, .. } => body.clone(),
                _ => Vec::new(),
            };
            let letter = DeadLetter {
                event_id,
                seq: job.seq,
                dest: dest.id,
                attempts: state.attempts,
                last_status: state.last_status,
                last_error: state.last_error.clone(),
                response_body: body,
                dead_at_ms: now,
            };
            store.dead_letter(job, &letter)
        }
    }
}
