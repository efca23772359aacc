//! A host that reads runs back, with the same queries as the seed system's readers: the newest
//! runs, then one run's tasks.
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run --example read_runs
//! ```

use runtally::store::Neo4jStore;
use runtally::{ExecutionId, Neo4jConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Neo4jStore::new(&Neo4jConfig::from_env()?.build()?)?;

    let runs = store.list_executions(5, 0).await?;
    println!("{} newest runs:", runs.len());
    for run in &runs {
        println!(
            "  {:<40} {:<9} {:>3} ok {:>3} failed {:>8} tokens",
            run.id, run.status, run.tasks_successful, run.tasks_failed, run.tokens_total
        );
    }
    if let Some(newest) = runs.first() {
        let id = ExecutionId::new(newest.id.clone())?;
        for task in store.task_executions(&id).await? {
            println!(
                "    {:<12} {:<8} attempt {} qc {}",
                task.task_id, task.status, task.attempt_number, task.qc_score
            );
        }
    }
    Ok(())
}
