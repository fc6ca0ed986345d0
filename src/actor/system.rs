//! The core of a system: its scheduler, the table of live actors and the name registry.
//!
//! This module knows no actor type (cells register themselves as [`Stoppable`] and as
//! `Any` in the registry) and no sockets: the runtime composes a system from this core, its
//! workers' drivers and whatever services it adds ([`SystemInner::services`]).

use super::blocking_pool::BlockingThreads;
use super::membership::Groups;
use super::scheduler::{Runnable, Scheduler};
use super::{ActorId, StopReason};
use crate::sync::{Arc, AtomicU64, AtomicUsize, NameMap, Ordering, SpinLock};
use slab::Slab;
use std::any::Any;
use std::fmt;

/// Stops an actor from outside (shutdown), whatever its type. A `Runnable`, so that the live
/// table's reference can be handed to the worker as the keep-alive of a last turn.
pub(crate) trait Stoppable: Runnable {
    fn request_stop(self: Arc<Self>, reason: StopReason);
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
    /// Dedicated actors' threads and the blocking pool.
    pub(crate) blocking: BlockingThreads,
    /// Its process groups.
    pub(crate) groups: Arc<Groups>,
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
            blocking: BlockingThreads::new(),
            groups: Groups::new(),
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
        {
            let mut live = self.live.lock();
            let slot = live.vacant_entry();
            set_key(slot.key());
            slot.insert(cell);
        }
        self.live_count.fetch_add(1, Ordering::SeqCst);
    }

    /// An actor's last turn is ending: takes it out of the live table and hands back the
    /// table's reference, for the worker to drop once the turn is over.
    pub(crate) fn actor_stopped(&self, live_key: usize) -> Option<Arc<dyn Stoppable>> {
        let removed = self.live.lock().try_remove(live_key);
        if self.live_count.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_shutting_down() {
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

    /// Asks every live actor to stop.
    pub(crate) fn stop_all_actors(&self, reason: StopReason) {
        let all: Vec<Arc<dyn Stoppable>> =
            self.live.lock().iter().map(|(_, a)| a.clone()).collect();
        for a in all {
            a.request_stop(reason.clone());
        }
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

    /// The number of worker threads (1 for a simulation of the test kit, which runs
    /// everything on the thread that drives it).
    pub fn workers(&self) -> usize {
        self.inner.sched.workers()
    }
}
