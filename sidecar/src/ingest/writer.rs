//! The group-commit writer: one task takes everything that has arrived,
//! commits it in one blocking batch (one transaction per event, one flush
//! for all), then acks every waiter and wakes the destinations that got
//! work. One flush per batch is what makes durable ingest fast. It also
//! refuses work it cannot keep: a full queue, or free disk under the floor.

use std::collections::HashMap;
use std::sync::Arc;

use edgehook_proto::v1::Event;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::activity::{Activity, Feed};
use crate::routing::Router;
use crate::store::{Committed, DestId, NewEvent, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("ingest queue full")]
    Full,
    #[error("free disk space is under the configured floor")]
    DiskFull,
    #[error("writer stopped")]
    Closed,
    #[error(transparent)]
    Store(Arc<StoreError>),
}

struct Pending {
    event: Event,
    reply: oneshot::Sender<Result<Committed, SubmitError>>,
}

/// A handle for submitting events; clones share the one writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Pending>,
}

/// What the writer needs besides the store.
pub struct WriterConfig {
    pub router: Router,
    pub wakers: HashMap<DestId, Arc<Notify>>,
    pub capacity: usize,
    pub max_batch: usize,
    /// Refuse a batch when the data directory has less free space (0: off).
    pub min_free_disk_bytes: u64,
    pub feed: Feed,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Writer {
    /// Starts the writer. It stops once every `Writer` handle is dropped and
    /// the queue is drained.
    pub fn spawn(store: Arc<dyn Store>, config: WriterConfig) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let task = tokio::spawn(run(rx, store, config));
        (Writer { tx }, task)
    }

    pub async fn submit(&self, event: Event) -> Result<Committed, SubmitError> {
        self.enqueue(event)?.wait().await
    }

    /// Queues an event without waiting for its commit; events enqueued
    /// together share a group commit.
    pub fn enqueue(&self, event: Event) -> Result<Ticket, SubmitError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .try_send(Pending { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        Ok(Ticket(done))
    }
}

/// A queued event's commit, to wait for.
pub struct Ticket(oneshot::Receiver<Result<Committed, SubmitError>>);

impl Ticket {
    pub async fn wait(self) -> Result<Committed, SubmitError> {
        self.0.await.map_err(|_| SubmitError::Closed)?
    }
}

/// Whether the data directory has room; a failure to ask counts as room,
/// since the commit itself will then say what is wrong.
fn has_room(store: &dyn Store, floor: u64) -> bool {
    floor == 0 || store.available_space().map_or(true, |free| free >= floor)
}

async fn run(mut rx: mpsc::Receiver<Pending>, store: Arc<dyn Store>, config: WriterConfig) {
    let WriterConfig {
        router,
        wakers,
        max_batch,
        min_free_disk_bytes,
        feed,
        metrics,
        ..
    } = config;
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let pending = std::mem::take(&mut batch);
        if !has_room(store.as_ref(), min_free_disk_bytes) {
            tracing::warn!(
                batch = pending.len(),
                floor_bytes = min_free_disk_bytes,
                "free disk space is under the floor; refusing events"
            );
            for p in pending {
                let _ = p.reply.send(Err(SubmitError::DiskFull));
            }
            continue;
        }
        let now_ms = crate::clock::now_ms();
        let mut woken: Vec<DestId> = Vec::new();
        let mut replies = Vec::with_capacity(pending.len());
        let mut news = Vec::with_capacity(pending.len());
        for p in pending {
            let destinations = router.destinations(&p.event);
            woken.extend(destinations.iter().map(|d| d.dest));
            news.push(NewEvent {
                event: p.event,
                destinations,
                now_ms,
            });
            replies.push(p.reply);
        }
        let size = news.len();
        let ingested: Vec<(String, String)> = news
            .iter()
            .map(|n| (n.event.source.clone(), n.event.event_type.clone()))
            .collect();
        let store = store.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || store.commit(news)).await;
        tracing::debug!(
            batch = size,
            elapsed_us = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match result {
            Ok(Ok(committed)) => {
                metrics.group_commit(size, started.elapsed());
                for ((reply, c), (source, event_type)) in
                    replies.into_iter().zip(committed).zip(ingested)
                {
                    metrics.ingested(&source, c.duplicate);
                    feed.publish(Activity::Ingested {
                        event_id: c.event_id.clone(),
                        source,
                        event_type,
                        duplicate: c.duplicate,
                    });
                    let _ = reply.send(Ok(c));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, batch = size, "group commit failed; nothing in it was acked");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(SubmitError::Store(e.clone())));
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "group commit task failed");
                for reply in replies {
                    let _ = reply.send(Err(SubmitError::Closed));
                }
            }
        }
        woken.sort_unstable();
        woken.dedup();
        for dest in woken {
            if let Some(n) = wakers.get(&dest) {
                n.notify_one();
            }
        }
    }
}
