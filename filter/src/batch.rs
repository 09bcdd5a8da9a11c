//! Per-worker batching of publishes. A gRPC call costs far more than
//! verifying a signature, so with `sidecar.batch` set a worker gathers the
//! events of the requests that finished within one tick and sends them as
//! one `PublishBatch` call; each waiting request is answered from its own
//! result in the batch ack. Plain Rust: the glue feeds it contexts, events
//! and acks, and carries the replies out.

use std::collections::HashMap;
use std::time::Duration;

use edgehook_proto::v1::{PublishBatchAck, publish_result};
use prost::Message;

use crate::reply::{Reason, Reply};

/// A request waiting for its event to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The proxy-wasm context of the HTTP stream.
    pub context: u32,
    /// The matched source (for the metrics).
    pub source: usize,
    /// When the request's headers arrived (for the time histogram).
    pub started_ns: u64,
}

/// What one tick sends: the encoded `EventBatch` and who waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub message: Vec<u8>,
    pub waiting: Vec<Waiting>,
}

#[derive(Debug, Default)]
pub struct Batcher {
    /// Encoded `Event`s not sent yet, with their requests.
    queue: Vec<(Waiting, Vec<u8>)>,
    /// Calls in flight, by token.
    in_flight: HashMap<u32, Vec<Waiting>>,
}

/// `EventBatch.events` is field 1, length-delimited: the encoded events go
/// in as they are, without decoding them again.
const EVENTS_KEY: u8 = 0x0a;

impl Batcher {
    pub fn push(&mut self, waiting: Waiting, event: Vec<u8>) {
        self.queue.push((waiting, event));
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next call to make, of at most `max_events` events, oldest first.
    pub fn take(&mut self, max_events: usize) -> Option<Outgoing> {
        if self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(max_events.max(1));
        let mut message = Vec::new();
        let mut waiting = Vec::with_capacity(n);
        for (w, event) in self.queue.drain(..n) {
            message.push(EVENTS_KEY);
            prost::encoding::encode_varint(event.len() as u64, &mut message);
            message.extend_from_slice(&event);
            waiting.push(w);
        }
        Some(Outgoing { message, waiting })
    }

    /// The call for `waiting` is in flight under `token`.
    pub fn sent(&mut self, token: u32, waiting: Vec<Waiting>) {
        self.in_flight.insert(token, waiting);
    }

    /// The answer for the call `token`: each waiting request with its reply.
    /// Only a result that is an ack with an id is a 2xx; a missing or
    /// undecodable one, or a failed call, is a 503 for everyone in it.
    pub fn answered(&mut self, token: u32, ack: Option<&[u8]>) -> Vec<(Waiting, Reply)> {
        let Some(waiting) = self.in_flight.remove(&token) else {
            return Vec::new();
        };
        let results = ack
            .and_then(|bytes| PublishBatchAck::decode(bytes).ok())
            .map(|a| a.results)
            .unwrap_or_default();
        let mut results = results.into_iter();
        waiting
            .into_iter()
            .map(|w| {
                let reply = match results.next().and_then(|r| r.result) {
                    Some(publish_result::Result::Ack(a)) if !a.event_id.is_empty() => {
                        Reply::accepted(&a.event_id, a.duplicate)
                    }
                    _ => Reply::reject(Reason::SidecarUnavailable, None),
                };
                (w, reply)
            })
            .collect()
    }
}

/// Measures, once, how often the batch tick really comes. Envoy's timers
/// read libevent's clock, which is CLOCK_MONOTONIC_COARSE unless
/// `EVENT_PRECISE_TIMER=1` is in Envoy's environment; on a kernel ticking
/// at 250 Hz a 1 ms tick then comes every 4 ms or so, and every parked
/// request waits that much longer, silently.
#[derive(Debug, Default)]
pub struct TickPace {
    first_ns: u64,
    ticks: u32,
    measured: bool,
}

/// Ticks measured: long enough to average out a busy loop iteration, short
/// enough to tell within a second of startup.
pub const TICKS_MEASURED: u32 = 200;

impl TickPace {
    /// Counts a tick at `now_ns()`; after `TICKS_MEASURED` ticks it answers
    /// once with their mean period. The clock is read only until then: the
    /// tick runs every millisecond for the VM's whole life.
    pub fn tick(&mut self, now_ns: impl FnOnce() -> u64) -> Option<Duration> {
        if self.measured {
            return None;
        }
        let now_ns = now_ns();
        if self.ticks == 0 {
            self.first_ns = now_ns;
        }
        if self.ticks < TICKS_MEASURED {
            self.ticks += 1;
            return None;
        }
        self.measured = true;
        Some(Duration::from_nanos(
            now_ns.saturating_sub(self.first_ns) / u64::from(TICKS_MEASURED),
        ))
    }
}

/// Whether ticks `mean` apart are late for `period`: at least twice it and
/// at least 1 ms more (Envoy's timers count whole milliseconds).
pub fn tick_is_late(mean: Duration, period: Duration) -> bool {
    mean >= period.saturating_mul(2) && mean >= period.saturating_add(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgehook_proto::v1::{
        Event, EventBatch, PublishAck, PublishError, PublishResult, publish_result::Result as One,
    };

    fn waiting(context: u32) -> Waiting {
        Waiting {
            context,
            source: 0,
            started_ns: 0,
        }
    }

    fn event(n: u8) -> Vec<u8> {
        Event {
            source: "s".into(),
            body: vec![n; usize::from(n)],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn takes_at_most_max_events_oldest_first_as_a_valid_event_batch() {
        let mut b = Batcher::default();
        assert!(b.take(10).is_none());
        for n in 1..=5 {
            b.push(waiting(u32::from(n)), event(n));
        }
        let first = b.take(3).unwrap();
        assert_eq!(
            first.waiting.iter().map(|w| w.context).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let batch = EventBatch::decode(first.message.as_slice()).unwrap();
        let bodies: Vec<usize> = batch.events.iter().map(|e| e.body.len()).collect();
        assert_eq!(bodies, [1, 2, 3]);
        let rest = b.take(3).unwrap();
        assert_eq!(rest.waiting.len(), 2);
        assert!(b.is_empty() && b.take(3).is_none());
    }

    #[test]
    fn each_request_gets_its_own_result_and_anything_missing_is_a_503() {
        let mut b = Batcher::default();
        for c in 1..=3 {
            b.push(waiting(c), event(1));
        }
        let out = b.take(10).unwrap();
        b.sent(7, out.waiting);
        let ack = |id: &str, duplicate| PublishResult {
            result: Some(One::Ack(PublishAck {
                event_id: id.into(),
                duplicate,
            })),
        };
        let acks = PublishBatchAck {
            results: vec![
                ack("evt_a", false),
                PublishResult {
                    result: Some(One::Error(PublishError {
                        code: 8,
                        message: "full".into(),
                    })),
                },
            ],
        }
        .encode_to_vec();
        let replies = b.answered(7, Some(&acks));
        let statuses: Vec<(u32, u32)> =
            replies.iter().map(|(w, r)| (w.context, r.status)).collect();
        assert_eq!(statuses, [(1, 202), (2, 503), (3, 503)]);
        assert!(String::from_utf8_lossy(&replies[0].1.body).contains("evt_a"));
        assert!(b.answered(7, Some(&acks)).is_empty(), "answered once");
    }

    #[test]
    fn a_failed_call_is_a_503_for_everyone_in_it() {
        let mut b = Batcher::default();
        b.push(waiting(1), event(1));
        b.push(waiting(2), event(2));
        let out = b.take(10).unwrap();
        b.sent(9, out.waiting);
        let replies = b.answered(9, None);
        assert!(replies.iter().all(|(_, r)| r.status == 503));
        assert_eq!(replies.len(), 2);
        assert!(b.answered(1, None).is_empty(), "unknown token");
    }

    /// Feeds `TickPace` ticks `every` apart until it answers.
    fn measure(every: Duration) -> (Option<Duration>, u32) {
        let mut pace = TickPace::default();
        let start = 1_700_000_000_000_000_000u64;
        let every = u64::try_from(every.as_nanos()).unwrap();
        for i in 0..=TICKS_MEASURED {
            if let Some(mean) = pace.tick(|| start + every * u64::from(i)) {
                // Once only, and without reading the clock again.
                assert_eq!(
                    pace.tick(|| unreachable!("the clock is read once measured")),
                    None
                );
                return (Some(mean), i);
            }
        }
        (None, TICKS_MEASURED)
    }

    #[test]
    fn the_mean_tick_period_is_measured_once_after_the_sample() {
        assert_eq!(
            measure(Duration::from_micros(4_300)),
            (Some(Duration::from_micros(4_300)), TICKS_MEASURED)
        );
    }

    #[test]
    fn a_tick_is_late_at_twice_its_period_and_a_millisecond_more() {
        let ms = Duration::from_millis;
        assert!(tick_is_late(Duration::from_micros(4_300), ms(1)));
        assert!(!tick_is_late(Duration::from_micros(1_080), ms(1)));
        // Twice a 1 ms period but not 1 ms late: whole-millisecond timers.
        assert!(!tick_is_late(Duration::from_micros(1_900), ms(1)));
        assert!(!tick_is_late(ms(7), ms(5)));
        assert!(tick_is_late(ms(10), ms(5)));
    }

    #[test]
    fn a_clock_that_steps_back_reads_as_no_time_passed() {
        let mut pace = TickPace::default();
        assert_eq!(pace.tick(|| u64::MAX), None);
        for _ in 1..TICKS_MEASURED {
            assert_eq!(pace.tick(|| 0), None);
        }
        assert_eq!(pace.tick(|| 0), Some(Duration::ZERO));
    }
}
