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
use crate::actor::scheduler::{Manual, Task, TimerAction};
use crate::actor::timers::{TimerKey, TimerQueue};
use crate::sync::{Arc, Mutex};
use std::collections::BTreeMap;
use std::time::Duration;

struct CoreState {
    ready: BTreeMap<ActorId, Task>,
    /// Each timer with the number the trace knows it by.
    timers: TimerQueue<Duration, (u64, TimerAction)>,
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
                timers: TimerQueue::new(),
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
        self.state.lock().unwrap().timers.next_deadline()
    }

    /// Takes the timers due at `now`, in deadline order (then in the order set): each one's
    /// trace number, deadline, key and what to fire (with its `aux` word).
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_due(
        &self,
        now: Duration,
    ) -> Vec<(u64, Duration, TimerKey, u32, TimerAction)> {
        let mut st = self.state.lock().unwrap();
        let mut due = st.timers.take_due(now);
        let out = due
            .drain(..)
            .map(|t| (t.payload.0, t.at, t.key, t.aux, t.payload.1))
            .collect();
        st.timers.recycle(due);
        out
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
            std::mem::replace(&mut st.timers, TimerQueue::new())
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

    fn now(&self) -> Duration {
        self.world.now()
    }

    fn run_at(&self, at: Duration, aux: u32, action: TimerAction) -> TimerKey {
        let at = at.max(self.world.now());
        let seq = {
            let mut st = self.state.lock().unwrap();
            st.timers_set += 1;
            st.timers_set
        };
        let key = self
            .state
            .lock()
            .unwrap()
            .timers
            .insert(at, aux, (seq, action));
        self.world.record(format_args!(
            "timer {seq} set, due at {:.6}s",
            at.as_secs_f64()
        ));
        key
    }

    fn cancel(&self, key: TimerKey) {
        let dropped = self.state.lock().unwrap().timers.cancel_take(key);
        if let Some((seq, _)) = &dropped {
            self.world.record(format_args!("timer {seq} cancelled"));
        }
        // Dropped outside the lock: the closure may hold an address.
        drop(dropped);
    }
}
