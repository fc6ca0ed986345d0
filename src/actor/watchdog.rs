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

use super::ActorId;
use super::system::SystemInner;
use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

/// The default stall threshold ([`Builder::stall_threshold`](crate::Builder::stall_threshold)).
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_secs(1);
/// How many stall reports a system keeps for [`SystemHandle::recent_stalls`](super::SystemHandle::recent_stalls).
pub const STALL_REPORTS_KEPT: usize = 64;

/// A handler that ran longer than the stall threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The actor.
    pub actor: ActorId,
    /// Its type, as `std::any::type_name` spells it.
    pub type_name: &'static str,
    /// A name it is registered under, if any.
    pub name: Option<String>,
    /// The worker thread it holds.
    pub worker: usize,
    /// How long the turn had run when the stall was seen (at least the threshold).
    pub running_for: Duration,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.actor, self.type_name)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        write!(
            f,
            ") has run one turn on worker {} for {:?}",
            self.worker, self.running_for
        )
    }
}

/// What a worker is doing, for the watchdog: an odd `seq` means inside a turn of `actor`.
pub(crate) struct TurnMark {
    seq: AtomicU64,
    actor: AtomicU64,
}

impl TurnMark {
    pub(crate) fn new() -> TurnMark {
        TurnMark {
            seq: AtomicU64::new(0),
            actor: AtomicU64::new(0),
        }
    }

    /// A turn of `actor` starts (`seq` odd from here). Only the worker writes its mark, so
    /// a load and a store do (no read-modify-write).
    #[inline]
    pub(crate) fn begin(&self, actor: ActorId) {
        self.actor.store(actor.0, Ordering::Relaxed);
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Release);
    }

    /// The turn is over (`seq` even again).
    #[inline]
    pub(crate) fn end(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Release);
    }

    fn read(&self) -> (u64, ActorId) {
        let seq = self.seq.load(Ordering::Acquire);
        (seq, ActorId(self.actor.load(Ordering::Relaxed)))
    }
}

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
            let Some(mark) = inner.sched.turn_mark(worker) else {
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
