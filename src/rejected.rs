//! Rows the database refused for good, and the host's handler for them.

use std::sync::Arc;

use crate::error::StoreError;
use crate::rows::{ExecutionRow, TaskRow};

/// Rows the database refused permanently, with its error. Everything else in their batch was
/// written.
#[derive(Debug)]
#[non_exhaustive]
pub struct RejectedWrite {
    /// Execution rows refused (with them, their runs' task rows in this write).
    pub executions: Vec<ExecutionRow>,
    /// Task rows refused.
    pub tasks: Vec<TaskRow>,
    /// Why.
    pub error: StoreError,
}

/// Called with every [`RejectedWrite`], on the writer's thread: keep it short.
pub type RejectedHandler = Arc<dyn Fn(RejectedWrite) + Send + Sync>;
