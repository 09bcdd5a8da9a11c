//! Ingest: the gRPC service the Envoy filter publishes to. It acks an event
//! only once the group-commit writer has it on disk, and refuses with
//! RESOURCE_EXHAUSTED when the writer is behind, so the edge answers 503
//! rather than accept what it cannot keep.

mod writer;

pub use writer::{SubmitError, Writer, WriterConfig};

use edgehook_proto::v1::ingest_server::Ingest;
use edgehook_proto::v1::{
    Event, EventBatch, PublishAck, PublishBatchAck, PublishError, PublishResult, publish_result,
};
use tonic::{Request, Response, Status};

pub struct IngestService {
    writer: Writer,
}

impl IngestService {
    pub fn new(writer: Writer) -> Self {
        IngestService { writer }
    }
}

fn status(e: SubmitError) -> Status {
    match e {
        SubmitError::Full => Status::resource_exhausted("ingest queue full"),
        SubmitError::DiskFull => {
            Status::resource_exhausted("free disk space is under the configured floor")
        }
        SubmitError::Closed => Status::unavailable("shutting down"),
        SubmitError::Store(e) => {
            tracing::error!(error = %e, "commit failed");
            Status::unavailable("storage unavailable")
        }
    }
}

fn checked(event: Event) -> Result<Event, Status> {
    if event.source.is_empty() {
        return Err(Status::invalid_argument("event.source is required"));
    }
    Ok(event)
}

fn ack(c: crate::store::Committed) -> PublishAck {
    PublishAck {
        event_id: c.event_id,
        duplicate: c.duplicate,
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish(&self, request: Request<Event>) -> Result<Response<PublishAck>, Status> {
        let event = checked(request.into_inner())?;
        let committed = self.writer.submit(event).await.map_err(status)?;
        Ok(Response::new(ack(committed)))
    }

    async fn publish_batch(
        &self,
        request: Request<EventBatch>,
    ) -> Result<Response<PublishBatchAck>, Status> {
        // Queue them all first, so that they share one group commit.
        let tickets: Vec<Result<_, Status>> = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| self.writer.enqueue(checked(e)?).map_err(status))
            .collect();
        let mut results = Vec::with_capacity(tickets.len());
        for ticket in tickets {
            let stored = match ticket {
                Ok(t) => t.wait().await.map(ack).map_err(status),
                Err(e) => Err(e),
            };
            results.push(PublishResult {
                result: Some(match stored {
                    Ok(a) => publish_result::Result::Ack(a),
                    Err(s) => publish_result::Result::Error(PublishError {
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    }),
                }),
            });
        }
        Ok(Response::new(PublishBatchAck { results }))
    }
}
