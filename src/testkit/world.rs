//! What every part of a simulation shares: its seed, its manual clock, its step counter and
//! its trace.

use crate::sync::{Arc, AtomicU64, Mutex, Ordering, thread_local};
use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

pub(crate) struct World {
    pub(crate) seed: u64,
    /// Virtual time since the simulation began, in nanoseconds.
    now: AtomicU64,
    /// Steps run so far.
    step: AtomicU64,
    lines: Mutex<Vec<String>>,
}

impl World {
    pub(crate) fn new(seed: u64) -> World {
        World {
            seed,
            now: AtomicU64::new(0),
            step: AtomicU64::new(0),
            lines: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        Duration::from_nanos(self.now.load(Ordering::Relaxed))
    }

    pub(crate) fn set_now(&self, now: Duration) {
        let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.now.store(nanos, Ordering::Relaxed);
    }

    pub(crate) fn step(&self) -> u64 {
        self.step.load(Ordering::Relaxed)
    }

    pub(crate) fn next_step(&self) -> u64 {
        self.step.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends a line to the trace, stamped with the clock and the step.
    pub(crate) fn record(&self, what: fmt::Arguments<'_>) {
        let line = format!(
            "{:>11.6}s #{:<6} {what}",
            self.now().as_secs_f64(),
            self.step()
        );
        self.lines.lock().unwrap().push(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The last `n` lines, joined.
    pub(crate) fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        let from = lines.len().saturating_sub(n);
        lines[from..].join("\n")
    }

    /// Makes this world the one [`note`](super::note) writes to on this thread until the
    /// guard drops.
    pub(crate) fn enter(self: &Arc<World>) -> Entered {
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        Entered { prev }
    }
}

thread_local! {
    /// The world whose steps run on this thread now.
    static CURRENT: RefCell<Option<Arc<World>>> = const { RefCell::new(None) };
}

/// Restores the previous current world.
pub(crate) struct Entered {
    prev: Option<Arc<World>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

/// Records `what` in the trace of the simulation running on this thread, if any.
pub(crate) fn note_current(what: fmt::Arguments<'_>) {
    let world = CURRENT.with(|c| c.borrow().clone());
    if let Some(world) = world {
        world.record(format_args!("note: {what}"));
    }
}
