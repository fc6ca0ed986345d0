//! A worker's actor timers: what fires when, in deadline order.
//!
//! Only the worker's own thread touches its queue; timers set from other threads reach it
//! through the scheduler (see `Scheduler::run_after`). The queue is generic over its clock:
//! workers keep `Instant`s, the test kit's manual clock `Duration`s since its start.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What an actor timer runs when it fires (it queues a message; it never runs a handler).
pub(crate) type TimerFn = Box<dyn FnOnce() + Send>;

/// A timer that is due or pending.
pub(crate) struct Timer<T> {
    pub(crate) at: T,
    /// Insertion order (from 1), so that timers due at the same instant fire in the order
    /// set.
    pub(crate) seq: u64,
    pub(crate) run: TimerFn,
}

impl<T: Ord> PartialEq for Timer<T> {
    fn eq(&self, other: &Timer<T>) -> bool {
        (&self.at, self.seq) == (&other.at, other.seq)
    }
}

impl<T: Ord> Eq for Timer<T> {}

impl<T: Ord> PartialOrd for Timer<T> {
    fn partial_cmp(&self, other: &Timer<T>) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Timer<T> {
    /// Reversed: the earliest deadline is the greatest, for the max-heap.
    fn cmp(&self, other: &Timer<T>) -> CmpOrdering {
        (&other.at, other.seq).cmp(&(&self.at, self.seq))
    }
}

/// Pending timers on a clock whose instants are `T`.
pub(crate) struct TimerQueue<T = Instant> {
    heap: BinaryHeap<Timer<T>>,
    seq: u64,
    /// Reused between passes.
    due: Vec<Timer<T>>,
}

impl<T: Ord + Copy> TimerQueue<T> {
    pub(crate) fn new() -> TimerQueue<T> {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            due: Vec::new(),
        }
    }

    /// Adds a timer; returns its sequence number.
    pub(crate) fn insert(&mut self, at: T, run: TimerFn) -> u64 {
        self.seq += 1;
        self.heap.push(Timer {
            at,
            seq: self.seq,
            run,
        });
        self.seq
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<T> {
        self.heap.peek().map(|p| p.at)
    }

    /// Takes every timer due at `now`, in deadline order; the caller runs them once the
    /// queue is no longer borrowed (a timer may set another).
    pub(crate) fn take_due(&mut self, now: T) -> Vec<Timer<T>> {
        let mut due = std::mem::take(&mut self.due);
        while self.heap.peek().is_some_and(|p| p.at <= now) {
            due.push(self.heap.pop().expect("peeked"));
        }
        due
    }

    /// Hands back the emptied vector of [`TimerQueue::take_due`] for reuse.
    pub(crate) fn recycle(&mut self, mut due: Vec<Timer<T>>) {
        due.clear();
        if self.due.capacity() < due.capacity() {
            self.due = due;
        }
    }

    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let mut q = TimerQueue::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        for (name, ms) in [("c", 30), ("a", 10), ("b", 10), ("d", 50)] {
            let log = log.clone();
            q.insert(
                t0 + Duration::from_millis(ms),
                Box::new(move || log.lock().unwrap().push(name)),
            );
        }
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let due = q.take_due(t0 + Duration::from_millis(30));
        assert_eq!(due.len(), 3);
        for t in due {
            (t.run)();
        }
        assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(q.len(), 1);
        assert!(q.take_due(t0 + Duration::from_millis(49)).is_empty());
    }
}
