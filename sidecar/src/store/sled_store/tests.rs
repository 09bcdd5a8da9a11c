//! The sled store against real files in a temporary directory: what ingest,
//! dispatch, admin and retention rely on.

use super::*;
use crate::config::{Durability, StorageConfig};
use crate::store::{
    AttemptRecord, DeadLetterFilter, EventQuery, JobStatus, NewEvent, Next, PageRequest, Retention,
    RoutedTo, Store,
};
use edgehook_proto::v1::{Event, Header};

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

// ---- the event log ----

fn open_small(dir: &tempfile::TempDir, segment_bytes: u64) -> SledStore {
    SledStore::open_with_segments(
        &dir.path().join("data"),
        Durability::Fsync,
        &StorageConfig::default(),
        segment_bytes,
    )
    .unwrap()
}

fn with_body(provider_id: &str, body: &[u8]) -> Event {
    Event {
        body: body.to_vec(),
        ..event("s", provider_id, "t")
    }
}

fn commit_batch(store: &SledStore, events: Vec<Event>, now_ms: i64) -> Vec<u64> {
    let out = store
        .commit(
            events
                .into_iter()
                .map(|event| NewEvent {
                    event,
                    destinations: to(&[1]),
                    now_ms,
                })
                .collect(),
        )
        .unwrap();
    out.iter()
        .map(|c| store.event_seq(&c.event_id).unwrap().unwrap())
        .collect()
}

fn live_count(store: &SledStore, segment: u64) -> Option<u64> {
    store
        .counters
        .get(segment_counter_key(counter::SEGMENT_LIVE, segment))
        .unwrap()
        .map(|v| decode_u64(&v, "counter").unwrap())
}

fn body_of(store: &SledStore, seq: u64) -> Vec<u8> {
    store.event(seq).unwrap().unwrap().event.unwrap().body
}

/// The record exactly as sled holds it.
fn raw_record(store: &SledStore, seq: u64) -> StoredEvent {
    StoredEvent::decode(store.events.get(seq_key(seq)).unwrap().unwrap().as_ref()).unwrap()
}

fn deliver_all(store: &SledStore, now_ms: i64, except: &[u64]) {
    for job in all_due(store, 1, now_ms) {
        if !except.contains(&job.seq) {
            store
                .record_attempt(job, &attempt(now_ms, 200), Next::Delivered)
                .unwrap();
        }
    }
}

const KEEP_1S: Retention = Retention {
    delivered_ms: 1_000,
    dead_letters_ms: 1_000,
};

fn header(name: &str, value: &[u8]) -> Header {
    Header {
        name: name.into(),
        value: value.to_vec(),
    }
}

/// An event with every field set.
fn full_event(provider_id: &str, body: &[u8]) -> Event {
    Event {
        source: "stripe".into(),
        received_at_ms: 1_700_000_000_123,
        method: "POST".into(),
        path: "/hooks/stripe".into(),
        query: "tenant=a".into(),
        headers: vec![
            header("content-type", b"application/json"),
            header("stripe-signature", b"t=1,v1=abc"),
            header("x-binary", &[0xff, 0x00, 0x80]),
        ],
        client_address: "203.0.113.9".into(),
        provider_event_id: provider_id.into(),
        event_type: "invoice.paid".into(),
        body: body.to_vec(),
        request_id: "req-42".into(),
    }
}

/// Bytes one event takes in the log: the record header and the event.
fn logged_len(e: &Event) -> u64 {
    16 + e.encoded_len() as u64
}

#[test]
fn the_whole_event_lives_in_the_log_and_round_trips_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let sent = full_event("evt_1", &body);
    let (id, seq) = {
        let store = open(&dir);
        let c = commit(&store, sent.clone(), &[1], 1_000);
        let seq = store.event_seq(&c.event_id).unwrap().unwrap();
        (c.event_id, seq)
    };
    let store = open(&dir);
    let got = store.event(seq).unwrap().unwrap();
    assert_eq!(got.event.as_ref(), Some(&sent), "every field, headers too");
    assert_eq!((got.id.as_str(), got.body_len()), (id.as_str(), 5000));
    let detail = store.get_event(&id).unwrap().unwrap();
    assert_eq!(detail.event.event.as_ref(), Some(&sent));

    // sled holds the summary only: no headers, body, method, path, query
    // or client address.
    let raw = raw_record(&store, seq);
    let summary = raw.event.clone().unwrap();
    assert_eq!(
        summary,
        Event {
            source: "stripe".into(),
            received_at_ms: 1_700_000_000_123,
            provider_event_id: "evt_1".into(),
            event_type: "invoice.paid".into(),
            request_id: "req-42".into(),
            ..Default::default()
        }
    );
    assert_eq!((raw.body_len, raw.body_ref), (5000, None));
    let r = raw.event_ref.unwrap();
    assert_eq!(u64::from(r.len), sent.encoded_len() as u64);
    assert!(
        store.events.get(seq_key(seq)).unwrap().unwrap().len() < 200,
        "the record in sled is small"
    );
    assert_eq!(live_count(&store, r.segment), Some(1));
    let segment = dir
        .path()
        .join("data/bodies")
        .join(crate::store::bodies::segment_name(r.segment));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        logged_len(&sent)
    );
    assert!(store.size_on_disk().unwrap() >= store.db.size_on_disk().unwrap() + logged_len(&sent));
    // The summaries come from sled and say the same.
    let listed = store
        .list_events(&EventQuery::default(), &PageRequest::default())
        .unwrap();
    assert_eq!(listed.items[0].event, raw);
    assert_eq!(listed.items[0].event.body_len(), 5000);
    assert_eq!(store.event_summary(&id).unwrap().unwrap().event, raw);
    assert!(store.event_summary("evt_unknown").unwrap().is_none());

    // An empty body still has headers worth keeping: it goes to the log too.
    let empty = commit(&store, full_event("evt_2", b""), &[1], 1_000);
    let empty_seq = store.event_seq(&empty.event_id).unwrap().unwrap();
    assert!(raw_record(&store, empty_seq).event_ref.is_some());
    let got = store.event(empty_seq).unwrap().unwrap().event.unwrap();
    assert_eq!((got.body.len(), got.headers.len()), (0, 3));
}

/// Writes a record as an earlier version did, with a delivered job.
fn insert_old_record(store: &SledStore, old: &StoredEvent) {
    store
        .events
        .insert(seq_key(old.seq), old.encode_to_vec())
        .unwrap();
    store
        .event_ids
        .insert(old.id.as_bytes(), &seq_key(old.seq))
        .unwrap();
    let job = JobState {
        seq: old.seq,
        dest: 1,
        status: JobStatus::Delivered as i32,
        finished_ms: 1_000,
        ..Default::default()
    };
    store
        .jobs
        .insert(
            job_key(JobRef {
                seq: old.seq,
                dest: 1,
            }),
            job.encode_to_vec(),
        )
        .unwrap();
}

/// The record at `seq` (id `id`) reads back as `sent` by seq, by id and in
/// a listing (whose body length is `body_len`), and the sweep removes it
/// once it is old enough.
fn reads_whole_then_expires(store: &SledStore, seq: u64, id: &str, sent: &Event, body_len: u64) {
    assert_eq!(
        store.event(seq).unwrap().unwrap().event.as_ref(),
        Some(sent)
    );
    let detail = store.get_event(id).unwrap().unwrap();
    assert_eq!(detail.event.event.as_ref(), Some(sent));
    let listed = store
        .list_events(&EventQuery::default(), &PageRequest::default())
        .unwrap();
    assert_eq!(listed.items[0].event.body_len(), body_len);
    assert_eq!(store.sweep(10_000, KEEP_1S, 0, 100).unwrap().removed, 1);
    assert!(store.event(seq).unwrap().is_none());
}

#[test]
fn a_record_with_an_inline_body_as_older_versions_wrote_still_reads_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let seq = store.db.generate_id().unwrap();
    let sent = full_event("old", b"inline bytes");
    insert_old_record(
        &store,
        &StoredEvent {
            id: "evt_old".into(),
            seq,
            event: Some(sent.clone()),
            stored_at_ms: 1_000,
            destinations: vec![1],
            ..Default::default()
        },
    );

    reads_whole_then_expires(&store, seq, "evt_old", &sent, 12);
    assert!(store.bodies.segments().unwrap().is_empty());
}

#[test]
fn a_record_with_only_its_body_in_the_log_as_the_previous_version_wrote_still_reads_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let seq = store.db.generate_id().unwrap();
    let sent = full_event("prev", b"body in the log");
    let r = store.bodies.append(&[(seq, sent.body.as_slice())]).unwrap()[0];
    store
        .counters
        .insert(
            segment_counter_key(counter::SEGMENT_LIVE, r.segment),
            &1u64.to_be_bytes(),
        )
        .unwrap();
    insert_old_record(
        &store,
        &StoredEvent {
            id: "evt_prev".into(),
            seq,
            event: Some(Event {
                body: Vec::new(),
                ..sent.clone()
            }),
            stored_at_ms: 1_000,
            destinations: vec![1],
            body_ref: Some(r),
            ..Default::default()
        },
    );

    reads_whole_then_expires(&store, seq, "evt_prev", &sent, 15);
    assert_eq!(
        live_count(&store, r.segment),
        None,
        "its segment is counted down"
    );
    // New events go to the log whole beside it.
    let next = commit(&store, full_event("next", b"new"), &[1], 20_000);
    let next_seq = store.event_seq(&next.event_id).unwrap().unwrap();
    assert!(raw_record(&store, next_seq).event_ref.is_some());
    assert_eq!(
        store.event(next_seq).unwrap().unwrap().event.unwrap().body,
        b"new"
    );
}

#[test]
fn listing_summaries_dead_letters_and_sweeps_never_read_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let seqs = commit_batch(
        &store,
        vec![full_event("a", b"first"), full_event("b", b"second")],
        1_000,
    );
    let ids: Vec<String> = seqs.iter().map(|&s| raw_record(&store, s).id).collect();
    let segment = raw_record(&store, seqs[0]).event_ref.unwrap().segment;
    let path = dir
        .path()
        .join("data/bodies")
        .join(crate::store::bodies::segment_name(segment));
    std::fs::remove_file(&path).unwrap();

    // What needs the headers or body says what is wrong ...
    match store.event(seqs[0]) {
        Err(StoreError::Corrupt { what, detail }) => {
            assert_eq!(what, "event");
            assert!(detail.contains("missing"), "{detail}");
        }
        other => panic!("not corrupt: {other:?}"),
    }
    assert!(store.get_event(&ids[0]).is_err());
    // ... and everything else works from sled alone.
    let query = EventQuery {
        source: Some("stripe".into()),
        event_type: Some("invoice.*".into()),
        provider_event_id: Some("b".into()),
        ..Default::default()
    };
    let listed = store.list_events(&query, &PageRequest::default()).unwrap();
    assert_eq!(listed.items.len(), 1);
    let summary = &listed.items[0].event;
    assert_eq!(
        (summary.id.as_str(), summary.body_len()),
        (ids[1].as_str(), 6)
    );
    let e = summary.event.as_ref().unwrap();
    assert_eq!(
        (e.request_id.as_str(), e.received_at_ms),
        ("req-42", 1_700_000_000_123)
    );
    let found = store.event_summary(&ids[0]).unwrap().unwrap();
    assert_eq!((found.event.seq, found.jobs.len()), (seqs[0], 1));

    let job = JobRef {
        seq: seqs[0],
        dest: 1,
    };
    store
        .record_attempt(job, &attempt(1_000, 400), Next::DeadLetter)
        .unwrap();
    let letters = store
        .list_dead_letters(&DeadLetterFilter::default(), &PageRequest::default())
        .unwrap()
        .items;
    assert_eq!(
        (letters[0].event_id.as_str(), letters[0].source.as_str()),
        (ids[0].as_str(), "stripe")
    );
    assert_eq!(letters[0].event_type, "invoice.paid");
    store
        .record_attempt(
            JobRef {
                seq: seqs[1],
                dest: 1,
            },
            &attempt(1_000, 200),
            Next::Delivered,
        )
        .unwrap();
    assert_eq!(store.sweep(100_000, KEEP_1S, 0, 100).unwrap().removed, 2);
    assert!(store.event_summary(&ids[1]).unwrap().is_none());
    // The dedupe keys went with them (from the summary's provider id).
    assert!(!commit(&store, full_event("a", b"again"), &[1], 200_000).duplicate);
}

#[test]
fn error_texts_are_stored_cut_to_a_bound_on_a_char_boundary() {
    assert_eq!(capped("connect error: refused"), "connect error: refused");
    let exact = "x".repeat(MAX_ERROR_BYTES);
    assert_eq!(capped(&exact), exact, "at the bound: kept whole");
    // 'é' is two bytes: 253 bytes of them would split one.
    let long = format!("connect error: {}", "é".repeat(400));
    let cut = capped(&long);
    assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
    assert!(cut.len() > MAX_ERROR_BYTES - 8, "not cut more than needed");
    assert!(cut.ends_with('…'));
    assert!(long.starts_with(cut.trim_end_matches('…')));

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c = commit(&store, event("s", "e1", "t"), &[1], 1_000);
    let job = all_due(&store, 1, 1_000)[0];
    let mut failed = attempt(1_000, 0);
    failed.error = long.clone();
    store
        .record_attempt(job, &failed, Next::RetryAt(2_000))
        .unwrap();
    assert_eq!(store.job(job).unwrap().unwrap().last_error, cut);
    store
        .record_attempt(job, &failed, Next::DeadLetter)
        .unwrap();
    let detail = store.get_event(&c.event_id).unwrap().unwrap();
    let errors: Vec<&str> = detail.deliveries[0]
        .attempts
        .iter()
        .map(|a| a.error.as_str())
        .collect();
    assert_eq!(errors, [cut.as_str(), cut.as_str()]);
    assert_eq!(detail.deliveries[0].job.last_error, cut);
    let letter = detail.deliveries[0].dead_letter.as_ref().unwrap();
    assert_eq!(letter.last_error, cut);
}

#[test]
fn retention_frees_a_segment_only_once_every_event_in_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let body = [7u8; 100];
    // Two events fill a segment: each batch below gets its own.
    let rec = logged_len(&with_body("a1", &body));
    let store = open_small(&dir, 2 * rec);
    let a = commit_batch(
        &store,
        vec![with_body("a1", &body), with_body("a2", &body)],
        1_000,
    );
    let b = commit_batch(
        &store,
        vec![with_body("b1", &body), with_body("b2", &body)],
        1_000,
    );
    let c = commit_batch(&store, vec![with_body("c1", &body)], 1_000);
    let seg = |seq| raw_record(&store, seq).event_ref.unwrap().segment;
    let (sa, sb, sc) = (seg(a[0]), seg(b[0]), seg(c[0]));
    assert_eq!((sa, sb, sc), (a[0], b[0], c[0]), "named by their first seq");
    assert_eq!(store.bodies.segments().unwrap(), vec![sa, sb, sc]);
    assert_eq!(live_count(&store, sb), Some(2));

    // Everything delivered but b2, which stays pending.
    deliver_all(&store, 1_000, &[b[1]]);
    let swept = store.sweep(10_000, KEEP_1S, 0, 100).unwrap();
    assert_eq!(swept.removed, 4);
    assert_eq!(
        store.bodies.segments().unwrap(),
        vec![sb, sc],
        "a's segment is freed; b's keeps its live event, c's is being appended to"
    );
    assert_eq!(live_count(&store, sa), None);
    assert_eq!(live_count(&store, sb), Some(1));
    assert_eq!(live_count(&store, sc), None, "empty but active");
    assert_eq!(body_of(&store, b[1]), body);

    // Once c's segment is rolled over, its emptiness frees it.
    let d = commit_batch(
        &store,
        vec![with_body("d1", &body), with_body("d2", &body)],
        20_000,
    );
    assert_eq!(store.bodies.segments().unwrap(), vec![sb, d[0]]);
    assert_eq!(body_of(&store, d[1]), body);
    assert_eq!(store.bodies.size().unwrap(), 4 * rec);
    deliver_all(&store, 20_000, &[d[0], d[1]]);
    assert_eq!(store.sweep(30_000, KEEP_1S, 0, 100).unwrap().removed, 1);
    assert_eq!(store.bodies.segments().unwrap(), vec![d[0]]);
    assert_eq!(
        store.bodies.size().unwrap(),
        2 * rec,
        "the freed bytes are gone"
    );
}

#[test]
fn a_flipped_byte_in_a_log_segment_is_a_corrupt_error_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let seqs = commit_batch(
        &store,
        vec![
            with_body("x", b"first body"),
            with_body("y", b"second body"),
        ],
        1_000,
    );
    let r = raw_record(&store, seqs[0]).event_ref.unwrap();
    let name = crate::store::bodies::segment_name(r.segment);
    let path = dir.path().join("data/bodies").join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = usize::try_from(r.offset).unwrap() + 16 + 3;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    match store.event(seqs[0]) {
        Err(StoreError::Corrupt { what, detail }) => {
            assert_eq!(what, "event");
            assert!(detail.contains(&name), "names the file: {detail}");
        }
        Err(other) => panic!("an error, but not corrupt: {other}"),
        Ok(e) => panic!("read a damaged body: {e:?}"),
    }
    let id = raw_record(&store, seqs[0]).id;
    assert!(matches!(
        store.get_event(&id),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        body_of(&store, seqs[1]),
        b"second body",
        "its neighbour is fine"
    );
    // What needs only metadata still works: listing, dead-lettering,
    // expiring.
    assert_eq!(
        store
            .list_events(&EventQuery::default(), &PageRequest::default())
            .unwrap()
            .items
            .len(),
        2
    );
    let job = JobRef {
        seq: seqs[0],
        dest: 1,
    };
    let mut failed = attempt(1_000, 0);
    failed.error = "storage record event is corrupt".into();
    store
        .record_attempt(job, &failed, Next::DeadLetter)
        .unwrap();
    let letters = store
        .list_dead_letters(&DeadLetterFilter::default(), &PageRequest::default())
        .unwrap()
        .items;
    assert_eq!(
        (letters.len(), letters[0].event_id.as_str()),
        (1, id.as_str())
    );
    assert_eq!(store.sweep(100_000, KEEP_1S, 0, 100).unwrap().removed, 1);
}

#[test]
fn a_segment_without_a_live_count_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seq = {
        let store = open(&dir);
        let c = commit(&store, with_body("kept", b"kept body"), &[1], 1_000);
        let seq = store.event_seq(&c.event_id).unwrap().unwrap();
        // A crash between the body write and the transaction: bytes in a
        // segment that no record points to.
        let orphan = BodyLog::open(&data, SEGMENT_BYTES, true).unwrap();
        orphan
            .append(&[(seq + 1000, b"never committed".as_slice())])
            .unwrap();
        seq
    };
    let bodies = data.join("bodies");
    std::fs::write(bodies.join("notes.txt"), b"not a segment").unwrap();
    assert_eq!(std::fs::read_dir(&bodies).unwrap().count(), 3);
    let store = open(&dir);
    let kept = raw_record(&store, seq).event_ref.unwrap().segment;
    assert_eq!(
        store.bodies.segments().unwrap(),
        vec![kept],
        "the orphan is gone"
    );
    assert!(
        bodies.join("notes.txt").exists(),
        "other files are left alone"
    );
    assert_eq!(body_of(&store, seq), b"kept body");
    // New bodies go to a new segment, not after the old one's tail.
    let next = commit(&store, with_body("next", b"next body"), &[1], 1_000);
    let next_seq = store.event_seq(&next.event_id).unwrap().unwrap();
    let r = raw_record(&store, next_seq).event_ref.unwrap();
    assert_ne!(r.segment, kept);
    assert_eq!((r.segment, r.offset), (next_seq, 0));
    assert_eq!(body_of(&store, next_seq), b"next body");
}

#[test]
fn batches_over_several_segments_roll_over_and_every_body_reads() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: usize| vec![u8::try_from(i % 256).unwrap(); 200];
    // About three events per segment.
    let segment_bytes = 3 * logged_len(&with_body("e0", &body(0)));
    let store = open_small(&dir, segment_bytes);
    let mut seqs = Vec::new();
    let mut n = 0;
    for size in [1, 2, 10, 1, 4, 3] {
        let batch = (n..n + size)
            .map(|i| with_body(&format!("e{i}"), &body(i)))
            .collect();
        seqs.extend(commit_batch(&store, batch, 1_000));
        n += size;
    }
    let segments = store.bodies.segments().unwrap();
    assert!(segments.len() >= 4, "{segments:?}");
    let mut counted = 0;
    for (i, &seq) in seqs.iter().enumerate() {
        assert_eq!(body_of(&store, seq), body(i), "event {i}");
        let r = raw_record(&store, seq).event_ref.unwrap();
        assert!(segments.contains(&r.segment));
        assert!(r.segment <= seq, "a segment is named by its first seq");
    }
    for &s in &segments {
        counted += live_count(&store, s).unwrap();
    }
    assert_eq!(counted, 21, "every event counted in its segment once");
    // The 10-event batch was not split: one segment holds all of it.
    let batch_segments: HashSet<u64> = seqs[3..13]
        .iter()
        .map(|&s| raw_record(&store, s).event_ref.unwrap().segment)
        .collect();
    assert_eq!(batch_segments.len(), 1);
    drop(store);
    let store = open_small(&dir, segment_bytes);
    assert_eq!(
        store.bodies.segments().unwrap(),
        segments,
        "all kept across a reopen"
    );
    assert_eq!(body_of(&store, seqs[20]), body(20));
}
