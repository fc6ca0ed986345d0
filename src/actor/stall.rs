//! Stalls: what a worker is doing ([`TurnMark`], written by the worker at the start and end
//! of every turn, read by the watchdog's thread) and what the watchdog reports ([`Stall`]).

use super::ActorId;
use super::metrics::TurnCounters;
use crate::sync::Ordering;
use crate::sync::unmodelled::AtomicU64;
use std::fmt;
use std::time::Duration;

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

/// What a worker is doing, for the watchdog: an odd `seq` means inside a turn of `actor`;
/// and the worker's counters for the metrics, in an allocation of their own (aligned to
/// their own cache lines: only the worker writes them, and the mark itself stays as small
/// as it was; aligning the mark slowed a ping-pong of two actors by a quarter).
pub(crate) struct TurnMark {
    seq: AtomicU64,
    actor: AtomicU64,
    pub(crate) counters: Box<TurnCounters>,
}

impl TurnMark {
    pub(crate) fn new() -> TurnMark {
        TurnMark {
            seq: AtomicU64::new(0),
            actor: AtomicU64::new(0),
            counters: Box::new(TurnCounters::new()),
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

    pub(crate) fn read(&self) -> (u64, ActorId) {
        let seq = self.seq.load(Ordering::Acquire);
        (seq, ActorId(self.actor.load(Ordering::Relaxed)))
    }
}
