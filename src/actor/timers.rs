//! A worker's actor timers: what fires when, in deadline order.
//!
//! Only the worker's own thread touches its queue; timers set from other threads reach it
//! through the scheduler (see `Scheduler::run_after`). The queue is generic over its clock:
//! workers keep `Instant`s, the test kit's manual clock `Duration`s since its start.

use slab::Slab;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What an actor timer runs when it fires (it queues a message; it never runs a handler).
pub(crate) type TimerFn = Box<dyn FnOnce() + Send>;

/// Names one pending timer of one queue: its slot and the sequence number it was set with
/// (a slot is reused; the sequence number never is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    pub(crate) slot: u32,
    pub(crate) seq: u64,
}

/// A timer that is due.
pub(crate) struct Timer<T> {
    pub(crate) at: T,
    /// Insertion order (from 1), so that timers due at the same instant fire in the order
    /// set.
    pub(crate) seq: u64,
    pub(crate) run: TimerFn,
}

/// A heap entry: when, in what order, and where the timer's closure waits.
struct Due<T> {
    at: T,
    seq: u64,
    slot: u32,
}

impl<T: Ord> PartialEq for Due<T> {
    fn eq(&self, other: &Due<T>) -> bool {
        (&self.at, self.seq) == (&other.at, other.seq)
    }
}

impl<T: Ord> Eq for Due<T> {}

impl<T: Ord> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Due<T>) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Due<T> {
    /// Reversed: the earliest deadline is the greatest, for the max-heap.
    fn cmp(&self, other: &Due<T>) -> CmpOrdering {
        (&other.at, other.seq).cmp(&(&self.at, self.seq))
    }
}

/// Pending timers on a clock whose instants are `T`.
pub(crate) struct TimerQueue<T = Instant> {
    heap: BinaryHeap<Due<T>>,
    /// The closures of pending timers, with the sequence number they were set with.
    slots: Slab<(u64, TimerFn)>,
    seq: u64,
    /// Reused between passes.
    due: Vec<Timer<T>>,
}

impl<T: Ord + Copy> TimerQueue<T> {
    pub(crate) fn new() -> TimerQueue<T> {
        TimerQueue {
            heap: BinaryHeap::new(),
            slots: Slab::new(),
            seq: 0,
            due: Vec::new(),
        }
    }

    /// Adds a timer; returns the key that cancels it.
    pub(crate) fn insert(&mut self, at: T, run: TimerFn) -> TimerKey {
        self.seq += 1;
        let slot = self.slots.insert((self.seq, run)) as u32;
        self.heap.push(Due {
            at,
            seq: self.seq,
            slot,
        });
        TimerKey {
            slot,
            seq: self.seq,
        }
    }

    /// Cancels a pending timer: its closure is dropped and never runs. Returns false if it
    /// has fired or was cancelled already.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> bool {
        self.cancel_take(key).is_some()
    }

    /// As [`TimerQueue::cancel`], handing back the closure for the caller to drop once the
    /// queue is no longer borrowed.
    pub(crate) fn cancel_take(&mut self, key: TimerKey) -> Option<TimerFn> {
        let slot = key.slot as usize;
        if self.slots.get(slot).is_some_and(|(seq, _)| *seq == key.seq) {
            Some(self.slots.remove(slot).1)
        } else {
            None
        }
    }

    /// The earliest deadline, if any timer is pending (a cancelled timer may still count
    /// until its deadline passes).
    pub(crate) fn next_deadline(&mut self) -> Option<T> {
        while let Some(top) = self.heap.peek() {
            if self.live(top) {
                return Some(top.at);
            }
            self.heap.pop();
        }
        None
    }

    fn live(&self, d: &Due<T>) -> bool {
        self.slots
            .get(d.slot as usize)
            .is_some_and(|(seq, _)| *seq == d.seq)
    }

    /// Takes every timer due at `now`, in deadline order; the caller runs them once the
    /// queue is no longer borrowed (a timer may set another).
    pub(crate) fn take_due(&mut self, now: T) -> Vec<Timer<T>> {
        let mut due = std::mem::take(&mut self.due);
        while self.heap.peek().is_some_and(|p| p.at <= now) {
            let d = self.heap.pop().expect("peeked");
            if self.live(&d) {
                let (seq, run) = self.slots.remove(d.slot as usize);
                due.push(Timer { at: d.at, seq, run });
            }
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

    /// Timers pending.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
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

    #[test]
    fn a_cancelled_timer_never_runs() {
        let mut q = TimerQueue::new();
        let t0 = Instant::now();
        let ran = Arc::new(Mutex::new(0));
        let keys: Vec<TimerKey> = (0..3)
            .map(|i| {
                let ran = ran.clone();
                q.insert(
                    t0 + Duration::from_millis(i),
                    Box::new(move || *ran.lock().unwrap() += 1),
                )
            })
            .collect();
        assert!(q.cancel(keys[0]));
        assert!(!q.cancel(keys[0]), "a second cancel finds nothing");
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(1)));
        for t in q.take_due(t0 + Duration::from_millis(5)) {
            (t.run)();
        }
        assert_eq!(*ran.lock().unwrap(), 2);
        assert!(!q.cancel(keys[1]), "a fired timer cannot be cancelled");
    }
}
