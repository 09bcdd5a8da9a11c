//! The `Store` on sled 0.34, with events in the event log.
//!
//! Each event is written whole (headers and body included) to the event log
//! (`super::bodies`), and sled keeps a summary of it (id, source, type,
//! provider id, request id, times, destinations, body length) with a
//! `BodyRef` to the log record, because sled 0.34 stores records several
//! times over: it rewrites whole leaf nodes, and it keeps a segment of its
//! log, garbage included, until at most half of it is live
//! (`SEGMENT_CLEANUP_THRESHOLD` is hard-coded at 50; the
//! `segment_cleanup_threshold` setting does nothing), so a ~1.1 KiB event
//! record took 2 to 2.3 times its size on disk. Only delivery (`event`) and
//! the admin detail (`get_event`) read the log; listing, sweeping,
//! dead-lettering and the admin summaries work from sled alone. A commit
//! writes the batch's events to the log first (and fdatasyncs them with
//! `Durability::Fsync`) and only then runs the transaction, because sled's
//! background flusher may make a transaction durable at any moment and a
//! record must never be on disk before what it points to. A crash in
//! between leaves bytes no record points to, which cost space only until
//! their segment goes. Each segment's live events are counted in the
//! `counters` tree in the same transactions that add and remove events; a
//! segment whose count reaches 0 is deleted once it is no longer the one
//! appended to, and segments without a count (left by a crash) are deleted
//! on open. Records of the two earlier layouts (the body inline, or only
//! the body in the log) still read; see `StoredEvent`.
//!
//! The small records that delivery bookkeeping rewrites (jobs, due keys,
//! attempts) take about 4.5 times their size in sled, so error texts are
//! stored cut to `MAX_ERROR_BYTES`.
//!
//! Facts about sled 0.34.7 that shape this file: `flush_async` hangs when
//! several tasks call it (sled#1308), so the one writer calls the blocking
//! `flush()`; on Linux `flush()` uses `sync_file_range`, which survives a
//! process crash but not a power loss (sled#1351), and large values go to
//! files under `blobs/` that sled never syncs, so with `Durability::Fsync`
//! the data file and new blob files are fsynced after it; transactions are
//! optimistic and may re-run their closure, so closures have no side
//! effects and no range scans (those happen before the transaction, and
//! the transaction re-checks what they found).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edgehook_proto::v1::Event;
use prost::Message;
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};

use super::bodies::{BodyLog, SEGMENT_BYTES};
use super::keys::{
    attempt_key, counter_key, dedupe_key, due_key, job_key, rank_of, read_due_key, read_job_key,
    read_segment_counter_key, read_seq, segment_counter_key, seq_key,
};
use super::records::take_summary;
use super::{
    AttemptOutcome, AttemptRecord, Committed, DeadLetter, DeadLetterFilter, DeliveryDetail, DestId,
    DestState, DestTotals, DueJobs, EventDetail, EventQuery, EventSummary, JobRef, JobState,
    JobStatus, NewEvent, Next, Page, PageRequest, QueueStats, Retention, Store, StoreError,
    StoredEvent, Swept, Totals,
};
use crate::config::{Durability, StorageConfig};
use crate::ids;

/// Counter codes (the last byte of a counter key).
mod counter {
    pub const INGESTED: u8 = 1;
    pub const DUPLICATES: u8 = 2;
    pub const EXPIRED: u8 = 3;
    pub const PENDING: u8 = 10;
    pub const DELIVERED: u8 = 11;
    pub const DEAD_LETTERED: u8 = 12;
    pub const DEAD_NOW: u8 = 13;
    pub const ATTEMPTS: u8 = 14;
    pub const FAILED: u8 = 15;
    pub const REDRIVEN: u8 = 16;
    pub const PURGED: u8 = 17;
    /// Per body-log segment (`segment_counter_key`): events whose body is
    /// in it. Absent when 0.
    pub const SEGMENT_LIVE: u8 = 20;
}

/// The most events one `list_events` call looks at, so that a filter that
/// matches little cannot make one call scan everything; the page then
/// comes back short, with a token to go on.
const MAX_SCANNED: usize = 10_000;
const DEFAULT_PAGE: usize = 100;

/// The most bytes of an error text kept with an attempt, a job or a dead
/// letter. A connect error's cause chain runs to a few hundred bytes and a
/// destination that is down writes one per attempt; the start of it says
/// what went wrong, and the log line of the attempt has it whole.
const MAX_ERROR_BYTES: usize = 256;

/// `text` cut to `MAX_ERROR_BYTES` on a char boundary, with an ellipsis to
/// show it was cut.
fn capped(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_string();
    }
    let end = text.floor_char_boundary(MAX_ERROR_BYTES - '…'.len_utf8());
    let mut out = String::with_capacity(MAX_ERROR_BYTES);
    out.push_str(&text[..end]);
    out.push('…');
    out
}

pub struct SledStore {
    db: sled::Db,
    /// Synced after each flush when durability is fsync.
    sync: Option<Syncer>,
    path: PathBuf,
    /// seq → StoredEvent
    events: sled::Tree,
    /// event id → seq
    event_ids: sled::Tree,
    /// dedupe_key(source, provider id) → event id
    dedupe: sled::Tree,
    /// job_key(seq, dest) → JobState
    jobs: sled::Tree,
    /// due_key(dest, rank, seq) → ()
    due: sled::Tree,
    /// attempt_key(seq, dest, n) → AttemptRecord
    attempts: sled::Tree,
    /// job_key(seq, dest) → DeadLetter
    dead: sled::Tree,
    /// destination name → DestId
    destinations: sled::Tree,
    /// DestId → DestState
    dest_state: sled::Tree,
    /// counter_key(dest, code) → u64
    counters: sled::Tree,
    ledger: Ledger,
    bodies: BodyLog,
    /// Held through a whole commit: deciding that a retired segment is
    /// empty is only sound when no other commit can be about to point a
    /// record into it.
    commit_lock: Mutex<()>,
}

/// How many events were ever committed, kept in a file of its own and
/// written after each commit's flush. sled recovers a damaged log by
/// stopping at the damage, which would silently drop committed events; the
/// ledger is what notices: on open, the store must hold at least as many
/// events as the ledger says were committed.
struct Ledger {
    file: File,
    fsync: bool,
    written: Mutex<u64>,
}

/// The ledger's file name inside the data directory.
pub const LEDGER_FILE: &str = "edgehook.ledger";

impl Ledger {
    fn open(dir: &Path, fsync: bool) -> std::io::Result<(Ledger, u64)> {
        let path = dir.join(LEDGER_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = [0u8; 8];
        let recorded = match std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0) {
            Ok(()) => u64::from_be_bytes(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        Ok((
            Ledger {
                file,
                fsync,
                written: Mutex::new(recorded),
            },
            recorded,
        ))
    }

    fn record(&self, committed: u64) -> std::io::Result<()> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *written == committed {
            return Ok(());
        }
        std::os::unix::fs::FileExt::write_all_at(&self.file, &committed.to_be_bytes(), 0)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        *written = committed;
        Ok(())
    }
}

/// fsyncs sled's data file and the blob files it wrote since last time.
struct Syncer {
    data_file: File,
    blobs: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Syncer {
    fn sync(&self) -> std::io::Result<()> {
        self.data_file.sync_data()?;
        let Ok(dir) = std::fs::read_dir(&self.blobs) else {
            return Ok(());
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in dir.flatten() {
            let name = entry.file_name();
            if !synced.contains(&name) {
                File::open(entry.path())?.sync_all()?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

/// Why a transaction gave up on purpose.
#[derive(Debug)]
enum Abort {
    /// What it was about to change is not in the expected state any more.
    Stale,
    Corrupt(&'static str, String),
}

type TxResult<T> = ConflictableTransactionResult<T, Abort>;

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

fn tx_corrupt(
    what: &'static str,
    e: impl std::fmt::Display,
) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(Abort::Corrupt(what, e.to_string()))
}

/// Ok(None) for a stale abort, the value otherwise.
fn finish<T>(r: Result<T, TransactionError<Abort>>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(TransactionError::Abort(Abort::Stale)) => Ok(None),
        Err(TransactionError::Abort(Abort::Corrupt(what, detail))) => {
            Err(StoreError::Corrupt { what, detail })
        }
        Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
    }
}

/// A new event, ready to be written.
struct Prepared {
    id: String,
    seq: u64,
    /// The sled record: the summary, without its `event_ref` yet.
    stored: StoredEvent,
    /// The whole event encoded, for the log.
    logged: Vec<u8>,
    /// `stored` encoded, once the event has a place in the log.
    record: Vec<u8>,
    jobs: Vec<(JobState, [u8; 20])>,
    dedupe: Option<Vec<u8>>,
}

/// The trees one transaction works on, by name.
struct Tx<'a> {
    events: &'a TransactionalTree,
    event_ids: &'a TransactionalTree,
    dedupe: &'a TransactionalTree,
    jobs: &'a TransactionalTree,
    due: &'a TransactionalTree,
    attempts: &'a TransactionalTree,
    dead: &'a TransactionalTree,
    counters: &'a TransactionalTree,
}

impl Tx<'_> {
    fn bump(&self, dest: DestId, code: u8, delta: i64) -> TxResult<()> {
        let key = counter_key(dest, code);
        let old = match self.counters.get(key)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|e| tx_corrupt("counter", e))?,
            ),
            None => 0,
        };
        let new = old.saturating_add_signed(delta);
        self.counters.insert(&key, &new.to_be_bytes())?;
        Ok(())
    }

    /// Adds `delta` to a segment's live count and returns the new count.
    /// A count of 0 is removed rather than kept, so that a segment without
    /// a count has nothing live in it.
    fn bump_segment(&self, segment: u64, delta: i64) -> TxResult<u64> {
        let key = segment_counter_key(counter::SEGMENT_LIVE, segment);
        let old = match self.counters.get(key)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|e| tx_corrupt("segment counter", e))?,
            ),
            None => 0,
        };
        let new = old.saturating_add_signed(delta);
        if new == 0 {
            self.counters.remove(&key)?;
        } else {
            self.counters.insert(&key, &new.to_be_bytes())?;
        }
        Ok(new)
    }

    fn job(&self, job: JobRef) -> TxResult<Option<JobState>> {
        match self.jobs.get(job_key(job))? {
            None => Ok(None),
            Some(v) => JobState::decode(v.as_ref())
                .map(Some)
                .map_err(|e| tx_corrupt("job", e)),
        }
    }

    /// Takes a job's dead letter out of the queue and returns the job's
    /// state for the caller to change; stale when it is not dead-lettered
    /// any more (redriven or purged meanwhile).
    fn take_dead_letter(&self, job: JobRef) -> TxResult<JobState> {
        let Some(state) = self.job(job)? else {
            return Err(ConflictableTransactionError::Abort(Abort::Stale));
        };
        if self.dead.remove(&job_key(job))?.is_none() || state.job_status() != JobStatus::Dead {
            return Err(ConflictableTransactionError::Abort(Abort::Stale));
        }
        Ok(state)
    }

    fn put_job(&self, state: &JobState) -> TxResult<()> {
        let job = JobRef {
            seq: state.seq,
            dest: state.dest,
        };
        self.jobs
            .insert(&job_key(job), state.encode_to_vec().as_slice())?;
        Ok(())
    }
}

/// The due-queue key of a pending job.
fn due_key_of(state: &JobState) -> [u8; 20] {
    let rank = if state.ordered {
        0
    } else {
        rank_of(state.next_attempt_ms)
    };
    due_key(state.dest, rank, state.seq)
}

fn decode_u64(v: &[u8], what: &'static str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        v.try_into().map_err(|e| corrupt(what, e))?,
    ))
}

fn page_limit(page: &PageRequest) -> usize {
    if page.limit == 0 {
        DEFAULT_PAGE
    } else {
        page.limit
    }
}

impl SledStore {
    pub fn open(
        path: &Path,
        durability: Durability,
        storage: &StorageConfig,
    ) -> Result<SledStore, StoreError> {
        Self::open_with_segments(path, durability, storage, SEGMENT_BYTES)
    }

    /// `open` with the body log's segments rolling over at `segment_bytes`.
    fn open_with_segments(
        path: &Path,
        durability: Durability,
        storage: &StorageConfig,
        segment_bytes: u64,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(storage.cache_capacity_bytes)
            // Ingest flushes explicitly; this only bounds how stale the
            // delivery bookkeeping can be after a crash.
            .flush_every_ms(Some(storage.flush_every_ms.max(1)))
            .open()?;
        let sync = match durability {
            Durability::Fsync => Some(Syncer {
                data_file: File::open(path.join("db"))?,
                blobs: path.join("blobs"),
                synced_blobs: Mutex::new(HashSet::new()),
            }),
            Durability::Flush => None,
        };
        let counters = db.open_tree("counters")?;
        let (ledger, recorded) = Ledger::open(path, durability == Durability::Fsync)?;
        let held = match counters.get(counter_key(0, counter::INGESTED))? {
            Some(v) => decode_u64(&v, "counter")?,
            None => 0,
        };
        if held < recorded {
            return Err(StoreError::Damaged {
                committed: recorded,
                held,
            });
        }
        // Only after the ledger check: a damaged sled has lost counts, and
        // the segments they counted must stay for the operator's recovery.
        let bodies = BodyLog::open(path, segment_bytes, durability == Durability::Fsync)?;
        let mut live = HashSet::new();
        for entry in counters
            .scan_prefix(counter_key(0, counter::SEGMENT_LIVE))
            .keys()
        {
            let k = entry?;
            live.insert(
                read_segment_counter_key(&k)
                    .ok_or_else(|| corrupt("segment counter key", "wrong length"))?,
            );
        }
        for segment in bodies.segments()? {
            if !live.contains(&segment) {
                bodies.remove_segment(segment)?;
            }
        }
        Ok(SledStore {
            bodies,
            commit_lock: Mutex::new(()),
            ledger,
            events: db.open_tree("events")?,
            event_ids: db.open_tree("event_ids")?,
            dedupe: db.open_tree("dedupe")?,
            jobs: db.open_tree("jobs")?,
            due: db.open_tree("due")?,
            attempts: db.open_tree("attempts")?,
            dead: db.open_tree("dead")?,
            destinations: db.open_tree("destinations")?,
            dest_state: db.open_tree("dest_state")?,
            counters,
            db,
            sync,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one transaction over every tree it may touch.
    fn transact<T>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T, TransactionError<Abort>> {
        (
            &self.events,
            &self.event_ids,
            &self.dedupe,
            &self.jobs,
            &self.due,
            &self.attempts,
            &self.dead,
            &self.counters,
        )
            .transaction(
                |(events, event_ids, dedupe, jobs, due, attempts, dead, counters)| {
                    f(&Tx {
                        events,
                        event_ids,
                        dedupe,
                        jobs,
                        due,
                        attempts,
                        dead,
                        counters,
                    })
                },
            )
    }

    /// Everything about a new event that can be worked out before the
    /// transaction: ids, the encoded record, the jobs and their due keys.
    fn prepare(&self, new: NewEvent) -> Result<Prepared, StoreError> {
        let source = new.event.source.clone();
        let provider_id = new.event.provider_event_id.clone();
        let dedupe = (!provider_id.is_empty()).then(|| dedupe_key(&source, &provider_id));
        let id = ids::event_id(&source, &provider_id);
        let seq = self.db.generate_id()?;
        let mut event = new.event;
        let logged = event.encode_to_vec();
        let stored = StoredEvent {
            id: id.clone(),
            seq,
            body_len: event.body.len() as u64,
            event: Some(take_summary(&mut event)),
            stored_at_ms: new.now_ms,
            destinations: new.destinations.iter().map(|r| r.dest).collect(),
            body_ref: None,
            event_ref: None,
        };
        let jobs = new
            .destinations
            .iter()
            .map(|r| {
                let state = JobState {
                    seq,
                    dest: r.dest,
                    status: JobStatus::Pending as i32,
                    ordered: r.ordered,
                    next_attempt_ms: new.now_ms,
                    created_ms: new.now_ms,
                    ..Default::default()
                };
                let due = due_key_of(&state);
                (state, due)
            })
            .collect();
        Ok(Prepared {
            id,
            seq,
            stored,
            logged,
            record: Vec::new(),
            jobs,
            dedupe,
        })
    }

    /// Writes one prepared event inside a transaction: the event, its id
    /// index, its jobs in the due-queue and its dedupe key together, or
    /// nothing but a duplicate count when the dedupe key is there already
    /// (also when an earlier event of the same transaction wrote it).
    fn write_new(tx: &Tx<'_>, p: &Prepared) -> TxResult<Committed> {
        if let Some(k) = &p.dedupe {
            if let Some(first) = tx.dedupe.get(k)? {
                tx.bump(0, counter::DUPLICATES, 1)?;
                return Ok(Committed {
                    event_id: String::from_utf8_lossy(&first).into_owned(),
                    duplicate: true,
                });
            }
            tx.dedupe.insert(k.as_slice(), p.id.as_bytes())?;
        }
        tx.events.insert(&seq_key(p.seq), p.record.as_slice())?;
        tx.event_ids.insert(p.id.as_bytes(), &seq_key(p.seq))?;
        if let Some(r) = p.stored.log_ref() {
            tx.bump_segment(r.segment, 1)?;
        }
        for (state, due) in &p.jobs {
            tx.put_job(state)?;
            tx.due.insert(due, &[])?;
            tx.bump(state.dest, counter::PENDING, 1)?;
        }
        tx.bump(0, counter::INGESTED, 1)?;
        Ok(Committed {
            event_id: p.id.clone(),
            duplicate: false,
        })
    }

    /// Records one attempt and what follows from it: the job is delivered,
    /// moved to its next due time, or dead-lettered. A job that is gone or
    /// no longer pending (purged, expired, recorded twice) is left alone.
    fn write_attempt(
        tx: &Tx<'_>,
        outcome: &AttemptOutcome,
        event: Option<&StoredEvent>,
    ) -> TxResult<()> {
        let AttemptOutcome { job, attempt, next } = outcome;
        let (job, next) = (*job, *next);
        let Some(mut state) = tx.job(job)? else {
            return Ok(());
        };
        if state.job_status() != JobStatus::Pending {
            return Ok(());
        }
        let ended_ms = attempt
            .started_ms
            .saturating_add(i64::from(attempt.duration_ms));
        tx.due.remove(&due_key_of(&state))?;
        state.attempts += 1;
        state.round_attempts += 1;
        if state.round_started_ms == 0 {
            state.round_started_ms = attempt.started_ms;
        }
        let error = capped(&attempt.error);
        state.last_status = attempt.status;
        state.last_error.clone_from(&error);
        state.last_attempt_ms = attempt.started_ms;
        let record = AttemptRecord {
            n: state.attempts,
            outcome: next.outcome().to_string(),
            error: error.clone(),
            ..attempt.clone()
        };
        tx.attempts.insert(
            &attempt_key(job, state.attempts),
            record.encode_to_vec().as_slice(),
        )?;
        tx.bump(job.dest, counter::ATTEMPTS, 1)?;
        if next != Next::Delivered {
            tx.bump(job.dest, counter::FAILED, 1)?;
        }
        match next {
            Next::Delivered => {
                state.status = JobStatus::Delivered as i32;
                state.finished_ms = ended_ms;
                tx.bump(job.dest, counter::PENDING, -1)?;
                tx.bump(job.dest, counter::DELIVERED, 1)?;
            }
            Next::RetryAt(at) => {
                state.next_attempt_ms = at;
                tx.due.insert(&due_key_of(&state), &[])?;
            }
            Next::DeadLetter => {
                state.status = JobStatus::Dead as i32;
                state.finished_ms = ended_ms;
                let letter = DeadLetter {
                    event_id: event.map(|e| e.id.clone()).unwrap_or_default(),
                    seq: job.seq,
                    dest: job.dest,
                    attempts: state.attempts,
                    last_status: attempt.status,
                    last_error: error.clone(),
                    response_body: attempt.response_body.clone(),
                    dead_at_ms: ended_ms,
                    source: event.map(|e| e.source().to_string()).unwrap_or_default(),
                    event_type: event
                        .map(|e| e.event_type().to_string())
                        .unwrap_or_default(),
                    stored_at_ms: event.map_or(0, |e| e.stored_at_ms),
                };
                tx.dead
                    .insert(&job_key(job), letter.encode_to_vec().as_slice())?;
                tx.bump(job.dest, counter::PENDING, -1)?;
                tx.bump(job.dest, counter::DEAD_LETTERED, 1)?;
                tx.bump(job.dest, counter::DEAD_NOW, 1)?;
            }
        }
        tx.put_job(&state)?;
        Ok(())
    }

    /// The record as stored (see `StoredEvent` for its layouts).
    fn decode_event(v: &[u8]) -> Result<StoredEvent, StoreError> {
        StoredEvent::decode(v).map_err(|e| corrupt("event", e))
    }

    /// An event as sled holds it, without reading the log.
    fn event_meta(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.get(seq_key(seq))? {
            None => Ok(None),
            Some(v) => Self::decode_event(&v).map(Some),
        }
    }

    /// Fills in from the log what the record does not hold: the whole event,
    /// or in the previous layout its body.
    fn load(&self, stored: &mut StoredEvent) -> Result<(), StoreError> {
        if let Some(r) = &stored.event_ref {
            let bytes = self.bodies.read(stored.seq, r, "event")?;
            // The crc matched, so bytes that do not decode were written
            // wrong, not damaged since.
            let event = Event::decode(bytes.as_slice()).map_err(|e| {
                corrupt(
                    "event",
                    format!(
                        "{}: the record at offset {} does not decode: {e} (event {})",
                        self.bodies.segment_path(r.segment).display(),
                        r.offset,
                        stored.seq
                    ),
                )
            })?;
            stored.event = Some(event);
        } else if let (Some(r), Some(event)) = (&stored.body_ref, stored.event.as_mut()) {
            event.body = self.bodies.read(stored.seq, r, "event body")?;
        }
        Ok(())
    }

    /// Deletes the segments among `candidates` that no event points into
    /// any more, except the one being appended to. A failure is logged,
    /// not returned: what called this has already happened, and a segment
    /// left behind is deleted on the next open.
    fn free_segments(&self, candidates: &[u64]) {
        let mut empty = Vec::new();
        for &segment in candidates {
            match self
                .counters
                .get(segment_counter_key(counter::SEGMENT_LIVE, segment))
            {
                Ok(None) if self.bodies.active() != Some(segment) => empty.push(segment),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(segment, error = %e, "cannot read a body segment's count; it is kept until the next start");
                }
            }
        }
        if empty.is_empty() {
            return;
        }
        // The removal of the records that pointed into them must reach the
        // disk first, or a crash could bring back records without bodies.
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "cannot flush before freeing body segments; they are kept until the next start");
            return;
        }
        for segment in empty {
            if let Err(e) = self.bodies.remove_segment(segment) {
                let path = self.bodies.segment_path(segment);
                tracing::warn!(path = %path.display(), error = %e, "cannot delete an empty body segment; it is deleted on the next start");
            }
        }
    }

    fn jobs_of(&self, event: &StoredEvent) -> Result<Vec<JobState>, StoreError> {
        let mut out = Vec::with_capacity(event.destinations.len());
        for &dest in &event.destinations {
            if let Some(j) = self.job(JobRef {
                seq: event.seq,
                dest,
            })? {
                out.push(j);
            }
        }
        Ok(out)
    }

    fn event_seq(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.event_ids
            .get(id.as_bytes())?
            .map(|v| decode_u64(&v, "event id index"))
            .transpose()
    }

    fn summary_of(&self, event: StoredEvent) -> Result<EventSummary, StoreError> {
        let jobs = self.jobs_of(&event)?;
        Ok(EventSummary { event, jobs })
    }

    /// Every dead letter the filter selects, newest first.
    fn matching_dead(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        if filter.event_ids.is_empty() {
            for entry in self.dead.iter().rev() {
                let (_, v) = entry?;
                let letter =
                    DeadLetter::decode(v.as_ref()).map_err(|e| corrupt("dead letter", e))?;
                if dead_matches(filter, &letter) {
                    out.push(letter);
                }
            }
            return Ok(out);
        }
        for id in &filter.event_ids {
            let Some(seq) = self.event_seq(id)? else {
                continue;
            };
            for entry in self.dead.scan_prefix(seq_key(seq)) {
                let (_, v) = entry?;
                let letter =
                    DeadLetter::decode(v.as_ref()).map_err(|e| corrupt("dead letter", e))?;
                if dead_matches(filter, &letter) {
                    out.push(letter);
                }
            }
        }
        out.sort_by_key(|l| std::cmp::Reverse((l.seq, l.dest)));
        out.dedup_by_key(|l| (l.seq, l.dest));
        Ok(out)
    }

    /// Takes every dead letter `filter` selects out of the queue, each in a
    /// transaction of its own where `change` updates the job's state; then
    /// flushes once. A letter redriven or purged meanwhile is skipped, so
    /// doing it twice changes each job once. Returns the jobs changed.
    fn take_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        change: impl Fn(&Tx<'_>, JobRef, &mut JobState) -> TxResult<()>,
    ) -> Result<Vec<JobRef>, StoreError> {
        let mut taken = Vec::new();
        for letter in self.matching_dead(filter)? {
            let job = JobRef {
                seq: letter.seq,
                dest: letter.dest,
            };
            let result = self.transact(|tx| {
                let mut state = tx.take_dead_letter(job)?;
                change(tx, job, &mut state)?;
                tx.put_job(&state)?;
                tx.bump(job.dest, counter::DEAD_NOW, -1)
            });
            if finish(result)?.is_some() {
                taken.push(job);
            }
        }
        if !taken.is_empty() {
            self.flush()?;
        }
        Ok(taken)
    }

    /// When every job of the event is finished, the time it may go.
    fn removable_at(
        jobs: &[Option<JobState>],
        event: &StoredEvent,
        retention: Retention,
    ) -> Option<i64> {
        let mut at = event.stored_at_ms.saturating_add(retention.delivered_ms);
        for job in jobs {
            let job = job.as_ref()?;
            let keep = match job.job_status() {
                JobStatus::Pending => return None,
                JobStatus::Delivered | JobStatus::Purged => retention.delivered_ms,
                JobStatus::Dead => retention.dead_letters_ms,
            };
            at = at.max(job.finished_ms.saturating_add(keep));
        }
        Some(at)
    }

    fn remove_event(
        &self,
        event: &StoredEvent,
        now_ms: i64,
        retention: Retention,
    ) -> Result<bool, StoreError> {
        let refs: Vec<JobRef> = event
            .destinations
            .iter()
            .map(|&dest| JobRef {
                seq: event.seq,
                dest,
            })
            .collect();
        let attempt_keys: Vec<sled::IVec> = self
            .attempts
            .scan_prefix(seq_key(event.seq))
            .keys()
            .collect::<Result<_, _>>()?;
        let dedupe = event
            .event
            .as_ref()
            .filter(|e| !e.provider_event_id.is_empty())
            .map(|e| dedupe_key(&e.source, &e.provider_event_id));
        let result = self.transact(|tx| {
            // Gone already (another sweep): nothing to count down twice.
            if tx.events.remove(&seq_key(event.seq))?.is_none() {
                return Err(ConflictableTransactionError::Abort(Abort::Stale));
            }
            let mut jobs = Vec::with_capacity(refs.len());
            for &r in &refs {
                jobs.push(tx.job(r)?);
            }
            // Re-checked here: a redrive may have come in since the scan.
            match Self::removable_at(&jobs, event, retention) {
                Some(at) if at <= now_ms => {}
                _ => return Err(ConflictableTransactionError::Abort(Abort::Stale)),
            }
            for (r, job) in refs.iter().zip(&jobs) {
                tx.jobs.remove(&job_key(*r))?;
                if job
                    .as_ref()
                    .is_some_and(|j| j.job_status() == JobStatus::Dead)
                    && tx.dead.remove(&job_key(*r))?.is_some()
                {
                    tx.bump(r.dest, counter::DEAD_NOW, -1)?;
                }
            }
            for k in &attempt_keys {
                tx.attempts.remove(k)?;
            }
            if tx
                .event_ids
                .get(event.id.as_bytes())?
                .is_some_and(|v| v.as_ref() == seq_key(event.seq))
            {
                tx.event_ids.remove(event.id.as_bytes())?;
                if let Some(k) = &dedupe {
                    tx.dedupe.remove(k.as_slice())?;
                }
            }
            tx.bump(0, counter::EXPIRED, 1)?;
            match event.log_ref() {
                Some(r) => Ok((tx.bump_segment(r.segment, -1)? == 0).then_some(r.segment)),
                None => Ok(None),
            }
        });
        let Some(emptied) = finish(result)? else {
            return Ok(false);
        };
        if let Some(segment) = emptied {
            self.free_segments(&[segment]);
        }
        Ok(true)
    }
}

fn dead_matches(filter: &DeadLetterFilter, letter: &DeadLetter) -> bool {
    filter.dest.is_none_or(|d| d == letter.dest)
        && filter.source.as_ref().is_none_or(|s| *s == letter.source)
        && filter.since_ms.is_none_or(|t| letter.dead_at_ms >= t)
        && filter.until_ms.is_none_or(|t| letter.dead_at_ms < t)
}

impl Store for SledStore {
    fn commit(&self, batch: Vec<NewEvent>) -> Result<Vec<Committed>, StoreError> {
        let _one_commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut prepared = batch
            .into_iter()
            .map(|new| self.prepare(new))
            .collect::<Result<Vec<_>, _>>()?;
        // The log first, durable before any record that points into it.
        let items: Vec<(u64, &[u8])> = prepared
            .iter()
            .map(|p| (p.seq, p.logged.as_slice()))
            .collect();
        let refs = self.bodies.append(&items)?;
        if self.sync.is_some() {
            self.bodies.sync()?;
        }
        if refs.len() != prepared.len() {
            return Err(corrupt("event log", "an event got no place"));
        }
        for (p, r) in prepared.iter_mut().zip(refs) {
            p.stored.event_ref = Some(r);
            p.record = p.stored.encode_to_vec();
        }
        // One transaction for the whole batch: each event is still all or
        // nothing, and sled's per-transaction cost (it serialises commits)
        // is paid once per batch instead of once per event.
        let result = self.transact(|tx| prepared.iter().map(|p| Self::write_new(tx, p)).collect());
        let committed = finish(result)?.ok_or_else(|| corrupt("commit", "aborted"))?;
        self.flush()?;
        let ingested = match self.counters.get(counter_key(0, counter::INGESTED))? {
            Some(v) => decode_u64(&v, "counter")?,
            None => 0,
        };
        self.ledger.record(ingested)?;
        let retired = self.bodies.take_retired();
        if !retired.is_empty() {
            self.free_segments(&retired);
        }
        Ok(committed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(s) = &self.sync {
            s.sync()?;
        }
        Ok(())
    }

    fn available_space(&self) -> Result<u64, StoreError> {
        Ok(fs2::available_space(&self.path)?)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()? + self.bodies.size()?)
    }

    fn destination_id(&self, name: &str) -> Result<DestId, StoreError> {
        if let Some(v) = self.destinations.get(name)? {
            let bytes: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|e| corrupt("destination id", e))?;
            return Ok(u32::from_be_bytes(bytes));
        }
        // Called once per destination at startup, from one task.
        let id = u32::try_from(self.destinations.len() + 1)
            .map_err(|e| corrupt("destination count", e))?;
        self.destinations.insert(name, &id.to_be_bytes())?;
        self.flush()?;
        Ok(id)
    }

    fn destinations(&self) -> Result<Vec<(String, DestId)>, StoreError> {
        self.destinations
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let id: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|e| corrupt("destination id", e))?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    u32::from_be_bytes(id),
                ))
            })
            .collect()
    }

    fn destination_state(&self, dest: DestId) -> Result<DestState, StoreError> {
        match self.dest_state.get(dest.to_be_bytes())? {
            None => Ok(DestState::default()),
            Some(v) => DestState::decode(v.as_ref()).map_err(|e| corrupt("destination state", e)),
        }
    }

    fn set_paused(&self, dest: DestId, paused: bool, now_ms: i64) -> Result<(), StoreError> {
        let state = DestState {
            paused,
            changed_ms: now_ms,
        };
        self.dest_state
            .insert(dest.to_be_bytes(), state.encode_to_vec())?;
        self.flush()
    }

    fn queue_stats(&self, dest: DestId) -> Result<QueueStats, StoreError> {
        let depth = match self.counters.get(counter_key(dest, counter::PENDING))? {
            Some(v) => decode_u64(&v, "counter")?,
            None => 0,
        };
        let oldest_due_ms = match self.due.scan_prefix(dest.to_be_bytes()).next() {
            None => None,
            Some(entry) => {
                let (k, _) = entry?;
                let (_, rank, seq) =
                    read_due_key(&k).ok_or_else(|| corrupt("due key", "wrong length"))?;
                if rank == 0 {
                    self.job(JobRef { seq, dest })?.map(|j| j.next_attempt_ms)
                } else {
                    i64::try_from(rank).ok()
                }
            }
        };
        Ok(QueueStats {
            depth,
            oldest_due_ms,
        })
    }

    fn due(
        &self,
        dest: DestId,
        now_ms: i64,
        limit: usize,
        in_flight: &dyn Fn(&JobRef) -> bool,
    ) -> Result<DueJobs, StoreError> {
        let mut out = DueJobs::default();
        for entry in self.due.scan_prefix(dest.to_be_bytes()) {
            if out.ready.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let (_, rank, seq) =
                read_due_key(&k).ok_or_else(|| corrupt("due key", "wrong length"))?;
            let job = JobRef { seq, dest };
            if in_flight(&job) {
                continue;
            }
            // Rank 0: an ordered job, whose due time is in its state. Either
            // way the first job not yet due ends the scan: for time-ranked
            // jobs the rest are later, for ordered ones they wait behind it.
            let due_ms = if rank == 0 {
                self.job(job)?.map_or(0, |j| j.next_attempt_ms)
            } else {
                i64::try_from(rank).unwrap_or(i64::MAX)
            };
            if due_ms > now_ms {
                out.next_due_ms = Some(due_ms);
                break;
            }
            out.ready.push(job);
        }
        Ok(out)
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        let Some(mut stored) = self.event_meta(seq)? else {
            return Ok(None);
        };
        self.load(&mut stored)?;
        Ok(Some(stored))
    }

    fn job(&self, job: JobRef) -> Result<Option<JobState>, StoreError> {
        match self.jobs.get(job_key(job))? {
            None => Ok(None),
            Some(v) => JobState::decode(v.as_ref())
                .map(Some)
                .map_err(|e| corrupt("job", e)),
        }
    }

    fn record_attempts(&self, batch: &[AttemptOutcome]) -> Result<(), StoreError> {
        // Only a dead letter needs the event (its id, source and type), and
        // the summary in sled has those.
        let events = batch
            .iter()
            .map(|o| match o.next {
                Next::DeadLetter => self.event_meta(o.job.seq),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = self.transact(|tx| {
            for (outcome, event) in batch.iter().zip(&events) {
                Self::write_attempt(tx, outcome, event.as_ref())?;
            }
            Ok(())
        });
        finish(result).map(|_| ())
    }

    fn list_events(
        &self,
        query: &EventQuery,
        page: &PageRequest,
    ) -> Result<Page<EventSummary>, StoreError> {
        let limit = page_limit(page);
        let upper = match &page.token {
            None => u64::MAX,
            Some(t) => t.parse::<u64>().map_err(|_| StoreError::BadPageToken)?,
        };
        let mut items = Vec::new();
        let mut last_seq = None;
        for (scanned, entry) in self.events.range(..seq_key(upper)).rev().enumerate() {
            if items.len() >= limit || scanned >= MAX_SCANNED {
                return Ok(Page {
                    items,
                    next_token: last_seq.map(|s: u64| s.to_string()),
                });
            }
            let (_, v) = entry?;
            let event = Self::decode_event(&v)?;
            last_seq = Some(event.seq);
            if query.until_ms.is_some_and(|t| event.stored_at_ms >= t) {
                continue;
            }
            if query.since_ms.is_some_and(|t| event.stored_at_ms < t) {
                // Sequence order is ingest order: everything further is older.
                break;
            }
            if query.source.as_ref().is_some_and(|s| s != event.source())
                || query
                    .event_type
                    .as_ref()
                    .is_some_and(|g| !edgehook_rules::glob_match(g, event.event_type()))
                || query.provider_event_id.as_ref().is_some_and(|p| {
                    event
                        .event
                        .as_ref()
                        .is_none_or(|e| e.provider_event_id != *p)
                })
                || query.dest.is_some_and(|d| !event.destinations.contains(&d))
            {
                continue;
            }
            let summary = self.summary_of(event)?;
            if let Some(status) = query.status
                && !summary
                    .jobs
                    .iter()
                    .any(|j| j.job_status() == status && query.dest.is_none_or(|d| d == j.dest))
            {
                continue;
            }
            items.push(summary);
        }
        Ok(Page {
            items,
            next_token: None,
        })
    }

    fn event_summary(&self, event_id: &str) -> Result<Option<EventSummary>, StoreError> {
        let Some(seq) = self.event_seq(event_id)? else {
            return Ok(None);
        };
        self.event_meta(seq)?
            .map(|event| self.summary_of(event))
            .transpose()
    }

    fn get_event(&self, event_id: &str) -> Result<Option<EventDetail>, StoreError> {
        let Some(seq) = self.event_seq(event_id)? else {
            return Ok(None);
        };
        let Some(event) = self.event(seq)? else {
            return Ok(None);
        };
        let mut deliveries = Vec::new();
        for job in self.jobs_of(&event)? {
            let r = JobRef {
                seq,
                dest: job.dest,
            };
            let attempts = self
                .attempts
                .scan_prefix(job_key(r))
                .values()
                .map(|v| AttemptRecord::decode(v?.as_ref()).map_err(|e| corrupt("attempt", e)))
                .collect::<Result<Vec<_>, _>>()?;
            let dead_letter = self
                .dead
                .get(job_key(r))?
                .map(|v| DeadLetter::decode(v.as_ref()).map_err(|e| corrupt("dead letter", e)))
                .transpose()?;
            deliveries.push(DeliveryDetail {
                job,
                attempts,
                dead_letter,
            });
        }
        Ok(Some(EventDetail { event, deliveries }))
    }

    fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        let limit = page_limit(page);
        if !filter.event_ids.is_empty() {
            let mut items = self.matching_dead(filter)?;
            items.truncate(limit);
            return Ok(Page {
                items,
                next_token: None,
            });
        }
        let upper = match &page.token {
            None => [0xff; 12],
            Some(t) => {
                let (seq, dest) = t.split_once('.').ok_or(StoreError::BadPageToken)?;
                job_key(JobRef {
                    seq: seq.parse().map_err(|_| StoreError::BadPageToken)?,
                    dest: dest.parse().map_err(|_| StoreError::BadPageToken)?,
                })
            }
        };
        let mut items = Vec::new();
        for entry in self.dead.range(..upper).rev() {
            let (k, v) = entry?;
            if items.len() >= limit {
                // Resume below the last one returned.
                let next_token = items
                    .last()
                    .map(|l: &DeadLetter| format!("{}.{}", l.seq, l.dest));
                return Ok(Page { items, next_token });
            }
            read_job_key(&k).ok_or_else(|| corrupt("dead letter key", "wrong length"))?;
            let letter = DeadLetter::decode(v.as_ref()).map_err(|e| corrupt("dead letter", e))?;
            if dead_matches(filter, &letter) {
                items.push(letter);
            }
        }
        Ok(Page {
            items,
            next_token: None,
        })
    }

    fn redrive(&self, filter: &DeadLetterFilter, now_ms: i64) -> Result<Vec<JobRef>, StoreError> {
        self.take_dead_letters(filter, |tx, job, state| {
            state.status = JobStatus::Pending as i32;
            state.round_attempts = 0;
            state.round_started_ms = 0;
            state.next_attempt_ms = now_ms;
            state.finished_ms = 0;
            tx.due.insert(&due_key_of(state), &[])?;
            tx.bump(job.dest, counter::PENDING, 1)?;
            tx.bump(job.dest, counter::REDRIVEN, 1)
        })
    }

    fn purge_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let purged = self.take_dead_letters(filter, |tx, job, state| {
            state.status = JobStatus::Purged as i32;
            state.finished_ms = now_ms;
            tx.bump(job.dest, counter::PURGED, 1)
        })?;
        Ok(purged.len() as u64)
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        for entry in self.counters.iter() {
            let (k, v) = entry?;
            if read_segment_counter_key(&k).is_some() {
                continue;
            }
            if k.len() != 5 {
                return Err(corrupt("counter key", "wrong length"));
            }
            let dest = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            let n = decode_u64(&v, "counter")?;
            if dest == 0 {
                match k[4] {
                    counter::INGESTED => totals.ingested = n,
                    counter::DUPLICATES => totals.duplicates = n,
                    counter::EXPIRED => totals.expired = n,
                    _ => {}
                }
                continue;
            }
            let t: &mut DestTotals = totals.destinations.entry(dest).or_default();
            match k[4] {
                counter::PENDING => t.pending = n,
                counter::DELIVERED => t.delivered = n,
                counter::DEAD_LETTERED => t.dead_lettered = n,
                counter::DEAD_NOW => t.dead_now = n,
                counter::ATTEMPTS => t.attempts = n,
                counter::FAILED => t.failed_attempts = n,
                counter::REDRIVEN => t.redriven = n,
                counter::PURGED => t.purged = n,
                _ => {}
            }
        }
        Ok(totals)
    }

    fn sweep(
        &self,
        now_ms: i64,
        retention: Retention,
        from_seq: u64,
        budget: usize,
    ) -> Result<Swept, StoreError> {
        let newest_expirable =
            now_ms.saturating_sub(retention.delivered_ms.min(retention.dead_letters_ms));
        let mut swept = Swept::default();
        for (looked, entry) in self.events.range(seq_key(from_seq)..).enumerate() {
            let (k, v) = entry?;
            let seq = read_seq(&k).ok_or_else(|| corrupt("event key", "wrong length"))?;
            if looked >= budget {
                swept.next_seq = Some(seq);
                return Ok(swept);
            }
            let event = Self::decode_event(&v)?;
            if event.stored_at_ms > newest_expirable {
                // Sequence order is ingest order: the rest are newer still.
                return Ok(swept);
            }
            let jobs = event
                .destinations
                .iter()
                .map(|&dest| self.job(JobRef { seq, dest }))
                .collect::<Result<Vec<_>, _>>()?;
            if Self::removable_at(&jobs, &event, retention).is_some_and(|at| at <= now_ms)
                && self.remove_event(&event, now_ms, retention)?
            {
                swept.removed += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests;
