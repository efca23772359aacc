//! A deterministic synthetic workload: the same runs, tasks, failures and payloads as the seed
//! baseline's `gen_events.py`, generated in process (for `runtally loadgen` and the benchmarks).
//!
//! Run `r` has id `{prefix}-exec-{r}`, plan `{prefix}-plan-{r}` (or one plan shared by every
//! run), starts at `start_ms + r`; its
//! task `i` fails when `((r * 7919 + i * 104729) % 1000) / 1000 < fail_rate`; a cancelled run
//! (every `cancel_every`-th) stops halfway.

use chrono::{DateTime, TimeZone, Utc};

use runtally::{
    ExecutionId, ModelError, PlanId, QcVerification, TaskDefinition, TaskId, TaskResult,
    TaskStatus, TokenUsage,
};

use crate::events::Event;

/// The parameters `gen_events.py` takes.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// Runs.
    pub runs: usize,
    /// Tasks per run.
    pub tasks: usize,
    /// Share of failing tasks, 0 to 1.
    pub fail_rate: f64,
    /// Bytes of output per task.
    pub output_bytes: usize,
    /// Id prefix.
    pub prefix: String,
    /// Every Nth run is cancelled halfway (0: none).
    pub cancel_every: usize,
    /// First run's start, epoch milliseconds.
    pub start_ms: i64,
    /// One plan id for every run (as runs of one workflow share their plan), instead of a plan
    /// per run.
    pub plan: Option<String>,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            runs: 100,
            tasks: 20,
            fail_rate: 0.05,
            output_bytes: 500,
            prefix: "demo".to_owned(),
            cancel_every: 0,
            start_ms: 1_795_744_800_000,
            plan: None,
        }
    }
}

/// One run of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadRun {
    /// Its id.
    pub execution_id: ExecutionId,
    /// Its plan.
    pub plan_id: PlanId,
    /// Planned tasks (the spec's task count, even when cancelled).
    pub total_tasks: u64,
    /// Start.
    pub start_time: DateTime<Utc>,
    /// The tasks it reports, in order.
    pub tasks: Vec<(TaskDefinition, TaskResult)>,
    /// End.
    pub end_time: DateTime<Utc>,
    /// Cancelled halfway.
    pub cancelled: bool,
}

impl WorkloadSpec {
    /// Whether task `i` of run `r` fails.
    pub fn fails(&self, r: usize, i: usize) -> bool {
        (((r * 7919 + i * 104_729) % 1000) as f64) / 1000.0 < self.fail_rate
    }

    /// Builds run `r`.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidId`] if the prefix makes an invalid id.
    pub fn run(&self, r: usize) -> Result<WorkloadRun, ModelError> {
        let cancelled = self.cancel_every > 0 && r % self.cancel_every == self.cancel_every - 1;
        let n = if cancelled {
            self.tasks / 2
        } else {
            self.tasks
        };
        let tasks = (0..n)
            .map(|i| self.task(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        let start_ms = self.start_ms + r as i64;
        Ok(WorkloadRun {
            execution_id: ExecutionId::new(format!("{}-exec-{r}", self.prefix))?,
            plan_id: PlanId::new(match &self.plan {
                Some(plan) => plan.clone(),
                None => format!("{}-plan-{r}", self.prefix),
            })?,
            total_tasks: self.tasks as u64,
            start_time: epoch_ms(start_ms),
            tasks,
            end_time: epoch_ms(start_ms + 60_000 + n as i64 * 1000),
            cancelled,
        })
    }

    /// Builds task `i` of run `r` alone (what [`WorkloadSpec::run`] builds for each task), for
    /// a sender that generates results as it goes.
    ///
    /// # Errors
    ///
    /// As [`WorkloadSpec::run`].
    pub fn task(&self, r: usize, i: usize) -> Result<(TaskDefinition, TaskResult), ModelError> {
        let bad = self.fails(r, i);
        let id = TaskId::new(format!("task-{i}"))?;
        let mut def = TaskDefinition::new(id.clone())
            .with_title(format!("Task {i} of run {r}"))
            .with_agent_role("worker agent")
            .with_qc_role("qc reviewer")
            .with_parallel_group((i / 4) as u64);
        def.recommended_model = Some("gpt-4o".to_owned());
        def.prompt = Some(format!("Do step {i}."));
        def.dependencies = if i > 0 {
            vec![format!("task-{}", i - 1)]
        } else {
            Vec::new()
        };
        def.estimated_duration = Some("1m".to_owned());
        def.verification_criteria = Some("output is complete".to_owned());
        def.max_retries = Some(2);
        let mut qc = QcVerification::new(!bad, if bad { 40 } else { 95 });
        qc.feedback = Some(
            if bad {
                "needs work"
            } else {
                "all checks passed"
            }
            .to_owned(),
        );
        qc.issues = Some(if bad {
            vec![
                "incomplete data".to_owned(),
                "missing validation".to_owned(),
            ]
        } else {
            Vec::new()
        });
        qc.required_fixes = Some(if bad {
            vec!["retry with timeout handling".to_owned()]
        } else {
            Vec::new()
        });
        let mut result = TaskResult::new(
            id,
            if bad {
                TaskStatus::Failure
            } else {
                TaskStatus::Success
            },
        );
        result.output = (if bad { "y" } else { "x" }).repeat(self.output_bytes);
        result.duration = 100 + i as u64;
        result.preamble_path = Some("preambles/worker.md".to_owned());
        result.prompt = Some(format!("Do step {i}."));
        result.tokens = TokenUsage::new(1000 + i as u64, 500 + i as u64);
        result.tool_calls = (i % 5) as u64;
        result.qc_verification = Some(qc);
        result.attempt_number = Some(if bad { 2 } else { 1 });
        if bad {
            result.error = Some("QC failed after retries".to_owned());
        }
        Ok((def, result))
    }

    /// The whole stream in `gen_events.py`'s order: every start, then task `i` of every run in
    /// turn, then every finish.
    ///
    /// # Errors
    ///
    /// As [`WorkloadSpec::run`].
    pub fn events(&self) -> Result<Vec<Event>, ModelError> {
        let runs = (0..self.runs)
            .map(|r| self.run(r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::new();
        for run in &runs {
            events.push(Event::RunStarted {
                execution_id: run.execution_id.clone(),
                plan_id: run.plan_id.clone(),
                total_tasks: run.total_tasks,
                start_time: run.start_time,
            });
        }
        for i in 0..self.tasks {
            for run in &runs {
                if let Some((task, result)) = run.tasks.get(i) {
                    events.push(Event::TaskFinished {
                        execution_id: run.execution_id.clone(),
                        task: task.clone(),
                        result: result.clone(),
                    });
                }
            }
        }
        for run in runs {
            events.push(Event::RunFinished {
                execution_id: run.execution_id,
                end_time: run.end_time,
                cancelled: run.cancelled,
            });
        }
        Ok(events)
    }
}

fn epoch_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_follow_the_gen_events_formula() {
        let spec = WorkloadSpec {
            runs: 3,
            tasks: 40,
            fail_rate: 0.05,
            ..WorkloadSpec::default()
        };
        // ((0*7919 + i*104729) % 1000) / 1000 < 0.05 for i = 0 (0) and i = 16 (664?) …
        // checked against the formula itself, and against two known points.
        assert!(spec.fails(0, 0));
        assert!(!spec.fails(0, 1)); // 729
        let run = spec.run(0).expect("run");
        assert_eq!(
            run.tasks
                .iter()
                .filter(|(_, r)| r.status == TaskStatus::Failure)
                .count(),
            (0..40).filter(|i| spec.fails(0, *i)).count()
        );
    }

    #[test]
    fn cancelled_runs_stop_halfway() {
        let spec = WorkloadSpec {
            runs: 4,
            tasks: 10,
            cancel_every: 2,
            ..WorkloadSpec::default()
        };
        assert!(!spec.run(0).expect("run").cancelled);
        let cancelled = spec.run(1).expect("run");
        assert!(cancelled.cancelled);
        assert_eq!(cancelled.tasks.len(), 5);
        assert_eq!(cancelled.total_tasks, 10);
    }

    #[test]
    fn runs_share_the_given_plan_or_have_one_each() {
        let own = WorkloadSpec::default();
        assert_eq!(own.run(3).expect("run").plan_id.as_str(), "demo-plan-3");
        let shared = WorkloadSpec {
            plan: Some("workflow-7".to_owned()),
            ..WorkloadSpec::default()
        };
        for r in [0, 3] {
            assert_eq!(shared.run(r).expect("run").plan_id.as_str(), "workflow-7");
        }
    }
}
