//! The sled store against real files in a temporary directory: what ingest,
//! dispatch, admin and retention rely on.

use super::*;
use crate::config::{Durability, StorageConfig};
use crate::store::{
    AttemptRecord, DeadLetterFilter, EventQuery, JobStatus, NewEvent, Next, PageRequest, Retention,
    RoutedTo, Store,
};
use edgehook_proto::v1::Event;

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(
        &dir.path().join("data"),
        Durability::Fsync,
        &StorageConfig::default(),
    )
    .unwrap()
}

fn event(source: &str, provider_id: &str, event_type: &str) -> Event {
    Event {
        source: source.into(),
        provider_event_id: provider_id.into(),
        event_type: event_type.into(),
        body: format!("{{\"id\":\"{provider_id}\"}}").into_bytes(),
        ..Default::default()
    }
}

fn to(dests: &[DestId]) -> Vec<RoutedTo> {
    dests
        .iter()
        .map(|&dest| RoutedTo {
            dest,
            ordered: false,
        })
        .collect()
}

fn commit(store: &SledStore, e: Event, dests: &[DestId], now_ms: i64) -> Committed {
    store
        .commit(vec![NewEvent {
            event: e,
            destinations: to(dests),
            now_ms,
        }])
        .unwrap()
        .remove(0)
}

fn attempt(started_ms: i64, status: u32) -> AttemptRecord {
    AttemptRecord {
        started_ms,
        duration_ms: 5,
        status,
        ..Default::default()
    }
}

fn all_due(store: &SledStore, dest: DestId, now_ms: i64) -> Vec<JobRef> {
    store.due(dest, now_ms, 1000, &|_| false).unwrap().ready
}

#[test]
fn a_committed_event_survives_a_reopen_with_its_jobs_due() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seq) = {
        let store = open(&dir);
        let c = commit(
            &store,
            event("stripe", "evt_1", "invoice.paid"),
            &[1, 2],
            1_000,
        );
        assert!(!c.duplicate);
        let seq = all_due(&store, 1, 1_000)[0].seq;
        (c.event_id, seq)
    };
    let store = open(&dir);
    let e = store.event(seq).unwrap().unwrap();
    assert_eq!(e.id, id);
    assert_eq!(e.source(), "stripe");
    assert_eq!(e.event_type(), "invoice.paid");
    assert_eq!(all_due(&store, 1, 1_000), vec![JobRef { seq, dest: 1 }]);
    assert_eq!(all_due(&store, 2, 1_000), vec![JobRef { seq, dest: 2 }]);
    assert!(all_due(&store, 3, 1_000).is_empty());
}

#[test]
fn the_same_provider_event_id_is_a_duplicate_with_the_first_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = commit(&store, event("stripe", "evt_1", "a"), &[1], 1_000);
    let again = commit(&store, event("stripe", "evt_1", "a"), &[1], 2_000);
    assert!(again.duplicate);
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(all_due(&store, 1, 5_000).len(), 1, "no second job");
    // Another source with the same provider id is another event.
    let other = commit(&store, event("github", "evt_1", "a"), &[1], 2_000);
    assert!(!other.duplicate);
    assert_ne!(other.event_id, first.event_id);
    // No provider id: never a duplicate.
    let a = commit(&store, event("s", "", "a"), &[1], 3_000);
    let b = commit(&store, event("s", "", "a"), &[1], 3_000);
    assert!(!a.duplicate && !b.duplicate && a.event_id != b.event_id);
    let totals = store.totals().unwrap();
    assert_eq!((totals.ingested, totals.duplicates), (4, 1));
}

#[test]
fn the_due_queue_comes_out_in_time_order_and_skips_what_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (i, at) in [3_000, 1_000, 2_000].into_iter().enumerate() {
        commit(&store, event("s", &format!("e{i}"), "t"), &[1], at);
    }
    let due = store.due(1, 2_500, 10, &|_| false).unwrap();
    let seqs: Vec<u64> = due.ready.iter().map(|j| j.seq).collect();
    let times: Vec<i64> = seqs
        .iter()
        .map(|&s| store.event(s).unwrap().unwrap().stored_at_ms)
        .collect();
    assert_eq!(times, [1_000, 2_000]);
    assert_eq!(due.next_due_ms, Some(3_000));
    let first = due.ready[0];
    let skipping = store.due(1, 2_500, 10, &|j| *j == first).unwrap();
    assert_eq!(skipping.ready, vec![due.ready[1]]);
    assert_eq!(store.due(1, 2_500, 1, &|_| false).unwrap().ready.len(), 1);
}

#[test]
fn attempts_move_a_job_to_retry_delivered_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c = commit(&store, event("s", "e1", "t"), &[1, 2], 1_000);
    let seq = all_due(&store, 1, 1_000)[0].seq;
    let (j1, j2) = (JobRef { seq, dest: 1 }, JobRef { seq, dest: 2 });

    store
        .record_attempt(j1, &attempt(1_000, 503), Next::RetryAt(9_000))
        .unwrap();
    assert!(
        all_due(&store, 1, 8_999).is_empty(),
        "not due before its time"
    );
    assert_eq!(
        store.due(1, 0, 10, &|_| false).unwrap().next_due_ms,
        Some(9_000)
    );
    store
        .record_attempt(j1, &attempt(9_000, 200), Next::Delivered)
        .unwrap();
    assert!(all_due(&store, 1, i64::MAX).is_empty());
    let job = store.job(j1).unwrap().unwrap();
    assert_eq!(job.job_status(), JobStatus::Delivered);
    assert_eq!((job.attempts, job.last_status), (2, 200));

    let mut gone = attempt(1_500, 410);
    gone.response_body = b"gone".to_vec();
    store.record_attempt(j2, &gone, Next::DeadLetter).unwrap();
    let letters = store
        .list_dead_letters(&DeadLetterFilter::default(), &PageRequest::default())
        .unwrap()
        .items;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, c.event_id);
    assert_eq!((letters[0].dest, letters[0].last_status), (2, 410));
    assert_eq!(letters[0].response_body, b"gone");

    let detail = store.get_event(&c.event_id).unwrap().unwrap();
    let attempts: Vec<(u32, u32, String)> = detail
        .deliveries
        .iter()
        .flat_map(|d| d.attempts.iter())
        .map(|a| (a.n, a.status, a.outcome.clone()))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, 503, "retry".to_string()),
            (2, 200, "delivered".to_string()),
            (1, 410, "give_up".to_string())
        ]
    );
    // An attempt on a finished job is refused, not double-counted.
    assert!(
        store
            .record_attempt(j1, &attempt(10_000, 200), Next::Delivered)
            .is_ok()
    );
    assert_eq!(store.job(j1).unwrap().unwrap().attempts, 2);
}

#[test]
fn redriving_twice_queues_once_with_a_fresh_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c = commit(&store, event("s", "e1", "t"), &[1], 1_000);
    let job = all_due(&store, 1, 1_000)[0];
    for n in 0..3 {
        store
            .record_attempt(job, &attempt(1_000 + n, 500), Next::RetryAt(1_000))
            .unwrap();
    }
    store
        .record_attempt(job, &attempt(2_000, 500), Next::DeadLetter)
        .unwrap();
    let filter = DeadLetterFilter {
        event_ids: vec![c.event_id.clone()],
        ..Default::default()
    };
    assert_eq!(store.redrive(&filter, 5_000).unwrap(), vec![job]);
    assert!(store.redrive(&filter, 5_001).unwrap().is_empty());
    assert_eq!(all_due(&store, 1, 5_000), vec![job]);
    let state = store.job(job).unwrap().unwrap();
    assert_eq!(state.job_status(), JobStatus::Pending);
    assert_eq!(
        (state.attempts, state.round_attempts),
        (4, 0),
        "history kept, retry budget fresh"
    );
    assert!(
        store
            .list_dead_letters(&DeadLetterFilter::default(), &PageRequest::default())
            .unwrap()
            .items
            .is_empty()
    );
}

#[test]
fn purge_drops_dead_letters_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..3 {
        commit(&store, event("s", &format!("e{i}"), "t"), &[1], 1_000);
    }
    for job in all_due(&store, 1, 1_000) {
        store
            .record_attempt(job, &attempt(1_000, 400), Next::DeadLetter)
            .unwrap();
    }
    assert_eq!(
        store
            .purge_dead_letters(&DeadLetterFilter::default(), 2_000)
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .purge_dead_letters(&DeadLetterFilter::default(), 2_000)
            .unwrap(),
        0
    );
    let t = store.totals().unwrap().destinations[&1];
    assert_eq!((t.dead_lettered, t.dead_now, t.purged), (3, 0, 3));
}

#[test]
fn retention_removes_finished_events_only_after_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let retention = Retention {
        delivered_ms: 10_000,
        dead_letters_ms: 50_000,
    };
    let delivered = commit(&store, event("s", "d", "t"), &[1], 1_000);
    let dead = commit(&store, event("s", "x", "t"), &[1], 1_000);
    let pending = commit(&store, event("s", "p", "t"), &[1], 1_000);
    let jobs = all_due(&store, 1, 1_000);
    store
        .record_attempt(jobs[0], &attempt(1_000, 200), Next::Delivered)
        .unwrap();
    store
        .record_attempt(jobs[1], &attempt(1_000, 400), Next::DeadLetter)
        .unwrap();

    let swept = store.sweep(5_000, retention, 0, 100).unwrap();
    assert_eq!(swept.removed, 0, "nothing is old enough yet");
    let swept = store.sweep(20_000, retention, 0, 100).unwrap();
    assert_eq!(swept.removed, 1);
    assert!(store.get_event(&delivered.event_id).unwrap().is_none());
    assert!(store.get_event(&dead.event_id).unwrap().is_some());
    let swept = store.sweep(100_000, retention, 0, 100).unwrap();
    assert_eq!(swept.removed, 1);
    assert!(store.get_event(&dead.event_id).unwrap().is_none());
    assert!(
        store.get_event(&pending.event_id).unwrap().is_some(),
        "an undelivered event is never removed"
    );
    // Once its dedupe key is gone, the provider id may come again.
    assert!(!commit(&store, event("s", "d", "t"), &[1], 200_000).duplicate);
    // A sweep in small steps says where to go on.
    let step = store.sweep(100_000, retention, 0, 1).unwrap();
    assert!(step.next_seq.is_some());
}

#[test]
fn list_events_is_newest_first_filtered_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        let t = if i % 2 == 0 {
            "invoice.paid"
        } else {
            "charge.failed"
        };
        commit(
            &store,
            event("stripe", &format!("e{i}"), t),
            &[1],
            1_000 + i,
        );
    }
    commit(&store, event("github", "g", "push"), &[2], 2_000);
    let q = EventQuery {
        source: Some("stripe".into()),
        event_type: Some("invoice.*".into()),
        ..Default::default()
    };
    let page = store
        .list_events(
            &q,
            &PageRequest {
                limit: 2,
                token: None,
            },
        )
        .unwrap();
    let ids = |p: &crate::store::Page<crate::store::EventSummary>| {
        p.items
            .iter()
            .map(|s| s.event.event.as_ref().unwrap().provider_event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&page), ["e4", "e2"]);
    let next = store
        .list_events(
            &q,
            &PageRequest {
                limit: 2,
                token: page.next_token.clone(),
            },
        )
        .unwrap();
    assert_eq!(ids(&next), ["e0"]);
    assert!(matches!(
        store.list_events(
            &q,
            &PageRequest {
                limit: 2,
                token: Some("nope".into())
            }
        ),
        Err(StoreError::BadPageToken)
    ));
}

#[test]
fn a_duplicate_inside_one_batch_is_caught_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let new = |now_ms| NewEvent {
        event: event("stripe", "evt_9", "a"),
        destinations: to(&[1]),
        now_ms,
    };
    let out = store.commit(vec![new(1_000), new(1_001)]).unwrap();
    assert!(!out[0].duplicate && out[1].duplicate);
    assert_eq!(out[0].event_id, out[1].event_id);
    assert_eq!(all_due(&store, 1, 5_000).len(), 1);
}

#[test]
fn damage_that_loses_committed_events_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = open(&dir);
        for i in 0..200 {
            commit(&store, event("s", &format!("e{i}"), "t"), &[1], 1_000);
        }
    }
    // Flip bytes in the middle of sled's log: sled itself would open and
    // serve what comes before the damage.
    let db = data.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let refused = SledStore::open(&data, Durability::Fsync, &StorageConfig::default());
    match refused {
        Err(StoreError::Damaged { committed, held }) => {
            assert_eq!(committed, 200);
            assert!(held < 200);
        }
        Err(other) => panic!("refused, but not as damage: {other}"),
        Ok(_) => panic!("opened a store that lost committed events"),
    }
    // An operator who accepts the loss removes the ledger.
    std::fs::remove_file(data.join(LEDGER_FILE)).unwrap();
    assert!(SledStore::open(&data, Durability::Fsync, &StorageConfig::default()).is_ok());
}
