//! The `Store` on sled 0.34.
//!
//! Facts about sled 0.34.7 that shape this file: `flush_async` hangs when
//! several tasks call it (sled#1308), so the one writer calls the blocking
//! `flush()`; on Linux `flush()` uses `sync_file_range`, which survives a
//! process crash but not a power loss (sled#1351), so with
//! `Durability::Fsync` the data file is fsynced after it; transactions are
//! optimistic and may re-run their closure, so closures have no side
//! effects and no range scans.

use std::fs::File;
use std::path::{Path, PathBuf};

use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::keys::{JobKey, dedupe_key};
use super::{
    Committed, DeadLetter, DestId, DueJobs, JobState, NewEvent, Store, StoreError, StoredEvent,
};
use crate::config::Durability;
use crate::ids;

pub struct SledStore {
    db: sled::Db,
    /// sled's data file, fsynced after each flush when durability is fsync.
    data_file: Option<File>,
    path: PathBuf,
    /// seq → StoredEvent
    events: sled::Tree,
    /// event id → seq
    event_ids: sled::Tree,
    /// dedupe_key(source, provider id) → event id
    dedupe: sled::Tree,
    /// job_key(dest, seq) → JobState
    jobs: sled::Tree,
    /// due_key(dest, due, seq) → ()
    due: sled::Tree,
    /// job_key(dest, seq) → DeadLetter
    dead: sled::Tree,
    /// destination name → DestId
    destinations: sled::Tree,
}

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

impl SledStore {
    pub fn open(path: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            // Commits flush explicitly; this only bounds how stale the
            // delivery bookkeeping can be after a crash.
            .flush_every_ms(Some(1000))
            .open()?;
        let data_file = match durability {
            Durability::Fsync => Some(File::open(path.join("db"))?),
            Durability::Flush => None,
        };
        Ok(SledStore {
            events: db.open_tree("events")?,
            event_ids: db.open_tree("event_ids")?,
            dedupe: db.open_tree("dedupe")?,
            jobs: db.open_tree("jobs")?,
            due: db.open_tree("due")?,
            dead: db.open_tree("dead")?,
            destinations: db.open_tree("destinations")?,
            db,
            data_file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(f) = &self.data_file {
            f.sync_data()?;
        }
        Ok(())
    }

    fn commit_one(&self, new: NewEvent) -> Result<Committed, StoreError> {
        let source = new.event.source.clone();
        let provider_id = new.event.provider_event_id.clone();
        let dedupe = (!provider_id.is_empty()).then(|| dedupe_key(&source, &provider_id));
        let id = ids::event_id(&source, &provider_id);
        let seq = self.db.generate_id()?;
        let record = StoredEvent {
            id: id.clone(),
            seq,
            event: Some(new.event),
            stored_at_ms: new.now_ms,
        }
        .encode_to_vec();
        let state = JobState {
            created_ms: new.now_ms,
            ..Default::default()
        }
        .encode_to_vec();
        let due_ms = u64::try_from(new.now_ms).unwrap_or(0);

        let result = (
            &self.events,
            &self.event_ids,
            &self.dedupe,
            &self.jobs,
            &self.due,
        )
            .transaction(|(events, event_ids, dedupe_tree, jobs, due)| {
                if let Some(k) = &dedupe {
                    if let Some(first) = dedupe_tree.get(k)? {
                        return Ok(Committed {
                            event_id: String::from_utf8_lossy(&first).into_owned(),
                            duplicate: true,
                        });
                    }
                    dedupe_tree.insert(k.as_slice(), id.as_bytes())?;
                }
                events.insert(&seq.to_be_bytes(), record.as_slice())?;
                event_ids.insert(id.as_bytes(), &seq.to_be_bytes())?;
                for &dest in &new.destinations {
                    let job = JobKey { dest, due_ms, seq };
                    jobs.insert(&job.job_key(), state.as_slice())?;
                    due.insert(&job.due_key(), &[])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(Committed {
                    event_id: id.clone(),
                    duplicate: false,
                })
            });
        result.map_err(unabortable)
    }
}

/// Our closures never abort, so only storage errors come out.
fn unabortable(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Sled(e),
        TransactionError::Abort(()) => corrupt("transaction", "aborted"),
    }
}

impl Store for SledStore {
    fn commit(&self, batch: Vec<NewEvent>) -> Result<Vec<Committed>, StoreError> {
        let committed = batch
            .into_iter()
            .map(|new| self.commit_one(new))
            .collect::<Result<Vec<_>, _>>()?;
        self.flush()?;
        Ok(committed)
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

    fn due(
        &self,
        dest: DestId,
        now_ms: u64,
        limit: usize,
        in_flight: &dyn Fn(&JobKey) -> bool,
    ) -> Result<DueJobs, StoreError> {
        let mut out = DueJobs::default();
        for entry in self.due.scan_prefix(dest.to_be_bytes()) {
            if out.ready.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let job = JobKey::from_due_key(&k).ok_or_else(|| corrupt("due key", "wrong length"))?;
            if in_flight(&job) {
                continue;
            }
            if job.due_ms > now_ms {
                out.next_due_ms = Some(job.due_ms);
                break;
            }
            out.ready.push(job);
        }
        Ok(out)
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        match self.events.get(seq.to_be_bytes())? {
            None => Ok(None),
            Some(v) => StoredEvent::decode(v.as_ref())
                .map(Some)
                .map_err(|e| corrupt("event", e)),
        }
    }

    fn job(&self, job: &JobKey) -> Result<Option<JobState>, StoreError> {
        match self.jobs.get(job.job_key())? {
            None => Ok(None),
            Some(v) => JobState::decode(v.as_ref())
                .map(Some)
                .map_err(|e| corrupt("job", e)),
        }
    }

    fn delivered(&self, job: &JobKey) -> Result<(), StoreError> {
        (&self.jobs, &self.due)
            .transaction(|(jobs, due)| {
                jobs.remove(&job.job_key())?;
                due.remove(&job.due_key())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(unabortable)
    }

    fn reschedule(
        &self,
        job: &JobKey,
        state: &JobState,
        next_due_ms: u64,
    ) -> Result<(), StoreError> {
        let next = JobKey {
            due_ms: next_due_ms,
            ..*job
        };
        let state = state.encode_to_vec();
        (&self.jobs, &self.due)
            .transaction(|(jobs, due)| {
                due.remove(&job.due_key())?;
                due.insert(&next.due_key(), &[])?;
                jobs.insert(&job.job_key(), state.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(unabortable)
    }

    fn dead_letter(&self, job: &JobKey, letter: &DeadLetter) -> Result<(), StoreError> {
        let letter = letter.encode_to_vec();
        (&self.jobs, &self.due, &self.dead)
            .transaction(|(jobs, due, dead)| {
                jobs.remove(&job.job_key())?;
                due.remove(&job.due_key())?;
                dead.insert(&job.job_key(), letter.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(unabortable)
    }

    fn dead_letters(&self, dest: DestId) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .scan_prefix(dest.to_be_bytes())
            .map(|entry| {
                let (_, v) = entry?;
                DeadLetter::decode(v.as_ref()).map_err(|e| corrupt("dead letter", e))
            })
            .collect()
    }

    fn pending(&self, dest: DestId) -> Result<usize, StoreError> {
        Ok(self.due.scan_prefix(dest.to_be_bytes()).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgehook_proto::v1::Event;

    fn event(source: &str, provider_id: &str) -> Event {
        Event {
            source: source.into(),
            provider_event_id: provider_id.into(),
            body: b"{}".to_vec(),
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> SledStore {
        SledStore::open(dir, Durability::Fsync).unwrap()
    }

    #[test]
    fn commit_writes_event_jobs_and_due_entries_that_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let store = open(dir.path());
            let d = store.destination_id("a").unwrap();
            store
                .commit(vec![NewEvent {
                    event: event("s", ""),
                    destinations: vec![d],
                    now_ms: 1000,
                }])
                .unwrap()
        };
        let store = open(dir.path());
        assert_eq!(store.destination_id("a").unwrap(), 1);
        let due = store.due(1, 1000, 10, &|_| false).unwrap();
        assert_eq!(due.ready.len(), 1);
        let stored = store.event(due.ready[0].seq).unwrap().unwrap();
        assert_eq!(stored.id, ids[0].event_id);
        assert_eq!(stored.event.unwrap().body, b"{}");
    }

    #[test]
    fn same_provider_id_is_a_duplicate_with_the_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.destination_id("a").unwrap();
        let mk = |src: &str| NewEvent {
            event: event(src, "evt_9"),
            destinations: vec![d],
            now_ms: 5,
        };
        let out = store.commit(vec![mk("s"), mk("s"), mk("other")]).unwrap();
        assert!(!out[0].duplicate && out[1].duplicate && !out[2].duplicate);
        assert_eq!(out[0].event_id, out[1].event_id);
        assert_ne!(out[0].event_id, out[2].event_id);
        assert_eq!(store.pending(d).unwrap(), 2);
    }

    #[test]
    fn due_respects_time_in_flight_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.destination_id("a").unwrap();
        let batch = (0..3)
            .map(|_| NewEvent {
                event: event("s", ""),
                destinations: vec![d],
                now_ms: 100,
            })
            .collect();
        store.commit(batch).unwrap();
        let all = store.due(d, 100, 10, &|_| false).unwrap();
        assert_eq!(all.ready.len(), 3);
        let first = all.ready[0];
        store
            .reschedule(
                &first,
                &JobState {
                    attempts: 1,
                    ..Default::default()
                },
                500,
            )
            .unwrap();
        let now = store.due(d, 100, 10, &|_| false).unwrap();
        assert_eq!((now.ready.len(), now.next_due_ms), (2, Some(500)));
        let skip = now.ready[0];
        let rest = store.due(d, 100, 1, &|k| *k == skip).unwrap();
        assert_eq!(rest.ready, vec![now.ready[1]]);
        let moved = JobKey {
            due_ms: 500,
            ..first
        };
        assert_eq!(store.job(&moved).unwrap().unwrap().attempts, 1);
        store.delivered(&now.ready[0]).unwrap();
        store
            .dead_letter(
                &now.ready[1],
                &DeadLetter {
                    event_id: "x".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(store.pending(d).unwrap(), 1);
        assert_eq!(store.dead_letters(d).unwrap().len(), 1);
    }
}
