//! The event log: events, kept outside sled in append-only segment files
//! under `<data_dir>/bodies/` (the name is from when only bodies went
//! there), while sled holds a summary of each event and a `BodyRef` to its
//! record. A record is the whole encoded `Event` (headers and body
//! included), or for events stored by the previous version its body alone.
//!
//! Why: sled 0.34 rewrites whole leaf nodes and keeps garbage until a
//! segment of its log is at most half live, so ~1 KiB records were stored
//! about 2.3 times over. A record written here once stays written once, and
//! a segment file is freed whole when the last event in it is removed (the
//! store keeps a live count per segment).
//!
//! A segment is named by the first seq it holds, zero-padded so names sort,
//! and rolls over past `SEGMENT_BYTES`. Each record is a header (length,
//! crc32 of the bytes, seq) and the bytes; a read checks all three, so a
//! damaged or misplaced record is a `StoreError::Corrupt` naming the file,
//! never wrong bytes. Nothing is ever appended to a segment written before
//! the log was opened, or after a failed write: its tail may be torn, so
//! the next append starts a new segment instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use super::records::BodyRef;

/// Where a segment rolls over. Large enough that a 1,000,000-event backlog
/// is a few dozen files, small enough that one long-kept event pins little.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The log's directory inside the data directory.
pub const BODIES_DIR: &str = "bodies";

/// len (u32) | crc32 (u32) | seq (u64), big-endian.
const HEADER: usize = 16;

/// Read handles kept open; a 1,000,000-event backlog of 1 KiB bodies spans
/// about 70 segments, and the dispatcher reads mostly the oldest ones.
const MAX_READERS: usize = 64;

const SUFFIX: &str = ".seg";

pub struct BodyLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Whether `sync` is in use: then segments are fdatasynced as they are
    /// retired and new directory entries are remembered for the next sync.
    fsync: bool,
    writer: Mutex<Writer>,
    readers: Mutex<Readers>,
}

struct Writer {
    active: Option<Active>,
    /// Directories whose entries changed since the last sync.
    dirs_to_sync: Vec<PathBuf>,
    /// Segments no longer appended to, not yet handed to `take_retired`.
    retired: Vec<u64>,
}

struct Active {
    id: u64,
    file: File,
    len: u64,
}

#[derive(Default)]
struct Readers {
    /// segment → (handle, last use)
    files: HashMap<u64, (Arc<File>, u64)>,
    tick: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change to the guarded state is one assignment, so a panic while
    // holding the lock cannot leave it half-changed.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn segment_name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl BodyLog {
    /// Opens (creating it if needed) `<data_dir>/bodies`. No segment is
    /// active until the first append.
    pub fn open(data_dir: &Path, segment_bytes: u64, fsync: bool) -> io::Result<BodyLog> {
        let dir = data_dir.join(BODIES_DIR);
        let mut dirs_to_sync = Vec::new();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            if fsync {
                dirs_to_sync.push(data_dir.to_path_buf());
            }
        }
        Ok(BodyLog {
            dir,
            segment_bytes: segment_bytes.max(1),
            fsync,
            writer: Mutex::new(Writer {
                active: None,
                dirs_to_sync,
                retired: Vec::new(),
            }),
            readers: Mutex::new(Readers::default()),
        })
    }

    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// The segment files present, in order; other files are not ours and
    /// are left alone.
    pub fn segments(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(id) = entry?.file_name().to_str().and_then(parse_segment_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The segment appends go to, once there is one.
    pub fn active(&self) -> Option<u64> {
        lock(&self.writer).active.as_ref().map(|a| a.id)
    }

    /// Segments that stopped being appended to since the last call.
    pub fn take_retired(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.writer).retired)
    }

    /// Appends one record per item with a single write, rolling over to a
    /// new segment first when the batch would take the active one past the
    /// size limit (a batch is never split, so a segment exceeds the limit
    /// only by a batch larger than the limit). Not durable until `sync`.
    pub fn append(&self, items: &[(u64, &[u8])]) -> io::Result<Vec<BodyRef>> {
        let Some(&(first_seq, _)) = items.first() else {
            return Ok(Vec::new());
        };
        let total: usize = items.iter().map(|(_, b)| HEADER + b.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut refs = Vec::with_capacity(items.len());
        for &(seq, bytes) in items {
            let len = u32::try_from(bytes.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "body over 4 GiB"))?;
            let crc = crc32fast::hash(bytes);
            refs.push(BodyRef {
                segment: 0,
                offset: buf.len() as u64,
                len,
                crc,
            });
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc.to_be_bytes());
            buf.extend_from_slice(&seq.to_be_bytes());
            buf.extend_from_slice(bytes);
        }
        let mut w = lock(&self.writer);
        if w.active
            .as_ref()
            .is_some_and(|a| a.len > 0 && a.len + buf.len() as u64 > self.segment_bytes)
        {
            self.retire(&mut w)?;
        }
        let mut active = match w.active.take() {
            Some(a) => a,
            None => self.create(first_seq)?,
        };
        let (id, at) = (active.id, active.len);
        if let Err(e) = active.file.write_all_at(&buf, at) {
            // Part of the batch may be on disk: never write after it.
            w.retired.push(id);
            return Err(e);
        }
        active.len += buf.len() as u64;
        w.active = Some(active);
        if self.fsync && at == 0 {
            // A new file: its directory entry must be durable too.
            w.dirs_to_sync.push(self.dir.clone());
        }
        for r in &mut refs {
            r.segment = id;
            r.offset += at;
        }
        Ok(refs)
    }

    fn create(&self, first_seq: u64) -> io::Result<Active> {
        // create_new: an existing file of that name is not ours to extend.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.segment_path(first_seq))?;
        Ok(Active {
            id: first_seq,
            file,
            len: 0,
        })
    }

    fn retire(&self, w: &mut Writer) -> io::Result<()> {
        if let Some(a) = &w.active {
            // Every append so far is then durable even if a later `sync`
            // only reaches the next segment.
            if self.fsync {
                a.file.sync_data()?;
            }
            w.retired.push(a.id);
        }
        w.active = None;
        Ok(())
    }

    /// Makes every append so far durable: fdatasync of the active segment,
    /// and of the directories that gained a file. Holding the writer lock
    /// throughout means that when this returns, whatever was appended
    /// before it was called is on disk, whichever caller synced it.
    pub fn sync(&self) -> io::Result<()> {
        let mut w = lock(&self.writer);
        if let Some(a) = &w.active {
            a.file.sync_data()?;
        }
        while let Some(dir) = w.dirs_to_sync.last() {
            File::open(dir)?.sync_all()?;
            w.dirs_to_sync.pop();
        }
        Ok(())
    }

    /// The record of event `seq`, checked against its header and crc; a
    /// failed check is `StoreError::Corrupt` with `what`.
    pub fn read(&self, seq: u64, r: &BodyRef, what: &'static str) -> Result<Vec<u8>, StoreError> {
        let path = self.segment_path(r.segment);
        let corrupt = |reason: String| StoreError::Corrupt {
            what,
            detail: format!("{}: {reason} (event {seq})", path.display()),
        };
        let file = match self.reader(r.segment) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt("the segment file is missing".into()));
            }
            Err(e) => return Err(StoreError::Io(e)),
        };
        // Checked before allocating: a bad length must not become a huge
        // buffer.
        let end = r.offset + HEADER as u64 + u64::from(r.len);
        if end > file.metadata()?.len() {
            return Err(corrupt(format!(
                "{} bytes at offset {} run past the end of the file",
                r.len, r.offset
            )));
        }
        let mut buf = vec![0u8; HEADER + r.len as usize];
        match file.read_exact_at(&mut buf, r.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(corrupt(format!("truncated at offset {}", r.offset)));
            }
            Err(e) => return Err(StoreError::Io(e)),
        }
        let field = |at: usize, n: usize| -> u64 {
            buf[at..at + n]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let (len, crc, found_seq) = (field(0, 4), field(4, 4), field(8, 8));
        if len != u64::from(r.len) || crc != u64::from(r.crc) || found_seq != seq {
            return Err(corrupt(format!(
                "the record header at offset {} does not match (length {len}, seq {found_seq})",
                r.offset
            )));
        }
        let body = buf.split_off(HEADER);
        if crc32fast::hash(&body) != r.crc {
            return Err(corrupt(format!(
                "checksum mismatch in the {} bytes at offset {}",
                r.len, r.offset
            )));
        }
        Ok(body)
    }

    fn reader(&self, id: u64) -> io::Result<Arc<File>> {
        let mut readers = lock(&self.readers);
        readers.tick += 1;
        let tick = readers.tick;
        if let Some((file, used)) = readers.files.get_mut(&id) {
            *used = tick;
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(self.segment_path(id))?);
        if readers.files.len() >= MAX_READERS
            && let Some(lru) = readers
                .files
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&k, _)| k)
        {
            readers.files.remove(&lru);
        }
        readers.files.insert(id, (Arc::clone(&file), tick));
        Ok(file)
    }

    /// Deletes a segment file; false (and nothing done) for the active
    /// segment, which later appends still go to. Checked under the writer
    /// lock, so a segment cannot become active while it is deleted.
    pub fn remove_segment(&self, id: u64) -> io::Result<bool> {
        let w = lock(&self.writer);
        if w.active.as_ref().is_some_and(|a| a.id == id) {
            return Ok(false);
        }
        lock(&self.readers).files.remove(&id);
        match std::fs::remove_file(self.segment_path(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes in segment files.
    pub fn size(&self) -> io::Result<u64> {
        let mut total = 0;
        for id in self.segments()? {
            match std::fs::metadata(self.segment_path(id)) {
                Ok(m) => total += m.len(),
                // Freed between the listing and now.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &tempfile::TempDir, segment_bytes: u64) -> BodyLog {
        BodyLog::open(dir.path(), segment_bytes, true).unwrap()
    }

    #[test]
    fn bodies_round_trip_and_a_reopened_log_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let log = log(&dir, SEGMENT_BYTES);
            let refs = log
                .append(&[(7, b"seven".as_slice()), (8, b"".as_slice()), (9, b"nine")])
                .unwrap();
            log.sync().unwrap();
            assert_eq!(log.active(), Some(7));
            assert!(refs.iter().all(|r| r.segment == 7));
            assert_eq!(log.read(7, &refs[0], "event body").unwrap(), b"seven");
            assert_eq!(log.read(8, &refs[1], "event body").unwrap(), b"");
            assert_eq!(log.read(9, &refs[2], "event body").unwrap(), b"nine");
            refs
        };
        let log = log(&dir, SEGMENT_BYTES);
        assert_eq!(log.active(), None, "nothing appended since the open");
        assert_eq!(log.read(9, &first[2], "event body").unwrap(), b"nine");
        let more = log.append(&[(10, b"ten".as_slice())]).unwrap();
        assert_eq!(more[0].segment, 10, "not appended after an old tail");
        assert_eq!(log.segments().unwrap(), vec![7, 10]);
        assert_eq!(log.read(10, &more[0], "event body").unwrap(), b"ten");
        assert_eq!(log.take_retired(), Vec::<u64>::new());
    }

    #[test]
    fn segments_roll_over_at_the_limit_and_names_sort() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two 16-byte bodies (32 bytes each with the header).
        let log = log(&dir, 64);
        let body = [0xabu8; 16];
        let mut refs = Vec::new();
        for seq in [5u64, 6, 7, 8, 9, 100] {
            refs.push((seq, log.append(&[(seq, body.as_slice())]).unwrap()[0]));
        }
        let segments: Vec<u64> = refs.iter().map(|(_, r)| r.segment).collect();
        assert_eq!(segments, [5, 5, 7, 7, 9, 9]);
        assert_eq!(log.take_retired(), vec![5, 7]);
        assert_eq!(log.segments().unwrap(), vec![5, 7, 9]);
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(BODIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [segment_name(5), segment_name(7), segment_name(9)],
            "lexical order is numeric order"
        );
        assert!(segment_name(9) < segment_name(10));
        for (seq, r) in &refs {
            assert_eq!(log.read(*seq, r, "event body").unwrap(), body);
        }
        // A batch bigger than the limit is not split: it gets a segment.
        let big = [1u8; 100];
        let batch = log.append(&[(200, big.as_slice()), (201, &big)]).unwrap();
        assert_eq!((batch[0].segment, batch[1].segment), (200, 200));
        assert_eq!(log.read(201, &batch[1], "event body").unwrap(), big);
        assert_eq!(log.size().unwrap(), 4 * 32 + 2 * 32 + 2 * 116);
    }

    #[test]
    fn a_flipped_byte_or_a_wrong_seq_is_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir, SEGMENT_BYTES);
        let refs = log
            .append(&[(1, b"hello world".as_slice()), (2, b"second")])
            .unwrap();
        assert!(
            matches!(
                log.read(3, &refs[1], "event body"),
                Err(StoreError::Corrupt { .. })
            ),
            "the seq in the header is checked"
        );
        let path = log.segment_path(1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 4] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match log.read(1, &refs[0], "event body") {
            Err(StoreError::Corrupt { what, detail }) => {
                assert_eq!(what, "event body");
                assert!(detail.contains(&segment_name(1)), "{detail}");
                assert!(detail.contains("checksum"), "{detail}");
            }
            other => panic!("not corrupt: {other:?}"),
        }
        assert_eq!(
            log.read(2, &refs[1], "event body").unwrap(),
            b"second",
            "the next one is intact"
        );
        let past_end = BodyRef {
            len: 1 << 30,
            ..refs[1]
        };
        assert!(matches!(
            log.read(2, &past_end, "event body"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_missing_segment_is_corrupt_and_the_active_one_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir, 1);
        let a = log.append(&[(1, b"a".as_slice())]).unwrap()[0];
        let b = log.append(&[(2, b"b".as_slice())]).unwrap()[0];
        assert_eq!(log.active(), Some(2));
        assert!(!log.remove_segment(2).unwrap(), "the active segment stays");
        assert_eq!(log.read(2, &b, "event body").unwrap(), b"b");
        assert!(log.remove_segment(1).unwrap());
        assert!(!log.remove_segment(1).unwrap(), "already gone");
        match log.read(1, &a, "event body") {
            Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("missing")),
            other => panic!("not corrupt: {other:?}"),
        }
    }
}
