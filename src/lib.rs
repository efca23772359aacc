//! runtally (docs to come)
pub mod aggregator;
#[doc(hidden)]
pub mod bench_support;
pub mod config;
pub mod error;
pub mod events;
mod execution;
pub mod metrics;
pub mod model;
mod registry;
pub mod replay;
pub mod rows;
pub mod store;
pub mod workload;
mod writer;

pub use aggregator::{Aggregator, RunHandle, RunStart, ShutdownReport};
pub use config::{AggregatorConfig, AggregatorConfigBuilder, Neo4jConfig, Neo4jConfigBuilder};
pub use error::{
    BeginError, ConfigError, FlushError, ModelError, RecordError, StartError, StoreError,
};
pub use execution::{RunSnapshot, Totals};
pub use metrics::{FlushReason, MetricsSnapshot};
pub use model::{
    ExecutionId, PlanId, QcVerification, RunStatus, TaskDefinition, TaskId, TaskResult, TaskStatus,
    TokenUsage,
};
pub use writer::retry::RetryPolicy;
pub use writer::{RejectedHandler, RejectedWrite};
