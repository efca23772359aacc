// The @example blocks of the seed's four functions (shared/seed/persistence.ts), as runnable code.
//
// Changes from the doc comments, and only these:
// - The examples' fixed execution id 'exec-1763134573643' (and `exec-${workflowStart}`) become the
//   caller's unique id, so that test runs sharing one database never meet.
// - The undefined `taskDefinition` and `taskDef` get the real values below; likewise the
//   `executionId`, `planId` and `taskCount` variables of createExecutionNodeInNeo4j's Example 3.
// - Each example returns what it sent, so a test can compare the graph with it.
// - `api` is the module under test and `graphManager` whatever the caller passes for it.

/** The definition persist Examples 1 and 3 pass (both tasks share it, as in the doc). */
export const taskDefinition = {
  id: 'task-1',
  title: 'Validate the build environment',
  agentRoleDescription: 'DevOps engineer who checks toolchains and credentials',
  recommendedModel: 'gpt-4.1',
  prompt: 'Check that every tool the plan needs is installed and reachable.',
  dependencies: [],
  estimatedDuration: '5 min',
  parallelGroup: 1,
  qcRole: 'Senior QA engineer who verifies environment reports',
  verificationCriteria: 'Every required tool is listed with its version',
  maxRetries: 2,
  estimatedToolCalls: 5,
};

/** The definition persist Example 2 passes: no title (the seed stores the task id instead). */
export const taskDef = {
  id: 'task-2',
  title: '',
  agentRoleDescription: 'Backend engineer who calls the pricing API',
  recommendedModel: 'gpt-4o',
  prompt: 'Fetch current prices from the pricing API and validate them.',
  dependencies: ['task-1'],
  estimatedDuration: '10 min',
  maxRetries: 1,
};

// ---- createExecutionNodeInNeo4j ----

/** Example 1: Create execution node for new 5-task workflow. */
export async function createExample1(api, graphManager, executionId) {
  const startTime = Date.now();
  await api.createExecutionNodeInNeo4j(graphManager, executionId, 'plan-kolache-recipe', 5, startTime);
  // Creates node with status='running', tasksTotal=5, all counters at 0
  return { executionId, planId: 'plan-kolache-recipe', totalTasks: 5, startTime };
}

/** Example 2: Create execution node with explicit timestamp (`suffix` makes the id unique). */
export async function createExample2(api, graphManager, suffix) {
  const workflowStart = Date.now();
  await api.createExecutionNodeInNeo4j(
    graphManager,
    `exec-${workflowStart}-${suffix}`,
    `plan-${workflowStart}`,
    12,
    workflowStart,
  );
  // Links to plan-{timestamp} if it exists in the graph
  return {
    executionId: `exec-${workflowStart}-${suffix}`,
    planId: `plan-${workflowStart}`,
    totalTasks: 12,
    startTime: workflowStart,
  };
}

/**
 * Example 3: Create execution node in production with error handling. The example swallows the
 * error ("Workflow continues even if persistence fails"); it is returned so a test can insist
 * there was none.
 */
export async function createExample3(api, graphManager, executionId) {
  const planId = `plan-${executionId}`;
  const taskCount = 3;
  const startTime = Date.now();
  let failure;
  try {
    await api.createExecutionNodeInNeo4j(graphManager, executionId, planId, taskCount, startTime);
    console.log(`✅ Execution ${executionId} tracking initialized`);
  } catch (error) {
    console.error('Failed to create execution node:', error);
    // Workflow continues even if persistence fails
    failure = error;
  }
  return { executionId, planId, totalTasks: taskCount, startTime, failure };
}

// ---- persistTaskExecutionToNeo4j ----

/** Example 1: Persist successful task with QC validation. */
export async function persistExample1(api, graphManager, executionId) {
  const result = {
    taskId: 'task-1',
    status: 'success',
    output: '✅ Environment validated successfully',
    duration: 5000,
    tokens: { input: 1000, output: 500 },
    toolCalls: 3,
    qcVerification: { passed: true, score: 95, feedback: 'All checks passed' },
  };
  const nodeId = await api.persistTaskExecutionToNeo4j(graphManager, executionId, 'task-1', result, taskDefinition);
  // Returns: 'exec-1763134573643-task-1'
  return { nodeId, taskId: 'task-1', result, task: taskDefinition };
}

/** Example 2: Persist failed task with error details. */
export async function persistExample2(api, graphManager, executionId) {
  const failedResult = {
    taskId: 'task-2',
    status: 'failure',
    error: 'Timeout waiting for API response',
    duration: 30000,
    tokens: { input: 800, output: 100 },
    qcVerification: {
      passed: false,
      score: 45,
      issues: ['Incomplete data', 'Missing validation'],
      requiredFixes: ['Retry with timeout handling', 'Add error recovery'],
    },
  };
  const nodeId = await api.persistTaskExecutionToNeo4j(graphManager, executionId, 'task-2', failedResult, taskDef);
  // Creates FAILED_TASK relationship for quick failure queries
  return { nodeId, taskId: 'task-2', result: failedResult, task: taskDef };
}

/** Example 3: Persist task with retry attempt tracking. */
export async function persistExample3(api, graphManager, executionId) {
  const retryResult = {
    taskId: 'task-3',
    status: 'success',
    output: 'Completed on second attempt',
    duration: 8000,
    attemptNumber: 2,
    tokens: { input: 1200, output: 600 },
    toolCalls: 5,
  };
  const nodeId = await api.persistTaskExecutionToNeo4j(graphManager, executionId, 'task-3', retryResult, taskDefinition);
  // Stores attemptNumber for tracking retries
  return { nodeId, taskId: 'task-3', result: retryResult, task: taskDefinition };
}

// ---- updateExecutionNodeProgress ----

/** Example 1: Update after successful task completion. */
export async function progressExample1(api, graphManager, executionId) {
  const taskResult = {
    taskId: 'task-1',
    status: 'success',
    duration: 5000,
    tokens: { input: 1000, output: 500 },
    toolCalls: 3,
  };
  return api.updateExecutionNodeProgress(
    graphManager,
    executionId,
    taskResult,
    0, // tasksFailed
    1, // tasksSuccessful
  );
  // Execution node: status='running', successful=1, failed=0, tokens aggregated
}

/** Example 2: Update after task failure (immediate status change). */
export async function progressExample2(api, graphManager, executionId) {
  const failedResult = {
    taskId: 'task-2',
    status: 'failure',
    error: 'API timeout',
    duration: 30000,
    tokens: { input: 800, output: 50 },
    toolCalls: 1,
  };
  return api.updateExecutionNodeProgress(
    graphManager,
    executionId,
    failedResult,
    1, // tasksFailed (incremented)
    1, // tasksSuccessful (unchanged)
  );
  // Execution node: status='failed', successful=1, failed=1
  // Console: "⚠️ Execution node marked as FAILED after task task-2"
}

/** Example 3: Aggregate tokens across multiple tasks. */
export async function progressExample3(api, graphManager, executionId) {
  const results = [
    { tokens: { input: 1000, output: 500 }, status: 'success', toolCalls: 3 },
    { tokens: { input: 1200, output: 600 }, status: 'success', toolCalls: 5 },
    { tokens: { input: 900, output: 400 }, status: 'success', toolCalls: 2 },
  ];
  for (let i = 0; i < results.length; i++) {
    await api.updateExecutionNodeProgress(graphManager, executionId, results[i], 0, i + 1);
  }
  // Final: tokensInput=3100, tokensOutput=1500, tokensTotal=4600, toolCalls=10
}

// ---- updateExecutionNodeInNeo4j ----

/** Example 1: Finalize successful workflow with all tasks passed. */
export async function finalizeExample1(api, graphManager, executionId) {
  const results = [
    { taskId: 'task-1', status: 'success', duration: 5000 },
    { taskId: 'task-2', status: 'success', duration: 8000 },
    { taskId: 'task-3', status: 'success', duration: 3000 },
  ];
  const endTime = Date.now();
  await api.updateExecutionNodeInNeo4j(graphManager, executionId, results, endTime, false);
  // Execution node: status='completed', endTime=now, duration=16000ms
  return { endTime, cancelled: false };
}

/** Example 2: Finalize workflow with failures. */
export async function finalizeExample2(api, graphManager, executionId) {
  const mixedResults = [
    { taskId: 'task-1', status: 'success', duration: 5000 },
    { taskId: 'task-2', status: 'failure', error: 'Timeout', duration: 30000 },
    { taskId: 'task-3', status: 'success', duration: 3000 },
  ];
  const endTime = Date.now();
  await api.updateExecutionNodeInNeo4j(graphManager, executionId, mixedResults, endTime, false);
  // Execution node: status='failed' (any failure marks entire execution failed)
  return { endTime, cancelled: false };
}

/** Example 3: Finalize cancelled workflow. */
export async function finalizeExample3(api, graphManager, executionId) {
  const partialResults = [
    { taskId: 'task-1', status: 'success', duration: 5000 },
    { taskId: 'task-2', status: 'success', duration: 8000 },
  ];
  const endTime = Date.now();
  await api.updateExecutionNodeInNeo4j(
    graphManager,
    executionId,
    partialResults,
    endTime,
    true, // cancelled=true
  );
  // Execution node: status='cancelled', endTime=now
  // Console: "💾 Execution node finalized: exec-1763134573643 (status: cancelled)"
  return { endTime, cancelled: true };
}
