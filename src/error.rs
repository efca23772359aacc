//! Error types, one per family of operations.
//!
//! Each keeps its source error (never a stringified copy) and says what the caller can do about
//! it: [`StoreError::is_retriable`] tells a transient database problem from a permanent one.

use std::time::Duration;

use crate::model::ExecutionId;

pub use crate::model::ModelError;

/// What went wrong talking to the graph database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URI or driver settings are invalid; retrying cannot help.
    #[error("invalid database configuration")]
    Config(#[source] neo4rs::Error),
    /// The server rejected the credentials.
    #[error("the database rejected the credentials")]
    Auth(#[source] neo4rs::Error),
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the database")]
    Connection(#[source] neo4rs::Error),
    /// A statement failed on the server (see [`StoreError::code`]).
    #[error("{statement} failed")]
    Query {
        /// Which statement: `upsert executions`, `upsert tasks`, `commit`, …
        statement: &'static str,
        /// The driver's error, with the server's code and message.
        #[source]
        source: neo4rs::Error,
    },
    /// The server refused a write for its size: a Bolt message over its limit, or a
    /// transaction over its memory limit. Sent again as it is, it fails again; the writer
    /// splits it by bytes instead, and refuses for good a single row that is still too large.
    #[error("{statement} was too large for the server")]
    TooLarge {
        /// Which statement.
        statement: &'static str,
        /// The driver's error, with the server's code and message.
        #[source]
        source: neo4rs::Error,
    },
    /// The uniqueness constraint on `:Node(id)` is missing and cannot be created; `fix` says
    /// what an operator must do.
    #[error(
        "the database lacks a uniqueness constraint on :Node(id) and it cannot be created: {fix}"
    )]
    Schema {
        /// What to do about it.
        fix: &'static str,
        /// Why creating it failed.
        #[source]
        source: Box<StoreError>,
    },
    /// The write did not finish within the configured timeout.
    #[error("database call timed out after {0:?}")]
    Timeout(Duration),
    /// Task rows whose execution node was missing were not written (the transaction was rolled
    /// back; runtally always writes executions first, so this means the batch was malformed).
    #[error("{missing} of {expected} task rows found no execution node")]
    Orphaned {
        /// Task rows sent.
        expected: usize,
        /// Task rows not written.
        missing: usize,
    },
    /// A value read back does not have the type the seed writes.
    #[error("property {property} of node {node}: {problem}")]
    Decode {
        /// The node's id.
        node: String,
        /// The property.
        property: &'static str,
        /// What was wrong.
        problem: String,
    },
}

impl StoreError {
    /// Whether the same write may succeed if sent again: connection failures, timeouts and the
    /// server's `Neo.TransientError.*` (deadlocks between concurrent writers, for one).
    /// Syntax, constraint and authentication errors are permanent.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Connection(_) | StoreError::Timeout(_) => true,
            StoreError::Query { source, .. } => driver_error_is_retriable(source),
            StoreError::Config(_)
            | StoreError::Auth(_)
            | StoreError::TooLarge { .. }
            | StoreError::Schema { .. }
            | StoreError::Orphaned { .. }
            | StoreError::Decode { .. } => false,
        }
    }

    /// The schema error for a constraint that could not be created, with the fix its cause
    /// calls for.
    pub(crate) fn schema(source: StoreError) -> Self {
        let code = source.code().unwrap_or("");
        let fix =
            if code.contains("ConstraintCreationFailed") || code.contains("ConstraintValidation") {
                "nodes with the same id exist; find them with MATCH (n:Node) WITH n.id AS id, \
             count(*) AS c WHERE c > 1 RETURN id, merge or delete the extra ones, then restart"
            } else if code.starts_with("Neo.ClientError.Security.") {
                "the user may not change the schema; have an administrator run CREATE CONSTRAINT \
             node_id_unique IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE, then restart"
            } else {
                "create it as an administrator: CREATE CONSTRAINT node_id_unique IF NOT EXISTS FOR \
             (n:Node) REQUIRE n.id IS UNIQUE (the cause below says why runtally could not)"
            };
        StoreError::Schema {
            fix,
            source: Box::new(source),
        }
    }

    /// Whether the server answered that it is not the cluster's leader
    /// (`Neo.ClientError.Cluster.NotALeader`): a `bolt://` URI that reaches a follower. Such a
    /// write is retried (the leader may move to this server), and the writer logs at ERROR that
    /// the URI should name the leader.
    pub fn is_not_a_leader(&self) -> bool {
        self.code().is_some_and(code_is_not_a_leader)
    }

    /// Whether the server refused the write for its size (see [`StoreError::TooLarge`]).
    pub fn is_too_large(&self) -> bool {
        matches!(self, StoreError::TooLarge { .. })
    }

    /// The server's status code (`Neo.ClientError.Statement.SyntaxError`, …), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Query { source, .. }
            | StoreError::TooLarge { source, .. }
            | StoreError::Connection(source)
            | StoreError::Auth(source)
            | StoreError::Config(source) => match source {
                neo4rs::Error::Neo4j(e) => Some(e.code()),
                _ => None,
            },
            StoreError::Schema { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Wraps a driver error from `statement`, sorting it into the right variant.
    pub(crate) fn from_driver(statement: &'static str, e: neo4rs::Error) -> Self {
        use neo4rs::Error as E;
        match e {
            E::AuthenticationError(_) => StoreError::Auth(e),
            E::Neo4j(ref n) if n.code().starts_with("Neo.ClientError.Security.") => {
                StoreError::Auth(e)
            }
            E::UrlParseError(_)
            | E::UnsupportedScheme(_)
            | E::InvalidDnsName(_)
            | E::InvalidConfig => StoreError::Config(e),
            E::IOError { .. }
            | E::ConnectionError
            | E::ConnectionTimedOut
            | E::IncompleteBoltExchange
            | E::ServerUnavailableError(_) => StoreError::Connection(e),
            // Refused in the connection's protocol state (seen right after a server restart:
            // "BEGIN not expected in state: AUTHENTICATION"), or refusing to open a
            // transaction at all: the connection's problem, never the rows'. A new connection
            // fixes it. (A missing database is the exception: it is a configuration error.)
            E::Neo4j(ref n)
                if n.code().starts_with("Neo.ClientError.Request.")
                    || (statement == "begin"
                        && n.code() != "Neo.ClientError.Database.DatabaseNotFound") =>
            {
                StoreError::Connection(e)
            }
            E::Neo4j(ref n) if n.code() == "Neo.ClientError.Database.DatabaseNotFound" => {
                StoreError::Config(e)
            }
            E::Neo4j(ref n) if refused_for_size(n.code(), n.message()) => StoreError::TooLarge {
                statement,
                source: e,
            },
            other => StoreError::Query {
                statement,
                source: other,
            },
        }
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
/// let e = runtally::StoreError::Timeout(std::time::Duration::from_secs(2));
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

/// Driver errors that say "try again": the server's transient class and the connection-level
/// failures the driver reports as a query error.
fn driver_error_is_retriable(e: &neo4rs::Error) -> bool {
    use neo4rs::Error as E;
    match e {
        E::Neo4j(n) => code_is_retriable(n.code()),
        E::RequestIgnoredError | E::Ignored(_) | E::RoutingTableRefreshFailed(_) => true,
        _ => false,
    }
}

/// Server status codes worth retrying: the transient class (deadlocks, lock timeouts, an
/// unavailable database) and a cluster member that stopped being the leader.
fn code_is_not_a_leader(code: &str) -> bool {
    code == "Neo.ClientError.Cluster.NotALeader"
}

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
        assert_eq!(
            StoreError::Timeout(Duration::from_secs(2)).to_string(),
            "database call timed out after 2s"
        );
        assert_eq!(
            StoreError::Orphaned {
                expected: 3,
                missing: 1
            }
            .to_string(),
            "1 of 3 task rows found no execution node"
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
        assert!(StoreError::from_driver("x", io).is_retriable());
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_retriable());
        let auth = StoreError::from_driver("x", neo4rs::Error::AuthenticationError("no".into()));
        assert!(matches!(auth, StoreError::Auth(_)));
        assert!(!auth.is_retriable());
        let cfg = StoreError::from_driver("x", neo4rs::Error::UnsupportedScheme("http".into()));
        assert!(matches!(cfg, StoreError::Config(_)));
        assert!(!cfg.is_retriable());
        assert!(!StoreError::Orphaned {
            expected: 1,
            missing: 1
        }
        .is_retriable());
    }
}
