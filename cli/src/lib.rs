//! What the `runtally` command line needs beyond the library: the orchestration event stream
//! it replays ([`events`], [`replay`]) and the synthetic workload of the demo, `loadgen` and the
//! benchmarks ([`workload`]), and the HTTP service of `runtally serve` ([`serve`]).
//!
//! An orchestrator embeds the `runtally` library crate; this crate is the tool around it, and
//! its dependencies (clap, indicatif, a `tracing` subscriber, a Prometheus exporter, mimalloc)
//! never reach an embedder's build.

pub mod events;
pub mod http;
pub mod replay;
pub mod serve;
pub mod workload;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, ignoring poison: the replay's mutexes guard whole values swapped in and out.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
