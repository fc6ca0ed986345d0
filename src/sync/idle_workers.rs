//! How many workers of a pool sleep.

use super::{AtomicUsize, Ordering, fence};

/// The pool-wide half of parking: how many workers sleep. A producer that made work visible
/// asks [`IdleWorkers::should_wake`] and, if so, wakes one sleeper by claiming its
/// [`SleepFlag`]; a woken worker that takes a task and sees more wakes the next one (see the
/// scheduler), so tasks left behind by a worker that then blocks in a handler are not
/// stranded. Checked in `loom_tests/`.
///
/// (Suppressing further wake-ups while a woken worker has not yet looked for work saves
/// wake-ups in bursts, but the loom model found it can strand a task while every other worker
/// sleeps; it is not done.)
pub struct IdleWorkers {
    sleepers: AtomicUsize,
}

impl IdleWorkers {
    pub fn new() -> IdleWorkers {
        IdleWorkers {
            sleepers: AtomicUsize::new(0),
        }
    }

    /// A worker is about to sleep (called before it raises its own [`SleepFlag`]).
    pub fn going_to_sleep(&self) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }

    /// A worker's wait has returned.
    pub fn woke_up(&self) {
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// After making work visible: true if some worker may be asleep, so the caller should
    /// wake one (by claiming its [`SleepFlag`]).
    pub fn should_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleepers.load(Ordering::SeqCst) != 0
    }
}
