/**
 * A drop-in replacement for the seed orchestrator's `api/orchestration/persistence` module.
 *
 * The four functions keep the seed's names, signatures and error behaviour, but instead of one
 * Cypher query per call they send events to `runtally serve` (`POST /v1/events`), which keeps
 * the counters itself and writes the same graph in batches:
 *
 * | seed function                 | request                                    |
 * | ----------------------------- | ------------------------------------------ |
 * | `createExecutionNodeInNeo4j`  | `run_started`                              |
 * | `persistTaskExecutionToNeo4j` | `task_finished`                            |
 * | `updateExecutionNodeProgress` | none (runtally derives every counter)      |
 * | `updateExecutionNodeInNeo4j`  | `run_finished`                             |
 *
 * A call resolves once the server has accepted the event; the graph shows it shortly after, so
 * readers poll the execution node as the seed's readers already do.
 *
 * @example
 * // before: import { ... } from './persistence.js';
 * import {
 *   createExecutionNodeInNeo4j,
 *   persistTaskExecutionToNeo4j,
 *   updateExecutionNodeProgress,
 *   updateExecutionNodeInNeo4j,
 * } from '@runtally/seed-persistence';
 *
 * @module
 */

import { resolveConfig } from './config.js';
import { eventsForCreate, eventsForFinalize, eventsForPersist, eventsForProgress } from './events.js';
import { postEvents } from './transport.js';
import type { ExecutionResult, TaskDefinition } from './types.js';

export type { ExecutionResult, QCResult, TaskDefinition } from './types.js';
export {
  configure,
  resetConfiguration,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_URL,
  type ResolvedConfig,
  type RuntallyClientOptions,
} from './config.js';
export { RuntallyError, type Rejection, type RuntallyErrorCode, type RuntallyErrorDetails } from './errors.js';
export {
  eventsForCreate,
  eventsForFinalize,
  eventsForPersist,
  eventsForProgress,
  type RunFinishedEvent,
  type RunStartedEvent,
  type RuntallyEvent,
  type TaskFinishedEvent,
} from './events.js';
export { BACKOFF_BASE_MS, BACKOFF_MAX_MS, RETRY_AFTER_MAX_MS } from './transport.js';

/**
 * Sends `events` with the configuration in force; prints the seed's success line, or its
 * failure line before rethrowing.
 */
async function deliver(
  build: () => Parameters<typeof postEvents>[0],
  done: string,
  failed: string,
): Promise<void> {
  let log = true;
  try {
    const config = resolveConfig();
    log = config.log;
    await postEvents(build(), config);
  } catch (error) {
    if (log) console.error(failed, error);
    throw error;
  }
  if (log) console.log(done);
}

/**
 * Records that a task finished: sends a `task_finished` event with `task` and `result`, both
 * with their id set to `taskId` (the seed names the node after `taskId`). Sending the same task
 * again replaces its earlier result; nothing is counted twice.
 *
 * @param graphManager - Accepted for the seed's signature and ignored.
 * @param executionId - The run, e.g. `exec-1763134573643`.
 * @param taskId - The task, e.g. `task-1.1`.
 * @param result - The task's result.
 * @param task - The task's definition.
 * @returns The task node's id, `${executionId}-${taskId}`, once runtally has accepted the event.
 * @throws {RuntallyError} If the server refuses the event or cannot be reached (see README).
 */
export async function persistTaskExecutionToNeo4j(
  graphManager: unknown,
  executionId: string,
  taskId: string,
  result: ExecutionResult,
  task: TaskDefinition,
): Promise<string> {
  const taskExecutionId = `${executionId}-${taskId}`;
  await deliver(
    () => eventsForPersist(executionId, taskId, result, task),
    `💾 Persisted task execution: ${taskExecutionId}`,
    `⚠️ Failed to persist task execution ${taskExecutionId}:`,
  );
  return taskExecutionId;
}

/**
 * Records that a run started: sends a `run_started` event. Sending it again for a live or
 * recently ended run is a no-op.
 *
 * @param graphManager - Accepted for the seed's signature and ignored.
 * @param executionId - The run's id.
 * @param planId - Its plan's id.
 * @param totalTasks - Planned task count (stored as `tasksTotal`).
 * @param startTime - Start, epoch milliseconds.
 * @throws {RuntallyError} If the server refuses the event or cannot be reached.
 */
export async function createExecutionNodeInNeo4j(
  graphManager: unknown,
  executionId: string,
  planId: string,
  totalTasks: number,
  startTime: number,
): Promise<void> {
  await deliver(
    () => eventsForCreate(executionId, planId, totalTasks, startTime),
    `💾 Created execution node: ${executionId}`,
    `⚠️ Failed to create execution node:`,
  );
}

/**
 * Does not send anything. The seed's version adds the task's tokens and tool calls to the
 * execution node (`x = x + delta`), which double-counts on a retry and undercounts when its
 * caller skips results; runtally instead keeps every counter of the run as the sum over each
 * task's latest result, from the `task_finished` events `persistTaskExecutionToNeo4j` sends,
 * and marks the run `failed` as soon as a failed result arrives. The arguments are accepted
 * for the seed's signature and ignored.
 *
 * Like the seed's, it never rejects. When `taskResult` is a failure it prints the seed's line
 * (`⚠️ Execution node marked as FAILED after task …`), which is true of runtally too.
 */
export async function updateExecutionNodeProgress(
  graphManager: unknown,
  executionId: string,
  taskResult: ExecutionResult,
  tasksFailed: number,
  tasksSuccessful: number,
): Promise<void> {
  eventsForProgress(executionId, taskResult, tasksFailed, tasksSuccessful);
  let log = true;
  try {
    log = resolveConfig().log;
  } catch {
    // A bad RUNTALLY_URL is reported by the calls that send; this one sends nothing.
  }
  if (log && taskResult?.status === 'failure') {
    console.log(`⚠️ Execution node marked as FAILED after task ${taskResult.taskId}`);
  }
}

/**
 * Records that a run ended: sends a `run_finished` event. runtally sets the final status from
 * the task results it received: `cancelled` if `cancelled`, else `failed` if any task's latest
 * result is a failure, else `completed`. `results` is accepted for the seed's signature and not
 * sent.
 *
 * @param graphManager - Accepted for the seed's signature and ignored.
 * @param executionId - The run.
 * @param results - Ignored (see above).
 * @param endTime - End, epoch milliseconds.
 * @param cancelled - Whether the run was cancelled (default `false`).
 * @throws {RuntallyError} If the server refuses the event or cannot be reached.
 */
export async function updateExecutionNodeInNeo4j(
  graphManager: unknown,
  executionId: string,
  results: ExecutionResult[],
  endTime: number,
  cancelled: boolean = false,
): Promise<void> {
  // What the seed prints; runtally computes the same status from the results it received.
  const failed = Array.isArray(results) && results.some((r) => r?.status === 'failure');
  const status = cancelled ? 'cancelled' : failed ? 'failed' : 'completed';
  await deliver(
    () => eventsForFinalize(executionId, results, endTime, cancelled),
    `💾 Execution node finalized: ${executionId} (status: ${status})`,
    `⚠️ Failed to finalize execution node:`,
  );
}
