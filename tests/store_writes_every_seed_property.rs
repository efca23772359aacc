//! The store writes both node types property for property, Bolt type for Bolt type, as the
//! seed's `persistence.ts` does for the same input (with the seed's bugs fixed).

mod common;

use chrono::Duration;
use common::*;
use neo4rs::BoltType;
use runtally::model::{QcVerification, RunStatus, TaskDefinition, TaskResult};
use runtally::rows::ExecutionRow;

#[tokio::test]
async fn a_running_execution_has_every_seed_property_with_seed_types() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("props-exec");
    write(
        &store,
        vec![started(&exec, "plan-kolache-recipe", 5)],
        vec![],
    )
    .await;

    let p = props(&graph, &exec).await;
    assert_props(
        &p,
        &[
            ("id", string(&exec)),
            ("type", string("orchestration_execution")),
            ("planId", string("plan-kolache-recipe")),
            ("status", string("running")),
            ("startTime", datetime(t0())),
            ("duration", int(0)),
            ("tasksTotal", int(5)),
            ("tasksSuccessful", int(0)),
            ("tasksFailed", int(0)),
            ("tokensInput", int(0)),
            ("tokensOutput", int(0)),
            ("tokensTotal", int(0)),
            ("toolCalls", int(0)),
            ("created", datetime(t0())),
            ("updated", datetime(t0())),
            ("runtallyHeartbeat", datetime(t0())),
            ("runtallyVersion", int(0)),
        ],
        &[],
    );
    // The seed sets endTime = null, which stores no property at all.
    assert!(!p.contains_key("endTime"));
    assert_eq!(labels(&graph, &exec).await, vec!["Node".to_owned()]);
}

#[tokio::test]
async fn a_task_execution_has_every_seed_property_with_seed_types() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("props-task");
    let def = TaskDefinition::new(task_id("task-2"))
        .with_title("Fetch the data")
        .with_agent_role("data engineer")
        .with_qc_role("strict reviewer");
    let mut qc = QcVerification::new(false, 45);
    qc.feedback = Some("Incomplete".into());
    qc.issues = Some(vec!["Incomplete data".into(), "Missing validation".into()]);
    qc.required_fixes = Some(vec![
        "Retry with timeout handling".into(),
        "Add error recovery".into(),
    ]);
    let result = TaskResult::failure(task_id("task-2"), "Timeout waiting for API response")
        .with_output("partial")
        .with_duration_ms(30_000)
        .with_tokens(800, 100)
        .with_tool_calls(4)
        .with_attempt(2)
        .with_prompt("Fetch it")
        .with_qc(qc);
    let at = t0() + Duration::seconds(30);
    let row = task_row(&exec, "plan-x", &def, result, at);
    write(&store, vec![started(&exec, "plan-x", 3)], vec![row]).await;

    let te = format!("{exec}-task-2");
    let p = props(&graph, &te).await;
    assert_props(
        &p,
        &[
            ("id", string(&te)),
            ("type", string("task_execution")),
            ("executionId", string(&exec)),
            ("taskId", string("task-2")),
            ("taskTitle", string("Fetch the data")),
            ("status", string("failure")),
            ("output", string("partial")),
            ("error", string("Timeout waiting for API response")),
            ("duration", int(30_000)),
            ("agentRoleDescription", string("data engineer")),
            ("qcRoleDescription", string("strict reviewer")),
            ("prompt", string("Fetch it")),
            ("tokensInput", int(800)),
            ("tokensOutput", int(100)),
            ("tokensTotal", int(900)),
            ("toolCalls", int(4)),
            ("attemptNumber", int(2)),
            ("qcPassed", boolean(false)),
            ("qcScore", int(45)),
            ("qcFeedback", string("Incomplete")),
            ("qcIssues", string("Incomplete data\nMissing validation")),
            (
                "qcRequiredFixes",
                string("Retry with timeout handling\nAdd error recovery"),
            ),
            ("timestamp", datetime(at)),
            ("updated", datetime(at)),
        ],
        &[],
    );
    assert_eq!(labels(&graph, &te).await, vec!["Node".to_owned()]);
    assert_eq!(
        edges(&graph, &te).await,
        vec![
            (exec.clone(), "FAILED_TASK".into(), te.clone()),
            (exec.clone(), "HAS_TASK_EXECUTION".into(), te.clone()),
        ]
    );
}

#[tokio::test]
async fn a_bare_result_takes_the_seed_defaults_and_leaves_null_properties_absent() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("props-defaults");
    // No title, no roles, no prompt, no qc, no tokens: the seed's `|| default` values apply.
    let def = TaskDefinition::new(task_id("t"));
    let row = task_row(&exec, "p", &def, TaskResult::success(task_id("t")), t0());
    write(&store, vec![started(&exec, "p", 1)], vec![row]).await;

    let te = format!("{exec}-t");
    let p = props(&graph, &te).await;
    assert_props(
        &p,
        &[
            ("id", string(&te)),
            ("type", string("task_execution")),
            ("executionId", string(&exec)),
            ("taskId", string("t")),
            ("taskTitle", string("t")),
            ("status", string("success")),
            ("output", string("")),
            ("duration", int(0)),
            ("agentRoleDescription", string("")),
            ("tokensInput", int(0)),
            ("tokensOutput", int(0)),
            ("tokensTotal", int(0)),
            ("toolCalls", int(0)),
            ("attemptNumber", int(1)),
            ("qcPassed", boolean(false)),
            ("qcScore", int(0)),
            ("timestamp", datetime(t0())),
            ("updated", datetime(t0())),
        ],
        &[],
    );
    for absent in [
        "error",
        "qcRoleDescription",
        "prompt",
        "qcFeedback",
        "qcIssues",
        "qcRequiredFixes",
    ] {
        assert!(!p.contains_key(absent), "{absent} should be absent (null)");
    }
    assert_eq!(
        edges(&graph, &te).await,
        vec![(exec.clone(), "HAS_TASK_EXECUTION".into(), te.clone())]
    );
}

#[tokio::test]
async fn progress_is_written_as_absolute_values_and_final_state_sets_end_and_duration() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("props-final");
    let mut row = started(&exec, "p", 3);
    write(&store, vec![row.clone()], vec![]).await;

    let end = t0() + Duration::minutes(7) + Duration::milliseconds(5);
    row.status = RunStatus::Completed;
    row.tasks_successful = 3;
    row.tokens_input = 3100;
    row.tokens_output = 1500;
    row.tokens_total = 4600;
    row.tool_calls = 10;
    row.end_time = Some(end);
    row.duration_ms = (end - t0()).num_milliseconds();
    row.updated = end;
    row.created = end; // ignored: created is set only when the node is created
    row.link_plan = false;
    // Written twice: absolute values do not add up.
    write(&store, vec![row.clone()], vec![]).await;
    write(&store, vec![row.clone()], vec![]).await;

    let p = props(&graph, &exec).await;
    assert_eq!(p["status"], string("completed"));
    assert_eq!(p["tasksSuccessful"], int(3));
    assert_eq!(p["tokensInput"], int(3100));
    assert_eq!(p["tokensOutput"], int(1500));
    assert_eq!(p["tokensTotal"], int(4600));
    assert_eq!(p["toolCalls"], int(10));
    assert_eq!(p["endTime"], datetime(end));
    assert_eq!(p["duration"], int(420_005));
    assert_eq!(p["created"], datetime(t0()));
    assert_eq!(p["updated"], datetime(end));
}

#[tokio::test]
async fn an_older_version_of_a_run_never_overwrites_a_newer_one() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("versions");
    let mut newer = started(&exec, "p", 1);
    newer.version = 7;
    newer.status = RunStatus::Failed;
    newer.tasks_failed = 1;
    write(&store, vec![newer.clone()], vec![]).await;
    // An older state arriving later (a queued write overtaken by an urgent copy) is ignored.
    let mut older = started(&exec, "p", 1);
    older.version = 3;
    write(&store, vec![older], vec![]).await;
    let p = props(&graph, &exec).await;
    assert_eq!(p["status"], string("failed"));
    assert_eq!(p["tasksFailed"], int(1));
    assert_eq!(p["runtallyVersion"], int(7));
    // The same version again (a retried batch) applies, changing nothing.
    write(&store, vec![newer], vec![]).await;
    assert_eq!(props(&graph, &exec).await, p);
}

#[tokio::test]
async fn owner_is_recorded_for_reconciliation() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("props-owner");
    let mut row: ExecutionRow = started(&exec, "p", 1);
    row.owner = Some("host-1/1234/abcd".into());
    write(&store, vec![row], vec![]).await;
    let p = props(&graph, &exec).await;
    assert_eq!(p["runtallyOwner"], string("host-1/1234/abcd"));
    assert!(matches!(p["runtallyHeartbeat"], BoltType::DateTime(_)));
}
