//! The sleeping flag of a thread that blocks in `epoll_wait`.

use super::{AtomicBool, Ordering, fence};

/// The sleeping flag of a thread that blocks in `epoll_wait` (a worker, or any engine), and
/// the protocol around it that makes wake-ups impossible to lose:
///
/// - the sleeper calls [`SleepFlag::announce`] (flag up, then a `SeqCst` fence), then looks
///   for work once more, and only blocks if it finds none;
/// - a producer makes its work visible, then calls [`SleepFlag::claim_wake`] (a `SeqCst` fence,
///   then clears the flag) and signals the sleeper only if the flag was up.
///
/// Either the sleeper's last look sees the work, or the producer sees the flag. The models in
/// `loom_tests/` check this with a stand-in for the eventfd.
pub struct SleepFlag {
    sleeping: AtomicBool,
}

impl SleepFlag {
    pub fn new() -> SleepFlag {
        SleepFlag {
            sleeping: AtomicBool::new(false),
        }
    }

    /// About to block: raise the flag; look for work after this returns.
    pub fn announce(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Not blocking after all, or woke up: lower the flag.
    pub fn retract(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// After making work visible: true if the sleeper must be signalled (the flag was up;
    /// exactly one producer gets true per announcement).
    pub fn claim_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleeping.swap(false, Ordering::SeqCst)
    }
}
