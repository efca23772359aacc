/**
 * The events each seed function becomes: pure functions, no I/O, so the request bodies can be
 * tested without a server. The shapes are those of `POST /v1/events` (and of the event streams
 * `runtally replay` reads): camelCase, times in epoch milliseconds.
 *
 * @module events
 */

import type { ExecutionResult, TaskDefinition } from './types.js';

/** A workflow run started. */
export interface RunStartedEvent {
  event: 'run_started';
  executionId: string;
  planId: string;
  totalTasks: number;
  /** Epoch milliseconds. */
  startTime: number;
}

/** A task finished; `task.id` always equals `result.taskId`. */
export interface TaskFinishedEvent {
  event: 'task_finished';
  executionId: string;
  task: TaskDefinition;
  result: ExecutionResult;
}

/** A workflow run ended (finished or cancelled). */
export interface RunFinishedEvent {
  event: 'run_finished';
  executionId: string;
  /** Epoch milliseconds. */
  endTime: number;
  cancelled: boolean;
}

/** Any event this client sends. */
export type RuntallyEvent = RunStartedEvent | TaskFinishedEvent | RunFinishedEvent;

/**
 * The seed stores every count through `neo4j.int(x)`, which truncates a fractional number
 * (a duration measured with `performance.now()`, say). runtally reads counts as JSON integers
 * and would reject the event, so a finite fractional number is truncated here as the seed would
 * have; everything else (integers, `NaN`, which JSON sends as `null` and runtally reads as 0,
 * non-numbers) is passed on untouched.
 */
function fractional(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && !Number.isInteger(value);
}

function seedInt<T>(value: T): T {
  return fractional(value) ? (Math.trunc(value) as T) : value;
}

/** `result` with its counts made integers as the seed makes them; copies only what changes. */
function withSeedInts(result: ExecutionResult): ExecutionResult {
  let out = result;
  for (const key of ['duration', 'toolCalls', 'attemptNumber'] as const) {
    if (fractional(result[key])) out = { ...out, [key]: seedInt(result[key]) };
  }
  const tokens = result.tokens;
  if (tokens && (fractional(tokens.input) || fractional(tokens.output))) {
    out = { ...out, tokens: { ...tokens, input: seedInt(tokens.input), output: seedInt(tokens.output) } };
  }
  const qc = result.qcVerification;
  if (qc && fractional(qc.score)) {
    out = { ...out, qcVerification: { ...qc, score: seedInt(qc.score) } };
  }
  return out;
}

/**
 * The events `createExecutionNodeInNeo4j` sends: one `run_started`.
 *
 * @internal Exported for tests.
 */
export function eventsForCreate(
  executionId: string,
  planId: string,
  totalTasks: number,
  startTime: number,
): [RunStartedEvent] {
  return [
    {
      event: 'run_started',
      executionId,
      planId,
      totalTasks: seedInt(totalTasks),
      // `new Date(ms)`, which the seed builds its timestamp from, truncates the same way.
      startTime: seedInt(startTime),
    },
  ];
}

/**
 * The events `persistTaskExecutionToNeo4j` sends: one `task_finished`. The seed names the task
 * node after its `taskId` argument, whatever `task.id` and `result.taskId` say, so both are
 * set to it (runtally requires them equal). Neither input is modified.
 *
 * @internal Exported for tests.
 */
export function eventsForPersist(
  executionId: string,
  taskId: string,
  result: ExecutionResult,
  task: TaskDefinition,
): [TaskFinishedEvent] {
  return [
    {
      event: 'task_finished',
      executionId,
      task: { ...task, id: taskId },
      result: { ...withSeedInts(result), taskId },
    },
  ];
}

/**
 * The events `updateExecutionNodeProgress` sends: none. The seed's progress call adds the task's
 * tokens and tool calls to the execution node (`x = x + delta`), which double-counts whenever it
 * is retried and is wrong when the caller skips results; runtally computes every counter itself
 * from each task's latest `task_finished`, which `persistTaskExecutionToNeo4j` already sent.
 *
 * @internal Exported for tests.
 */
export function eventsForProgress(
  _executionId: string,
  _taskResult: ExecutionResult,
  _tasksFailed: number,
  _tasksSuccessful: number,
): [] {
  return [];
}

/**
 * The events `updateExecutionNodeInNeo4j` sends: one `run_finished`. `results` is not sent:
 * runtally derives the final status (`failed` if any task's latest result is a failure, else
 * `completed`; `cancelled` when cancelled) from the task results it received.
 *
 * @internal Exported for tests.
 */
export function eventsForFinalize(
  executionId: string,
  _results: ExecutionResult[],
  endTime: number,
  cancelled: boolean = false,
): [RunFinishedEvent] {
  return [
    {
      event: 'run_finished',
      executionId,
      endTime: seedInt(endTime),
      // The seed tests it for truthiness.
      cancelled: Boolean(cancelled),
    },
  ];
}

/**
 * A short name for an event in error messages: `task_finished exec-1/task-2`.
 *
 * @internal
 */
export function describeEvent(event: RuntallyEvent | undefined): string {
  if (!event) return 'an event this client did not send';
  if (event.event === 'task_finished') return `task_finished ${event.executionId}/${event.result.taskId}`;
  return `${event.event} ${event.executionId}`;
}
