//! What every part of a simulation shares: its seed, its manual clock, its step counter and
//! its trace.

use crate::sync::{Arc, AtomicU64, Mutex, Ordering, thread_local};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

pub(crate) struct World {
    pub(crate) seed: u64,
    /// Virtual time since the simulation began, in nanoseconds.
    now: AtomicU64,
    /// Steps run so far.
    step: AtomicU64,
    trace: Mutex<Trace>,
}

/// The most recent lines of the trace.
struct Trace {
    lines: VecDeque<String>,
    limit: usize,
    dropped: u64,
}

impl World {
    /// A world that keeps the last `limit` lines of its trace.
    pub(crate) fn new(seed: u64, limit: usize) -> World {
        World {
            seed,
            now: AtomicU64::new(0),
            step: AtomicU64::new(0),
            trace: Mutex::new(Trace {
                lines: VecDeque::new(),
                limit: limit.max(1),
                dropped: 0,
            }),
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
        let mut trace = self.trace.lock().unwrap();
        if trace.lines.len() == trace.limit {
            trace.lines.pop_front();
            trace.dropped += 1;
        }
        trace.lines.push_back(line);
    }

    /// The lines kept, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.trace.lock().unwrap().lines.iter().cloned().collect()
    }

    /// How many old lines were let go to stay within the limit.
    pub(crate) fn dropped_lines(&self) -> u64 {
        self.trace.lock().unwrap().dropped
    }

    /// The last `n` lines, joined.
    pub(crate) fn tail(&self, n: usize) -> String {
        let trace = self.trace.lock().unwrap();
        let from = trace.lines.len().saturating_sub(n);
        let tail: Vec<&str> = trace.lines.range(from..).map(String::as_str).collect();
        tail.join("\n")
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
