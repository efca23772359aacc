//! `runtally demo`: a simulated orchestrator writing through the public API.
//!
//! Each workflow runs its plan group by group; the tasks of a group run in parallel. A task may
//! fail QC on its first attempt and be retried (the retry's result replaces the first, as an
//! at-least-once orchestrator would re-send it), may fail for good (the workflow stops and ends
//! `failed`), and some workflows are cancelled halfway.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, PlanId, QcVerification, RunHandle, RunStart,
    TaskDefinition, TaskId, TaskResult,
};

use super::read::execution_table;
use crate::DbArgs;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Workflows to run, all at once.
    #[arg(long, default_value_t = 36)]
    runs: usize,
    /// Random seed (same seed, same workflows).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Longest simulated agent time per task attempt, in milliseconds.
    #[arg(long, default_value_t = 60)]
    max_task_ms: u64,
    /// Id prefix for the runs (default: `demo-` and the current time).
    #[arg(long)]
    prefix: Option<String>,
    /// Print the metrics as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the demo runs (e.g.
    /// 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving metrics this many seconds after the demo ends.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        requires = "metrics_addr"
    )]
    linger: u64,
    #[command(flatten)]
    db: DbArgs,
}

/// One planned workflow.
struct Plan {
    execution_id: ExecutionId,
    plan_id: PlanId,
    groups: Vec<Vec<TaskDefinition>>,
    cancel_after_group: Option<usize>,
    seed: u64,
}

fn plans(args: &DemoArgs, prefix: &str) -> anyhow::Result<Vec<Plan>> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let roles = ["researcher", "coder", "reviewer", "data engineer", "writer"];
    (0..args.runs)
        .map(|r| {
            let groups = (0..rng.usize(3..=6))
                .map(|g| {
                    (0..rng.usize(1..=4))
                        .map(|t| {
                            let id = TaskId::new(format!("task-{}.{}", g + 1, t + 1))?;
                            Ok(TaskDefinition::new(id)
                                .with_title(format!("Step {}.{} of workflow {r}", g + 1, t + 1))
                                .with_agent_role(roles[rng.usize(..roles.len())])
                                .with_qc_role("qc reviewer")
                                .with_parallel_group(g as u64))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cancel_after_group = (r % 9 == 8).then_some(groups.len() / 2);
            Ok(Plan {
                execution_id: ExecutionId::new(format!("{prefix}-exec-{r}"))?,
                plan_id: PlanId::new(format!("{prefix}-plan-{r}"))?,
                groups,
                cancel_after_group,
                seed: rng.u64(..),
            })
        })
        .collect()
}

/// What one task attempt produced.
fn attempt(rng: &mut fastrand::Rng, task: &TaskDefinition, attempt: u64, pass: bool) -> TaskResult {
    let id = task.id.clone();
    let tokens_in = rng.u64(800..4000);
    let tokens_out = rng.u64(100..1500);
    let mut qc = QcVerification::new(
        pass,
        if pass {
            rng.i64(80..=100)
        } else {
            rng.i64(20..60)
        },
    );
    qc.feedback = Some(
        if pass {
            "all checks passed"
        } else {
            "needs work"
        }
        .to_owned(),
    );
    qc.issues = Some(if pass {
        vec![]
    } else {
        vec!["incomplete output".to_owned()]
    });
    let result = if pass {
        TaskResult::success(id).with_output(format!("{} done", task.id))
    } else {
        TaskResult::failure(id, "QC failed").with_output("partial output")
    };
    result
        .with_tokens(tokens_in, tokens_out)
        .with_tool_calls(rng.u64(0..8))
        .with_duration_ms(rng.u64(200..20_000))
        .with_attempt(attempt)
        .with_qc(qc)
}

async fn run_workflow(
    run: RunHandle,
    plan: Plan,
    max_task_ms: u64,
    bar: ProgressBar,
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    for (g, group) in plan.groups.iter().enumerate() {
        if plan.cancel_after_group == Some(g) {
            run.cancel(chrono::Utc::now()).await?;
            return Ok(());
        }
        let tasks = group.iter().map(|task| {
            let mut rng = fastrand::Rng::with_seed(rng.u64(..));
            let run = run.clone();
            let bar = bar.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(rng.u64(0..=max_task_ms))).await;
                let roll = rng.u8(0..100);
                // 15%: fails QC once, then passes on the retry (the result is re-sent).
                // 4%: fails for good.
                if roll < 15 {
                    run.task_finished(task.clone(), attempt(&mut rng, task, 1, false))
                        .await?;
                    tokio::time::sleep(Duration::from_millis(rng.u64(0..=max_task_ms))).await;
                    run.task_finished(task.clone(), attempt(&mut rng, task, 2, true))
                        .await?;
                } else {
                    let pass = roll >= 19;
                    run.task_finished(task.clone(), attempt(&mut rng, task, 1, pass))
                        .await?;
                }
                bar.inc(1);
                anyhow::Ok(())
            }
        });
        futures_util::future::try_join_all(tasks).await?;
        if run.snapshot().await?.totals.tasks_failed > 0 {
            // The orchestrator stops a workflow at its first failed task.
            break;
        }
    }
    run.finish(chrono::Utc::now()).await?;
    Ok(())
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("demo-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")));
    let plans = plans(&args, &prefix)?;
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
        eprintln!("serving Prometheus metrics at http://{addr}/metrics");
    }
    let config = AggregatorConfig::builder()
        .with_neo4j(args.db.neo4j()?)
        .build()?;
    let aggregator = Aggregator::start(config).await?;
    let store = args.db.store()?;

    let total: usize = plans
        .iter()
        .map(|p| p.groups.iter().map(Vec::len).sum::<usize>())
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} tasks ({per_sec})")?
            .progress_chars("=> "),
    );
    bar.set_message(format!("{} workflows", plans.len()));
    let ids: Vec<ExecutionId> = plans.iter().map(|p| p.execution_id.clone()).collect();
    let mut workflows = Vec::new();
    for plan in plans {
        let run = aggregator.begin_run(RunStart::new(
            plan.execution_id.clone(),
            plan.plan_id.clone(),
            plan.groups.iter().map(Vec::len).sum::<usize>() as u64,
        ))?;
        workflows.push(tokio::spawn(run_workflow(
            run,
            plan,
            args.max_task_ms,
            bar.clone(),
        )));
    }
    for workflow in workflows {
        workflow.await??;
    }
    bar.finish_with_message("workflows done");
    aggregator.flush().await?;
    let report = aggregator.shutdown(Duration::from_secs(30)).await;

    let mut runs = Vec::new();
    for id in &ids {
        let record = store
            .execution(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {id} is missing from the database"))?;
        runs.push(record);
    }
    println!();
    print!("{}", execution_table(&runs).render());
    let m = &report.metrics;
    if args.json {
        println!("{}", serde_json::to_string(m)?);
    } else {
        println!();
        println!(
            "runs: {} completed, {} failed, {} cancelled; tasks: {} ok, {} failed, {} re-sent",
            m.runs_completed,
            m.runs_failed,
            m.runs_cancelled,
            m.tasks_succeeded,
            m.tasks_failed,
            m.tasks_replaced
        );
        println!(
            "writes: {} batches, {} execution rows, {} task rows; flush p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            m.batches_written,
            m.execution_rows_written,
            m.task_rows_written,
            m.flush_latency.p50_ms,
            m.flush_latency.p99_ms,
            m.flush_latency.max_ms
        );
        println!(
            "flushes: {} size, {} timer, {} urgent, {} manual, {} shutdown; retries {}, rejected rows {}, dropped rows {}",
            m.flush_reasons.size,
            m.flush_reasons.timer,
            m.flush_reasons.urgent,
            m.flush_reasons.manual,
            m.flush_reasons.shutdown,
            m.retries,
            m.rows_rejected,
            m.rows_dropped
        );
        println!(
            "messages: {} to run actors, {} to the writer",
            m.run_actor.messages, m.writer_actor.messages
        );
    }
    if args.linger > 0 {
        eprintln!("metrics stay up for {} s", args.linger);
        tokio::time::sleep(Duration::from_secs(args.linger)).await;
    }
    if !report.complete {
        anyhow::bail!("{} rows were not written", report.unwritten_rows());
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs the Prometheus recorder with an HTTP listener on the current runtime.
pub(crate) fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    prometheus()?
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
}

/// The Prometheus exporter with runtally's histogram buckets.
pub(crate) fn prometheus() -> anyhow::Result<metrics_exporter_prometheus::PrometheusBuilder> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    Ok(PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full("runtally_flush_duration_seconds".to_owned()),
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    )?)
}
