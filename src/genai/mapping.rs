//! Which span fields runtally reads, and what they become: the mapping from the OpenTelemetry
//! GenAI semantic conventions (and runtally's own `runtally.*` fields) to runs and tasks. Kept
//! in one place because every `gen_ai.*` name is still "development" upstream and may change;
//! [`MAPPING_VERSION`] names the version this file follows.
//!
//! Pure: no span, no subscriber. The `tracing` layer feeds recorded values in
//! through [`SpanFields`]'s [`Visit`] implementation, the trace assembler ([`super::trace`])
//! through [`SpanFields::record`], and both read the result.

use tracing::field::{Field, Visit};

/// The conventions this mapping follows: the GenAI semantic conventions' schema version, as
/// published in `open-telemetry/semantic-conventions-genai`.
pub const MAPPING_VERSION: &str = "gen-ai/1.42.0";

/// `gen_ai.operation.name`: what a GenAI span does.
pub(crate) const OPERATION: &str = "gen_ai.operation.name";
/// A run's id, given by the host (at span creation).
pub(crate) const EXECUTION_ID: &str = "runtally.execution_id";
/// A run's plan id, given by the host (at span creation).
pub(crate) const PLAN_ID: &str = "runtally.plan_id";
/// A run's planned task count (`tasksTotal`), given by the host (at span creation).
pub(crate) const TOTAL_TASKS: &str = "runtally.total_tasks";
/// Marks a span as a task and names it.
pub(crate) const TASK_ID: &str = "runtally.task_id";
/// Whether QC passed, when the evaluation's label does not say.
pub(crate) const QC_PASSED: &str = "runtally.qc_passed";
const AGENT_NAME: &str = "gen_ai.agent.name";
const AGENT_DESCRIPTION: &str = "gen_ai.agent.description";
const WORKFLOW_NAME: &str = "gen_ai.workflow.name";
const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
const ERROR_TYPE: &str = "error.type";
/// rig records the run's final answer here (with content recording on).
const COMPLETION: &str = "gen_ai.completion";
const SCORE_VALUE: &str = "gen_ai.evaluation.score.value";
const SCORE_LABEL: &str = "gen_ai.evaluation.score.label";
const EXPLANATION: &str = "gen_ai.evaluation.explanation";

/// Whether a span or event with these field names can matter to runtally: the one check made
/// for every span of every library, so it only compares names.
// Only the `tracing` layer reads fields as they are recorded.
#[cfg(feature = "tracing-layer")]
pub(crate) fn is_candidate<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|name| name == OPERATION || name.starts_with("runtally."))
}

/// Whether an event's fields carry something a task takes: an error or an evaluation.
// Only the `tracing` layer reads fields as they are recorded.
#[cfg(feature = "tracing-layer")]
pub(crate) fn event_matters<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|name| name == ERROR_TYPE || name == SCORE_VALUE)
}

/// The GenAI operations runtally tells apart (`gen_ai.operation.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `invoke_agent`: an agent's run; a run at the root, a task below one.
    InvokeAgent,
    /// `invoke_workflow`: a workflow; a run at the root, a task below one.
    InvokeWorkflow,
    /// `chat`, `generate_content`, `text_completion`: one model call, whose usage counts.
    Inference,
    /// `execute_tool`: one tool call.
    ExecuteTool,
    /// Any other operation (`embeddings`, `retrieval`, memory operations…): not counted.
    Other,
}

impl Operation {
    pub(crate) fn parse(name: &str) -> Self {
        match name {
            "invoke_agent" => Self::InvokeAgent,
            "invoke_workflow" => Self::InvokeWorkflow,
            "chat" | "generate_content" | "text_completion" => Self::Inference,
            "execute_tool" => Self::ExecuteTool,
            _ => Self::Other,
        }
    }

    /// Whether a span with this operation can be a run (at the root) or a task (below one).
    pub(crate) fn is_agent_or_workflow(self) -> bool {
        matches!(self, Self::InvokeAgent | Self::InvokeWorkflow)
    }
}

/// The values runtally reads from one span (or event), as recorded so far: at creation, then by
/// `Span::record`. A later value replaces an earlier one. A value of the wrong type or range is
/// ignored and counted in `malformed`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SpanFields {
    pub(crate) operation: Option<Operation>,
    pub(crate) execution_id: Option<String>,
    pub(crate) plan_id: Option<String>,
    pub(crate) total_tasks: Option<u64>,
    pub(crate) task_id: Option<String>,
    pub(crate) agent_name: Option<String>,
    pub(crate) agent_description: Option<String>,
    pub(crate) workflow_name: Option<String>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) error_type: Option<String>,
    pub(crate) completion: Option<String>,
    pub(crate) score: Option<f64>,
    pub(crate) score_label: Option<String>,
    pub(crate) explanation: Option<String>,
    pub(crate) qc_passed: Option<bool>,
    /// Values ignored for their type or range (negative tokens, text where a number belongs).
    pub(crate) malformed: u32,
}

/// Where a value goes.
enum Slot {
    Text(fn(&mut SpanFields) -> &mut Option<String>),
    Count(fn(&mut SpanFields) -> &mut Option<u64>),
    Operation,
    Score,
    Flag,
    Ignored,
}

fn slot(name: &str) -> Slot {
    match name {
        OPERATION => Slot::Operation,
        EXECUTION_ID => Slot::Text(|f| &mut f.execution_id),
        PLAN_ID => Slot::Text(|f| &mut f.plan_id),
        TOTAL_TASKS => Slot::Count(|f| &mut f.total_tasks),
        TASK_ID => Slot::Text(|f| &mut f.task_id),
        AGENT_NAME => Slot::Text(|f| &mut f.agent_name),
        AGENT_DESCRIPTION => Slot::Text(|f| &mut f.agent_description),
        WORKFLOW_NAME => Slot::Text(|f| &mut f.workflow_name),
        INPUT_TOKENS => Slot::Count(|f| &mut f.input_tokens),
        OUTPUT_TOKENS => Slot::Count(|f| &mut f.output_tokens),
        ERROR_TYPE => Slot::Text(|f| &mut f.error_type),
        COMPLETION => Slot::Text(|f| &mut f.completion),
        SCORE_VALUE => Slot::Score,
        SCORE_LABEL => Slot::Text(|f| &mut f.score_label),
        EXPLANATION => Slot::Text(|f| &mut f.explanation),
        QC_PASSED => Slot::Flag,
        _ => Slot::Ignored,
    }
}

/// One attribute or field value, as a span carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AttributeValue<'a> {
    /// Text.
    Str(&'a str),
    /// A signed integer (OpenTelemetry's `intValue`).
    Int(i64),
    /// An unsigned integer (`tracing`'s `u64` fields).
    Uint(u64),
    /// A floating-point number.
    Double(f64),
    /// A boolean.
    Bool(bool),
}

impl SpanFields {
    /// Records one named value: where runtally reads the name, the value goes to its slot; a
    /// value of the wrong type or range counts in `malformed`; other names are ignored.
    pub(crate) fn record(&mut self, name: &str, value: AttributeValue<'_>) {
        match (slot(name), value) {
            (Slot::Ignored, _) => {}
            (Slot::Text(place), AttributeValue::Str(v)) => *place(self) = Some(v.to_owned()),
            (Slot::Operation, AttributeValue::Str(v)) => self.operation = Some(Operation::parse(v)),
            // A number where text belongs (an id given as a number) reads as its digits.
            (Slot::Text(place), AttributeValue::Uint(v)) => *place(self) = Some(v.to_string()),
            (Slot::Text(place), AttributeValue::Int(v)) if v >= 0 => {
                *place(self) = Some(v.to_string())
            }
            (Slot::Count(place), AttributeValue::Uint(v)) => *place(self) = Some(v),
            (Slot::Count(place), AttributeValue::Int(v)) => match u64::try_from(v) {
                Ok(v) => *place(self) = Some(v),
                Err(_) => self.malformed += 1,
            },
            (Slot::Score, AttributeValue::Uint(v)) => self.score = Some(v as f64),
            (Slot::Score, AttributeValue::Int(v)) => self.score = Some(v as f64),
            (Slot::Score, AttributeValue::Double(v)) if v.is_finite() => self.score = Some(v),
            (Slot::Flag, AttributeValue::Bool(v)) => self.qc_passed = Some(v),
            _ => self.malformed += 1,
        }
    }

    /// Merges what `other` recorded into these fields (later values win).
    // Only the `tracing` layer reads fields as they are recorded.
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn merge(&mut self, other: SpanFields) {
        fn take<T>(into: &mut Option<T>, from: Option<T>) {
            if from.is_some() {
                *into = from;
            }
        }
        take(&mut self.operation, other.operation);
        take(&mut self.execution_id, other.execution_id);
        take(&mut self.plan_id, other.plan_id);
        take(&mut self.total_tasks, other.total_tasks);
        take(&mut self.task_id, other.task_id);
        take(&mut self.agent_name, other.agent_name);
        take(&mut self.agent_description, other.agent_description);
        take(&mut self.workflow_name, other.workflow_name);
        take(&mut self.input_tokens, other.input_tokens);
        take(&mut self.output_tokens, other.output_tokens);
        take(&mut self.error_type, other.error_type);
        take(&mut self.completion, other.completion);
        take(&mut self.score, other.score);
        take(&mut self.score_label, other.score_label);
        take(&mut self.explanation, other.explanation);
        take(&mut self.qc_passed, other.qc_passed);
        self.malformed += other.malformed;
    }

    /// Whether QC passed: the evaluation's label (`pass`/`passed`/`true` or
    /// `fail`/`failed`/`false`, any case), else `runtally.qc_passed`, else `false` (the seed's
    /// default for a missing verdict).
    pub(crate) fn qc_passed(&self) -> bool {
        let label = self.score_label.as_deref().map(str::to_ascii_lowercase);
        match label.as_deref() {
            Some("pass" | "passed" | "true") => true,
            Some("fail" | "failed" | "false") => false,
            _ => self.qc_passed.unwrap_or(false),
        }
    }
}

/// The seed's QC score is an integer from 0 to 100; GenAI evaluations score as a double, often
/// from 0 to 1. A score within [0, 1] is read as a fraction (0.87 → 87); anything else is
/// rounded as it is. Not finite: `None`.
pub(crate) fn qc_score(value: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let scaled = if (0.0..=1.0).contains(&value) {
        value * 100.0
    } else {
        value
    };
    // In range of i64 after the clamp, so the cast is exact up to rounding.
    Some(scaled.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64)
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field.name(), AttributeValue::Str(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field.name(), AttributeValue::Uint(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field.name(), AttributeValue::Int(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field.name(), AttributeValue::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field.name(), AttributeValue::Bool(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` and `?value` arrive here: text slots take the formatted value; counts
        // formatted this way are not numbers runtally trusts.
        if let Slot::Ignored = slot(field.name()) {
            return;
        }
        self.record(field.name(), AttributeValue::Str(&format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::field::Value;

    /// Records `(name, value)` pairs through a callsite with exactly these field names.
    fn recorded(values: &[(&'static str, &dyn Value)]) -> SpanFields {
        struct Callsite;
        impl tracing::Callsite for Callsite {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static CALLSITE: Callsite = Callsite;
        let names: Vec<&'static str> = values.iter().map(|(n, _)| *n).collect();
        let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
        let fields = tracing::field::FieldSet::new(names, tracing::callsite::Identifier(&CALLSITE));
        let mut out = SpanFields::default();
        for (name, value) in values {
            let field = fields.field(name).expect("declared");
            value.record(&field, &mut out);
        }
        out
    }

    #[test]
    fn counts_and_names_are_read_from_their_fields() {
        let f = recorded(&[
            (OPERATION, &"invoke_agent"),
            (AGENT_NAME, &"planner"),
            (INPUT_TOKENS, &12u64),
            (OUTPUT_TOKENS, &7i64),
            (EXECUTION_ID, &42u64),
        ]);
        assert_eq!(f.operation, Some(Operation::InvokeAgent));
        assert_eq!(f.agent_name.as_deref(), Some("planner"));
        assert_eq!((f.input_tokens, f.output_tokens), (Some(12), Some(7)));
        assert_eq!(f.execution_id.as_deref(), Some("42"));
        assert_eq!(f.malformed, 0);
    }

    #[test]
    fn negative_tokens_and_text_counts_are_malformed_and_ignored() {
        let f = recorded(&[
            (INPUT_TOKENS, &-3i64),
            (OUTPUT_TOKENS, &"many"),
            (OPERATION, &true),
            (SCORE_VALUE, &f64::NAN),
        ]);
        assert_eq!((f.input_tokens, f.output_tokens), (None, None));
        assert_eq!(f.operation, None);
        assert_eq!(f.score, None);
        assert_eq!(f.malformed, 4);
    }

    #[test]
    fn other_libraries_fields_are_ignored() {
        let f = recorded(&[("http.method", &"GET"), ("bytes", &-1i64), ("ok", &false)]);
        assert_eq!(f, SpanFields::default());
    }

    #[test]
    fn later_values_replace_earlier_ones_when_merged() {
        let mut f = recorded(&[(INPUT_TOKENS, &1u64), (AGENT_NAME, &"a")]);
        f.merge(recorded(&[(INPUT_TOKENS, &5u64), (OUTPUT_TOKENS, &-1i64)]));
        assert_eq!(f.input_tokens, Some(5));
        assert_eq!(f.agent_name.as_deref(), Some("a"));
        assert_eq!(f.malformed, 1);
    }

    #[test]
    fn qc_scores_in_the_unit_interval_are_fractions_of_a_hundred() {
        assert_eq!(qc_score(0.87), Some(87));
        assert_eq!(qc_score(1.0), Some(100));
        assert_eq!(qc_score(95.0), Some(95));
        assert_eq!(qc_score(-2.4), Some(-2));
        assert_eq!(qc_score(f64::INFINITY), None);
        assert_eq!(qc_score(1e300), Some(i64::MAX));
    }

    #[test]
    fn qc_passes_by_label_then_flag_and_fails_by_default() {
        let mut f = SpanFields::default();
        assert!(!f.qc_passed());
        f.qc_passed = Some(true);
        assert!(f.qc_passed());
        f.score_label = Some("FAIL".into());
        assert!(!f.qc_passed());
        f.score_label = Some("passed".into());
        assert!(f.qc_passed());
    }

    #[test]
    fn candidates_are_told_apart_by_field_names_alone() {
        assert!(is_candidate([OPERATION].into_iter()));
        assert!(is_candidate(["x", "runtally.task_id"].into_iter()));
        assert!(!is_candidate(["gen_ai.agent.name", "message"].into_iter()));
        assert!(event_matters(["message", ERROR_TYPE].into_iter()));
        assert!(!event_matters(["message"].into_iter()));
    }
}
