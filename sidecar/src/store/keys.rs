//! Key layouts. Numbers are big-endian so that sled's byte order is numeric
//! order: a scan of the due-queue comes out earliest first.

/// A destination's stable number.
pub type DestId = u32;

/// A delivery job as it sits in the due-queue: which destination, when it is
/// due, and which event (by ingest sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub dest: DestId,
    pub due_ms: u64,
    pub seq: u64,
}

impl JobKey {
    /// `dest | due_ms | seq`: the due-queue key.
    pub fn due_key(&self) -> [u8; 20] {
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&self.dest.to_be_bytes());
        k[4..12].copy_from_slice(&self.due_ms.to_be_bytes());
        k[12..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn from_due_key(k: &[u8]) -> Option<JobKey> {
        if k.len() != 20 {
            return None;
        }
        Some(JobKey {
            dest: u32::from_be_bytes(k[..4].try_into().ok()?),
            due_ms: u64::from_be_bytes(k[4..12].try_into().ok()?),
            seq: u64::from_be_bytes(k[12..].try_into().ok()?),
        })
    }

    /// `dest | seq`: the key of the job's state and of its dead letter,
    /// stable while the due time moves.
    pub fn job_key(&self) -> [u8; 12] {
        job_key(self.dest, self.seq)
    }
}

pub fn job_key(dest: DestId, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&dest.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `source \0 provider_event_id`: source names cannot hold a NUL.
pub fn dedupe_key(source: &str, provider_event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1 + provider_event_id.len());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(provider_event_id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_destination_then_time_then_sequence() {
        let a = JobKey {
            dest: 1,
            due_ms: 5,
            seq: 9,
        };
        let b = JobKey {
            dest: 1,
            due_ms: 6,
            seq: 1,
        };
        let c = JobKey {
            dest: 2,
            due_ms: 0,
            seq: 0,
        };
        assert!(a.due_key() < b.due_key() && b.due_key() < c.due_key());
        assert_eq!(JobKey::from_due_key(&a.due_key()), Some(a));
        assert_eq!(JobKey::from_due_key(b"short"), None);
    }
}
