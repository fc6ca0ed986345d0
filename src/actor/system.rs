//! The core of a system: its scheduler, the table of live actors and the name registry.
//!
//! This module knows no actor type (cells register themselves as [`Stoppable`] and as
//! `Any` in the registry) and no sockets: the runtime composes a system from this core, its
//! workers' drivers and whatever services it adds ([`SystemInner::services`]).

use super::blocking_pool::BlockingThreads;
use super::membership::Groups;
use super::metrics::{ActorCounts, LifeCounters};
use super::scheduler::{Runnable, Scheduler};
use super::stall::{STALL_REPORTS_KEPT, Stall};
use super::{ActorId, StopReason};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, NameMap, OnceLock, Ordering, SpinLock};
use slab::Slab;
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;

/// Stops an actor from outside (shutdown), whatever its type. A `Runnable`, so that the live
/// table's reference can be handed to the worker as the keep-alive of a last turn.
pub(crate) trait Stoppable: Runnable {
    /// Asks the actor to stop: after what is queued (`drain`), or after the message in hand.
    fn request_stop(self: Arc<Self>, reason: StopReason, drain: bool);
    /// How far below a top-level actor it was spawned.
    fn depth(&self) -> u32;
    /// The actor's type.
    fn type_name(&self) -> &'static str;
    /// Whether it has nothing queued and is not running, and how many messages it has
    /// started so far (for a quiescence check).
    fn idle_and_empty(&self) -> (bool, u64);
    /// How many messages it has started so far, how many user messages wait, and the most
    /// that waited when it took a batch.
    fn counts(&self) -> (u64, usize, usize);
}

/// A registry entry: the holder's id and its cell, as `Any` for a typed lookup.
pub(crate) type Registered = (ActorId, Arc<dyn Any + Send + Sync>);

/// A name registry refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another live actor holds the name.
    NameTaken(String),
    /// The actor stopped before it could be registered.
    ActorStopped,
    /// The thread of a dedicated actor could not be started (the OS error).
    NoThread(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::NameTaken(n) => write!(f, "the name {n:?} is taken"),
            RegistryError::ActorStopped => f.write_str("the actor has stopped"),
            RegistryError::NoThread(e) => write!(f, "no thread for the actor: {e}"),
        }
    }
}

impl std::error::Error for RegistryError {}

pub(crate) struct SystemInner {
    pub(crate) sched: Scheduler,
    registry: NameMap<Registered>,
    /// Every live actor, for shutdown; a spin lock, as spawns and stops only insert or
    /// remove one entry while holding it.
    live: SpinLock<Slab<Arc<dyn Stoppable>>>,
    live_count: AtomicUsize,
    next_id: AtomicU64,
    /// The default mailbox capacity of spawned actors (0: unbounded).
    pub(crate) mailbox_capacity: usize,
    /// What the layer that built the system keeps beside it (the runtime: its sockets).
    services: Box<dyn Any + Send + Sync>,
    /// Told when an actor got a fresh instance (the runtime re-announces its sockets).
    restart_hook: OnceLock<Box<dyn Fn(ActorId) + Send + Sync>>,
    /// Messages dropped, by why (see [`DroppedMessages`]).
    dropped: [AtomicUsize; DROP_KINDS],
    /// Stalls the watchdog saw: how many, and the last few.
    stall_count: AtomicU64,
    stalls: Mutex<VecDeque<Stall>>,
    /// Dedicated actors' threads and the blocking pool.
    pub(crate) blocking: BlockingThreads,
    /// Its process groups.
    pub(crate) groups: Arc<Groups>,
    /// Spawns, stops, restarts and refused sends, for the metrics.
    life: LifeCounters,
}

const DROP_KINDS: usize = 4;

/// Messages that were queued in a mailbox when its actor stopped without handling them,
/// counted by why the actor stopped. A stop that drains ([`Addr::stop`](super::Addr::stop),
/// and a shutdown within its deadline) drops nothing; a send refused because the actor has
/// stopped or is draining is handed back to its sender, not counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedMessages {
    /// Queued in actors stopped by [`Addr::kill`](super::Addr::kill) or
    /// [`Context::stop`](super::Context::stop).
    pub killed: usize,
    /// Queued in actors whose handler panicked (with no restart left).
    pub panicked: usize,
    /// Queued in actors that a shutdown stopped when its deadline passed.
    pub shutdown_deadline: usize,
    /// One-shot timer messages that had come due but were not handled yet when their actor
    /// was killed, panicked or was restarted. Timers not yet due are cancelled by a stop and
    /// not counted (a room's next tick pending at shutdown is not a lost message), and so is
    /// one coming due as a drain ends (it came after the stop, like a refused send).
    pub timer_after_stop: usize,
}

impl DroppedMessages {
    /// All of them.
    pub fn total(&self) -> usize {
        self.killed + self.panicked + self.shutdown_deadline + self.timer_after_stop
    }

    /// What was dropped since `earlier`.
    pub fn since(&self, earlier: &DroppedMessages) -> DroppedMessages {
        DroppedMessages {
            killed: self.killed - earlier.killed,
            panicked: self.panicked - earlier.panicked,
            shutdown_deadline: self.shutdown_deadline - earlier.shutdown_deadline,
            timer_after_stop: self.timer_after_stop - earlier.timer_after_stop,
        }
    }
}

impl SystemInner {
    pub(crate) fn new(
        sched: Scheduler,
        mailbox_capacity: usize,
        services: Box<dyn Any + Send + Sync>,
    ) -> SystemInner {
        SystemInner {
            sched,
            registry: NameMap::new(),
            live: SpinLock::new(Slab::new()),
            live_count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            mailbox_capacity,
            services,
            restart_hook: OnceLock::new(),
            dropped: std::array::from_fn(|_| AtomicUsize::new(0)),
            stall_count: AtomicU64::new(0),
            stalls: Mutex::new(VecDeque::new()),
            blocking: BlockingThreads::new(),
            groups: Groups::new(),
            life: LifeCounters::new(),
        }
    }

    /// Sets what is told when an actor gets a fresh instance (once).
    pub(crate) fn set_restart_hook(&self, hook: Box<dyn Fn(ActorId) + Send + Sync>) {
        let _ = self.restart_hook.set(hook);
    }

    /// Actor `id` has a fresh instance, on the worker running it.
    pub(crate) fn actor_restarted(&self, id: ActorId) {
        LifeCounters::count(&self.life.restarted);
        trace_event!(INFO, actor = id.0, "actor restarted");
        if let Some(hook) = self.restart_hook.get() {
            hook(id);
        }
    }

    /// Counts `n` messages dropped by an actor that stopped for `reason`.
    pub(crate) fn count_dropped(&self, reason: &StopReason, n: usize) {
        let kind = match reason {
            StopReason::Normal => 0,
            StopReason::Panicked(_) | StopReason::RestartLimit(_) => 1,
            StopReason::Shutdown => 2,
        };
        self.dropped[kind].fetch_add(n, Ordering::Relaxed);
        trace_event!(WARN, dropped = n, reason = %reason, "messages dropped by a stopping actor");
    }

    /// A send refused because the mailbox was full.
    pub(crate) fn count_refused_full(&self) {
        LifeCounters::count(&self.life.refused_full);
    }

    /// Counts `n` timer messages still pending when their actor stopped (or restarted).
    pub(crate) fn count_timers_dropped(&self, n: usize) {
        self.dropped[3].fetch_add(n, Ordering::Relaxed);
        trace_event!(
            WARN,
            dropped = n,
            "timer messages dropped by a stopping actor"
        );
    }

    pub(crate) fn dropped(&self) -> DroppedMessages {
        let n = |i: usize| self.dropped[i].load(Ordering::Relaxed);
        DroppedMessages {
            killed: n(0),
            panicked: n(1),
            shutdown_deadline: n(2),
            timer_after_stop: n(3),
        }
    }

    /// The services of type `T` that the builder of the system put beside it.
    pub(crate) fn services<T: Any>(&self) -> Option<&T> {
        self.services.downcast_ref()
    }

    pub(crate) fn next_actor_id(&self) -> ActorId {
        ActorId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Adds a cell to the live table; `set_key` runs under the table's lock, before the cell
    /// is visible there (and so to a shutdown sweep).
    pub(crate) fn add_live(&self, cell: Arc<dyn Stoppable>, set_key: impl FnOnce(usize)) {
        let mut live = self.live.lock();
        let slot = live.vacant_entry();
        set_key(slot.key());
        slot.insert(cell);
        // Under the lock: the count and the table agree for whoever holds it.
        self.live_count.fetch_add(1, Ordering::SeqCst);
        LifeCounters::count(&self.life.spawned);
    }

    /// An actor's last turn is ending: takes it out of the live table and hands back the
    /// table's reference, for the worker to drop once the turn is over.
    pub(crate) fn actor_stopped(&self, live_key: usize) -> Option<Arc<dyn Stoppable>> {
        let (removed, was) = {
            let mut live = self.live.lock();
            (
                live.try_remove(live_key),
                self.live_count.fetch_sub(1, Ordering::SeqCst),
            )
        };
        LifeCounters::count(&self.life.stopped);
        if was == 1 && self.is_shutting_down() {
            self.sched.wake_all();
        }
        removed
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live_count.load(Ordering::SeqCst)
    }

    /// Claims `name` for `value`; a taken name is refused, never replaced.
    pub(crate) fn claim_name(&self, name: &str, value: Registered) -> Result<(), RegistryError> {
        self.registry
            .try_insert(name, value)
            .map_err(|_| RegistryError::NameTaken(name.to_owned()))
    }

    /// Frees `name` if `id` holds it (a stopping actor frees its own names, never a newer
    /// holder's).
    pub(crate) fn unregister_if(&self, name: &str, id: ActorId) {
        self.registry.remove_if(name, |(holder, _)| *holder == id);
    }

    pub(crate) fn lookup_any(&self, name: &str) -> Option<Arc<dyn Any + Send + Sync>> {
        self.registry.get(name).map(|(_, any)| any)
    }

    pub(crate) fn registered_names(&self) -> usize {
        self.registry.len()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.sched.is_shutting_down()
    }

    fn live_snapshot(&self) -> Vec<Arc<dyn Stoppable>> {
        self.live.lock().iter().map(|(_, a)| a.clone()).collect()
    }

    /// Asks every live actor at `depth` or deeper to stop (after what is queued, if
    /// `drain`).
    pub(crate) fn stop_actors(&self, depth: u32, reason: StopReason, drain: bool) {
        for a in self.live_snapshot() {
            if a.depth() >= depth {
                a.request_stop(reason.clone(), drain);
            }
        }
    }

    /// An actor's type and a name it is registered under (a scan: for reports).
    #[cfg_attr(
        loom,
        allow(dead_code, reason = "the watchdog's; none runs under loom")
    )]
    pub(crate) fn describe(&self, id: ActorId) -> (&'static str, Option<String>) {
        let type_name = self
            .live
            .lock()
            .iter()
            .find(|(_, a)| a.actor_id() == id)
            .map_or("(stopped)", |(_, a)| a.type_name());
        let name = self.registry.find_name(|(holder, _)| *holder == id);
        (type_name, name)
    }

    /// Keeps a stall report (the last [`STALL_REPORTS_KEPT`]).
    #[cfg_attr(
        loom,
        allow(dead_code, reason = "the watchdog's; none runs under loom")
    )]
    pub(crate) fn record_stall(&self, stall: Stall) {
        self.stall_count.fetch_add(1, Ordering::Relaxed);
        trace_event!(WARN, actor = stall.actor.0, actor_type = stall.type_name, name = stall.name.as_deref(), worker = stall.worker, running_for = ?stall.running_for, "handler stalled");
        let mut kept = self.stalls.lock().unwrap();
        if kept.len() == STALL_REPORTS_KEPT {
            kept.pop_front();
        }
        kept.push_back(stall);
    }

    /// An actor stops for good: its counts go on in the system's.
    pub(crate) fn retire_counts(&self, started: u64, high_water: usize) {
        self.life
            .retired_messages
            .fetch_add(started, Ordering::Relaxed);
        self.life
            .retired_high_water
            .fetch_max(high_water as u64, Ordering::Relaxed);
    }

    /// The actor core's counters, summed (a scan of the live actors and the names: for
    /// metrics, not hot paths).
    pub(crate) fn actor_counts(&self) -> ActorCounts {
        let n = |a: &crate::sync::unmodelled::AtomicU64| a.load(Ordering::Relaxed);
        let mut counts = ActorCounts {
            live: self.live_count(),
            spawned: n(&self.life.spawned),
            stopped: n(&self.life.stopped),
            restarted: n(&self.life.restarted),
            refused_full: n(&self.life.refused_full),
            ..ActorCounts::default()
        };
        let mut started = std::collections::HashMap::new();
        // Live actors first: one that stops meanwhile hands its count to the retired ones
        // before it leaves the table, so it may be counted twice, never missed.
        for a in self.live_snapshot() {
            let (msgs, queued, high) = a.counts();
            counts.messages += msgs;
            counts.mailbox_depth += queued;
            counts.high_water = counts.high_water.max(high);
            started.insert(a.actor_id(), msgs);
        }
        counts.messages += n(&self.life.retired_messages);
        counts.high_water = counts
            .high_water
            .max(n(&self.life.retired_high_water) as usize);
        self.registry.for_each(|name, (id, _)| {
            if let Some(&msgs) = started.get(id) {
                counts.by_name.push((name.to_owned(), msgs));
            }
        });
        counts.by_name.sort();
        self.sched.add_turns(&mut counts.turns);
        self.blocking.add_turns(&mut counts.turns);
        counts
    }

    /// The depth of the deepest live actor.
    pub(crate) fn deepest_live(&self) -> Option<u32> {
        self.live.lock().iter().map(|(_, a)| a.depth()).max()
    }

    /// Whether every live actor is idle with an empty mailbox, and the sum of the messages
    /// they have started: two equal sums around an all-idle look mean no message moved in
    /// between.
    pub(crate) fn activity(&self) -> (bool, u64) {
        let mut idle = true;
        let mut started = 0u64;
        for a in self.live_snapshot() {
            let (i, n) = a.idle_and_empty();
            idle &= i;
            started = started.wrapping_add(n);
        }
        (idle, started)
    }
}

/// A cloneable handle onto a running system: spawn, look up, listen, connect. Actors get one
/// from [`Context::system`](super::Context::system).
#[derive(Clone)]
pub struct SystemHandle {
    pub(crate) inner: Arc<SystemInner>,
}

impl fmt::Debug for SystemHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemHandle")
            .field("workers", &self.inner.sched.workers())
            .field("actors", &self.actor_count())
            .finish()
    }
}

impl SystemHandle {
    /// How many names are registered.
    pub fn registered_names(&self) -> usize {
        self.inner.registered_names()
    }

    /// How many actors are alive.
    pub fn actor_count(&self) -> usize {
        self.inner.live_count()
    }

    /// How many stalls the watchdog has reported (handlers that ran longer than the
    /// threshold, see [`Builder::stall_threshold`](crate::Builder::stall_threshold)).
    pub fn stall_count(&self) -> u64 {
        self.inner.stall_count.load(Ordering::Relaxed)
    }

    /// The last stall reports (at most [`STALL_REPORTS_KEPT`]), oldest first.
    pub fn recent_stalls(&self) -> Vec<Stall> {
        self.inner.stalls.lock().unwrap().iter().cloned().collect()
    }

    /// Whether the system has begun to shut down (handlers may cut long work short).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }

    /// Messages dropped so far, by why (see [`DroppedMessages`]).
    pub fn dropped_messages(&self) -> DroppedMessages {
        self.inner.dropped()
    }

    /// The number of worker threads (1 for a simulation of the test kit, which runs
    /// everything on the thread that drives it).
    pub fn workers(&self) -> usize {
        self.inner.sched.workers()
    }
}
