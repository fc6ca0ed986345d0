//! A worker's timers: a hierarchical timing wheel.
//!
//! Only the worker's own thread touches its queue; timers set from other threads reach it
//! through the scheduler (see `Scheduler::run_after`). The queue is generic over its clock
//! ([`Clock`]): workers keep `Instant`s and tick in milliseconds; the test kit's manual clock
//! keeps `Duration`s since its start and ticks in nanoseconds, so that simulated timers fire
//! at their exact instant.
//!
//! # Layout
//!
//! Six levels of 64 slots each (as tokio's wheel; skynet's is 256 near slots and 4×64 levels,
//! the same idea). Level `l` slot `s` holds the timers whose deadline tick shares everything
//! above bit `6(l+1)` with the current tick and has `s` in bits `6l..6l+6`; so level 0 covers
//! the next 64 ticks one tick per slot, level 1 the next 4096 ticks 64 per slot, and so on up
//! to 2^36 ticks (2.2 years of milliseconds). A timer further away waits in an overflow list
//! that is looked at again when the current tick enters its 2^36 block.
//!
//! Each slot is a doubly linked list threaded through one `Vec` of nodes by `u32` indices,
//! with a sentinel node per list: inserting is an append, cancelling an unlink, both O(1) and
//! free of allocation once the vector has grown. A 64-bit occupancy mask per level finds the
//! next non-empty slot with one rotate and one count of trailing zeros, so an idle stretch
//! of any length is skipped in one step. When time reaches a slot of level 1 or higher, its
//! timers move down (cascade) in list order; a level-0 slot is due as a whole. Appending
//! everywhere and cascading in order keeps timers with the same deadline tick in the order
//! they were set.
//!
//! # Time
//!
//! A deadline is rounded *up* to a tick, and "now" *down*, so a timer never fires early; on a
//! worker it fires at most about a millisecond late plus however long the worker is busy.

use std::time::{Duration, Instant};

/// What a timer runs when it fires (it queues a message; it never runs a handler).
pub(crate) type TimerFn = Box<dyn FnOnce() + Send>;

/// A clock the wheel can tick on: instants convert to ticks since the queue's epoch.
pub(crate) trait Clock: Copy + Ord {
    /// Nanoseconds per tick.
    const TICK_NS: u64;
    /// The epoch of a queue made without one.
    #[cfg_attr(not(any(test, feature = "testkit")), allow(dead_code))]
    fn default_epoch() -> Self;
    /// Nanoseconds from `epoch` to `self` (0 if before it; saturating).
    fn nanos_since(self, epoch: Self) -> u64;
    /// `epoch` plus `nanos` (saturating at a far future).
    fn add_nanos(epoch: Self, nanos: u64) -> Self;
}

impl Clock for Instant {
    const TICK_NS: u64 = 1_000_000;
    fn default_epoch() -> Instant {
        Instant::now()
    }
    fn nanos_since(self, epoch: Instant) -> u64 {
        u64::try_from(self.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }
    fn add_nanos(epoch: Instant, nanos: u64) -> Instant {
        let d = Duration::from_nanos(nanos);
        epoch
            .checked_add(d)
            .unwrap_or_else(|| epoch + Duration::from_secs(100 * 365 * 86_400))
    }
}

impl Clock for Duration {
    const TICK_NS: u64 = 1;
    fn default_epoch() -> Duration {
        Duration::ZERO
    }
    fn nanos_since(self, epoch: Duration) -> u64 {
        u64::try_from(self.saturating_sub(epoch).as_nanos()).unwrap_or(u64::MAX)
    }
    fn add_nanos(epoch: Duration, nanos: u64) -> Duration {
        epoch.saturating_add(Duration::from_nanos(nanos))
    }
}

/// Names one pending timer of one queue: its node and the generation it was set with (a
/// node is reused; a generation is not, until it wraps after 2^32 reuses of one node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// A timer that is due.
pub(crate) struct Timer<T, P> {
    /// Its deadline, rounded up to the tick.
    #[cfg_attr(not(any(test, feature = "testkit")), allow(dead_code))]
    pub(crate) at: T,
    pub(crate) key: TimerKey,
    /// The word the caller stored beside the payload.
    pub(crate) aux: u32,
    pub(crate) payload: P,
}

const LEVELS: usize = 6;
const LEVEL_BITS: u32 = 6;
const SLOTS: usize = 1 << LEVEL_BITS;
/// Ticks the wheel spans; a deadline in a later 2^36 block waits in the overflow list.
const RANGE_BITS: u32 = LEVEL_BITS * LEVELS as u32;
/// The list of timers already due (set with a deadline at or before the current tick).
const DUE: usize = LEVELS * SLOTS;
const OVERFLOW: usize = DUE + 1;
/// Lists, each with a sentinel node at the index of its number.
const LISTS: usize = OVERFLOW + 1;
const NIL: u32 = u32::MAX;

/// One node: a timer, a free node, or a list's sentinel. 24 bytes plus the payload.
struct Node<P> {
    /// Deadline tick (for a timer).
    when: u64,
    prev: u32,
    /// The next node of the list (of the free list, for a free node).
    next: u32,
    generation: u32,
    aux: u32,
    /// `None` for a free node or a sentinel.
    payload: Option<P>,
}

/// Pending timers on a clock whose instants are `T`, each carrying a payload `P`.
pub(crate) struct TimerQueue<T = Instant, P = TimerFn> {
    epoch: T,
    /// The current tick: every timer due at or before it has been handed out or is in the
    /// due list.
    elapsed: u64,
    nodes: Vec<Node<P>>,
    free: u32,
    len: usize,
    occupied: [u64; LEVELS],
    /// The earliest deadline among the overflow list (meaningful when it is not empty).
    overflow_min: u64,
    /// A lower bound of the earliest deadline tick, while `cache_valid`.
    cache: u64,
    cache_valid: bool,
    /// Reused between passes.
    out: Vec<Timer<T, P>>,
}

impl<T: Clock, P> TimerQueue<T, P> {
    /// An empty queue whose ticks count from the clock's default epoch (now, for `Instant`).
    #[cfg_attr(not(any(test, feature = "testkit")), allow(dead_code))]
    pub(crate) fn new() -> TimerQueue<T, P> {
        TimerQueue::with_epoch(T::default_epoch())
    }

    /// An empty queue whose ticks count from `epoch`.
    pub(crate) fn with_epoch(epoch: T) -> TimerQueue<T, P> {
        let nodes = (0..LISTS as u32)
            .map(|i| Node {
                when: 0,
                prev: i,
                next: i,
                generation: 0,
                aux: 0,
                payload: None,
            })
            .collect();
        TimerQueue {
            epoch,
            elapsed: 0,
            nodes,
            free: NIL,
            len: 0,
            occupied: [0; LEVELS],
            overflow_min: u64::MAX,
            cache: u64::MAX,
            cache_valid: true,
            out: Vec::new(),
        }
    }

    fn tick_ceil(&self, at: T) -> u64 {
        at.nanos_since(self.epoch).div_ceil(T::TICK_NS)
    }

    fn tick_floor(&self, now: T) -> u64 {
        now.nanos_since(self.epoch) / T::TICK_NS
    }

    fn tick_time(&self, tick: u64) -> T {
        T::add_nanos(self.epoch, tick.saturating_mul(T::TICK_NS))
    }

    /// Adds a timer due at `at`, with `aux` stored beside its payload; returns the key that
    /// cancels it.
    pub(crate) fn insert(&mut self, at: T, aux: u32, payload: P) -> TimerKey {
        let when = self.tick_ceil(at);
        self.insert_tick(when, aux, payload)
    }

    /// As [`TimerQueue::insert`], with the deadline given as time since the queue's epoch
    /// (saves the scheduler a round trip through `T`).
    pub(crate) fn insert_since_epoch(&mut self, at: Duration, aux: u32, payload: P) -> TimerKey {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.insert_tick(nanos.div_ceil(T::TICK_NS), aux, payload)
    }

    fn insert_tick(&mut self, when: u64, aux: u32, payload: P) -> TimerKey {
        let idx = if self.free != NIL {
            let idx = self.free;
            let n = &mut self.nodes[idx as usize];
            self.free = n.next;
            n.generation = n.generation.wrapping_add(1);
            n.when = when;
            n.aux = aux;
            n.payload = Some(payload);
            idx
        } else {
            let idx = u32::try_from(self.nodes.len()).expect("fewer than 2^32 timers");
            assert!(idx != NIL, "fewer than 2^32 - 1 timers");
            self.nodes.push(Node {
                when,
                prev: NIL,
                next: NIL,
                generation: 1,
                aux,
                payload: Some(payload),
            });
            idx
        };
        self.len += 1;
        self.place(idx);
        if self.cache_valid {
            self.cache = self.cache.min(when);
        }
        TimerKey {
            slot: idx,
            generation: self.nodes[idx as usize].generation,
        }
    }

    /// The list a timer due at `when` belongs in, seen from the current tick.
    fn list_for(&self, when: u64) -> usize {
        if when <= self.elapsed {
            return DUE;
        }
        let differ = self.elapsed ^ when;
        if differ >> RANGE_BITS != 0 {
            return OVERFLOW;
        }
        let level = ((63 - (differ | (SLOTS as u64 - 1)).leading_zeros()) / LEVEL_BITS) as usize;
        let slot = ((when >> (level as u32 * LEVEL_BITS)) & (SLOTS as u64 - 1)) as usize;
        level * SLOTS + slot
    }

    /// Appends node `idx` to the list its deadline belongs in.
    fn place(&mut self, idx: u32) {
        let when = self.nodes[idx as usize].when;
        let list = self.list_for(when);
        if list < DUE {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        } else if list == OVERFLOW {
            self.overflow_min = self.overflow_min.min(when);
        }
        let sentinel = list as u32;
        let tail = self.nodes[list].prev;
        self.nodes[idx as usize].prev = tail;
        self.nodes[idx as usize].next = sentinel;
        self.nodes[tail as usize].next = idx;
        self.nodes[list].prev = idx;
    }

    /// Takes node `idx` out of its list (clearing the occupancy bit of a slot it empties).
    fn unlink(&mut self, idx: u32) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        self.nodes[prev as usize].next = next;
        self.nodes[next as usize].prev = prev;
        // A list left empty has its sentinel on both sides: its index names the list.
        if prev == next && (prev as usize) < DUE {
            let list = prev as usize;
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }

    /// Puts node `idx` on the free list and hands back its payload.
    fn release(&mut self, idx: u32) -> P {
        let n = &mut self.nodes[idx as usize];
        let payload = n.payload.take().expect("a pending timer has its payload");
        n.prev = NIL;
        n.next = self.free;
        self.free = idx;
        self.len -= 1;
        payload
    }

    /// Cancels a pending timer: its payload is dropped and never fires. Returns false if it
    /// has fired or was cancelled already.
    #[allow(dead_code)]
    pub(crate) fn cancel(&mut self, key: TimerKey) -> bool {
        self.cancel_take(key).is_some()
    }

    /// As [`TimerQueue::cancel`], handing back the payload for the caller to drop once the
    /// queue is no longer borrowed.
    pub(crate) fn cancel_take(&mut self, key: TimerKey) -> Option<P> {
        let idx = key.slot as usize;
        let live = idx >= LISTS
            && self
                .nodes
                .get(idx)
                .is_some_and(|n| n.generation == key.generation && n.payload.is_some());
        if !live {
            return None;
        }
        self.unlink(key.slot);
        // The cache stays a lower bound: a cancelled timer can only make it early.
        Some(self.release(key.slot))
    }

    /// When [`TimerQueue::take_due`] has something to do next: the earliest deadline, or an
    /// earlier instant at which timers move between levels (a lower bound, never later than
    /// any pending deadline). Cheap: a branch when empty, a cached value usually.
    #[inline]
    pub(crate) fn next_deadline(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        if !self.cache_valid {
            self.cache = self.next_expiration().map_or(u64::MAX, |(_, t)| t);
            self.cache_valid = true;
        }
        Some(self.tick_time(self.cache))
    }

    /// The next list that falls due and its tick: the due list now, else the first occupied
    /// slot of the lowest occupied level (every timer of a level is later than every timer
    /// of the levels below), else the start of the overflow's block.
    fn next_expiration(&self) -> Option<(usize, u64)> {
        if self.nodes[DUE].next != DUE as u32 {
            return Some((DUE, self.elapsed));
        }
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = level as u32 * LEVEL_BITS;
            let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            let slot =
                (occupied.rotate_right(now_slot).trailing_zeros() + now_slot) as u64 % SLOTS as u64;
            let level_start = self.elapsed & !((1u64 << (shift + LEVEL_BITS)) - 1);
            let deadline = level_start + (slot << shift);
            debug_assert!(deadline > self.elapsed);
            return Some((level * SLOTS + slot as usize, deadline));
        }
        if self.nodes[OVERFLOW].next != OVERFLOW as u32 {
            let block = self.overflow_min & !((1u64 << RANGE_BITS) - 1);
            return Some((OVERFLOW, block.max(self.elapsed + 1)));
        }
        None
    }

    /// Takes every timer due at `now`, in deadline order (and in the order set within a
    /// tick); the caller fires them once the queue is no longer borrowed (a timer may set
    /// another). Hand the vector back through [`TimerQueue::recycle`].
    pub(crate) fn take_due(&mut self, now: T) -> Vec<Timer<T, P>> {
        let mut out = std::mem::take(&mut self.out);
        let now_tick = self.tick_floor(now);
        while let Some((list, tick)) = self.next_expiration() {
            if tick > now_tick {
                break;
            }
            self.elapsed = self.elapsed.max(tick);
            self.expire(list, &mut out);
        }
        self.elapsed = self.elapsed.max(now_tick);
        self.cache_valid = false;
        out
    }

    /// Empties list `list` that has fallen due: its timers that are due go to `out`, the
    /// others move to the lists they belong in now.
    fn expire(&mut self, list: usize, out: &mut Vec<Timer<T, P>>) {
        let first = self.nodes[list].next;
        // Detach the whole list.
        self.nodes[list].next = list as u32;
        self.nodes[list].prev = list as u32;
        if list < DUE {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        } else if list == OVERFLOW {
            self.overflow_min = u64::MAX;
        }
        let mut idx = first;
        while idx != list as u32 {
            let next = self.nodes[idx as usize].next;
            let when = self.nodes[idx as usize].when;
            if when <= self.elapsed {
                let aux = self.nodes[idx as usize].aux;
                let key = TimerKey {
                    slot: idx,
                    generation: self.nodes[idx as usize].generation,
                };
                let payload = self.release(idx);
                out.push(Timer {
                    at: self.tick_time(when),
                    key,
                    aux,
                    payload,
                });
            } else {
                self.place(idx);
            }
            idx = next;
        }
    }

    /// Hands back the emptied vector of [`TimerQueue::take_due`] for reuse.
    pub(crate) fn recycle(&mut self, mut due: Vec<Timer<T, P>>) {
        due.clear();
        if self.out.capacity() < due.capacity() {
            self.out = due;
        }
    }

    /// Timers pending.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A queue on a millisecond-ticking manual clock for the tests: `Instant`-like rounding
    /// without a real clock.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    struct Ms(u64);
    impl Clock for Ms {
        const TICK_NS: u64 = 1_000_000;
        fn default_epoch() -> Ms {
            Ms(0)
        }
        fn nanos_since(self, epoch: Ms) -> u64 {
            self.0.saturating_sub(epoch.0)
        }
        fn add_nanos(epoch: Ms, nanos: u64) -> Ms {
            Ms(epoch.0.saturating_add(nanos))
        }
    }

    fn names(due: Vec<Timer<Duration, &'static str>>) -> Vec<&'static str> {
        due.into_iter().map(|t| t.payload).collect()
    }

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let mut q = TimerQueue::<Instant>::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        for (name, d) in [("c", 30), ("a", 10), ("b", 10), ("d", 50)] {
            let log = log.clone();
            q.insert(
                t0 + ms(d),
                0,
                Box::new(move || log.lock().unwrap().push(name)),
            );
        }
        assert!(q.next_deadline().unwrap() <= t0 + ms(11));
        let due = q.take_due(t0 + ms(31));
        assert_eq!(due.len(), 3);
        for t in due {
            (t.payload)();
        }
        assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(q.len(), 1);
        assert!(q.take_due(t0 + ms(49)).is_empty());
    }

    #[test]
    fn a_timer_never_fires_early() {
        let mut q = TimerQueue::<Ms, ()>::new();
        // 10.5 ms rounds up to tick 11.
        q.insert(Ms(10_500_000), 0, ());
        assert!(q.take_due(Ms(10_999_999)).is_empty());
        assert_eq!(q.take_due(Ms(11_000_000)).len(), 1);
    }

    #[test]
    fn a_cancelled_timer_never_runs() {
        let mut q = TimerQueue::<Duration, &str>::new();
        let keys: Vec<TimerKey> = ["x", "y", "z"]
            .iter()
            .enumerate()
            .map(|(i, n)| q.insert(ms(i as u64), 0, *n))
            .collect();
        assert!(q.cancel(keys[0]));
        assert!(!q.cancel(keys[0]), "a second cancel finds nothing");
        assert_eq!(names(q.take_due(ms(5))), ["y", "z"]);
        assert!(!q.cancel(keys[1]), "a fired timer cannot be cancelled");
        assert_eq!(q.len(), 0);
        // The freed node is reused with a new generation: the old key stays stale.
        let k = q.insert(ms(10), 0, "w");
        assert!(k.slot == keys[0].slot || k.slot == keys[1].slot || k.slot == keys[2].slot);
        assert!(!keys.contains(&k));
        assert!(!q.cancel(keys[2]));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn cascades_across_levels_in_order() {
        let mut q = TimerQueue::<Duration, u64>::new();
        // One deadline per level (and same-deadline pairs set at different times).
        let whens = [
            1u64,
            63,
            64,
            65,
            4095,
            4096,
            4097,
            262_143,
            262_144,
            (1 << 24) + 5,
            (1 << 30) + 7,
        ];
        for &w in whens.iter().rev() {
            q.insert(Duration::from_nanos(w), 0, w);
        }
        let mut got = Vec::new();
        let mut now = 0;
        while q.len() > 0 {
            let next = q.next_deadline().unwrap();
            let n = u64::try_from(next.as_nanos()).unwrap();
            assert!(n > now || now == 0, "progress");
            now = n;
            for t in q.take_due(next) {
                assert_eq!(t.at, Duration::from_nanos(t.payload), "fires at its tick");
                got.push(t.payload);
            }
        }
        assert_eq!(got, whens);
    }

    #[test]
    fn same_deadline_keeps_set_order_across_a_cascade() {
        let mut q = TimerQueue::<Duration, u32>::new();
        q.insert(Duration::from_nanos(5000), 0, 1); // far: level 2
        q.take_due(Duration::from_nanos(4000));
        q.insert(Duration::from_nanos(5000), 0, 2); // nearer, same deadline
        q.take_due(Duration::from_nanos(4999));
        q.insert(Duration::from_nanos(5000), 0, 3); // level 0 now
        let got: Vec<u32> = q
            .take_due(Duration::from_nanos(5000))
            .into_iter()
            .map(|t| t.payload)
            .collect();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn far_timers_wait_in_the_overflow_and_fire_on_time() {
        let mut q = TimerQueue::<Duration, u32>::new();
        let far = (1u64 << 36) * 3 + 12_345;
        q.insert(Duration::from_nanos(far), 7, 1);
        q.insert(Duration::from_nanos(far), 8, 2);
        q.insert(Duration::from_nanos(100), 9, 3);
        let mut got = Vec::new();
        let mut steps = 0;
        while let Some(next) = q.next_deadline() {
            steps += 1;
            assert!(steps < 100, "a handful of steps, not one per tick");
            for t in q.take_due(next) {
                got.push((u64::try_from(t.at.as_nanos()).unwrap(), t.aux, t.payload));
            }
        }
        assert_eq!(got, [(100, 9, 3), (far, 7, 1), (far, 8, 2)]);
    }

    #[test]
    fn a_timer_set_in_the_past_is_due_at_once() {
        let mut q = TimerQueue::<Duration, u32>::new();
        q.take_due(ms(100));
        q.insert(ms(3), 0, 1);
        assert_eq!(q.next_deadline(), Some(ms(100)));
        assert_eq!(q.take_due(ms(100)).len(), 1);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn an_actor_timer_node_is_40_bytes() {
        use crate::actor::scheduler::ActorTimerRef;
        assert_eq!(std::mem::size_of::<Node<ActorTimerRef>>(), 40);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Deadlines from "now" to far beyond the wheel's range, biased to level edges.
            4 => prop_oneof![0u64..200, 0u64..5000, 0u64..300_000, 0u64..(1 << 38)].prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => prop_oneof![0u64..70, 0u64..5000, 0u64..(1 << 37)].prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a naive model (a list sorted by deadline, then insertion): the same timers
        /// fire at the same ticks in the same order, cancels agree, and `next_deadline` is
        /// never later than the earliest deadline.
        #[test]
        fn behaves_like_a_sorted_list(ops in proptest::collection::vec(op(), 1..200)) {
            let mut q = TimerQueue::<Duration, u32>::new();
            let mut model: Vec<(u64, u32, TimerKey)> = Vec::new();
            let mut keys: Vec<TimerKey> = Vec::new();
            let mut now = 0u64;
            let mut id = 0u32;
            for op in ops {
                match op {
                    Op::Insert(d) => {
                        id += 1;
                        let at = now + d;
                        let k = q.insert(Duration::from_nanos(at), id, id);
                        model.push((at.max(now), id, k));
                        keys.push(k);
                    }
                    Op::Cancel(i) if !keys.is_empty() => {
                        let k = keys[i % keys.len()];
                        let pos = model.iter().position(|m| m.2 == k);
                        prop_assert_eq!(q.cancel(k), pos.is_some());
                        if let Some(p) = pos {
                            model.remove(p);
                        }
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(by) => {
                        if let Some(earliest) = model.iter().map(|m| m.0).min() {
                            let nd = q.next_deadline().expect("pending");
                            prop_assert!(u64::try_from(nd.as_nanos()).unwrap() <= earliest.max(now));
                        } else {
                            prop_assert!(q.next_deadline().is_none());
                        }
                        now += by;
                        let got: Vec<(u64, u32)> = q
                            .take_due(Duration::from_nanos(now))
                            .into_iter()
                            .map(|t| (u64::try_from(t.at.as_nanos()).unwrap(), t.payload))
                            .collect();
                        // Stable sort by deadline keeps the insertion order within one.
                        model.sort_by_key(|m| m.0);
                        let split = model.partition_point(|m| m.0 <= now);
                        let want: Vec<(u64, u32)> =
                            model.drain(..split).map(|m| (m.0, m.1)).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
