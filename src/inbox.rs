//! How rows reach the writer: a shared queue with a doorbell.
//!
//! Run actors push their rows here synchronously (a short mutex hold, no allocation beyond the
//! queue's own growth) and ring the writer only when the queue goes from quiet to busy: one
//! `Ring` message is outstanding at a time, however many rows arrive. A busy writer so reads
//! thousands of rows per message instead of one message per row, and a push is never lost: the
//! writer clears the bell *before* it takes the queue, so a push after the take rings again.
//!
//! The queue itself needs no bound: every task row in it already holds a slot under
//! `max_pending_rows` (the senders' semaphore), and execution rows are one per delivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use actix::{Message, Recipient};

use crate::rows::{ExecutionRow, TaskRow, WriteBatch};
use crate::sync::lock;

/// Rows handed to the writer.
// Deliveries are stored inline in the inbox's vector; boxing the large (and by far most common)
// variant would add an allocation to every delivery to save space in a rare one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A run's latest absolute state, with the task rows that changed it (if any).
    Run {
        execution: ExecutionRow,
        tasks: Vec<TaskRow>,
        /// Put the run's state ahead of the queue (it failed, recovered, or finished).
        urgent: bool,
    },
    /// Rows restored as they are (a spill being replayed).
    Restore(WriteBatch),
}

/// Sent to the writer when its inbox goes from empty to non-empty. Reply: none.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ring;

/// The writer's inbox, shared by every run actor of one aggregator.
#[derive(Default)]
pub(crate) struct Inbox {
    items: Mutex<Vec<Delivery>>,
    rung: AtomicBool,
    closed: AtomicBool,
    doorbell: OnceLock<Recipient<Ring>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Connects the doorbell once the writer has started.
    pub(crate) fn connect(&self, doorbell: Recipient<Ring>) {
        let _ = self.doorbell.set(doorbell);
    }

    /// Queues a delivery. Returns it back if the writer has shut down (a cold path: the
    /// delivery is returned as is rather than boxed).
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(&self, delivery: Delivery) -> Result<(), Delivery> {
        {
            // Checked under the lock `close` takes too: a push either lands before the
            // writer's last take, or is refused.
            let mut items = lock(&self.items);
            if self.closed.load(Ordering::Acquire) {
                return Err(delivery);
            }
            items.push(delivery);
        }
        self.ring();
        Ok(())
    }

    /// Whether the writer has stopped taking deliveries.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn ring(&self) {
        if self.rung.swap(true, Ordering::AcqRel) {
            return; // a Ring is on its way and the writer has not taken the queue yet
        }
        let Some(doorbell) = self.doorbell.get() else {
            // Not connected yet: the writer takes the queue when it starts.
            self.rung.store(false, Ordering::Release);
            return;
        };
        // `try_send` honours the writer's mailbox bound. If the mailbox is full the writer is
        // busy and will take the queue on its next message or timer tick anyway.
        if doorbell.try_send(Ring).is_err() {
            self.rung.store(false, Ordering::Release);
        }
    }

    /// Takes everything queued, swapping in `spare` (an empty vector with capacity) so neither
    /// side reallocates in the steady state.
    pub(crate) fn take_into(&self, spare: &mut Vec<Delivery>) {
        // Clear the bell first: a push after this point rings again.
        self.rung.store(false, Ordering::Release);
        std::mem::swap(&mut *lock(&self.items), spare);
    }

    /// Refuses further pushes (the writer is stopping).
    pub(crate) fn close(&self) {
        let _items = lock(&self.items);
        self.closed.store(true, Ordering::Release);
    }

    /// Deliveries waiting.
    pub(crate) fn len(&self) -> usize {
        lock(&self.items).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery::Restore(WriteBatch::default())
    }

    #[test]
    fn without_a_doorbell_pushes_queue_and_the_bell_stays_clear() {
        let inbox = Inbox::default();
        inbox.push(delivery()).expect("open");
        inbox.push(delivery()).expect("open");
        assert_eq!(inbox.len(), 2);
        assert!(!inbox.rung.load(Ordering::Acquire));
        let mut spare = Vec::new();
        inbox.take_into(&mut spare);
        assert_eq!(spare.len(), 2);
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn a_closed_inbox_gives_deliveries_back() {
        let inbox = Inbox::default();
        assert!(!inbox.is_closed());
        inbox.close();
        assert!(inbox.is_closed());
        assert!(inbox.push(delivery()).is_err());
        assert_eq!(inbox.len(), 0);
    }
}
