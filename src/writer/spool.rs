//! The writer's bookkeeping of the disk buffer: which records are where, and when the log may
//! forget them. Pure state; the writer sends what it decides to the buffer thread.
//!
//! Every delivery the writer takes becomes one record with the next sequence number. A
//! record is either kept in memory (appended, then its rows go into the lanes' pending
//! writes) or part of the *backlog* (appended, dropped from memory, read back later). Once one
//! record is in the backlog, every later one is too until the backlog is read back to its end:
//! the lanes then hold a prefix of the log and the disk the rest, so rows reach the database
//! in the order they were accepted.
//!
//! The log forgets records once they are durable in the database: a *checkpoint* notes, when
//! every record up to some number is in the lanes, the seal each lane's rows will be written
//! under; once every lane has settled its chunks up to that seal, those records are durable.

use std::collections::{BTreeMap, VecDeque};

use crate::inbox::Delivery;
use crate::model::ExecutionId;

/// A delivery's weight for the senders' budget: task rows, their byte charge, and rows of both
/// kinds (what a record holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) tasks: usize,
    pub(crate) bytes: usize,
    pub(crate) rows: usize,
}

impl std::ops::AddAssign for Charge {
    fn add_assign(&mut self, other: Charge) {
        self.tasks += other.tasks;
        self.bytes += other.bytes;
        self.rows += other.rows;
    }
}

/// Where every record of this process is.
#[derive(Debug)]
pub(crate) struct Spool {
    /// The number the next record gets.
    next_seq: u64,
    /// Every record up to this one is in the lanes (or was durable before this process).
    pub(crate) in_lanes: u64,
    /// Records are on disk that memory does not hold; new records go behind them.
    pub(crate) backlog: bool,
    /// The last record assigned to the backlog.
    backlog_last: u64,
    /// Rows of the backlog on disk (appended, not read back).
    pub(crate) backlog_rows: u64,
    /// A read-back is in flight.
    pub(crate) loading: bool,
    /// Appends of kept records in flight, and their charge.
    pub(crate) kept_in_flight: usize,
    pub(crate) kept_bytes: usize,
    pub(crate) kept_rows: usize,
    /// Backlog appends sent and not yet answered: at most one, so that the backlog reaches the
    /// disk in record order even when an append fails.
    backlog_requests: usize,
    /// Backlog records not yet known on disk (sent, or waiting to be resent): (last record,
    /// charge, runs they finish), in order. Their slots are freed once they are on disk, and
    /// the runs they finish may leave the registry then.
    backlog_in_flight: VecDeque<(u64, Charge, Vec<ExecutionId>)>,
    /// Backlog deliveries not yet sent (behind the append in flight, or behind one that
    /// failed), in record order: (first record, its deliveries, their rows).
    retry: VecDeque<(u64, Vec<Delivery>, u64)>,
    /// The last backlog append failed (a full disk): `retry` waits for a resend.
    pub(crate) failed: bool,
    /// Checkpoints in record order.
    checkpoints: VecDeque<Checkpoint>,
    /// The last record a checkpoint covers.
    checkpointed: u64,
    /// Records kept in memory whose append failed, with their rows: a crash would lose them
    /// until they are durable in the database.
    unlogged: BTreeMap<u64, u64>,
    /// The last record of the last append answered (appended or failed): replies come in
    /// order, so every record up to it has been tried.
    pub(crate) answered: u64,
}

/// Records up to `seq` are durable once each lane has settled its chunks up to `seals[lane]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    pub(crate) seals: Vec<u64>,
}

impl Checkpoint {
    /// Whether every lane has settled up to its seal: `last_seal` is each lane's highest seal
    /// handed out, `oldest` its oldest seal not settled (`None`: nothing outstanding).
    pub(crate) fn done(&self, last_seal: &[u64], oldest: &[Option<u64>]) -> bool {
        self.seals
            .iter()
            .zip(last_seal.iter().zip(oldest))
            .all(|(want, (last, oldest))| {
                *last >= *want && oldest.is_none_or(|oldest| oldest > *want)
            })
    }
}

impl Spool {
    /// The bookkeeping of a log whose next record is `next_seq`, durable up to `settled`;
    /// `backlog`: a previous process left records to read back (`backlog_rows` rows).
    pub(crate) fn new(next_seq: u64, settled: u64, backlog: bool, backlog_rows: u64) -> Self {
        Self {
            next_seq,
            in_lanes: settled,
            backlog,
            backlog_last: next_seq - 1,
            backlog_rows,
            loading: false,
            kept_in_flight: 0,
            kept_bytes: 0,
            kept_rows: 0,
            backlog_requests: 0,
            backlog_in_flight: VecDeque::new(),
            retry: VecDeque::new(),
            failed: false,
            checkpoints: VecDeque::new(),
            checkpointed: settled,
            unlogged: BTreeMap::new(),
            answered: next_seq - 1,
        }
    }

    /// The last record assigned (0: none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Numbers the next record.
    pub(crate) fn assign(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Puts record `seq` in the backlog. Returns true if this starts one (an overflow).
    pub(crate) fn backlog_record(
        &mut self,
        seq: u64,
        charge: Charge,
        finishes: Vec<ExecutionId>,
    ) -> bool {
        let started = !self.backlog;
        self.backlog = true;
        self.backlog_last = seq;
        self.backlog_in_flight.push_back((seq, charge, finishes));
        started
    }

    /// A backlog append (or a resend) was sent.
    pub(crate) fn backlog_sent(&mut self) {
        self.backlog_requests += 1;
    }

    /// A backlog append was answered.
    pub(crate) fn backlog_answered(&mut self) {
        self.backlog_requests = self.backlog_requests.saturating_sub(1);
    }

    /// Whether the queued backlog may be sent now: nothing in flight, and something queued.
    pub(crate) fn may_send_queue(&self) -> bool {
        self.backlog_requests == 0 && !self.retry.is_empty()
    }

    /// Keeps backlog deliveries whose append failed (or that queue behind such), in order.
    pub(crate) fn keep_for_retry(&mut self, first: u64, deliveries: Vec<Delivery>, rows: u64) {
        let at = self.retry.partition_point(|(f, _, _)| *f < first);
        self.retry.insert(at, (first, deliveries, rows));
    }

    /// Everything waiting to be resent, as one append (its first record and deliveries).
    pub(crate) fn take_retry(&mut self) -> Option<(u64, Vec<Delivery>)> {
        let (first, mut all, _) = self.retry.pop_front()?;
        for (_, more, _) in self.retry.drain(..) {
            all.extend(more);
        }
        Some((first, all))
    }

    /// A backlog append failed: its deliveries wait, first in the queue, for a resend.
    pub(crate) fn append_failed(&mut self, first: u64, deliveries: Vec<Delivery>, rows: u64) {
        self.failed = true;
        self.keep_for_retry(first, deliveries, rows);
    }

    /// Backlog records up to `last` are on disk: the slots to free (the rows now held there
    /// are counted) and the runs whose final state is now on disk.
    pub(crate) fn backlog_on_disk(&mut self, last: u64) -> (Charge, Vec<ExecutionId>) {
        self.failed = false;
        let mut freed = Charge::default();
        let mut finished = Vec::new();
        while self
            .backlog_in_flight
            .front()
            .is_some_and(|(seq, ..)| *seq <= last)
        {
            if let Some((_, charge, finishes)) = self.backlog_in_flight.pop_front() {
                freed += charge;
                finished.extend(finishes);
            }
        }
        self.backlog_rows += freed.rows as u64;
        (freed, finished)
    }

    /// Backlog records read back up to `last`, holding `rows` rows, are in the lanes now.
    /// `caught_up`: the buffer has nothing more to read. Returns true if the backlog is over
    /// (new records are kept in memory again).
    pub(crate) fn loaded(&mut self, last: Option<u64>, rows: u64, caught_up: bool) -> bool {
        self.loading = false;
        self.backlog_rows = self.backlog_rows.saturating_sub(rows);
        if let Some(last) = last {
            self.in_lanes = self.in_lanes.max(last);
        }
        // Nothing more to read, and nothing on its way to the disk: every readable backlog
        // record is in the lanes (a record found corrupt was skipped and reported).
        if self.backlog
            && caught_up
            && self.backlog_requests == 0
            && self.retry.is_empty()
            && self.backlog_in_flight.is_empty()
        {
            self.end_backlog();
            return true;
        }
        false
    }

    fn end_backlog(&mut self) {
        self.backlog = false;
        self.backlog_rows = 0;
        self.in_lanes = self.in_lanes.max(self.backlog_last);
    }

    /// When the disk refuses the backlog (its appends keep failing) and everything on disk
    /// has been read back: the deliveries waiting to be resent, to go into the lanes as they
    /// are, in order, rather than wait for disk space (they are written from memory; their
    /// slots stay taken until they are). Ends the backlog.
    pub(crate) fn give_up_on_disk(&mut self, caught_up: bool) -> Option<(u64, Vec<Delivery>)> {
        if !self.backlog
            || !caught_up
            || !self.failed
            || self.backlog_requests > 0
            || self.retry.is_empty()
        {
            return None;
        }
        let mut deliveries = Vec::new();
        let mut last = 0;
        for (first, batch, rows) in self.retry.drain(..) {
            last = first + (batch.len() as u64).saturating_sub(1);
            self.unlogged.insert(last, rows);
            deliveries.extend(batch);
        }
        // Not on disk, and not freed: they hold their slots in the lanes now.
        self.backlog_in_flight.retain(|(seq, ..)| *seq > last);
        self.end_backlog();
        Some((last, deliveries))
    }

    /// Rows not on disk for a sync covering records up to `seq`: `None` while appends up to it
    /// are still in flight, else the rows in memory only (0: all on disk).
    pub(crate) fn synced_through(&self, seq: u64) -> Option<u64> {
        let unlogged: u64 = self.unlogged.range(..=seq).map(|(_, rows)| rows).sum();
        let waiting: u64 = self
            .retry
            .iter()
            .filter(|(first, _, _)| *first <= seq)
            .map(|(_, _, rows)| rows)
            .sum();
        if waiting > 0 {
            // Queued behind a failed append: not on disk; behind one in flight: not yet known.
            return self.failed.then_some(unlogged + waiting);
        }
        (self.answered >= seq).then_some(unlogged)
    }

    /// Kept records up to `last` are in the lanes; `unlogged_rows` of them are not on disk (their
    /// append failed).
    pub(crate) fn kept(&mut self, last: u64, unlogged_rows: u64) {
        self.in_lanes = self.in_lanes.max(last);
        if unlogged_rows > 0 {
            *self.unlogged.entry(last).or_insert(0) += unlogged_rows;
        }
    }

    /// Whether every row in memory is on disk too (no append of a record not yet durable
    /// failed).
    pub(crate) fn all_logged(&self) -> bool {
        self.unlogged.is_empty() && self.retry.is_empty()
    }

    /// Whether every record assigned so far is in the lanes.
    pub(crate) fn all_in_lanes(&self) -> bool {
        self.in_lanes >= self.last_seq()
    }

    /// Registers a checkpoint for the records now in the lanes, if any are new.
    pub(crate) fn checkpoint(&mut self, seals: impl FnOnce() -> Vec<u64>) {
        if self.in_lanes > self.checkpointed {
            self.checkpointed = self.in_lanes;
            self.checkpoints.push_back(Checkpoint {
                seq: self.in_lanes,
                seals: seals(),
            });
        }
    }

    /// The highest record now durable, if a checkpoint completed. Rows durable in the database
    /// no longer count as missing from the disk.
    pub(crate) fn durable(&mut self, last_seal: &[u64], oldest: &[Option<u64>]) -> Option<u64> {
        let mut through = None;
        while let Some(front) = self.checkpoints.front() {
            if !front.done(last_seal, oldest) {
                break;
            }
            through = Some(front.seq);
            self.checkpoints.pop_front();
        }
        if let Some(through) = through {
            self.unlogged.retain(|seq, _| *seq > through);
        }
        through
    }

    /// Whether nothing is in flight to or from the buffer thread.
    pub(crate) fn idle(&self) -> bool {
        self.kept_in_flight == 0 && !self.loading && self.backlog_requests == 0
    }

    /// The buffer thread is gone: nothing in flight will be answered.
    pub(crate) fn thread_gone(&mut self) {
        self.kept_in_flight = 0;
        self.kept_bytes = 0;
        self.kept_rows = 0;
        self.loading = false;
        self.backlog_requests = 0;
    }

    /// Backlog deliveries never appended (given up at shutdown): their rows are only here.
    pub(crate) fn drain_retry(&mut self) -> Vec<Delivery> {
        self.retry.drain(..).flat_map(|(_, d, _)| d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(tasks: usize) -> Charge {
        Charge {
            tasks,
            bytes: tasks * 100,
            rows: tasks + 1,
        }
    }

    #[test]
    fn a_checkpoint_is_done_once_every_lane_settled_up_to_its_seal() {
        let c = Checkpoint {
            seq: 9,
            seals: vec![3, 1],
        };
        // Lane 0 has not sealed its open rows yet.
        assert!(!c.done(&[2, 1], &[None, None]));
        // Lane 0 sealed them; its chunk 3 is still outstanding.
        assert!(!c.done(&[3, 1], &[Some(3), None]));
        // Settled up to 3; a later chunk (4) may be outstanding.
        assert!(c.done(&[4, 1], &[Some(4), None]));
    }

    #[test]
    fn a_backlog_ends_only_when_everything_assigned_to_it_is_read_back() {
        let mut spool = Spool::new(1, 0, false, 0);
        assert!(!spool.backlog);
        let kept = spool.assign();
        spool.kept(kept, 0);
        let a = spool.assign();
        assert!(
            spool.backlog_record(a, charge(2), Vec::new()),
            "the first backlog record starts an overflow"
        );
        let b = spool.assign();
        assert!(!spool.backlog_record(b, charge(3), Vec::new()));
        // Record a is on disk, b is not yet: reading a back does not end the backlog.
        assert_eq!(spool.backlog_on_disk(a).0, charge(2));
        spool.loading = true;
        assert!(!spool.loaded(Some(a), 3, true));
        assert!(spool.backlog);
        assert_eq!(spool.backlog_on_disk(b).0.tasks, 3);
        assert!(spool.loaded(Some(b), 4, true));
        assert!(!spool.backlog);
        assert!(spool.all_in_lanes());
    }

    #[test]
    fn failed_backlog_appends_are_resent_in_record_order() {
        let mut spool = Spool::new(1, 0, false, 0);
        spool.keep_for_retry(5, Vec::new(), 0);
        spool.keep_for_retry(2, Vec::new(), 0);
        spool.keep_for_retry(9, Vec::new(), 0);
        assert!(spool.may_send_queue());
        let (first, _) = spool.take_retry().expect("something to resend");
        assert_eq!(first, 2);
        assert!(spool.take_retry().is_none());
    }

    #[test]
    fn checkpoints_complete_in_order_and_report_the_highest_durable_record() {
        let mut spool = Spool::new(1, 0, false, 0);
        let s = spool.assign();
        spool.kept(s, 0);
        spool.checkpoint(|| vec![1]);
        spool.checkpoint(|| vec![99]);
        let s = spool.assign();
        spool.kept(s, 0);
        spool.checkpoint(|| vec![2]);
        assert_eq!(spool.durable(&[1], &[Some(1)]), None);
        assert_eq!(spool.durable(&[1], &[None]), Some(1));
        assert_eq!(spool.durable(&[2], &[Some(3)]), Some(2));
    }

    #[test]
    fn rows_the_disk_refused_go_to_the_lanes_after_everything_on_disk_is_read_back() {
        let mut spool = Spool::new(1, 0, false, 0);
        let a = spool.assign();
        spool.backlog_record(a, charge(2), Vec::new());
        spool.backlog_sent();
        let b = spool.assign();
        spool.backlog_record(b, charge(1), Vec::new());
        spool.backlog_sent();
        // a is on disk; b's append failed (a full disk) and waits for a resend.
        spool.backlog_answered();
        spool.backlog_on_disk(a);
        spool.backlog_answered();
        let delivery = Delivery::Restore(crate::rows::WriteBatch::default());
        spool.append_failed(b, vec![delivery], 2);
        spool.answered = b;
        assert_eq!(
            spool.synced_through(b),
            Some(2),
            "b's rows are in memory only"
        );
        // Not before the disk's backlog is read back.
        assert!(spool.give_up_on_disk(false).is_none());
        spool.loading = true;
        assert!(!spool.loaded(Some(a), 3, true), "b is not read back");
        let (last, _) = spool.give_up_on_disk(true).expect("b goes to the lanes");
        assert_eq!(last, b);
        assert!(!spool.backlog);
        assert!(spool.all_in_lanes());
        assert!(spool.idle());
        assert!(!spool.all_logged());
        // Once durable in the database, b no longer counts as missing from the disk.
        spool.checkpoint(|| vec![4]);
        assert_eq!(spool.durable(&[4], &[None]), Some(b));
        assert!(spool.all_logged());
        assert_eq!(spool.synced_through(b), Some(0));
    }
}
