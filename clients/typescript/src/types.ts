/**
 * The seed orchestrator's own data shapes, exactly as its `task-executor.ts` declares them
 * (`shared/docs/seed-notes.md`). They are the types the seed's persistence functions take, so
 * values the orchestrator already builds type-check here unchanged.
 *
 * @module types
 */

/** A task of a plan, as the orchestrator's planner defines it. */
export interface TaskDefinition {
  /** The task's id within its plan, e.g. `task-1.1`. */
  id: string;
  /** Title; stored as `taskTitle` (an empty title is stored as the task id, as in the seed). */
  title: string;
  /** The worker agent's role, stored as `agentRoleDescription`. */
  agentRoleDescription: string;
  /** The model the planner recommended. */
  recommendedModel: string;
  /** The task prompt as planned. */
  prompt: string;
  /** Ids of the tasks this one waits for. */
  dependencies: string[];
  /** The planner's estimate, free text (e.g. `"15 min"`). */
  estimatedDuration: string;
  /** Tasks sharing a group run in parallel. */
  parallelGroup?: number;
  /** `agent` (an LLM agent) or `transformer` (a lambda). */
  taskType?: 'agent' | 'transformer';
  /** The QC agent's role, stored as `qcRoleDescription`. */
  qcRole?: string;
  /** What QC checks. */
  verificationCriteria?: string;
  /** Retries the orchestrator allows. */
  maxRetries?: number;
  /** The planner's tool-call estimate. */
  estimatedToolCalls?: number;
  /** Lambda (transformer) id. */
  lambdaId?: string;
  /** Lambda source. */
  lambdaScript?: string;
  /** Lambda language. */
  lambdaLanguage?: string;
  /** Lambda name. */
  lambdaName?: string;
}

/** A QC agent's verdict on a task's output. */
export interface QCResult {
  /** Whether QC passed; stored as `qcPassed`. */
  passed: boolean;
  /** The score, an integer; stored as `qcScore`. */
  score: number;
  /** Free-text feedback; stored as `qcFeedback`. */
  feedback: string;
  /** Issues found; stored joined with `"\n"` as `qcIssues`. */
  issues: string[];
  /** Fixes required; stored joined with `"\n"` as `qcRequiredFixes`. */
  requiredFixes: string[];
  /** When QC ran (not stored). */
  timestamp?: string;
}

/** The outcome of one task attempt. */
export interface ExecutionResult {
  /** The task this result belongs to. */
  taskId: string;
  /** `success` or `failure`; any task whose latest result is a failure fails the run. */
  status: 'success' | 'failure';
  /** The task's output, stored whole. */
  output: string;
  /** The error message of a failure. */
  error?: string;
  /** Wall time of the attempt in milliseconds. */
  duration: number;
  /** Path of the preamble the agent ran with. */
  preamblePath: string;
  /** The role the agent actually ran with (not stored: the seed stores the definition's). */
  agentRoleDescription?: string;
  /** The prompt actually sent; stored as `prompt`. */
  prompt?: string;
  /** Tokens used. */
  tokens?: {
    input: number;
    output: number;
  };
  /** Tool calls made. */
  toolCalls?: number;
  /** The orchestrator's own graph node for the task. */
  graphNodeId?: string;
  /** The final QC verdict; its fields become the `qc*` properties. */
  qcVerification?: QCResult;
  /** Every QC verdict of the task's attempts. */
  qcVerificationHistory?: QCResult[];
  /** QC's failure report when the retries ran out. */
  qcFailureReport?: string;
  /** Which attempt this result is (missing: 1). */
  attemptNumber?: number;
  /** The circuit breaker's analysis. */
  circuitBreakerAnalysis?: string;
  /** A preview of the preamble. */
  preamblePreview?: string;
  /** A preview of the output. */
  outputPreview?: string;
}
