//! `FAILED_TASK` follows each task's latest result: present for a failure, gone when a success
//! is re-sent for the same task, whose values then replace the failure's.

mod common;

use chrono::Duration;
use common::*;
use runtally::model::{QcVerification, TaskDefinition, TaskResult};

#[tokio::test]
async fn a_failed_task_gets_a_failed_task_edge() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("failed-edge");
    let def = TaskDefinition::new(task_id("a"));
    let ok = task_row(
        &exec,
        "p",
        &TaskDefinition::new(task_id("b")),
        TaskResult::success(task_id("b")),
        t0(),
    );
    let bad = task_row(
        &exec,
        "p",
        &def,
        TaskResult::failure(task_id("a"), "boom"),
        t0(),
    );
    write(&store, vec![started(&exec, "p", 2)], vec![ok, bad]).await;

    let a = format!("{exec}-a");
    let b = format!("{exec}-b");
    assert_eq!(
        edges(&graph, &a).await,
        vec![
            (exec.clone(), "FAILED_TASK".into(), a.clone()),
            (exec.clone(), "HAS_TASK_EXECUTION".into(), a.clone()),
        ]
    );
    assert_eq!(
        edges(&graph, &b).await,
        vec![(exec.clone(), "HAS_TASK_EXECUTION".into(), b.clone())]
    );
}

#[tokio::test]
async fn a_success_re_sent_over_a_failure_removes_the_edge_and_replaces_every_value() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("resent");
    let def = TaskDefinition::new(task_id("a")).with_title("A");
    let mut qc = QcVerification::new(false, 40);
    qc.issues = Some(vec!["bad".into()]);
    qc.feedback = Some("needs work".into());
    let failure = TaskResult::failure(task_id("a"), "QC failed")
        .with_output("yyy")
        .with_tokens(10, 5)
        .with_tool_calls(1)
        .with_attempt(1)
        .with_qc(qc);
    write(
        &store,
        vec![started(&exec, "p", 1)],
        vec![task_row(&exec, "p", &def, failure, t0())],
    )
    .await;

    let later = t0() + Duration::seconds(9);
    let success = TaskResult::success(task_id("a"))
        .with_output("xxx")
        .with_tokens(20, 7)
        .with_tool_calls(3)
        .with_attempt(2)
        .with_qc(QcVerification::new(true, 95));
    write(
        &store,
        vec![],
        vec![task_row(&exec, "p", &def, success, later)],
    )
    .await;

    let te = format!("{exec}-a");
    assert_eq!(count_nodes(&graph, &te).await, 1);
    assert_eq!(
        edges(&graph, &te).await,
        vec![(exec.clone(), "HAS_TASK_EXECUTION".into(), te.clone())]
    );
    let p = props(&graph, &te).await;
    assert_eq!(p["status"], string("success"));
    assert_eq!(p["output"], string("xxx"));
    assert_eq!(p["tokensInput"], int(20));
    assert_eq!(p["tokensOutput"], int(7));
    assert_eq!(p["tokensTotal"], int(27));
    assert_eq!(p["toolCalls"], int(3));
    assert_eq!(p["attemptNumber"], int(2));
    assert_eq!(p["qcPassed"], boolean(true));
    assert_eq!(p["qcScore"], int(95));
    assert_eq!(p["timestamp"], datetime(later));
    // The failure's error and QC texts do not linger: null removes them.
    for gone in ["error", "qcIssues", "qcFeedback"] {
        assert!(!p.contains_key(gone), "{gone} should be gone");
    }
}

#[tokio::test]
async fn a_failure_re_sent_over_a_success_adds_the_edge() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("resent-fail");
    let def = TaskDefinition::new(task_id("a"));
    write(
        &store,
        vec![started(&exec, "p", 1)],
        vec![task_row(
            &exec,
            "p",
            &def,
            TaskResult::success(task_id("a")),
            t0(),
        )],
    )
    .await;
    write(
        &store,
        vec![],
        vec![task_row(
            &exec,
            "p",
            &def,
            TaskResult::failure(task_id("a"), "late"),
            t0(),
        )],
    )
    .await;
    let te = format!("{exec}-a");
    assert_eq!(
        edges(&graph, &te).await,
        vec![
            (exec.clone(), "FAILED_TASK".into(), te.clone()),
            (exec.clone(), "HAS_TASK_EXECUTION".into(), te.clone()),
        ]
    );
}
