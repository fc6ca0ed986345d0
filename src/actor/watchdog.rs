//! The watchdog: reports a handler that runs longer than a threshold.
//!
//! Each worker marks the start and end of every turn in a [`TurnMark`] (two plain stores and
//! the actor's id; no clock is read on the hot path). A watchdog thread looks at the marks a
//! few times per threshold: a worker whose mark has not moved since a look at least one
//! threshold ago is stuck in one handler, and that stall is reported once, with the actor's
//! id, type, registered name (if any), its worker, and how long it has run so far. The other
//! workers keep running the other actors meanwhile (a stalled worker's queued tasks are
//! stolen by the others).
//!
//! The marks are observability, not synchronisation: they are not part of any loom model, and
//! under loom no watchdog runs.

#![cfg_attr(loom, allow(dead_code, reason = "no watchdog runs under loom"))]

use super::stall::{Stall, TurnMark};
use super::system::SystemInner;
use std::time::{Duration, Instant};

/// What the watchdog remembers of one worker between looks.
#[derive(Clone, Copy)]
struct Seen {
    seq: u64,
    since: Instant,
    reported: bool,
}

/// The watchdog's state: one look at the workers at a time.
pub(crate) struct Watchdog {
    threshold: Duration,
    seen: Vec<Option<Seen>>,
}

impl Watchdog {
    pub(crate) fn new(threshold: Duration, workers: usize) -> Watchdog {
        Watchdog {
            threshold,
            seen: vec![None; workers],
        }
    }

    /// How long to wait between looks.
    pub(crate) fn period(&self) -> Duration {
        (self.threshold / 4).max(Duration::from_millis(1))
    }

    /// Looks at every worker once; reports each stall seen for the first time.
    pub(crate) fn look(&mut self, inner: &SystemInner, report: &mut dyn FnMut(Stall)) {
        let now = Instant::now();
        for (worker, seen) in self.seen.iter_mut().enumerate() {
            let Some(mark): Option<&TurnMark> = inner.sched.turn_mark(worker) else {
                continue;
            };
            let (seq, actor) = mark.read();
            if seq % 2 == 0 {
                *seen = None;
                continue;
            }
            match seen {
                Some(s) if s.seq == seq => {
                    let running_for = now.duration_since(s.since);
                    if !s.reported && running_for >= self.threshold {
                        s.reported = true;
                        let (type_name, name) = inner.describe(actor);
                        report(Stall {
                            actor,
                            type_name,
                            name,
                            worker,
                            running_for,
                        });
                    }
                }
                _ => {
                    *seen = Some(Seen {
                        seq,
                        since: now,
                        reported: false,
                    })
                }
            }
        }
    }
}
