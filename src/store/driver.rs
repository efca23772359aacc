//! The driver's connection pool, and what neo4rs leaves to its caller for a routed URI.
//!
//! A `bolt://` URI is one pool to one server. A `neo4j://` URI (`+s`, `+ssc`) makes neo4rs route:
//! it asks a router for the cluster's routing table (Bolt `ROUTE`) and sends each transaction to
//! the server the table names as the writer. Every transaction runtally starts, reads included,
//! goes to the writer: a follower may not have applied this process's last writes yet, and
//! runtally's reads (a run's state just after its flush, whether a run already ended) must see
//! them. Three things neo4rs does not do, done here:
//!
//! - **Check the database once, directly.** Behind a router a missing database or a refused
//!   login shows up only as "no available writers", which looks like an outage and is retried
//!   forever. The first transaction is preceded by one `RETURN 1` on a direct connection to the
//!   URI's server, which fails as a `bolt://` URI would (`DatabaseNotFound` is a configuration
//!   error).
//! - **Name the database.** Without one, neo4rs asks for a routing table before every
//!   transaction; the server's default is asked once and used from then on.
//! - **Follow a leader change at once.** A server that lost the leadership answers writes with
//!   `NotALeader`, but neo4rs keeps sending them there until the table's time to live runs out
//!   (300 s by default). After that answer the next transaction builds a new pool (at most
//!   once per [`REBUILD_INTERVAL`]), which starts with an empty table and asks the URI's
//!   server for one; it replaces the old pool only once it got a table, so while that server
//!   is down the old pool (and the routers its table names) stays in use. The writer retries
//!   the batch (every write is idempotent), so the effect is exactly once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use neo4rs::{query, Graph, Txn};

use crate::config::Neo4jConfig;
use crate::error::StoreError;
use crate::sync::lock;

/// Least time between two attempts to rebuild a routed pool: a burst of `NotALeader` answers
/// (every lane's write at once) asks the router again once, not once per answer.
const REBUILD_INTERVAL: Duration = Duration::from_secs(1);

/// The pool, swapped for a new one when a routed cluster's leader moves.
pub(crate) struct Driver {
    config: Neo4jConfig,
    routed: bool,
    state: Mutex<State>,
    /// Held (across awaits) by the one task that sets up or rebuilds a routed pool; the others
    /// wait for it rather than doing the same work.
    setup: tokio::sync::Mutex<()>,
}

struct State {
    graph: Graph,
    /// For a routed URI: the database was checked and named (see the module docs).
    ready: bool,
    /// The database transactions name: the configured one, else the default the router gave.
    database: Option<String>,
    /// A leader refusal was seen since the pool was built: the next transaction rebuilds it.
    stale: bool,
    rebuilt_at: Option<Instant>,
}

impl State {
    fn rebuild_due(&self) -> bool {
        self.stale
            && self
                .rebuilt_at
                .is_none_or(|at| at.elapsed() >= REBUILD_INTERVAL)
    }
}

impl Driver {
    /// Creates the pool; no connection is opened yet.
    pub(crate) fn new(config: &Neo4jConfig) -> Result<Self, StoreError> {
        let routed = is_routed(config.uri());
        let database = config.database().map(str::to_owned);
        let graph = connect(config, config.uri(), database.as_deref())?;
        Ok(Self {
            config: config.clone(),
            routed,
            state: Mutex::new(State {
                graph,
                ready: !routed,
                database,
                stale: false,
                rebuilt_at: None,
            }),
            setup: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the URI asks for routing (`neo4j://`, `neo4j+s://`, `neo4j+ssc://`).
    pub(crate) fn routed(&self) -> bool {
        self.routed
    }

    /// Starts a transaction (on a routed pool, on the writer).
    pub(crate) async fn begin(&self) -> Result<Txn, StoreError> {
        let graph = self.graph().await?;
        graph
            .start_txn()
            .await
            .map_err(|e| self.saw(StoreError::from_driver("begin", e)))
    }

    /// Passes on an error of a statement; a leader refusal on a routed pool marks the pool
    /// for a rebuild before the next transaction.
    pub(crate) fn saw(&self, error: StoreError) -> StoreError {
        if self.routed && error.is_leader_refusal() {
            lock(&self.state).stale = true;
            return error.rerouted();
        }
        error
    }

    /// The pool to use: for a routed URI, first set up (once) or rebuilt (after a leader
    /// refusal), as the module docs say.
    async fn graph(&self) -> Result<Graph, StoreError> {
        {
            let state = lock(&self.state);
            if state.ready && !state.rebuild_due() {
                return Ok(state.graph.clone());
            }
        }
        let _setup = self.setup.lock().await;
        let (ready, rebuild, database) = {
            let state = lock(&self.state);
            (state.ready, state.rebuild_due(), state.database.clone())
        };
        if !ready {
            self.set_up().await?;
        } else if rebuild {
            self.rebuild(database.as_deref()).await;
        }
        Ok(lock(&self.state).graph.clone())
    }

    /// Checks the database directly, then names it (the configured one, else the server's
    /// default) in a new pool.
    async fn set_up(&self) -> Result<(), StoreError> {
        self.check_directly().await?;
        let database = match self.config.database() {
            Some(db) => Some(db.to_owned()),
            None => {
                let graph = lock(&self.state).graph.clone();
                graph
                    .get_default_db(None, &[])
                    .await
                    .map_err(|e| StoreError::from_driver("route", e))?
                    .map(|db| db.to_string())
                    .filter(|db| !db.is_empty())
            }
        };
        let graph = connect(&self.config, self.config.uri(), database.as_deref())?;
        let mut state = lock(&self.state);
        state.graph = graph;
        state.database = database;
        state.ready = true;
        Ok(())
    }

    /// Builds a new pool and swaps it in once it got a routing table from the URI's server;
    /// else keeps the old one (tried again after [`REBUILD_INTERVAL`]).
    async fn rebuild(&self, database: Option<&str>) {
        lock(&self.state).rebuilt_at = Some(Instant::now());
        let fresh = match connect(&self.config, self.config.uri(), database) {
            Ok(graph) => graph,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a new routed pool; keeping the old one");
                return;
            }
        };
        match fresh.get_default_db(None, &[]).await {
            Ok(_) => {
                tracing::info!("a server refused a write as not the leader; routing afresh");
                let mut state = lock(&self.state);
                state.graph = fresh;
                state.stale = false;
            }
            Err(e) => tracing::warn!(
                error = %StoreError::from_driver("route", e),
                "a server refused a write as not the leader, and the router gives no new \
                 table; keeping the old one"
            ),
        }
    }

    /// One `RETURN 1` on a direct connection to the URI's server, with the configured database.
    async fn check_directly(&self) -> Result<(), StoreError> {
        let direct = direct_uri(self.config.uri());
        let graph = connect(&self.config, &direct, self.config.database())?;
        let mut txn = graph
            .start_txn()
            .await
            .map_err(|e| StoreError::from_driver("begin", e))?;
        let ran = txn
            .run(query("RETURN 1 AS ok"))
            .await
            .map_err(|e| StoreError::from_driver("check the database", e));
        match ran {
            Ok(_) => txn
                .commit()
                .await
                .map(drop)
                .map_err(|e| StoreError::from_driver("commit", e)),
            Err(e) => {
                if let Err(rollback) = txn.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after the failed check failed");
                }
                Err(e)
            }
        }
    }
}

fn connect(config: &Neo4jConfig, uri: &str, database: Option<&str>) -> Result<Graph, StoreError> {
    let mut builder = neo4rs::ConfigBuilder::default()
        .uri(uri)
        .user(config.user())
        .password(config.password().expose())
        .max_connections(config.max_connections())
        .connection_timeout(config.connection_timeout())
        .fetch_size(500);
    if let Some(db) = database {
        builder = builder.db(db);
    }
    let driver_config = builder.build().map_err(StoreError::driver_config)?;
    Graph::connect(driver_config).map_err(StoreError::driver_config)
}

fn is_routed(uri: &str) -> bool {
    uri.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("neo4j") || scheme.to_ascii_lowercase().starts_with("neo4j+")
    })
}

/// The `bolt` URI of the same server and transport as a routed one.
fn direct_uri(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) if is_routed(uri) => {
            format!("bolt{}://{rest}", &scheme["neo4j".len()..])
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_neo4j_schemes_route() {
        for uri in ["neo4j://h:1", "neo4j+s://h", "NEO4J+SSC://h:7687"] {
            assert!(is_routed(uri), "{uri}");
        }
        for uri in ["bolt://h:1", "bolt+s://h", "h:7687", "neo4jx://h"] {
            assert!(!is_routed(uri), "{uri}");
        }
    }

    #[test]
    fn the_direct_uri_keeps_server_and_transport() {
        assert_eq!(direct_uri("neo4j://h:1/x"), "bolt://h:1/x");
        assert_eq!(direct_uri("neo4j+s://h"), "bolt+s://h");
        assert_eq!(direct_uri("neo4j+ssc://h:7"), "bolt+ssc://h:7");
        assert_eq!(direct_uri("bolt://h:1"), "bolt://h:1");
    }
}
