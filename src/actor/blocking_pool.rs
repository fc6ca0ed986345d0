//! The threads of a system that are not workers: each dedicated actor's own thread (see
//! [`super::blocking`]) and the bounded pool that runs blocking closures. This file knows
//! no actor type: a dedicated thread runs turns of a [`Runnable`], the pool runs boxed jobs.

use super::ActorId;
use super::metrics::{TurnCounters, TurnSampler, TurnTotals};
use super::scheduler::{Runnable, TURN_BUDGET, Turn};
use super::stall::TurnMark;
use crate::sync::{Arc, AtomicUsize, Condvar, Mutex, Ordering, thread};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
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
struct Home {
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
    fn schedule(&self) {
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
pub(crate) type Job = Box<dyn FnOnce(Option<BlockingError>) + Send>;

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
    /// The home of each dedicated actor whose thread runs (found by id: a cell carries only
    /// a flag, so that pool actors pay nothing for it).
    homes: Mutex<HashMap<ActorId, Arc<Home>>>,
    /// The dedicated actors' turns, for the metrics (merged after each turn).
    turns: TurnCounters,
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
                homes: Mutex::new(HashMap::new()),
                turns: TurnCounters::new(),
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
    fn start(&self, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
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

    /// Adds the dedicated actors' turns to `totals`.
    pub(crate) fn add_turns(&self, totals: &mut TurnTotals) {
        self.shared.turns.add_to(totals);
    }

    /// Starts the thread of the dedicated actor `id`, which runs `cell`'s turns until its
    /// last one.
    pub(crate) fn start_dedicated(&self, id: ActorId, cell: Arc<dyn Runnable>) -> io::Result<()> {
        let home = Arc::new(Home::new());
        self.shared.homes.lock().unwrap().insert(id, home.clone());
        let shared = self.shared.clone();
        let started = self.start(move || {
            dedicated_thread(&home, cell, &shared.turns);
            shared.homes.lock().unwrap().remove(&id);
        });
        if started.is_err() {
            self.shared.homes.lock().unwrap().remove(&id);
        }
        started
    }

    /// The dedicated actor `id` became runnable: wake its thread. (A home that is gone
    /// belonged to an actor that has stopped: nothing to run.)
    #[cold]
    pub(crate) fn schedule_dedicated(&self, id: ActorId) {
        let home = self.shared.homes.lock().unwrap().get(&id).cloned();
        if let Some(home) = home {
            home.schedule();
        }
    }

    /// Queues `job` for the pool, starting a thread if none is free and the limit allows.
    pub(crate) fn submit(&self, job: Job) {
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

/// Runs a dedicated actor's turns on its own thread until it stops.
fn dedicated_thread(home: &Home, cell: Arc<dyn Runnable>, turns: &TurnCounters) {
    // Its actor is expected to block: no watchdog looks at this mark.
    let mark = TurnMark::new();
    let mut sampler = TurnSampler::new();
    loop {
        home.wait();
        loop {
            let turn = if sampler.due() {
                TurnSampler::timed(turns, true, || cell.run_turn(TURN_BUDGET, &mark))
            } else {
                cell.run_turn(TURN_BUDGET, &mark)
            };
            match turn {
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
