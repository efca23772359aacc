//! A run's counters: pure state, no actor, so it can be tested against a model.
//!
//! Each task counts once, with its latest result: a result re-sent for the same task id replaces
//! that task's earlier contribution, so at-least-once senders cannot inflate totals. The run's
//! status follows the rule in the seed notes: `failed` while any task's latest result is a
//! failure.

use std::collections::HashMap;

use crate::error::ModelError;
use crate::model::{RunStatus, TaskId};
use crate::rows::TaskRow;

/// What one task's latest result adds to its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Contribution {
    pub(crate) failed: bool,
    pub(crate) tokens_input: i64,
    pub(crate) tokens_output: i64,
    pub(crate) tool_calls: i64,
}

impl Contribution {
    pub(crate) fn of(row: &TaskRow) -> Self {
        Self {
            failed: row.failed(),
            tokens_input: row.tokens_input,
            tokens_output: row.tokens_output,
            tool_calls: row.tool_calls,
        }
    }
}

/// Sums over every task's latest result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Tasks whose latest result is a success.
    pub tasks_successful: i64,
    /// Tasks whose latest result is a failure.
    pub tasks_failed: i64,
    /// Input tokens.
    pub tokens_input: i64,
    /// Output tokens.
    pub tokens_output: i64,
    /// Tool calls.
    pub tool_calls: i64,
}

impl Totals {
    /// Input plus output tokens.
    pub fn tokens_total(&self) -> i64 {
        // Both sums are checked to stay at or below i64::MAX together, see `RunCounters::record`.
        self.tokens_input.saturating_add(self.tokens_output)
    }
}

/// What changed when a result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The task had an earlier result, now replaced.
    pub(crate) replaced: bool,
    /// The run's live status before and after.
    pub(crate) status_before: RunStatus,
    pub(crate) status_after: RunStatus,
}

/// The counters of one run.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunCounters {
    // foldhash rather than SipHash: this map is touched for every result, and task ids come
    // from the orchestrator, not from the open internet.
    tasks: HashMap<TaskId, Contribution, foldhash::fast::RandomState>,
    totals: Totals,
}

impl RunCounters {
    pub(crate) fn totals(&self) -> Totals {
        self.totals
    }

    /// `failed` while any task's latest result is a failure, else `running`.
    pub(crate) fn live_status(&self) -> RunStatus {
        if self.totals.tasks_failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Running
        }
    }

    /// The status a run ends with: `cancelled` if cancelled, else `failed` if any task's latest
    /// result is a failure, else `completed`.
    pub(crate) fn final_status(&self, cancelled: bool) -> RunStatus {
        if cancelled {
            RunStatus::Cancelled
        } else if self.totals.tasks_failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        }
    }

    /// Records a task's latest result, replacing any earlier one for the same task.
    ///
    /// # Errors
    ///
    /// [`ModelError::CountOutOfRange`] if a total would pass [`i64::MAX`]; nothing changes then.
    pub(crate) fn record(
        &mut self,
        task: &TaskId,
        new: Contribution,
    ) -> Result<Recorded, ModelError> {
        let status_before = self.live_status();
        let old = self.tasks.get(task).copied();
        let next = apply(self.totals, old, new)?;
        self.totals = next;
        let replaced = self.tasks.insert(task.clone(), new).is_some();
        Ok(Recorded {
            replaced,
            status_before,
            status_after: self.live_status(),
        })
    }
}

/// `totals - old + new`, every sum checked.
fn apply(
    mut t: Totals,
    old: Option<Contribution>,
    new: Contribution,
) -> Result<Totals, ModelError> {
    if let Some(old) = old {
        // Subtracting what was added before cannot underflow.
        t.tokens_input -= old.tokens_input;
        t.tokens_output -= old.tokens_output;
        t.tool_calls -= old.tool_calls;
        if old.failed {
            t.tasks_failed -= 1;
        } else {
            t.tasks_successful -= 1;
        }
    }
    let add = |field: &'static str, a: i64, b: i64| {
        a.checked_add(b).ok_or(ModelError::CountOutOfRange {
            field,
            value: (a as u64).saturating_add(b as u64),
        })
    };
    t.tokens_input = add("tokensInput", t.tokens_input, new.tokens_input)?;
    t.tokens_output = add("tokensOutput", t.tokens_output, new.tokens_output)?;
    add("tokensTotal", t.tokens_input, t.tokens_output)?;
    t.tool_calls = add("toolCalls", t.tool_calls, new.tool_calls)?;
    if new.failed {
        t.tasks_failed += 1;
    } else {
        t.tasks_successful += 1;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(failed: bool, i: i64, o: i64, calls: i64) -> Contribution {
        Contribution {
            failed,
            tokens_input: i,
            tokens_output: o,
            tool_calls: calls,
        }
    }

    fn t(id: &str) -> TaskId {
        TaskId::new(id).expect("id")
    }

    #[test]
    fn a_failure_makes_the_run_failed_and_a_success_of_another_task_does_not_clear_it() {
        let mut counters = RunCounters::default();
        counters.record(&t("a"), c(false, 1, 1, 1)).expect("ok");
        let r = counters.record(&t("b"), c(true, 1, 1, 1)).expect("ok");
        assert_eq!(r.status_before, RunStatus::Running);
        assert_eq!(r.status_after, RunStatus::Failed);
        counters.record(&t("c"), c(false, 1, 1, 1)).expect("ok");
        assert_eq!(counters.live_status(), RunStatus::Failed);
        assert_eq!(counters.final_status(false), RunStatus::Failed);
        assert_eq!(counters.final_status(true), RunStatus::Cancelled);
    }

    #[test]
    fn a_re_sent_result_replaces_the_earlier_one() {
        let mut counters = RunCounters::default();
        counters.record(&t("a"), c(true, 10, 5, 2)).expect("ok");
        let r = counters.record(&t("a"), c(false, 3, 4, 1)).expect("ok");
        assert!(r.replaced);
        assert_eq!(r.status_after, RunStatus::Running);
        assert_eq!(
            counters.totals(),
            Totals {
                tasks_successful: 1,
                tasks_failed: 0,
                tokens_input: 3,
                tokens_output: 4,
                tool_calls: 1
            }
        );
        assert_eq!(counters.final_status(false), RunStatus::Completed);
    }

    #[test]
    fn overflowing_totals_are_an_error_and_change_nothing() {
        let mut counters = RunCounters::default();
        counters
            .record(&t("a"), c(false, i64::MAX, 0, 0))
            .expect("ok");
        let before = counters.totals();
        let err = counters
            .record(&t("b"), c(false, 1, 0, 0))
            .expect_err("overflow");
        assert!(matches!(err, ModelError::CountOutOfRange { .. }));
        assert_eq!(counters.totals(), before);
        // Input and output may not pass i64::MAX together either: tokensTotal is stored.
        assert!(counters.record(&t("c"), c(false, 0, 1, 0)).is_err());
    }

    proptest! {
        /// Against a model that keeps every task's latest result and sums at the end.
        #[test]
        fn totals_equal_the_sums_over_each_tasks_latest_result(
            events in proptest::collection::vec((0u8..12, any::<bool>(), 0i64..10_000, 0i64..10_000, 0i64..50), 0..200)
        ) {
            let mut counters = RunCounters::default();
            let mut latest: HashMap<u8, Contribution> = HashMap::new();
            for (task, failed, i, o, calls) in events {
                let contribution = c(failed, i, o, calls);
                counters.record(&t(&format!("task-{task}")), contribution).expect("in range");
                latest.insert(task, contribution);
                let failed_now = latest.values().filter(|c| c.failed).count() as i64;
                let expected_status = if failed_now > 0 { RunStatus::Failed } else { RunStatus::Running };
                prop_assert_eq!(counters.live_status(), expected_status);
            }
            let expected = Totals {
                tasks_successful: latest.values().filter(|c| !c.failed).count() as i64,
                tasks_failed: latest.values().filter(|c| c.failed).count() as i64,
                tokens_input: latest.values().map(|c| c.tokens_input).sum(),
                tokens_output: latest.values().map(|c| c.tokens_output).sum(),
                tool_calls: latest.values().map(|c| c.tool_calls).sum(),
            };
            prop_assert_eq!(counters.totals(), expected);
        }
    }
}
