//! `status`, `list` and `reconcile`: the seed readers' answers, and the clean-up of runs left
//! behind by dead processes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use runtally::store::{ExecutionRecord, GraphStore};
use runtally::ExecutionId;

use super::table::{duration_ms, Table};
use crate::DbArgs;

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The run's execution id.
    execution_id: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Runs to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Runs to skip (newest first).
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// Runs whose heartbeat is older than this many seconds count as orphaned.
    #[arg(long, default_value_t = 300)]
    older_than_secs: u64,
    /// Print JSON instead of a list.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

pub(crate) fn execution_table(runs: &[ExecutionRecord]) -> Table {
    let mut table = Table::new(&[
        "execution",
        "status",
        "ok",
        "failed",
        "total",
        "tokens in",
        "tokens out",
        "tool calls",
        "duration",
        "started",
    ]);
    for r in runs {
        table.row(vec![
            r.id.clone(),
            r.status.to_string(),
            r.tasks_successful.to_string(),
            r.tasks_failed.to_string(),
            r.tasks_total.to_string(),
            r.tokens_input.to_string(),
            r.tokens_output.to_string(),
            r.tool_calls.to_string(),
            if r.end_time.is_some() {
                duration_ms(r.duration)
            } else {
                "-".into()
            },
            r.start_time
                .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        ]);
    }
    table
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let id = ExecutionId::new(args.execution_id)?;
    let store = args.db.store()?;
    let Some(run) = store.execution(&id).await? else {
        anyhow::bail!("no run {id} in the database");
    };
    let tasks = store.task_executions(&id).await?;
    if args.json {
        let json = serde_json::json!({ "execution": run, "tasks": tasks });
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", execution_table(std::slice::from_ref(&run)).render());
    if let Some(error) = &run.error {
        println!("error: {error}");
    }
    println!();
    let mut table = Table::new(&[
        "task",
        "title",
        "status",
        "attempt",
        "qc",
        "tokens in",
        "tokens out",
        "tool calls",
        "duration",
    ]);
    for t in &tasks {
        table.row(vec![
            t.task_id.clone(),
            t.task_title.clone(),
            t.status.to_string(),
            t.attempt_number.to_string(),
            format!("{}{}", t.qc_score, if t.qc_passed { " ok" } else { "" }),
            t.tokens_input.to_string(),
            t.tokens_output.to_string(),
            t.tool_calls.to_string(),
            duration_ms(t.duration),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.store()?;
    let runs = store.list_executions(args.limit, args.offset).await?;
    if args.json {
        println!("{}", serde_json::to_string(&runs)?);
    } else {
        print!("{}", execution_table(&runs).render());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.store()?;
    let now = chrono::Utc::now();
    let cutoff = chrono::Duration::from_std(Duration::from_secs(args.older_than_secs))
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| {
            anyhow::anyhow!("--older-than-secs {} is out of range", args.older_than_secs)
        })?;
    let marked = store.reconcile_stale(cutoff, None, now).await?;
    if args.json {
        println!("{}", serde_json::json!({ "interrupted": marked }));
    } else {
        for id in &marked {
            println!("{id}");
        }
        eprintln!("{} run(s) marked failed (interrupted)", marked.len());
    }
    Ok(ExitCode::SUCCESS)
}
