//! Strings reach the database as parameters and come back byte for byte: quotes, backslashes,
//! newlines, Cypher keywords, non-ASCII text, and a 5 MB output stored whole.

mod common;

use common::*;
use runtally::model::{TaskDefinition, TaskResult};

const HOSTILE: &str = "it's \"quoted\" `ticked` \\back\\slash\\ \n new\r\nline \t tab \
    }) MATCH (n) DETACH DELETE n // ${param} $rows ; RETURN 1 \
    Grüße, 漢字, العربية, emoji 🙂🚀, zero\u{200b}width";

#[tokio::test]
async fn hostile_strings_are_stored_verbatim_everywhere() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("verbatim-'\"`})-MATCH");
    let task = "task-'\"`}) RETURN 1 //ü";
    let def = TaskDefinition::new(task_id(task))
        .with_title(HOSTILE)
        .with_agent_role(HOSTILE)
        .with_qc_role(HOSTILE);
    let mut qc = runtally::model::QcVerification::new(false, 1);
    qc.feedback = Some(HOSTILE.into());
    qc.issues = Some(vec![HOSTILE.into(), "second".into()]);
    let result = TaskResult::failure(task_id(task), HOSTILE)
        .with_output(HOSTILE)
        .with_prompt(HOSTILE)
        .with_qc(qc);
    let plan = format!("plan-{HOSTILE}").replace(['\n', '\r', '\t'], " ");
    write(
        &store,
        vec![started(&exec, &plan, 1)],
        vec![task_row(&exec, &plan, &def, result, t0())],
    )
    .await;

    let te = format!("{exec}-{task}");
    let p = props(&graph, &te).await;
    for key in [
        "taskTitle",
        "output",
        "error",
        "agentRoleDescription",
        "qcRoleDescription",
        "prompt",
        "qcFeedback",
    ] {
        assert_eq!(p[key], string(HOSTILE), "{key}");
    }
    assert_eq!(p["qcIssues"], string(&format!("{HOSTILE}\nsecond")));
    assert_eq!(p["taskId"], string(task));
    assert_eq!(props(&graph, &exec).await["planId"], string(&plan));
    // Nothing was deleted by the text that looks like Cypher.
    assert_eq!(count_nodes(&graph, &exec).await, 1);
}

#[tokio::test]
async fn a_five_megabyte_output_is_stored_whole() {
    let store = store().await;
    let exec = unique("big-output");
    let output: String = (0..5 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let def = TaskDefinition::new(task_id("big"));
    let result = TaskResult::success(task_id("big")).with_output(output.clone());
    write(
        &store,
        vec![started(&exec, "p", 1)],
        vec![task_row(&exec, "p", &def, result, t0())],
    )
    .await;
    let tasks = store.task_executions(&exec_id(&exec)).await.expect("read");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].output.len(), output.len());
    assert!(tasks[0].output == output, "5 MB output differs");
}
