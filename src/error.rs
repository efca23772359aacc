//! Error types, one per family of operations.
//!
//! Each keeps its source error (never a stringified copy) and says what the caller can do about
//! it: [`StoreError::is_retriable`] tells a transient database problem from a permanent one.
//! [`StoreError`] names no driver type: it has a [`StoreErrorKind`], the failed statement and
//! the server's code and message as strings, and the driver's error as an opaque source.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::ExecutionId;

pub use crate::model::ModelError;

/// The kind of a [`StoreError`]: what went wrong, in terms a caller can act on.
///
/// More kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The URI or driver settings are invalid, or the database does not exist; retrying cannot
    /// help.
    Config,
    /// The server rejected the credentials, or the user may not do what was asked.
    Auth,
    /// The server could not be reached, or the connection broke. Retriable.
    Connection,
    /// A statement failed on the server (see [`StoreError::code`]). Retriable when the server's
    /// code says so (`Neo.TransientError.*`, a cluster member that is not the leader).
    Query,
    /// The server refused a write for its size: a Bolt message over its limit, or a transaction
    /// over its memory limit. Sent again as it is, it fails again; the writer splits it by bytes
    /// instead, and refuses for good a single row that is still too large.
    TooLarge,
    /// The uniqueness constraint on `:Node(id)` is missing and cannot be created;
    /// [`StoreError::fix`] says what an operator must do.
    Schema,
    /// The database call did not finish within the configured timeout. Retriable.
    Timeout,
    /// Task rows whose execution node was missing were not written (the transaction was rolled
    /// back; runtally always writes executions first, so this means the batch was malformed).
    Orphaned,
    /// A value read back does not have the type the seed writes.
    Decode,
}

impl StoreErrorKind {
    /// The `Display` text of an error of this kind that carries no detail.
    fn describe(self) -> &'static str {
        match self {
            StoreErrorKind::Config => "invalid database configuration",
            StoreErrorKind::Auth => "the database rejected the credentials",
            StoreErrorKind::Connection => "cannot reach the database",
            StoreErrorKind::Query => "a database statement failed",
            StoreErrorKind::TooLarge => "the write was too large for the server",
            StoreErrorKind::Schema => {
                "the database lacks a uniqueness constraint on :Node(id) and it cannot be created"
            }
            StoreErrorKind::Timeout => "the database call timed out",
            StoreErrorKind::Orphaned => "task rows found no execution node",
            StoreErrorKind::Decode => "a value read back has the wrong type",
        }
    }
}

/// What went wrong talking to the graph database.
///
/// An error has a [`kind`](StoreError::kind), and where they apply the statement that failed,
/// the server's status code and message, and the underlying error as its
/// [`source`](std::error::Error::source). The driver's own error types stay private, so a driver
/// upgrade changes nothing here, and a [`GraphStore`](crate::store::GraphStore) of another crate
/// builds these errors with [`StoreError::new`] and the `with_*` methods (or a kind's own
/// constructor, such as [`StoreError::timeout`]).
///
/// ```
/// use runtally::{StoreError, StoreErrorKind};
///
/// let e = StoreError::new(StoreErrorKind::Query, "deadlock detected")
///     .with_statement("upsert tasks")
///     .with_code("Neo.TransientError.Transaction.DeadlockDetected");
/// assert_eq!(e.kind(), StoreErrorKind::Query);
/// assert!(e.is_retriable());
/// assert_eq!(e.to_string(), "upsert tasks failed");
/// assert_eq!(runtally::error::chain(&e), "upsert tasks failed: deadlock detected");
/// ```
// Boxed: a `Result<(), StoreError>` is one word on the writer's path.
pub struct StoreError(Box<Inner>);

struct Inner {
    kind: StoreErrorKind,
    statement: Option<Cow<'static, str>>,
    code: Option<String>,
    message: Option<String>,
    /// Set by [`StoreError::with_retriable`]; else the kind and code decide.
    retriable: Option<bool>,
    /// A routed pool saw a leader refusal and asked its router again ([`StoreError::rerouted`]).
    rerouted: bool,
    detail: Detail,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// What some kinds say in their `Display` text.
#[derive(Debug)]
enum Detail {
    None,
    Timeout(Duration),
    Orphaned {
        expected: usize,
        missing: usize,
    },
    Decode {
        node: String,
        property: Cow<'static, str>,
        problem: String,
    },
    Fix(Cow<'static, str>),
}

impl StoreError {
    /// An error of `kind` caused by `source` (any error, or a message: `&str` and `String`
    /// convert).
    ///
    /// Without further settings it is retriable if its kind is
    /// [`Connection`](StoreErrorKind::Connection) or [`Timeout`](StoreErrorKind::Timeout), or a
    /// [`Query`](StoreErrorKind::Query) whose [code](StoreError::with_code) is transient; see
    /// [`StoreError::with_retriable`] to decide otherwise.
    pub fn new(
        kind: StoreErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        let mut e = Self::from(kind);
        e.0.source = Some(source.into());
        e
    }

    /// A [`Timeout`](StoreErrorKind::Timeout): the call did not finish within `after`.
    pub fn timeout(after: Duration) -> Self {
        Self::with_detail(StoreErrorKind::Timeout, Detail::Timeout(after))
    }

    /// An [`Orphaned`](StoreErrorKind::Orphaned) error: `missing` of the `expected` task rows
    /// found no execution node, and none was written.
    pub fn orphaned(expected: usize, missing: usize) -> Self {
        Self::with_detail(
            StoreErrorKind::Orphaned,
            Detail::Orphaned { expected, missing },
        )
    }

    /// A [`Decode`](StoreErrorKind::Decode) error: `property` of node `node` read back as
    /// something else; `problem` says what.
    pub fn decode(
        node: impl Into<String>,
        property: impl Into<Cow<'static, str>>,
        problem: impl Into<String>,
    ) -> Self {
        Self::with_detail(
            StoreErrorKind::Decode,
            Detail::Decode {
                node: node.into(),
                property: property.into(),
                problem: problem.into(),
            },
        )
    }

    /// A [`Schema`](StoreErrorKind::Schema) error: the uniqueness constraint on `:Node(id)` is
    /// missing, creating it failed with `source`, and `fix` says what an operator must do.
    pub fn schema(
        fix: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        let mut e = Self::with_detail(StoreErrorKind::Schema, Detail::Fix(fix.into()));
        e.0.source = Some(source.into());
        e
    }

    /// Names the statement that failed: `upsert executions`, `upsert tasks`, `commit`, …
    #[must_use]
    pub fn with_statement(mut self, statement: impl Into<Cow<'static, str>>) -> Self {
        self.0.statement = Some(statement.into());
        self
    }

    /// Sets the server's status code (`Neo.ClientError.Statement.SyntaxError`, …).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.0.code = Some(code.into());
        self
    }

    /// Sets the server's message that came with its code.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = Some(message.into());
        self
    }

    /// Says whether the same write may succeed if sent again, instead of the kind and code
    /// (see [`StoreError::new`]): for a store whose transient failures carry no server code.
    /// The writer retries a retriable error as it is, so a
    /// [`TooLarge`](StoreErrorKind::TooLarge) error marked retriable is never split.
    #[must_use]
    pub fn with_retriable(mut self, retriable: bool) -> Self {
        self.0.retriable = Some(retriable);
        self
    }

    fn with_detail(kind: StoreErrorKind, detail: Detail) -> Self {
        let mut e = Self::from(kind);
        e.0.detail = detail;
        e
    }

    /// What went wrong.
    pub fn kind(&self) -> StoreErrorKind {
        self.0.kind
    }

    /// The statement that failed, if the error names one.
    pub fn statement(&self) -> Option<&str> {
        self.0.statement.as_deref()
    }

    /// The server's status code (`Neo.ClientError.Statement.SyntaxError`, …), if it sent one.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The server's message, if it sent one with its code.
    pub fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }

    /// For a [`Schema`](StoreErrorKind::Schema) error, what an operator must do.
    pub fn fix(&self) -> Option<&str> {
        match &self.0.detail {
            Detail::Fix(fix) => Some(fix),
            _ => None,
        }
    }

    /// Whether the same write may succeed if sent again: connection failures, timeouts and the
    /// server's `Neo.TransientError.*` (deadlocks between concurrent writers, for one).
    /// Syntax, constraint and authentication errors are permanent.
    pub fn is_retriable(&self) -> bool {
        if let Some(retriable) = self.0.retriable {
            return retriable;
        }
        match self.0.kind {
            StoreErrorKind::Connection | StoreErrorKind::Timeout => true,
            StoreErrorKind::Query => self.code().is_some_and(code_is_retriable),
            StoreErrorKind::Config
            | StoreErrorKind::Auth
            | StoreErrorKind::TooLarge
            | StoreErrorKind::Schema
            | StoreErrorKind::Orphaned
            | StoreErrorKind::Decode => false,
        }
    }

    /// Whether the server answered that it is not the cluster's leader
    /// (`Neo.ClientError.Cluster.NotALeader`). Such a write is retried. Through a `neo4j://`
    /// URI it is a leader change: the store asks its router for the new leader first. Through
    /// a `bolt://` URI it reaches a follower (the leader may move to it), and the writer logs
    /// at ERROR that the URI should name the leader or route.
    pub fn is_not_a_leader(&self) -> bool {
        self.code().is_some_and(code_is_not_a_leader)
    }

    /// Whether the server refused a write as no longer the cluster's leader or as a read-only
    /// member (`NotALeader`, `ForbiddenOnReadOnlyDatabase`): a routed pool asks its router again.
    pub(crate) fn is_leader_refusal(&self) -> bool {
        self.code().is_some_and(|code| {
            code_is_not_a_leader(code)
                || code == "Neo.ClientError.General.ForbiddenOnReadOnlyDatabase"
        })
    }

    /// Marks a leader refusal that a routed pool answered by asking its router again: a
    /// transient of a leader change, not a URI that names a follower.
    pub(crate) fn rerouted(mut self) -> Self {
        self.0.rerouted = true;
        self
    }

    /// Whether [`StoreError::rerouted`] marked this error.
    pub(crate) fn was_rerouted(&self) -> bool {
        self.0.rerouted
    }

    /// Whether the server refused the write for its size (see [`StoreErrorKind::TooLarge`]).
    pub fn is_too_large(&self) -> bool {
        self.0.kind == StoreErrorKind::TooLarge
    }

    /// The schema error for a constraint that could not be created, with the fix its cause
    /// calls for, and the cause's code and message.
    pub(crate) fn constraint_missing(source: StoreError) -> Self {
        let code = source.code().map(str::to_owned);
        let message = source.message().map(str::to_owned);
        let c = code.as_deref().unwrap_or("");
        let fix = if c.contains("ConstraintCreationFailed") || c.contains("ConstraintValidation") {
            "nodes with the same id exist; find them with MATCH (n:Node) WITH n.id AS id, \
             count(*) AS c WHERE c > 1 RETURN id, merge or delete the extra ones, then restart"
        } else if c.starts_with("Neo.ClientError.Security.") {
            "the user may not change the schema; have an administrator run CREATE CONSTRAINT \
             node_id_unique IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE, then restart"
        } else {
            "create it as an administrator: CREATE CONSTRAINT node_id_unique IF NOT EXISTS FOR \
             (n:Node) REQUIRE n.id IS UNIQUE (the cause below says why runtally could not)"
        };
        let mut e = StoreError::schema(fix, source);
        e.0.code = code;
        e.0.message = message;
        e
    }

    /// Wraps a driver error from `statement`, sorting it into the right kind, with the server's
    /// code and message if it sent them. The driver's type never leaves the crate.
    pub(crate) fn from_driver(statement: &'static str, e: neo4rs::Error) -> Self {
        use neo4rs::Error as E;
        let server = match &e {
            E::Neo4j(n) => Some((n.code().to_owned(), n.message().to_owned())),
            E::RoutingTableError((code, message)) => Some((code.clone(), message.clone())),
            _ => None,
        };
        let code = server.as_ref().map_or("", |(code, _)| code.as_str());
        let kind = match &e {
            E::AuthenticationError(_) => StoreErrorKind::Auth,
            E::Neo4j(_) if code.starts_with("Neo.ClientError.Security.") => StoreErrorKind::Auth,
            E::UrlParseError(_)
            | E::UnsupportedScheme(_)
            | E::InvalidDnsName(_)
            | E::InvalidConfig => StoreErrorKind::Config,
            E::IOError { .. }
            | E::ConnectionError
            | E::ConnectionTimedOut
            | E::IncompleteBoltExchange
            | E::ServerUnavailableError(_) => StoreErrorKind::Connection,
            // Refused in the connection's protocol state (seen right after a server restart:
            // "BEGIN not expected in state: AUTHENTICATION"), or refusing to open a
            // transaction at all: the connection's problem, never the rows'. A new connection
            // fixes it. (A missing database is the exception: it is a configuration error.)
            E::Neo4j(_)
                if code.starts_with("Neo.ClientError.Request.")
                    || (statement == "begin"
                        && code != "Neo.ClientError.Database.DatabaseNotFound") =>
            {
                StoreErrorKind::Connection
            }
            E::Neo4j(_) if code == "Neo.ClientError.Database.DatabaseNotFound" => {
                StoreErrorKind::Config
            }
            // The router refused the routing table: refused credentials or rights are Auth,
            // another client error (a missing database, a server without ROUTE) is
            // configuration, and only the rest (a router mid-election) passes.
            E::RoutingTableError(_) if code.starts_with("Neo.ClientError.Security.") => {
                StoreErrorKind::Auth
            }
            E::RoutingTableError(_) if code.starts_with("Neo.ClientError.") => {
                StoreErrorKind::Config
            }
            E::RoutingTableError(_) => StoreErrorKind::Connection,
            E::Neo4j(n) if refused_for_size(code, n.message()) => StoreErrorKind::TooLarge,
            _ => StoreErrorKind::Query,
        };
        // Connection-level failures the driver reports as a query error, without a code.
        let transient_without_code = kind == StoreErrorKind::Query
            && matches!(
                e,
                E::RequestIgnoredError | E::Ignored(_) | E::RoutingTableRefreshFailed(_)
            );
        let mut out = StoreError::new(kind, e).with_statement(statement);
        if let Some((code, message)) = server {
            out = out.with_code(code).with_message(message);
        }
        if transient_without_code {
            out = out.with_retriable(true);
        }
        out
    }

    /// A driver error raised while building the pool: always a configuration error.
    pub(crate) fn driver_config(e: neo4rs::Error) -> Self {
        StoreError::new(StoreErrorKind::Config, e)
    }
}

impl From<StoreErrorKind> for StoreError {
    /// An error of `kind` with nothing more to say (no source, statement or code).
    fn from(kind: StoreErrorKind) -> Self {
        StoreError(Box::new(Inner {
            kind,
            statement: None,
            code: None,
            message: None,
            retriable: None,
            rerouted: false,
            detail: Detail::None,
            source: None,
        }))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        match (&inner.detail, inner.kind, inner.statement.as_deref()) {
            (Detail::Timeout(after), _, _) => write!(f, "database call timed out after {after:?}"),
            (Detail::Orphaned { expected, missing }, _, _) => {
                write!(
                    f,
                    "{missing} of {expected} task rows found no execution node"
                )
            }
            (
                Detail::Decode {
                    node,
                    property,
                    problem,
                },
                _,
                _,
            ) => write!(f, "property {property} of node {node}: {problem}"),
            (Detail::Fix(fix), _, _) => write!(
                f,
                "the database lacks a uniqueness constraint on :Node(id) and it cannot be \
                 created: {fix}"
            ),
            (Detail::None, StoreErrorKind::Query, Some(statement)) => {
                write!(f, "{statement} failed")
            }
            (Detail::None, StoreErrorKind::TooLarge, Some(statement)) => {
                write!(f, "{statement} was too large for the server")
            }
            (Detail::None, kind, _) => f.write_str(kind.describe()),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        let mut d = f.debug_struct("StoreError");
        d.field("kind", &inner.kind);
        if let Some(statement) = &inner.statement {
            d.field("statement", statement);
        }
        if let Some(code) = &inner.code {
            d.field("code", code);
        }
        if let Some(message) = &inner.message {
            d.field("message", message);
        }
        if let Some(retriable) = inner.retriable {
            d.field("retriable", &retriable);
        }
        if !matches!(inner.detail, Detail::None) {
            d.field("detail", &inner.detail);
        }
        if let Some(source) = &inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Whether the server's error says the write was too large: a Bolt message over the server's
/// limit (ArcadeDB: "BOLT message too large: exceeds 16777216 bytes after chunk reassembly") or
/// a transaction over Neo4j's memory limit (`…MemoryPoolOutOfMemoryError`,
/// `…TransactionOutOfMemoryError`, `…TransactionMemoryLimit`).
fn refused_for_size(code: &str, message: &str) -> bool {
    code.ends_with("OutOfMemoryError")
        || code.ends_with("TransactionMemoryLimit")
        || message.contains("message too large")
}

/// An error and its sources, joined with `": "`: one line for a log field or a message.
///
/// ```
/// let e = runtally::StoreError::timeout(std::time::Duration::from_secs(2));
/// assert_eq!(runtally::error::chain(&e), "database call timed out after 2s");
/// ```
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The server's code for a cluster member that is not the leader.
fn code_is_not_a_leader(code: &str) -> bool {
    code == "Neo.ClientError.Cluster.NotALeader"
}

/// Server status codes worth retrying: the transient class (deadlocks, lock timeouts, an
/// unavailable database), a cluster member that stopped being the leader, and a database that
/// is read-only for now.
fn code_is_retriable(code: &str) -> bool {
    code.starts_with("Neo.TransientError.")
        || code == "Neo.ClientError.Cluster.NotALeader"
        || code == "Neo.ClientError.General.ForbiddenOnReadOnlyDatabase"
}

/// A configuration value is invalid. Names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A setting has a value runtally cannot use.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The setting (builder method or environment variable).
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Why a run could not be begun.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeginError {
    /// A run with this id is already live in this aggregator.
    #[error("run {0} is already live")]
    Duplicate(ExecutionId),
    /// The run's start values are invalid.
    #[error("invalid run start")]
    Invalid(#[from] ModelError),
    /// The aggregator is shutting down or gone.
    #[error("the aggregator is shutting down")]
    ShuttingDown,
}

/// Why a task result (or a finish or cancel) was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Pending writes are at `max_pending_rows` (only from the `try_` methods; the async ones
    /// wait instead).
    #[error("runtally is full: pending writes are at the configured bound")]
    Full,
    /// The run was already finished or cancelled; the message was rejected and counted.
    #[error("run {0} has already finished")]
    RunFinished(ExecutionId),
    /// The result is invalid (bad ids, counts out of range, end before start).
    #[error("invalid task result")]
    Invalid(#[from] ModelError),
    /// The aggregator is shutting down or gone.
    #[error("the aggregator is shutting down")]
    ShuttingDown,
}

/// Why a flush did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The aggregator is shut down.
    #[error("the aggregator is shut down")]
    ShuttingDown,
    /// The database refused some rows permanently; they were reported to the rejection
    /// handler and counted, and every other row was written.
    #[error("the database refused {rows} rows")]
    Rejected {
        /// Rows this flush covers (accepted before it) that were refused after it was requested.
        rows: u64,
    },
}

/// Why [`Aggregator::reconcile_stale`](crate::Aggregator::reconcile_stale) marked nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// `older_than` reaches back further than a timestamp can: taken as zero, it would count
    /// every other process's live runs as stale.
    #[error("older_than ({0:?}) is out of range")]
    OutOfRange(Duration),
    /// The database call failed.
    #[error("the database call failed")]
    Store(#[from] StoreError),
    /// The aggregator is shut down.
    #[error("the aggregator is shut down")]
    ShuttingDown,
}

/// Why the disk buffer could not do what was asked (see
/// [`AggregatorConfigBuilder::with_buffer_dir`](crate::AggregatorConfigBuilder::with_buffer_dir)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// Another process (or another aggregator in this one) has the directory open.
    #[error("the buffer directory {} is in use by another process", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The disk (or the process's file-size limit) has no room for what was appended.
    #[error("no space left to {action} {}", path.display())]
    DiskFull {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O error.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A segment file of another version of the buffer's format: refused rather than read
    /// or deleted (a newer runtally wrote it; drain it with that version).
    #[error("{} was written by another version of runtally's disk buffer", path.display())]
    Format {
        /// The segment file.
        path: PathBuf,
    },
    /// The buffer's thread is gone (the aggregator stopped).
    #[error("the disk buffer has stopped")]
    Stopped,
}

impl BufferError {
    /// An I/O error while doing `action` to `path`: [`BufferError::DiskFull`] when the disk or a
    /// file-size limit is full, else [`BufferError::Io`].
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        let path = path.to_owned();
        match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge => {
                BufferError::DiskFull {
                    action,
                    path,
                    source,
                }
            }
            _ => BufferError::Io {
                action,
                path,
                source,
            },
        }
    }

    /// Whether the disk (or a file-size limit) is full: appends may succeed once room is made.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, BufferError::DiskFull { .. })
    }
}

/// Why [`Aggregator::sync_buffer`](crate::Aggregator::sync_buffer) could not confirm that
/// every accepted row is on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncBufferError {
    /// The aggregator has no disk buffer (see
    /// [`with_buffer_dir`](crate::AggregatorConfigBuilder::with_buffer_dir)).
    #[error("the aggregator has no disk buffer")]
    NoBuffer,
    /// Appends failed (a full disk, say: see the ERROR log and `metrics.buffer.errors`): these
    /// rows are in memory only, and written from there.
    #[error("{rows} accepted rows are not on disk: appending them failed")]
    NotOnDisk {
        /// Rows held in memory only.
        rows: u64,
    },
    /// The sync failed.
    #[error("the disk buffer could not sync")]
    Buffer(#[from] BufferError),
    /// The aggregator is shutting down.
    #[error("the aggregator is shutting down")]
    ShuttingDown,
}

/// Why an aggregator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The database rejected the URI or the credentials. (An unreachable database is not an
    /// error: the aggregator starts and keeps trying.)
    #[error("cannot use the database")]
    Store(#[from] StoreError),
    /// The actor threads could not be started.
    #[error("cannot start runtally's threads")]
    Runtime(#[source] std::io::Error),
    /// The disk buffer's directory cannot be used (another process has it, or I/O fails).
    #[error("cannot open the disk buffer")]
    Buffer(#[from] BufferError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts_are_pinned() {
        assert_eq!(
            ModelError::InvalidId {
                kind: "execution",
                problem: "is empty"
            }
            .to_string(),
            "execution id is empty"
        );
        let full = BufferError::io(
            "append to",
            Path::new("/b/1.seg"),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(full.is_disk_full());
        assert_eq!(full.to_string(), "no space left to append to /b/1.seg");
        let io = BufferError::io(
            "read",
            Path::new("/b/ledger"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!io.is_disk_full());
        assert_eq!(io.to_string(), "cannot read /b/ledger");
        assert_eq!(
            BufferError::Stopped.to_string(),
            "the disk buffer has stopped"
        );
        assert_eq!(
            SyncBufferError::NotOnDisk { rows: 4 }.to_string(),
            "4 accepted rows are not on disk: appending them failed"
        );
        assert_eq!(
            SyncBufferError::NoBuffer.to_string(),
            "the aggregator has no disk buffer"
        );
        assert_eq!(
            SyncBufferError::Buffer(BufferError::Stopped).to_string(),
            "the disk buffer could not sync"
        );
        assert_eq!(
            SyncBufferError::ShuttingDown.to_string(),
            "the aggregator is shutting down"
        );
        assert_eq!(
            StartError::Buffer(BufferError::Stopped).to_string(),
            "cannot open the disk buffer"
        );
        assert_eq!(
            BufferError::Format {
                path: PathBuf::from("/b/1.seg")
            }
            .to_string(),
            "/b/1.seg was written by another version of runtally's disk buffer"
        );
        assert_eq!(
            BufferError::Locked {
                dir: PathBuf::from("/b")
            }
            .to_string(),
            "the buffer directory /b is in use by another process"
        );
        assert_eq!(
            StoreError::timeout(Duration::from_secs(2)).to_string(),
            "database call timed out after 2s"
        );
        assert_eq!(
            StoreError::orphaned(3, 1).to_string(),
            "1 of 3 task rows found no execution node"
        );
        assert_eq!(
            StoreError::decode("t-1", "tokensTotal", "missing").to_string(),
            "property tokensTotal of node t-1: missing"
        );
        assert_eq!(
            StoreError::schema("drop the duplicates", "constraint failed").to_string(),
            "the database lacks a uniqueness constraint on :Node(id) and it cannot be created: \
             drop the duplicates"
        );
        let query = StoreError::new(StoreErrorKind::Query, "bad").with_statement("upsert tasks");
        assert_eq!(query.to_string(), "upsert tasks failed");
        let big = StoreError::new(StoreErrorKind::TooLarge, "bad").with_statement("commit");
        assert_eq!(big.to_string(), "commit was too large for the server");
        assert_eq!(
            StoreError::from(StoreErrorKind::Query).to_string(),
            "a database statement failed"
        );
        assert_eq!(
            StoreError::new(StoreErrorKind::Connection, "refused")
                .with_statement("begin")
                .to_string(),
            "cannot reach the database"
        );
        assert_eq!(
            StoreError::from(StoreErrorKind::Auth).to_string(),
            "the database rejected the credentials"
        );
        assert_eq!(
            StoreError::from(StoreErrorKind::Config).to_string(),
            "invalid database configuration"
        );
        assert_eq!(
            ConfigError::Missing("NEO4J_URI").to_string(),
            "NEO4J_URI is not set"
        );
        assert_eq!(
            RecordError::Full.to_string(),
            "runtally is full: pending writes are at the configured bound"
        );
        assert_eq!(
            BeginError::Duplicate(ExecutionId::new("e").expect("id")).to_string(),
            "run e is already live"
        );
    }

    #[test]
    fn transient_server_codes_are_retriable_client_errors_are_not() {
        assert!(code_is_retriable(
            "Neo.TransientError.Transaction.DeadlockDetected"
        ));
        assert!(code_is_retriable(
            "Neo.TransientError.General.DatabaseUnavailable"
        ));
        assert!(code_is_retriable("Neo.ClientError.Cluster.NotALeader"));
        assert!(!code_is_retriable("Neo.ClientError.Statement.SyntaxError"));
        assert!(!code_is_retriable(
            "Neo.ClientError.Schema.ConstraintValidationFailed"
        ));
        assert!(!code_is_retriable("Neo.DatabaseError.General.UnknownError"));
    }

    #[test]
    fn writes_refused_for_their_size_are_recognised_by_code_or_message() {
        // ArcadeDB's Bolt plugin, seen in issue 12.
        assert!(refused_for_size(
            "Neo.DatabaseError.General.UnknownError",
            "BOLT message too large: exceeds 16777216 bytes after chunk reassembly"
        ));
        // Neo4j 5's transaction memory limits.
        assert!(refused_for_size(
            "Neo.TransientError.General.MemoryPoolOutOfMemoryError",
            "The allocation of an extra 2.0 MiB would use more than the limit"
        ));
        assert!(refused_for_size(
            "Neo.TransientError.General.TransactionOutOfMemoryError",
            ""
        ));
        assert!(!refused_for_size(
            "Neo.DatabaseError.General.UnknownError",
            "something else broke"
        ));
        assert!(!refused_for_size(
            "Neo.TransientError.Transaction.DeadlockDetected",
            ""
        ));
        assert!(code_is_not_a_leader("Neo.ClientError.Cluster.NotALeader"));
        assert!(!code_is_not_a_leader(
            "Neo.ClientError.Statement.SyntaxError"
        ));
    }

    #[test]
    fn connection_and_timeout_errors_are_retriable_auth_and_config_are_not() {
        let io = neo4rs::Error::IOError {
            detail: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let conn = StoreError::from_driver("x", io);
        assert_eq!(conn.kind(), StoreErrorKind::Connection);
        assert_eq!(conn.statement(), Some("x"));
        assert!(conn.is_retriable());
        assert!(
            std::error::Error::source(&conn).is_some(),
            "keeps the driver error"
        );
        assert!(StoreError::timeout(Duration::from_secs(1)).is_retriable());
        let auth = StoreError::from_driver("x", neo4rs::Error::AuthenticationError("no".into()));
        assert_eq!(auth.kind(), StoreErrorKind::Auth);
        assert!(!auth.is_retriable());
        let cfg = StoreError::from_driver("x", neo4rs::Error::UnsupportedScheme("http".into()));
        assert_eq!(cfg.kind(), StoreErrorKind::Config);
        assert!(!cfg.is_retriable());
        assert!(!StoreError::orphaned(1, 1).is_retriable());
    }

    #[test]
    fn driver_errors_without_a_code_keep_their_classification() {
        // Reported by the driver as a query error, but the connection's problem: retried.
        let ignored = StoreError::from_driver("upsert tasks", neo4rs::Error::RequestIgnoredError);
        assert_eq!(ignored.kind(), StoreErrorKind::Query);
        assert_eq!(ignored.code(), None);
        assert!(ignored.is_retriable());
        let other = StoreError::from_driver("upsert tasks", neo4rs::Error::InvalidConfig);
        assert_eq!(other.kind(), StoreErrorKind::Config);
        assert!(!other.is_retriable());
    }

    #[test]
    fn routing_table_refusals_are_sorted_by_their_code() {
        let refused = |code: &str| {
            StoreError::from_driver(
                "route",
                neo4rs::Error::RoutingTableError((code.to_owned(), "m".to_owned())),
            )
        };
        let missing = refused("Neo.ClientError.Database.DatabaseNotFound");
        assert_eq!(missing.kind(), StoreErrorKind::Config);
        assert_eq!(
            missing.code(),
            Some("Neo.ClientError.Database.DatabaseNotFound")
        );
        assert!(!missing.is_retriable());
        let forbidden = refused("Neo.ClientError.Security.Forbidden");
        assert_eq!(forbidden.kind(), StoreErrorKind::Auth);
        assert!(!forbidden.is_retriable());
        let electing = refused("Neo.TransientError.General.DatabaseUnavailable");
        assert_eq!(electing.kind(), StoreErrorKind::Connection);
        assert!(electing.is_retriable());
    }

    /// What a `GraphStore` of another crate can build, and how it is classified.
    #[test]
    fn errors_built_outside_the_driver_classify_like_the_drivers() {
        let deadlock = StoreError::new(StoreErrorKind::Query, "deadlock")
            .with_statement("upsert tasks")
            .with_code("Neo.TransientError.Transaction.DeadlockDetected")
            .with_message("deadlock detected");
        assert!(deadlock.is_retriable());
        assert!(!deadlock.is_too_large());
        assert_eq!(deadlock.statement(), Some("upsert tasks"));
        assert_eq!(
            deadlock.code(),
            Some("Neo.TransientError.Transaction.DeadlockDetected")
        );
        assert_eq!(deadlock.message(), Some("deadlock detected"));
        assert_eq!(
            chain(&deadlock),
            "upsert tasks failed: deadlock",
            "the source is shown"
        );

        let syntax = StoreError::new(StoreErrorKind::Query, "syntax")
            .with_code("Neo.ClientError.Statement.SyntaxError");
        assert!(!syntax.is_retriable());
        assert!(!StoreError::new(StoreErrorKind::Query, "no code").is_retriable());
        assert!(StoreError::new(StoreErrorKind::Query, "no code")
            .with_retriable(true)
            .is_retriable());

        let leader = StoreError::new(StoreErrorKind::Query, "follower")
            .with_code("Neo.ClientError.Cluster.NotALeader");
        assert!(leader.is_retriable() && leader.is_not_a_leader());

        // A transient code does not make a refusal for size retriable: the writer splits it.
        let big = StoreError::new(StoreErrorKind::TooLarge, "over the limit")
            .with_code("Neo.TransientError.General.MemoryPoolOutOfMemoryError");
        assert!(big.is_too_large());
        assert!(!big.is_retriable());

        for (kind, retriable) in [
            (StoreErrorKind::Config, false),
            (StoreErrorKind::Auth, false),
            (StoreErrorKind::Connection, true),
            (StoreErrorKind::Query, false),
            (StoreErrorKind::TooLarge, false),
            (StoreErrorKind::Schema, false),
            (StoreErrorKind::Timeout, true),
            (StoreErrorKind::Orphaned, false),
            (StoreErrorKind::Decode, false),
        ] {
            let e = StoreError::new(kind, "cause");
            assert_eq!(e.kind(), kind);
            assert_eq!(e.is_retriable(), retriable, "{kind:?}");
            assert_eq!(e.is_too_large(), kind == StoreErrorKind::TooLarge);
            assert_eq!(e.with_retriable(!retriable).is_retriable(), !retriable);
        }
    }

    #[test]
    fn a_schema_error_names_the_fix_and_keeps_its_causes_code() {
        let cause = StoreError::new(StoreErrorKind::Query, "exists")
            .with_statement("create schema")
            .with_code("Neo.ClientError.Schema.ConstraintCreationFailed");
        let e = StoreError::constraint_missing(cause);
        assert_eq!(e.kind(), StoreErrorKind::Schema);
        assert!(e.fix().is_some_and(|fix| fix.contains("same id")));
        assert_eq!(
            e.code(),
            Some("Neo.ClientError.Schema.ConstraintCreationFailed")
        );
        assert!(!e.is_retriable());
        let shown = chain(&e);
        assert!(shown.ends_with(": create schema failed: exists"), "{shown}");
    }

    #[test]
    fn a_store_error_is_one_word() {
        assert_eq!(
            std::mem::size_of::<StoreError>(),
            std::mem::size_of::<usize>()
        );
    }
}
