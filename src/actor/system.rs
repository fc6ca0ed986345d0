//! The system: worker threads, the table of live actors, the name registry, shutdown.

use super::cell::{ActorCell, Stoppable, SystemMsg};
use super::scheduler::{Scheduler, run_worker};
use super::{Actor, ActorId, Addr, RestartPolicy, StopReason};
use crate::net::poller::NetShared;
use crate::net::{ConnOptions, Engine};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, NameMap, Ordering, SpinLock};
use slab::Slab;
use std::any::Any;
use std::fmt;
use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default number of sockets a system holds at once ([`Builder::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
/// Readiness events a worker takes per pass: each pass reads, runs the owners and writes
/// the replies before the next one, so a small batch lets the first replies leave early
/// (peers get their answers while the worker is still busy with other sockets).
const EVENTS_PER_PASS: usize = 64;
/// The default owner backlog ([`Builder::owner_backlog`]).
pub const DEFAULT_OWNER_BACKLOG: usize = 16_384;

/// Configures and starts a [`System`].
#[derive(Clone, Debug)]
pub struct Builder {
    workers: usize,
    pollers: Option<usize>,
    mailbox_capacity: usize,
    max_connections: usize,
    owner_backlog: usize,
    spin_before_sleep: Duration,
    conn_options: ConnOptions,
    name: String,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pollers: None,
            mailbox_capacity: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            owner_backlog: DEFAULT_OWNER_BACKLOG,
            spin_before_sleep: Duration::ZERO,
            conn_options: ConnOptions::default(),
            name: "kendynet".to_owned(),
        }
    }
}

impl Builder {
    /// Worker threads. Default: the number of CPUs.
    #[must_use]
    pub fn workers(mut self, n: usize) -> Builder {
        self.workers = n.max(1);
        self
    }

    /// How many of the workers also poll sockets (each with its own epoll). Default: all.
    #[must_use]
    pub fn pollers(mut self, n: usize) -> Builder {
        self.pollers = Some(n.max(1));
        self
    }

    /// The default mailbox capacity of spawned actors; 0 (the default) means unbounded.
    /// Network events are always accepted (their back-pressure is the sockets' limits).
    #[must_use]
    pub fn mailbox_capacity(mut self, n: usize) -> Builder {
        self.mailbox_capacity = n;
        self
    }

    /// The most sockets open at once; an accept beyond it is closed at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Builder {
        self.max_connections = n.max(1);
        self
    }

    /// Back-pressure from actors to sockets: when a socket's owner has more than this many
    /// messages waiting, the socket stops reading (TCP then slows the peer down) until the
    /// backlog falls to half. Default [`DEFAULT_OWNER_BACKLOG`].
    #[must_use]
    pub fn owner_backlog(mut self, messages: usize) -> Builder {
        self.owner_backlog = messages.max(1);
        self
    }

    /// How long an idle worker keeps polling (its sockets and the run queues) before it
    /// sleeps in `epoll_wait`. Spinning saves the wake-up of a sleeping thread (tens of
    /// microseconds on virtual machines) for work that arrives soon, at the price of a busy
    /// core while idle. Default: zero (sleep at once).
    #[must_use]
    pub fn spin_before_sleep(mut self, spin: Duration) -> Builder {
        self.spin_before_sleep = spin;
        self
    }

    /// The default per-socket options (limits, timeouts, raw mode) of `listen`/`connect`.
    #[must_use]
    pub fn conn_options(mut self, options: ConnOptions) -> Builder {
        self.conn_options = options;
        self
    }

    /// The prefix of the worker threads' names.
    #[must_use]
    pub fn name(mut self, name: &str) -> Builder {
        self.name = name.to_owned();
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// The OS error of creating an engine (epoll, eventfd) or a thread.
    pub fn build(self) -> io::Result<System> {
        let pollers = self.pollers.unwrap_or(self.workers).min(self.workers);
        let (sched, deques) = Scheduler::new(self.workers);
        let inner = Arc::new(SystemInner {
            sched,
            registry: NameMap::new(),
            live: SpinLock::new(Slab::new()),
            live_count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            net: NetShared::new(
                pollers,
                self.max_connections,
                self.owner_backlog,
                self.conn_options.clone(),
            ),
            mailbox_capacity: self.mailbox_capacity,
            spin_before_sleep: self.spin_before_sleep,
            shutting_down: AtomicBool::new(false),
            exit: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(self.workers);
        let mut wakers = Vec::with_capacity(self.workers);
        let (tx, rx) = std::sync::mpsc::channel();
        for (index, deque) in deques.into_iter().enumerate() {
            let system = inner.clone();
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-worker-{index}", self.name))
                .spawn(move || {
                    let engine = match Engine::new() {
                        Ok(mut e) => {
                            e.set_events_per_wait(EVENTS_PER_PASS);
                            e
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok((index, engine.handle())));
                    drop(tx);
                    run_worker(index, system, deque, engine);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    inner.exit.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        drop(tx);
        let mut handles: Vec<Option<crate::net::EngineHandle>> = vec![None; self.workers];
        for _ in 0..self.workers {
            match rx.recv() {
                Ok(Ok((index, handle))) => handles[index] = Some(handle),
                Ok(Err(e)) => {
                    inner.exit.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("a worker thread died while starting")),
            }
        }
        wakers.extend(
            handles
                .into_iter()
                .map(|h| h.expect("every worker reported")),
        );
        inner.sched.set_wakers(wakers);
        // A worker may have gone to sleep before the wakers were known: nudge them all once.
        inner.sched.wake_all();
        Ok(System {
            handle: SystemHandle { inner },
            threads,
        })
    }
}

/// Options of one spawn.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Mailbox capacity: `None` takes the system default; `Some(0)` is unbounded.
    pub mailbox_capacity: Option<usize>,
    /// Register the actor under this name (freed when it stops).
    pub name: Option<String>,
}

impl SpawnOptions {
    /// Sets the mailbox capacity.
    #[must_use]
    pub fn mailbox_capacity(mut self, n: usize) -> SpawnOptions {
        self.mailbox_capacity = Some(n);
        self
    }

    /// Sets the name to register.
    #[must_use]
    pub fn name(mut self, name: &str) -> SpawnOptions {
        self.name = Some(name.to_owned());
        self
    }
}

/// A name registry refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another live actor holds the name.
    NameTaken(String),
    /// The actor stopped before it could be registered.
    ActorStopped,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::NameTaken(n) => write!(f, "the name {n:?} is taken"),
            RegistryError::ActorStopped => f.write_str("the actor has stopped"),
        }
    }
}

impl std::error::Error for RegistryError {}

type Registered = (ActorId, Arc<dyn Any + Send + Sync>);

pub(crate) struct SystemInner {
    pub(crate) sched: Scheduler,
    registry: NameMap<Registered>,
    /// Every live actor, for shutdown; a spin lock, as spawns and stops only insert or
    /// remove one entry while holding it.
    live: SpinLock<Slab<Arc<dyn Stoppable>>>,
    live_count: AtomicUsize,
    next_id: AtomicU64,
    pub(crate) net: NetShared,
    mailbox_capacity: usize,
    pub(crate) spin_before_sleep: Duration,
    shutting_down: AtomicBool,
    exit: AtomicBool,
}

impl SystemInner {
    /// Spawns an actor with the system's default mailbox capacity.
    pub(crate) fn spawn<A: Actor>(self: &Arc<Self>, actor: A) -> Addr<A> {
        match self.spawn_inner(actor, None, None, None) {
            Ok(addr) => addr,
            Err(_) => unreachable!("an unnamed spawn cannot fail"),
        }
    }

    /// Spawns an actor; `capacity` overrides the system default, `restart` supervises it,
    /// `name` registers it before it can run (a taken name spawns nothing).
    fn spawn_inner<A: Actor>(
        self: &Arc<Self>,
        actor: A,
        restart: Option<(Box<dyn FnMut() -> A + Send>, RestartPolicy)>,
        capacity: Option<usize>,
        name: Option<&str>,
    ) -> Result<Addr<A>, RegistryError> {
        let id = ActorId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let capacity = capacity.unwrap_or(self.mailbox_capacity);
        // Allocate outside the lock; under it, only take a slot and publish the cell. The
        // key is set before the cell is visible in the table (and so to a shutdown sweep).
        let cell = Arc::new(ActorCell::new(id, actor, self.clone(), capacity, restart));
        if let Some(name) = name {
            let value: Registered = (id, cell.clone() as Arc<dyn Any + Send + Sync>);
            if self.registry.try_insert(name, value).is_err() {
                return Err(RegistryError::NameTaken(name.to_owned()));
            }
            // Not scheduled yet: the note waits for the first turn.
            cell.note_registered(name);
        }
        {
            let mut live = self.live.lock();
            let slot = live.vacant_entry();
            cell.set_live_key(slot.key());
            slot.insert(cell.clone() as Arc<dyn Stoppable>);
        }
        self.live_count.fetch_add(1, Ordering::SeqCst);
        let addr = Addr { cell };
        // Schedule the first turn, which runs `started`.
        addr.cell.notify();
        Ok(addr)
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

    pub(crate) fn register<A: Actor>(
        &self,
        name: &str,
        addr: &Addr<A>,
    ) -> Result<(), RegistryError> {
        let value: Registered = (addr.id(), addr.cell.clone() as Arc<dyn Any + Send + Sync>);
        if self.registry.try_insert(name, value).is_err() {
            return Err(RegistryError::NameTaken(name.to_owned()));
        }
        // The actor frees its names when it stops; tell it this one is its own.
        if addr
            .cell
            .push_system(SystemMsg::Registered(name.to_owned()))
            .is_err()
        {
            self.unregister_if(name, addr.id());
            return Err(RegistryError::ActorStopped);
        }
        Ok(())
    }

    pub(crate) fn unregister_if(&self, name: &str, id: ActorId) {
        self.registry.remove_if(name, |(holder, _)| *holder == id);
    }

    fn lookup<A: Actor>(&self, name: &str) -> Option<Addr<A>> {
        let (_, any) = self.registry.get(name)?;
        let cell = any.downcast::<ActorCell<A>>().ok()?;
        Some(Addr { cell })
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn workers_should_exit(&self) -> bool {
        self.exit.load(Ordering::SeqCst)
    }

    fn stop_all_actors(&self) {
        let all: Vec<Arc<dyn Stoppable>> =
            self.live.lock().iter().map(|(_, a)| a.clone()).collect();
        for a in all {
            a.request_stop(StopReason::Shutdown);
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
    /// Spawns an actor; its `started` runs on a worker before its first message.
    pub fn spawn<A: Actor>(&self, actor: A) -> Addr<A> {
        self.inner.spawn(actor)
    }

    /// Spawns an actor with options.
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if the name is held by another actor; the actor is not
    /// spawned then.
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        opts: SpawnOptions,
    ) -> Result<Addr<A>, RegistryError> {
        self.inner
            .spawn_inner(actor, None, opts.mailbox_capacity, opts.name.as_deref())
    }

    /// Spawns a supervised actor: when a handler panics, the actor is rebuilt in place by
    /// `factory` (same address and mailbox) as long as `policy` allows, and stopped with
    /// [`StopReason::RestartLimit`] after that.
    pub fn spawn_supervised<A: Actor>(
        &self,
        mut factory: impl FnMut() -> A + Send + 'static,
        policy: RestartPolicy,
    ) -> Addr<A> {
        let first = factory();
        match self
            .inner
            .spawn_inner(first, Some((Box::new(factory), policy)), None, None)
        {
            Ok(addr) => addr,
            Err(_) => unreachable!("an unnamed spawn cannot fail"),
        }
    }

    /// Registers `addr` under `name` until the actor stops.
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if another actor holds the name (a duplicate is refused,
    /// never replaced), [`RegistryError::ActorStopped`] if the actor has stopped.
    pub fn register<A: Actor>(&self, name: &str, addr: &Addr<A>) -> Result<(), RegistryError> {
        self.inner.register(name, addr)
    }

    /// Looks up an actor of type `A` by name.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<Addr<A>> {
        self.inner.lookup(name)
    }

    /// How many names are registered.
    pub fn registered_names(&self) -> usize {
        self.inner.registry.len()
    }

    /// How many actors are alive.
    pub fn actor_count(&self) -> usize {
        self.inner.live_count.load(Ordering::SeqCst)
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.sched.workers()
    }
}

/// A running actor system: its worker threads and everything on them. Dropping it shuts it
/// down with a deadline of five seconds.
///
/// `System` dereferences to [`SystemHandle`] for spawning, lookups and networking.
pub struct System {
    handle: SystemHandle,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.fmt(f)
    }
}

impl std::ops::Deref for System {
    type Target = SystemHandle;
    fn deref(&self) -> &SystemHandle {
        &self.handle
    }
}

/// How a shutdown went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether everything stopped before the deadline (false: it was forced).
    pub graceful: bool,
    /// Actors still alive when the workers were stopped.
    pub actors_left: usize,
    /// Sockets still open when the workers were stopped.
    pub sockets_left: usize,
}

impl System {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle to clone into other threads.
    pub fn handle(&self) -> SystemHandle {
        self.handle.clone()
    }

    /// Shuts down: stops accepting connections, closes every socket gracefully (what was
    /// queued for sending is written first), stops every actor (each runs `stopped`), and
    /// joins the workers. Whatever is not done when `deadline` has passed is abandoned: the
    /// workers leave after the turn they are in, and remaining sockets are closed.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.shutdown_inner(deadline)
    }

    fn shutdown_inner(&mut self, deadline: Duration) -> ShutdownReport {
        let inner = &self.handle.inner;
        let end = Instant::now() + deadline;
        inner.shutting_down.store(true, Ordering::SeqCst);
        inner.net.begin_shutdown(inner);
        inner.sched.wake_all();
        // Sockets first, so that their owners see Disconnected before they stop; half of the
        // time at most.
        let sockets_by = Instant::now() + deadline / 2;
        wait_until(sockets_by, || inner.net.open_sockets() == 0);
        let mut graceful = inner.net.open_sockets() == 0;
        // Stop actors; ones spawned meanwhile are swept again.
        loop {
            inner.stop_all_actors();
            if wait_until(
                (Instant::now() + Duration::from_millis(50)).min(end),
                || inner.live_count.load(Ordering::SeqCst) == 0,
            ) || Instant::now() >= end
            {
                break;
            }
        }
        let actors_left = inner.live_count.load(Ordering::SeqCst);
        let sockets_left = inner.net.open_sockets();
        graceful &= actors_left == 0 && sockets_left == 0;
        inner.exit.store(true, Ordering::SeqCst);
        inner.sched.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        ShutdownReport {
            graceful,
            actors_left,
            sockets_left,
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown_inner(Duration::from_secs(5));
        }
    }
}

/// Polls `done` until it holds or `until` passes; returns whether it held. Sleeps 1 ms
/// between looks (shutdown is not a hot path).
fn wait_until(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
