//! What a tracked span adds up to as it closes: the model calls, tool calls, errors and
//! evaluations reported by the spans below it, and the task result a task span becomes. Shared
//! by the `tracing` layer (spans closing live) and the trace assembler (spans of a finished
//! trace), so both map a span tree to the same results.

use super::mapping::{qc_score, Operation, SpanFields};
use crate::model::{QcVerification, TaskDefinition, TaskId, TaskResult};

/// What a tracked span that is neither a run nor a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Helper {
    /// A model call: its usage counts for the task above.
    Inference,
    /// A tool call: one tool call of the task above.
    Tool,
    /// An agent or workflow below a task: its calls count for the task.
    Nested,
}

impl Helper {
    /// The helper an operation makes below a task, if any (other operations are not counted).
    pub(crate) fn of(operation: Operation) -> Option<Self> {
        match operation {
            Operation::Inference => Some(Self::Inference),
            Operation::ExecuteTool => Some(Self::Tool),
            Operation::InvokeAgent | Operation::InvokeWorkflow => Some(Self::Nested),
            Operation::Other => None,
        }
    }
}

/// What the spans below a tracked span reported, as they closed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Below {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) tool_calls: u64,
    /// Model calls seen below (with or without usage).
    pub(crate) inferences: u64,
    pub(crate) error: Option<String>,
    pub(crate) evaluation: Option<SpanFields>,
}

impl Below {
    pub(crate) fn add(&mut self, other: Below) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.tool_calls = self.tool_calls.saturating_add(other.tool_calls);
        self.inferences = self.inferences.saturating_add(other.inferences);
        if self.error.is_none() {
            self.error = other.error;
        }
        if other.evaluation.is_some() {
            self.evaluation = other.evaluation;
        }
    }

    /// Whether anything happened below (a run's own calls become a task only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.inferences == 0
            && self.tool_calls == 0
            && self.error.is_none()
            && self.evaluation.is_none()
    }

    /// Takes an event's error and evaluation: the first error stays, a later evaluation
    /// replaces an earlier one.
    pub(crate) fn event(&mut self, error: Option<String>, fields: SpanFields) {
        if self.error.is_none() {
            self.error = error;
        }
        if fields.score.is_some() {
            self.evaluation = Some(fields);
        }
    }
}

/// A tracked span's own fields and what its descendants reported.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) fields: SpanFields,
    pub(crate) below: Below,
}

impl Tally {
    pub(crate) fn new(fields: SpanFields) -> Self {
        Self {
            fields,
            below: Below::default(),
        }
    }

    /// The span's own usage counts only when no model call below it was seen.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        if self.below.inferences > 0 {
            (self.below.input, self.below.output)
        } else {
            (
                self.below
                    .input
                    .saturating_add(self.fields.input_tokens.unwrap_or(0)),
                self.below
                    .output
                    .saturating_add(self.fields.output_tokens.unwrap_or(0)),
            )
        }
    }

    pub(crate) fn error(&self) -> Option<String> {
        self.fields
            .error_type
            .clone()
            .or_else(|| self.below.error.clone())
    }

    /// What a closing helper span hands to the tracked span above it.
    pub(crate) fn into_contribution(self, helper: Helper) -> Below {
        let (input, output) = self.tokens();
        let Tally {
            mut fields,
            below: mut contribution,
        } = self;
        contribution.input = input;
        contribution.output = output;
        match helper {
            Helper::Inference => {
                contribution.inferences = contribution.inferences.saturating_add(1);
                // A failed model call is the task's to handle (it may retry).
                contribution.error = None;
            }
            Helper::Tool => {
                contribution.tool_calls = contribution.tool_calls.saturating_add(1);
                contribution.error = None;
            }
            Helper::Nested => {
                if contribution.error.is_none() {
                    contribution.error = fields.error_type.take();
                }
            }
        }
        if fields.score.is_some() {
            contribution.evaluation = Some(fields);
        }
        contribution
    }

    /// Whether a run's span did work of its own, beside its tasks: model or tool calls, an
    /// error, an evaluation or recorded usage (a run with no task at all counts too). A run's
    /// own usage is cleared first when its tasks saw model calls: rig records the run's total
    /// on `invoke_agent`, which would count theirs again.
    pub(crate) fn run_did_work(&mut self, task_inferences: u64, tasks: u32) -> bool {
        if task_inferences > 0 {
            self.fields.input_tokens = None;
            self.fields.output_tokens = None;
        }
        let own_usage = self.fields.input_tokens.is_some() || self.fields.output_tokens.is_some();
        !self.below.is_empty() || self.fields.error_type.is_some() || own_usage || tasks == 0
    }

    /// The task result for a task span, or a run's own work. Consumes the tally, so a recorded
    /// output moves into the result rather than being copied.
    pub(crate) fn into_result(self, id: TaskId, duration_ms: u64) -> (TaskDefinition, TaskResult) {
        let error = self.error();
        let (input, output) = self.tokens();
        let Tally { fields, below } = self;
        let mut task = TaskDefinition::new(id.clone());
        if let Some(title) = fields.agent_name.clone().or(fields.workflow_name.clone()) {
            task = task.with_title(title);
        }
        if let Some(role) = fields.agent_description.clone() {
            task = task.with_agent_role(role);
        }
        let mut result = match error {
            Some(error) => TaskResult::failure(id, error),
            None => TaskResult::success(id),
        };
        result = result
            .with_tokens(input, output)
            .with_tool_calls(below.tool_calls)
            .with_duration_ms(duration_ms);
        let evaluation = if fields.score.is_some() {
            Some(&fields)
        } else {
            below.evaluation.as_ref()
        };
        if let Some(qc) = evaluation.and_then(|e| {
            let score = qc_score(e.score?)?;
            let mut qc = QcVerification::new(e.qc_passed(), score);
            qc.feedback = e.explanation.clone();
            Some(qc)
        }) {
            result = result.with_qc(qc);
        }
        if let Some(completion) = fields.completion {
            result = result.with_output(completion);
        }
        (task, result)
    }
}

/// The name a run or task takes when no field names it.
pub(crate) fn display_name(fields: &SpanFields, span_name: &str) -> String {
    fields
        .agent_name
        .as_ref()
        .or(fields.workflow_name.as_ref())
        .cloned()
        .unwrap_or_else(|| span_name.to_owned())
}
