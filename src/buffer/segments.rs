//! The disk buffer's files: an append-only log of segment files, a ledger and a lock file in
//! one directory. Blocking I/O; the buffer thread ([`super`]) is its only user, and the unit
//! and property tests here drive it directly.
//!
//! ```text
//!  DIR/lock                       held (flock) while a process uses the directory
//!  DIR/ledger                     the highest sequence number durable in the database
//!  DIR/00000000000000000001.seg   records 1…, named by the first sequence number they may hold
//!  DIR/00000000000000004711.seg   the segment appended to now
//! ```
//!
//! Every record has a sequence number, increasing through the log. The ledger says up to where
//! the records are durable in the database; a segment whose records are all durable is deleted.
//! Appends always go to a segment this process created: at open, whatever a dead process left
//! (including a torn last record) is only read.
//!
//! Segments are written past the page cache (`O_DIRECT`, [`DirectWriter`]) where the
//! filesystem allows it, else through it. Every write ends with an end marker (`record.rs`),
//! which the next one overwrites: a reader stops there, and a direct write's padding after it
//! is not mistaken for a torn record.
//!
//! Records the writer could not keep in memory (a backlog: an overflow, or what a previous
//! process left) are read back in order from the *read position*, which runs from the first
//! such record to the end of the log.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::SyncPolicy;
use crate::error::BufferError;
use crate::rows::WriteBatch;

use super::record::{
    self, Header, FRAME_HEADER, SEGMENT_FAMILY, SEGMENT_HEADER, SEGMENT_HEADER_V1,
};

/// The ledger's magic, then the sequence number and its checksum.
const LEDGER_MAGIC: [u8; 4] = *b"RTL1";
const LEDGER_LEN: usize = 16;

/// A fully durable segment this small is kept as the active one rather than rolled (a roll
/// creates and deletes a file).
const ROLL_SETTLED_MIN: u64 = 1 << 20;

/// Direct writes (`O_DIRECT`) start and end on multiples of this (a page; every block size
/// Linux filesystems use divides it) and come from memory aligned to it.
const BLOCK: usize = 4096;

/// A direct writer writes at most this much at once, from a buffer of this size it keeps (so
/// its pages stay the process's: see [`DirectWriter`]).
const DIRECT_WINDOW: usize = 1 << 20;

/// Why a record was skipped while reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The last record of a segment ends past the end of the file, or its checksum fails and
    /// nothing valid follows it: the writer stopped mid-record.
    Torn,
    /// A record's checksum or framing fails and valid records follow it.
    Corrupt,
    /// The record checks, but its rows do not decode (an incompatible version wrote it).
    Undecodable,
}

/// A record the log skipped: where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the skipped bytes in the segment.
    pub offset: u64,
    /// How many bytes were skipped.
    pub bytes: u64,
    /// Why.
    pub reason: SkipReason,
}

/// What opening a buffer directory found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Records not yet durable in the database: written first, in order.
    pub records: u64,
    /// Rows (execution and task rows) in those records.
    pub rows: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Records skipped (torn or corrupt); every other record is replayed.
    pub skipped: Vec<Skipped>,
}

/// Records read back from the log, in order.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Each record's sequence number and rows.
    pub(crate) records: Vec<(u64, WriteBatch)>,
    /// Whether the read position reached the end of the log (no backlog is left on disk).
    pub(crate) caught_up: bool,
    /// Records skipped on the way (not reported before).
    pub(crate) skipped: Vec<Skipped>,
}

/// An append in progress: where it starts in the active segment, and how much is written.
#[derive(Debug)]
pub(crate) struct Append {
    at: u64,
    written: u64,
}

/// A place in the log: a segment (by its index in `segments`' naming) and a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    /// The first sequence number it may hold (its file name).
    name: u64,
    path: PathBuf,
    len: u64,
    /// The highest sequence number it holds, if any record.
    last_seq: Option<u64>,
    /// The format version of its records' payloads (see `record.rs`).
    version: u8,
}

/// An open buffer directory.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// Held for the log's life: another process (or another log in this one) cannot open the
    /// directory. The lock goes with the file descriptor, so a killed process frees it.
    _lock: File,
    ledger: File,
    /// Every record with a sequence number up to this is durable in the database.
    settled: u64,
    /// In name order; the last is the active one, appended to.
    segments: VecDeque<Segment>,
    active: File,
    /// The sequence number the next record gets.
    next_seq: u64,
    /// The first record not yet read back, if a backlog is on disk.
    read: Option<Position>,
    /// Skipped records already reported (by `open`), not to report twice.
    reported: HashSet<(u64, u64)>,
    segment_bytes: u64,
    sync: SyncPolicy,
    /// When the oldest unsynced append happened.
    dirty_since: Option<Instant>,
    /// A sync failed: the next append starts a new segment.
    roll_next: bool,
    /// Whether to write segments past the page cache where the filesystem allows it.
    direct_io: bool,
    /// The active segment's direct writer, if it has one.
    direct: Option<DirectWriter>,
}

impl SegmentLog {
    /// Opens (creating it if needed) and locks `dir`, reads what a previous process left and
    /// starts a new segment to append to.
    ///
    /// # Errors
    ///
    /// [`BufferError::Locked`] if another process holds the directory; [`BufferError::Io`] or
    /// [`BufferError::DiskFull`] if it cannot be read or written.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        sync: SyncPolicy,
        direct_io: bool,
    ) -> Result<(SegmentLog, Recovery), BufferError> {
        std::fs::create_dir_all(dir).map_err(|e| BufferError::io("create", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BufferError::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BufferError::Locked {
                    dir: dir.to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BufferError::io("lock", &lock_path, e))
            }
        }
        let ledger_path = dir.join("ledger");
        let ledger = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&ledger_path)
            .map_err(|e| BufferError::io("open", &ledger_path, e))?;
        let settled = read_ledger(&ledger).map_err(|e| BufferError::io("read", &ledger_path, e))?;

        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| BufferError::io("list", dir, e))? {
            let entry = entry.map_err(|e| BufferError::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            // Only names this log writes: 20 digits and `.seg`.
            if let Some(seq) = segment_name(name) {
                names.push(seq);
            }
        }
        names.sort_unstable();

        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut read = None;
        let mut max_seq = settled;
        let mut reported = HashSet::new();
        for name in names {
            let path = segment_path(dir, name);
            let scan = scan(&path, settled)?;
            for skipped in &scan.skipped {
                reported.insert((name, skipped.offset));
            }
            recovery.skipped.extend(scan.skipped);
            if let Some(last) = scan.last_seq {
                max_seq = max_seq.max(last);
            }
            if scan.unsettled == 0 {
                // Everything in it is durable (or unreadable, and reported): not needed.
                std::fs::remove_file(&path).map_err(|e| BufferError::io("delete", &path, e))?;
                continue;
            }
            recovery.records += scan.unsettled;
            recovery.rows += scan.unsettled_rows;
            recovery.bytes += scan.unsettled_bytes;
            if read.is_none() {
                read = scan.first_unsettled.map(|offset| Position {
                    segment: name,
                    offset,
                });
            }
            segments.push_back(Segment {
                name,
                path,
                len: scan.len,
                last_seq: scan.last_seq,
                version: scan.version,
            });
        }
        let next_seq = max_seq + 1;
        let (active, segment) = create_segment(dir, next_seq)?;
        let direct = DirectWriter::start(&segment.path, direct_io)?;
        segments.push_back(segment);
        sync_dir(dir)?;
        let log = SegmentLog {
            dir: dir.to_owned(),
            _lock: lock,
            ledger,
            settled,
            segments,
            active,
            next_seq,
            read,
            reported,
            segment_bytes: segment_bytes.max(1),
            sync,
            dirty_since: None,
            roll_next: false,
            direct_io,
            direct,
        };
        Ok((log, recovery))
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number the next record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to where records are durable in the database.
    pub(crate) fn settled(&self) -> u64 {
        self.settled
    }

    /// Whether records wait on disk to be read back.
    #[cfg(test)]
    pub(crate) fn has_backlog(&self) -> bool {
        self.read.is_some()
    }

    /// Bytes of all segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends encoded records (`frames`, whose sequence numbers run from `first` to `last`).
    /// `backlog`: the writer does not keep these rows in memory; they are read back later by
    /// [`load`](Self::load). The caller syncs (see [`sync`](Self::sync)).
    ///
    /// # Errors
    ///
    /// The write failed: nothing of it stays in the log.
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        frames: &[u8],
        first: u64,
        last: u64,
        backlog: bool,
    ) -> Result<(), BufferError> {
        let mut append = self.begin_append(first, last)?;
        if let Err(e) = self.write_part(&mut append, &mut frames.to_vec()) {
            self.abort_append(&mut append);
            return Err(e);
        }
        self.commit_append(append, last, backlog);
        Ok(())
    }

    /// Starts an append of records `first..=last`, written in parts by
    /// [`write_part`](Self::write_part) (so a large append needs no buffer of its size) and
    /// made part of the log by [`commit_append`](Self::commit_append).
    ///
    /// # Errors
    ///
    /// The records do not follow the log's, or a new segment could not be started.
    pub(crate) fn begin_append(&mut self, first: u64, last: u64) -> Result<Append, BufferError> {
        if first < self.next_seq || last < first {
            return Err(BufferError::io(
                "append to",
                &self.active_path(),
                std::io::Error::other(format!(
                    "records {first}..={last} do not follow {}",
                    self.next_seq
                )),
            ));
        }
        let needs_roll = self.roll_next
            || self
                .segments
                .back()
                .is_some_and(|s| s.last_seq.is_some() && s.len >= self.segment_bytes);
        if needs_roll {
            self.roll(first)?;
        }
        let at = self.segments.back().map_or(0, |s| s.len);
        Ok(Append { at, written: 0 })
    }

    /// Writes the next part of an append (whole records), at the segment's known length
    /// (whatever the file's cursor), followed by an end marker the next part overwrites (in
    /// one write, unless a direct write needs several windows). `frames` is as it was
    /// afterwards.
    ///
    /// # Errors
    ///
    /// The write failed: the caller gives the append up ([`abort_append`](Self::abort_append)).
    pub(crate) fn write_part(
        &mut self,
        append: &mut Append,
        frames: &mut Vec<u8>,
    ) -> Result<(), BufferError> {
        let len = frames.len();
        let at = append.at + append.written;
        let written = match self.direct.as_mut() {
            Some(direct) => direct.write(at, frames),
            None => {
                frames.extend_from_slice(&record::end_marker());
                let written = self.active.write_all_at(frames, at);
                frames.truncate(len);
                written
            }
        };
        written.map_err(|e| BufferError::io("append to", &self.active_path(), e))?;
        append.written += len as u64;
        Ok(())
    }

    /// Gives up an append (a write or an encoding failed): what of it was written is cut back,
    /// so the next append starts on a record boundary (a failed cut leaves records readers
    /// skip as torn, or replay: every write is idempotent), and with a direct writer, whose
    /// copy of the segment's last block is not the file's any more, the next append starts a
    /// new segment.
    pub(crate) fn abort_append(&mut self, append: &mut Append) {
        let _ = self.active.set_len(append.at);
        self.roll_next |= self.direct.is_some();
        append.written = 0;
    }

    /// Makes a written append part of the log.
    pub(crate) fn commit_append(&mut self, append: Append, last: u64, backlog: bool) {
        let Some(segment) = self.segments.back_mut() else {
            return;
        };
        segment.len = append.at + append.written;
        segment.last_seq = Some(last);
        self.next_seq = last + 1;
        if backlog && self.read.is_none() {
            self.read = Some(Position {
                segment: segment.name,
                offset: append.at,
            });
        }
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Whether the policy syncs after every append.
    pub(crate) fn syncs_every_write(&self) -> bool {
        self.sync == SyncPolicy::EveryWrite
    }

    /// Forces appended bytes to the disk if the policy's interval has passed since the first
    /// unsynced append. Returns when the next sync is due, if one is pending.
    ///
    /// # Errors
    ///
    /// The sync failed.
    pub(crate) fn sync_if_due(&mut self) -> Result<Option<Instant>, BufferError> {
        let Some(since) = self.dirty_since else {
            return Ok(None);
        };
        let due = match self.sync {
            SyncPolicy::EveryWrite => since,
            SyncPolicy::Interval(every) => since + every,
        };
        if Instant::now() >= due {
            self.sync()?;
            return Ok(None);
        }
        Ok(Some(due))
    }

    /// Forces appended bytes to the disk now.
    ///
    /// # Errors
    ///
    /// The sync failed.
    pub(crate) fn sync(&mut self) -> Result<(), BufferError> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        if let Err(e) = self.active.sync_data() {
            // The kernel may have dropped the pages it could not write and report success
            // next time: what follows goes to a fresh segment.
            self.roll_next = true;
            return Err(BufferError::io("sync", &self.active_path(), e));
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Reads back the next records of the backlog, in order, as long as they stay within
    /// `max_rows` rows and `max_bytes` on disk; with `oversize_ok`, the first record even if
    /// it is larger (so that no record is too large to ever be read back).
    ///
    /// # Errors
    ///
    /// A segment cannot be read.
    pub(crate) fn load(
        &mut self,
        max_rows: usize,
        max_bytes: u64,
        oversize_ok: bool,
    ) -> Result<Loaded, (Loaded, BufferError)> {
        let mut loaded = Loaded::default();
        match self.load_into(&mut loaded, max_rows, max_bytes, oversize_ok) {
            // What was read before an error is returned with it: the read position is past
            // those records, and only those.
            Err(e) => Err((loaded, e)),
            Ok(()) => {
                loaded.caught_up = self.read.is_none();
                Ok(loaded)
            }
        }
    }

    fn load_into(
        &mut self,
        loaded: &mut Loaded,
        max_rows: usize,
        max_bytes: u64,
        oversize_ok: bool,
    ) -> Result<(), BufferError> {
        let (mut rows, mut bytes) = (0usize, 0u64);
        // One reader per segment read, kept across its records.
        let mut reader: Option<(u64, FrameReader)> = None;
        while let Some(at) = self.read {
            let Some(index) = self.segments.iter().position(|s| s.name == at.segment) else {
                // The segment is gone (deleted when durable): nothing more to read in it.
                self.read = self.next_segment_start(at.segment);
                continue;
            };
            let segment = &self.segments[index];
            let version = segment.version;
            let active = index + 1 == self.segments.len();
            if at.offset >= segment.len {
                if active {
                    self.read = None;
                    break;
                }
                self.read = self.next_segment_start(at.segment);
                continue;
            }
            let fresh = !matches!(&reader, Some((name, r)) if *name == at.segment && r.pos == at.offset && r.len == segment.len);
            if fresh {
                reader = Some((
                    at.segment,
                    FrameReader::open(&segment.path, at.offset, segment.len)?,
                ));
            }
            let Some((_, frames)) = reader.as_mut() else {
                continue;
            };
            if let Some(header) = frames.peek()? {
                let over = rows + header.rows as usize > max_rows
                    || bytes + header.frame_len() > max_bytes;
                // Only a record waits for the next load: bytes that do not check (a torn
                // record whose length fits in the file, as a direct write's padding allows)
                // are skipped now, or the read position would stay behind them while the
                // writer, told nothing is ahead but them, appends to memory.
                if over && !(oversize_ok && loaded.records.is_empty()) && frames.record_at_pos()? {
                    break;
                }
            }
            let item = frames.next()?;
            let end = frames.pos;
            self.read = Some(Position {
                segment: at.segment,
                offset: end,
            });
            match item {
                None => {}
                Some(Item::Skipped(skipped))
                    if self.reported.insert((at.segment, skipped.offset)) =>
                {
                    loaded.skipped.push(skipped);
                }
                Some(Item::Skipped(_)) => {}
                Some(Item::Record { header, payload }) => match record::decode(&payload, version) {
                    Ok(batch) => {
                        rows += header.rows as usize;
                        bytes += header.frame_len();
                        loaded.records.push((header.seq, batch));
                    }
                    Err(_) => {
                        if self.reported.insert((at.segment, at.offset)) {
                            loaded.skipped.push(Skipped {
                                segment: frames.path.clone(),
                                offset: at.offset,
                                bytes: header.frame_len(),
                                reason: SkipReason::Undecodable,
                            });
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Records that every record up to `through` is durable in the database: the ledger says
    /// so, and segments holding nothing later are deleted.
    ///
    /// # Errors
    ///
    /// The ledger or a segment could not be written or deleted.
    pub(crate) fn settle(&mut self, through: u64) -> Result<(), BufferError> {
        if through <= self.settled {
            return Ok(());
        }
        self.settled = through;
        write_ledger(&self.ledger, through)
            .map_err(|e| BufferError::io("write", &self.dir.join("ledger"), e))?;
        let active = self.segments.back().map(|s| s.name);
        let read_in = self.read.map(|r| r.segment);
        let settled = |s: &Segment| s.last_seq.is_none_or(|last| last <= through);
        // The active segment, once all durable and big enough, makes way for a fresh one.
        if let Some(segment) = self.segments.back() {
            if settled(segment) && segment.last_seq.is_some() && segment.len >= ROLL_SETTLED_MIN {
                self.roll(self.next_seq)?;
            }
        }
        let active = self.segments.back().map(|s| s.name).or(active);
        while let Some(front) = self.segments.front() {
            if Some(front.name) == active || Some(front.name) == read_in || !settled(front) {
                break;
            }
            let path = front.path.clone();
            std::fs::remove_file(&path).map_err(|e| BufferError::io("delete", &path, e))?;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Syncs, and deletes the segments if every record is durable (the directory is then
    /// empty but for the lock and the ledger). Consumes the log: the lock goes with it.
    ///
    /// # Errors
    ///
    /// As [`sync`](Self::sync) and [`settle`](Self::settle).
    pub(crate) fn close(mut self) -> Result<(), BufferError> {
        self.sync()?;
        let all_durable = self.read.is_none()
            && self
                .segments
                .iter()
                .all(|s| s.last_seq.is_none_or(|last| last <= self.settled));
        if all_durable {
            for segment in self.segments.drain(..) {
                std::fs::remove_file(&segment.path)
                    .map_err(|e| BufferError::io("delete", &segment.path, e))?;
            }
        }
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .back()
            .map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    /// Where the segment after `name` starts, if there is one.
    fn next_segment_start(&self, name: u64) -> Option<Position> {
        self.segments
            .iter()
            .find(|s| s.name > name)
            .map(|s| Position {
                segment: s.name,
                offset: SEGMENT_HEADER.len() as u64,
            })
    }

    /// Closes the active segment (synced, if it can be) and starts a new one named `first`.
    fn roll(&mut self, first: u64) -> Result<(), BufferError> {
        if let Err(e) = self.sync() {
            tracing::error!(error = %crate::error::chain(&e), "disk buffer: sync before a new segment failed");
        }
        let (file, segment) = create_segment(&self.dir, first)?;
        let direct = DirectWriter::start(&segment.path, self.direct_io)?;
        sync_dir(&self.dir)?;
        // The writer with its file: an error above leaves both as they were.
        self.direct = direct;
        self.active = file;
        self.segments.push_back(segment);
        self.roll_next = false;
        Ok(())
    }
}

/// The sequence number in a segment's file name: 20 digits, then `.seg`.
fn segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
}

/// Writes a segment past the page cache (`O_DIRECT`), from a buffer this process keeps.
///
/// Buffered writes put every appended byte in a page of the page cache; where those pages are
/// new to the machine (on a virtual machine whose free memory goes back to the host, every
/// page free for a few seconds is), each costs the kernel far more than the copy (400 MB:
/// 0.55–0.79 s of system time into fresh pages, 0.07 s into cached ones), and the writeback
/// after it more again. A direct write costs a copy into this buffer and the device's time,
/// during which only the buffer thread waits (400 MB: 0.06 s of system time). At 400 KB
/// outputs that took the log's cost on the replay from about a fifth to under a tenth
/// (BENCHMARKS.md, session 20261204p). The price: writes start and end on block boundaries,
/// so the segment's last partial block is kept here and written again in front of the next
/// part (a small append writes at least a block), and a part ends with the end marker and
/// zeros to the boundary.
#[derive(Debug)]
struct DirectWriter {
    file: File,
    /// [`DIRECT_WINDOW`] bytes and one block more (a last window's marker and padding),
    /// aligned to [`BLOCK`], fit in it.
    buf: Vec<u8>,
    /// The segment's bytes from its last block boundary to its end.
    tail: Vec<u8>,
}

impl DirectWriter {
    /// A direct writer for a segment just started, if `wanted` and the filesystem takes direct
    /// writes (where it does not, segments are written through the page cache).
    ///
    /// # Errors
    ///
    /// The segment's first block could not be written.
    fn start(path: &Path, wanted: bool) -> Result<Option<DirectWriter>, BufferError> {
        if !wanted {
            return Ok(None);
        }
        let Some(file) = open_direct(path) else {
            return Ok(None);
        };
        let mut writer = DirectWriter {
            file,
            buf: vec![0; DIRECT_WINDOW + 2 * BLOCK],
            tail: SEGMENT_HEADER.to_vec(),
        };
        // The header again (it is in the page cache, which the first direct write of its
        // block must flush) and the end marker. A filesystem that opens with `O_DIRECT` but
        // refuses these writes (a block size over 4 KiB) keeps the page cache: the header and
        // the marker are there already.
        match writer.write(SEGMENT_HEADER.len() as u64, &[]) {
            Ok(()) => Ok(Some(writer)),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::debug!(error = %e, path = %path.display(), "disk buffer: direct writes refused; through the page cache");
                Ok(None)
            }
            Err(e) => Err(BufferError::io("write", path, e)),
        }
    }

    /// Writes `frames` at `at`, the segment's end, and an end marker after them: in windows
    /// of whole blocks, the first starting with the kept tail, the last ending with the marker
    /// and zeros to its block's end.
    fn write(&mut self, at: u64, frames: &[u8]) -> std::io::Result<()> {
        let offset = self.buf.as_ptr().align_offset(BLOCK);
        let window = &mut self.buf[offset..offset + DIRECT_WINDOW + BLOCK];
        // The kept block ends at `at` (an append given up resets it: `abort_append`).
        let Some(mut start) = at.checked_sub(self.tail.len() as u64) else {
            return Err(std::io::Error::other(
                "the kept block is not the segment's end",
            ));
        };
        let mut rest = frames;
        loop {
            let tail = self.tail.len();
            window[..tail].copy_from_slice(&self.tail);
            if tail + rest.len() >= DIRECT_WINDOW {
                // A full window, which ends on a block boundary: nothing of it is kept.
                let take = DIRECT_WINDOW - tail;
                window[tail..DIRECT_WINDOW].copy_from_slice(&rest[..take]);
                self.file.write_all_at(&window[..DIRECT_WINDOW], start)?;
                self.tail.clear();
                start += DIRECT_WINDOW as u64;
                rest = &rest[take..];
                continue;
            }
            let end = tail + rest.len();
            let used = end + FRAME_HEADER;
            let padded = used.div_ceil(BLOCK) * BLOCK;
            window[tail..end].copy_from_slice(rest);
            window[end..used].copy_from_slice(&record::end_marker());
            window[used..padded].fill(0);
            self.file.write_all_at(&window[..padded], start)?;
            let kept = end - end % BLOCK;
            self.tail.clear();
            self.tail.extend_from_slice(&window[kept..end]);
            return Ok(());
        }
    }
}

/// The segment opened for direct writes, where the platform and filesystem allow them.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::debug!(error = %e, path = %path.display(), "disk buffer: no direct writes; through the page cache");
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

fn segment_path(dir: &Path, name: u64) -> PathBuf {
    dir.join(format!("{name:020}.seg"))
}

fn create_segment(dir: &Path, name: u64) -> Result<(File, Segment), BufferError> {
    let path = segment_path(dir, name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| BufferError::io("create", &path, e))?;
    // The header and an end marker (a direct writer writes them again, past the page cache).
    let mut start = SEGMENT_HEADER.to_vec();
    start.extend_from_slice(&record::end_marker());
    file.write_all_at(&start, 0)
        .map_err(|e| BufferError::io("write", &path, e))?;
    let segment = Segment {
        name,
        path,
        len: SEGMENT_HEADER.len() as u64,
        last_seq: None,
        version: 2,
    };
    Ok((file, segment))
}

/// Makes a new or deleted file name durable.
fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BufferError::io("sync", dir, e))
}

fn read_ledger(file: &File) -> std::io::Result<u64> {
    let mut bytes = [0u8; LEDGER_LEN];
    match file.read_exact_at(&mut bytes, 0) {
        Ok(()) => {}
        // A new (or never written) ledger: nothing is known to be durable.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
        Err(e) => return Err(e),
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[4..12]);
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if bytes[..4] != LEDGER_MAGIC || crc32fast::hash(&seq) != crc {
        // A torn or damaged ledger: replay everything on disk (every write is idempotent).
        tracing::warn!("the disk buffer's ledger is damaged; replaying every record on disk");
        return Ok(0);
    }
    Ok(u64::from_le_bytes(seq))
}

fn write_ledger(file: &File, seq: u64) -> std::io::Result<()> {
    let mut bytes = [0u8; LEDGER_LEN];
    bytes[..4].copy_from_slice(&LEDGER_MAGIC);
    bytes[4..12].copy_from_slice(&seq.to_le_bytes());
    bytes[12..].copy_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    // One 16-byte write in place: a torn one fails the checksum and means "replay all".
    file.write_all_at(&bytes, 0)
}

/// What a scan of a segment at open found.
struct Scan {
    len: u64,
    /// 1 or 2, from the segment's header; 0 when the header is damaged (its records are
    /// decoded as either).
    version: u8,
    last_seq: Option<u64>,
    /// Offset of the first record above the ledger.
    first_unsettled: Option<u64>,
    unsettled: u64,
    unsettled_rows: u64,
    unsettled_bytes: u64,
    skipped: Vec<Skipped>,
}

/// Reads a segment through.
fn scan(path: &Path, settled: u64) -> Result<Scan, BufferError> {
    let len = std::fs::metadata(path)
        .map_err(|e| BufferError::io("read", path, e))?
        .len();
    let mut out = Scan {
        len,
        version: 2,
        last_seq: None,
        first_unsettled: None,
        unsettled: 0,
        unsettled_rows: 0,
        unsettled_bytes: 0,
        skipped: Vec::new(),
    };
    let mut header = [0u8; 16];
    let mut file = File::open(path).map_err(|e| BufferError::io("open", path, e))?;
    let read = file.read_exact(&mut header).is_ok();
    let known = &header == SEGMENT_HEADER || &header == SEGMENT_HEADER_V1;
    if &header == SEGMENT_HEADER_V1 {
        out.version = 1;
    } else if !known {
        out.version = 0;
    }
    if read && !known && header.starts_with(SEGMENT_FAMILY) {
        // Another version's segment: not this code's to read, nor to delete.
        return Err(BufferError::Format {
            path: path.to_owned(),
        });
    }
    if !read || !known {
        // A damaged header: reported, and the records after it are still read.
        out.skipped.push(Skipped {
            segment: path.to_owned(),
            offset: 0,
            bytes: len.min(SEGMENT_HEADER.len() as u64),
            reason: if read {
                SkipReason::Corrupt
            } else {
                SkipReason::Torn
            },
        });
        if !read {
            return Ok(out);
        }
    }
    let mut reader = FrameReader::open(path, SEGMENT_HEADER.len() as u64, len)?;
    loop {
        let at = reader.pos;
        match reader.next()? {
            None => break,
            Some(Item::Skipped(skipped)) => out.skipped.push(skipped),
            Some(Item::Record { header, .. }) => {
                out.last_seq = Some(out.last_seq.map_or(header.seq, |s| s.max(header.seq)));
                if header.seq > settled {
                    out.first_unsettled.get_or_insert(at);
                    out.unsettled += 1;
                    out.unsettled_rows += u64::from(header.rows);
                    out.unsettled_bytes += header.frame_len();
                }
            }
        }
    }
    // Where what was written ends (a direct write's padding may follow).
    out.len = reader.len;
    Ok(out)
}

/// One thing read from a segment.
enum Item {
    Record { header: Header, payload: Vec<u8> },
    Skipped(Skipped),
}

/// Reads frames of one segment from an offset up to a length (the part known to be written).
///
/// An end marker ends what was written, unless records follow it after all (a machine that
/// lost power may have kept later pages of a write and not its first).
struct FrameReader {
    path: PathBuf,
    file: BufReader<File>,
    /// Where the next frame starts.
    pos: u64,
    /// Where the underlying reader is (it reads ahead; seeks to here are free).
    cursor: u64,
    /// Where reading stops; lowered to the end of what was written once that is found.
    len: u64,
    /// No record starts at or after this offset (found by a search).
    none_after: u64,
}

impl FrameReader {
    fn open(path: &Path, pos: u64, len: u64) -> Result<FrameReader, BufferError> {
        let mut file = File::open(path).map_err(|e| BufferError::io("open", path, e))?;
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| BufferError::io("read", path, e))?;
        Ok(FrameReader {
            path: path.to_owned(),
            file: BufReader::with_capacity(1 << 16, file),
            pos,
            cursor: pos,
            len,
            none_after: u64::MAX,
        })
    }

    /// The next record, or the bytes skipped up to the next one (or to the end).
    fn next(&mut self) -> Result<Option<Item>, BufferError> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let start = self.pos;
        let checked = match self.frame_at(start)? {
            Some((header, payload)) if !header.is_end_marker() => {
                self.pos = start + header.frame_len();
                return Ok(Some(Item::Record { header, payload }));
            }
            Some(_) => true,
            None => false,
        };
        let (end, reason) = match self.resync(start + 1, true)? {
            // Bytes between two records of this segment.
            Some(next) => (next, SkipReason::Corrupt),
            None if checked => {
                // The end marker, and no record after it.
                self.len = start;
                return Ok(None);
            }
            // A record cut short: up to the next end marker or the end.
            None => (
                self.resync(start + 1, false)?.unwrap_or(self.len),
                SkipReason::Torn,
            ),
        };
        self.pos = end;
        Ok(Some(Item::Skipped(Skipped {
            segment: self.path.clone(),
            offset: start,
            bytes: end - start,
            reason,
        })))
    }

    /// The header of the next record, if one seems to start there (not yet checked against its
    /// payload; the next [`next`](Self::next) starts at the same place).
    fn peek(&mut self) -> Result<Option<Header>, BufferError> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let at = self.pos;
        if at + FRAME_HEADER as u64 > self.len {
            return Ok(None);
        }
        // Only the header: `next` reads (and checks) the payload.
        self.seek(at)?;
        let mut bytes = [0u8; FRAME_HEADER];
        self.read_exact(&mut bytes)?;
        Ok(Header::parse(&bytes).filter(|h| at + h.frame_len() <= self.len))
    }

    /// Whether a record (a checked frame, not the end marker) starts at the next position.
    fn record_at_pos(&mut self) -> Result<bool, BufferError> {
        let at = self.pos;
        Ok(self
            .frame_at(at)?
            .is_some_and(|(header, _)| !header.is_end_marker()))
    }

    /// The frame at `at` if its checksum holds (whatever its sequence number).
    fn frame_at(&mut self, at: u64) -> Result<Option<(Header, Vec<u8>)>, BufferError> {
        if at + FRAME_HEADER as u64 > self.len {
            return Ok(None);
        }
        self.seek(at)?;
        let mut bytes = [0u8; FRAME_HEADER];
        self.read_exact(&mut bytes)?;
        let Some(header) = Header::parse(&bytes) else {
            return Ok(None);
        };
        if at + header.frame_len() > self.len {
            return Ok(None);
        }
        let mut payload = vec![0u8; header.len as usize];
        self.read_exact(&mut payload)?;
        Ok(header.matches(&payload).then_some((header, payload)))
    }

    /// The offset of the next checked frame at or after `from`: only of a record if `record`,
    /// else an end marker too.
    fn resync(&mut self, from: u64, record: bool) -> Result<Option<u64>, BufferError> {
        if record && from >= self.none_after {
            return Ok(None);
        }
        let mut at = from;
        let mut window = vec![0u8; 1 << 16];
        while at < self.len {
            self.seek(at)?;
            let want = ((self.len - at) as usize).min(window.len());
            self.read_exact(&mut window[..want])?;
            match record::find_magic(&window[..want]) {
                Some(i) => {
                    let candidate = at + i as u64;
                    match self.frame_at(candidate)? {
                        Some((h, _)) if !record || !h.is_end_marker() => {
                            return Ok(Some(candidate))
                        }
                        Some((h, _)) => at = candidate + h.frame_len(),
                        None => at = candidate + 1,
                    }
                }
                // Keep the last 3 bytes: a magic may straddle two windows.
                None if want > 3 => at += (want - 3) as u64,
                None => break,
            }
        }
        if record {
            self.none_after = self.none_after.min(from);
        }
        Ok(None)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), BufferError> {
        self.file
            .read_exact(buf)
            .map_err(|e| BufferError::io("read", &self.path, e))?;
        self.cursor += buf.len() as u64;
        Ok(())
    }

    fn seek(&mut self, at: u64) -> Result<(), BufferError> {
        if at == self.cursor {
            return Ok(());
        }
        // Relative, so that a seek within what the reader holds keeps its buffer.
        let delta = at as i64 - self.cursor as i64;
        self.file
            .seek_relative(delta)
            .map_err(|e| BufferError::io("read", &self.path, e))?;
        self.cursor = at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{ExecutionRow, TaskRow};
    use std::time::Duration;

    fn rows(tag: &str) -> (Vec<ExecutionRow>, Vec<TaskRow>) {
        super::super::record::tests::rows(2, tag)
    }

    fn frames(first: u64, n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in first..first + n {
            let (e, mut t) = rows(&format!("seq-{seq}"));
            record::encode(&mut out, seq, &e, &mut t).expect("encode");
        }
        out
    }

    fn open(dir: &Path) -> (SegmentLog, Recovery) {
        SegmentLog::open(
            dir,
            4096,
            SyncPolicy::Interval(Duration::from_secs(1)),
            true,
        )
        .expect("open")
    }

    fn seqs(loaded: &Loaded) -> Vec<u64> {
        loaded.records.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = open(dir.path());
        let err =
            SegmentLog::open(dir.path(), 4096, SyncPolicy::EveryWrite, true).expect_err("locked");
        assert!(matches!(err, BufferError::Locked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the buffer directory {} is in use by another process",
                dir.path().display()
            )
        );
        log.close().expect("close");
        let (_again, _) = open(dir.path());
    }

    #[test]
    fn unsettled_records_come_back_after_a_reopen_in_order_and_settled_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, recovery) = open(dir.path());
            assert_eq!(recovery.records, 0);
            assert_eq!(log.next_seq(), 1);
            log.append(&frames(1, 5), 1, 5, false).expect("append");
            log.append(&frames(6, 5), 6, 10, false).expect("append");
            log.settle(4).expect("settle");
            // Dropped without `close`: as a killed process leaves it.
        }
        let (mut log, recovery) = open(dir.path());
        assert_eq!(recovery.records, 6);
        assert_eq!(recovery.rows, 18, "an execution and two task rows each");
        assert!(recovery.skipped.is_empty());
        assert_eq!(log.next_seq(), 11);
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), (5..=10).collect::<Vec<_>>());
        assert!(loaded.caught_up);
        assert_eq!(loaded.records[0].1.tasks[0].output, "seq-5");
    }

    #[test]
    fn segments_roll_at_their_size_and_are_deleted_once_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open(dir.path());
        for seq in 1..=20 {
            log.append(&frames(seq, 1), seq, seq, false)
                .expect("append");
        }
        let count = log.segment_count();
        assert!(count > 3, "4 KiB segments roll: {count}");
        log.settle(20).expect("settle");
        assert_eq!(log.segment_count(), 1, "only the active segment is left");
        log.close().expect("close");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .filter(|n| n.ends_with(".seg"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_backlog_is_read_back_in_pieces_from_where_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open(dir.path());
        log.append(&frames(1, 3), 1, 3, false)
            .expect("in memory too");
        assert!(!log.has_backlog());
        log.append(&frames(4, 3), 4, 6, true).expect("backlog");
        log.append(&frames(7, 3), 7, 9, true).expect("backlog");
        assert!(log.has_backlog());
        // Three rows per record: a budget of 7 rows takes two records.
        let first = log.load(7, u64::MAX, true).expect("load");
        assert_eq!(seqs(&first), vec![4, 5]);
        // A record larger than the budget waits, unless it may go alone.
        let none = log.load(1, u64::MAX, false).expect("load");
        assert!(none.records.is_empty() && !none.caught_up);
        let alone = log.load(1, u64::MAX, true).expect("load");
        assert_eq!(seqs(&alone), vec![6]);
        assert!(!first.caught_up);
        let rest = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&rest), vec![7, 8, 9]);
        assert!(rest.caught_up);
        assert!(!log.has_backlog());
    }

    /// Records 1 to `n` in one segment, as a killed process leaves them: its path and bytes.
    fn written(dir: &Path, n: u64) -> (PathBuf, Vec<u8>) {
        let (mut log, _) =
            SegmentLog::open(dir, 1 << 20, SyncPolicy::EveryWrite, true).expect("open");
        log.append(&frames(1, n), 1, n, false).expect("append");
        let path = log.active_path();
        drop(log);
        let bytes = std::fs::read(&path).expect("read");
        (path, bytes)
    }

    fn reasons(recovery: &Recovery) -> Vec<(u64, SkipReason)> {
        recovery
            .skipped
            .iter()
            .map(|s| (s.offset, s.reason))
            .collect()
    }

    #[test]
    fn a_torn_last_record_and_a_corrupt_one_are_reported_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut bytes) = written(dir.path(), 4);
        let record = frames(1, 1).len();
        // Corrupt a byte inside record 2's payload, and cut record 4 short (the end marker and
        // any padding after it go too).
        let second = SEGMENT_HEADER.len() + record;
        bytes[second + FRAME_HEADER + 5] ^= 0xff;
        bytes.truncate(SEGMENT_HEADER.len() + 4 * record - 7);
        std::fs::write(&path, &bytes).expect("write");

        let (mut log, recovery) = open(dir.path());
        let fourth = SEGMENT_HEADER.len() + 3 * record;
        assert_eq!(
            reasons(&recovery),
            vec![
                (second as u64, SkipReason::Corrupt),
                (fourth as u64, SkipReason::Torn)
            ]
        );
        assert_eq!(recovery.records, 2);
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), vec![1, 3]);
        assert!(loaded.skipped.is_empty(), "reported once, at open");
    }

    #[test]
    fn records_written_after_an_end_marker_that_survived_are_still_read() {
        // A machine that lost power may keep the later pages of a write and not the first:
        // the end marker the write began by overwriting is still there, records follow it.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut bytes) = written(dir.path(), 3);
        let second = SEGMENT_HEADER.len() + frames(1, 1).len();
        bytes[second..second + FRAME_HEADER].copy_from_slice(&record::end_marker());
        std::fs::write(&path, &bytes).expect("write");
        let (mut log, recovery) = open(dir.path());
        assert_eq!(
            reasons(&recovery),
            vec![(second as u64, SkipReason::Corrupt)]
        );
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), vec![1, 3]);
    }

    #[test]
    fn a_version_1_segment_is_still_read_even_with_its_header_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = SEGMENT_HEADER_V1.to_vec();
        for seq in 1..=3 {
            let (e, t) = rows(&format!("seq-{seq}"));
            record::tests::encode_v1(&mut bytes, seq, &e, &t);
        }
        std::fs::write(segment_path(dir.path(), 1), &bytes).expect("write");
        let (mut log, recovery) = open(dir.path());
        assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
        assert_eq!(recovery.records, 3);
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), vec![1, 2, 3]);
        assert_eq!(loaded.records[2].1.tasks[1].output, "seq-3");
        assert_eq!(log.next_seq(), 4);
        drop(log);

        // With its header damaged, its records still decode (as either version).
        let dir = tempfile::tempdir().expect("tempdir");
        bytes[3] ^= 0xff;
        std::fs::write(segment_path(dir.path(), 1), &bytes).expect("write");
        let (mut log, recovery) = open(dir.path());
        assert_eq!(reasons(&recovery), vec![(0, SkipReason::Corrupt)]);
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), vec![1, 2, 3]);
        assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    }

    #[test]
    fn records_around_direct_write_windows_read_back_whole() {
        // Sizes about a window and a block apart: a record spanning windows, a window filled
        // exactly or short of room for the end marker, tails of every length.
        let dir = tempfile::tempdir().expect("tempdir");
        let sizes = [
            DIRECT_WINDOW * 2 + 100,
            DIRECT_WINDOW - 700,
            7,
            BLOCK,
            DIRECT_WINDOW,
            3 * BLOCK + 1,
        ];
        let mut outputs = Vec::new();
        {
            let (mut log, _) =
                SegmentLog::open(dir.path(), 64 << 20, SyncPolicy::EveryWrite, true).expect("open");
            let probe = dir.path().join("probe");
            std::fs::write(&probe, b"").expect("probe");
            assert_eq!(
                log.direct.is_some(),
                open_direct(&probe).is_some(),
                "written directly wherever the filesystem allows it"
            );
            for (i, size) in (1..).zip(sizes) {
                let output: String =
                    std::iter::repeat_n(char::from(b'a' + i as u8), size).collect();
                let (e, mut t) = super::super::record::tests::rows(1, &output);
                let mut frame = Vec::new();
                record::encode(&mut frame, i, &e, &mut t).expect("encode");
                log.append(&frame, i, i, false).expect("append");
                outputs.push(output);
            }
        }
        let (mut log, recovery) = open(dir.path());
        assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), (1..=6).collect::<Vec<_>>());
        for ((_, batch), output) in loaded.records.iter().zip(&outputs) {
            assert!(
                &batch.tasks[0].output == output,
                "an output came back changed"
            );
        }
    }

    #[test]
    fn an_append_given_up_after_a_part_leaves_every_committed_record_readable() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut log, _) =
                SegmentLog::open(dir.path(), 64 << 20, SyncPolicy::EveryWrite, direct)
                    .expect("open");
            log.append(&frames(1, 1), 1, 1, false).expect("append");
            // A part written, then the append fails (a later record would not encode).
            let mut append = log.begin_append(2, 3).expect("begin");
            log.write_part(&mut append, &mut frames(2, 1))
                .expect("part");
            log.abort_append(&mut append);
            log.append(&frames(2, 2), 2, 3, false)
                .expect("the next append");
            drop(log);
            let (mut log, recovery) = open(dir.path());
            assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
            let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
            assert_eq!(seqs(&loaded), vec![1, 2, 3], "direct writes: {direct}");
        }
    }

    #[test]
    fn a_failed_append_leaves_the_log_on_a_record_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open(dir.path());
        log.append(&frames(1, 1), 1, 1, false).expect("append");
        let err = log
            .append(&frames(1, 1), 1, 1, false)
            .expect_err("not after 1");
        assert!(matches!(err, BufferError::Io { .. }));
        log.append(&frames(2, 1), 2, 2, true).expect("append");
        drop(log);
        let (mut log, recovery) = open(dir.path());
        assert!(recovery.skipped.is_empty());
        assert_eq!(
            seqs(&log.load(9, u64::MAX, true).expect("load")),
            vec![1, 2]
        );
    }

    #[test]
    fn another_versions_segment_is_refused_and_kept_and_a_damaged_header_only_skips_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let (mut log, _) = open(dir.path());
            log.append(&frames(1, 3), 1, 3, false).expect("append");
            log.active_path()
        };
        let clean = std::fs::read(&path).expect("read");
        let mut newer = clean.clone();
        newer[..16].copy_from_slice(b"runtally-buffer3");
        std::fs::write(&path, &newer).expect("write");
        let err =
            SegmentLog::open(dir.path(), 4096, SyncPolicy::EveryWrite, true).expect_err("newer");
        assert!(matches!(err, BufferError::Format { .. }), "{err:?}");
        assert!(path.exists(), "refused, not deleted");

        let mut damaged = clean;
        damaged[3] ^= 0xff;
        std::fs::write(&path, &damaged).expect("write");
        let (mut log, recovery) = open(dir.path());
        assert_eq!(recovery.skipped.len(), 1);
        assert_eq!(
            (recovery.skipped[0].offset, recovery.skipped[0].reason),
            (0, SkipReason::Corrupt)
        );
        let loaded = log.load(usize::MAX, u64::MAX, true).expect("load");
        assert_eq!(seqs(&loaded), vec![1, 2, 3]);
    }

    #[test]
    fn only_segment_names_the_log_writes_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("7.seg"), b"not ours").expect("write");
        std::fs::write(dir.path().join("+0000000000000000007.seg"), b"nor this").expect("write");
        let (_log, recovery) = open(dir.path());
        assert_eq!(recovery, Recovery::default());
        assert!(dir.path().join("7.seg").exists(), "left alone");
    }

    mod interleavings {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Debug, Clone)]
        enum Op {
            /// Append this many records; `backlog`: the writer does not keep them.
            Append { n: u64, backlog: bool },
            /// The database acknowledged records up to this share of what may be settled.
            Settle { share: u8 },
            /// Read back up to this many task rows of the backlog.
            Load { rows: usize },
            /// The process dies mid-append (a torn record at the end), then restarts.
            CrashMidWrite,
            /// The process dies between appends, then restarts.
            Restart,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1..4u64, any::<bool>()).prop_map(|(n, backlog)| Op::Append { n, backlog }),
                2 => any::<u8>().prop_map(|share| Op::Settle { share }),
                2 => (1..8usize).prop_map(|rows| Op::Load { rows }),
                1 => Just(Op::CrashMidWrite),
                1 => Just(Op::Restart),
            ]
        }

        /// What the log must do: which records exist, which are durable, which wait to be read.
        #[derive(Default)]
        struct Model {
            appended: Vec<u64>,
            settled: u64,
            to_read: VecDeque<u64>,
        }

        impl Model {
            /// Records the writer may report durable: all up to the first one still on disk only.
            fn settleable(&self) -> u64 {
                match self.to_read.front() {
                    Some(first) => first - 1,
                    None => self.appended.last().copied().unwrap_or(0),
                }
            }

            fn restart(&mut self) {
                let settled = self.settled;
                self.to_read = self
                    .appended
                    .iter()
                    .copied()
                    .filter(|s| *s > settled)
                    .collect();
            }
        }

        fn reopen(dir: &Path, direct: bool) -> (SegmentLog, Recovery) {
            SegmentLog::open(dir, 2048, SyncPolicy::EveryWrite, direct).expect("reopen")
        }

        fn check_recovery(recovery: &Recovery, model: &Model) {
            assert_eq!(recovery.records, model.to_read.len() as u64);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn any_interleaving_replays_exactly_the_unacknowledged_records_in_order(
                ops in proptest::collection::vec(op(), 1..40),
                direct in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().expect("tempdir");
                let (mut log, _) = reopen(dir.path(), direct);
                let mut model = Model::default();
                for op in ops {
                    match op {
                        Op::Append { n, backlog } => {
                            let first = log.next_seq();
                            log.append(&frames(first, n), first, first + n - 1, backlog)
                                .expect("append");
                            let seqs = first..first + n;
                            model.appended.extend(seqs.clone());
                            if backlog || !model.to_read.is_empty() {
                                model.to_read.extend(seqs);
                            }
                        }
                        Op::Settle { share } => {
                            let top = model.settleable();
                            if top > model.settled {
                                let through = model.settled
                                    + (top - model.settled) * u64::from(share) / 255;
                                log.settle(through).expect("settle");
                                model.settled = model.settled.max(through);
                            }
                        }
                        Op::Load { rows } => {
                            let loaded = log.load(rows, u64::MAX, true).expect("load");
                            let got = seqs(&loaded);
                            prop_assert_eq!(got.is_empty(), model.to_read.is_empty());
                            for seq in &got {
                                prop_assert_eq!(Some(*seq), model.to_read.pop_front());
                            }
                            for (seq, batch) in &loaded.records {
                                prop_assert_eq!(&batch.tasks[0].output, &format!("seq-{seq}"));
                            }
                            // Caught up only once nothing is left (a skipped tail may still be
                            // ahead of the read position: the next load then says so).
                            if !model.to_read.is_empty() {
                                prop_assert!(!loaded.caught_up);
                            }
                        }
                        Op::CrashMidWrite => {
                            let path = log.active_path();
                            let end = log.segments.back().map_or(0, |s| s.len);
                            drop(log);
                            // Half of a record that never finished (its append never returned),
                            // where the next append goes: over the end marker.
                            let torn = frames(u64::MAX - 1, 1);
                            let file = OpenOptions::new().write(true).open(&path).expect("open");
                            file.write_all_at(&torn[..torn.len() / 2], end).expect("tear");
                            let (reopened, recovery) = reopen(dir.path(), direct);
                            log = reopened;
                            model.restart();
                            check_recovery(&recovery, &model);
                            // This one, and earlier ones whose segments still hold records.
                            let last = recovery.skipped.last().map(|s| s.reason);
                            prop_assert_eq!(last, Some(SkipReason::Torn));
                        }
                        Op::Restart => {
                            drop(log);
                            let (reopened, recovery) = reopen(dir.path(), direct);
                            log = reopened;
                            model.restart();
                            check_recovery(&recovery, &model);
                        }
                    }
                }
                // A last restart reads back exactly the records not acknowledged, in order.
                drop(log);
                let (mut log, recovery) = reopen(dir.path(), direct);
                model.restart();
                check_recovery(&recovery, &model);
                let all = log.load(usize::MAX, u64::MAX, true).expect("load");
                prop_assert_eq!(seqs(&all), Vec::from(model.to_read.clone()));
            }
        }
    }
}
