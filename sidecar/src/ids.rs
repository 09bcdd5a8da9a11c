//! Event ids. With a provider event id the id is derived from
//! (source, provider id), so a provider's retry that lands on another
//! gateway replica carries the same `webhook-id` downstream; without one it
//! is a time-ordered UUIDv7.

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub fn event_id(source: &str, provider_event_id: &str) -> String {
    let uuid = if provider_event_id.is_empty() {
        Uuid::now_v7()
    } else {
        let mut h = Sha256::new();
        h.update(b"edgehook.v1.event-id\0");
        h.update(source.as_bytes());
        h.update([0]);
        h.update(provider_event_id.as_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::new_v8(bytes)
    };
    format!("evt_{}", uuid.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct_per_source() {
        assert_eq!(event_id("stripe", "evt_1"), event_id("stripe", "evt_1"));
        assert_ne!(event_id("stripe", "evt_1"), event_id("github", "evt_1"));
        assert_ne!(event_id("s", ""), event_id("s", ""));
        assert!(event_id("s", "").starts_with("evt_"));
    }
}
