//! What is happening, as it happens: new events and attempt outcomes on a
//! broadcast channel, for the admin API's `Tail` and anything else that
//! wants to watch. Nobody listening costs nothing; a slow listener misses
//! entries (it is told how many) and never holds up ingest or delivery.

use tokio::sync::broadcast;

use crate::store::{AttemptRecord, DestId};

/// How many entries a listener may fall behind before it misses some.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Ingested {
        event_id: String,
        source: String,
        event_type: String,
        duplicate: bool,
    },
    Attempted {
        event_id: String,
        seq: u64,
        dest: DestId,
        attempt: AttemptRecord,
    },
}

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Activity>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Feed {
    pub fn publish(&self, a: Activity) {
        // No listener is fine.
        let _ = self.tx.send(a);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Activity> {
        self.tx.subscribe()
    }
}
