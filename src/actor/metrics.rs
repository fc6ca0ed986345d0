//! Counters of the actor core, for [`SystemHandle::metrics`](super::SystemHandle::metrics).
//!
//! The hot counters (turns, messages, mailbox high-water, handler time) are kept per worker,
//! beside its [`TurnMark`](super::stall::TurnMark), and written only by that worker: a plain
//! load and store of a line no other thread writes, never a shared read-modify-write per
//! message. A snapshot sums the workers' counters with `Relaxed` loads, so it is cheap when
//! nobody reads it and only approximately simultaneous when someone does.
//!
//! Handler time is sampled: one turn in [`HANDLER_TIME_SAMPLE`] on each worker reads the
//! clock twice. Reading it on every turn would cost more than the turn of a small handler.

use crate::sync::Ordering;
use crate::sync::unmodelled::AtomicU64;
use std::time::{Duration, Instant};

/// Handler time is measured on one turn in this many on each worker (see
/// [`HandlerTime`]).
pub const HANDLER_TIME_SAMPLE: u64 = 64;

/// Buckets of the handler-time histogram: upper bounds 1 us, 2 us, 4 us, ... 2^20 us (about
/// one second), then everything above.
pub const HANDLER_TIME_BUCKETS: usize = 22;

/// A histogram of the time actor turns took, with log2 buckets in microseconds.
///
/// It is sampled: on each worker one turn in [`HANDLER_TIME_SAMPLE`] is timed (a turn is
/// one actor handling up to a batch of its messages), so `count` is the number of turns
/// timed, not of all turns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerTime {
    /// Turns timed in each bucket (not cumulative): bucket `i < 21` holds turns that took
    /// more than `2^(i-1)` us (more than 0 for `i == 0`) and at most `2^i` us; the last
    /// bucket holds the longer ones.
    pub buckets: [u64; HANDLER_TIME_BUCKETS],
    /// The sum of the turns timed.
    pub sum: Duration,
    /// How many turns were timed.
    pub count: u64,
}

impl HandlerTime {
    /// The upper bound of bucket `i` in microseconds; `None` for the last (unbounded) one.
    pub fn upper_bound_us(i: usize) -> Option<u64> {
        (i + 1 < HANDLER_TIME_BUCKETS).then(|| 1u64 << i)
    }

    /// The smallest bucket bound (in microseconds) at or below which at least `q` (0..=1) of
    /// the timed turns fall; `None` if none was timed or the quantile is in the last bucket.
    pub fn quantile_upper_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return HandlerTime::upper_bound_us(i);
            }
        }
        None
    }
}

/// The bucket of a turn that took `d`.
pub(crate) fn bucket_of(d: Duration) -> usize {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    if us <= 1 {
        // Within the first microsecond (rounded down): the first bucket.
        return 0;
    }
    let i = (64 - (us - 1).leading_zeros()) as usize;
    i.min(HANDLER_TIME_BUCKETS - 1)
}

/// One worker's counters. Written by that worker only (so a load and a store, no
/// read-modify-write), read by snapshots; [`TurnCounters::merge_into`] folds a thread's
/// counters into shared ones for threads without a slot of their own.
pub(crate) struct TurnCounters {
    turns: AtomicU64,
    messages: AtomicU64,
    depth_max: AtomicU64,
    time_sum_ns: AtomicU64,
    time_buckets: [AtomicU64; HANDLER_TIME_BUCKETS],
    /// Timers pending on this worker's wheels (as of its last loop).
    timers: AtomicU64,
}

/// A sum of counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct TurnTotals {
    pub(crate) messages: u64,
    pub(crate) depth_max: u64,
    pub(crate) timers: u64,
    pub(crate) handler_time: HandlerTime,
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl TurnCounters {
    pub(crate) fn new() -> TurnCounters {
        TurnCounters {
            turns: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            depth_max: AtomicU64::new(0),
            time_sum_ns: AtomicU64::new(0),
            time_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            timers: AtomicU64::new(0),
        }
    }

    /// A turn starts: the clock, if this turn is one of the timed ones.
    #[inline]
    pub(crate) fn turn_begins(&self) -> Option<Instant> {
        (self.turns.load(Ordering::Relaxed) % HANDLER_TIME_SAMPLE == 0).then(Instant::now)
    }

    /// A turn that handled `messages` ended; `clock`: from [`TurnCounters::turn_begins`].
    #[inline]
    pub(crate) fn turn_ends(&self, messages: u64, clock: Option<Instant>) {
        bump(&self.turns, 1);
        if messages != 0 {
            bump(&self.messages, messages);
        }
        if let Some(start) = clock {
            self.timed(start.elapsed());
        }
    }

    #[cold]
    fn timed(&self, d: Duration) {
        bump(
            &self.time_sum_ns,
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
        );
        bump(&self.time_buckets[bucket_of(d)], 1);
    }

    /// A mailbox held `depth` user messages when its actor took a batch.
    #[inline]
    pub(crate) fn saw_depth(&self, depth: usize) {
        let depth = depth as u64;
        if depth > self.depth_max.load(Ordering::Relaxed) {
            self.depth_max.store(depth, Ordering::Relaxed);
        }
    }

    /// This worker holds `n` pending timers.
    #[inline]
    pub(crate) fn set_timers(&self, n: usize) {
        self.timers.store(n as u64, Ordering::Relaxed);
    }

    /// Adds these counters to `totals`.
    pub(crate) fn add_to(&self, totals: &mut TurnTotals) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        totals.messages += n(&self.messages);
        totals.depth_max = totals.depth_max.max(n(&self.depth_max));
        totals.timers += n(&self.timers);
        let t = &mut totals.handler_time;
        t.sum += Duration::from_nanos(n(&self.time_sum_ns));
        for (b, a) in t.buckets.iter_mut().zip(&self.time_buckets) {
            let k = n(a);
            *b += k;
            t.count += k;
        }
    }

    /// Moves these counters (a thread's own, written by it alone) into `shared`, which
    /// several threads merge into (read-modify-writes), and zeroes them.
    pub(crate) fn merge_into(&self, shared: &TurnCounters) {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        shared.turns.fetch_add(take(&self.turns), Ordering::Relaxed);
        shared
            .messages
            .fetch_add(take(&self.messages), Ordering::Relaxed);
        shared
            .depth_max
            .fetch_max(take(&self.depth_max), Ordering::Relaxed);
        shared
            .time_sum_ns
            .fetch_add(take(&self.time_sum_ns), Ordering::Relaxed);
        for (s, a) in shared.time_buckets.iter().zip(&self.time_buckets) {
            let k = take(a);
            if k != 0 {
                s.fetch_add(k, Ordering::Relaxed);
            }
        }
    }
}

/// Actor counters that are not per worker: spawns, stops and restarts are rare next to
/// messages, so one shared counter each (a read-modify-write per event) costs nothing that
/// matters.
pub(crate) struct LifeCounters {
    pub(crate) spawned: AtomicU64,
    pub(crate) stopped: AtomicU64,
    pub(crate) restarted: AtomicU64,
    /// Sends refused because the mailbox was full.
    pub(crate) refused_full: AtomicU64,
}

impl LifeCounters {
    pub(crate) fn new() -> LifeCounters {
        LifeCounters {
            spawned: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            restarted: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
        }
    }

    pub(crate) fn count(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the actor core counts, summed (the actor half of the runtime's `Metrics`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ActorCounts {
    pub(crate) live: usize,
    pub(crate) spawned: u64,
    pub(crate) stopped: u64,
    pub(crate) restarted: u64,
    pub(crate) refused_full: u64,
    pub(crate) mailbox_depth: usize,
    pub(crate) by_name: Vec<(String, u64)>,
    pub(crate) turns: TurnTotals,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(Duration::from_nanos(10)), 0);
        assert_eq!(bucket_of(Duration::from_micros(1)), 0);
        assert_eq!(bucket_of(Duration::from_micros(2)), 1);
        assert_eq!(bucket_of(Duration::from_micros(3)), 2);
        assert_eq!(bucket_of(Duration::from_micros(4)), 2);
        assert_eq!(bucket_of(Duration::from_micros(5)), 3);
        assert_eq!(bucket_of(Duration::from_micros(1 << 20)), 20);
        assert_eq!(bucket_of(Duration::from_micros((1 << 20) + 1)), 21);
        assert_eq!(bucket_of(Duration::from_secs(3600)), 21);
        assert_eq!(HandlerTime::upper_bound_us(0), Some(1));
        assert_eq!(HandlerTime::upper_bound_us(20), Some(1 << 20));
        assert_eq!(HandlerTime::upper_bound_us(21), None);
    }

    #[test]
    fn one_turn_in_the_sample_is_timed() {
        let c = TurnCounters::new();
        for _ in 0..HANDLER_TIME_SAMPLE * 3 {
            let clock = c.turn_begins();
            c.turn_ends(2, clock);
        }
        c.saw_depth(7);
        c.saw_depth(3);
        let mut t = TurnTotals::default();
        c.add_to(&mut t);
        assert_eq!(t.messages, HANDLER_TIME_SAMPLE * 6);
        assert_eq!(t.handler_time.count, 3);
        assert_eq!(t.depth_max, 7);
        let shared = TurnCounters::new();
        c.merge_into(&shared);
        let mut t2 = TurnTotals::default();
        shared.add_to(&mut t2);
        assert_eq!(t2.messages, t.messages);
        assert_eq!(t2.handler_time.count, 3);
        let mut t3 = TurnTotals::default();
        c.add_to(&mut t3);
        assert_eq!(t3.messages, 0);
    }

    #[test]
    fn quantiles_name_a_bucket_bound() {
        let mut h = HandlerTime::default();
        assert_eq!(h.quantile_upper_bound_us(0.5), None);
        h.buckets[0] = 90;
        h.buckets[5] = 10;
        h.count = 100;
        assert_eq!(h.quantile_upper_bound_us(0.5), Some(1));
        assert_eq!(h.quantile_upper_bound_us(0.99), Some(32));
    }
}
