//! Live runs by execution id, in a `DashMap` owned by one aggregator (never a global).
//!
//! A run enters when it is begun and leaves when its final state and every task row are durable
//! (or refused and reported), so `Aggregator::run` finds it until then. Guards are never held
//! across an `.await` or while touching the map again: every method here is synchronous and
//! clones what it returns.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::error::BeginError;
use crate::metrics::Metrics;
use crate::model::ExecutionId;

/// What the registry needs of a run's handle (the public handle implements it; the registry
/// sits below it and never names it).
pub(crate) trait Live: Clone {
    /// The run has finished or been cancelled.
    fn is_ended(&self) -> bool;
}

/// What the writer needs of the registry: the runs to heartbeat, and removing a run once its
/// rows are settled. (The writer sits below the handle, so it sees the registry only so.)
pub(crate) trait LiveRuns: Send + Sync {
    /// Ids of the runs not yet finished (for their heartbeat).
    fn live_ids(&self) -> Vec<ExecutionId>;
    /// Removes a run that has ended (a live run with the same id is left alone).
    fn remove_finished(&self, id: &ExecutionId);
}

/// The live runs of one aggregator.
pub(crate) struct Registry<H> {
    runs: DashMap<ExecutionId, H>,
    metrics: Arc<Metrics>,
}

impl<H: Live> Registry<H> {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            runs: DashMap::new(),
            metrics,
        }
    }

    /// Inserts the handle `make` builds, unless the id is already live. `make` runs under the
    /// map's shard lock, so two concurrent begins of one id start one actor, not two.
    pub(crate) fn insert_new(
        &self,
        id: ExecutionId,
        make: impl FnOnce() -> H,
    ) -> Result<H, BeginError> {
        match self.runs.entry(id) {
            Entry::Occupied(entry) => Err(BeginError::Duplicate(entry.key().clone())),
            Entry::Vacant(entry) => {
                let handle = make();
                entry.insert(handle.clone());
                self.metrics.live_runs.fetch_add(1, Relaxed);
                Ok(handle)
            }
        }
    }

    pub(crate) fn get(&self, id: &ExecutionId) -> Option<H> {
        self.runs.get(id).map(|entry| entry.value().clone())
    }

    /// Every handle, cloned, so callers can await on them without holding the map.
    pub(crate) fn handles(&self) -> Vec<H> {
        self.runs
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

impl<H: Live + Send + Sync> LiveRuns for Registry<H> {
    fn live_ids(&self) -> Vec<ExecutionId> {
        self.runs
            .iter()
            .filter(|entry| !entry.value().is_ended())
            .map(|entry| entry.key().clone())
            .collect()
    }

    fn remove_finished(&self, id: &ExecutionId) {
        if self
            .runs
            .remove_if(id, |_, handle| handle.is_ended())
            .is_some()
        {
            self.metrics.live_runs.fetch_sub(1, Relaxed);
        }
    }
}
