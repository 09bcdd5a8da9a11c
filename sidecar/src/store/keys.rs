//! Key layouts. Numbers are big-endian so that sled's byte order is numeric
//! order: a scan of the due-queue comes out earliest first, a scan of the
//! events oldest first, and a reverse scan newest first.

/// A destination's stable number; 0 is never a destination (it keys the
/// global counters).
pub type DestId = u32;

/// One event's delivery to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobRef {
    /// The event's ingest sequence number.
    pub seq: u64,
    pub dest: DestId,
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn read_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?))
}

/// `seq | dest`: jobs and dead letters. All of an event's jobs share the
/// prefix `seq`; the dead letters come out in ingest order.
pub fn job_key(job: JobRef) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&job.seq.to_be_bytes());
    k[8..].copy_from_slice(&job.dest.to_be_bytes());
    k
}

pub fn read_job_key(k: &[u8]) -> Option<JobRef> {
    if k.len() != 12 {
        return None;
    }
    Some(JobRef {
        seq: read_seq(k)?,
        dest: u32::from_be_bytes(k[8..12].try_into().ok()?),
    })
}

/// `dest | rank | seq`: the due-queue. `rank` is the next-attempt time, or 0
/// for an ordered destination's jobs, which then queue in ingest order and
/// keep their due time in the job state.
pub fn due_key(dest: DestId, rank: u64, seq: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&dest.to_be_bytes());
    k[4..12].copy_from_slice(&rank.to_be_bytes());
    k[12..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// (dest, rank, seq) of a due-queue key.
pub fn read_due_key(k: &[u8]) -> Option<(DestId, u64, u64)> {
    if k.len() != 20 {
        return None;
    }
    Some((
        u32::from_be_bytes(k[..4].try_into().ok()?),
        u64::from_be_bytes(k[4..12].try_into().ok()?),
        u64::from_be_bytes(k[12..20].try_into().ok()?),
    ))
}

/// `seq | dest | n`: an event's attempts, per destination, in order.
pub fn attempt_key(job: JobRef, n: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..12].copy_from_slice(&job_key(job));
    k[12..].copy_from_slice(&n.to_be_bytes());
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

/// `dest | counter`; dest 0 holds the global counters.
pub fn counter_key(dest: DestId, counter: u8) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&dest.to_be_bytes());
    k[4] = counter;
    k
}

/// `0 | code | segment`: a per-segment counter among the global ones; the
/// longer key keeps it apart from `counter_key`'s.
pub fn segment_counter_key(code: u8, segment: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&counter_key(0, code));
    k[5..].copy_from_slice(&segment.to_be_bytes());
    k
}

/// The segment of a `segment_counter_key`.
pub fn read_segment_counter_key(k: &[u8]) -> Option<u64> {
    if k.len() != 13 {
        return None;
    }
    Some(u64::from_be_bytes(k[5..13].try_into().ok()?))
}

/// Times are unix ms; keys hold them unsigned (a time before 1970 sorts first).
pub fn rank_of(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_destination_then_time_then_sequence() {
        let a = due_key(1, 5, 9);
        let b = due_key(1, 6, 1);
        let c = due_key(2, 0, 0);
        assert!(a < b && b < c);
        assert_eq!(read_due_key(&a), Some((1, 5, 9)));
        assert_eq!(read_due_key(b"short"), None);
    }

    #[test]
    fn job_keys_group_by_event_and_round_trip() {
        let j = JobRef { seq: 7, dest: 3 };
        assert_eq!(read_job_key(&job_key(j)), Some(j));
        assert!(job_key(j) < job_key(JobRef { seq: 7, dest: 4 }));
        assert!(job_key(JobRef { seq: 7, dest: 9 }) < job_key(JobRef { seq: 8, dest: 1 }));
        assert!(attempt_key(j, 2).starts_with(&job_key(j)));
        assert!(attempt_key(j, 2) < attempt_key(j, 10));
    }

    #[test]
    fn segment_counter_keys_sit_under_their_code_and_round_trip() {
        let k = segment_counter_key(20, 1 << 40);
        assert!(k.starts_with(&counter_key(0, 20)));
        assert_eq!(read_segment_counter_key(&k), Some(1 << 40));
        assert!(segment_counter_key(20, 9) < segment_counter_key(20, 10));
        assert_eq!(read_segment_counter_key(&counter_key(0, 20)), None);
    }
}
