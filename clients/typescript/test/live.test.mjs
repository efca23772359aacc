// Against a LIVE `runtally serve` (RUNTALLY_URL, RUNTALLY_TOKEN) and the Bolt database it writes
// to (NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD, optional NEO4J_DATABASE): the seed's own doc
// examples go through the client, then the seed's reader queries must find exactly what was
// sent. Skipped when RUNTALLY_URL is unset; failing, not skipped, when it is set and the server
// or the database does not answer.
//
// Every execution id carries a random suffix, so runs of this file can share one database.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import neo4j from 'neo4j-driver';

import * as api from '../dist/index.js';
import { RuntallyError, configure } from '../dist/index.js';
import * as examples from './support/seed-examples.mjs';
import {
  EXECUTION_INTEGER_PROPERTIES,
  TASK_INTEGER_PROPERTIES,
  expectedCounters,
  expectedStatus,
  seedTaskProperties,
} from './support/expected.mjs';

const URL = process.env.RUNTALLY_URL;
const skip = URL
  ? false
  : 'RUNTALLY_URL is not set: start `runtally serve` and set RUNTALLY_URL (and RUNTALLY_TOKEN, NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD) to run the live tests';

// The seed's readers (shared/docs/seed-notes.md, "Who reads it"), verbatim.
const QUERY_1 = "MATCH (exec:Node {id:$executionId, type:'orchestration_execution'}) RETURN exec";
const QUERY_2 =
  "MATCH (te:Node) WHERE te.type='task_execution' AND te.executionId=$executionId RETURN te ORDER BY te.timestamp";
const QUERY_3 =
  "MATCH (exec:Node {type:'orchestration_execution'}) RETURN exec ORDER BY exec.startTime DESC SKIP $offset LIMIT $limit";

const END_TIMEOUT_MS = 60_000;
const POLL_EVERY_MS = 100;
const gm = { getDriver: () => assert.fail('the graph manager must not be used') };
const suffix = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
let serial = 0;
/** A fresh execution id for this test run. */
const newExecutionId = (name) => `exec-${name}-${suffix}-${++serial}`;

// Each test carries the skip (rather than the suite) so that the runner counts them as skipped.
describe('live: the seed module replaced by the runtally client', { timeout: 180_000 }, () => {
  let driver;

  async function read(query, params = {}) {
    const database = process.env.NEO4J_DATABASE || undefined;
    const session = driver.session({ defaultAccessMode: neo4j.session.READ, ...(database ? { database } : {}) });
    try {
      return (await session.run(query, params)).records;
    } finally {
      await session.close();
    }
  }

  // A setup failure is kept and thrown by every test, so that each is reported as failed (a
  // throwing hook would only cancel them).
  let notReady;
  before(async () => {
    if (skip) return;
    try {
      if (!process.env.NEO4J_URI) {
        throw new Error('RUNTALLY_URL is set but NEO4J_URI is not: the live tests read the graph runtally serve writes');
      }
      configure({ log: false }); // url and token from RUNTALLY_URL / RUNTALLY_TOKEN, as in production
      await waitForReady(URL);
      driver = neo4j.driver(
        process.env.NEO4J_URI,
        neo4j.auth.basic(process.env.NEO4J_USER || 'neo4j', process.env.NEO4J_PASSWORD || ''),
      );
      await read('RETURN 1 AS ok');
    } catch (error) {
      notReady = error;
    }
  });
  const ready = () => {
    if (notReady) throw notReady;
  };

  after(async () => {
    await driver?.close();
  });

  /**
   * Polls query 1 every 100 ms until the run has ended: status completed, failed or cancelled AND
   * endTime set. (runtally marks a run `failed` the moment a failed result arrives, as the seed
   * does, so for such a run the status alone does not say that run_finished was written.)
   */
  async function waitForEnd(executionId) {
    const deadline = Date.now() + END_TIMEOUT_MS;
    for (;;) {
      const [record] = await read(QUERY_1, { executionId });
      const exec = record?.get('exec');
      const status = exec?.properties.status;
      if (['completed', 'failed', 'cancelled'].includes(status) && exec.properties.endTime != null) return exec;
      if (Date.now() >= deadline) {
        assert.fail(
          `execution ${executionId} did not end within ${END_TIMEOUT_MS} ms; query 1 last returned ${
            exec ? JSON.stringify(exec.properties) : 'nothing'
          }`,
        );
      }
      await sleep(POLL_EVERY_MS);
    }
  }

  /**
   * Checks a run against what was sent: the execution node (query 1), its tasks (query 2), the
   * run's edges, and that query 3 lists it. `latest` maps taskId → {result, task}, each task's
   * latest call.
   */
  async function checkRun({ executionId, planId, totalTasks, startTime }, { endTime, cancelled }, latest) {
    const exec = await waitForEnd(executionId);
    const results = new Map([...latest].map(([taskId, sent]) => [taskId, sent.result]));
    const p = exec.properties;

    assert.equal(p.id, executionId);
    assert.equal(p.type, 'orchestration_execution');
    assert.equal(p.planId, planId);
    assert.equal(p.status, expectedStatus(results, cancelled), `status of ${executionId}`);
    for (const name of EXECUTION_INTEGER_PROPERTIES) {
      assert.ok(neo4j.isInt(p[name]), `execution ${name} must be a Bolt integer, got ${typeof p[name]} ${p[name]}`);
    }
    const counters = Object.fromEntries(Object.keys(expectedCounters(results, 0)).map((k) => [k, p[k].toNumber()]));
    assert.deepEqual(counters, expectedCounters(results, totalTasks), `counters of ${executionId}`);
    assert.equal(epochMs(p.startTime), startTime, 'startTime');
    assert.equal(epochMs(p.endTime), endTime, 'endTime');
    assert.equal(p.duration.toNumber(), endTime - startTime, 'duration');

    // Query 2: exactly the tasks sent, each as the seed would have written it.
    const tasks = (await read(QUERY_2, { executionId })).map((r) => r.get('te').properties);
    assert.deepEqual(tasks.map((t) => t.taskId).sort(), [...latest.keys()].sort(), `tasks of ${executionId}`);
    for (const t of tasks) {
      const { result, task } = latest.get(t.taskId);
      const expected = seedTaskProperties(executionId, t.taskId, result, task);
      for (const [name, value] of Object.entries(expected)) {
        if (TASK_INTEGER_PROPERTIES.includes(name)) {
          assert.ok(neo4j.isInt(t[name]), `${t.id}.${name} must be a Bolt integer, got ${typeof t[name]} ${t[name]}`);
          assert.equal(t[name].toNumber(), value, `${t.id}.${name}`);
        } else if (value === null) {
          assert.equal(t[name] ?? null, null, `${t.id}.${name}`);
        } else {
          assert.equal(t[name], value, `${t.id}.${name}`);
        }
      }
      assert.ok(neo4j.isDateTime(t.timestamp), `${t.id}.timestamp must be a datetime`);
      assert.ok(neo4j.isDateTime(t.updated), `${t.id}.updated must be a datetime`);
    }

    // The run's edges: every task linked, failed ones also by FAILED_TASK.
    const edges = (
      await read(
        "MATCH (exec:Node {id:$executionId, type:'orchestration_execution'})-[r]->(te:Node {type:'task_execution'}) RETURN type(r) AS rel, te.taskId AS taskId",
        { executionId },
      )
    )
      .map((r) => `${r.get('rel')} ${r.get('taskId')}`)
      .sort();
    const expectedEdges = [...results]
      .flatMap(([taskId, r]) => [
        `HAS_TASK_EXECUTION ${taskId}`,
        ...(r.status === 'failure' ? [`FAILED_TASK ${taskId}`] : []),
      ])
      .sort();
    assert.deepEqual(edges, expectedEdges, `edges of ${executionId}`);
    return exec;
  }

  /** Query 3, paged: every one of `executionIds` is listed, newest start first, as query 1 shows it. */
  async function checkListed(executionIds) {
    const wanted = new Set(executionIds);
    const found = [];
    const limit = 500;
    for (let offset = 0; wanted.size > 0; offset += limit) {
      const page = await read(QUERY_3, { offset: neo4j.int(offset), limit: neo4j.int(limit) });
      for (const record of page) {
        const exec = record.get('exec');
        if (wanted.delete(exec.properties.id)) found.push(exec);
      }
      if (page.length < limit) break;
    }
    assert.deepEqual([...wanted], [], 'query 3 must list every run');
    for (const exec of found) {
      assert.ok(neo4j.isDateTime(exec.properties.startTime), 'startTime must be a datetime, so that query 3 orders by time');
      const [again] = await read(QUERY_1, { executionId: exec.properties.id });
      assert.deepEqual(exec.properties, again.get('exec').properties);
    }
    const starts = found.map((e) => epochMs(e.properties.startTime));
    assert.deepEqual(starts, [...starts].sort((a, b) => b - a), 'query 3 lists the newest start first');
  }

  test("the seed's doc examples: the graph holds exactly what was sent", { skip }, async () => {
    ready();
    const latest = (...sent) => new Map(sent.map((s) => [s.taskId, s]));

    // Run A: create Example 1, persist Examples 1-3, progress Examples 1-3, finalize Example 2.
    const a = await examples.createExample1(api, gm, newExecutionId('a'));
    const a1 = await examples.persistExample1(api, gm, a.executionId);
    const a2 = await examples.persistExample2(api, gm, a.executionId);
    const a3 = await examples.persistExample3(api, gm, a.executionId);
    assert.deepEqual(
      [a1.nodeId, a2.nodeId, a3.nodeId],
      ['task-1', 'task-2', 'task-3'].map((t) => `${a.executionId}-${t}`),
    );
    assert.equal(await examples.progressExample1(api, gm, a.executionId), undefined);
    assert.equal(await examples.progressExample2(api, gm, a.executionId), undefined);
    assert.equal(await examples.progressExample3(api, gm, a.executionId), undefined);
    const aEnd = await examples.finalizeExample2(api, gm, a.executionId);

    // Run B: create Example 2, two successful tasks, finalize Example 1.
    const b = await examples.createExample2(api, gm, suffix);
    const b1 = await examples.persistExample1(api, gm, b.executionId);
    const b3 = await examples.persistExample3(api, gm, b.executionId);
    const bEnd = await examples.finalizeExample1(api, gm, b.executionId);

    // Run C: create Example 3, one task, finalize Example 3 (cancelled).
    const c = await examples.createExample3(api, gm, newExecutionId('c'));
    assert.equal(c.failure, undefined, 'create Example 3 swallowed an error');
    const c1 = await examples.persistExample1(api, gm, c.executionId);
    const cEnd = await examples.finalizeExample3(api, gm, c.executionId);

    const [execA] = await Promise.all([
      checkRun(a, aEnd, latest(a1, a2, a3)),
      checkRun(b, bEnd, latest(b1, b3)),
      checkRun(c, cEnd, latest(c1)),
    ]);
    // Spelled out for run A: sums over the task results, not the seed's increments (the progress
    // examples alone would have added 3100 input tokens and 10 tool calls).
    assert.equal(execA.properties.status, 'failed');
    assert.equal(execA.properties.tasksSuccessful.toNumber(), 2);
    assert.equal(execA.properties.tasksFailed.toNumber(), 1);
    assert.equal(execA.properties.tokensInput.toNumber(), 3000);
    assert.equal(execA.properties.tokensOutput.toNumber(), 1200);
    assert.equal(execA.properties.tokensTotal.toNumber(), 4200);
    assert.equal(execA.properties.toolCalls.toNumber(), 8);

    await checkListed([a.executionId, b.executionId, c.executionId]);
  });

  test('a 400 rejects with RuntallyError naming the bad event, and changes nothing', { skip }, async () => {
    ready();
    const run = await examples.createExample1(api, gm, newExecutionId('bad'));
    const bad = { taskId: 'task-bad', status: 'maybe', output: '', duration: 1, tokens: { input: 99, output: 99 } };
    const error = await api
      .persistTaskExecutionToNeo4j(gm, run.executionId, 'task-bad', bad, examples.taskDefinition)
      .then(() => assert.fail('a task status of "maybe" must be refused'), (e) => e);
    assert.ok(error instanceof RuntallyError, `expected RuntallyError, got ${error}`);
    assert.equal(error.status, 400);
    assert.equal(error.code, 'rejected');
    assert.equal(error.rejected.length, 1);
    assert.equal(error.rejected[0].index, 0);
    assert.equal(typeof error.rejected[0].reason, 'string');
    assert.match(error.message, new RegExp(`task_finished ${run.executionId}/task-bad: `));

    const emptyId = await api
      .createExecutionNodeInNeo4j(gm, '', 'plan-x', 1, Date.now())
      .then(() => assert.fail('an empty execution id must be refused'), (e) => e);
    assert.ok(emptyId instanceof RuntallyError);
    assert.equal(emptyId.status, 400);
    assert.match(emptyId.message, /#0 run_started /);

    const good = await examples.persistExample1(api, gm, run.executionId);
    const end = await examples.finalizeExample1(api, gm, run.executionId);
    await checkRun(run, end, new Map([[good.taskId, good]]));
  });

  test('a retried persist does not double-count; a later result for a task replaces it', { skip }, async () => {
    ready();
    const executionId = newExecutionId('retry');
    const run = { executionId, planId: `plan-${executionId}`, totalTasks: 3, startTime: Date.now() };
    await api.createExecutionNodeInNeo4j(gm, executionId, run.planId, run.totalTasks, run.startTime);

    const task1 = { ...examples.taskDefinition, id: 'task-1' };
    const ok1 = { taskId: 'task-1', status: 'success', output: 'one', duration: 100, preamblePath: 'p.md', tokens: { input: 100, output: 50 }, toolCalls: 2 };
    // The same call twice, as a caller retrying after a lost answer does.
    assert.equal(await api.persistTaskExecutionToNeo4j(gm, executionId, 'task-1', ok1, task1), `${executionId}-task-1`);
    assert.equal(await api.persistTaskExecutionToNeo4j(gm, executionId, 'task-1', ok1, task1), `${executionId}-task-1`);
    await api.updateExecutionNodeProgress(gm, executionId, ok1, 0, 1);

    // task-2 fails, then succeeds on the orchestrator's retry: its latest result wins everywhere.
    const task2 = { ...examples.taskDef };
    const failed2 = {
      taskId: 'task-2', status: 'failure', output: '', error: 'API timeout', duration: 300, preamblePath: 'p.md',
      tokens: { input: 10, output: 5 }, toolCalls: 1, attemptNumber: 1,
      qcVerification: { passed: false, score: 20, feedback: 'no data', issues: ['empty'], requiredFixes: ['retry'] },
    };
    const ok2 = {
      taskId: 'task-2', status: 'success', output: 'two', duration: 400, preamblePath: 'p.md',
      tokens: { input: 20, output: 10 }, toolCalls: 3, attemptNumber: 2,
      qcVerification: { passed: true, score: 90, feedback: 'fine', issues: [], requiredFixes: [] },
    };
    await api.persistTaskExecutionToNeo4j(gm, executionId, 'task-2', failed2, task2);
    await api.updateExecutionNodeProgress(gm, executionId, failed2, 1, 1);
    await api.persistTaskExecutionToNeo4j(gm, executionId, 'task-2', ok2, task2);
    await api.updateExecutionNodeProgress(gm, executionId, ok2, 0, 2);

    // A repeated create of a live run is a no-op: it must not reset the counters.
    await api.createExecutionNodeInNeo4j(gm, executionId, run.planId, run.totalTasks, run.startTime);

    const endTime = Date.now();
    await api.updateExecutionNodeInNeo4j(gm, executionId, [ok1, ok1, failed2, ok2], endTime, false);
    const exec = await checkRun(
      run,
      { endTime, cancelled: false },
      new Map([
        ['task-1', { result: ok1, task: task1 }],
        ['task-2', { result: ok2, task: task2 }],
      ]),
    );
    assert.equal(exec.properties.status, 'completed');
    assert.equal(exec.properties.tokensInput.toNumber(), 120);
    assert.equal(exec.properties.toolCalls.toNumber(), 5);
    assert.equal(exec.properties.tasksFailed.toNumber(), 0);
  });
});

/** A Bolt datetime as epoch milliseconds. */
function epochMs(value) {
  assert.ok(neo4j.isDateTime(value), `expected a datetime, got ${typeof value} ${value}`);
  if (value.timeZoneOffsetSeconds === undefined && ['UTC', 'Z', 'Etc/UTC'].includes(value.timeZoneId)) {
    return Date.UTC(value.year.toNumber?.() ?? value.year, (value.month.toNumber?.() ?? value.month) - 1,
      value.day.toNumber?.() ?? value.day, value.hour.toNumber?.() ?? value.hour,
      value.minute.toNumber?.() ?? value.minute, value.second.toNumber?.() ?? value.second,
      Math.floor((value.nanosecond.toNumber?.() ?? value.nanosecond) / 1e6));
  }
  return value.toStandardDate().getTime();
}

/** Waits up to 10 s for GET /healthz and /readyz to answer 200; throws (failing the suite) if not. */
async function waitForReady(base) {
  const deadline = Date.now() + 10_000;
  let last = 'no answer';
  for (const path of ['/healthz', '/readyz']) {
    for (;;) {
      try {
        const response = await fetch(`${base.replace(/\/+$/, '')}${path}`, { signal: AbortSignal.timeout(2_000) });
        await response.text();
        if (response.ok) break;
        last = `${path} answered ${response.status}`;
      } catch (error) {
        last = `${path}: ${error.cause?.code ?? error.cause?.message ?? error.message}`;
      }
      if (Date.now() >= deadline) {
        throw new Error(`RUNTALLY_URL is set to ${base} but runtally serve is not ready there (${last})`);
      }
      await sleep(200);
    }
  }
}
