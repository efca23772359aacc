// Compile-time check (`npm run build` runs it, nothing is emitted): the client's exports can stand
// wherever the seed's module is used. `Seed` is the seed's own exported signatures, copied from
// shared/seed/persistence.ts, with its graph manager type (IGraphManager) stood in for by an
// interface of the one method the seed calls on it.
import * as client from '../../src/index.js';
import type { ExecutionResult, TaskDefinition } from '../../src/index.js';

interface IGraphManager {
  getDriver(): unknown;
}

interface Seed {
  persistTaskExecutionToNeo4j(
    graphManager: IGraphManager,
    executionId: string,
    taskId: string,
    result: ExecutionResult,
    task: TaskDefinition,
  ): Promise<string>;
  createExecutionNodeInNeo4j(
    graphManager: IGraphManager,
    executionId: string,
    planId: string,
    totalTasks: number,
    startTime: number,
  ): Promise<void>;
  updateExecutionNodeProgress(
    graphManager: IGraphManager,
    executionId: string,
    taskResult: ExecutionResult,
    tasksFailed: number,
    tasksSuccessful: number,
  ): Promise<void>;
  updateExecutionNodeInNeo4j(
    graphManager: IGraphManager,
    executionId: string,
    results: ExecutionResult[],
    endTime: number,
    cancelled?: boolean,
  ): Promise<void>;
}

export const asSeed: Seed = client;

// The seed's values: an orchestrator's full result and definition type-check unchanged.
const task: TaskDefinition = {
  id: 'task-1',
  title: 'Validate environment',
  agentRoleDescription: 'DevOps engineer',
  recommendedModel: 'gpt-4.1',
  prompt: 'Check the environment.',
  dependencies: [],
  estimatedDuration: '5 min',
  parallelGroup: 1,
  taskType: 'agent',
  qcRole: 'QA reviewer',
  verificationCriteria: 'All tools present',
  maxRetries: 2,
  estimatedToolCalls: 10,
};
const result: ExecutionResult = {
  taskId: 'task-1',
  status: 'success',
  output: 'ok',
  duration: 5000,
  preamblePath: 'preambles/devops.md',
  tokens: { input: 1000, output: 500 },
  toolCalls: 3,
  qcVerification: { passed: true, score: 95, feedback: 'fine', issues: [], requiredFixes: [] },
};
export const returned: Promise<string> = client.persistTaskExecutionToNeo4j(null, 'exec-1', 'task-1', result, task);
