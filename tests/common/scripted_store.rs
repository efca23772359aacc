//! A store for actor-logic tests that misbehaves on cue: writes that take a while or hang (all
//! of them, or one run's until released), and pings that fail in a scripted order. Everything else goes to a [`MemoryStore`] (no database:
//! these tests are about what the writer does, not about persistence).
//!
//! It also says when a write has reached it ([`ScriptedStore::wait_for_writes`]), so a test can
//! wait for a write to be in flight instead of sleeping and hoping it has started.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runtally::rows::WriteBatch;
use runtally::store::{BoxFuture, GraphStore, MemoryStore};
use runtally::StoreError;
use tokio::sync::{watch, Notify};

/// How one scripted ping ends.
#[derive(Debug, Clone, Copy)]
pub enum Ping {
    /// A retriable failure (the server is unreachable).
    Unreachable,
    /// A permanent one (credentials changed, the schema step refused).
    Refused,
}

/// Clones share the script and the data.
#[derive(Clone, Default)]
pub struct ScriptedStore {
    /// Where the writes land.
    pub memory: MemoryStore,
    /// While set, writes never finish.
    pub hang: Arc<AtomicBool>,
    /// How long every write takes.
    pub write_delay: Duration,
    /// Outcomes of the next pings, in order; an empty script answers `Ok`.
    pub pings: Arc<Mutex<Vec<Ping>>>,
    /// Pings received.
    pub pinged: Arc<AtomicUsize>,
    /// Writes holding task rows of this run wait for [`ScriptedStore::release`].
    pub held_run: Arc<Mutex<Option<String>>>,
    /// Set once a write of the held run is waiting.
    pub holding: Arc<AtomicBool>,
    /// Set by [`ScriptedStore::release`].
    pub released: Arc<AtomicBool>,
    /// Wakes held writes.
    pub release: Arc<Notify>,
    /// Writes carrying rows that have reached the store so far, counted as each one begins
    /// (before it hangs, is held, or lands).
    pub writes_begun: Arc<watch::Sender<usize>>,
}

impl ScriptedStore {
    /// Waits until at least `writes` writes carrying rows have reached the store (they may be
    /// hanging or held now). Fails the test if that takes longer than `within`.
    pub async fn wait_for_writes(&self, writes: usize, within: Duration) {
        let mut begun = self.writes_begun.subscribe();
        let reached = tokio::time::timeout(within, begun.wait_for(|n| *n >= writes))
            .await
            .map(|seen| seen.map(|_| ()));
        let seen = *self.writes_begun.borrow();
        assert!(
            matches!(reached, Ok(Ok(()))),
            "expected {writes} write(s) to reach the store within {within:?}; {seen} did"
        );
    }

    /// Lets the held run's writes go on.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }

    async fn wait_if_held(&self, batch: &WriteBatch) {
        let held = self.held_run.lock().expect("held run").clone();
        let Some(held) = held else { return };
        if !batch.tasks.iter().any(|t| t.execution_id.as_str() == held) {
            return;
        }
        self.holding.store(true, Ordering::SeqCst);
        loop {
            // Created before the check, so a release in between still wakes it.
            let released = self.release.notified();
            if self.released.load(Ordering::SeqCst) {
                return;
            }
            released.await;
        }
    }
}

impl GraphStore for ScriptedStore {
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // A heartbeat alone is not a write of rows.
            if !batch.executions.is_empty() || !batch.tasks.is_empty() {
                self.writes_begun.send_modify(|n| *n += 1);
            }
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if !self.write_delay.is_zero() {
                tokio::time::sleep(self.write_delay).await;
            }
            self.wait_if_held(batch).await;
            self.memory.write(batch).await
        })
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.memory.ensure_schema()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.pinged.fetch_add(1, Ordering::SeqCst);
        let next = {
            let mut script = self.pings.lock().expect("ping script");
            (!script.is_empty()).then(|| script.remove(0))
        };
        Box::pin(async move {
            match next {
                None => Ok(()),
                Some(Ping::Unreachable) => Err(StoreError::timeout(Duration::from_millis(1))),
                // Not retriable by itself.
                Some(Ping::Refused) => Err(StoreError::orphaned(1, 1)),
            }
        })
    }

    fn reconcile_stale(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.memory.reconcile_stale(cutoff, except_owner, now)
    }
}
