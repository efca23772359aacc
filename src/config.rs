//! Configuration: where the database is and how runtally batches its writes.
//!
//! Builders are consuming (`with_*` setters), every default is a documented `DEFAULT_*` constant,
//! and `build()` names the field it rejects. Environment variables are read only by the explicit
//! `from_env()` constructors.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::rejected::{RejectedHandler, RejectedWrite};
pub use crate::retry::{RetryPolicy, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX};

/// Default pool size: a writer with a few flushes in flight plus readers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Default time to open one connection before the attempt counts as failed.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Default database user (ArcadeDB's root; set `NEO4J_USER=neo4j` for Neo4j).
pub const DEFAULT_USER: &str = "neo4j";

/// A password that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// How to reach the Neo4j (or Bolt-compatible) database.
///
/// The URI's scheme picks the transport, passed straight to the driver: `bolt://` and
/// `neo4j://` in the clear, `bolt+s://` and `neo4j+s://` with TLS (`+ssc` accepts a self-signed
/// certificate). A bare `host:port` means `bolt://`. A `bolt` URI connects to the one server
/// it names; a `neo4j` URI routes: the server it names gives the routing table, and every
/// transaction goes to the cluster's writer (followed when the leader moves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neo4jConfig {
    uri: String,
    user: String,
    password: Password,
    database: Option<String>,
    max_connections: usize,
    connection_timeout: Duration,
    tcp_nodelay: bool,
}

impl Neo4jConfig {
    /// Starts a builder with a URI, user and password; every other setting at its default.
    pub fn builder(
        uri: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<Password>,
    ) -> Neo4jConfigBuilder {
        Neo4jConfigBuilder {
            uri: uri.into(),
            user: user.into(),
            password: password.into(),
            database: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            tcp_nodelay: true,
        }
    }

    /// Reads `NEO4J_URI` (required), `NEO4J_USER` (default [`DEFAULT_USER`]), `NEO4J_PASSWORD`
    /// (required) and `NEO4J_DATABASE` (optional) into a builder.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] naming the variable that is not set, or
    /// [`ConfigError::Invalid`] if one is not valid UTF-8.
    pub fn from_env() -> Result<Neo4jConfigBuilder, ConfigError> {
        let uri = env_var("NEO4J_URI")?.ok_or(ConfigError::Missing("NEO4J_URI"))?;
        let user = env_var("NEO4J_USER")?.unwrap_or_else(|| DEFAULT_USER.to_owned());
        let password = env_var("NEO4J_PASSWORD")?.ok_or(ConfigError::Missing("NEO4J_PASSWORD"))?;
        let mut builder = Self::builder(uri, user, password);
        if let Some(db) = env_var("NEO4J_DATABASE")? {
            builder = builder.with_database(db);
        }
        Ok(builder)
    }

    /// The server URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (redacted in `Debug`).
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The database name, or `None` for the server's default database.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The connection pool's size.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long opening one connection may take.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// Whether runtally sets `TCP_NODELAY` on the driver's connections.
    pub fn tcp_nodelay(&self) -> bool {
        self.tcp_nodelay
    }
}

/// Builds a [`Neo4jConfig`]; see [`Neo4jConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Neo4jConfigBuilder {
    uri: String,
    user: String,
    password: Password,
    database: Option<String>,
    max_connections: usize,
    connection_timeout: Duration,
    tcp_nodelay: bool,
}

impl Neo4jConfigBuilder {
    /// Replaces the URI.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// Replaces the user.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Replaces the password.
    pub fn with_password(mut self, password: impl Into<Password>) -> Self {
        self.password = password.into();
        self
    }

    /// The database to use. Default: the server's default database.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// Connection pool size. Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Time allowed to open one connection. Default: [`DEFAULT_CONNECTION_TIMEOUT`].
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on the connections to the database (Unix). Default: `true`.
    ///
    /// The driver (neo4rs 0.9) leaves Nagle's algorithm on, which holds every statement over
    /// 8 KiB back by the server's delayed acknowledgement, 40 ms on Linux: most of a batch's
    /// write time. runtally therefore finds this process's sockets connected to the database
    /// and sets the option on them, other connections of the process to the same server
    /// included (Neo4j's official drivers set it on theirs by default). `false`: this store
    /// sweeps nothing (another store with the option on still would).
    pub fn with_tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the field: an empty URI or one with a scheme the driver
    /// does not speak, an empty user or database name, a pool of size 0, a zero timeout.
    pub fn build(self) -> Result<Neo4jConfig, ConfigError> {
        check_uri(&self.uri)?;
        if self.user.is_empty() {
            return Err(invalid("user", "must not be empty"));
        }
        if self.database.as_deref() == Some("") {
            return Err(invalid("database", "must not be empty"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.connection_timeout.is_zero() {
            return Err(invalid("connection_timeout", "must be above zero"));
        }
        Ok(Neo4jConfig {
            uri: self.uri,
            user: self.user,
            password: self.password,
            database: self.database,
            max_connections: self.max_connections,
            connection_timeout: self.connection_timeout,
            tcp_nodelay: self.tcp_nodelay,
        })
    }
}

/// Default task rows per write transaction.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 500;
/// Default longest time a row waits before a flush starts.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Default bound on task rows accepted and not yet written.
pub const DEFAULT_MAX_PENDING_ROWS: usize = 100_000;
/// Default bound on the bytes of one write transaction's rows: 8 MiB, well under the 16 MiB a
/// Bolt server may refuse a message at (see BENCHMARKS.md for the sizes measured).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;
/// Default bound on the memory of rows accepted and not yet written, writes in flight
/// included: 256 MiB (208 MiB of task rows with the default two lanes of 8 MiB writes).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 256 << 20;
/// What a write in flight holds beyond its rows, in multiples of `max_batch_bytes`: the
/// driver's copy of the rows as query parameters (1), and their encoding for the wire, in a
/// buffer that grows by doubling (up to 2). Measured in BENCHMARKS.md, session 20261202f.
pub const IN_FLIGHT_COPIES: usize = 3;

fn in_flight_reserve(write_lanes: usize, max_batch_bytes: usize) -> usize {
    write_lanes
        .saturating_mul(IN_FLIGHT_COPIES)
        .saturating_mul(max_batch_bytes)
}
/// Default number of write lanes (each run always uses the same one): two. Chunks of at
/// least [`DEFAULT_MIN_OVERLAP_BYTES`] (large outputs) go out in parallel, one transaction per
/// lane; smaller chunks of both lanes go out together as one transaction, as with one lane.
/// Measured in BENCHMARKS.md (session 20261202e): with 400 KB outputs two lanes wrote 1.5× one
/// lane's rate on Neo4j 5 and 1.6× on ArcadeDB; four lanes were faster still on Neo4j (1.7×) but
/// slower than two on ArcadeDB, whose concurrent transactions conflict. The lanes cost the
/// in-memory hot path about 5 % (two) to 10 % (four).
pub const DEFAULT_WRITE_LANES: usize = 2;
/// Default size from which chunks of different lanes are written at the same time: 1 MiB.
/// Smaller writes go one at a time: on ArcadeDB, concurrent small transactions conflict as
/// deadlocks often enough to stretch failure visibility, and they gain little from overlap.
pub const DEFAULT_MIN_OVERLAP_BYTES: usize = 1 << 20;
/// Default time one write may take before it counts as failed (and is retried).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default task results queued for one run actor before senders wait.
pub const DEFAULT_RUN_MAILBOX: usize = 256;
/// Default time between heartbeats of live runs (see `Aggregator::reconcile_stale`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default upper bound on run-actor threads (the default is half the CPUs, at most this).
pub const DEFAULT_MAX_ARBITERS: usize = 4;

/// Default segment size of the disk buffer: a segment is deleted once all its rows are in the
/// database, so this is also the granularity at which disk space comes back.
pub const DEFAULT_BUFFER_SEGMENT_BYTES: u64 = 64 << 20;
/// Default sync interval of the disk buffer (see [`SyncPolicy::Interval`]).
pub const DEFAULT_BUFFER_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// When the disk buffer forces appended rows to the disk (`fdatasync`).
///
/// Rows reach the operating system as they are appended either way, so a killed process loses
/// none of them; the policy bounds what a power cut or a kernel crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// After every append, before its rows go to the database (slowest; nothing is lost).
    EveryWrite,
    /// At most this long after an append, whether or not more follow: a power cut loses at
    /// most this much.
    Interval(Duration),
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Interval(DEFAULT_BUFFER_SYNC_INTERVAL)
    }
}

/// What happens when rows waiting for the database reach `max_pending_rows` or
/// `max_pending_bytes` (Vector's `when_full`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// `task_finished` waits until there is room (`try_task_finished` returns `Full`).
    #[default]
    Block,
    /// `task_finished` returns [`RecordError::Full`](crate::RecordError::Full) at once (counted
    /// in `full_rejections`); the caller decides.
    Reject,
    /// New rows go to the disk buffer instead of memory, and are read back in order as the
    /// database catches up: `task_finished` does not wait for the database. Needs
    /// [`with_buffer_dir`](AggregatorConfigBuilder::with_buffer_dir).
    Overflow,
}

/// How an [`Aggregator`](crate::Aggregator) connects and batches.
///
/// Build one with [`AggregatorConfig::builder`] or [`AggregatorConfig::from_env`]. The
/// password is redacted in `Debug`.
#[derive(Clone)]
pub struct AggregatorConfig {
    pub(crate) neo4j: Option<Neo4jConfig>,
    pub(crate) max_batch_rows: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_pending_rows: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_pending_bytes: usize,
    pub(crate) write_lanes: usize,
    pub(crate) min_overlap_bytes: usize,
    pub(crate) arbiters: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) run_mailbox: usize,
    pub(crate) instance_id: Option<String>,
    pub(crate) on_rejected: Option<RejectedHandler>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) spill_path: Option<PathBuf>,
    pub(crate) buffer_dir: Option<PathBuf>,
    pub(crate) buffer_sync: SyncPolicy,
    pub(crate) buffer_segment_bytes: u64,
    pub(crate) buffer_direct_writes: bool,
    pub(crate) when_full: WhenFull,
}

impl fmt::Debug for AggregatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatorConfig")
            .field("neo4j", &self.neo4j)
            .field("max_batch_rows", &self.max_batch_rows)
            .field("flush_interval", &self.flush_interval)
            .field("max_pending_rows", &self.max_pending_rows)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("write_lanes", &self.write_lanes)
            .field("min_overlap_bytes", &self.min_overlap_bytes)
            .field("arbiters", &self.arbiters)
            .field("write_timeout", &self.write_timeout)
            .field("retry", &self.retry)
            .field("run_mailbox", &self.run_mailbox)
            .field("instance_id", &self.instance_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("spill_path", &self.spill_path)
            .field("buffer_dir", &self.buffer_dir)
            .field("buffer_sync", &self.buffer_sync)
            .field("buffer_segment_bytes", &self.buffer_segment_bytes)
            .field("buffer_direct_writes", &self.buffer_direct_writes)
            .field("when_full", &self.when_full)
            .field(
                "on_rejected",
                &self.on_rejected.as_ref().map(|_| "<handler>"),
            )
            .finish()
    }
}

impl AggregatorConfig {
    /// A builder with every setting at its default and no database settings (add them with
    /// [`AggregatorConfigBuilder::with_neo4j`]).
    pub fn builder() -> AggregatorConfigBuilder {
        AggregatorConfigBuilder {
            config: AggregatorConfig {
                neo4j: None,
                max_batch_rows: DEFAULT_MAX_BATCH_ROWS,
                flush_interval: DEFAULT_FLUSH_INTERVAL,
                max_pending_rows: DEFAULT_MAX_PENDING_ROWS,
                max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
                max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
                write_lanes: DEFAULT_WRITE_LANES,
                min_overlap_bytes: DEFAULT_MIN_OVERLAP_BYTES,
                arbiters: default_arbiters(),
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                retry: RetryPolicy::default(),
                run_mailbox: DEFAULT_RUN_MAILBOX,
                instance_id: None,
                on_rejected: None,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                spill_path: None,
                buffer_dir: None,
                buffer_sync: SyncPolicy::default(),
                buffer_segment_bytes: DEFAULT_BUFFER_SEGMENT_BYTES,
                buffer_direct_writes: true,
                when_full: WhenFull::Block,
            },
            neo4j: None,
        }
    }

    /// A builder with the database settings from `NEO4J_URI`, `NEO4J_USER`, `NEO4J_PASSWORD`
    /// and `NEO4J_DATABASE` (see [`Neo4jConfig::from_env`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] naming a required variable that is not set.
    pub fn from_env() -> Result<AggregatorConfigBuilder, ConfigError> {
        Ok(Self::builder().with_neo4j(Neo4jConfig::from_env()?))
    }

    /// The database settings, if any.
    pub fn neo4j(&self) -> Option<&Neo4jConfig> {
        self.neo4j.as_ref()
    }

    /// Task rows per write transaction.
    pub fn max_batch_rows(&self) -> usize {
        self.max_batch_rows
    }

    /// Longest wait before pending rows are flushed.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Bound on task rows accepted and not yet written.
    pub fn max_pending_rows(&self) -> usize {
        self.max_pending_rows
    }

    /// Bound on the bytes of one write transaction's rows.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Bound on the memory of rows accepted and not yet written, writes in flight included.
    pub fn max_pending_bytes(&self) -> usize {
        self.max_pending_bytes
    }

    /// What the writes in flight may hold beyond their rows, kept out of the senders' budget:
    /// per write lane, [`IN_FLIGHT_COPIES`] times `max_batch_bytes`.
    pub fn in_flight_reserve(&self) -> usize {
        in_flight_reserve(self.write_lanes, self.max_batch_bytes)
    }

    /// The senders' byte budget: `max_pending_bytes` less the [in-flight
    /// reserve](Self::in_flight_reserve). Accepted task rows wait for the database within it.
    pub fn row_budget(&self) -> usize {
        self.max_pending_bytes
            .saturating_sub(self.in_flight_reserve())
    }

    /// Write lanes: at most this many write transactions in flight at once.
    pub fn write_lanes(&self) -> usize {
        self.write_lanes
    }

    /// Size from which chunks of different lanes are written at the same time.
    pub fn min_overlap_bytes(&self) -> usize {
        self.min_overlap_bytes
    }

    /// Threads running run actors.
    pub fn arbiters(&self) -> usize {
        self.arbiters
    }

    /// Time one write may take.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Time between heartbeats of live runs.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The disk buffer's directory, if any.
    pub fn buffer_dir(&self) -> Option<&std::path::Path> {
        self.buffer_dir.as_deref()
    }

    /// What happens when pending rows reach their bounds.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Where shutdown appends rows it could not write, if anywhere.
    pub fn spill_path(&self) -> Option<&std::path::Path> {
        self.spill_path.as_deref()
    }
}

/// Half the CPUs, between 1 and [`DEFAULT_MAX_ARBITERS`]. A run actor's work per result is about
/// a microsecond, so one thread keeps up with most hosts; the host's own threads and the writer
/// need the other cores (on 2 CPUs, 1 arbiter did 975k results/s in the `hot_path` bench, 2 did
/// 573k/s: see BENCHMARKS.md).
fn default_arbiters() -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / 2).clamp(1, DEFAULT_MAX_ARBITERS)
}

/// Builds an [`AggregatorConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AggregatorConfigBuilder {
    config: AggregatorConfig,
    neo4j: Option<Neo4jConfigBuilder>,
}

impl AggregatorConfigBuilder {
    /// The database to write to. Required by [`Aggregator::start`](crate::Aggregator::start);
    /// ignored by [`Aggregator::start_with_store`](crate::Aggregator::start_with_store).
    pub fn with_neo4j(mut self, neo4j: Neo4jConfigBuilder) -> Self {
        self.neo4j = Some(neo4j);
        self
    }

    /// Changes the database settings already given (e.g. to override values from the
    /// environment); does nothing if none were given.
    pub fn map_neo4j(mut self, f: impl FnOnce(Neo4jConfigBuilder) -> Neo4jConfigBuilder) -> Self {
        self.neo4j = self.neo4j.map(f);
        self
    }

    /// Task rows per write transaction; pending rows reaching it start a flush.
    /// Default: [`DEFAULT_MAX_BATCH_ROWS`].
    pub fn with_max_batch_rows(mut self, rows: usize) -> Self {
        self.config.max_batch_rows = rows;
        self
    }

    /// Longest time a row waits before a flush starts. Default: [`DEFAULT_FLUSH_INTERVAL`].
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Bound on task rows accepted and not yet written. At the bound, `task_finished` waits and
    /// `try_task_finished` returns `Full`. At most `tokio::sync::Semaphore::MAX_PERMITS`.
    /// Default: [`DEFAULT_MAX_PENDING_ROWS`].
    pub fn with_max_pending_rows(mut self, rows: usize) -> Self {
        self.config.max_pending_rows = rows;
        self
    }

    /// Bound on the bytes of one write transaction's rows, by [`TaskRow::weight`] (a row's
    /// strings plus about half a kilobyte): a batch closes at `max_batch_rows` or at this,
    /// whichever comes first, and pending rows reaching it start a flush. A single row heavier
    /// than this is written alone. Keep it well under what the server accepts in one message
    /// (16 MiB on some Bolt servers). Default: [`DEFAULT_MAX_BATCH_BYTES`].
    ///
    /// [`TaskRow::weight`]: crate::rows::TaskRow::weight
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// Bound on the memory of rows accepted and not yet written, next to
    /// [`with_max_pending_rows`](Self::with_max_pending_rows). Part of it is kept for the
    /// writes in flight, which hold the driver's copy of their rows and its encoding
    /// ([`in_flight_reserve`](AggregatorConfig::in_flight_reserve): [`IN_FLIGHT_COPIES`] times
    /// `max_batch_bytes` per write lane); the rest is the senders' budget for task rows by
    /// [`TaskRow::weight`](crate::rows::TaskRow::weight): at that bound `task_finished` waits
    /// and `try_task_finished` returns `Full`. A single row heavier than the budget is accepted
    /// once nothing else is pending (and costs its own copies in flight). At least the reserve
    /// plus one `max_batch_bytes` of rows, at most `tokio::sync::Semaphore::MAX_PERMITS`.
    /// Default: [`DEFAULT_MAX_PENDING_BYTES`].
    pub fn with_max_pending_bytes(mut self, bytes: usize) -> Self {
        self.config.max_pending_bytes = bytes;
        self
    }

    /// Write lanes: at most this many write transactions in flight at once, each on its own
    /// connection. Every run always writes through the same lane, so its writes stay in order;
    /// more lanes let the database work on several batches at once (and make conflicts between
    /// them, which are retried). Lanes overlap only while their chunks are large: see
    /// [`with_min_overlap_bytes`](Self::with_min_overlap_bytes). Default:
    /// [`DEFAULT_WRITE_LANES`].
    pub fn with_write_lanes(mut self, lanes: usize) -> Self {
        self.config.write_lanes = lanes;
        self
    }

    /// A lane starts a write while other lanes' writes are in flight only if every one of those
    /// is a chunk of at least this many bytes; otherwise it waits its turn, so small writes go
    /// one at a time. `0`: lanes always overlap. Default: [`DEFAULT_MIN_OVERLAP_BYTES`].
    pub fn with_min_overlap_bytes(mut self, bytes: usize) -> Self {
        self.config.min_overlap_bytes = bytes;
        self
    }

    /// Threads that run the per-run actors (the writer has its own). Default: half the CPUs,
    /// at least 1 and at most [`DEFAULT_MAX_ARBITERS`].
    pub fn with_arbiters(mut self, n: usize) -> Self {
        self.config.arbiters = n;
        self
    }

    /// Time one write may take before it is abandoned and retried.
    /// Default: [`DEFAULT_WRITE_TIMEOUT`].
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Backoff between retries of a failed write. Default: [`RetryPolicy::default`]
    /// (50 ms doubling to 2 s, with jitter).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Results queued for one run actor before senders wait for it (`try_task_finished` then
    /// returns `Full`). Default: [`DEFAULT_RUN_MAILBOX`].
    pub fn with_run_mailbox(mut self, capacity: usize) -> Self {
        self.config.run_mailbox = capacity;
        self
    }

    /// This process's name in `runtallyOwner` on the runs it writes. Default: host name,
    /// process id and a random suffix.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.instance_id = Some(id.into());
        self
    }

    /// How often the writer refreshes `runtallyHeartbeat` on live runs whose state did not
    /// change, so [`Aggregator::reconcile_stale`](crate::Aggregator::reconcile_stale) can tell
    /// them from runs of a dead process. Default: [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// A JSON-lines file that [`Aggregator::shutdown`](crate::Aggregator::shutdown) appends
    /// every row it could not write to (as `execution_state`/`task_state` events), so that
    /// `runtally replay FILE` restores them later. Default: none (unwritten rows are only
    /// returned in the report).
    pub fn with_spill_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.spill_path = Some(path.into());
        self
    }

    /// A directory for the disk buffer: every row runtally accepts is appended there (a
    /// write-ahead log of checksummed records in segment files) before it goes to the
    /// database, and a segment is deleted once all its rows are in the database. A process
    /// killed (`SIGKILL`, out of memory) loses only what its last few milliseconds accepted and
    /// nothing once it has been idle that long; the next [`Aggregator::start`] with the same
    /// directory writes what is on disk first, in order. With [`WhenFull::Overflow`] it also
    /// holds what does not fit in memory. One process at a time: another one's start fails with
    /// [`BufferError::Locked`](crate::BufferError::Locked). Default: none (rows live in memory
    /// only).
    ///
    /// [`Aggregator::start`]: crate::Aggregator::start
    pub fn with_buffer_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.buffer_dir = Some(dir.into());
        self
    }

    /// When the disk buffer forces its appends to the disk. Default:
    /// [`SyncPolicy::Interval`] of [`DEFAULT_BUFFER_SYNC_INTERVAL`].
    pub fn with_buffer_sync(mut self, policy: SyncPolicy) -> Self {
        self.config.buffer_sync = policy;
        self
    }

    /// Size at which the disk buffer starts a new segment file. Default:
    /// [`DEFAULT_BUFFER_SEGMENT_BYTES`].
    pub fn with_buffer_segment_bytes(mut self, bytes: u64) -> Self {
        self.config.buffer_segment_bytes = bytes;
        self
    }

    /// Whether the disk buffer writes its segments past the page cache (`O_DIRECT`, on Linux,
    /// where the filesystem takes it; elsewhere through the page cache). Direct
    /// writes cost a copy into a 1 MiB buffer the buffer thread keeps and the device's time,
    /// and at least a block per append; writes through the page cache cost the kernel a page
    /// for every 4 KiB appended and its writeback. On the benchmark machine (BENCHMARKS.md,
    /// session 20261204p) direct writes more than halved the log's cost on a replay of 400 KB
    /// outputs and were level with the page cache at 500-byte outputs. Default: `true`.
    pub fn with_buffer_direct_writes(mut self, direct: bool) -> Self {
        self.config.buffer_direct_writes = direct;
        self
    }

    /// What happens when pending rows reach `max_pending_rows` or `max_pending_bytes`.
    /// Default: [`WhenFull::Block`].
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.config.when_full = when_full;
        self
    }

    /// Receives rows the database refuses permanently (they are also counted and logged).
    /// Default: none.
    pub fn with_rejected_handler(
        mut self,
        handler: impl Fn(RejectedWrite) + Send + Sync + 'static,
    ) -> Self {
        self.config.on_rejected = Some(Arc::new(handler));
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the field: zero batch rows, pending rows, arbiters,
    /// mailbox or times; a pending bound below the batch size; a retry policy whose initial
    /// delay is zero or above its largest; or a bad database setting.
    pub fn build(self) -> Result<AggregatorConfig, ConfigError> {
        let mut config = self.config;
        config.neo4j = self.neo4j.map(Neo4jConfigBuilder::build).transpose()?;
        if config.max_batch_rows == 0 {
            return Err(invalid("max_batch_rows", "must be at least 1"));
        }
        if config.max_pending_rows < config.max_batch_rows {
            return Err(invalid(
                "max_pending_rows",
                format!(
                    "must be at least max_batch_rows ({})",
                    config.max_batch_rows
                ),
            ));
        }
        if config.max_pending_rows > tokio::sync::Semaphore::MAX_PERMITS {
            // The bound is a semaphore's permits.
            return Err(invalid(
                "max_pending_rows",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if config.max_batch_bytes == 0 {
            return Err(invalid("max_batch_bytes", "must be at least 1"));
        }
        let least = config
            .in_flight_reserve()
            .saturating_add(config.max_batch_bytes);
        if config.max_pending_bytes < least {
            return Err(invalid(
                "max_pending_bytes",
                format!(
                    "must be at least {least}: {IN_FLIGHT_COPIES} times max_batch_bytes ({}) \
                     for each of the {} write lanes' writes in flight, plus one batch of rows",
                    config.max_batch_bytes, config.write_lanes
                ),
            ));
        }
        if config.max_pending_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "max_pending_bytes",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if config.flush_interval.is_zero() {
            return Err(invalid("flush_interval", "must be above zero"));
        }
        if config.write_timeout.is_zero() {
            return Err(invalid("write_timeout", "must be above zero"));
        }
        if config.write_lanes == 0 {
            return Err(invalid("write_lanes", "must be at least 1"));
        }
        if config.retry.initial().is_zero() {
            return Err(invalid("retry", "the initial delay must be above zero"));
        }
        if config.retry.max() < config.retry.initial() {
            return Err(invalid(
                "retry",
                format!(
                    "the largest delay ({:?}) must be at least the initial one ({:?})",
                    config.retry.max(),
                    config.retry.initial()
                ),
            ));
        }
        if let Some(neo4j) = &config.neo4j {
            if neo4j.max_connections() < config.write_lanes {
                return Err(invalid(
                    "write_lanes",
                    format!(
                        "needs a connection each: raise max_connections ({}) to at least {}",
                        neo4j.max_connections(),
                        config.write_lanes
                    ),
                ));
            }
        }
        if config.arbiters == 0 {
            return Err(invalid("arbiters", "must be at least 1"));
        }
        if config.heartbeat_interval.is_zero() {
            return Err(invalid("heartbeat_interval", "must be above zero"));
        }
        if config.run_mailbox == 0 {
            return Err(invalid("run_mailbox", "must be at least 1"));
        }
        if config.when_full == WhenFull::Overflow && config.buffer_dir.is_none() {
            return Err(invalid(
                "when_full",
                "overflow needs a buffer directory (with_buffer_dir)",
            ));
        }
        if config.buffer_segment_bytes == 0 {
            return Err(invalid("buffer_segment_bytes", "must be at least 1"));
        }
        if matches!(config.buffer_sync, SyncPolicy::Interval(d) if d.is_zero()) {
            return Err(invalid(
                "buffer_sync",
                "the interval must be above zero (use SyncPolicy::EveryWrite)",
            ));
        }
        if config.instance_id.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("instance_id", "must not be empty"));
        }
        Ok(config)
    }
}

/// The schemes the driver speaks; `+s` is TLS, `+ssc` TLS with a self-signed certificate.
const SCHEMES: [&str; 6] = [
    "bolt",
    "bolt+s",
    "bolt+ssc",
    "neo4j",
    "neo4j+s",
    "neo4j+ssc",
];

fn check_uri(uri: &str) -> Result<(), ConfigError> {
    if uri.trim().is_empty() {
        return Err(invalid("uri", "must not be empty"));
    }
    if let Some((scheme, rest)) = uri.split_once("://") {
        if !SCHEMES.contains(&scheme) {
            return Err(invalid(
                "uri",
                format!("scheme {scheme:?} is not one of {}", SCHEMES.join(", ")),
            ));
        }
        if rest.is_empty() {
            return Err(invalid("uri", "has no host"));
        }
    }
    Ok(())
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn env_var(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(name, "is not valid UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_in_debug_and_display() {
        let config = Neo4jConfig::builder("bolt://localhost:7687", "root", "hunter2-secret")
            .build()
            .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(config.password().to_string(), "<redacted>");
        assert_eq!(config.password().expose(), "hunter2-secret");
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let config = Neo4jConfig::builder("127.0.0.1:7687", "root", "pw")
            .build()
            .expect("valid");
        assert_eq!(config.max_connections(), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(config.database(), None);
    }

    #[test]
    fn tls_schemes_are_accepted_unknown_schemes_rejected() {
        for uri in [
            "bolt://h:7687",
            "bolt+s://h:7687",
            "neo4j+s://h",
            "neo4j+ssc://h",
            "h:7687",
        ] {
            Neo4jConfig::builder(uri, "u", "p").build().expect(uri);
        }
        let err = Neo4jConfig::builder("http://h:7474", "u", "p")
            .build()
            .expect_err("http");
        assert!(matches!(err, ConfigError::Invalid { field: "uri", .. }));
        assert_eq!(
            Neo4jConfig::builder("", "u", "p")
                .build()
                .expect_err("empty")
                .to_string(),
            "uri is invalid: must not be empty"
        );
    }

    #[test]
    fn aggregator_defaults_are_the_documented_constants() {
        let config = AggregatorConfig::builder()
            .build()
            .expect("defaults are valid");
        assert_eq!(config.max_batch_rows(), DEFAULT_MAX_BATCH_ROWS);
        assert_eq!(config.flush_interval(), DEFAULT_FLUSH_INTERVAL);
        assert_eq!(config.max_pending_rows(), DEFAULT_MAX_PENDING_ROWS);
        assert_eq!(config.max_batch_bytes(), DEFAULT_MAX_BATCH_BYTES);
        assert_eq!(config.max_pending_bytes(), DEFAULT_MAX_PENDING_BYTES);
        assert_eq!(config.write_timeout(), DEFAULT_WRITE_TIMEOUT);
        assert!((1..=DEFAULT_MAX_ARBITERS).contains(&config.arbiters()));
        assert!(config.neo4j().is_none());
    }

    #[test]
    fn aggregator_config_names_bad_fields_and_redacts_the_password() {
        let field = |b: AggregatorConfigBuilder| match b.build() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let b = AggregatorConfig::builder;
        assert_eq!(field(b().with_max_batch_rows(0)), "max_batch_rows");
        assert_eq!(field(b().with_max_batch_bytes(0)), "max_batch_bytes");
        assert_eq!(
            field(b().with_max_batch_bytes(100).with_max_pending_bytes(99)),
            "max_pending_bytes"
        );
        // Two lanes of 100-byte writes in flight hold 600 bytes beyond their rows.
        let lanes = |b: AggregatorConfigBuilder| b.with_write_lanes(2).with_max_batch_bytes(100);
        assert_eq!(
            field(lanes(b()).with_max_pending_bytes(699)),
            "max_pending_bytes"
        );
        assert_eq!(field(b().with_when_full(WhenFull::Overflow)), "when_full");
        assert!(b()
            .with_when_full(WhenFull::Overflow)
            .with_buffer_dir("/tmp/buffer")
            .build()
            .is_ok());
        assert_eq!(
            field(b().with_buffer_sync(SyncPolicy::Interval(Duration::ZERO))),
            "buffer_sync"
        );
        let config = lanes(b())
            .with_max_pending_bytes(700)
            .build()
            .expect("fits");
        assert_eq!(
            (config.in_flight_reserve(), config.row_budget()),
            (600, 100)
        );
        assert_eq!(
            field(b().with_max_batch_rows(10).with_max_pending_rows(5)),
            "max_pending_rows"
        );
        // The bound is a semaphore's permits: above its maximum is refused, not a panic later.
        assert_eq!(
            field(b().with_max_pending_rows(usize::MAX)),
            "max_pending_rows"
        );
        assert_eq!(
            field(b().with_flush_interval(Duration::ZERO)),
            "flush_interval"
        );
        assert_eq!(field(b().with_arbiters(0)), "arbiters");
        assert_eq!(
            field(b().with_write_timeout(Duration::ZERO)),
            "write_timeout"
        );
        assert_eq!(
            field(b().with_neo4j(Neo4jConfig::builder("", "u", "p"))),
            "uri"
        );
        let ms = Duration::from_millis;
        assert_eq!(
            field(b().with_retry(RetryPolicy::new(ms(500), ms(100)))),
            "retry",
            "a largest delay below the first is refused, not clamped"
        );
        assert_eq!(
            field(b().with_retry(RetryPolicy::new(Duration::ZERO, ms(100)))),
            "retry"
        );
        b().with_retry(RetryPolicy::new(ms(100), ms(100)))
            .build()
            .expect("equal delays are valid");
        let config = b()
            .with_neo4j(Neo4jConfig::builder("bolt://h", "u", "s3cret-pw"))
            .with_rejected_handler(|_| {})
            .build()
            .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn bad_fields_are_named() {
        let b = || Neo4jConfig::builder("bolt://h", "u", "p");
        let field = |e: ConfigError| match e {
            ConfigError::Invalid { field, .. } => field,
            ConfigError::Missing(f) => f,
        };
        assert_eq!(
            field(b().with_max_connections(0).build().expect_err("0")),
            "max_connections"
        );
        assert_eq!(
            field(b().with_database("").build().expect_err("db")),
            "database"
        );
        assert_eq!(
            field(
                b().with_connection_timeout(Duration::ZERO)
                    .build()
                    .expect_err("t")
            ),
            "connection_timeout"
        );
        assert_eq!(field(b().with_user("").build().expect_err("u")), "user");
    }
}
