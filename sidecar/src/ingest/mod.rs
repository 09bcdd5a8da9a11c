//! Ingest: the gRPC service the Envoy filter publishes to. It acks an event
//! only once the group-commit writer has it on disk, and refuses with
//! RESOURCE_EXHAUSTED when the writer is behind, so the edge answers 503
//! rather than accept what it cannot keep.

mod writer;

pub use writer::{SubmitError, Writer, WriterConfig};

use edgehook_proto::v1::ingest_server::Ingest;
use edgehook_proto::v1::{Event, PublishAck};
use tonic::{Request, Response, Status};

pub struct IngestService {
    writer: Writer,
}

impl IngestService {
    pub fn new(writer: Writer) -> Self {
        IngestService { writer }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish(&self, request: Request<Event>) -> Result<Response<PublishAck>, Status> {
        let event = request.into_inner();
        if event.source.is_empty() {
            return Err(Status::invalid_argument("event.source is required"));
        }
        match self.writer.submit(event).await {
            Ok(c) => Ok(Response::new(PublishAck {
                event_id: c.event_id,
                duplicate: c.duplicate,
            })),
            Err(SubmitError::Full) => Err(Status::resource_exhausted("ingest queue full")),
            Err(SubmitError::DiskFull) => Err(Status::resource_exhausted(
                "free disk space is under the configured floor",
            )),
            Err(SubmitError::Closed) => Err(Status::unavailable("shutting down")),
            Err(SubmitError::Store(e)) => {
                tracing::error!(error = %e, "commit failed");
                Err(Status::unavailable("storage unavailable"))
            }
        }
    }
}
