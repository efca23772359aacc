//! `runtally loadgen`: the `gen_events.py` workload, generated in process and driven through
//! the public API (or, with `--raw`, straight into the database with no actors), measured.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use runtally::rows::{ExecutionRow, ExecutionWrite, TaskRow, WriteBatch};
use runtally::store::{DownStore, GraphStore, Neo4jStore, NullStore};
use runtally::{Aggregator, AggregatorConfig, RunStart, RunStatus, TaskStatus};
use runtally_cli::workload::{WorkloadRun, WorkloadSpec};
use tokio::sync::mpsc;

use crate::{BufferArgs, DbArgs};

mod remote;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// The database.
    Neo4j,
    /// Discard every batch: runtally's own path alone.
    Null,
    /// A database that is never reachable: with --buffer-dir and --when-full overflow, every
    /// result goes to the disk buffer (the figures measure the overflow); what is accepted
    /// stays in the buffer for `runtally drain`.
    Down,
}

#[derive(Args)]
pub(crate) struct LoadgenArgs {
    /// Runs.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Tasks per run.
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// Runs in flight at once (each sends its tasks in order, as an orchestrator would).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Share of failing tasks.
    #[arg(long, default_value_t = 0.05)]
    fail_rate: f64,
    /// Bytes of output per task.
    #[arg(long, default_value_t = 500)]
    output_bytes: usize,
    /// Every Nth run is cancelled halfway (0: none).
    #[arg(long, default_value_t = 0)]
    cancel_every: usize,
    /// Id prefix (default: `load-` and the current time, so runs never collide).
    #[arg(long)]
    prefix: Option<String>,
    /// One plan id for every run (default: a plan per run). Runs link to it when an
    /// `orchestration_plan` node with this id exists.
    #[arg(long)]
    plan: Option<String>,
    /// Where batches go.
    #[arg(long, value_enum, default_value_t = StoreKind::Neo4j)]
    store: StoreKind,
    /// Write the same rows with batched Cypher and no actors: the database's ceiling.
    #[arg(long)]
    raw: bool,
    /// Task rows per write transaction.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_BATCH_ROWS)]
    max_batch_rows: usize,
    /// Longest wait before a flush, in milliseconds.
    #[arg(long, default_value_t = runtally::config::DEFAULT_FLUSH_INTERVAL.as_millis() as u64)]
    flush_interval_ms: u64,
    /// Bound on pending task rows.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_PENDING_ROWS)]
    max_pending_rows: usize,
    /// Bytes of rows per write transaction (also for --raw).
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: usize,
    /// Bound on the bytes of pending task rows.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_PENDING_BYTES)]
    max_pending_bytes: usize,
    /// Run-actor threads (default: runtally's default).
    #[arg(long)]
    arbiters: Option<usize>,
    /// Write lanes: at most this many write transactions in flight at once.
    #[arg(long, default_value_t = runtally::config::DEFAULT_WRITE_LANES)]
    write_lanes: usize,
    /// Lanes overlap only while every write in flight is a chunk of at least this many bytes
    /// (0: always).
    #[arg(long, default_value_t = runtally::config::DEFAULT_MIN_OVERLAP_BYTES)]
    min_overlap_bytes: usize,
    /// Pace the results to this many per second in total (0: as fast as runtally accepts them).
    /// A paced run shows latencies under steady load rather than behind a burst's backlog.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Build every run's results before starting the clock, so the figures measure runtally
    /// absorbing results rather than the simulated orchestrator producing them (which costs
    /// about as much: a result is a score of strings).
    #[arg(long)]
    pregenerate: bool,
    /// Measure how long a failing task takes to show as `status='failed'` in the database.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    probe_failures: bool,
    /// Post the workload as event-stream JSON (a request per run) to a `runtally serve` at this
    /// URL (`http://host:port`) instead of an aggregator in this process.
    #[arg(long, conflicts_with = "otlp")]
    http: Option<String>,
    /// Post the workload as OTLP/HTTP protobuf traces (a request per run) to a `runtally serve`
    /// at this URL instead of an aggregator in this process.
    #[arg(long)]
    otlp: Option<String>,
    /// Bearer token for --http and --otlp.
    #[arg(long, env = "RUNTALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --otlp: the service's --trace-settle-ms (waited before the final flush).
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    #[command(flatten)]
    buffer: BufferArgs,
    #[command(flatten)]
    db: DbArgs,
}

pub(crate) async fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let spec = WorkloadSpec {
        runs: args.runs,
        tasks: args.tasks,
        fail_rate: args.fail_rate,
        output_bytes: args.output_bytes,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("load-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"))),
        cancel_every: args.cancel_every,
        plan: args.plan.clone(),
        ..WorkloadSpec::default()
    };
    let remote = match (&args.http, &args.otlp) {
        (Some(url), _) => Some((remote::Format::Events, url)),
        (None, Some(url)) => Some((remote::Format::Otlp, url)),
        (None, None) => None,
    };
    let line = if let Some((format, url)) = remote {
        remote::post(
            format,
            url,
            args.token.clone(),
            &spec,
            args.concurrency,
            Duration::from_millis(args.settle_ms),
        )
        .await?
    } else if args.raw {
        raw(&args, &spec).await?
    } else {
        through_actors(&args, &spec).await?
    };
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Runs are generated by the workers as they go, so generation is part of the measured work,
/// as an orchestrator's own result-building would be.
async fn through_actors(
    args: &LoadgenArgs,
    spec: &WorkloadSpec,
) -> anyhow::Result<serde_json::Value> {
    let mut builder = args
        .buffer
        .apply(AggregatorConfig::builder())
        .with_max_batch_rows(args.max_batch_rows)
        .with_max_pending_rows(args.max_pending_rows)
        .with_max_batch_bytes(args.max_batch_bytes)
        .with_max_pending_bytes(args.max_pending_bytes)
        .with_write_lanes(args.write_lanes)
        .with_min_overlap_bytes(args.min_overlap_bytes)
        .with_flush_interval(Duration::from_millis(args.flush_interval_ms.max(1)));
    if let Some(n) = args.arbiters {
        builder = builder.with_arbiters(n);
    }
    let aggregator = match args.store {
        StoreKind::Neo4j => {
            Aggregator::start(builder.with_neo4j(args.db.neo4j()?).build()?).await?
        }
        StoreKind::Null => {
            Aggregator::start_with_store(builder.build()?, Arc::new(NullStore::new())).await?
        }
        StoreKind::Down => {
            Aggregator::start_with_store(builder.build()?, Arc::new(DownStore)).await?
        }
    };
    let probe = (args.store == StoreKind::Neo4j && args.probe_failures)
        .then(|| FailureProbe::start(args.db.store()))
        .transpose()?;

    let pregenerated: Arc<Vec<Mutex<Option<WorkloadRun>>>> = Arc::new(if args.pregenerate {
        (0..spec.runs)
            .map(|r| spec.run(r).map(|run| Mutex::new(Some(run))))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(histogram()));
    let tasks_sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let pace = Pace {
        rate: args.rate,
        started,
        issued: Arc::new(AtomicUsize::new(0)),
    };
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (aggregator, spec, next, latencies, tasks_sent, pregenerated) = (
            aggregator.clone(),
            spec.clone(),
            Arc::clone(&next),
            Arc::clone(&latencies),
            Arc::clone(&tasks_sent),
            Arc::clone(&pregenerated),
        );
        let probe = probe.as_ref().map(FailureProbe::sender);
        let pace = pace.clone();
        workers.push(tokio::spawn(async move {
            let mut local = histogram();
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= spec.runs {
                    break;
                }
                let run = match pregenerated.get(r) {
                    Some(slot) => lock(slot)
                        .take()
                        .ok_or_else(|| anyhow::anyhow!("run {r} taken twice"))?,
                    None => spec.run(r)?,
                };
                drive_run(
                    &aggregator,
                    run,
                    &mut local,
                    probe.as_ref(),
                    &tasks_sent,
                    &pace,
                )
                .await?;
            }
            lock(&latencies).add(&local)?;
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    if args.store == StoreKind::Down {
        // Nothing can be written: what counts is that everything accepted is on disk.
        if args.buffer.has_buffer() {
            aggregator.sync_buffer().await?;
        }
    } else {
        aggregator.flush().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let failure_visibility = match probe {
        Some(probe) => Some(probe.finish().await),
        None => None,
    };
    let deadline = match args.store {
        StoreKind::Down => Duration::ZERO,
        _ => Duration::from_secs(60),
    };
    let report = aggregator.shutdown(deadline).await;
    let tasks = tasks_sent.load(Ordering::Relaxed);
    let latencies = lock(&latencies).clone();
    Ok(serde_json::json!({
        "mode": match args.store {
            StoreKind::Null => "null-store",
            StoreKind::Down => "down-store",
            StoreKind::Neo4j => "actors",
        },
        "pregenerated": args.pregenerate,
        "runs": spec.runs,
        "tasks": tasks,
        "concurrency": args.concurrency,
        "max_batch_rows": args.max_batch_rows,
        "max_batch_bytes": args.max_batch_bytes,
        "max_pending_bytes": args.max_pending_bytes,
        "write_lanes": args.write_lanes,
        "min_overlap_bytes": args.min_overlap_bytes,
        "rate": args.rate,
        "seconds": round3(seconds),
        "tasks_per_s": (tasks as f64 / seconds).round(),
        "output_mb_per_s": round3((tasks * spec.output_bytes) as f64 / seconds / 1e6),
        "accept_seconds": round3(sent_seconds),
        "accepted_per_s": (tasks as f64 / sent_seconds).round(),
        "task_finished_p50_us": latencies.value_at_quantile(0.50) as f64 / 1000.0,
        "task_finished_p99_us": latencies.value_at_quantile(0.99) as f64 / 1000.0,
        "task_finished_max_us": latencies.max() as f64 / 1000.0,
        "failure_visible_ms": failure_visibility,
        "peak_rss_mib": peak_rss_mib(),
        "unwritten_rows": report.unwritten_rows(),
        "buffered_rows": report.buffered_rows,
        "metrics": report.metrics,
    }))
}

async fn drive_run(
    aggregator: &Aggregator,
    run: WorkloadRun,
    latencies: &mut Histogram<u64>,
    probe: Option<&mpsc::UnboundedSender<(runtally::ExecutionId, Instant)>>,
    tasks_sent: &AtomicUsize,
    pace: &Pace,
) -> anyhow::Result<()> {
    let handle = aggregator.begin_run(
        RunStart::new(
            run.execution_id.clone(),
            run.plan_id.clone(),
            run.total_tasks,
        )
        .with_start_time(run.start_time),
    )?;
    let mut failed = false;
    for (task, result) in run.tasks {
        pace.wait().await;
        let failing = result.status == TaskStatus::Failure;
        let t = Instant::now();
        handle.task_finished(task, result).await?;
        let done = Instant::now();
        latencies.saturating_record(u64::try_from((done - t).as_nanos()).unwrap_or(u64::MAX));
        tasks_sent.fetch_add(1, Ordering::Relaxed);
        if failing && !failed {
            failed = true;
            if let Some(probe) = probe {
                // From the call, not its return: the actor may count the result after the call
                // has returned.
                let _ = probe.send((run.execution_id.clone(), t));
            }
        }
    }
    if run.cancelled {
        handle.cancel(run.end_time).await?;
    } else {
        handle.finish(run.end_time).await?;
    }
    Ok(())
}

/// Spaces results evenly over time when a rate is set.
#[derive(Clone)]
struct Pace {
    rate: u64,
    started: Instant,
    issued: Arc<AtomicUsize>,
}

impl Pace {
    async fn wait(&self) {
        if self.rate == 0 {
            return;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed) as f64;
        let due = self.started + Duration::from_secs_f64(n / self.rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Watches failing runs until `status='failed'` is readable: one poller, one query every few
/// milliseconds for every run still waiting, so the probe adds little load of its own.
struct FailureProbe {
    tx: mpsc::UnboundedSender<(runtally::ExecutionId, Instant)>,
    task: tokio::sync::oneshot::Receiver<Histogram<u64>>,
}

impl FailureProbe {
    /// Runs on a thread of its own with its own runtime, so the load it measures cannot starve
    /// its timer and delay what it reports.
    fn start(store: anyhow::Result<Neo4jStore>) -> anyhow::Result<Self> {
        let store = store?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(runtally::ExecutionId, Instant)>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("failure-probe".into())
            .spawn(move || {
                let results = runtime.block_on(async move {
                    let mut results = histogram();
                    let mut waiting: Vec<(runtally::ExecutionId, Instant)> = Vec::new();
                    let mut open = true;
                    while open || !waiting.is_empty() {
                        // Take every new failure without waiting.
                        loop {
                            match rx.try_recv() {
                                Ok(item) => waiting.push(item),
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => {
                                    open = false;
                                    break;
                                }
                            }
                        }
                        if !waiting.is_empty() {
                            let ids: Vec<runtally::ExecutionId> =
                                waiting.iter().map(|(id, _)| id.clone()).collect();
                            // A failed poll is simply made again on the next tick.
                            if let Ok(found) = store.executions(&ids).await {
                                let now = Instant::now();
                                let failed: std::collections::HashSet<String> = found
                                    .into_iter()
                                    .filter(|r| r.status == RunStatus::Failed)
                                    .map(|r| r.id)
                                    .collect();
                                waiting.retain(|(id, since)| {
                                    if failed.contains(id.as_str()) {
                                        let ns = u64::try_from((now - *since).as_nanos())
                                            .unwrap_or(u64::MAX);
                                        results.saturating_record(ns);
                                        false
                                    } else {
                                        since.elapsed() < Duration::from_secs(60)
                                    }
                                });
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    results
                });
                let _ = done_tx.send(results);
            })?;
        Ok(Self { tx, task: done_rx })
    }

    fn sender(&self) -> mpsc::UnboundedSender<(runtally::ExecutionId, Instant)> {
        self.tx.clone()
    }

    async fn finish(self) -> serde_json::Value {
        drop(self.tx);
        match self.task.await {
            Ok(h) if !h.is_empty() => serde_json::json!({
                "count": h.len(),
                "p50": h.value_at_quantile(0.50) as f64 / 1e6,
                "p99": h.value_at_quantile(0.99) as f64 / 1e6,
                "max": h.max() as f64 / 1e6,
            }),
            _ => serde_json::Value::Null,
        }
    }
}

/// The ceiling: the same rows, final values computed up front, written in batches of
/// `max_batch_rows` task rows (or `max_batch_bytes`) by `concurrency` writers (at most 8), with
/// no actors. Each run belongs to one writer, as each run belongs to one lane in runtally's
/// writer: two transactions creating the same run node at once would race on the unique
/// constraint (ArcadeDB refuses the second with `ConstraintValidationFailed`).
async fn raw(args: &LoadgenArgs, spec: &WorkloadSpec) -> anyhow::Result<serde_json::Value> {
    let store = Arc::new(args.db.store()?);
    store.ensure_schema().await?;
    let writers = if args.concurrency > 1 {
        args.concurrency.min(8)
    } else {
        1
    };
    let mut queues: Vec<RawBatches> = (0..writers).map(|_| RawBatches::default()).collect();
    let now = chrono::Utc::now();
    let mut tasks = 0usize;
    for r in 0..spec.runs {
        let run = spec.run(r)?;
        let mut exec = ExecutionRow::started(
            run.execution_id.clone(),
            run.plan_id.clone(),
            run.total_tasks,
            run.start_time,
            now,
        )?;
        let mut rows = Vec::new();
        for (task, result) in run.tasks {
            let row = TaskRow::new(&run.execution_id, &run.plan_id, task, result, now)?;
            if row.failed() {
                exec.tasks_failed += 1;
            } else {
                exec.tasks_successful += 1;
            }
            exec.tokens_input += row.tokens_input;
            exec.tokens_output += row.tokens_output;
            exec.tool_calls += row.tool_calls;
            rows.push(row);
        }
        exec.tokens_total = exec.tokens_input + exec.tokens_output;
        exec.status = if run.cancelled {
            RunStatus::Cancelled
        } else if exec.tasks_failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        exec.end_time = Some(run.end_time);
        exec.duration_ms = (run.end_time - run.start_time).num_milliseconds();
        tasks += rows.len();
        queues[r % writers].push_run(exec, rows, args);
    }
    let batches: Vec<Vec<WriteBatch>> = queues.into_iter().map(RawBatches::finish).collect();
    let bytes: usize = batches.iter().flatten().map(WriteBatch::weight).sum();
    let started = Instant::now();
    let mut handles = Vec::new();
    for queue in batches {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            for batch in queue {
                let mut attempt = 0;
                loop {
                    match store.write(&batch).await {
                        Ok(()) => break,
                        Err(e) if e.is_retriable() && attempt < 20 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "mode": "raw",
        "runs": spec.runs,
        "tasks": tasks,
        "writers": writers,
        "max_batch_rows": args.max_batch_rows,
        "max_batch_bytes": args.max_batch_bytes,
        "batch_mb": round3(bytes as f64 / 1e6),
        // Task outputs written per second, the payload an orchestrator cares about.
        "output_mb_per_s": round3((tasks * spec.output_bytes) as f64 / seconds / 1e6),
        "seconds": round3(seconds),
        "tasks_per_s": (tasks as f64 / seconds).round(),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// One raw writer's batches, built run by run: a batch closes at the row or byte bound, as the
/// writer's do. A run that spans batches has a placeholder in each earlier one, so its tasks
/// find their node.
#[derive(Default)]
struct RawBatches {
    done: Vec<WriteBatch>,
    current: WriteBatch,
    current_bytes: usize,
}

impl RawBatches {
    fn push_run(&mut self, exec: ExecutionRow, rows: Vec<TaskRow>, args: &LoadgenArgs) {
        let mut placeholder = exec.clone();
        placeholder.write = ExecutionWrite::Placeholder;
        let mut in_current = false;
        for row in rows {
            let weight = row.weight();
            if !self.current.tasks.is_empty()
                && (self.current.tasks.len() >= args.max_batch_rows
                    || self.current_bytes + weight > args.max_batch_bytes)
            {
                if in_current {
                    self.current.executions.push(placeholder.clone());
                }
                self.done.push(std::mem::take(&mut self.current));
                self.current_bytes = 0;
            }
            in_current = true;
            self.current_bytes += weight;
            self.current.tasks.push(row);
        }
        self.current.executions.push(exec);
    }

    fn finish(mut self) -> Vec<WriteBatch> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 10 min, 2 significant digits (1% error): each of up to hundreds of
    // workers keeps one, so they must stay small (tens of KiB, not the ~1 MiB of 3 digits).
    Histogram::new_with_bounds(1, 600_000_000_000, 2).expect("constant bounds are valid")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Peak resident set size, from /proc (Linux); `null` elsewhere.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
