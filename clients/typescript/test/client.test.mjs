// The client against a real local HTTP server that records requests and scripts answers: request
// shapes, headers, configuration, retries, Retry-After, typed errors, log lines. No runtally
// serve needed.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import * as api from '../dist/index.js';
import {
  RuntallyError,
  configure,
  createExecutionNodeInNeo4j,
  eventsForCreate,
  eventsForFinalize,
  eventsForPersist,
  persistTaskExecutionToNeo4j,
  resetConfiguration,
  updateExecutionNodeInNeo4j,
  updateExecutionNodeProgress,
} from '../dist/index.js';
import { acceptAll, deadUrl, recordingServer, reply } from './support/recorder.mjs';
import * as examples from './support/seed-examples.mjs';

const gm = { getDriver: () => assert.fail('the graph manager must not be used') };
const result = {
  taskId: 'task-1',
  status: 'success',
  output: 'done',
  duration: 5000,
  preamblePath: 'p.md',
  tokens: { input: 10, output: 5 },
  toolCalls: 1,
};
const task = { ...examples.taskDefinition };

let server;
const savedEnv = { url: process.env.RUNTALLY_URL, token: process.env.RUNTALLY_TOKEN };

/** Starts a recording server and points the client at it, quietly. */
async function serve(respond = acceptAll, options = {}) {
  server = await recordingServer(respond);
  configure({ url: server.url, token: null, log: false, ...options });
  return server;
}

beforeEach(() => {
  resetConfiguration();
  delete process.env.RUNTALLY_URL;
  delete process.env.RUNTALLY_TOKEN;
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  resetConfiguration();
  for (const [key, value] of [['RUNTALLY_URL', savedEnv.url], ['RUNTALLY_TOKEN', savedEnv.token]]) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
});

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected the call to reject');
}

describe('requests', () => {
  test('each seed function posts its events as one JSON array to /v1/events', async () => {
    const { requests } = await serve();
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 3, 1764800000000);
    const id = await persistTaskExecutionToNeo4j(gm, 'exec-1', 'task-1', result, task);
    await updateExecutionNodeInNeo4j(gm, 'exec-1', [result], 1764800005000);

    assert.equal(id, 'exec-1-task-1');
    assert.equal(requests.length, 3);
    for (const r of requests) {
      assert.equal(r.method, 'POST');
      assert.equal(r.url, '/v1/events');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.headers.authorization, undefined);
      assert.ok(Array.isArray(r.body));
    }
    assert.deepEqual(requests[0].body, eventsForCreate('exec-1', 'plan-1', 3, 1764800000000));
    assert.deepEqual(requests[1].body, eventsForPersist('exec-1', 'task-1', result, task));
    assert.deepEqual(requests[2].body, [
      { event: 'run_finished', executionId: 'exec-1', endTime: 1764800005000, cancelled: false },
    ]);
  });

  test('updateExecutionNodeProgress sends nothing and resolves', async () => {
    const { requests } = await serve();
    assert.equal(await updateExecutionNodeProgress(gm, 'exec-1', { ...result, status: 'failure' }, 1, 0), undefined);
    assert.equal(requests.length, 0);
  });

  test("the seed's doc examples send exactly their events", async () => {
    const { requests } = await serve();
    const exec = 'exec-1763134573643';
    const c1 = await examples.createExample1(api, gm, exec);
    const c2 = await examples.createExample2(api, gm, 'unit');
    const c3 = await examples.createExample3(api, gm, exec);
    assert.equal(c3.failure, undefined);
    const p1 = await examples.persistExample1(api, gm, exec);
    const p2 = await examples.persistExample2(api, gm, exec);
    const p3 = await examples.persistExample3(api, gm, exec);
    await examples.progressExample1(api, gm, exec);
    await examples.progressExample2(api, gm, exec);
    await examples.progressExample3(api, gm, exec);
    const f1 = await examples.finalizeExample1(api, gm, exec);
    const f2 = await examples.finalizeExample2(api, gm, exec);
    const f3 = await examples.finalizeExample3(api, gm, exec);

    assert.deepEqual(
      [p1.nodeId, p2.nodeId, p3.nodeId],
      [`${exec}-task-1`, `${exec}-task-2`, `${exec}-task-3`],
    );
    const sent = requests.map((r) => r.body);
    assert.deepEqual(sent, [
      eventsForCreate(exec, 'plan-kolache-recipe', 5, c1.startTime),
      eventsForCreate(c2.executionId, c2.planId, 12, c2.startTime),
      eventsForCreate(exec, c3.planId, 3, c3.startTime),
      eventsForPersist(exec, 'task-1', p1.result, examples.taskDefinition),
      eventsForPersist(exec, 'task-2', p2.result, examples.taskDef),
      eventsForPersist(exec, 'task-3', p3.result, examples.taskDefinition),
      // The three progress examples: no request.
      eventsForFinalize(exec, [], f1.endTime, false),
      eventsForFinalize(exec, [], f2.endTime, false),
      eventsForFinalize(exec, [], f3.endTime, true),
    ]);
    // Persist Example 3 passes a definition whose id is task-1: the event says task-3.
    assert.equal(sent[5][0].task.id, 'task-3');
    assert.equal(sent[5][0].result.taskId, 'task-3');
  });

  test('the token goes in Authorization: Bearer', async () => {
    const { requests } = await serve(acceptAll, { token: 's3cret' });
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1);
    assert.equal(requests[0].headers.authorization, 'Bearer s3cret');
  });
});

describe('configuration', () => {
  test('RUNTALLY_URL and RUNTALLY_TOKEN apply when configure did not set them', async () => {
    server = await recordingServer();
    process.env.RUNTALLY_URL = `${server.url}/`;
    process.env.RUNTALLY_TOKEN = 'from-env';
    configure({ log: false });
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0].url, '/v1/events');
    assert.equal(server.requests[0].headers.authorization, 'Bearer from-env');

    configure({ token: null });
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1);
    assert.equal(server.requests[1].headers.authorization, undefined);
  });

  test('the default URL is http://127.0.0.1:4319', () => {
    assert.equal(api.DEFAULT_URL, 'http://127.0.0.1:4319');
  });

  test('configure refuses bad values, naming the field', () => {
    assert.throws(() => configure({ url: 'not a url' }), { name: 'TypeError', message: /url/ });
    assert.throws(() => configure({ url: 'ftp://x' }), { name: 'TypeError', message: /http/ });
    assert.throws(() => configure({ maxAttempts: 0 }), { name: 'RangeError', message: /maxAttempts/ });
    assert.throws(() => configure({ maxAttempts: 1.5 }), { name: 'RangeError', message: /maxAttempts/ });
    assert.throws(() => configure({ timeoutMs: -1 }), { name: 'RangeError', message: /timeoutMs/ });
    assert.throws(() => configure({ token: 42 }), { name: 'TypeError', message: /token/ });
  });

  test('a bad RUNTALLY_URL rejects the sending calls, not progress', async () => {
    process.env.RUNTALLY_URL = 'nope';
    configure({ log: false });
    await assert.rejects(createExecutionNodeInNeo4j(gm, 'e', 'p', 1, 1), { name: 'TypeError', message: /RUNTALLY_URL/ });
    await updateExecutionNodeProgress(gm, 'e', result, 0, 1);
  });
});

describe('retries', () => {
  test('429 with Retry-After: the same request is sent again after that many seconds', async () => {
    const { requests } = await serve((req, res, n) =>
      n === 1
        ? reply(res, 429, { accepted: 0, rejected: [{ index: 0, reason: 'queue full' }], error: 'full' }, { 'retry-after': '1' })
        : acceptAll(req, res),
    );
    await persistTaskExecutionToNeo4j(gm, 'exec-1', 'task-1', result, task);
    assert.equal(requests.length, 2);
    assert.equal(requests[1].raw, requests[0].raw);
    const waited = requests[1].at - requests[0].at;
    assert.ok(waited >= 950, `waited ${waited} ms, Retry-After said 1 s`);
  });

  test('503 without Retry-After is retried with a short backoff', async () => {
    const { requests } = await serve((req, res, n) => (n <= 2 ? reply(res, 503, { error: 'shutting down' }) : acceptAll(req, res)));
    await updateExecutionNodeInNeo4j(gm, 'exec-1', [], 1);
    assert.equal(requests.length, 3);
    assert.ok(requests[2].at - requests[0].at < 2000);
  });

  test('a connection reset is retried', async () => {
    const { requests } = await serve((req, res, n) => (n === 1 ? res.socket.destroy() : acceptAll(req, res)));
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1);
    assert.equal(requests.length, 2);
  });

  test('an attempt that gets no answer within timeoutMs is retried', async () => {
    const { requests } = await serve(
      (req, res, n) => (n === 1 ? undefined /* never answers */ : acceptAll(req, res)),
      { timeoutMs: 300 },
    );
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1);
    assert.equal(requests.length, 2);
  });

  test('attempts are bounded: a server that stays full rejects with code full', async () => {
    const { requests } = await serve(
      (req, res) => reply(res, 429, { accepted: 0, rejected: [{ index: 0, reason: 'queue full' }], error: 'full' }, { 'retry-after': '0' }),
      { maxAttempts: 3 },
    );
    const error = await rejection(createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1));
    assert.ok(error instanceof RuntallyError);
    assert.equal(error.status, 429);
    assert.equal(error.code, 'full');
    assert.equal(error.attempts, 3);
    assert.deepEqual(error.rejected, [{ index: 0, reason: 'queue full' }]);
    assert.equal(requests.length, 3);
  });

  test('no server: rejects with code network and status null after maxAttempts', async () => {
    configure({ url: await deadUrl(), token: null, log: false, maxAttempts: 2 });
    const error = await rejection(createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 1, 1));
    assert.ok(error instanceof RuntallyError);
    assert.equal(error.status, null);
    assert.equal(error.code, 'network');
    assert.equal(error.attempts, 2);
    assert.match(error.message, /ECONNREFUSED/);
  });

  test('the retry decision: Retry-After wins, else bounded exponential backoff', async () => {
    // Internal, but pure: checked through the compiled module.
    const { retryDelayMs, parseRetryAfter } = await import('../dist/transport.js');
    assert.equal(retryDelayMs(1, '2'), 2000);
    assert.equal(retryDelayMs(5, '0'), 0);
    assert.equal(parseRetryAfter('3600'), api.RETRY_AFTER_MAX_MS);
    assert.equal(parseRetryAfter('Thu, 01 Jan 1970 00:00:10 GMT', 4000), 6000);
    assert.equal(parseRetryAfter('soon'), null);
    assert.equal(retryDelayMs(1, 'soon', () => 1), api.BACKOFF_BASE_MS);
    assert.equal(retryDelayMs(1, null, () => 0), api.BACKOFF_BASE_MS / 2);
    assert.equal(retryDelayMs(3, null, () => 1), api.BACKOFF_BASE_MS * 4);
    assert.equal(retryDelayMs(30, null, () => 1), api.BACKOFF_MAX_MS);
  });
});

describe('errors', () => {
  test('400 rejects at once with RuntallyError naming the refused event', async () => {
    const { requests } = await serve((req, res) =>
      reply(res, 400, { accepted: 0, rejected: [{ index: 0, reason: 'unknown variant `maybe`' }] }),
    );
    const error = await rejection(
      persistTaskExecutionToNeo4j(gm, 'exec-1', 'task-7', { ...result, status: 'maybe' }, task),
    );
    assert.ok(error instanceof RuntallyError);
    assert.equal(error.name, 'RuntallyError');
    assert.equal(error.status, 400);
    assert.equal(error.code, 'rejected');
    assert.deepEqual(error.rejected, [{ index: 0, reason: 'unknown variant `maybe`' }]);
    assert.match(error.message, /task_finished exec-1\/task-7: unknown variant `maybe`/);
    assert.equal(requests.length, 1);
  });

  for (const [status, code, body] of [
    [401, 'unauthorized', { error: 'unauthorized', message: 'missing bearer token' }],
    [413, 'payload_too_large', { error: 'too large' }],
    [415, 'unsupported_media_type', { error: 'unsupported media type' }],
    [500, 'http', { error: 'internal' }],
  ]) {
    test(`${status} rejects at once with code ${code}`, async () => {
      const { requests } = await serve((req, res) => reply(res, status, body));
      const error = await rejection(updateExecutionNodeInNeo4j(gm, 'exec-1', [], 1, true));
      assert.ok(error instanceof RuntallyError);
      assert.equal(error.status, status);
      assert.equal(error.code, code);
      assert.deepEqual(error.body, body);
      assert.equal(requests.length, 1);
    });
  }

  test('401 says how to fix it', async () => {
    await serve((req, res) => reply(res, 401, { error: 'unauthorized', message: 'bad token' }));
    await assert.rejects(createExecutionNodeInNeo4j(gm, 'e', 'p', 1, 1), { message: /bad token.*RUNTALLY_TOKEN/ });
  });
});

describe('log lines', () => {
  test("by default the seed's own lines, on success and before a rejection", async (t) => {
    const out = t.mock.method(console, 'log', () => {});
    const err = t.mock.method(console, 'error', () => {});
    await serve((req, res, n) => (n <= 3 ? acceptAll(req, res) : reply(res, 400, { accepted: 0, rejected: [{ index: 0, reason: 'bad' }] })));
    configure({ log: undefined });
    await createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 2, 1);
    await persistTaskExecutionToNeo4j(gm, 'exec-1', 'task-1', result, task);
    await updateExecutionNodeProgress(gm, 'exec-1', { ...result, taskId: 'task-2', status: 'failure' }, 1, 1);
    await updateExecutionNodeInNeo4j(gm, 'exec-1', [result, { ...result, status: 'failure' }], 2);
    await assert.rejects(persistTaskExecutionToNeo4j(gm, 'exec-1', 'task-3', result, task), RuntallyError);
    assert.deepEqual(
      out.mock.calls.map((c) => c.arguments),
      [
        ['💾 Created execution node: exec-1'],
        ['💾 Persisted task execution: exec-1-task-1'],
        ['⚠️ Execution node marked as FAILED after task task-2'],
        ['💾 Execution node finalized: exec-1 (status: failed)'],
      ],
    );
    assert.equal(err.mock.callCount(), 1);
    assert.equal(err.mock.calls[0].arguments[0], '⚠️ Failed to persist task execution exec-1-task-3:');
    assert.ok(err.mock.calls[0].arguments[1] instanceof RuntallyError);
  });

  test('log: false prints nothing', async (t) => {
    const out = t.mock.method(console, 'log', () => {});
    const err = t.mock.method(console, 'error', () => {});
    await serve((req, res) => reply(res, 400, { accepted: 0, rejected: [{ index: 0, reason: 'bad' }] }));
    await assert.rejects(createExecutionNodeInNeo4j(gm, 'exec-1', 'plan-1', 2, 1), RuntallyError);
    await updateExecutionNodeProgress(gm, 'exec-1', { ...result, status: 'failure' }, 1, 0);
    assert.equal(out.mock.callCount(), 0);
    assert.equal(err.mock.callCount(), 0);
  });
});
