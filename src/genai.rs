//! GenAI spans → runs and tasks: the one mapping from the OpenTelemetry GenAI semantic
//! conventions ([`MAPPING_VERSION`]) to runtally's runs, shared by the `tracing` layer (spans
//! as they close, `runtally::layer`, feature `tracing-layer`) and by [`assemble`] (a finished
//! trace's spans as data, which `runtally serve` uses for OTLP).
//!
//! ```
//! use chrono::{Duration, Utc};
//! use runtally::genai::{assemble, AttributeValue as V, SpanRecord};
//!
//! let t0 = Utc::now();
//! let mut run = SpanRecord::new(1, None, "invoke_agent planner", t0, t0 + Duration::seconds(3));
//! run.attribute("gen_ai.operation.name", V::Str("invoke_agent"));
//! run.attribute("runtally.execution_id", V::Str("exec-1"));
//! let mut task = SpanRecord::new(2, Some(1), "invoke_agent writer", t0, t0 + Duration::seconds(2));
//! task.attribute("gen_ai.operation.name", V::Str("invoke_agent"));
//! task.attribute("gen_ai.agent.name", V::Str("writer"));
//! let mut chat = SpanRecord::new(3, Some(2), "chat gpt-4o", t0, t0 + Duration::seconds(1));
//! chat.attribute("gen_ai.operation.name", V::Str("chat"));
//! chat.attribute("gen_ai.usage.input_tokens", V::Int(120));
//! chat.attribute("gen_ai.usage.output_tokens", V::Int(30));
//!
//! // Children before their parent, as exporters send them: the order does not matter.
//! let assembly = assemble("4bf92f3577b34da6a3ce929d0e0e4736", vec![chat, task, run]);
//! let run = &assembly.runs[0];
//! assert_eq!(run.execution_id.as_str(), "exec-1");
//! let (task, result) = &run.tasks[0];
//! assert_eq!(task.id.as_str(), "writer-1");
//! assert_eq!((result.tokens.input, result.tokens.output), (120, 30));
//! ```
//!
//! # Mapping
//!
//! Field (attribute) names follow the GenAI semantic conventions; `runtally.*` fields let a
//! host mark its own spans.
//!
//! | span | becomes | read from |
//! |---|---|---|
//! | `gen_ai.operation.name` = `invoke_agent` or `invoke_workflow`, or a span with `runtally.execution_id` / `runtally.plan_id`, with no run above it | a **run**: begun at the span's start, finished at its end | id: `runtally.execution_id`, else one made by the caller (the layer: `<instance id>-<n>`; a trace: its id); plan: `runtally.plan_id`, else `gen_ai.workflow.name`, else `gen_ai.agent.name`, else the span's name; `tasksTotal`: `runtally.total_tasks`, else 0 |
//! | `invoke_agent` / `invoke_workflow` whose nearest runtally span is the run, or any span with `runtally.task_id` inside a run | a **task** | id: `runtally.task_id`, else `<name>-<n>` (n counts the run's tasks from 1, in the order they start); title: `gen_ai.agent.name` (else `gen_ai.workflow.name`, else the span's name); role: `gen_ai.agent.description` |
//! | `chat`, `generate_content`, `text_completion` | tokens of the task above it | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` |
//! | `execute_tool` | one tool call of the task above it | |
//! | the run's own model and tool calls (no task span between), or its own failure | task `<name>-0` of the run | as for a task |
//!
//! - A task's tokens are the sum over the model calls below it. A span's own
//!   `gen_ai.usage.*` count only when no model call below it was seen (rig records the run's
//!   total on `invoke_agent` as well as each call's on `chat`; counting both would double it).
//! - A task fails when its span records `error.type` (or, in a trace, has status ERROR) or an
//!   error event happens in it (or in a span below it that is not a model or tool call: a
//!   failed tool call is an answer the model sees, and a failed model call may be retried).
//!   The error is `error.type`, else the event's message (a trace's `exception` event:
//!   `exception.type`, else `exception.message`; its status message). A run's own failure
//!   fails task `<name>-0`, so the run ends `failed`.
//! - QC: `gen_ai.evaluation.score.value` on the task's span or in an event inside it (the
//!   conventions' `gen_ai.evaluation.result`); a score within [0, 1] is a fraction of 100.
//!   Passed: `gen_ai.evaluation.score.label` (`pass`/`fail`), else `runtally.qc_passed`, else
//!   false. Feedback: `gen_ai.evaluation.explanation`.
//! - Output: `gen_ai.completion` where recorded (rig, with content recording on).
//! - Duration: the span's.
//! - A value of the wrong type or range (negative tokens, text where a number belongs) is
//!   ignored and counted.
//! - Explicit task ids must be unique within their run: a second result for an id replaces the
//!   first, as with [`RunHandle::task_finished`](crate::RunHandle::task_finished).

pub(crate) mod mapping;
pub(crate) mod tally;
mod trace;

pub use mapping::{AttributeValue, MAPPING_VERSION};
pub use trace::{assemble, AssembleError, AssembledRun, Assembly, SpanRecord};
