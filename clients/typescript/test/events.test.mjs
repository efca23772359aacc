// The events each seed function becomes: pure, no server needed.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  eventsForCreate,
  eventsForFinalize,
  eventsForPersist,
  eventsForProgress,
} from '../dist/index.js';
import { taskDef, taskDefinition } from './support/seed-examples.mjs';

describe('eventsForCreate', () => {
  test('is one run_started with the arguments, times in epoch ms', () => {
    assert.deepEqual(eventsForCreate('exec-1', 'plan-kolache-recipe', 5, 1764800000000), [
      { event: 'run_started', executionId: 'exec-1', planId: 'plan-kolache-recipe', totalTasks: 5, startTime: 1764800000000 },
    ]);
  });

  test('truncates a fractional start and count as the seed (new Date, neo4j.int) does', () => {
    const [event] = eventsForCreate('exec-1', 'p', 5.9, 1764800000000.75);
    assert.equal(event.totalTasks, 5);
    assert.equal(event.startTime, 1764800000000);
  });
});

describe('eventsForPersist', () => {
  const result = {
    taskId: 'task-1',
    status: 'success',
    output: 'done',
    duration: 5000,
    preamblePath: 'preambles/devops.md',
    tokens: { input: 1000, output: 500 },
    toolCalls: 3,
    qcVerification: { passed: true, score: 95, feedback: 'ok', issues: [], requiredFixes: [] },
    qcVerificationHistory: [{ passed: false, score: 40, feedback: 'no', issues: ['x'], requiredFixes: ['y'] }],
  };

  test('is one task_finished carrying task and result whole', () => {
    assert.deepEqual(eventsForPersist('exec-1', 'task-1', result, taskDefinition), [
      { event: 'task_finished', executionId: 'exec-1', task: taskDefinition, result },
    ]);
  });

  test('names task and result after the taskId argument, as the seed names the node', () => {
    // Persist Example 3 passes taskDefinition (id 'task-1') for task-3.
    const [event] = eventsForPersist('exec-1', 'task-3', { ...result, taskId: 'other' }, taskDefinition);
    assert.equal(event.task.id, 'task-3');
    assert.equal(event.result.taskId, 'task-3');
    assert.equal(event.task.title, taskDefinition.title);
  });

  test('does not modify its inputs', () => {
    const r = structuredClone(result);
    const t = structuredClone(taskDef);
    eventsForPersist('exec-1', 'task-9', { ...r, duration: 1.5 }, t);
    assert.deepEqual(r, result);
    assert.deepEqual(t, taskDef);
  });

  test('truncates fractional counts as neo4j.int does, and only those', () => {
    const fractional = {
      ...result,
      duration: 5000.7,
      toolCalls: 3.2,
      attemptNumber: 2.9,
      tokens: { input: 10.9, output: 5 },
      qcVerification: { ...result.qcVerification, score: 95.5 },
    };
    const [event] = eventsForPersist('exec-1', 'task-1', fractional, taskDefinition);
    assert.equal(event.result.duration, 5000);
    assert.equal(event.result.toolCalls, 3);
    assert.equal(event.result.attemptNumber, 2);
    assert.deepEqual(event.result.tokens, { input: 10, output: 5 });
    assert.equal(event.result.qcVerification.score, 95);
    assert.equal(event.result.qcVerification.feedback, 'ok');
    assert.deepEqual(event.result.qcVerificationHistory, result.qcVerificationHistory);
    // Untouched when already integers: the very same objects go out.
    const [plain] = eventsForPersist('exec-1', 'task-1', result, taskDefinition);
    assert.equal(plain.result.tokens, result.tokens);
    assert.equal(plain.result.qcVerification, result.qcVerification);
  });
});

describe('eventsForProgress', () => {
  test('is nothing: runtally derives every counter from the task results', () => {
    assert.deepEqual(eventsForProgress('exec-1', { taskId: 'task-1', status: 'failure' }, 1, 0), []);
  });
});

describe('eventsForFinalize', () => {
  const results = [{ taskId: 'task-1', status: 'failure', duration: 1 }];

  test('is one run_finished; the results are not sent', () => {
    assert.deepEqual(eventsForFinalize('exec-1', results, 1764800005000, true), [
      { event: 'run_finished', executionId: 'exec-1', endTime: 1764800005000, cancelled: true },
    ]);
  });

  test('cancelled defaults to false and is a boolean', () => {
    assert.equal(eventsForFinalize('exec-1', results, 1)[0].cancelled, false);
    assert.equal(eventsForFinalize('exec-1', results, 1, undefined)[0].cancelled, false);
    assert.equal(eventsForFinalize('exec-1', results, 1, 1)[0].cancelled, true);
  });
});
