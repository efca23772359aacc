// What the graph must hold for what was sent: the seed's own property mapping
// (shared/seed/persistence.ts, persistTaskExecutionToNeo4j's query parameters) and runtally's
// counter rule (sums over each task's latest result, shared/docs/seed-notes.md).

/** Properties whose value the seed sends through neo4j.int: Bolt integers in the graph. */
export const TASK_INTEGER_PROPERTIES = [
  'duration',
  'tokensInput',
  'tokensOutput',
  'tokensTotal',
  'toolCalls',
  'attemptNumber',
  'qcScore',
];

/** Execution node properties that are Bolt integers. */
export const EXECUTION_INTEGER_PROPERTIES = [
  'duration',
  'tasksTotal',
  'tasksSuccessful',
  'tasksFailed',
  'tokensInput',
  'tokensOutput',
  'tokensTotal',
  'toolCalls',
];

/**
 * The task_execution node's properties as the seed would write them for this call (without
 * `timestamp`/`updated`, which are times of writing). A `null` means "absent or null": Cypher's
 * `SET x = null` removes the property.
 */
export function seedTaskProperties(executionId, taskId, result, task) {
  const input = result.tokens?.input || 0;
  const output = result.tokens?.output || 0;
  return {
    id: `${executionId}-${taskId}`,
    type: 'task_execution',
    executionId,
    taskId,
    taskTitle: task.title || taskId,
    status: result.status,
    output: result.output || '',
    error: result.error || null,
    duration: Math.trunc(result.duration || 0),
    agentRoleDescription: task.agentRoleDescription || '',
    qcRoleDescription: task.qcRole || null,
    prompt: result.prompt || null,
    tokensInput: input,
    tokensOutput: output,
    tokensTotal: input + output,
    toolCalls: result.toolCalls || 0,
    attemptNumber: result.attemptNumber || 1,
    qcPassed: result.qcVerification?.passed || false,
    qcScore: result.qcVerification?.score || 0,
    qcFeedback: result.qcVerification?.feedback || null,
    qcIssues: result.qcVerification?.issues ? result.qcVerification.issues.join('\n') : null,
    qcRequiredFixes: result.qcVerification?.requiredFixes ? result.qcVerification.requiredFixes.join('\n') : null,
  };
}

/**
 * The execution node's counters for these task results: `latest` maps each task id to its
 * latest result. Sums, never the seed's running increments.
 */
export function expectedCounters(latest, tasksTotal) {
  const results = [...latest.values()];
  const sum = (f) => results.reduce((acc, r) => acc + f(r), 0);
  const tokensInput = sum((r) => r.tokens?.input || 0);
  const tokensOutput = sum((r) => r.tokens?.output || 0);
  return {
    tasksTotal,
    tasksSuccessful: results.filter((r) => r.status === 'success').length,
    tasksFailed: results.filter((r) => r.status === 'failure').length,
    tokensInput,
    tokensOutput,
    tokensTotal: tokensInput + tokensOutput,
    toolCalls: sum((r) => r.toolCalls || 0),
  };
}

/** The final status: cancelled wins, else failed if any latest result failed, else completed. */
export function expectedStatus(latest, cancelled) {
  if (cancelled) return 'cancelled';
  return [...latest.values()].some((r) => r.status === 'failure') ? 'failed' : 'completed';
}
