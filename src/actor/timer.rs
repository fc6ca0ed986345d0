//! Actor timers: one-shot messages and fixed-rate intervals that a [`TimerHandle`] cancels.
//!
//! An actor's pending timers live in its cell, behind a small lock that messages never take:
//! what each one delivers (the message, or the interval's message maker) sits in a slot of
//! the actor's own table (a one-shot slot is 12 bytes plus the message), and the worker's
//! actor wheel holds only a weak reference to the cell with the slot's number (a 40-byte
//! node). The slot remembers the key of its wheel entry, which names the timer. When the
//! wheel fires, the timers of one actor that fall due together are appended to its table's
//! fired list in one batch, and one notice goes to its system lane (no allocation); its
//! next turn takes each message out of its slot, if it is still there, just before handling
//! it. So:
//!
//! - **A cancel that returns `true` means the message is never delivered**, from whatever
//!   thread it is made: cancelling and taking the message out both happen under the cell's
//!   timer lock, and whichever comes first wins. A cancel made by the actor itself in a
//!   handler always wins against a fire that has not been handled yet, even if the wheel has
//!   already fired. `false` means the timer was delivered already (or is being handled right
//!   now), was cancelled before, or its actor has stopped.
//! - **A stopped actor's timers are dropped** with it (their messages too), and the wheel's
//!   entries are taken out; a wheel entry never keeps the actor's state alive.
//! - Cancelling also takes the entry out of the wheel: at once on the worker that holds it,
//!   else at that worker's next loop.

use super::scheduler::{ActorTimerRef, WheelRef};
use super::timers::TimerKey;
use crate::sync::Weak;
use slab::Slab;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// Slots of intervals have this bit set; one-shot timers' slots do not.
const INTERVAL_BIT: u32 = 1 << 31;
/// The `worker` of an id that names a closure timer set outside the pool (its generation is
/// the actor table's own).
const OUTSIDE: u32 = u32::MAX - 1;
/// The `worker` of an interval's handle id (its generation is the table's own).
const INTERVAL_ID: u32 = u32::MAX - 2;
/// No wheel entry (yet).
const NO_WHEEL: WheelRef = WheelRef {
    worker: u32::MAX - 3,
    key: TimerKey {
        slot: u32::MAX,
        generation: 0,
    },
};

/// Cancels one timer of an actor, from any thread (see [`TimerHandle::cancel`]).
///
/// Returned by [`Addr::send_after`](super::Addr::send_after),
/// [`Context::send_self_after`](super::Context::send_self_after) and
/// [`Context::run_interval`](super::Context::run_interval). Dropping it does not cancel the
/// timer. It holds only a weak reference: it does not keep the actor alive.
#[derive(Clone)]
pub struct TimerHandle {
    target: Option<ActorTimerRef>,
    slot: u32,
    /// Which timer of that slot: a one-shot timer's wheel entry, an interval's generation.
    id: WheelRef,
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.slot & INTERVAL_BIT != 0 {
            "interval"
        } else {
            "once"
        };
        write!(
            f,
            "TimerHandle({kind} {}#{})",
            self.slot & !INTERVAL_BIT,
            self.id.key.generation
        )
    }
}

impl TimerHandle {
    /// A handle of a timer that was never set (its actor had stopped).
    pub(crate) fn inert() -> TimerHandle {
        TimerHandle {
            target: None,
            slot: 0,
            id: NO_WHEEL,
        }
    }

    /// Cancels the timer. Returns `true` if it was pending: then its message is never
    /// delivered (for an interval: no further tick is). Returns `false` if it has been
    /// delivered already (or its message is being handled at this moment), was cancelled
    /// before, or its actor has stopped. Works from any thread; O(1).
    pub fn cancel(&self) -> bool {
        let Some(target) = self.target.as_ref().and_then(Weak::upgrade) else {
            return false;
        };
        target.cancel_timer(self.slot, self.id)
    }
}

/// A pending one-shot timer of an actor: 12 bytes plus the message. Its wheel entry names it
/// (a wheel reuses an entry's key only after 2^32 reuses of its node).
struct Once<M> {
    wheel: WheelRef,
    /// `None` for a free entry, whose `wheel.key.slot` then links the free list.
    msg: Option<M>,
}

/// A pending interval of an actor.
struct Interval<M> {
    generation: u32,
    wheel: WheelRef,
    /// Taken out while its message is being made (put back after, if still pending).
    make: Option<Box<dyn FnMut() -> M + Send>>,
    /// Scheduler time of tick 0.
    start: Duration,
    period: Duration,
    /// The tick now pending in the wheel.
    tick: u64,
}

/// A cancelled timer: its wheel entry, and what it would have delivered, for the caller to
/// drop once the table's lock is released (a message's destructor may set a timer).
pub(crate) struct Cancelled<M> {
    pub(crate) wheel: WheelRef,
    _msg: Option<M>,
    _make: Option<Box<dyn FnMut() -> M + Send>>,
}

/// What a fired timer hands the actor's turn.
pub(crate) enum Fired<M> {
    Msg(M),
    /// An interval's tick: its maker, to call and then give back ([`ActorTimers::give_back`]).
    Make(Box<dyn FnMut() -> M + Send>),
}

/// The pending timers of one actor.
pub(crate) struct ActorTimers<M> {
    once: Vec<Once<M>>,
    free: u32,
    every: Slab<Interval<M>>,
    generations: u32,
    /// Timers the wheels fired that the actor has not looked at yet (slot, wheel entry).
    /// A `TimersFired` notice is queued whenever this turns non-empty.
    fired: VecDeque<(u32, WheelRef)>,
}

impl<M> Default for ActorTimers<M> {
    fn default() -> ActorTimers<M> {
        ActorTimers {
            once: Vec::new(),
            free: u32::MAX,
            every: Slab::new(),
            generations: 0,
            fired: VecDeque::new(),
        }
    }
}

impl<M> ActorTimers<M> {
    /// Records timers the wheel fired; returns whether the list was empty before (then the
    /// actor must be told).
    pub(crate) fn push_fired(&mut self, due: &mut dyn Iterator<Item = (u32, WheelRef)>) -> bool {
        let was_empty = self.fired.is_empty();
        self.fired.extend(due);
        was_empty && !self.fired.is_empty()
    }

    /// The next fired timer to look at.
    pub(crate) fn pop_fired(&mut self) -> Option<(u32, WheelRef)> {
        self.fired.pop_front()
    }

    fn next_generation(&mut self) -> u32 {
        self.generations = self.generations.wrapping_add(1);
        self.generations
    }

    /// Adds a one-shot timer; returns its slot. The caller sets its wheel entry (and records
    /// it with [`ActorTimers::set_wheel`]) before it lets go of the table.
    pub(crate) fn add_once(&mut self, msg: M) -> u32 {
        let entry = Once {
            wheel: NO_WHEEL,
            msg: Some(msg),
        };
        if self.free != u32::MAX {
            let slot = self.free;
            self.free = self.once[slot as usize].wheel.key.slot;
            self.once[slot as usize] = entry;
            slot
        } else {
            let slot = u32::try_from(self.once.len())
                .ok()
                .filter(|s| s & INTERVAL_BIT == 0)
                .expect("fewer than 2^31 timers per actor");
            self.once.push(entry);
            slot
        }
    }

    /// A fresh id for a closure timer set outside the pool, whose wheel entry has no name.
    pub(crate) fn outside_id(&mut self) -> WheelRef {
        WheelRef {
            worker: OUTSIDE,
            key: TimerKey {
                slot: 0,
                generation: self.next_generation(),
            },
        }
    }

    /// The handle id of timer `slot` (call after `set_wheel`).
    pub(crate) fn id(&self, slot: u32) -> WheelRef {
        if slot & INTERVAL_BIT != 0 {
            let generation = self.every[(slot & !INTERVAL_BIT) as usize].generation;
            WheelRef {
                worker: INTERVAL_ID,
                key: TimerKey {
                    slot: 0,
                    generation,
                },
            }
        } else {
            self.once[slot as usize].wheel
        }
    }

    /// Adds an interval whose tick 0 is at `start`; returns its slot.
    pub(crate) fn add_interval(
        &mut self,
        make: Box<dyn FnMut() -> M + Send>,
        start: Duration,
        period: Duration,
    ) -> u32 {
        let generation = self.next_generation();
        let slot = self.every.insert(Interval {
            generation,
            wheel: NO_WHEEL,
            make: Some(make),
            start,
            period,
            tick: 1,
        }) as u32;
        assert!(
            slot & INTERVAL_BIT == 0,
            "fewer than 2^31 intervals per actor"
        );
        slot | INTERVAL_BIT
    }

    /// Records where the wheel keeps timer `slot`.
    pub(crate) fn set_wheel(&mut self, slot: u32, wheel: WheelRef) {
        if slot & INTERVAL_BIT != 0 {
            if let Some(i) = self.every.get_mut((slot & !INTERVAL_BIT) as usize) {
                i.wheel = wheel;
            }
        } else if let Some(o) = self.once.get_mut(slot as usize) {
            o.wheel = wheel;
        }
    }

    /// The deadline of interval `slot`'s pending tick.
    pub(crate) fn interval_due(&self, slot: u32) -> Option<Duration> {
        let i = self.every.get((slot & !INTERVAL_BIT) as usize)?;
        Some(tick_time(i.start, i.period, i.tick))
    }

    /// Removes timer `slot` if it is the one of handle id `id`; returns its wheel entry.
    pub(crate) fn cancel(&mut self, slot: u32, id: WheelRef) -> Option<Cancelled<M>> {
        if slot & INTERVAL_BIT != 0 {
            let idx = (slot & !INTERVAL_BIT) as usize;
            if id.worker != INTERVAL_ID || self.every.get(idx)?.generation != id.key.generation {
                return None;
            }
            let i = self.every.remove(idx);
            return Some(Cancelled {
                wheel: i.wheel,
                _msg: None,
                _make: i.make,
            });
        }
        let o = self.once.get_mut(slot as usize)?;
        if o.wheel != id || o.msg.is_none() {
            return None;
        }
        let wheel = o.wheel;
        let msg = o.msg.take();
        o.wheel.key.slot = self.free;
        self.free = slot;
        Some(Cancelled {
            wheel,
            _msg: msg,
            _make: None,
        })
    }

    /// The wheel entry `wheel` of timer `slot` fired (`now` reads the scheduler's clock, for
    /// an interval): its message (a
    /// one-shot timer is then gone), or its interval's maker (the interval's next tick is
    /// chosen; the caller arms it with `interval_due` and `set_wheel`). `None` if the timer
    /// was cancelled (the slot is free or holds another timer).
    pub(crate) fn fire(
        &mut self,
        slot: u32,
        wheel: WheelRef,
        now: impl FnOnce() -> Duration,
    ) -> Option<Fired<M>> {
        if slot & INTERVAL_BIT != 0 {
            let i = self.every.get_mut((slot & !INTERVAL_BIT) as usize)?;
            if i.wheel != wheel {
                return None;
            }
            i.tick = next_tick(i.start, i.period, i.tick, now());
            i.wheel = NO_WHEEL;
            return i.make.take().map(Fired::Make);
        }
        let o = self.once.get_mut(slot as usize)?;
        if o.wheel != wheel {
            return None;
        }
        let msg = o.msg.take()?;
        o.wheel.key.slot = self.free;
        self.free = slot;
        Some(Fired::Msg(msg))
    }

    /// Puts back the maker of interval `slot` (of handle id `id`) after a tick, unless it
    /// was cancelled meanwhile (then the maker is handed back, to be dropped outside the
    /// lock).
    pub(crate) fn give_back(
        &mut self,
        slot: u32,
        id: WheelRef,
        make: Box<dyn FnMut() -> M + Send>,
    ) -> Option<Box<dyn FnMut() -> M + Send>> {
        match self.every.get_mut((slot & !INTERVAL_BIT) as usize) {
            Some(i) if i.generation == id.key.generation => {
                i.make = Some(make);
                None
            }
            _ => Some(make),
        }
    }

    /// One-shot timers that came due (the wheel fired them) and whose message the actor has
    /// not handled yet: what is lost if the table is dropped now. Timers not yet due are
    /// cancelled by a stop, not lost.
    pub(crate) fn due_unhandled(&self) -> usize {
        self.fired
            .iter()
            .filter(|(slot, wheel)| {
                self.once
                    .get(*slot as usize)
                    .is_some_and(|o| o.msg.is_some() && o.wheel == *wheel)
            })
            .count()
    }

    /// Every wheel entry still pending (when the actor stops, to take them out; ids of timers
    /// without a nameable entry are ignored by `Scheduler::cancel_wheel`).
    pub(crate) fn wheel_entries(&self) -> impl Iterator<Item = WheelRef> + '_ {
        self.once
            .iter()
            .filter(|o| o.msg.is_some())
            .map(|o| o.wheel)
            .chain(self.every.iter().map(|(_, i)| i.wheel))
            .filter(|w| *w != NO_WHEEL && w.worker != OUTSIDE)
    }
}

/// Scheduler time of tick `k` of an interval.
pub(crate) fn tick_time(start: Duration, period: Duration, k: u64) -> Duration {
    let nanos = period.as_nanos().saturating_mul(u128::from(k));
    start.saturating_add(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

/// The tick to arm after tick `k` was delivered at `now`: `k + 1`, or, if the actor is so late
/// that later ticks are already due, the first tick after `now` (missed ticks are skipped, the
/// phase is kept, and at most one late tick is delivered).
pub(crate) fn next_tick(start: Duration, period: Duration, k: u64, now: Duration) -> u64 {
    let elapsed = now.saturating_sub(start).as_nanos();
    let per = period.as_nanos().max(1);
    let first_after_now = u64::try_from(elapsed / per + 1).unwrap_or(u64::MAX);
    (k + 1).max(first_after_now)
}

/// A handle onto timer `slot` (of handle id `id`) of `target`.
pub(crate) fn handle(target: ActorTimerRef, slot: u32, id: WheelRef) -> TimerHandle {
    TimerHandle {
        target: Some(target),
        slot,
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_on_time_interval_moves_one_tick() {
        assert_eq!(next_tick(ms(0), ms(100), 1, ms(100)), 2);
        assert_eq!(next_tick(ms(5), ms(100), 7, ms(705)), 8);
    }

    #[test]
    fn a_late_interval_skips_missed_ticks_and_keeps_its_phase() {
        // Tick 1 (due 100) handled at 350: ticks 2 and 3 (200, 300) are skipped; 4 is at 400.
        assert_eq!(next_tick(ms(0), ms(100), 1, ms(350)), 4);
        assert_eq!(tick_time(ms(0), ms(100), 4), ms(400));
        // Exactly on a later tick's instant: that one counts as missed too.
        assert_eq!(next_tick(ms(0), ms(100), 1, ms(300)), 4);
    }

    fn wheel(slot: u32, generation: u32) -> WheelRef {
        WheelRef {
            worker: 0,
            key: TimerKey { slot, generation },
        }
    }

    #[test]
    fn one_shot_slots_are_reused_and_named_by_their_wheel_entry() {
        let mut t = ActorTimers::<u32>::default();
        let s1 = t.add_once(1);
        t.set_wheel(s1, wheel(5, 1));
        let id1 = t.id(s1);
        assert!(t.cancel(s1, id1).is_some());
        assert!(t.cancel(s1, id1).is_none());
        let s2 = t.add_once(2);
        t.set_wheel(s2, wheel(5, 2));
        assert_eq!(s1, s2);
        assert!(
            t.fire(s1, id1, || ms(0)).is_none(),
            "a stale fire finds nothing"
        );
        assert!(t.cancel(s1, id1).is_none(), "a stale cancel finds nothing");
        assert!(matches!(
            t.fire(s2, wheel(5, 2), || ms(0)),
            Some(Fired::Msg(2))
        ));
        assert!(t.fire(s2, wheel(5, 2), || ms(0)).is_none());
    }
}
