//! Locking that survives a panic elsewhere.
//!
//! Every mutex in runtally guards data that a panicking holder cannot leave half-changed (whole
//! values are swapped in and out, or a histogram records one value), so a poisoned lock is used
//! as it is rather than spreading the panic to the threads that write telemetry.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, ignoring poison (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
