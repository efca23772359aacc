//! Which runs already ended: remembered for runs ended through this service, asked of the
//! database for a run that started before this service did (a retry reaching a restarted
//! service). Beginning an ended run anew would write it back to `running` with zero counters.
//!
//! The database is asked by one task that coalesces: while it waits for one read, the lookups
//! of every other request queue up and go out together in the next (`UNWIND` by id), so a
//! stream of run starts costs a read per round trip rather than a read per start (on Neo4j a
//! read per start cost 15–29 % of the end-to-end throughput; BENCHMARKS.md, session
//! 20261204).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use runtally::store::Neo4jStore;
use runtally::ExecutionId;

/// How long one read may take to say whether runs already ended; past it (the database down
/// or slow) the runs begin, as they would without the check. A request waits at most twice
/// this: the read under way when it asked, then the read that carries its runs.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs known to have ended, remembered up to a bound (oldest forgotten first).
struct Memory {
    inner: Mutex<(HashSet<ExecutionId>, VecDeque<ExecutionId>)>,
    cap: usize,
}

impl Memory {
    fn lock(&self) -> MutexGuard<'_, (HashSet<ExecutionId>, VecDeque<ExecutionId>)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, id: ExecutionId) {
        let mut guard = self.lock();
        let (set, order) = &mut *guard;
        if set.insert(id.clone()) {
            order.push_back(id);
            while order.len() > self.cap {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

/// One request's question to the checker: which of these ended? Answered (by dropping or
/// sending on `done`) once the memory holds the answer.
struct Lookup {
    ids: Vec<ExecutionId>,
    done: oneshot::Sender<()>,
}

/// Runs ended through this service (remembered, bounded) so that a retried `run_started` or
/// `run_finished` is a no-op rather than a new run or an error; and, for a run neither live
/// nor remembered, the database's word on whether it ended.
pub(crate) struct EndedRuns {
    memory: Arc<Memory>,
    /// `None` without a database (the null store) or outside a runtime.
    lookups: Option<mpsc::UnboundedSender<Lookup>>,
    /// When this service started: a run that started later cannot have ended before it.
    since: DateTime<Utc>,
}

impl EndedRuns {
    /// Remembers up to `cap` ended runs and asks `store` about others. Must be called inside a
    /// tokio runtime when `store` is given (it spawns the checker, which ends with `self`).
    pub(crate) fn new(cap: usize, store: Option<Neo4jStore>) -> Self {
        let memory = Arc::new(Memory {
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
            cap,
        });
        let lookups = store.map(|store| {
            // Unbounded, yet bounded in practice: each sender waits for its answer, so the
            // queue holds at most one lookup per request in flight (`--max-connections`).
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(check(store, Arc::clone(&memory), rx));
            tx
        });
        Self {
            memory,
            lookups,
            since: Utc::now(),
        }
    }

    /// Whether the run that started at `start` ended (see [`EndedRuns::learn`]).
    pub(crate) async fn ended_anywhere(&self, id: &ExecutionId, start: DateTime<Utc>) -> bool {
        self.learn(std::iter::once((id, start))).await;
        self.contains(id)
    }

    /// Finds out which of these runs ended and remembers those that did. Only runs neither
    /// remembered nor started after this service are asked about. No answer (a read past
    /// [`CHECK_TIMEOUT`], or failed) counts as not ended.
    pub(crate) async fn learn<'a>(
        &self,
        runs: impl IntoIterator<Item = (&'a ExecutionId, DateTime<Utc>)>,
    ) {
        let Some(lookups) = &self.lookups else {
            return;
        };
        let ids: Vec<ExecutionId> = {
            let guard = self.memory.lock();
            runs.into_iter()
                .filter(|(id, start)| *start < self.since && !guard.0.contains(*id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        if ids.is_empty() {
            return;
        }
        let (done, answered) = oneshot::channel();
        if lookups.send(Lookup { ids, done }).is_err() {
            return;
        }
        // The checker answers within two reads, each bounded; this bound only guards against
        // a checker that stopped. (A failed read is counted once, by the checker.)
        if tokio::time::timeout(2 * CHECK_TIMEOUT, answered)
            .await
            .is_err()
        {
            tracing::debug!(target: "runtally::serve", "no answer on whether runs ended; beginning them");
        }
    }

    /// Remembers a run that ended through this service.
    pub(crate) fn insert(&self, id: ExecutionId) {
        self.memory.insert(id);
    }

    /// Whether the run is remembered as ended.
    pub(crate) fn contains(&self, id: &ExecutionId) -> bool {
        self.memory.lock().0.contains(id)
    }
}

/// The checker: takes every lookup queued while the last read ran, asks the database about
/// all their runs in one read, remembers the ended ones, then answers them all.
async fn check(
    store: Neo4jStore,
    memory: Arc<Memory>,
    mut lookups: mpsc::UnboundedReceiver<Lookup>,
) {
    while let Some(first) = lookups.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = lookups.try_recv() {
            waiting.push(more);
        }
        // A request that stopped waiting has begun its runs already: not worth a read.
        waiting.retain(|lookup| !lookup.done.is_closed());
        if waiting.is_empty() {
            continue;
        }
        let mut ids: Vec<ExecutionId> = waiting
            .iter_mut()
            .flat_map(|lookup| std::mem::take(&mut lookup.ids))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        match tokio::time::timeout(CHECK_TIMEOUT, store.executions(&ids)).await {
            Ok(Ok(runs)) => {
                let ended: HashSet<String> = runs
                    .into_iter()
                    .filter(|run| run.end_time.is_some())
                    .map(|run| run.id)
                    .collect();
                for id in ids {
                    if ended.contains(id.as_str()) {
                        memory.insert(id);
                    }
                }
            }
            Ok(Err(e)) => {
                metrics::counter!("runtally_serve_ended_checks_failed_total").increment(1);
                tracing::debug!(target: "runtally::serve", runs = ids.len(), error = %e,
                    "could not read whether runs ended; beginning them");
            }
            Err(_) => {
                metrics::counter!("runtally_serve_ended_checks_failed_total").increment(1);
            }
        }
        for lookup in waiting {
            // A request that stopped waiting has gone on without the answer.
            let _ = lookup.done.send(());
        }
    }
}
