//! The library's test helpers (tests/common at the repository root, included as they are), and
//! what reading an event stream needs on top: the values a stream implies.

#![allow(dead_code, unreachable_pub)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

use runtally::TaskResult;

/// What an event stream implies for each run: totals over each task's latest result, the final
/// status, and the duration in milliseconds (0 while running).
pub fn implied(
    events: &[runtally_cli::events::Event],
) -> std::collections::HashMap<String, (Implied, runtally::RunStatus)> {
    use runtally::{RunStatus, TaskStatus};
    use runtally_cli::events::Event;
    use std::collections::HashMap;
    let mut latest: HashMap<String, HashMap<String, TaskResult>> = HashMap::new();
    let mut out: HashMap<String, (Implied, RunStatus)> = HashMap::new();
    let mut starts = HashMap::new();
    for event in events {
        match event {
            Event::RunStarted {
                execution_id,
                start_time,
                total_tasks,
                ..
            } => {
                starts.insert(execution_id.to_string(), *start_time);
                let implied = Implied {
                    total: *total_tasks as i64,
                    ..Implied::default()
                };
                out.insert(execution_id.to_string(), (implied, RunStatus::Running));
                latest.insert(execution_id.to_string(), HashMap::new());
            }
            Event::TaskFinished {
                execution_id,
                result,
                ..
            } => {
                latest
                    .get_mut(execution_id.as_str())
                    .expect("started")
                    .insert(result.task_id.to_string(), result.clone());
            }
            Event::RunFinished {
                execution_id,
                end_time,
                cancelled,
            } => {
                let entry = out.get_mut(execution_id.as_str()).expect("started");
                entry.0.duration = (*end_time - starts[execution_id.as_str()]).num_milliseconds();
                entry.1 = if *cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Completed
                };
            }
            _ => {}
        }
    }
    for (exec, tasks) in latest {
        let (t, status) = out.get_mut(&exec).expect("run");
        for r in tasks.values() {
            if r.status == TaskStatus::Failure {
                t.failed += 1
            } else {
                t.ok += 1
            }
            t.tokens_in += r.tokens.input as i64;
            t.tokens_out += r.tokens.output as i64;
            t.calls += r.tool_calls as i64;
        }
        if t.failed > 0 && *status != RunStatus::Cancelled {
            *status = RunStatus::Failed;
        }
    }
    out
}
