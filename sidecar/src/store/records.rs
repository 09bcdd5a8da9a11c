//! What is stored, as protobuf messages: compact, and fields can be added
//! without breaking what is already on disk.

use edgehook_proto::v1::Event;

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
}

/// A delivery job's history so far.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobState {
    #[prost(uint32, tag = "1")]
    pub attempts: u32,
    /// When the first attempt was made; 0 before it.
    #[prost(int64, tag = "2")]
    pub first_attempt_ms: i64,
    #[prost(uint32, tag = "3")]
    pub last_status: u32,
    #[prost(string, tag = "4")]
    pub last_error: String,
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
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
}
