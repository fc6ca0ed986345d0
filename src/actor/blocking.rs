//! Blocking work off the workers: actors on threads of their own, and a bounded pool of
//! threads for blocking closures.
//!
//! A worker that blocks in a database client or a file call stalls every actor and socket it
//! serves. Two ways out:
//!
//! - **A dedicated actor** ([`SystemHandle::spawn_dedicated`], or
//!   [`SpawnOptions::dedicated_thread`](super::SpawnOptions::dedicated_thread)) runs every turn
//!   on a thread of its own, named `kendynet-blocking-N`. Its [`Addr`] is an ordinary address:
//!   sends, timers and watches work as for any actor. The cell's scheduling goes to its *home*:
//!   a pool actor is queued on the workers, a dedicated one wakes its thread, which runs turns
//!   by the same protocol as a worker (another turn while the budget ran out with messages
//!   left, sleep when idle, leave when the actor stops). Timers it sets come from outside the
//!   pool and are spread over the workers like any other thread's.
//! - **A blocking closure** ([`Context::spawn_blocking`], [`SystemHandle::spawn_blocking`])
//!   runs on a pool of at most [`DEFAULT_BLOCKING_THREADS`] threads (settable through
//!   [`Builder::blocking_threads`](crate::Builder::blocking_threads)); beyond that, closures
//!   wait in a queue in the order they came. A thread idle for [`BLOCKING_KEEP_ALIVE`] leaves.
//!   The result comes back as a message; a panicking closure gives
//!   [`BlockingError::Panicked`], never a dead thread.
//!
//! At shutdown, once the actors have stopped (a dedicated actor's thread leaves with its
//! actor's last turn), closures still queued are cancelled ([`BlockingError::Cancelled`]) and
//! the system waits, within its deadline, for the threads to leave. A thread stuck in a call
//! past the deadline is left behind and counted in the
//! [`ShutdownReport`](crate::ShutdownReport).
//!
//! In the test kit's simulation no thread is started: a dedicated actor runs on the simulation
//! like any other, and a blocking closure runs at once on the simulation's thread, so a run
//! stays deterministic.

use super::cell::{self, Addr, Supervision};
use super::scheduler::{Runnable, TURN_BUDGET, Turn};
use super::system::{RegistryError, SystemHandle};
use super::{Actor, Context};
use crate::sync::{Arc, AtomicUsize, Condvar, Mutex, Ordering, thread};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

/// The default most threads that run blocking closures at once
/// ([`Builder::blocking_threads`](crate::Builder::blocking_threads)). Dedicated actors' threads
/// are not counted: each has its own.
pub const DEFAULT_BLOCKING_THREADS: usize = 64;

/// How long a thread of the blocking pool waits for another closure before it leaves.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Why a blocking closure gave no value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockingError {
    /// The closure panicked; the panic message.
    Panicked(String),
    /// The system shut down before the closure could start.
    Cancelled,
    /// No thread could be started for it (the OS error); nothing else was running closures.
    NoThread(String),
}

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::Panicked(m) => write!(f, "the blocking closure panicked: {m}"),
            BlockingError::Cancelled => f.write_str("the system shut down before it ran"),
            BlockingError::NoThread(e) => write!(f, "no thread could be started: {e}"),
        }
    }
}

impl std::error::Error for BlockingError {}

/// Where a dedicated actor's turns run: its thread sleeps here until the actor is scheduled.
pub(crate) struct Home {
    queued: Mutex<bool>,
    wake: Condvar,
}

impl Home {
    fn new() -> Home {
        Home {
            queued: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// The actor became runnable: wake its thread. Only the notification that moved the
    /// actor out of idle calls this, so one flag is enough.
    #[cold]
    pub(crate) fn schedule(&self) {
        *self.queued.lock().unwrap() = true;
        self.wake.notify_one();
    }

    fn wait(&self) {
        let mut queued = self.queued.lock().unwrap();
        while !*queued {
            queued = self.wake.wait(queued).unwrap();
        }
        *queued = false;
    }
}

/// A closure for the pool: `job(None)` runs it and delivers its result, `job(Some(e))`
/// delivers `e` instead.
type Job = Box<dyn FnOnce(Option<BlockingError>) + Send>;

/// The threads of a system that are not workers: dedicated actors' and the blocking pool's.
pub(crate) struct BlockingThreads {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Idle pool threads wait here for a job.
    job_ready: Condvar,
    /// Threads alive (dedicated and pool), for shutdown.
    alive: AtomicUsize,
}

struct State {
    queue: VecDeque<Job>,
    /// Pool threads alive, and how many of them wait for a job.
    pool_threads: usize,
    idle: usize,
    max_pool_threads: usize,
    closed: bool,
    next_name: usize,
}

impl BlockingThreads {
    pub(crate) fn new() -> BlockingThreads {
        BlockingThreads {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    pool_threads: 0,
                    idle: 0,
                    max_pool_threads: DEFAULT_BLOCKING_THREADS,
                    closed: false,
                    next_name: 0,
                }),
                job_ready: Condvar::new(),
                alive: AtomicUsize::new(0),
            }),
        }
    }

    /// Sets the most pool threads at once (at least one).
    pub(crate) fn set_max_pool_threads(&self, n: usize) {
        self.shared.state.lock().unwrap().max_pool_threads = n.max(1);
    }

    /// Threads (dedicated and pool) that have not left yet.
    pub(crate) fn alive(&self) -> usize {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Shutdown: no new closures; the queued ones are cancelled (their callers hear
    /// [`BlockingError::Cancelled`]) and idle pool threads leave.
    pub(crate) fn close(&self) {
        let cancelled: Vec<Job> = {
            let mut st = self.shared.state.lock().unwrap();
            st.closed = true;
            st.queue.drain(..).collect()
        };
        self.shared.job_ready.notify_all();
        for job in cancelled {
            job(Some(BlockingError::Cancelled));
        }
    }

    fn thread_name(&self) -> String {
        let mut st = self.shared.state.lock().unwrap();
        st.next_name += 1;
        format!("kendynet-blocking-{}", st.next_name)
    }

    /// Starts a thread counted in `alive` (uncounted again if it cannot start).
    fn start(&self, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        struct Leaving(Arc<Shared>);
        impl Drop for Leaving {
            fn drop(&mut self) {
                self.0.alive.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.shared.alive.fetch_add(1, Ordering::SeqCst);
        let leaving = Leaving(self.shared.clone());
        let name = self.thread_name();
        let spawned = thread::Builder::new().name(name).spawn(move || {
            // Counted out last, after everything the thread held is dropped.
            let leaving = leaving;
            body();
            drop(leaving);
        });
        // A thread that did not start dropped the closure, and with it the count.
        spawned.map(drop)
    }

    /// Queues `job` for the pool, starting a thread if none is free and the limit allows.
    fn submit(&self, job: Job) {
        let mut st = self.shared.state.lock().unwrap();
        if st.closed {
            drop(st);
            return job(Some(BlockingError::Cancelled));
        }
        st.queue.push_back(job);
        let start = st.queue.len() > st.idle && st.pool_threads < st.max_pool_threads;
        if !start {
            drop(st);
            self.shared.job_ready.notify_one();
            return;
        }
        st.pool_threads += 1;
        drop(st);
        let shared = self.shared.clone();
        if let Err(e) = self.start(move || pool_thread(&shared)) {
            let mut st = self.shared.state.lock().unwrap();
            st.pool_threads -= 1;
            // With no thread at all, nobody would ever take the queue: fail what waits.
            let orphaned: Vec<Job> = if st.pool_threads == 0 {
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            drop(st);
            for job in orphaned {
                job(Some(BlockingError::NoThread(e.to_string())));
            }
        }
    }
}

/// The body of a pool thread: take jobs until none comes within the keep-alive.
fn pool_thread(shared: &Shared) {
    let mut st = shared.state.lock().unwrap();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            // The job catches its own panics; this is the last line of defence.
            let _ = catch_unwind(AssertUnwindSafe(|| job(None)));
            st = shared.state.lock().unwrap();
            continue;
        }
        if st.closed {
            break;
        }
        st.idle += 1;
        let (next, timeout) = shared
            .job_ready
            .wait_timeout(st, BLOCKING_KEEP_ALIVE)
            .unwrap();
        st = next;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            break;
        }
    }
    st.pool_threads -= 1;
}

/// Wraps `f` and `done` into a pool job.
fn make_job<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    done: impl FnOnce(Result<T, BlockingError>) + Send + 'static,
) -> Job {
    Box::new(move |refused: Option<BlockingError>| {
        let result = match refused {
            None => catch_unwind(AssertUnwindSafe(f))
                .map_err(|p| BlockingError::Panicked(cell::panic_message(p.as_ref()))),
            Some(e) => {
                drop(f);
                Err(e)
            }
        };
        // A panicking `done` must not take the pool thread with it.
        let _ = catch_unwind(AssertUnwindSafe(move || done(result)));
    })
}

/// Runs a dedicated actor's turns on its own thread until it stops.
fn dedicated_thread(home: &Home, cell: Arc<dyn Runnable>) {
    loop {
        home.wait();
        loop {
            match cell.run_turn(TURN_BUDGET) {
                Turn::Done => break,
                Turn::Again => continue,
                Turn::Finished(keep_alive) => {
                    // As on a worker: the last reference goes after the turn.
                    drop(keep_alive);
                    return;
                }
            }
        }
    }
}

/// Spawns `actor` on a thread of its own (the test kit's simulation keeps it on the
/// simulation).
pub(crate) fn spawn_dedicated<A: Actor>(
    handle: &SystemHandle,
    actor: A,
    supervision: Supervision<A>,
    capacity: Option<usize>,
    name: Option<&str>,
) -> Result<Addr<A>, RegistryError> {
    let system = &handle.inner;
    if system.sched.is_manual() {
        return cell::spawn(system, actor, supervision, capacity, name);
    }
    let home = Arc::new(Home::new());
    let threads = &system.blocking;
    let start_home = home.clone();
    cell::spawn_at(
        system,
        actor,
        supervision,
        capacity,
        name,
        Some(home),
        |cell: Arc<dyn Runnable>| {
            threads
                .start(move || dedicated_thread(&start_home, cell))
                .map_err(|e| RegistryError::NoThread(e.to_string()))
        },
    )
}

impl SystemHandle {
    /// Spawns an actor on a thread of its own, for handlers that block (a database client,
    /// file calls). It keeps the ordinary [`Addr`]: sends, timers, watches and lookups work
    /// as for any actor; a panic in it stops it (its watchers are told) and nothing else; its
    /// thread leaves when it stops, at the latest at shutdown.
    ///
    /// # Errors
    /// [`RegistryError::NoThread`] if the OS refused a thread; the actor is not spawned then.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::{Actor, Context, System};
    /// use std::sync::mpsc;
    ///
    /// struct Store(mpsc::Sender<String>);
    /// impl Actor for Store {
    ///     type Msg = u32;
    ///     fn handle(&mut self, key: u32, _ctx: &mut Context<Self>) {
    ///         // A blocking call is fine here: no worker waits for it.
    ///         std::thread::sleep(std::time::Duration::from_millis(10));
    ///         let me = std::thread::current().name().unwrap_or("").to_owned();
    ///         self.0.send(format!("{key} on {me}")).unwrap();
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(1).build()?;
    /// let (tx, rx) = mpsc::channel();
    /// let store = system.spawn_dedicated(Store(tx)).unwrap();
    /// store.send(7).unwrap();
    /// let got = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    /// assert!(got.starts_with("7 on kendynet-blocking-"));
    /// system.shutdown(std::time::Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_dedicated<A: Actor>(&self, actor: A) -> Result<Addr<A>, RegistryError> {
        spawn_dedicated(self, actor, Supervision::None, None, None)
    }

    /// Runs `f` on the blocking pool and hands its result to `done` (on the pool's thread).
    /// A panic in `f` gives [`BlockingError::Panicked`]; a closure still queued at shutdown
    /// gives [`BlockingError::Cancelled`]. `done` is called exactly once.
    ///
    /// To get the result as an actor's message, use [`Context::spawn_blocking`] or send it
    /// from `done`.
    pub fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(Result<T, BlockingError>) + Send + 'static,
    ) {
        let job = make_job(f, done);
        if self.inner.sched.is_manual() {
            return job(None);
        }
        self.inner.blocking.submit(job);
    }
}

impl<A: Actor> Context<'_, A> {
    /// Runs `f` on the blocking pool, off the workers, and delivers `map(result)` to this
    /// actor as a message (past any mailbox capacity: the actor asked for it). The result is
    /// `Err(`[`BlockingError`]`)` if `f` panicked or the system shut down before it ran. If
    /// this actor has stopped by then, the message is dropped.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::actor::BlockingError;
    /// use kendynet::{Actor, Context, System};
    /// use std::sync::mpsc;
    ///
    /// enum Msg {
    ///     Load(u64),
    ///     Loaded(Result<u64, BlockingError>),
    /// }
    ///
    /// struct Player(mpsc::Sender<u64>);
    /// impl Actor for Player {
    ///     type Msg = Msg;
    ///     fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
    ///         match msg {
    ///             // The "query" blocks a pool thread, not this worker.
    ///             Msg::Load(id) => ctx.spawn_blocking(move || id * 100, Msg::Loaded),
    ///             Msg::Loaded(row) => self.0.send(row.unwrap()).unwrap(),
    ///         }
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(1).build()?;
    /// let (tx, rx) = mpsc::channel();
    /// system.spawn(Player(tx)).send(Msg::Load(7)).unwrap();
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), 700);
    /// system.shutdown(std::time::Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        map: impl FnOnce(Result<T, BlockingError>) -> A::Msg + Send + 'static,
    ) {
        let me = self.addr();
        self.system().spawn_blocking(f, move |result| {
            let _ = me.cell.push_user(map(result), true);
        });
    }
}
