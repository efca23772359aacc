#!/usr/bin/env python3
"""Send OpenTelemetry GenAI agent traces to `runtally serve` with the official Python SDK.

One trace per run, exported with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http
(OTLP/HTTP, protobuf). The spans follow the GenAI semantic conventions the way agent
instrumentations emit them:

    invoke_agent orchestrator        root: runtally.execution_id, runtally.plan_id, runtally.total_tasks
      invoke_agent agent-<j>         task: runtally.task_id=task-<j>, gen_ai.completion, maybe
                                     error.type + status ERROR, maybe a gen_ai.evaluation.result event
        chat <model>                 1-3 per task, gen_ai.usage.input_tokens / output_tokens
        execute_tool <tool>          0-2 per task

Children end before their parents. With --processor simple every span is posted alone as it
ends (children before parents, one trace over many requests); with --processor batch the SDK
groups them.

After the provider is shut down the sender checks that every export succeeded and that every
span it ended was exported; if not it exits 1. Otherwise it prints ONE JSON line on stdout: the
runs and tasks the graph should hold (see cli/tests/otel/README.md). The same --seed gives the
same line as the Node sender (both use the same mulberry32 generator in the same order).

Usage:
    genai_trace.py --endpoint http://127.0.0.1:4319/v1/traces [--token T] [--runs N]
                   [--tasks K] [--prefix P] [--processor simple|batch] [--seed S] [--gzip]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

PROG = "genai_trace.py"

MODELS = ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"]
TOOLS = ["search_docs", "run_tests", "read_file"]
ROOT_AGENT = "orchestrator"

MS = 1_000_000  # nanoseconds
CHAT_NS = 3 * MS
TOOL_NS = 1 * MS
GAP_NS = 1 * MS


class Mulberry32:
    """mulberry32, bit for bit as in genai_trace.mjs, so both senders draw the same numbers."""

    M = 0xFFFFFFFF

    def __init__(self, seed: int) -> None:
        self.a = seed & self.M

    def next_u32(self) -> int:
        m = self.M
        self.a = (self.a + 0x6D2B79F5) & m
        t = self.a
        t = ((t ^ (t >> 15)) * (t | 1)) & m
        t = ((t + (((t ^ (t >> 7)) * (t | 61)) & m)) & m) ^ t
        return (t ^ (t >> 14)) & m

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        return self.next_u32() % n


def plan(args: argparse.Namespace) -> list[dict]:
    """Everything the sender will emit, drawn from the seeded generator; no SDK involved."""
    rng = Mulberry32(args.seed)
    runs = []
    for i in range(args.runs):
        tasks = []
        for j in range(1, args.tasks + 1):
            g = i * args.tasks + (j - 1)  # global task index: every 5th task fails
            failed = g % 5 == 4
            chats = []
            for _ in range(1 + rng.below(3)):
                chats.append(
                    {
                        "model": MODELS[rng.below(len(MODELS))],
                        "input": 100 + rng.below(4900),
                        "output": 10 + rng.below(1990),
                    }
                )
            tools = [TOOLS[rng.below(len(TOOLS))] for _ in range(rng.below(3))]
            qc = None
            if not failed and g % 3 != 1:
                score = (40 + rng.below(61)) / 100  # 0.40 .. 1.00
                passed = score >= 0.7
                qc = {
                    "score": score,
                    "label": "pass" if passed else "fail",
                    "explanation": f"task-{j} scored {score:.2f}: "
                    + ("meets the acceptance criteria" if passed else "misses the acceptance criteria"),
                }
            tasks.append(
                {
                    "taskId": f"task-{j}",
                    "agent": f"agent-{j}",
                    "failed": failed,
                    "chats": chats,
                    "tools": tools,
                    "qc": qc,
                    "output": None if failed else f"agent-{j} finished task-{j} of {args.prefix}-{i}",
                }
            )
        runs.append({"executionId": f"{args.prefix}-{i}", "planId": f"{args.prefix}-plan-{i % 2}", "tasks": tasks})
    return runs


def expected(runs: list[dict], total_tasks: int) -> dict:
    """The graph `runtally serve` should build from what was emitted."""
    out = []
    for run in runs:
        tasks = []
        for t in run["tasks"]:
            qc = t["qc"]
            tin = sum(c["input"] for c in t["chats"])
            tout = sum(c["output"] for c in t["chats"])
            tasks.append(
                {
                    "taskId": t["taskId"],
                    "status": "failure" if t["failed"] else "success",
                    "error": "TimeoutError" if t["failed"] else None,
                    "tokensInput": tin,
                    "tokensOutput": tout,
                    "toolCalls": len(t["tools"]),
                    "qcPassed": bool(qc and qc["label"] == "pass"),
                    "qcScore": round(qc["score"] * 100) if qc else 0,
                    "qcFeedback": qc["explanation"] if qc else None,
                    "output": t["output"] or "",
                    "taskTitle": t["agent"],
                }
            )
        failed = sum(1 for t in tasks if t["status"] == "failure")
        tin = sum(t["tokensInput"] for t in tasks)
        tout = sum(t["tokensOutput"] for t in tasks)
        out.append(
            {
                "executionId": run["executionId"],
                "planId": run["planId"],
                "tasksTotal": total_tasks,
                "status": "failed" if failed else "completed",
                "tasksSuccessful": len(tasks) - failed,
                "tasksFailed": failed,
                "tokensInput": tin,
                "tokensOutput": tout,
                "tokensTotal": tin + tout,
                "toolCalls": sum(t["toolCalls"] for t in tasks),
                "tasks": tasks,
            }
        )
    return {"runs": out}


class CheckedExporter(SpanExporter):
    """Wraps the OTLP exporter and remembers every export's outcome.

    The SDK's processors only log a failed export; this wrapper lets the sender turn it into a
    non-zero exit.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.failures: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as error:  # the processors would only log it
            with self.lock:
                self.failures.append(f"export of {len(spans)} span(s) raised {error!r}")
            raise
        with self.lock:
            self.requests += 1
            if result == SpanExportResult.SUCCESS:
                self.spans += len(spans)
            else:
                self.failures.append(f"export of {len(spans)} span(s) returned {result.name}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def emit(tracer: trace.Tracer, runs: list[dict], total_tasks: int, start_ns: int) -> int:
    """Creates and ends every span with explicit timestamps; returns the number of spans."""
    count = 0
    now = start_ns
    for run in runs:
        root_start = now
        root = tracer.start_span(
            f"invoke_agent {ROOT_AGENT}",
            context=Context(),  # no parent, whatever is active
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": ROOT_AGENT,
                "runtally.execution_id": run["executionId"],
                "runtally.plan_id": run["planId"],
                "runtally.total_tasks": total_tasks,
            },
            start_time=root_start,
        )
        root_ctx = trace.set_span_in_context(root, Context())
        now += GAP_NS
        for t in run["tasks"]:
            task = tracer.start_span(
                f"invoke_agent {t['agent']}",
                context=root_ctx,
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": t["agent"],
                    "runtally.task_id": t["taskId"],
                },
                start_time=now,
            )
            task_ctx = trace.set_span_in_context(task, Context())
            now += GAP_NS
            for k in range(max(len(t["chats"]), len(t["tools"]))):
                if k < len(t["chats"]):
                    c = t["chats"][k]
                    chat = tracer.start_span(
                        f"chat {c['model']}",
                        context=task_ctx,
                        kind=SpanKind.CLIENT,
                        attributes={
                            "gen_ai.operation.name": "chat",
                            "gen_ai.provider.name": "openai",
                            "gen_ai.request.model": c["model"],
                            "gen_ai.response.model": c["model"],
                            "gen_ai.usage.input_tokens": c["input"],
                            "gen_ai.usage.output_tokens": c["output"],
                        },
                        start_time=now,
                    )
                    now += CHAT_NS
                    chat.end(end_time=now)
                    count += 1
                if k < len(t["tools"]):
                    name = t["tools"][k]
                    tool = tracer.start_span(
                        f"execute_tool {name}",
                        context=task_ctx,
                        kind=SpanKind.INTERNAL,
                        attributes={
                            "gen_ai.operation.name": "execute_tool",
                            "gen_ai.tool.name": name,
                            "gen_ai.tool.call.id": f"call-{run['executionId']}-{t['taskId']}-{k}",
                        },
                        start_time=now,
                    )
                    now += TOOL_NS
                    tool.end(end_time=now)
                    count += 1
            if t["failed"]:
                task.set_attribute("error.type", "TimeoutError")
                task.set_status(Status(StatusCode.ERROR, "TimeoutError"))
            else:
                task.set_attribute("gen_ai.completion", t["output"])
            if t["qc"] is not None:
                q = t["qc"]
                task.add_event(
                    "gen_ai.evaluation.result",
                    attributes={
                        "gen_ai.evaluation.name": "qc",
                        "gen_ai.evaluation.score.value": q["score"],
                        "gen_ai.evaluation.score.label": q["label"],
                        "gen_ai.evaluation.explanation": q["explanation"],
                    },
                    timestamp=now,
                )
            now += GAP_NS
            task.end(end_time=now)
            count += 1
        now += GAP_NS
        root.end(end_time=now)
        count += 1
    return count


def main() -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="full OTLP/HTTP traces URL, e.g. http://127.0.0.1:4319/v1/traces")
    p.add_argument("--token", default=None, help="sent as 'Authorization: Bearer TOKEN'")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--prefix", default="py")
    p.add_argument("--processor", choices=["simple", "batch"], default="batch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gzip", action="store_true", help="gzip the request bodies")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per export request")
    args = p.parse_args()
    if args.runs < 0 or args.tasks < 1:
        p.error("--runs must be >= 0 and --tasks >= 1")

    runs = plan(args)
    spans_planned = sum(1 + sum(1 + len(t["chats"]) + len(t["tools"]) for t in r["tasks"]) for r in runs)

    exporter = CheckedExporter(
        OTLPSpanExporter(
            endpoint=args.endpoint,
            headers={"Authorization": f"Bearer {args.token}"} if args.token else None,
            timeout=args.timeout,
            compression=Compression.Gzip if args.gzip else Compression.NoCompression,
        )
    )
    if args.processor == "simple":
        processor = SimpleSpanProcessor(exporter)
    else:
        # The default queue (2048 spans) drops spans when it is full; size it for the whole run.
        processor = BatchSpanProcessor(exporter, max_queue_size=max(2048, spans_planned))
    provider = TracerProvider(
        resource=Resource.create({"service.name": "runtally-otel-python-sender", "service.version": "0.0.0"})
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("runtally.tests.otel.python", "0.0.0")

    # Real wall-clock times, placed just before now so nothing lies in the future.
    per_task = 2 * GAP_NS + 3 * CHAT_NS + 2 * TOOL_NS
    start_ns = time.time_ns() - len(runs) * (2 * GAP_NS + args.tasks * per_task)
    emitted = emit(tracer, runs, args.tasks, start_ns)

    flushed = provider.force_flush(int(args.timeout * 1000) * max(1, emitted // 512 + 1))
    provider.shutdown()

    problems = list(exporter.failures)
    if not flushed:
        problems.append("force_flush timed out")
    if exporter.spans != emitted:
        problems.append(f"{emitted} spans ended but {exporter.spans} exported successfully")
    if problems:
        for line in problems[:5]:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        if len(problems) > 5:
            print(f"{PROG}: error: ... and {len(problems) - 5} more", file=sys.stderr)
        return 1
    print(
        f"{PROG}: exported {emitted} spans of {len(runs)} trace(s) in {exporter.requests} request(s) "
        f"({args.processor} processor) to {args.endpoint}",
        file=sys.stderr,
    )
    print(json.dumps(expected(runs, args.tasks), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
