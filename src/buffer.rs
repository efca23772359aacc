//! The disk buffer: a write-ahead log of every row the writer accepts, on a thread of its own.
//!
//! The writer hands each delivery (a run's rows as its actor produced them) to this thread,
//! which appends it as one checksummed record (`buffer/record.rs`) to a segment file (`buffer/segments.rs`)
//! and hands it back; only then does the writer put the rows in its pending writes, so a row
//! reaches the database after it is on disk (unless the append failed: a full disk, counted
//! and logged; such rows are written from memory). Records the writer does not keep in
//! memory (an overflow, or what a previous process left) form a *backlog*, which the thread
//! reads back in order when the writer asks. Once the writer knows every record up to some
//! sequence number is settled (written to the database, or refused by it and reported), it
//! says so (`Request::Settle`): the ledger moves and segments holding nothing later are
//! deleted.
//!
//! On disk, a directory holds a `lock` file (held while a process uses it: a second one gets
//! [`BufferError::Locked`]), a `ledger` (the last record settled), and segment files
//! `00000000000000000001.seg`, … of records: a 4-byte magic, the payload length, a CRC-32 of
//! the header and payload, the sequence number and row count, then the rows as JSON with the
//! graph's property names; an end marker follows the last. Segments are written past the page
//! cache (`O_DIRECT`) where the filesystem allows it. What opening a directory found is a
//! [`Recovery`].
//!
//! Disk I/O never runs on the writer's thread (where the database writes are driven) nor on
//! the host's: appends, syncs and reads are this thread's. Requests and replies go through
//! unbounded channels, whose contents are bounded by the senders' slots (every row in them
//! holds its slot until the writer has it back).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::config::SyncPolicy;
use crate::error::BufferError;
use crate::inbox::Delivery;
use crate::metrics::Metrics;

pub(crate) mod record;
pub(crate) mod segments;

use segments::{Loaded, SegmentLog};
pub use segments::{Recovery, SkipReason, Skipped};

/// Where and how the buffer keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct BufferSettings {
    pub(crate) dir: PathBuf,
    pub(crate) segment_bytes: u64,
    pub(crate) sync: SyncPolicy,
    /// Write past the page cache where the filesystem allows it.
    pub(crate) direct_io: bool,
}

/// What the writer asks of the buffer thread. Answered in order through [`Reply`].
#[derive(Debug)]
pub(crate) enum Request {
    /// Append these deliveries as records numbered from `first`, one each. `backlog`: the
    /// writer does not keep them in memory (it reads them back with `Load`).
    Append {
        first: u64,
        deliveries: Vec<Delivery>,
        backlog: bool,
    },
    /// Read back the next backlog records within `max_rows` rows and `max_bytes` on disk
    /// (`oversize_ok`: the first one even if larger).
    Load {
        max_rows: usize,
        max_bytes: u64,
        oversize_ok: bool,
    },
    /// Every record up to `through` is durable in the database.
    Settle { through: u64 },
    /// Force what is appended to the disk, and answer.
    Sync {
        done: oneshot::Sender<Result<(), BufferError>>,
    },
    /// Sync, delete what is all durable, release the directory, and answer.
    Close {
        done: oneshot::Sender<Result<(), BufferError>>,
    },
}

/// The buffer thread's answers, in the order of the requests.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An `Append` is done (or failed: `error`). The deliveries come back unless they were a
    /// backlog that is now on disk.
    Appended {
        first: u64,
        last: u64,
        backlog: bool,
        deliveries: Vec<Delivery>,
        error: Option<BufferError>,
    },
    /// What a `Load` read (`error`: it stopped early; what it read is still there).
    Loaded {
        loaded: LoadedRecords,
        error: Option<BufferError>,
    },
}

/// Records read back, for the writer.
#[derive(Debug, Default)]
pub(crate) struct LoadedRecords {
    pub(crate) records: Vec<(u64, crate::rows::WriteBatch)>,
    pub(crate) caught_up: bool,
}

/// The writer's handle on the buffer thread.
#[derive(Debug)]
pub(crate) struct DiskBuffer {
    requests: mpsc::Sender<Request>,
}

/// What opening the buffer gives the writer.
pub(crate) struct Opened {
    pub(crate) buffer: DiskBuffer,
    pub(crate) replies: tokio_mpsc::UnboundedReceiver<Reply>,
    pub(crate) recovery: Recovery,
    /// The sequence number the next record gets.
    pub(crate) next_seq: u64,
    /// Every record up to this is durable in the database.
    pub(crate) settled: u64,
    /// The thread: it ends (and lets go of the directory) once the writer closes it or drops
    /// its handle.
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl DiskBuffer {
    /// Opens (or creates) the directory on a new thread and reads what a previous process left.
    /// The returned future is executor-agnostic.
    ///
    /// # Errors
    ///
    /// [`BufferError::Locked`] if another process has the directory, else an I/O error.
    pub(crate) async fn open(
        settings: BufferSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Opened, BufferError> {
        let (opened_tx, opened_rx) = oneshot::channel();
        let (requests, inbox) = mpsc::channel();
        let (replies_tx, replies) = tokio_mpsc::unbounded_channel();
        let dir = settings.dir.clone();
        let thread = std::thread::Builder::new()
            .name("runtally-buffer".into())
            .spawn(move || {
                let opened = SegmentLog::open(
                    &settings.dir,
                    settings.segment_bytes,
                    settings.sync,
                    settings.direct_io,
                );
                let log = match opened {
                    Ok((log, recovery)) => {
                        let facts = (recovery, log.next_seq(), log.settled());
                        let _ = opened_tx.send(Ok(facts));
                        log
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                BufferThread {
                    log,
                    metrics,
                    replies: replies_tx,
                    frames: Vec::new(),
                    last_error_log: None,
                    errors_unlogged: 0,
                }
                .run(inbox);
            })
            .map_err(|e| BufferError::io("start a thread for", &dir, e))?;
        let (recovery, next_seq, settled) = opened_rx.await.map_err(|_| BufferError::Stopped)??;
        Ok(Opened {
            buffer: DiskBuffer { requests },
            replies,
            recovery,
            next_seq,
            settled,
            thread: Some(thread),
        })
    }

    /// Sends a request (its reply comes through the replies channel).
    ///
    /// # Errors
    ///
    /// [`BufferError::Stopped`] if the thread is gone; the request comes back.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, request: Request) -> Result<(), Request> {
        self.requests.send(request).map_err(|e| e.0)
    }
}

/// The thread's state.
struct BufferThread {
    log: SegmentLog,
    metrics: Arc<Metrics>,
    replies: tokio_mpsc::UnboundedSender<Reply>,
    /// Encoding buffer, reused between appends.
    frames: Vec<u8>,
    /// When a failure was last logged, and how many were counted without a log line since.
    last_error_log: Option<Instant>,
    errors_unlogged: u64,
}

/// At most one ERROR line per this interval for a run of buffer failures.
const ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Records are written in parts of about this size (one `pwrite` each).
const PART_BYTES: usize = 256 << 10;

/// The encoding buffer keeps at most this much capacity between appends.
const FRAMES_KEPT: usize = 4 << 20;

impl BufferThread {
    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        loop {
            let due = match self.log.sync_if_due() {
                Ok(due) => due,
                Err(e) => {
                    self.failed("sync", &e);
                    None
                }
            };
            let request = match due {
                Some(at) => {
                    match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match inbox.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            match request {
                Request::Append {
                    first,
                    deliveries,
                    backlog,
                } => self.append(first, deliveries, backlog),
                Request::Load {
                    max_rows,
                    max_bytes,
                    oversize_ok,
                } => self.load(max_rows, max_bytes, oversize_ok),
                Request::Settle { through } => {
                    if let Err(e) = self.log.settle(through) {
                        self.failed("settle", &e);
                    }
                    self.publish();
                }
                Request::Sync { done } => {
                    let result = self.log.sync();
                    if let Err(e) = &result {
                        self.failed("sync", e);
                    }
                    let _ = done.send(result);
                }
                Request::Close { done } => {
                    let result = self.log.close();
                    let _ = done.send(result);
                    return;
                }
            }
        }
        // The writer is gone without closing (the aggregator was dropped): keep what is on
        // disk, synced, for the next start.
        if let Err(e) = self.log.close() {
            tracing::error!(error = %crate::error::chain(&e), "disk buffer: cannot close");
        }
    }

    fn append(&mut self, first: u64, mut deliveries: Vec<Delivery>, backlog: bool) {
        let last = first + (deliveries.len() as u64).saturating_sub(1);
        let error = self.write(first, &mut deliveries, backlog);
        // A backlog is the writer's only copy once on disk; anything else goes back to it.
        let deliveries = if backlog && error.is_none() {
            Vec::new()
        } else {
            deliveries
        };
        self.publish();
        let _ = self.replies.send(Reply::Appended {
            first,
            last,
            backlog,
            deliveries,
            error,
        });
    }

    /// Encodes and appends; `None` on success. (`deliveries` is only borrowed mutably for the
    /// encoder, which moves outputs out and back.)
    fn write(
        &mut self,
        first: u64,
        deliveries: &mut [Delivery],
        backlog: bool,
    ) -> Option<BufferError> {
        let last = first + (deliveries.len() as u64).saturating_sub(1);
        let mut append = match self.log.begin_append(first, last) {
            Ok(append) => append,
            Err(e) => {
                self.failed("append", &e);
                return Some(e);
            }
        };
        // Encoded a few records at a time and written in parts: no buffer the size of a large
        // append, and no copy of it in fresh memory.
        let mut bytes = 0u64;
        self.frames.clear();
        let count = deliveries.len();
        for (seq, (i, delivery)) in (first..).zip(deliveries.iter_mut().enumerate()) {
            let encoded = match delivery {
                Delivery::Run {
                    execution, tasks, ..
                } => record::encode(
                    &mut self.frames,
                    seq,
                    std::slice::from_ref(execution),
                    tasks,
                ),
                Delivery::Restore(batch) => {
                    record::encode(&mut self.frames, seq, &batch.executions, &mut batch.tasks)
                }
            };
            let part_full = self.frames.len() >= PART_BYTES || i + 1 == count;
            let written = match encoded {
                Ok(()) if !part_full => Ok(()),
                Ok(()) => {
                    let written = self.log.write_part(&mut append, &mut self.frames);
                    bytes += self.frames.len() as u64;
                    self.frames.clear();
                    written
                }
                Err(e) => Err(BufferError::Io {
                    action: "encode a record for",
                    path: self.log_dir(),
                    source: std::io::Error::other(e),
                }),
            };
            if let Err(e) = written {
                // A failed write or encoding gives the append up: its written parts are cut.
                self.log.abort_append(&mut append);
                if self.frames.capacity() > FRAMES_KEPT {
                    self.frames = Vec::new();
                }
                self.failed("append", &e);
                return Some(e);
            }
        }
        if self.frames.capacity() > FRAMES_KEPT {
            self.frames = Vec::new();
        }
        self.log.commit_append(append, last, backlog);
        let m = &self.metrics;
        m.buffer_records_appended
            .fetch_add(deliveries.len() as u64, Relaxed);
        m.buffer_bytes_appended.fetch_add(bytes, Relaxed);
        // The records are in the log (the operating system has them); a failed sync is counted
        // and logged, and the log moves to a new segment, but the append stands.
        if self.log.syncs_every_write() {
            if let Err(e) = self.log.sync() {
                self.failed("sync", &e);
            }
        }
        None
    }

    fn load(&mut self, max_rows: usize, max_bytes: u64, oversize_ok: bool) {
        let (loaded, error) = match self.log.load(max_rows, max_bytes, oversize_ok) {
            Ok(loaded) => (loaded, None),
            Err((loaded, e)) => {
                self.failed("read back", &e);
                (loaded, Some(e))
            }
        };
        let Loaded {
            records,
            caught_up,
            skipped,
        } = loaded;
        report_skipped(&self.metrics, &skipped);
        self.metrics
            .buffer_records_loaded
            .fetch_add(records.len() as u64, Relaxed);
        self.publish();
        let _ = self.replies.send(Reply::Loaded {
            loaded: LoadedRecords {
                records,
                caught_up: caught_up && error.is_none(),
            },
            error,
        });
    }

    fn log_dir(&self) -> PathBuf {
        self.log.dir().to_owned()
    }

    /// Counts a failure, and logs it at ERROR: the first of a run of failures at once, then at
    /// most one line every [`ERROR_LOG_INTERVAL`] (a full disk fails every append).
    fn failed(&mut self, what: &str, error: &BufferError) {
        self.metrics.buffer_errors.fetch_add(1, Relaxed);
        let now = Instant::now();
        if self
            .last_error_log
            .is_some_and(|at| now.duration_since(at) < ERROR_LOG_INTERVAL)
        {
            self.errors_unlogged += 1;
            return;
        }
        self.last_error_log = Some(now);
        let also = std::mem::take(&mut self.errors_unlogged);
        tracing::error!(
            error = %crate::error::chain(error),
            disk_full = error.is_disk_full(),
            failures_since_last_log = also,
            "disk buffer: {what} failed"
        );
    }

    fn publish(&self) {
        self.metrics.buffer_bytes.store(self.log.bytes(), Relaxed);
        self.metrics
            .buffer_segments
            .store(self.log.segment_count() as u64, Relaxed);
    }
}

/// Counts and logs records skipped while reading the log: each with its segment and offset.
pub(crate) fn report_skipped(metrics: &Metrics, skipped: &[Skipped]) {
    for s in skipped {
        metrics.buffer_records_skipped.fetch_add(1, Relaxed);
        tracing::error!(
            segment = %s.segment.display(),
            offset = s.offset,
            bytes = s.bytes,
            reason = ?s.reason,
            "disk buffer: record skipped; every other record is replayed"
        );
    }
}
