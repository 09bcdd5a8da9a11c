//! Durable state: event summaries, their delivery jobs, the due-queue,
//! attempts, dead letters, the dedupe index, destination state and counters
//! in sled, and the events themselves (headers, body) in the log beside it
//! (`bodies`). The
//! store knows nothing of ingest, dispatch or admin; they use it through the
//! `Store` trait, so another embedded engine could replace sled without
//! touching them.

mod bodies;
mod keys;
mod records;
mod sled_store;

use std::collections::BTreeMap;

pub use keys::{DestId, JobRef};
pub use records::{
    AttemptRecord, BodyRef, DeadLetter, DestState, JobState, JobStatus, StoredEvent,
};
pub use sled_store::{LEDGER_FILE, SledStore};

use edgehook_proto::v1::Event;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage record {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("invalid page token")]
    BadPageToken,
    #[error(
        "the storage is damaged: {committed} events were committed but only {held} are there; \
         refusing to serve with silent loss (see \"Recovering damaged storage\" in the README)"
    )]
    Damaged { committed: u64, held: u64 },
}

/// Where a new event goes: one job per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedTo {
    pub dest: DestId,
    /// The destination delivers in ingest order.
    pub ordered: bool,
}

/// An event to commit, already routed to its destinations.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub destinations: Vec<RoutedTo>,
    pub now_ms: i64,
}

/// What a commit did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub event_id: String,
    /// True when (source, provider event id) was already stored; `event_id`
    /// is then the first event's id and nothing new was written.
    pub duplicate: bool,
}

/// Jobs of one destination that are due now, and when the next one is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueJobs {
    pub ready: Vec<JobRef>,
    /// Due time of the first job that is not yet due.
    pub next_due_ms: Option<i64>,
}

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(i64),
    DeadLetter,
}

impl Next {
    pub fn outcome(&self) -> &'static str {
        match self {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retry",
            Next::DeadLetter => "give_up",
        }
    }
}

/// An attempt and what follows from it, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    pub job: JobRef,
    pub attempt: AttemptRecord,
    pub next: Next,
}

/// A page of results, newest first; `next_token` continues after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// At most this many items (0 means 100).
    pub limit: usize,
    /// From a previous page's `next_token`.
    pub token: Option<String>,
}

/// Which events `list_events` returns; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub source: Option<String>,
    /// Events routed to this destination.
    pub dest: Option<DestId>,
    /// Events with a job in this state (of `dest`, when set).
    pub status: Option<JobStatus>,
    /// A `*` glob, as in the rules (`invoice.*`).
    pub event_type: Option<String>,
    /// The provider's own event id.
    pub provider_event_id: Option<String>,
    /// Stored at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Stored before (unix ms).
    pub until_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    pub event: StoredEvent,
    pub jobs: Vec<JobState>,
}

impl EventSummary {
    /// One word for the whole event: pending while any job is, dead while
    /// any job is dead-lettered, delivered when every job is done.
    pub fn status(&self) -> &'static str {
        let has = |s: JobStatus| self.jobs.iter().any(|j| j.job_status() == s);
        if self.jobs.is_empty() {
            "unrouted"
        } else if has(JobStatus::Pending) {
            "pending"
        } else if has(JobStatus::Dead) {
            "dead"
        } else {
            "delivered"
        }
    }
}

/// Everything about one event: for each destination, its job, every
/// attempt and the dead letter if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDetail {
    pub event: StoredEvent,
    pub deliveries: Vec<DeliveryDetail>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryDetail {
    pub job: JobState,
    pub attempts: Vec<AttemptRecord>,
    pub dead_letter: Option<DeadLetter>,
}

/// Which dead letters an operation applies to; every field that is set
/// must match.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub dest: Option<DestId>,
    pub source: Option<String>,
    /// Only these events (empty: any).
    pub event_ids: Vec<String>,
    /// Dead-lettered at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (unix ms).
    pub until_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting or in flight.
    pub depth: u64,
    /// Due time of the job at the front of the queue.
    pub oldest_due_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestTotals {
    pub pending: u64,
    pub delivered: u64,
    /// Jobs ever dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters now in the queue.
    pub dead_now: u64,
    pub attempts: u64,
    pub failed_attempts: u64,
    pub redriven: u64,
    pub purged: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub ingested: u64,
    pub duplicates: u64,
    /// Events removed by retention.
    pub expired: u64,
    pub destinations: BTreeMap<DestId, DestTotals>,
}

/// How long finished events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub delivered_ms: i64,
    pub dead_letters_ms: i64,
}

/// What one sweep step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub removed: u64,
    /// Where the next step starts; `None` when the sweep is done.
    pub next_seq: Option<u64>,
}

pub trait Store: Send + Sync + 'static {
    // ---- ingest ----

    /// Writes each event with its jobs and dedupe key atomically, then makes
    /// the whole batch durable with one flush. Returns only once durable.
    fn commit(&self, batch: Vec<NewEvent>) -> Result<Vec<Committed>, StoreError>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Free bytes on the data directory's file system.
    fn available_space(&self) -> Result<u64, StoreError>;

    fn size_on_disk(&self) -> Result<u64, StoreError>;

    // ---- destinations ----

    /// A stable id for a destination name (kept across restarts and
    /// reordering of the config).
    fn destination_id(&self, name: &str) -> Result<DestId, StoreError>;

    /// Every destination name ever registered, with its id.
    fn destinations(&self) -> Result<Vec<(String, DestId)>, StoreError>;

    fn destination_state(&self, dest: DestId) -> Result<DestState, StoreError>;

    fn set_paused(&self, dest: DestId, paused: bool, now_ms: i64) -> Result<(), StoreError>;

    fn queue_stats(&self, dest: DestId) -> Result<QueueStats, StoreError>;

    // ---- dispatch ----

    /// Up to `limit` jobs of `dest` due at `now_ms`, in queue order,
    /// skipping the ones the caller already has in flight.
    fn due(
        &self,
        dest: DestId,
        now_ms: i64,
        limit: usize,
        in_flight: &dyn Fn(&JobRef) -> bool,
    ) -> Result<DueJobs, StoreError>;

    /// The whole event, headers and body included (read from the log).
    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError>;

    fn job(&self, job: JobRef) -> Result<Option<JobState>, StoreError>;

    /// Records attempts and what follows from each, in one transaction:
    /// each job is delivered, moved to its next due time, or dead-lettered
    /// (with the attempt's status, error and response body). Error texts
    /// are kept up to 256 bytes. A job that is no longer pending is left as
    /// it is.
    fn record_attempts(&self, batch: &[AttemptOutcome]) -> Result<(), StoreError>;

    /// `record_attempts` for one attempt.
    fn record_attempt(
        &self,
        job: JobRef,
        attempt: &AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError> {
        self.record_attempts(&[AttemptOutcome {
            job,
            attempt: attempt.clone(),
            next,
        }])
    }

    // ---- admin ----

    /// Events newest first, as summaries: `event` holds what sled holds,
    /// without headers or body (see `StoredEvent`).
    fn list_events(
        &self,
        query: &EventQuery,
        page: &PageRequest,
    ) -> Result<Page<EventSummary>, StoreError>;

    /// An event as `list_events` gives it (no headers or body; nothing read
    /// from the log), with its jobs.
    fn event_summary(&self, event_id: &str) -> Result<Option<EventSummary>, StoreError>;

    /// The whole event (read from the log), every job, attempt and dead
    /// letter.
    fn get_event(&self, event_id: &str) -> Result<Option<EventDetail>, StoreError>;

    /// Dead letters newest first.
    fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError>;

    /// Puts matching dead letters back in their due-queues, due now, with a
    /// fresh retry budget. Returns the jobs re-queued; a dead letter already
    /// redriven is not there any more, so redriving twice queues once.
    fn redrive(&self, filter: &DeadLetterFilter, now_ms: i64) -> Result<Vec<JobRef>, StoreError>;

    /// Drops matching dead letters; returns how many.
    fn purge_dead_letters(&self, filter: &DeadLetterFilter, now_ms: i64)
    -> Result<u64, StoreError>;

    fn totals(&self) -> Result<Totals, StoreError>;

    // ---- retention ----

    /// Removes finished events past their retention, looking at no more
    /// than `budget` events from `from_seq` on.
    fn sweep(
        &self,
        now_ms: i64,
        retention: Retention,
        from_seq: u64,
        budget: usize,
    ) -> Result<Swept, StoreError>;
}
