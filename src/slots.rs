//! The senders' budget for rows waiting for the database: at most `max_pending_rows` task rows
//! and `max_pending_bytes` bytes of them (by [`TaskRow::weight`]).
//!
//! Two semaphores, one per bound. A sender takes one row permit and the row's *charge* in byte
//! permits before its result is accepted, and waits (or, non-blocking, gets `Full`) at either
//! bound. The writer gives both back when the row is written, replaced or refused. A row's
//! charge is its weight, capped at `max_pending_bytes`, so a row heavier than the whole budget
//! still goes through, alone, once everything before it is written; the writer computes the
//! same charge from the same row, so what it gives back is what was taken.

use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::rows::TaskRow;

/// Both bounds, shared by an aggregator's handles and its writer.
#[derive(Debug)]
pub(crate) struct Slots {
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// The most one row is charged: `max_pending_bytes`, and at most what one acquire can take.
    cap: usize,
    /// Slots the writer took for rows read back from the disk buffer beyond what was free
    /// (rows, bytes): the next releases pay it back before freeing anything.
    debt: std::sync::Mutex<(usize, usize)>,
}

/// The slots one or more accepted rows hold. Dropping it gives them back; once the rows are
/// at the writer, [`Slot::forget`] hands the accounting to it.
#[derive(Debug)]
pub(crate) struct Slot {
    rows: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

impl Slots {
    /// Room for `max_rows` task rows and `max_bytes` bytes (each at most
    /// [`Semaphore::MAX_PERMITS`]; the configuration checks that).
    pub(crate) fn new(max_rows: usize, max_bytes: usize) -> Self {
        let max_rows = max_rows.min(Semaphore::MAX_PERMITS);
        let max_bytes = max_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            rows: Arc::new(Semaphore::new(max_rows)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            cap: max_bytes.min(u32::MAX as usize),
            debt: std::sync::Mutex::new((0, 0)),
        }
    }

    /// The most one row is charged.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// What a row of this weight is charged in bytes.
    pub(crate) fn charge_of(&self, weight: usize) -> usize {
        weight.min(self.cap)
    }

    /// What `row` is charged in bytes.
    pub(crate) fn charge(&self, row: &TaskRow) -> usize {
        self.charge_of(row.weight())
    }

    /// Waits for one row's slots (`Err` once closed).
    pub(crate) async fn acquire(&self, charge: usize) -> Result<Slot, AcquireError> {
        self.acquire_many(1, charge).await
    }

    /// Waits for `rows` rows' slots weighing `bytes` (capped like a charge).
    pub(crate) async fn acquire_many(&self, rows: u32, bytes: usize) -> Result<Slot, AcquireError> {
        // Rows first: the writer frees both kinds independently of any sender, so holding one
        // while waiting for the other cannot deadlock.
        let rows = Arc::clone(&self.rows).acquire_many_owned(rows).await?;
        let bytes = Arc::clone(&self.bytes)
            .acquire_many_owned(self.permits(bytes))
            .await?;
        Ok(Slot { rows, bytes })
    }

    /// One row's slots if both are free now.
    pub(crate) fn try_acquire(&self, charge: usize) -> Result<Slot, TryAcquireError> {
        let rows = Arc::clone(&self.rows).try_acquire_owned()?;
        let bytes = Arc::clone(&self.bytes).try_acquire_many_owned(self.permits(charge))?;
        Ok(Slot { rows, bytes })
    }

    /// Takes slots for rows that are already in memory (read back from the disk buffer), without
    /// waiting: what is free now, and what is not becomes a debt that later releases pay back.
    pub(crate) fn take(&self, rows: usize, bytes: usize) {
        let got_rows = self.rows.forget_permits(rows);
        let got_bytes = self.bytes.forget_permits(bytes);
        let mut debt = crate::sync::lock(&self.debt);
        debt.0 += rows - got_rows;
        debt.1 += bytes - got_bytes;
    }

    /// Rows and bytes free now.
    pub(crate) fn free(&self) -> (usize, usize) {
        (
            self.rows.available_permits(),
            self.bytes.available_permits(),
        )
    }

    /// Gives back the slots of rows the writer settled (written, replaced or refused).
    pub(crate) fn release(&self, mut rows: usize, mut bytes: usize) {
        {
            let mut debt = crate::sync::lock(&self.debt);
            if *debt != (0, 0) {
                let paid = (rows.min(debt.0), bytes.min(debt.1));
                debt.0 -= paid.0;
                debt.1 -= paid.1;
                rows -= paid.0;
                bytes -= paid.1;
            }
        }
        if rows > 0 {
            self.rows.add_permits(rows);
        }
        if bytes > 0 {
            self.bytes.add_permits(bytes);
        }
    }

    /// Refuses every later acquire, and wakes the waiting ones with an error.
    pub(crate) fn close(&self) {
        self.rows.close();
        self.bytes.close();
    }

    /// Row permits free now (for tests).
    #[cfg(test)]
    pub(crate) fn free_rows(&self) -> usize {
        self.rows.available_permits()
    }

    /// Byte permits free now (for tests).
    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> usize {
        self.bytes.available_permits()
    }

    fn permits(&self, bytes: usize) -> u32 {
        // `cap` is at most u32::MAX, so this never truncates.
        u32::try_from(bytes.min(self.cap)).unwrap_or(u32::MAX)
    }
}

impl Slot {
    /// Rows this slot holds.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> usize {
        self.rows.num_permits()
    }

    /// Bytes this slot holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.num_permits()
    }

    /// Takes `other`'s slots into this one (both from the same [`Slots`]).
    pub(crate) fn merge(&mut self, other: Slot) {
        self.rows.merge(other.rows);
        self.bytes.merge(other.bytes);
    }

    /// Splits off `rows` rows and `bytes` bytes (at most what this slot holds).
    pub(crate) fn split(&mut self, rows: usize, bytes: usize) -> Option<Slot> {
        let rows_held = self.rows.num_permits();
        let bytes_held = self.bytes.num_permits();
        let rows = self.rows.split(rows.min(rows_held))?;
        let bytes = self.bytes.split(bytes.min(bytes_held))?;
        Some(Slot { rows, bytes })
    }

    /// Keeps the slots taken: the writer gives them back as it settles the rows.
    pub(crate) fn forget(self) {
        self.rows.forget();
        self.bytes.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_row_heavier_than_the_budget_is_charged_the_whole_budget_and_still_fits() {
        let slots = Slots::new(10, 1000);
        assert_eq!(slots.charge_of(5000), 1000);
        let slot = slots.acquire(slots.charge_of(5000)).await.expect("fits");
        assert_eq!((slot.rows(), slot.bytes()), (1, 1000));
        assert!(matches!(
            slots.try_acquire(1),
            Err(TryAcquireError::NoPermits)
        ));
        drop(slot);
        assert_eq!(slots.free_bytes(), 1000);
    }

    #[tokio::test]
    async fn merged_slots_split_and_forgotten_ones_come_back_through_release() {
        let slots = Slots::new(10, 1000);
        let mut a = slots.try_acquire(100).expect("room");
        a.merge(slots.try_acquire(300).expect("room"));
        assert_eq!((a.rows(), a.bytes()), (2, 400));
        let b = a.split(1, 300).expect("held");
        assert_eq!((b.rows(), b.bytes()), (1, 300));
        drop(b);
        assert_eq!(slots.free_bytes(), 900);
        a.forget();
        assert_eq!(slots.free_bytes(), 900);
        slots.release(1, 100);
        assert_eq!(slots.free_bytes(), 1000);
    }

    #[test]
    fn slots_taken_beyond_what_is_free_are_paid_back_before_anything_is_freed() {
        let slots = Slots::new(10, 1000);
        let held = slots.try_acquire(800).expect("room");
        slots.take(2, 500);
        assert_eq!(slots.free(), (7, 0), "200 bytes were free, 300 are owed");
        slots.release(1, 250);
        assert_eq!(slots.free(), (8, 0), "the debt took the bytes");
        slots.release(1, 250);
        assert_eq!(slots.free(), (9, 200));
        held.forget();
        slots.release(1, 800);
        assert_eq!(slots.free(), (10, 1000));
    }

    #[tokio::test]
    async fn closing_refuses_waiting_and_later_senders() {
        let slots = Arc::new(Slots::new(1, 100));
        let held = slots.try_acquire(100).expect("room");
        let waiter = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move { slots.acquire(10).await.is_err() })
        };
        slots.close();
        assert!(
            waiter.await.expect("joins"),
            "the waiting sender is refused"
        );
        assert!(matches!(slots.try_acquire(1), Err(TryAcquireError::Closed)));
        drop(held);
    }
}
