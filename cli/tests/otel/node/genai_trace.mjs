#!/usr/bin/env node
// Send OpenTelemetry GenAI agent traces to `runtally serve` with the official OpenTelemetry JS SDK.
//
// One trace per run, exported with @opentelemetry/sdk-trace-base and
// @opentelemetry/exporter-trace-otlp-http (OTLP/HTTP, JSON) or, with --protocol protobuf,
// @opentelemetry/exporter-trace-otlp-proto (OTLP/HTTP, protobuf). The spans follow the GenAI
// semantic conventions the way agent instrumentations emit them:
//
//   invoke_agent orchestrator   root (kind CLIENT): runtally.execution_id, runtally.plan_id,
//                               runtally.total_tasks
//     invoke_agent agent-<j>    task: runtally.task_id=task-<j>, gen_ai.completion, maybe
//                               error.type + status ERROR, maybe a gen_ai.evaluation.result event
//       chat <model>            1-3 per task, gen_ai.usage.input_tokens / output_tokens
//       execute_tool <tool>     0-2 per task
//
// Children end before their parents. With --processor simple every span is posted alone as it
// ends (children before parents, one trace over many requests); with --processor batch the SDK
// groups them.
//
// After the provider is shut down the sender checks that every export succeeded and that every
// span it ended was exported; if not it exits 1. Otherwise it prints ONE JSON line on stdout: the
// runs and tasks the graph should hold (see ../README.md). The same --seed gives the same line as
// the Python sender (both use the same mulberry32 generator in the same order).
//
// Usage:
//   node genai_trace.mjs --endpoint http://127.0.0.1:4319/v1/traces [--token T] [--runs N]
//        [--tasks K] [--prefix P] [--processor simple|batch] [--seed S]
//        [--protocol json|protobuf] [--gzip] [--max-inflight N] [--timeout SECONDS]
//
// Beware: the JS SimpleSpanProcessor does not wait for one export before starting the next, so
// spans that end in quick succession are posted concurrently over several connections and can
// ARRIVE in any order (a root before some of its descendants). That is the SDK's real behaviour,
// kept here: after each span ends the sender only waits until fewer than --max-inflight
// (default 16) exports are pending, because the exporter refuses ("Concurrent export limit
// reached", default limit 30) and so loses whatever goes past its limit. --max-inflight 1 waits
// for each export, so with --processor simple the server receives the spans strictly in end
// order (children before parents), as the Python SDK's SimpleSpanProcessor always does. The
// BatchSpanProcessor may also post several batches at once when more than 512 spans are queued.

import { parseArgs } from 'node:util';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';

const PROG = 'genai_trace.mjs';

const MODELS = ['gpt-4o-mini', 'claude-3-5-haiku', 'llama-3.1-8b'];
const TOOLS = ['search_docs', 'run_tests', 'read_file'];
const ROOT_AGENT = 'orchestrator';

const MS = 1_000_000n; // nanoseconds
const CHAT_NS = 3n * MS;
const TOOL_NS = 1n * MS;
const GAP_NS = 1n * MS;

function die(message) {
  process.stderr.write(`${PROG}: error: ${message}\n`);
  process.exit(2);
}

// mulberry32, bit for bit as in genai_trace.py, so both senders draw the same numbers.
class Mulberry32 {
  constructor(seed) {
    this.a = seed | 0;
  }

  nextU32() {
    this.a = (this.a + 0x6d2b79f5) | 0;
    let t = Math.imul(this.a ^ (this.a >>> 15), 1 | this.a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  }

  // An integer in [0, n).
  below(n) {
    return this.nextU32() % n;
  }
}

// Everything the sender will emit, drawn from the seeded generator; no SDK involved.
function plan(args) {
  const rng = new Mulberry32(args.seed);
  const runs = [];
  for (let i = 0; i < args.runs; i++) {
    const tasks = [];
    for (let j = 1; j <= args.tasks; j++) {
      const g = i * args.tasks + (j - 1); // global task index: every 5th task fails
      const failed = g % 5 === 4;
      const chats = [];
      const nChats = 1 + rng.below(3);
      for (let k = 0; k < nChats; k++) {
        const model = MODELS[rng.below(MODELS.length)];
        const input = 100 + rng.below(4900);
        const output = 10 + rng.below(1990);
        chats.push({ model, input, output });
      }
      const tools = [];
      const nTools = rng.below(3);
      for (let k = 0; k < nTools; k++) tools.push(TOOLS[rng.below(TOOLS.length)]);
      let qc = null;
      if (!failed && g % 3 !== 1) {
        const score = (40 + rng.below(61)) / 100; // 0.40 .. 1.00
        const passed = score >= 0.7;
        qc = {
          score,
          label: passed ? 'pass' : 'fail',
          explanation:
            `task-${j} scored ${score.toFixed(2)}: ` +
            (passed ? 'meets the acceptance criteria' : 'misses the acceptance criteria'),
        };
      }
      tasks.push({
        taskId: `task-${j}`,
        agent: `agent-${j}`,
        failed,
        chats,
        tools,
        qc,
        output: failed ? null : `agent-${j} finished task-${j} of ${args.prefix}-${i}`,
      });
    }
    runs.push({ executionId: `${args.prefix}-${i}`, planId: `${args.prefix}-plan-${i % 2}`, tasks });
  }
  return runs;
}

// The graph `runtally serve` should build from what was emitted.
function expected(runs, totalTasks) {
  const sum = (xs, f) => xs.reduce((acc, x) => acc + f(x), 0);
  return {
    runs: runs.map((run) => {
      const tasks = run.tasks.map((t) => ({
        taskId: t.taskId,
        status: t.failed ? 'failure' : 'success',
        error: t.failed ? 'TimeoutError' : null,
        tokensInput: sum(t.chats, (c) => c.input),
        tokensOutput: sum(t.chats, (c) => c.output),
        toolCalls: t.tools.length,
        qcPassed: Boolean(t.qc && t.qc.label === 'pass'),
        qcScore: t.qc ? Math.round(t.qc.score * 100) : 0,
        qcFeedback: t.qc ? t.qc.explanation : null,
        output: t.output ?? '',
        taskTitle: t.agent,
      }));
      const failed = tasks.filter((t) => t.status === 'failure').length;
      const tin = sum(tasks, (t) => t.tokensInput);
      const tout = sum(tasks, (t) => t.tokensOutput);
      return {
        executionId: run.executionId,
        planId: run.planId,
        tasksTotal: totalTasks,
        status: failed ? 'failed' : 'completed',
        tasksSuccessful: tasks.length - failed,
        tasksFailed: failed,
        tokensInput: tin,
        tokensOutput: tout,
        tokensTotal: tin + tout,
        toolCalls: sum(tasks, (t) => t.toolCalls),
        tasks,
      };
    }),
  };
}

// Wraps the OTLP exporter and remembers every export's outcome. The SDK's processors only hand
// a failed export to the global error handler (a log line); this lets the sender exit non-zero.
class CheckedExporter {
  constructor(inner) {
    this.inner = inner;
    this.requests = 0;
    this.spans = 0;
    this.failures = [];
    this.inflight = 0;
    this.waiters = [];
  }

  // Resolves when fewer than n exports are in flight.
  below(n) {
    if (this.inflight < n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  done() {
    this.inflight--;
    this.waiters = this.waiters.filter((w) => {
      if (this.inflight >= w.n) return true;
      w.resolve();
      return false;
    });
  }

  export(spans, resultCallback) {
    this.inflight++;
    try {
      this.inner.export(spans, (result) => {
        this.done();
        this.requests++;
        if (result.code === ExportResultCode.SUCCESS) {
          this.spans += spans.length;
        } else {
          const why = result.error ? `: ${result.error.message ?? result.error}` : '';
          this.failures.push(`export of ${spans.length} span(s) failed${why}`);
        }
        resultCallback(result);
      });
    } catch (error) {
      this.done();
      this.failures.push(`export of ${spans.length} span(s) threw ${error}`);
      resultCallback({ code: ExportResultCode.FAILED, error });
    }
  }

  shutdown() {
    return this.inner.shutdown();
  }

  forceFlush() {
    return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve();
  }
}

const hr = (ns) => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];

// Creates and ends every span with explicit timestamps; returns the number of spans.
// `ended` is awaited after each span ends (until fewer than --max-inflight exports are pending).
async function emit(tracer, runs, totalTasks, startNs, ended) {
  let count = 0;
  let now = startNs;
  for (const run of runs) {
    const root = tracer.startSpan(
      `invoke_agent ${ROOT_AGENT}`,
      {
        kind: SpanKind.CLIENT,
        root: true,
        startTime: hr(now),
        attributes: {
          'gen_ai.operation.name': 'invoke_agent',
          'gen_ai.agent.name': ROOT_AGENT,
          'runtally.execution_id': run.executionId,
          'runtally.plan_id': run.planId,
          'runtally.total_tasks': totalTasks,
        },
      },
      ROOT_CONTEXT,
    );
    const rootCtx = trace.setSpan(ROOT_CONTEXT, root);
    now += GAP_NS;
    for (const t of run.tasks) {
      const task = tracer.startSpan(
        `invoke_agent ${t.agent}`,
        {
          kind: SpanKind.INTERNAL,
          startTime: hr(now),
          attributes: {
            'gen_ai.operation.name': 'invoke_agent',
            'gen_ai.agent.name': t.agent,
            'runtally.task_id': t.taskId,
          },
        },
        rootCtx,
      );
      const taskCtx = trace.setSpan(ROOT_CONTEXT, task);
      now += GAP_NS;
      for (let k = 0; k < Math.max(t.chats.length, t.tools.length); k++) {
        if (k < t.chats.length) {
          const c = t.chats[k];
          const chat = tracer.startSpan(
            `chat ${c.model}`,
            {
              kind: SpanKind.CLIENT,
              startTime: hr(now),
              attributes: {
                'gen_ai.operation.name': 'chat',
                'gen_ai.provider.name': 'openai',
                'gen_ai.request.model': c.model,
                'gen_ai.response.model': c.model,
                'gen_ai.usage.input_tokens': c.input,
                'gen_ai.usage.output_tokens': c.output,
              },
            },
            taskCtx,
          );
          now += CHAT_NS;
          chat.end(hr(now));
          await ended();
          count++;
        }
        if (k < t.tools.length) {
          const name = t.tools[k];
          const tool = tracer.startSpan(
            `execute_tool ${name}`,
            {
              kind: SpanKind.INTERNAL,
              startTime: hr(now),
              attributes: {
                'gen_ai.operation.name': 'execute_tool',
                'gen_ai.tool.name': name,
                'gen_ai.tool.call.id': `call-${run.executionId}-${t.taskId}-${k}`,
              },
            },
            taskCtx,
          );
          now += TOOL_NS;
          tool.end(hr(now));
          await ended();
          count++;
        }
      }
      if (t.failed) {
        task.setAttribute('error.type', 'TimeoutError');
        task.setStatus({ code: SpanStatusCode.ERROR, message: 'TimeoutError' });
      } else {
        task.setAttribute('gen_ai.completion', t.output);
      }
      if (t.qc) {
        task.addEvent(
          'gen_ai.evaluation.result',
          {
            'gen_ai.evaluation.name': 'qc',
            'gen_ai.evaluation.score.value': t.qc.score,
            'gen_ai.evaluation.score.label': t.qc.label,
            'gen_ai.evaluation.explanation': t.qc.explanation,
          },
          hr(now),
        );
      }
      now += GAP_NS;
      task.end(hr(now));
      await ended();
      count++;
    }
    now += GAP_NS;
    root.end(hr(now));
    await ended();
    count++;
  }
  return count;
}

function parseIntArg(name, value, min) {
  if (!/^-?\d+$/.test(value ?? '')) die(`--${name} needs an integer, got '${value}'`);
  const n = Number(value);
  if (n < min) die(`--${name} must be >= ${min}`);
  return n;
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        endpoint: { type: 'string' },
        token: { type: 'string' },
        runs: { type: 'string', default: '1' },
        tasks: { type: 'string', default: '3' },
        prefix: { type: 'string', default: 'node' },
        processor: { type: 'string', default: 'batch' },
        seed: { type: 'string', default: '1' },
        protocol: { type: 'string', default: 'json' },
        gzip: { type: 'boolean', default: false },
        'max-inflight': { type: 'string', default: '16' },
        timeout: { type: 'string', default: '10' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    die(error.message);
  }
  if (values.help) {
    process.stdout.write(
      `usage: node ${PROG} --endpoint URL [--token T] [--runs N] [--tasks K] [--prefix P]\n` +
        '       [--processor simple|batch] [--seed S] [--protocol json|protobuf] [--gzip] [--max-inflight N]\n' +
        '       [--timeout SECONDS]\n',
    );
    return 0;
  }
  if (!values.endpoint) die('--endpoint is required');
  if (!['simple', 'batch'].includes(values.processor)) die('--processor must be simple or batch');
  if (!['json', 'protobuf'].includes(values.protocol)) die('--protocol must be json or protobuf');
  const args = {
    endpoint: values.endpoint,
    token: values.token,
    runs: parseIntArg('runs', values.runs, 0),
    tasks: parseIntArg('tasks', values.tasks, 1),
    prefix: values.prefix,
    processor: values.processor,
    seed: parseIntArg('seed', values.seed, Number.MIN_SAFE_INTEGER),
    protocol: values.protocol,
    gzip: values.gzip,
    maxInflight: parseIntArg('max-inflight', values['max-inflight'], 1),
    timeoutMs: Math.round(Number(values.timeout) * 1000),
  };
  if (!(args.timeoutMs > 0)) die('--timeout must be a positive number of seconds');

  const runs = plan(args);
  let spansPlanned = 0;
  for (const r of runs) {
    spansPlanned++;
    for (const t of r.tasks) spansPlanned += 1 + t.chats.length + t.tools.length;
  }

  const { OTLPTraceExporter } =
    args.protocol === 'json'
      ? await import('@opentelemetry/exporter-trace-otlp-http')
      : await import('@opentelemetry/exporter-trace-otlp-proto');
  const exporter = new CheckedExporter(
    new OTLPTraceExporter({
      url: args.endpoint,
      headers: args.token ? { Authorization: `Bearer ${args.token}` } : {},
      compression: args.gzip ? 'gzip' : 'none',
      timeoutMillis: args.timeoutMs,
      concurrencyLimit: Math.max(30, args.maxInflight),
    }),
  );
  const processor =
    args.processor === 'simple'
      ? new SimpleSpanProcessor(exporter)
      : // The default queue (2048 spans) drops spans when it is full; size it for the whole run.
        new BatchSpanProcessor(exporter, { maxQueueSize: Math.max(2048, spansPlanned) });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': 'runtally-otel-node-sender',
      'service.version': '0.0.0',
    }),
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('runtally.tests.otel.node', '0.0.0');

  // Real wall-clock times, placed just before now so nothing lies in the future.
  const perTask = 2n * GAP_NS + 3n * CHAT_NS + 2n * TOOL_NS;
  const startNs =
    BigInt(Date.now()) * MS -
    BigInt(runs.length) * (2n * GAP_NS + BigInt(args.tasks) * perTask);
  const ended = () => exporter.below(args.maxInflight);
  const emitted = await emit(tracer, runs, args.tasks, startNs, ended);

  const problems = [];
  try {
    await provider.forceFlush();
  } catch (error) {
    problems.push(`flush failed: ${error?.message ?? error}`);
  }
  try {
    await provider.shutdown();
  } catch (error) {
    problems.push(`shutdown failed: ${error?.message ?? error}`);
  }
  problems.push(...exporter.failures);
  if (exporter.spans !== emitted) {
    problems.push(`${emitted} spans ended but ${exporter.spans} exported successfully`);
  }
  if (problems.length) {
    for (const line of problems.slice(0, 5)) process.stderr.write(`${PROG}: error: ${line}\n`);
    if (problems.length > 5) process.stderr.write(`${PROG}: error: ... and ${problems.length - 5} more\n`);
    return 1;
  }
  process.stderr.write(
    `${PROG}: exported ${emitted} spans of ${runs.length} trace(s) in ${exporter.requests} request(s) ` +
      `(${args.processor} processor, ${args.protocol}) to ${args.endpoint}\n`,
  );
  process.stdout.write(`${JSON.stringify(expected(runs, args.tasks))}\n`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`${PROG}: error: ${error?.stack ?? error}\n`);
    process.exitCode = 1;
  },
);
