//! The sleeping flag of a thread that blocks in `epoll_wait`.

use super::{AtomicU8, Ordering, fence};

/// The sleeper is (about to be) blocked.
const SLEEPING: u8 = 1;
/// A wake-up was asked for that the sleeper has not consumed yet.
const WOKEN: u8 = 2;

/// The sleeping state of a thread that blocks in `epoll_wait` (a worker, or any engine), and
/// the protocol around it that makes wake-ups impossible to lose:
///
/// - the sleeper calls [`SleepFlag::announce`], then looks for work once more, and only blocks
///   if `announce` allowed it and it finds none;
/// - a producer makes its work visible, then calls [`SleepFlag::claim_wake`] and signals the
///   sleeper only if that returns true; [`SleepFlag::wake`] also leaves a wake-up for the
///   sleeper's next `announce` if it is not asleep yet.
///
/// Both flags live in one atomic and every change is a read-modify-write, so the two sides
/// are ordered by that location alone: either the producer sees the sleeper up, or the
/// sleeper's next look sees the producer's work (published under a lock or before a `SeqCst`
/// fence) or its wake-up. (An earlier version kept the two flags in separate atomics and
/// relied on `SeqCst` fences to order them, which loom does not model; the models in
/// `loom_tests/` check this one.)
pub(crate) struct SleepFlag {
    state: AtomicU8,
}

impl SleepFlag {
    pub(crate) fn new() -> SleepFlag {
        SleepFlag {
            state: AtomicU8::new(0),
        }
    }

    /// About to block: raise the flag; look for work after this returns. Returns false (and
    /// consumes it) if a wake-up is pending: do not block then.
    pub(crate) fn announce(&self) -> bool {
        let mut cur = self.state.load(Ordering::SeqCst);
        loop {
            let (next, may_sleep) = if cur & WOKEN != 0 {
                (cur & !WOKEN & !SLEEPING, false)
            } else {
                (cur | SLEEPING, true)
            };
            match self
                .state
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    // Orders the flag before the sleeper's last look at lock-free queues.
                    fence(Ordering::SeqCst);
                    return may_sleep;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Not blocking after all, or woke up: lower the flag.
    pub(crate) fn retract(&self) {
        self.state.fetch_and(!SLEEPING, Ordering::SeqCst);
    }

    /// After making work visible: true if the sleeper must be signalled (the flag was up;
    /// exactly one producer gets true per announcement).
    pub(crate) fn claim_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.state.fetch_and(!SLEEPING, Ordering::SeqCst) & SLEEPING != 0
    }

    /// Asks for a wake-up whether or not the sleeper is asleep: if it is not, its next
    /// [`SleepFlag::announce`] returns false. Returns true if the sleeper must be signalled.
    pub(crate) fn wake(&self) -> bool {
        fence(Ordering::SeqCst);
        let mut cur = self.state.load(Ordering::SeqCst);
        loop {
            let next = (cur | WOKEN) & !SLEEPING;
            match self
                .state
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return cur & SLEEPING != 0,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SleepFlag;

    #[test]
    fn claims_only_an_announced_sleep_and_a_wake_survives_until_announce() {
        let f = SleepFlag::new();
        assert!(!f.claim_wake(), "nobody sleeps");
        assert!(f.announce());
        assert!(f.claim_wake());
        assert!(!f.claim_wake(), "exactly one claim per announcement");
        f.retract();
        assert!(!f.wake(), "not asleep: nothing to signal");
        assert!(!f.announce(), "the pending wake-up stops the next sleep");
        assert!(f.announce(), "and is consumed by it");
        assert!(f.wake(), "asleep: signal");
        assert!(!f.announce(), "the wake-up is pending");
    }
}
