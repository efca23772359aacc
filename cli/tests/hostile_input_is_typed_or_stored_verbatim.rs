//! Hostile and bad input: each piece gets a typed error or is stored verbatim, and every other
//! result is still written.

mod common;

use std::time::Duration;

use common::*;
use runtally::{ExecutionId, ModelError, RecordError, RunStart, TaskDefinition, TaskResult};

#[tokio::test]
async fn control_characters_and_ten_megabytes_are_stored_verbatim() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("hostile-'`})RETURN 1//");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 2))
        .expect("begin");
    let controls: String = (0u8..0x20)
        .map(char::from)
        .chain("\u{7f}\u{85}\u{2028}".chars())
        .collect();
    let (d, r) = result("ctl", false, 1, 1, 1);
    run.task_finished(
        d.with_title(controls.clone()),
        r.with_output(controls.clone()),
    )
    .await
    .expect("control characters");
    let big: String = "0123456789abcdef".repeat(10 * 1024 * 1024 / 16);
    let (d, r) = result("big", false, 1, 1, 1);
    run.task_finished(d, r.with_output(big.clone()))
        .await
        .expect("10 MB output");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");

    let tasks = store.task_executions(&exec_id(&exec)).await.expect("read");
    let ctl = tasks
        .iter()
        .find(|t| t.task_id == "ctl")
        .expect("ctl stored");
    assert_eq!(ctl.output, controls);
    assert_eq!(ctl.task_title, controls);
    let stored_big = tasks
        .iter()
        .find(|t| t.task_id == "big")
        .expect("big stored");
    assert_eq!(stored_big.output.len(), big.len());
    assert!(stored_big.output == big);
    let _ = agg.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn bad_results_get_typed_errors_and_the_rest_of_the_run_is_written() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("bad-results");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 5))
        .expect("begin");

    // A count above i64::MAX.
    let (d, r) = result("huge", false, 1, 1, 1);
    let err = run
        .task_finished(d, r.with_tool_calls(u64::MAX))
        .await
        .expect_err("out of range");
    assert!(
        matches!(
            err,
            RecordError::Invalid(ModelError::CountOutOfRange {
                field: "toolCalls",
                ..
            })
        ),
        "{err:?}"
    );
    // Tokens in plus out above i64::MAX.
    let (d, r) = result("sum", false, 1, 1, 1);
    let err = run
        .task_finished(d, r.with_tokens(i64::MAX as u64, 1))
        .await
        .expect_err("sum out of range");
    assert!(
        matches!(
            err,
            RecordError::Invalid(ModelError::CountOutOfRange {
                field: "tokensTotal",
                ..
            })
        ),
        "{err:?}"
    );
    // A run total that would pass i64::MAX.
    let (d, r) = result("big-a", false, i64::MAX as u64 - 10, 0, 0);
    run.task_finished(d, r).await.expect("alone it fits");
    let (d, r) = result("big-b", false, 11, 0, 0);
    let err = run
        .task_finished(d, r)
        .await
        .expect_err("run total overflows");
    assert!(
        matches!(
            err,
            RecordError::Invalid(ModelError::CountOutOfRange { .. })
        ),
        "{err:?}"
    );
    // A definition of another task.
    let err = run
        .task_finished(
            TaskDefinition::new(task_id("x")),
            TaskResult::success(task_id("y")),
        )
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, RecordError::Invalid(ModelError::TaskIdMismatch { .. })),
        "{err:?}"
    );
    // Empty and blank ids never get this far.
    assert!(ExecutionId::new("").is_err());
    assert!(ExecutionId::new(" \t ").is_err());
    assert!(runtally::TaskId::new("a\u{0}b").is_err());

    let (d, r) = result("fine", false, 3, 4, 5);
    run.task_finished(d, r).await.expect("a good result");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    assert_eq!(agg.metrics().rejected_messages, 4);
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(rec.tasks_successful, 2, "big-a and fine");
    assert_eq!(rec.tokens_input, i64::MAX - 10 + 3);
    let ids: Vec<String> = store
        .task_executions(&exec_id(&exec))
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"fine".to_owned()) && ids.contains(&"big-a".to_owned()));
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn bad_lines_in_a_replayed_file_are_reported_and_the_rest_written() {
    use std::io::Write;
    let prefix = unique("badlines");
    let e = format!("{prefix}-exec");
    let task = |id: &str, extra: &str| {
        format!(
            r#"{{"event":"task_finished","executionId":"{e}","task":{{"id":"{id}"}},"result":{{"taskId":"{id}","status":"success","tokens":{{"input":2,"output":3}}{extra}}}}}"#
        )
    };
    let lines = [
        // 1: a byte-order mark, then a valid start.
        format!("\u{feff}{{\"event\":\"run_started\",\"executionId\":\"{e}\",\"planId\":\"p\",\"totalTasks\":9,\"startTime\":1795744800000}}"),
        task("ok-1", ""),
        // 3: a QC score that is not an integer.
        task("bad-score", r#","qcVerification":{"passed":true,"score":87.5}"#),
        // 4: a token count above i64::MAX.
        task("bad-count", r#","toolCalls":9223372036854775808"#),
        // 5: an invalid surrogate.
        task("bad-\\ud800", ""),
        // 6: an empty id.
        r#"{"event":"run_started","executionId":"","planId":"p","totalTasks":1,"startTime":0}"#.to_owned(),
        // 7: an event for a run never started.
        r#"{"event":"task_finished","executionId":"nobody","task":{"id":"t"},"result":{"taskId":"t","status":"success"}}"#.to_owned(),
        // 8: not an object; 9: empty; 10: truncated.
        "\"just a string\"".to_owned(),
        String::new(),
        task("cut", "")[..40].to_owned(),
        task("ok-2", r#","output":"it's \"fine\" `})` MATCH (n) DETACH DELETE n""#),
        format!(r#"{{"event":"run_finished","executionId":"{e}","endTime":1795744860000,"cancelled":false}}"#),
        // 13: a result after the run finished.
        task("late", ""),
    ];
    let path = std::env::temp_dir().join(format!("{prefix}.jsonl"));
    let mut file = std::fs::File::create(&path).expect("file");
    for line in &lines {
        writeln!(file, "{line}").expect("write");
    }
    drop(file);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtally"))
        .args(["replay", path.to_str().expect("path")])
        .output()
        .expect("runtally replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for n in [3, 4, 5, 6, 7, 8, 9, 10, 13] {
        assert!(
            stderr.contains(&format!("line {n}:")),
            "line {n} reported: {stderr}"
        );
    }
    for n in [1, 2, 11, 12] {
        assert!(
            !stderr.contains(&format!("line {n}:")),
            "line {n} is fine: {stderr}"
        );
    }
    assert!(stderr.contains("has already finished"), "{stderr}");
    assert!(stderr.contains("never started"), "{stderr}");
    let store = store().await;
    let rec = store
        .execution(&exec_id(&e))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (rec.tasks_successful, rec.tokens_input, rec.tokens_output),
        (2, 4, 6)
    );
    assert_eq!(rec.status.as_str(), "completed");
    let tasks = store.task_executions(&exec_id(&e)).await.expect("tasks");
    let ok2 = tasks.iter().find(|t| t.task_id == "ok-2").expect("ok-2");
    assert_eq!(ok2.output, "it's \"fine\" `})` MATCH (n) DETACH DELETE n");
    let _ = std::fs::remove_file(path);
}
