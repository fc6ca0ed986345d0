//! The simulation's scheduler: the set of runnable actors, the seeded choice among them, and
//! the timers on the manual clock.
//!
//! A simulated system's [`Scheduler`](crate::actor::scheduler::Scheduler) has no workers; it
//! hands every task and timer to [`SimCore`] (its [`Manual`] driver). Runnable actors are kept
//! by id, so that the set, not the order in which actors became runnable (which may come from
//! iterating a `HashMap`), decides what a seed picks.

use super::rng::SimRng;
use super::world::World;
use crate::actor::ActorId;
use crate::actor::scheduler::{Manual, Task};
use crate::sync::{Arc, Mutex};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

/// What an actor timer runs when it fires.
type TimerFn = Box<dyn FnOnce() + Send>;

struct Timer {
    at: Duration,
    seq: u64,
    run: TimerFn,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    /// Reversed: the earliest deadline (then the earliest set) is the greatest.
    fn cmp(&self, other: &Timer) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct CoreState {
    ready: BTreeMap<ActorId, Task>,
    timers: BinaryHeap<Timer>,
    timers_set: u64,
    rng: SimRng,
}

/// What a step runs.
pub(crate) enum Pick {
    /// One turn of this actor.
    Actor(Task),
    /// The `i`-th runnable network delivery.
    Net(usize),
}

pub(crate) struct SimCore {
    world: Arc<World>,
    state: Mutex<CoreState>,
}

impl SimCore {
    pub(crate) fn new(world: Arc<World>) -> SimCore {
        let rng = SimRng::new(world.seed, 1);
        SimCore {
            world,
            state: Mutex::new(CoreState {
                ready: BTreeMap::new(),
                timers: BinaryHeap::new(),
                timers_set: 0,
                rng,
            }),
        }
    }

    /// Chooses what the next step runs: one of the runnable actors or one of `net`
    /// runnable deliveries, uniformly with the seeded generator.
    pub(crate) fn pick(&self, net: usize) -> Option<Pick> {
        let mut st = self.state.lock().unwrap();
        let actors = st.ready.len();
        if actors + net == 0 {
            return None;
        }
        let k = st.rng.below(actors + net);
        if k >= actors {
            return Some(Pick::Net(k - actors));
        }
        let id = *st.ready.keys().nth(k).expect("k < len");
        st.ready.remove(&id).map(Pick::Actor)
    }

    /// The earliest timer deadline.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.state.lock().unwrap().timers.peek().map(|t| t.at)
    }

    /// Takes the timers due at `now`, in deadline order (then in the order set).
    pub(crate) fn take_due(&self, now: Duration) -> Vec<(u64, Duration, TimerFn)> {
        let mut st = self.state.lock().unwrap();
        let mut due = Vec::new();
        while st.timers.peek().is_some_and(|t| t.at <= now) {
            let t = st.timers.pop().expect("peeked");
            due.push((t.seq, t.at, t.run));
        }
        due
    }

    /// Actors waiting to run and timers pending.
    pub(crate) fn pending(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.ready.len(), st.timers.len())
    }

    /// Forgets every queued turn and pending timer (after shutdown, or to break the cycles
    /// of a failed simulation). The timers are dropped outside the lock: they hold
    /// addresses, whose last drop may run an actor's destructor.
    pub(crate) fn clear(&self) {
        let timers = {
            let mut st = self.state.lock().unwrap();
            st.ready.clear();
            std::mem::take(&mut st.timers)
        };
        drop(timers);
    }
}

impl Manual for SimCore {
    fn schedule(&self, task: Task) {
        let id = task.info().id;
        let prev = self.state.lock().unwrap().ready.insert(id, task);
        debug_assert!(prev.is_none(), "{id} scheduled twice");
    }

    fn run_after(&self, delay: Duration, f: TimerFn) {
        let at = self.world.now().saturating_add(delay);
        let seq = {
            let mut st = self.state.lock().unwrap();
            st.timers_set += 1;
            let seq = st.timers_set;
            st.timers.push(Timer { at, seq, run: f });
            seq
        };
        self.world.record(format_args!(
            "timer {seq} set, due at {:.6}s",
            at.as_secs_f64()
        ));
    }
}
