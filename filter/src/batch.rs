//! Per-worker batching of publishes. A gRPC call costs far more than
//! verifying a signature, so with `sidecar.batch` set a worker gathers the
//! events of the requests that finished within one tick and sends them as
//! one `PublishBatch` call; each waiting request is answered from its own
//! result in the batch ack. Plain Rust: the glue feeds it contexts, events
//! and acks, and carries the replies out.

use std::collections::HashMap;

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
}
