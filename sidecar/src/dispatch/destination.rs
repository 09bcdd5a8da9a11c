//! One destination's delivery loop. It owns the destination's concurrency
//! cap, rate cap, circuit breaker and ordering; it reads due jobs from the
//! store, runs attempts through a `Transport`, and writes each outcome back
//! in one store transaction. It sleeps until the next due time, the next
//! rate token, the breaker's probe, or until ingest (or admin) wakes it. A
//! failing destination stalls only its own loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::attempt::{KEPT_RESPONSE_BYTES, Transport, outbound};
use super::breaker::{Breaker, BreakerPolicy, BreakerState};
use super::outcome::{AttemptResult, Verdict, classify};
use super::rate::RateLimiter;
use super::retry::RetryPolicy;
use crate::activity::{Activity, Feed};
use crate::clock::Clock;
use crate::config::{DestinationConfig, RateLimitConfig};
use crate::store::{AttemptOutcome, AttemptRecord, DestId, JobRef, Next, Store, StoreError};

/// A destination as the dispatcher uses it: the config resolved (secrets
/// read, headers parsed, policies built).
#[derive(Debug)]
pub struct Destination {
    pub id: DestId,
    pub name: String,
    pub url: String,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub rate: Option<RateLimitConfig>,
    pub signing_key: Option<Vec<u8>>,
    /// Added to every delivery.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Provider headers passed on, by lower-case name.
    pub forward_headers: Vec<String>,
    pub retry: RetryPolicy,
    pub retry_statuses: Vec<u16>,
    pub breaker: BreakerPolicy,
    pub ordered: bool,
}

impl Destination {
    /// Resolves secrets and parses headers; the error says which part is
    /// wrong, never a secret's value.
    pub fn from_config(id: DestId, c: &DestinationConfig) -> Result<Destination, String> {
        let signing_key = match &c.signing_secret {
            None => None,
            Some(s) => Some(
                s.resolve()
                    .and_then(|text| crate::signing::decode_secret(&text).map_err(str::to_string))
                    .map_err(|e| format!("signing_secret: {e}"))?,
            ),
        };
        let mut headers = Vec::new();
        for (name, value) in &c.headers {
            let value = value
                .resolve()
                .map_err(|e| format!("headers.{name}: {e}"))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: not a valid header name"))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Destination {
            id,
            name: c.name.clone(),
            url: c.url.clone(),
            timeout: Duration::from_millis(c.timeout_ms),
            max_concurrency: c.max_concurrency.max(1),
            rate: c.rate_limit,
            signing_key,
            headers,
            forward_headers: c
                .forward_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            retry: (&c.retry).into(),
            retry_statuses: c.retry_statuses.clone(),
            breaker: (&c.breaker).into(),
            ordered: c.ordered,
        })
    }

    /// Attempts that may be in flight at once.
    fn concurrency(&self) -> usize {
        if self.ordered {
            1
        } else {
            self.max_concurrency
        }
    }
}

/// What a destination loop shares with the rest of the sidecar.
pub struct Shared<T> {
    pub store: Arc<dyn Store>,
    pub transport: T,
    pub clock: Clock,
    pub feed: Feed,
    pub shutdown: CancellationToken,
    pub grace: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How long a store error makes the loop wait before it looks again.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// What an attempt task hands back to the loop.
struct Done {
    job: JobRef,
    event_id: String,
    probe: bool,
    started_ms: i64,
    duration: Duration,
    result: AttemptResult,
}

pub async fn run<T: Transport + Clone>(
    dest: Arc<Destination>,
    shared: Arc<Shared<T>>,
    wake: Arc<Notify>,
) {
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut running: HashSet<JobRef> = HashSet::new();
    let mut breaker = Breaker::new(dest.breaker);
    let mut rate = dest.rate.map(|r| {
        // The default burst is one second's worth.
        let burst = r
            .burst
            .unwrap_or_else(|| r.per_second.ceil().min(f64::from(u32::MAX)) as u32);
        RateLimiter::new(r.per_second, burst, Instant::now())
    });
    let mut last_state = BreakerState::Closed;
    loop {
        let now = Instant::now();
        let mut wait_until: Option<Instant> = None;
        let mut wait_for = |at: Instant| {
            wait_until = Some(wait_until.map_or(at, |w: Instant| w.min(at)));
        };
        let paused = match shared.store.destination_state(dest.id) {
            Ok(s) => s.paused,
            Err(e) => {
                tracing::error!(destination = %dest.name, error = %e, "cannot read the destination's state");
                wait_for(now + STORE_ERROR_BACKOFF);
                true
            }
        };
        let state = breaker.state(now);
        if state != last_state {
            tracing::info!(destination = %dest.name, breaker = ?state, "circuit breaker changed state");
            shared.metrics.set_breaker(&dest.name, state);
            last_state = state;
        }
        let slots = dest.concurrency().saturating_sub(in_flight.len());
        // Each look at the due-queue walks past the jobs in flight (they are
        // at its front), so it waits until a quarter of the slots are free
        // and fills them at once: a few keys read per attempt started,
        // instead of one look per finished attempt.
        let refill = slots > 0 && (in_flight.is_empty() || slots >= dest.concurrency().div_ceil(4));
        let mut free = if paused || !refill {
            0
        } else {
            slots.min(breaker.allowance(now))
        };
        if let Some(at) = breaker.reopens_at() {
            wait_for(at);
        }
        if let Some(r) = rate.as_mut()
            && free > 0
        {
            let available = r.available(now);
            if available == 0 {
                wait_for(r.next_at(now));
            }
            free = free.min(available);
        }
        if free > 0 {
            let now_ms = shared.clock.now_ms();
            match shared
                .store
                .due(dest.id, now_ms, free, &|j| running.contains(j))
            {
                Ok(due) => {
                    if let Some(at) = due.next_due_ms {
                        wait_for(shared.clock.instant_at(at));
                    }
                    for job in due.ready {
                        if let Some(r) = rate.as_mut() {
                            r.take();
                        }
                        let probe = breaker.started();
                        running.insert(job);
                        in_flight.spawn(attempt(dest.clone(), shared.clone(), job, probe));
                    }
                }
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "cannot read the due-queue");
                    wait_for(now + STORE_ERROR_BACKOFF);
                }
            }
        }
        shared.metrics.set_in_flight(&dest.name, in_flight.len());
        tokio::select! {
            Some(done) = in_flight.join_next() => {
                // Record every attempt that has finished by now in one
                // store transaction.
                let mut finished: Vec<Done> = done.into_iter().collect();
                while let Some(more) = in_flight.try_join_next() {
                    finished.extend(more);
                }
                for d in &finished {
                    running.remove(&d.job);
                }
                finish(&dest, &shared, &mut breaker, finished);
            }
            _ = wake.notified() => {}
            _ = sleep_until(wait_until) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
    // Let attempts in flight finish within the grace period; whatever is
    // cut off stays in the due-queue and is retried after the restart.
    let drain = async {
        while let Some(done) = in_flight.join_next().await {
            finish(&dest, &shared, &mut breaker, done.into_iter().collect());
        }
    };
    if tokio::time::timeout(shared.grace, drain).await.is_err() {
        tracing::warn!(destination = %dest.name, "attempts still in flight after the grace period were cut off; they will be retried");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn attempt<T: Transport + Clone>(
    dest: Arc<Destination>,
    shared: Arc<Shared<T>>,
    job: JobRef,
    probe: bool,
) -> Done {
    let started_ms = shared.clock.now_ms();
    let started = Instant::now();
    let mut event_id = String::new();
    let result = match shared.store.event(job.seq) {
        Ok(Some(event)) => {
            let request = outbound(&dest, &event, started_ms / 1000);
            event_id = event.id;
            shared.transport.send(request).await
        }
        Ok(None) => AttemptResult::OtherError("the event is missing from the store".into()),
        Err(e) => AttemptResult::OtherError(e.to_string()),
    };
    Done {
        job,
        event_id,
        probe,
        started_ms,
        duration: started.elapsed(),
        result,
    }
}

/// Classifies finished attempts, updates the breaker, and writes the
/// outcomes in one transaction.
fn finish<T>(dest: &Destination, shared: &Shared<T>, breaker: &mut Breaker, done: Vec<Done>) {
    let mut planned = Vec::with_capacity(done.len());
    for d in done {
        let verdict = classify(&d.result, &dest.retry_statuses);
        match verdict {
            // A 4xx that is given up on is the event's fault, not the
            // destination's: it answered.
            Verdict::Delivered | Verdict::GiveUp => breaker.succeeded(),
            Verdict::Retry { .. } => breaker.failed(Instant::now(), d.probe),
        }
        match plan(dest, shared, d, verdict) {
            Ok(Some(p)) => planned.push(p),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(destination = %dest.name, error = %e, "cannot read a job; its attempt will be made again");
            }
        }
    }
    if planned.is_empty() {
        return;
    }
    let outcomes: Vec<AttemptOutcome> = planned.iter().map(|p| p.outcome.clone()).collect();
    if let Err(e) = shared.store.record_attempts(&outcomes) {
        tracing::error!(destination = %dest.name, error = %e, attempts = outcomes.len(), "cannot record attempts; they will be made again");
        return;
    }
    for p in planned {
        report(dest, shared, p);
    }
}

/// What follows from a verdict, under the destination's retry policy.
pub fn next_step(
    policy: &RetryPolicy,
    verdict: Verdict,
    round_attempts: u32,
    age: Duration,
    now_ms: i64,
) -> Next {
    match verdict {
        Verdict::Delivered => Next::Delivered,
        Verdict::GiveUp => Next::DeadLetter,
        Verdict::Retry { retry_after } => {
            match policy.next_delay(round_attempts, age, retry_after, &mut rand::rng()) {
                Some(delay) => Next::RetryAt(
                    now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
                None => Next::DeadLetter,
            }
        }
    }
}

/// An attempt's outcome, ready to record, with what the log line needs.
struct Planned {
    outcome: AttemptOutcome,
    event_id: String,
    attempt_no: u32,
    result: String,
    now_ms: i64,
}

/// Works out what follows from an attempt; `None` when its job is gone
/// (purged or expired meanwhile).
fn plan<T>(
    dest: &Destination,
    shared: &Shared<T>,
    done: Done,
    verdict: Verdict,
) -> Result<Option<Planned>, StoreError> {
    let Some(state) = shared.store.job(done.job)? else {
        return Ok(None);
    };
    let now_ms = shared.clock.now_ms();
    let round_attempts = state.round_attempts.saturating_add(1);
    let round_started = if state.round_started_ms == 0 {
        done.started_ms
    } else {
        state.round_started_ms
    };
    let age = Duration::from_millis(u64::try_from(now_ms - round_started).unwrap_or(0));
    let next = next_step(&dest.retry, verdict, round_attempts, age, now_ms);
    let result = done.result.describe();
    let (status, error, mut body) = match done.result {
        AttemptResult::Response { status, body, .. } => (status, String::new(), body),
        other => (0, other.describe(), Vec::new()),
    };
    body.truncate(KEPT_RESPONSE_BYTES);
    Ok(Some(Planned {
        outcome: AttemptOutcome {
            job: done.job,
            attempt: AttemptRecord {
                n: 0,
                started_ms: done.started_ms,
                duration_ms: u32::try_from(done.duration.as_millis()).unwrap_or(u32::MAX),
                status: u32::from(status),
                error,
                response_body: body,
                outcome: next.outcome().to_string(),
            },
            next,
        },
        event_id: done.event_id,
        attempt_no: state.attempts.saturating_add(1),
        result,
        now_ms,
    }))
}

/// One log line per outcome, and the activity feed.
fn report<T>(dest: &Destination, shared: &Shared<T>, p: Planned) {
    let Planned {
        outcome,
        event_id,
        attempt_no,
        result,
        now_ms,
    } = p;
    let status = outcome.attempt.status;
    let duration_ms = outcome.attempt.duration_ms;
    shared.metrics.attempted(
        &dest.name,
        outcome.next.outcome(),
        Duration::from_millis(u64::from(duration_ms)),
    );
    match outcome.next {
        Next::Delivered => {
            tracing::info!(event_id, destination = %dest.name, attempt = attempt_no, status, duration_ms, "delivered");
        }
        Next::RetryAt(at) => {
            tracing::info!(event_id, destination = %dest.name, attempt = attempt_no, status, result, duration_ms, retry_in_ms = at - now_ms, "attempt failed; will retry");
        }
        Next::DeadLetter => {
            tracing::warn!(event_id, destination = %dest.name, attempt = attempt_no, status, result, duration_ms, "giving up; dead-lettered");
        }
    }
    shared.feed.publish(Activity::Attempted {
        event_id,
        seq: outcome.job.seq,
        dest: dest.id,
        attempt: AttemptRecord {
            n: attempt_no,
            ..outcome.attempt
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::future::Future;
    use std::sync::Mutex;

    use edgehook_proto::v1::Event;

    use crate::config::{DestinationConfig, Durability, StorageConfig};
    use crate::dispatch::attempt::Outbound;
    use crate::store::{NewEvent, RoutedTo, SledStore};

    fn policy() -> RetryPolicy {
        (&crate::config::RetryConfig::default()).into()
    }

    #[test]
    fn verdicts_become_steps() {
        let p = policy();
        assert_eq!(
            next_step(&p, Verdict::Delivered, 1, Duration::ZERO, 0),
            Next::Delivered
        );
        assert_eq!(
            next_step(&p, Verdict::GiveUp, 1, Duration::ZERO, 0),
            Next::DeadLetter
        );
        let asked = Verdict::Retry {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            next_step(&p, asked, 1, Duration::ZERO, 1_000),
            Next::RetryAt(8_000)
        );
        assert_eq!(
            next_step(&p, asked, 12, Duration::ZERO, 0),
            Next::DeadLetter,
            "the attempt budget is spent"
        );
    }

    /// Answers from a script (then 200) and notes when each call came, on
    /// tokio's clock.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<u16>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
        called: Arc<Notify>,
    }

    impl Transport for Scripted {
        fn send(&self, _request: Outbound) -> impl Future<Output = AttemptResult> + Send {
            let me = self.clone();
            async move {
                me.calls.lock().unwrap().push(Instant::now());
                me.called.notify_waiters();
                let status = me.answers.lock().unwrap().pop_front().unwrap_or(200);
                AttemptResult::Response {
                    status,
                    retry_after: None,
                    body: Vec::new(),
                }
            }
        }
    }

    /// A real store in `dir` holding `event`, routed to destination 1.
    fn store_holding(dir: &std::path::Path, event: Event, clock: &Clock) -> Arc<dyn Store> {
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir, Durability::Flush, &StorageConfig::default()).unwrap());
        store
            .commit(vec![NewEvent {
                event,
                destinations: vec![RoutedTo {
                    dest: 1,
                    ordered: false,
                }],
                now_ms: clock.now_ms(),
            }])
            .unwrap();
        store
    }

    /// Runs one destination loop over a real store holding one event, and
    /// returns the times of the first `n` attempts, relative to the first.
    async fn attempt_times(config: &str, answers: &[u16], n: usize) -> Vec<Duration> {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let store = store_holding(
            dir.path(),
            Event {
                source: "s".into(),
                ..Default::default()
            },
            &clock,
        );
        let c: DestinationConfig = toml::from_str(&format!(
            "name = \"d\"\nurl = \"http://127.0.0.1:1/\"\n{config}"
        ))
        .unwrap();
        let dest = Arc::new(Destination::from_config(1, &c).unwrap());
        let transport = Scripted::default();
        transport.answers.lock().unwrap().extend(answers);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            store,
            transport: transport.clone(),
            clock,
            feed: Feed::default(),
            shutdown: shutdown.clone(),
            grace: Duration::from_secs(1),
            metrics: Arc::default(),
        });
        let task = tokio::spawn(run(dest, shared, Arc::new(Notify::new())));
        loop {
            let called = transport.called.notified();
            if transport.calls.lock().unwrap().len() >= n {
                break;
            }
            called.await;
        }
        shutdown.cancel();
        task.await.unwrap();
        let calls = transport.calls.lock().unwrap();
        calls.iter().map(|t| *t - calls[0]).collect()
    }

    fn near(got: &[Duration], want_ms: &[u64]) -> bool {
        got.len() == want_ms.len()
            && got
                .iter()
                .zip(want_ms)
                .all(|(g, w)| g.as_millis().abs_diff(u128::from(*w)) <= 5)
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_follows_an_explicit_schedule() {
        let got = attempt_times(
            "retry = { schedule_ms = [1000, 2000, 4000], max_delay_ms = 10000 }",
            &[503, 503, 503],
            4,
        )
        .await;
        assert!(near(&got, &[0, 1_000, 3_000, 7_000]), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_damaged_body_fails_its_attempts_with_the_reason_and_is_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let store = store_holding(
            dir.path(),
            Event {
                source: "s".into(),
                body: b"{\"amount\":100}".to_vec(),
                ..Default::default()
            },
            &clock,
        );
        let segment = std::fs::read_dir(dir.path().join("bodies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();

        let c: DestinationConfig = toml::from_str(
            "name = \"d\"\nurl = \"http://127.0.0.1:1/\"\n\
             retry = { schedule_ms = [100], max_delay_ms = 1000 }",
        )
        .unwrap();
        let transport = Scripted::default();
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            transport: transport.clone(),
            clock,
            feed: Feed::default(),
            shutdown: shutdown.clone(),
            grace: Duration::from_secs(1),
            metrics: Arc::default(),
        });
        let dest = Arc::new(Destination::from_config(1, &c).unwrap());
        let task = tokio::spawn(run(dest, shared, Arc::new(Notify::new())));
        let letters = loop {
            let letters = store
                .list_dead_letters(&Default::default(), &Default::default())
                .unwrap()
                .items;
            if !letters.is_empty() {
                break letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        shutdown.cancel();
        task.await.unwrap();
        assert!(
            transport.calls.lock().unwrap().is_empty(),
            "nothing was sent"
        );
        let name = segment.file_name().unwrap().to_str().unwrap();
        let reason = &letters[0].last_error;
        assert!(
            reason.contains("corrupt") && reason.contains(name),
            "{reason}"
        );
        assert_eq!(letters[0].attempts, 2, "retried, then given up");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_spends_no_attempts_and_probes_after_a_growing_cooldown() {
        let got = attempt_times(
            "retry = { schedule_ms = [100, 100, 100, 100, 100, 100], max_delay_ms = 1000 }\n\
             breaker = { failures = 2, cooldown_ms = 10000, max_cooldown_ms = 60000 }",
            &[503, 503, 503, 503],
            5,
        )
        .await;
        // Two failures open it for 10 s; each failed probe doubles that.
        assert!(near(&got, &[0, 100, 10_100, 30_100, 70_100]), "{got:?}");
    }
}
