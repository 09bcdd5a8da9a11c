//! What is stored, as protobuf messages: compact, and fields can be added
//! without breaking what is already on disk.

use edgehook_proto::v1::Event;

/// An event as sled holds it, in one of three layouts, newest first:
/// - `event_ref` set: the whole encoded `Event` is a record in the event
///   log (`store::bodies`), and `event` here keeps only what listing,
///   filtering, dedupe and the admin summary need (`take_summary`), so the
///   headers and body are never in sled;
/// - `body_ref` set: the body alone is in the log, the rest in `event`;
/// - neither: the whole event is inline in `event`.
///
/// `Store::event` and `Store::get_event` return the event whole, whatever
/// the layout; everything else gets the record as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, optional, tag = "3")]
    pub event: Option<Event>,
    #[prost(int64, tag = "4")]
    pub stored_at_ms: i64,
    /// The destinations it was routed to (one job each).
    #[prost(uint32, repeated, tag = "5")]
    pub destinations: Vec<u32>,
    /// Where the body is in the log; `event.body` is then empty.
    #[prost(message, optional, tag = "6")]
    pub body_ref: Option<BodyRef>,
    /// Where the whole encoded event is in the log.
    #[prost(message, optional, tag = "7")]
    pub event_ref: Option<BodyRef>,
    /// The body's length, with `event_ref` (the body is not in sled then).
    #[prost(uint64, tag = "8")]
    pub body_len: u64,
}

/// One record in the log (`store::bodies`).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BodyRef {
    /// The segment file, named by the first seq it holds.
    #[prost(uint64, tag = "1")]
    pub segment: u64,
    /// Where the record (its header, then the bytes) starts.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    /// The bytes' length.
    #[prost(uint32, tag = "3")]
    pub len: u32,
    /// crc32 of the bytes (fixed32: a crc is as long as a varint gets).
    #[prost(fixed32, tag = "4")]
    pub crc: u32,
}

/// What of an event stays in sled when the whole of it goes to the log:
/// the fields the admin summary shows and list filters and dedupe match on.
/// They are taken out of `event`, which must be encoded for the log first.
pub fn take_summary(event: &mut Event) -> Event {
    Event {
        source: std::mem::take(&mut event.source),
        received_at_ms: event.received_at_ms,
        provider_event_id: std::mem::take(&mut event.provider_event_id),
        event_type: std::mem::take(&mut event.event_type),
        request_id: std::mem::take(&mut event.request_id),
        ..Default::default()
    }
}

impl StoredEvent {
    pub fn source(&self) -> &str {
        self.event.as_ref().map_or("", |e| e.source.as_str())
    }
    pub fn event_type(&self) -> &str {
        self.event.as_ref().map_or("", |e| e.event_type.as_str())
    }
    /// The body's length, known without reading the log.
    pub fn body_len(&self) -> u64 {
        if self.event_ref.is_some() {
            return self.body_len;
        }
        match &self.body_ref {
            Some(r) => u64::from(r.len),
            None => self.event.as_ref().map_or(0, |e| e.body.len() as u64),
        }
    }
    /// The log record this event keeps alive, in either layout that has one.
    pub fn log_ref(&self) -> Option<&BodyRef> {
        self.event_ref.as_ref().or(self.body_ref.as_ref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum JobStatus {
    /// In the due-queue (waiting, or in flight).
    Pending = 0,
    Delivered = 1,
    /// In the dead-letter queue.
    Dead = 2,
    /// A dead letter that was purged.
    Purged = 3,
}

/// One event's delivery to one destination, and its history so far.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobState {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(uint32, tag = "2")]
    pub dest: u32,
    #[prost(enumeration = "JobStatus", tag = "3")]
    pub status: i32,
    /// Attempts ever made (they are numbered 1, 2, ...).
    #[prost(uint32, tag = "4")]
    pub attempts: u32,
    /// Attempts since the job was created or last redriven: what the retry
    /// policy counts.
    #[prost(uint32, tag = "5")]
    pub round_attempts: u32,
    /// When the round's first attempt was made; 0 before it.
    #[prost(int64, tag = "6")]
    pub round_started_ms: i64,
    /// When the job is next due (while pending).
    #[prost(int64, tag = "7")]
    pub next_attempt_ms: i64,
    /// Queued in ingest order (rank 0 in the due-queue).
    #[prost(bool, tag = "8")]
    pub ordered: bool,
    #[prost(uint32, tag = "9")]
    pub last_status: u32,
    #[prost(string, tag = "10")]
    pub last_error: String,
    #[prost(int64, tag = "11")]
    pub created_ms: i64,
    #[prost(int64, tag = "12")]
    pub last_attempt_ms: i64,
    /// When it was delivered, dead-lettered or purged.
    #[prost(int64, tag = "13")]
    pub finished_ms: i64,
}

impl JobState {
    pub fn job_status(&self) -> JobStatus {
        JobStatus::try_from(self.status).unwrap_or(JobStatus::Pending)
    }
}

/// One delivery attempt as it happened.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttemptRecord {
    /// 1 for the first attempt of the job.
    #[prost(uint32, tag = "1")]
    pub n: u32,
    #[prost(int64, tag = "2")]
    pub started_ms: i64,
    #[prost(uint32, tag = "3")]
    pub duration_ms: u32,
    /// The HTTP status, 0 when there was no response.
    #[prost(uint32, tag = "4")]
    pub status: u32,
    /// What went wrong ("HTTP 503", "timed out", "connect error: ...").
    #[prost(string, tag = "5")]
    pub error: String,
    /// The start of the receiver's response body.
    #[prost(bytes = "vec", tag = "6")]
    pub response_body: Vec<u8>,
    /// What followed: "delivered", "retry" or "give_up".
    #[prost(string, tag = "7")]
    pub outcome: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeadLetter {
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(uint32, tag = "3")]
    pub dest: u32,
    #[prost(uint32, tag = "4")]
    pub attempts: u32,
    #[prost(uint32, tag = "5")]
    pub last_status: u32,
    #[prost(string, tag = "6")]
    pub last_error: String,
    /// The receiver's last response body, truncated.
    #[prost(bytes = "vec", tag = "7")]
    pub response_body: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub dead_at_ms: i64,
    #[prost(string, tag = "9")]
    pub source: String,
    #[prost(string, tag = "10")]
    pub event_type: String,
    #[prost(int64, tag = "11")]
    pub stored_at_ms: i64,
}

/// A destination's persistent settings changed at run time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DestState {
    #[prost(bool, tag = "1")]
    pub paused: bool,
    #[prost(int64, tag = "2")]
    pub changed_ms: i64,
}
