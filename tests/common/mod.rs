//! Helpers shared by the integration tests: the live database from the environment, unique ids,
//! row builders, and raw reads that show Bolt types and relationships exactly as stored.
//!
//! Every test talks to the server `scripts/db start` runs (or `NEO4J_URI`), and every test uses
//! ids of its own, so the tests share one database and run in parallel.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use neo4rs::{query, BoltType, Graph};
use runtally::config::Neo4jConfig;
use runtally::model::{ExecutionId, PlanId, TaskDefinition, TaskId, TaskResult};
use runtally::rows::{ExecutionRow, TaskRow, WriteBatch};
use runtally::store::{GraphStore, Neo4jStore};

/// The database settings from `NEO4J_*`; fails loudly without them, because these tests exist to
/// prove persistence against a real server.
pub fn neo4j_config() -> Neo4jConfig {
    Neo4jConfig::from_env()
        .expect("NEO4J_URI and NEO4J_PASSWORD must be set: run the tests with scripts/test")
        .build()
        .expect("valid NEO4J_* settings")
}

/// A store on the live database, with the schema in place.
pub async fn store() -> Neo4jStore {
    let store = Neo4jStore::new(&neo4j_config()).expect("store");
    store.ensure_schema().await.expect("schema");
    store
}

/// A raw driver connection for reading back what was stored, types included.
pub fn raw_graph() -> Graph {
    let config = neo4j_config();
    let mut builder = neo4rs::ConfigBuilder::default()
        .uri(config.uri())
        .user(config.user())
        .password(config.password().expose())
        .max_connections(2);
    if let Some(db) = config.database() {
        builder = builder.db(db);
    }
    Graph::connect(builder.build().expect("driver config")).expect("graph")
}

/// An id no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn exec_id(s: &str) -> ExecutionId {
    ExecutionId::new(s).expect("execution id")
}

pub fn plan_id(s: &str) -> PlanId {
    PlanId::new(s).expect("plan id")
}

pub fn task_id(s: &str) -> TaskId {
    TaskId::new(s).expect("task id")
}

/// A fixed instant with milliseconds, so written and read times compare exactly.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0)
        .single()
        .expect("time")
        + Duration::milliseconds(123)
}

pub fn started(exec: &str, plan: &str, tasks_total: u64) -> ExecutionRow {
    ExecutionRow::started(exec_id(exec), plan_id(plan), tasks_total, t0(), t0())
        .expect("execution row")
}

pub fn task_row(
    exec: &str,
    plan: &str,
    def: &TaskDefinition,
    result: TaskResult,
    at: DateTime<Utc>,
) -> TaskRow {
    TaskRow::new(&exec_id(exec), &plan_id(plan), def.clone(), result, at).expect("task row")
}

/// Writes one batch straight to the store. Tests share the database and run in parallel, so a
/// transient conflict between them (ArcadeDB's "concurrent change to the same record") is
/// retried a few times, as runtally's writer would; any other error fails the test.
pub async fn write(store: &Neo4jStore, executions: Vec<ExecutionRow>, tasks: Vec<TaskRow>) {
    let batch = WriteBatch::new(executions, tasks);
    let mut attempt = 0;
    loop {
        match store.write(&batch).await {
            Ok(()) => return,
            Err(e) if e.is_retriable() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => panic!("write batch: {e:?}"),
        }
    }
}

/// All properties of the node with this id, as raw Bolt values.
pub async fn props(graph: &Graph, id: &str) -> BTreeMap<String, BoltType> {
    let mut rows = graph
        .execute(query("MATCH (n:Node {id: $id}) RETURN n").param("id", id))
        .await
        .expect("read node");
    let mut found = Vec::new();
    while let Some(row) = rows.next().await.expect("row") {
        found.push(row.get::<BoltType>("n").expect("node"));
    }
    assert_eq!(found.len(), 1, "exactly one node with id {id:?}");
    match found.pop() {
        Some(BoltType::Node(node)) => node
            .properties
            .value
            .into_iter()
            .map(|(k, v)| (k.value, v))
            .collect(),
        other => panic!("not a node: {other:?}"),
    }
}

/// Labels of the node with this id.
pub async fn labels(graph: &Graph, id: &str) -> Vec<String> {
    let mut rows = graph
        .execute(query("MATCH (n:Node {id: $id}) RETURN labels(n) AS l").param("id", id))
        .await
        .expect("read labels");
    let row = rows.next().await.expect("row").expect("one node");
    row.get::<Vec<String>>("l").expect("labels")
}

/// Every relationship touching the node with this id, as `(start id, type, end id)`, sorted.
///
/// The pattern starts at the node found by its id and is undirected: ArcadeDB plans
/// `(a)-[r]->(b {id: $id})` and `WHERE a.id = $id OR b.id = $id` as a scan of every
/// relationship (18 s on a test database of 1.7 M nodes, past the driver's 30 s read timeout on
/// a slower machine), but this form as an index lookup (10 ms).
pub async fn edges(graph: &Graph, id: &str) -> Vec<(String, String, String)> {
    let mut rows = graph
        .execute(
            query(
                "MATCH (n:Node {id: $id})-[r]-(:Node) \
                 RETURN startNode(r).id AS a, type(r) AS t, endNode(r).id AS b",
            )
            .param("id", id),
        )
        .await
        .expect("read edges");
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.expect("row") {
        out.push((
            row.get::<String>("a").expect("a"),
            row.get::<String>("t").expect("t"),
            row.get::<String>("b").expect("b"),
        ));
    }
    out.sort();
    out
}

/// Number of nodes with this id (the unique constraint keeps it at most 1).
pub async fn count_nodes(graph: &Graph, id: &str) -> i64 {
    let mut rows = graph
        .execute(query("MATCH (n:Node {id: $id}) RETURN count(n) AS c").param("id", id))
        .await
        .expect("count");
    let row = rows.next().await.expect("row").expect("one row");
    row.get::<i64>("c").expect("count")
}

/// Creates an `orchestration_plan` node, as the orchestrator's planner would.
pub async fn create_plan(graph: &Graph, id: &str) {
    graph
        .run(
            query("CREATE (p:Node {id: $id, type: 'orchestration_plan', title: 'plan'})")
                .param("id", id),
        )
        .await
        .expect("create plan");
}

pub fn int(v: i64) -> BoltType {
    BoltType::from(v)
}

pub fn string(v: &str) -> BoltType {
    BoltType::from(v)
}

pub fn boolean(v: bool) -> BoltType {
    BoltType::from(v)
}

/// A datetime as the server returns one written through `datetime($rfc3339)`.
pub fn datetime(t: DateTime<Utc>) -> BoltType {
    BoltType::from(t.fixed_offset())
}

/// Compares a node's properties with the expected map, key by key, Bolt type included, ignoring
/// the keys listed in `skip` (checked separately by the caller).
pub fn assert_props(
    actual: &BTreeMap<String, BoltType>,
    expected: &[(&str, BoltType)],
    skip: &[&str],
) {
    let expected: BTreeMap<&str, &BoltType> = expected.iter().map(|(k, v)| (*k, v)).collect();
    for (key, want) in &expected {
        let got = actual
            .get(*key)
            .unwrap_or_else(|| panic!("missing property {key}"));
        assert_eq!(got, *want, "property {key}");
    }
    for key in actual.keys() {
        assert!(
            expected.contains_key(key.as_str()) || skip.contains(&key.as_str()),
            "unexpected property {key} = {:?}",
            actual[key]
        );
    }
}

/// An aggregator on the live database with test-friendly settings applied by `tune`.
pub async fn aggregator(
    tune: impl FnOnce(runtally::AggregatorConfigBuilder) -> runtally::AggregatorConfigBuilder,
) -> runtally::Aggregator {
    let builder = runtally::AggregatorConfig::from_env().expect("NEO4J_* settings");
    let config = tune(builder).build().expect("valid config");
    runtally::Aggregator::start(config)
        .await
        .expect("aggregator starts")
}

/// Polls `check` every 10 ms until it returns true or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(
    within: std::time::Duration,
    mut check: F,
) -> Option<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}

/// A task definition and result with the given counts.
pub fn result(
    task: &str,
    failed: bool,
    tokens_in: u64,
    tokens_out: u64,
    calls: u64,
) -> (TaskDefinition, TaskResult) {
    let id = task_id(task);
    let r = if failed {
        TaskResult::failure(id.clone(), "failed")
    } else {
        TaskResult::success(id.clone())
    };
    (
        TaskDefinition::new(id).with_title(format!("title of {task}")),
        r.with_tokens(tokens_in, tokens_out).with_tool_calls(calls),
    )
}

pub mod fake_router;
pub mod private_db;
pub mod scripted_store;

/// What a run's results imply: totals over each task's latest result, the final status, and
/// the duration in milliseconds (0 while running; [`ANY_DURATION`] where the run timed itself,
/// as a span does).
#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
pub struct Implied {
    pub ok: i64,
    pub failed: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub calls: i64,
    pub duration: i64,
    pub total: i64,
}

/// An [`Implied::duration`] that `assert_implied` does not compare.
pub const ANY_DURATION: i64 = -1;

/// Checks every run of `want` in the database: counters, status, duration, one task node per
/// task, one FAILED_TASK edge per failed task.
pub async fn assert_implied(
    store: &runtally::store::Neo4jStore,
    graph: &neo4rs::Graph,
    want: &std::collections::HashMap<String, (Implied, runtally::RunStatus)>,
) {
    for (exec, (implied, status)) in want {
        let rec = store
            .execution(&exec_id(exec))
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{exec} stored"));
        let got = Implied {
            ok: rec.tasks_successful,
            failed: rec.tasks_failed,
            tokens_in: rec.tokens_input,
            tokens_out: rec.tokens_output,
            calls: rec.tool_calls,
            duration: if implied.duration == ANY_DURATION {
                ANY_DURATION
            } else {
                rec.duration
            },
            total: rec.tasks_total,
        };
        assert_eq!(got, *implied, "{exec}");
        assert_eq!(
            rec.tokens_total,
            implied.tokens_in + implied.tokens_out,
            "{exec}"
        );
        assert_eq!(rec.status, *status, "{exec}");
        let tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
        assert_eq!(
            tasks.len() as i64,
            implied.ok + implied.failed,
            "{exec}: one node per task"
        );
        let mut rows = graph
            .execute(
                neo4rs::query(
                    "MATCH (e:Node {id: $id})-[r]->(t:Node) RETURN type(r) AS t, count(*) AS n",
                )
                .param("id", exec.as_str()),
            )
            .await
            .expect("edges");
        let mut counts = HashMap::new();
        while let Some(row) = rows.next().await.expect("row") {
            counts.insert(
                row.get::<String>("t").expect("t"),
                row.get::<i64>("n").expect("n"),
            );
        }
        assert_eq!(
            counts.get("HAS_TASK_EXECUTION").copied().unwrap_or(0),
            implied.ok + implied.failed,
            "{exec}"
        );
        assert_eq!(
            counts.get("FAILED_TASK").copied().unwrap_or(0),
            implied.failed,
            "{exec}"
        );
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The writer's lane for a run among `lanes`: FNV-1a of its id, as `writer::lane_of`
/// documents. Used only to pick runs in different lanes.
pub fn lane(id: &str, lanes: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % lanes as u64) as usize
}

/// `n` run ids `{prefix}-{k}`, each in a different one of `lanes` lanes.
pub fn runs_in_distinct_lanes(prefix: &str, n: usize, lanes: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .filter(|id| seen.insert(lane(id, lanes)))
        .take(n)
        .collect()
}
