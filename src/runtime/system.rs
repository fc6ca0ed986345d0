//! Building, running and shutting down a [`System`]: the actor core, with a poller as each
//! worker's driver and the system's own socket table.

use super::poller::{EngineUnpark, NetShared, Poller};
use super::table::{MAX_SOCKETS_PER_SYSTEM, TableLease};
use super::transport::Transport;
use crate::actor::scheduler::{Scheduler, Task, Unpark, run_worker};
#[cfg(not(loom))]
use crate::actor::watchdog::Watchdog;
use crate::actor::{
    DEFAULT_BLOCKING_THREADS, DEFAULT_STALL_THRESHOLD, DroppedMessages, Stall, StopReason,
    SystemHandle, SystemInner,
};
use crate::net::{ConnOptions, Engine, EngineHandle};
use crate::sync::deque::Worker;
use crate::sync::{Arc, Ordering, mpsc, thread};
use std::fmt;
use std::io;
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
    stall_threshold: Duration,
    on_stall: Option<StallHook>,
    blocking_threads: usize,
}

/// What the watchdog calls with each stall.
#[derive(Clone)]
struct StallHook(Arc<dyn Fn(&Stall) + Send + Sync>);

impl fmt::Debug for StallHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StallHook")
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            pollers: None,
            mailbox_capacity: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            owner_backlog: DEFAULT_OWNER_BACKLOG,
            spin_before_sleep: Duration::ZERO,
            conn_options: ConnOptions::default(),
            name: "kendynet".to_owned(),
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            on_stall: None,
            blocking_threads: DEFAULT_BLOCKING_THREADS,
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
    /// [`DEFAULT_MAX_CONNECTIONS`]; at most
    /// [`MAX_SOCKETS_PER_SYSTEM`](crate::runtime::MAX_SOCKETS_PER_SYSTEM).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Builder {
        self.max_connections = n.clamp(1, MAX_SOCKETS_PER_SYSTEM);
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

    /// The watchdog's threshold: a handler that runs longer is reported once per stall
    /// (see [`Stall`]), while the other actors keep running. Default
    /// [`DEFAULT_STALL_THRESHOLD`] (1 s); zero turns the watchdog off.
    #[must_use]
    pub fn stall_threshold(mut self, threshold: Duration) -> Builder {
        self.stall_threshold = threshold;
        self
    }

    /// Called (on the watchdog's thread) with each stall, besides keeping it for
    /// [`SystemHandle::recent_stalls`]. Keep it short: log it, count it.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::System;
    /// use std::time::Duration;
    ///
    /// let system = System::builder()
    ///     .stall_threshold(Duration::from_millis(500))
    ///     .on_stall(|stall| eprintln!("slow handler: {stall}"))
    ///     .build()?;
    /// # system.shutdown(Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn on_stall(mut self, f: impl Fn(&Stall) + Send + Sync + 'static) -> Builder {
        self.on_stall = Some(StallHook(Arc::new(f)));
        self
    }

    /// The most threads that run blocking closures at once
    /// ([`Context::spawn_blocking`](crate::Context::spawn_blocking)); more closures wait in a
    /// queue. Default [`DEFAULT_BLOCKING_THREADS`]; at least 1.
    #[must_use]
    pub fn blocking_threads(mut self, n: usize) -> Builder {
        self.blocking_threads = n.max(1);
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
    /// Each worker thread makes its engine (an engine belongs to its thread) and reports its
    /// wake-up handle; once all have, the system is assembled and each worker starts running.
    ///
    /// # Errors
    /// The OS error of creating an engine (epoll, eventfd) or a thread; `OutOfMemory` if
    /// too many systems run in this process at once (4096).
    pub fn build(self) -> io::Result<System> {
        let lease = TableLease::acquire().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many systems are running in this process",
            )
        })?;
        let pollers = self.pollers.unwrap_or(self.workers).min(self.workers);
        let (stall_threshold, on_stall, name) = (
            self.stall_threshold,
            self.on_stall.clone(),
            self.name.clone(),
        );
        type Start = (Arc<SystemInner>, Worker<Task>, Arc<NetShared>);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(usize, EngineHandle)>>();
        let mut threads = Vec::with_capacity(self.workers);
        let mut starts: Vec<mpsc::Sender<Start>> = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let ready = ready_tx.clone();
            let (start_tx, start_rx) = mpsc::channel::<Start>();
            starts.push(start_tx);
            let spawned = thread::Builder::new()
                .name(format!("{}-worker-{index}", self.name))
                .spawn(move || {
                    let engine = match Engine::new() {
                        Ok(mut e) => {
                            e.set_events_per_wait(EVENTS_PER_PASS);
                            e
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok((index, engine.handle())));
                    drop(ready);
                    // No start: the build failed elsewhere.
                    let Ok((system, deque, net)) = start_rx.recv() else {
                        return;
                    };
                    let mut poller = Poller::new(index, engine, net.clone());
                    let on_error = |_: usize, _: &io::Error| {
                        net.wait_errors.fetch_add(1, Ordering::Relaxed);
                    };
                    run_worker(index, &system.sched, deque, &mut poller, &on_error);
                });
            match spawned {
                Ok(t) => threads.push(t),
                // The threads started so far see their start channel close and leave.
                Err(e) => return Err(e),
            }
        }
        drop(ready_tx);
        let mut engines: Vec<Option<EngineHandle>> = vec![None; self.workers];
        for _ in 0..self.workers {
            match ready_rx.recv() {
                Ok(Ok((index, handle))) => engines[index] = Some(handle),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a worker thread died while starting")),
            }
        }
        let engines: Vec<EngineHandle> = engines
            .into_iter()
            .map(|h| h.expect("every worker reported"))
            .collect();
        let unparkers: Vec<Arc<dyn Unpark>> = engines
            .iter()
            .map(|h| Arc::new(EngineUnpark(h.clone())) as Arc<dyn Unpark>)
            .collect();
        let net = Arc::new(NetShared::new(
            engines.into_iter().take(pollers).collect(),
            self.workers,
            lease,
            self.max_connections,
            self.owner_backlog,
            self.conn_options,
        ));
        let (sched, deques) = Scheduler::new(unparkers, self.spin_before_sleep);
        let transport: Arc<dyn Transport> = net.clone();
        let inner = Arc::new(SystemInner::new(
            sched,
            self.mailbox_capacity,
            Box::new(transport),
        ));
        super::transport::announce_sockets_on_restart(&inner);
        inner.blocking.set_max_pool_threads(self.blocking_threads);
        for (start, deque) in starts.into_iter().zip(deques) {
            // A worker that died meanwhile is noticed at join.
            let _ = start.send((inner.clone(), deque, net.clone()));
        }
        let mut system = System {
            handle: SystemHandle {
                inner: inner.clone(),
            },
            net,
            threads,
            watchdog: None,
        };
        match start_watchdog(&inner, stall_threshold, on_stall, &name) {
            Ok(dog) => system.watchdog = dog,
            Err(e) => {
                system.shutdown(Duration::from_secs(1));
                return Err(e);
            }
        }
        Ok(system)
    }
}

/// Under loom no watchdog runs: the models have no clock.
#[cfg(loom)]
fn start_watchdog(
    _: &Arc<SystemInner>,
    _: Duration,
    _: Option<StallHook>,
    _: &str,
) -> io::Result<Option<WatchdogThread>> {
    Ok(None)
}

/// Starts the watchdog's thread, unless it is off.
#[cfg(not(loom))]
fn start_watchdog(
    inner: &Arc<SystemInner>,
    threshold: Duration,
    hook: Option<StallHook>,
    name: &str,
) -> io::Result<Option<WatchdogThread>> {
    if threshold.is_zero() {
        return Ok(None);
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let mut dog = Watchdog::new(threshold, inner.sched.workers());
    let inner = inner.clone();
    let thread = thread::Builder::new()
        .name(format!("{name}-watchdog"))
        .spawn(move || {
            // Ends when the system drops its sender.
            while matches!(
                stopped.recv_timeout(dog.period()),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                dog.look(&inner, &mut |stall| {
                    if let Some(hook) = &hook {
                        (hook.0)(&stall);
                    }
                    inner.record_stall(stall);
                });
            }
        })?;
    Ok(Some(WatchdogThread { stop, thread }))
}

/// A running actor system: its worker threads and everything on them. Dropping it shuts it
/// down with a deadline of five seconds.
///
/// `System` dereferences to [`SystemHandle`] for spawning, lookups and networking.
pub struct System {
    handle: SystemHandle,
    /// Its network state (also its transport), for shutdown.
    net: Arc<NetShared>,
    threads: Vec<thread::JoinHandle<()>>,
    watchdog: Option<WatchdogThread>,
}

/// The watchdog's thread, and what ends it (dropping the sender).
struct WatchdogThread {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
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
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every step finished before the deadline and no message was dropped.
    pub graceful: bool,
    /// Whether the actors went quiet (every mailbox empty, nobody running) before the
    /// sockets were closed.
    pub drained: bool,
    /// Actors still alive when the workers were stopped.
    pub actors_left: usize,
    /// Sockets still open when the workers were stopped.
    pub sockets_left: usize,
    /// Messages dropped during the shutdown, by why: queued in actors that the deadline
    /// stopped, or timer messages for actors already stopped.
    pub dropped: DroppedMessages,
    /// Threads of dedicated actors and blocking closures still in a call at the deadline
    /// (left behind; each leaves when its call returns).
    pub blocking_threads_left: usize,
}

/// Shares of the deadline by which each step of a shutdown ends at the latest, in tenths.
const DRAIN_SHARE: u32 = 4;
const SOCKETS_SHARE: u32 = 7;

impl System {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle to clone into other threads.
    pub fn handle(&self) -> SystemHandle {
        self.handle.clone()
    }

    /// Shuts down, in this order:
    ///
    /// 1. stops accepting connections;
    /// 2. lets the actors drain their mailboxes (user messages included; actors may keep
    ///    sending to each other) until every mailbox is empty and no handler runs, for at
    ///    most 40% of `deadline`;
    /// 3. closes every socket gracefully (what was queued for sending is written first;
    ///    owners get their `Disconnected`), by 70% of `deadline`;
    /// 4. stops the actors, children before their parents (see [`Context::spawn`] and the
    ///    supervisors): each handles what is queued, then runs `stopped`; sends to an
    ///    actor that is stopping are refused and handed back;
    /// 5. when `deadline` has passed, stops the actors still alive after the message in
    ///    hand (what they had queued is dropped and counted in the report), and joins the
    ///    workers.
    ///
    /// [`Context::spawn`]: crate::Context::spawn
    ///
    /// Dedicated actors' threads leave with their actors; blocking closures still queued are
    /// cancelled ([`BlockingError::Cancelled`](crate::actor::BlockingError::Cancelled)), and
    /// the threads still in a call are waited for until the deadline, then left behind and
    /// counted in [`ShutdownReport::blocking_threads_left`].
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.shutdown_inner(deadline)
    }

    fn shutdown_inner(&mut self, deadline: Duration) -> ShutdownReport {
        let inner = &self.handle.inner;
        let net = &self.net;
        let start = Instant::now();
        let end = start + deadline;
        let dropped_before = inner.dropped();
        inner.sched.begin_shutdown();
        // 1.
        net.stop_accepting();
        // 2.
        let drained = wait_quiescent(inner, start + deadline * DRAIN_SHARE / 10);
        // 3.
        net.close_all_sockets();
        let sockets_by = start + deadline * SOCKETS_SHARE / 10;
        let mut graceful = wait_until(sockets_by, || net.open_sockets() == 0);
        // 4. Deepest first; actors spawned meanwhile are swept on the next round.
        while let Some(depth) = inner.deepest_live() {
            if Instant::now() >= end {
                break;
            }
            inner.stop_actors(depth, StopReason::Shutdown, true);
            let round = (Instant::now() + Duration::from_millis(50)).min(end);
            wait_until(round, || inner.deepest_live().is_none_or(|d| d < depth));
        }
        // 5.
        if inner.live_count() > 0 {
            graceful = false;
            inner.stop_actors(0, StopReason::Shutdown, false);
            let grace =
                (deadline / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
            wait_until(Instant::now() + grace, || inner.live_count() == 0);
        }
        let actors_left = inner.live_count();
        let sockets_left = net.open_sockets();
        // Dedicated actors' threads leave with their actors; the blocking pool's once idle.
        // Closures still queued are cancelled: each caller hears `BlockingError::Cancelled`.
        inner.blocking.close();
        wait_until(end, || inner.blocking.alive() == 0);
        let blocking_threads_left = inner.blocking.alive();
        graceful &= actors_left == 0 && sockets_left == 0 && blocking_threads_left == 0;
        inner.sched.exit_workers();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(dog) = self.watchdog.take() {
            drop(dog.stop);
            let _ = dog.thread.join();
        }
        let dropped = inner.dropped().since(&dropped_before);
        graceful &= actors_left == 0 && sockets_left == 0 && dropped.total() == 0;
        ShutdownReport {
            graceful,
            drained,
            actors_left,
            sockets_left,
            dropped,
            blocking_threads_left,
        }
    }
}

/// Waits until every actor is idle with an empty mailbox, seen twice with no message
/// started in between, or `until` passes; returns whether they went quiet.
fn wait_quiescent(inner: &SystemInner, until: Instant) -> bool {
    loop {
        let (idle, started) = inner.activity();
        if idle {
            thread::pause(Duration::from_millis(1));
            let (still_idle, started_again) = inner.activity();
            if still_idle && started_again == started {
                return true;
            }
        }
        if Instant::now() >= until {
            return false;
        }
        thread::pause(Duration::from_millis(1));
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown_inner(Duration::from_secs(5));
        }
    }
}

/// Polls `done` until it holds or `until` passes; returns whether it held. Pauses 1 ms
/// between looks (shutdown is not a hot path).
fn wait_until(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::pause(Duration::from_millis(1));
    }
}
