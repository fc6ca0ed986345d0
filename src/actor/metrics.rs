//! Counters of the actor core, for [`SystemHandle::metrics`](super::SystemHandle::metrics).
//!
//! Nothing is counted per message that was not counted already: each actor keeps the count
//! of messages it started (its own cache line, written by the thread running it) and its
//! mailbox keeps its high-water mark under the lock its consumer takes anyway; a snapshot
//! scans the live actors, and an actor that stops hands its counts to the system.
//!
//! Handler time is sampled: one turn in [`HANDLER_TIME_SAMPLE`] on each worker reads the
//! clock twice, into counters of that worker's own ([`TurnCounters`], beside its
//! [`TurnMark`](super::stall::TurnMark), written by it alone: a plain load and store, never
//! a shared read-modify-write). Reading the clock on every turn would cost more than the
//! turn of a small handler.

use crate::sync::Ordering;
use crate::sync::unmodelled::AtomicU64;
use std::time::{Duration, Instant};

/// Handler time is measured on one turn in this many on each worker (see
/// [`HandlerTime`]).
pub const HANDLER_TIME_SAMPLE: u64 = 256;

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

/// One worker's counters: its sample of turn times and its pending timers. Written by that
/// worker only (so a load and a store, no read-modify-write), read by snapshots;
/// [`TurnCounters::record_shared`] is for counters that several threads share.
#[repr(align(128))]
pub(crate) struct TurnCounters {
    time_sum_ns: AtomicU64,
    time_buckets: [AtomicU64; HANDLER_TIME_BUCKETS],
    /// Timers pending on this worker's wheels (as of its last pass).
    timers: AtomicU64,
}

/// A sum of counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct TurnTotals {
    pub(crate) timers: u64,
    pub(crate) handler_time: HandlerTime,
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Which turns a thread times: one in [`HANDLER_TIME_SAMPLE`], counted on the thread (an
/// add, a test and a branch per turn; the timed turns run through a cold path that reads
/// the clock).
pub(crate) struct TurnSampler(u64);

const _: () = assert!(HANDLER_TIME_SAMPLE.is_power_of_two());

impl TurnSampler {
    pub(crate) fn new() -> TurnSampler {
        TurnSampler(u64::MAX)
    }

    /// Whether the next turn is one to time (the first is).
    #[inline]
    pub(crate) fn due(&mut self) -> bool {
        self.0 = self.0.wrapping_add(1);
        self.0 & (HANDLER_TIME_SAMPLE - 1) == 0
    }

    /// Runs `turn` and records how long it took into `counters` (`shared`: counters that
    /// other threads write too).
    #[cold]
    #[inline(never)]
    pub(crate) fn timed<T>(counters: &TurnCounters, shared: bool, turn: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = turn();
        let took = start.elapsed();
        if shared {
            counters.record_shared(took);
        } else {
            counters.record(took);
        }
        out
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl TurnCounters {
    pub(crate) fn new() -> TurnCounters {
        TurnCounters {
            time_sum_ns: AtomicU64::new(0),
            time_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            timers: AtomicU64::new(0),
        }
    }

    /// A timed turn took `d` (called by the counters' own thread only).
    pub(crate) fn record(&self, d: Duration) {
        bump(&self.time_sum_ns, nanos(d));
        bump(&self.time_buckets[bucket_of(d)], 1);
    }

    /// A timed turn took `d`, on counters that several threads share.
    pub(crate) fn record_shared(&self, d: Duration) {
        self.time_sum_ns.fetch_add(nanos(d), Ordering::Relaxed);
        self.time_buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    /// This worker holds `n` pending timers.
    #[inline]
    pub(crate) fn set_timers(&self, n: usize) {
        self.timers.store(n as u64, Ordering::Relaxed);
    }

    /// Adds these counters to `totals`.
    pub(crate) fn add_to(&self, totals: &mut TurnTotals) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        totals.timers += n(&self.timers);
        let t = &mut totals.handler_time;
        t.sum += Duration::from_nanos(n(&self.time_sum_ns));
        for (b, a) in t.buckets.iter_mut().zip(&self.time_buckets) {
            let k = n(a);
            *b += k;
            t.count += k;
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
    /// Messages started by actors that have stopped (the live ones keep their own count),
    /// and the highest mailbox high-water mark among them.
    pub(crate) retired_messages: AtomicU64,
    pub(crate) retired_high_water: AtomicU64,
}

impl LifeCounters {
    pub(crate) fn new() -> LifeCounters {
        LifeCounters {
            spawned: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            restarted: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            retired_messages: AtomicU64::new(0),
            retired_high_water: AtomicU64::new(0),
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
    pub(crate) messages: u64,
    pub(crate) mailbox_depth: usize,
    pub(crate) high_water: usize,
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
        let mut sampler = TurnSampler::new();
        let c = TurnCounters::new();
        let mut ran = 0;
        for _ in 0..HANDLER_TIME_SAMPLE * 3 {
            if sampler.due() {
                TurnSampler::timed(&c, false, || ran += 1);
            }
        }
        assert_eq!(ran, 3);
        c.record_shared(Duration::from_micros(3));
        c.set_timers(4);
        let mut t = TurnTotals::default();
        c.add_to(&mut t);
        assert_eq!(t.handler_time.count, 4);
        assert_eq!(t.handler_time.buckets[2], 1, "3 us is in the (2, 4] bucket");
        assert!(t.handler_time.sum >= Duration::from_micros(3));
        assert_eq!(t.timers, 4);
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
