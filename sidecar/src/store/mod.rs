//! Durable state: events, their delivery jobs, the due-queue, dead letters
//! and the dedupe index. The store knows nothing of ingest or dispatch; both
//! use it through the `Store` trait, so another embedded engine could
//! replace sled without touching them.

mod keys;
mod records;
mod sled_store;

pub use keys::{DestId, JobKey};
pub use records::{DeadLetter, JobState, StoredEvent};
pub use sled_store::SledStore;

use edgehook_proto::v1::Event;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage record {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// An event to commit, already routed to its destinations.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub destinations: Vec<DestId>,
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
    pub ready: Vec<JobKey>,
    /// Due time of the first job that is not yet due.
    pub next_due_ms: Option<u64>,
}

pub trait Store: Send + Sync + 'static {
    /// Writes each event with its jobs and dedupe key atomically, then makes
    /// the whole batch durable with one flush. Returns only once durable.
    fn commit(&self, batch: Vec<NewEvent>) -> Result<Vec<Committed>, StoreError>;

    /// A stable id for a destination name (kept across restarts and
    /// reordering of the config).
    fn destination_id(&self, name: &str) -> Result<DestId, StoreError>;

    /// Up to `limit` jobs of `dest` due at `now_ms`, in due order, skipping
    /// the ones the caller already has in flight.
    fn due(
        &self,
        dest: DestId,
        now_ms: u64,
        limit: usize,
        in_flight: &dyn Fn(&JobKey) -> bool,
    ) -> Result<DueJobs, StoreError>;

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError>;

    fn job(&self, job: &JobKey) -> Result<Option<JobState>, StoreError>;

    /// The job is done: it leaves the due-queue.
    fn delivered(&self, job: &JobKey) -> Result<(), StoreError>;

    /// Records an attempt and moves the job to `next_due_ms`.
    fn reschedule(
        &self,
        job: &JobKey,
        state: &JobState,
        next_due_ms: u64,
    ) -> Result<(), StoreError>;

    /// Gives up on the job: it leaves the due-queue for the dead letters.
    fn dead_letter(&self, job: &JobKey, letter: &DeadLetter) -> Result<(), StoreError>;

    /// Dead letters of a destination, oldest first.
    fn dead_letters(&self, dest: DestId) -> Result<Vec<DeadLetter>, StoreError>;

    /// Jobs still waiting in a destination's due-queue.
    fn pending(&self, dest: DestId) -> Result<usize, StoreError>;
}
