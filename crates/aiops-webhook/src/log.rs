//! A segmented append-only log of checksummed records: the format under both the journal of
//! received notifications and the processor's state log.
//!
//! A record on disk is
//!
//! ```text
//! magic 0xA1 | payload length u32 LE | seq u64 LE | crc32 u32 LE of (seq ‖ payload) | payload
//! ```
//!
//! Sequence numbers increase by one from record to record. A directory holds segments named
//! after their first sequence number (`00000000000000000042.seg`); only the last one is written
//! to. Recovery ([`recover`]) reads every segment and cuts the log at the first record that is
//! incomplete or fails its checksum: a torn tail left by a crash mid-write. Everything before the
//! cut is intact, because records are only ever appended.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aiops_core::fsutil::{self, FsError};

const MAGIC: u8 = 0xA1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 1 + 4 + 8 + 4;
/// Largest payload accepted; anything claiming more is garbage (bodies are bounded far lower).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
const SUFFIX: &str = ".seg";

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Appends the encoding of one record to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payloads are bounded far below 4 GiB");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.push(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record occupying the first `len` bytes.
    Record {
        seq: u64,
        payload_at: usize,
        len: usize,
    },
    /// The buffer ends before the record does (more bytes may follow, or it is a torn tail).
    Incomplete,
    /// Not a valid record: bad magic, absurd length or checksum mismatch.
    Corrupt(&'static str),
}

/// Decodes the record at the start of `buf`. Never panics, whatever the bytes.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.is_empty() {
        return Decoded::Incomplete;
    }
    if buf[0] != MAGIC {
        return Decoded::Corrupt("bad magic byte");
    }
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt("record length out of range");
    }
    let seq = u64::from_le_bytes(buf[5..13].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(buf[13..17].try_into().expect("4 bytes"));
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[5..13]);
    h.update(&buf[HEADER_LEN..total]);
    if h.finalize() != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    Decoded::Record {
        seq,
        payload_at: HEADER_LEN,
        len: total,
    }
}

/// Decodes consecutive records from `buf`; returns them and how many bytes they occupy.
pub fn decode_all(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Decoded::Record {
        seq,
        payload_at,
        len,
    } = decode(&buf[at..])
    {
        out.push(Record {
            seq,
            payload: buf[at + payload_at..at + len].to_vec(),
        });
        at += len;
    }
    (out, at)
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The segments in `dir`, sorted by first sequence number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, FsError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| FsError::new("cannot list", dir, e))? {
        let entry = entry.map_err(|e| FsError::new("cannot list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_suffix(SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The sequence number the next appended record gets.
    pub next_seq: u64,
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Records in the log (over all segments).
    pub records: u64,
    /// The first sequence number still in the log (`next_seq` when empty).
    pub first_seq: u64,
}

/// Validates every segment of the log in `dir` (created if missing), cuts torn tails, and
/// returns an [`Appender`] positioned after the last good record. `start_seq` is the sequence
/// number of the first record of an empty log.
pub fn recover(dir: &Path, start_seq: u64) -> Result<(Appender, Recovered), FsError> {
    fsutil::ensure_dir(dir)?;
    let segments = list_segments(dir)?;
    let mut truncated_bytes = 0;
    let mut records = 0;
    let mut next_seq = segments.first().map_or(start_seq, |(f, _)| *f);
    let first_seq = next_seq;
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| FsError::new("cannot read", path, e))?;
        if *first != next_seq {
            tracing::error!(segment = %path.display(), expected = next_seq, "log segment does not continue the previous one");
            next_seq = *first;
        }
        let mut at = 0;
        let mut cut: Option<&'static str> = None;
        loop {
            match decode(&bytes[at..]) {
                Decoded::Record { seq, len, .. } if seq == next_seq => {
                    at += len;
                    next_seq += 1;
                    records += 1;
                }
                Decoded::Record { .. } => {
                    cut = Some("sequence number out of order");
                    break;
                }
                Decoded::Incomplete if at == bytes.len() => break,
                Decoded::Incomplete => {
                    cut = Some("incomplete record");
                    break;
                }
                Decoded::Corrupt(why) => {
                    cut = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = cut {
            let lost = (bytes.len() - at) as u64;
            truncated_bytes += lost;
            if i + 1 == segments.len() {
                tracing::warn!(segment = %path.display(), offset = at, lost, why, "cutting a torn tail left by a crash");
            } else {
                tracing::error!(segment = %path.display(), offset = at, lost, why, "a sealed log segment is damaged; cutting it there");
            }
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| FsError::new("cannot open", path, e))?;
            f.set_len(at as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| FsError::new("cannot truncate", path, e))?;
        }
    }
    let appender = match segments.last() {
        Some((first, path)) => Appender::open(dir, path.clone(), *first, next_seq)?,
        None => Appender::create(dir, next_seq)?,
    };
    Ok((
        appender,
        Recovered {
            next_seq,
            truncated_bytes,
            records,
            first_seq,
        },
    ))
}

/// Writes records to the last segment.
#[derive(Debug)]
pub struct Appender {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Length of the segment up to the last record known to be complete.
    len: u64,
    next_seq: u64,
    first_seq_of_segment: u64,
    /// A failed write left bytes of unknown state after `len`; cut them before writing again.
    dirty_tail: bool,
    buf: Vec<u8>,
}

impl Appender {
    fn create(dir: &Path, first_seq: u64) -> Result<Self, FsError> {
        let path = dir.join(segment_name(first_seq));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| FsError::new("cannot create log segment", &path, e))?;
        fsutil::fsync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            len: 0,
            path,
            file,
            next_seq: first_seq,
            first_seq_of_segment: first_seq,
            dirty_tail: false,
            buf: Vec::new(),
        })
    }

    fn open(dir: &Path, path: PathBuf, first: u64, next_seq: u64) -> Result<Self, FsError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| FsError::new("cannot open log segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| FsError::new("cannot stat", &path, e))?
            .len();
        Ok(Self {
            dir: dir.to_owned(),
            path,
            file,
            len,
            next_seq,
            first_seq_of_segment: first,
            dirty_tail: false,
            buf: Vec::new(),
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the current segment.
    pub fn segment_len(&self) -> u64 {
        self.len
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `payloads` as consecutive records with one write(2) and returns the first
    /// record's sequence number. Not durable until [`Appender::sync`]. On error nothing of the
    /// batch counts: the file is cut back before the next write.
    pub fn write<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<u64, FsError> {
        self.repair()?;
        let first = self.next_seq;
        self.buf.clear();
        let mut seq = first;
        for p in payloads {
            encode(seq, p, &mut self.buf);
            seq += 1;
        }
        if let Err(e) = self.write_buf() {
            self.dirty_tail = true;
            return Err(FsError::new("cannot append to", &self.path, e));
        }
        self.len += self.buf.len() as u64;
        self.next_seq = seq;
        // Large batches (e.g. a snapshot) should not keep their buffer alive.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(first)
    }

    fn write_buf(&mut self) -> io::Result<()> {
        // Positioned writes: a failed or partial earlier write cannot move our offset.
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&self.buf)
    }

    /// Cuts whatever a failed write may have left behind.
    fn repair(&mut self) -> Result<(), FsError> {
        if self.dirty_tail {
            self.file
                .set_len(self.len)
                .map_err(|e| FsError::new("cannot cut a failed write from", &self.path, e))?;
            self.dirty_tail = false;
        }
        Ok(())
    }

    /// fdatasync: every record written so far survives a power loss once this returns Ok.
    /// After an error the records written since the last successful sync must be treated as
    /// lost; the caller forgets them with [`Appender::rewind`].
    pub fn sync(&mut self) -> Result<(), FsError> {
        self.file
            .sync_data()
            .map_err(|e| FsError::new("cannot fsync", &self.path, e))
    }

    /// Forgets records from `seq` on (after a failed sync): they will be cut before the next
    /// write and their sequence numbers reused. Only valid within the current segment.
    pub fn rewind(&mut self, seq: u64, len: u64) {
        if seq >= self.first_seq_of_segment && seq <= self.next_seq && len <= self.len {
            self.next_seq = seq;
            self.len = len;
            self.dirty_tail = true;
        }
    }

    /// Starts a new segment if the current one holds at least `max_len` bytes.
    pub fn rotate_if_over(&mut self, max_len: u64) -> Result<bool, FsError> {
        if self.len < max_len || self.next_seq == self.first_seq_of_segment {
            return Ok(false);
        }
        self.rotate()?;
        Ok(true)
    }

    /// Seals the current segment (it is synced) and starts a new one at `next_seq`.
    pub fn rotate(&mut self) -> Result<(), FsError> {
        if self.next_seq == self.first_seq_of_segment {
            return Ok(());
        }
        self.sync()?;
        *self = Self::create(&self.dir, self.next_seq)?;
        Ok(())
    }

    /// First sequence number of the segment being written.
    pub fn segment_first_seq(&self) -> u64 {
        self.first_seq_of_segment
    }
}

/// Deletes segments that hold only records with sequence numbers below `keep_from`; never the
/// last segment. Returns how many were deleted.
pub fn compact(dir: &Path, keep_from: u64) -> Result<usize, FsError> {
    let segments = list_segments(dir)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        let (next_first, _) = pair[1];
        if next_first <= keep_from {
            fs::remove_file(&pair[0].1)
                .map_err(|e| FsError::new("cannot remove", &pair[0].1, e))?;
            removed += 1;
        } else {
            break;
        }
    }
    if removed > 0 {
        fsutil::fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Reads records in order, starting at a sequence number, while another thread appends.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    next_seq: u64,
    file: Option<(File, PathBuf)>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    at: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
}

/// Reading the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the log in {dir} has no record {seq} although it should (damaged or deleted segment)")]
    Missing { dir: PathBuf, seq: u64 },
}

impl Reader {
    /// A reader whose first record will be `next_seq`.
    pub fn new(dir: &Path, next_seq: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            next_seq,
            file: None,
            buf: Vec::new(),
            at: 0,
            buf_offset: 0,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Forgets buffered bytes past the last record returned: the writer may cut them (after a
    /// failed sync) and reuse their sequence numbers.
    fn drop_read_ahead(&mut self) -> Result<(), ReadError> {
        if let Some((file, path)) = self.file.as_mut()
            && self.at < self.buf.len()
        {
            let pos = self.buf_offset + self.at as u64;
            file.seek(SeekFrom::Start(pos))
                .map_err(|e| FsError::new("cannot seek in", path, e))?;
            self.buf.clear();
            self.at = 0;
            self.buf_offset = pos;
        }
        Ok(())
    }

    /// Reads up to `max` records with sequence numbers up to `upto` (records the writer has
    /// completed). Records before the reader's start are skipped.
    pub fn read(&mut self, upto: u64, max: usize) -> Result<Vec<Record>, ReadError> {
        self.read_bounded(upto, max, usize::MAX)
    }

    /// [`Reader::read`], stopping once the payloads read reach `max_bytes` (at least one record
    /// is returned when one is there, however large).
    pub fn read_bounded(
        &mut self,
        upto: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, ReadError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut reopened = false;
        while self.next_seq <= upto && out.len() < max && bytes < max_bytes {
            if self.file.is_none() {
                self.open_segment_for(self.next_seq)?;
            }
            match decode(&self.buf[self.at..]) {
                Decoded::Record {
                    seq,
                    payload_at,
                    len,
                } => {
                    let start = self.at;
                    self.at += len;
                    if seq < self.next_seq {
                        continue;
                    }
                    if seq > self.next_seq {
                        return Err(ReadError::Missing {
                            dir: self.dir.clone(),
                            seq: self.next_seq,
                        });
                    }
                    bytes += len - payload_at;
                    out.push(Record {
                        seq,
                        payload: self.buf[start + payload_at..start + len].to_vec(),
                    });
                    self.next_seq += 1;
                    reopened = false;
                }
                Decoded::Incomplete | Decoded::Corrupt(_) => {
                    // Need more bytes: from this segment, or the record is in the next one.
                    if self.fill()? {
                        continue;
                    }
                    if reopened {
                        return Err(ReadError::Missing {
                            dir: self.dir.clone(),
                            seq: self.next_seq,
                        });
                    }
                    self.file = None;
                    reopened = true;
                }
            }
        }
        self.drop_read_ahead()?;
        Ok(out)
    }

    /// Reads more of the current segment into the buffer; false at end of file.
    fn fill(&mut self) -> Result<bool, ReadError> {
        let Some((file, path)) = self.file.as_mut() else {
            return Ok(false);
        };
        self.buf.drain(..self.at);
        self.buf_offset += self.at as u64;
        self.at = 0;
        let old = self.buf.len();
        self.buf.resize(old + 64 * 1024, 0);
        let n = file
            .read(&mut self.buf[old..])
            .map_err(|e| FsError::new("cannot read", path, e))?;
        self.buf.truncate(old + n);
        Ok(n > 0)
    }

    /// Opens the segment that should contain `seq` (the last one starting at or before it).
    fn open_segment_for(&mut self, seq: u64) -> Result<(), ReadError> {
        let segments = list_segments(&self.dir)?;
        let Some((_, path)) = segments.iter().rev().find(|(first, _)| *first <= seq) else {
            return Err(ReadError::Missing {
                dir: self.dir.clone(),
                seq,
            });
        };
        let file = File::open(path).map_err(|e| FsError::new("cannot open", path, e))?;
        self.file = Some((file, path.clone()));
        self.buf.clear();
        self.at = 0;
        self.buf_offset = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_rotation_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut app, rec) = recover(dir.path(), 1).unwrap();
        assert_eq!(rec.next_seq, 1);
        for i in 0..10u32 {
            let p = format!("payload {i}");
            app.write([p.as_bytes()]).unwrap();
            app.sync().unwrap();
            app.rotate_if_over(30).unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 3);
        let mut r = Reader::new(dir.path(), 1);
        let got = r.read(10, 100).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[9].payload, b"payload 9");
        compact(dir.path(), 8).unwrap();
        let mut r = Reader::new(dir.path(), 8);
        let got = r.read(10, 100).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [8, 9, 10]);
        drop(app);
        let (app, rec) = recover(dir.path(), 1).unwrap();
        assert_eq!(rec.next_seq, 11);
        assert_eq!(app.next_seq(), 11);
    }
}
