//! The work-stealing scheduler and the worker loop.
//!
//! Each worker has a LIFO slot and a local FIFO deque (`crossbeam-deque`); a global injector
//! takes tasks queued from outside the pool. A task scheduled on a worker goes into its LIFO
//! slot, pushing the previous occupant into the deque, so that the actor a handler just sent to
//! runs next on the same thread (ping-pong without a hop). The slot is not stealable; the deque
//! is, and a worker that puts a task there wakes one sleeping worker, if any, to steal it. A
//! run of LIFO tasks is capped so that two actors bouncing messages cannot starve the deque.
//!
//! A worker that finds no task sleeps in its engine's `epoll_wait`, which also covers its
//! sockets and timers. Going to sleep and waking follow one protocol (checked in
//! `loom_tests/`): the sleeper counts itself in `sleepers`, raises its engine's sleeping flag,
//! issues a `SeqCst` fence and looks for work once more; a producer makes its work visible,
//! issues a `SeqCst` fence, and wakes a worker whose flag it manages to clear. One of the two
//! always sees the other, so no task waits while every worker sleeps.

use super::cell::Stoppable;
use super::system::SystemInner;
use crate::net::poller::PollerLocal;
use crate::net::{Engine, EngineHandle};
use crate::sync::deque::{Injector, Steal, Stealer, Worker};
use crate::sync::{Arc, IdleWorkers};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::Duration;

/// Messages one actor handles per turn before others get the worker.
pub(crate) const TURN_BUDGET: usize = 128;
/// Tasks a worker runs between two looks at its sockets.
const TASKS_PER_POLL: usize = 256;
/// Consecutive LIFO-slot tasks before the deque gets a turn.
const LIFO_STREAK: u32 = 32;
/// How soon a worker with paused sockets looks again whether their owners caught up.
const PAUSED_RECHECK: Duration = Duration::from_millis(1);
/// Every this many tasks the injector is checked before the local deque (fairness).
const INJECTOR_EVERY: u32 = 31;

/// Something a worker can run: one actor turn.
pub(crate) trait Runnable: Send + Sync + 'static {
    /// Runs one turn.
    fn run_turn(&self, budget: usize) -> Turn;
}

/// How a turn ended.
pub(crate) enum Turn {
    /// Nothing left: the actor is idle (or another turn is someone else's duty).
    Done,
    /// The budget ran out with messages left: queue the task again.
    Again,
    /// The actor stopped. The system's reference to it, kept alive until the turn is over.
    Finished(Arc<dyn Stoppable>),
}

/// A queued actor turn: a pointer to the actor's cell, without a reference count.
///
/// Counting references per scheduling cost two atomic read-modify-writes per message hop.
/// Instead, the system's table of live actors holds every cell from its spawn until its last
/// turn ends (`Turn::Finished` hands that reference to the worker, which drops it after the
/// turn), and a task exists only while its actor is scheduled or running, which ends before
/// that last turn does. So a task never outlives its cell.
pub(crate) struct Task(NonNull<dyn Runnable>);

// SAFETY: a task is only a way to reach a cell that is `Send + Sync` (`Runnable` requires
// both) and alive while the task exists (see the type's docs).
unsafe impl Send for Task {}
// SAFETY: as above; `&Task` only allows running the turn, which the scheduling state makes
// exclusive.
unsafe impl Sync for Task {}

impl Task {
    /// A task for a cell that is in the live table and was just scheduled.
    pub(crate) fn of(cell: &Arc<impl Runnable>) -> Task {
        Task(NonNull::from(&**cell as &dyn Runnable))
    }

    /// As [`Task::of`], for a cell behind a trait object (it too must live in an `Arc` that
    /// the live table holds).
    pub(crate) fn of_dyn(cell: &dyn Runnable) -> Task {
        Task(NonNull::from(cell))
    }

    fn run(&self, budget: usize) -> Turn {
        // SAFETY: the cell is alive while this task exists (see the type's docs).
        unsafe { self.0.as_ref() }.run_turn(budget)
    }
}

/// What an actor timer runs when it fires.
pub(crate) type TimerFn = Box<dyn FnOnce() + Send>;

/// The scheduler's shared part.
pub(crate) struct Scheduler {
    injector: Injector<Task>,
    stealers: Vec<Stealer<Task>>,
    /// Each worker's engine handle: its wake-up, and the way to post work to it.
    wakers: OnceLock<Vec<EngineHandle>>,
    /// How many workers sleep.
    idle: IdleWorkers,
}

impl Scheduler {
    /// A scheduler for `workers` workers; returns their local deques too.
    pub(crate) fn new(workers: usize) -> (Scheduler, Vec<Worker<Task>>) {
        let locals: Vec<Worker<Task>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let stealers = locals.iter().map(Worker::stealer).collect();
        let sched = Scheduler {
            injector: Injector::new(),
            stealers,
            wakers: OnceLock::new(),
            idle: IdleWorkers::new(),
        };
        (sched, locals)
    }

    pub(crate) fn set_wakers(&self, wakers: Vec<EngineHandle>) {
        let _ = self.wakers.set(wakers);
    }

    pub(crate) fn waker(&self, worker: usize) -> Option<&EngineHandle> {
        self.wakers.get().and_then(|w| w.get(worker))
    }

    pub(crate) fn workers(&self) -> usize {
        self.stealers.len()
    }

    /// Queues a task: on the current worker if this thread is one of ours, else globally.
    pub(crate) fn schedule(&self, task: Task) {
        let leftover = with_current(self, |w| match w {
            Some(w) => {
                w.push_local(task, self);
                None
            }
            None => Some(task),
        });
        if let Some(task) = leftover {
            self.injector.push(task);
            self.wake_one();
        }
    }

    /// Wakes one sleeping worker, if there is one.
    pub(crate) fn wake_one(&self) {
        if !self.idle.should_wake() {
            return;
        }
        if let Some(wakers) = self.wakers.get() {
            for w in wakers {
                if w.wake_if_sleeping() {
                    return;
                }
            }
        }
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn wake_all(&self) {
        if let Some(wakers) = self.wakers.get() {
            for w in wakers {
                let _ = w.wake();
            }
        }
    }

    /// Whether any task waits where a worker could take it.
    fn has_stealable_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Runs `f` on a worker after `delay`: on this worker's engine if this thread is one of
    /// ours, else on worker 0's.
    pub(crate) fn run_after(&self, delay: Duration, f: TimerFn) {
        let leftover = with_current(self, |w| match w {
            Some(w) => {
                w.timers.borrow_mut().push((delay, f));
                None
            }
            None => Some(f),
        });
        if let (Some(f), Some(w)) = (leftover, self.waker(0)) {
            let _ = w.post(move |engine: &mut Engine| engine.post_after(delay, move |_| f()));
        }
    }
}

/// The part of a worker that lives on its own thread.
pub(crate) struct WorkerLocal {
    pub(crate) index: usize,
    sched: *const Scheduler,
    lifo: Cell<Option<Task>>,
    lifo_streak: Cell<u32>,
    ticks: Cell<u32>,
    deque: Worker<Task>,
    /// Actor timers asked for during this pass, handed to the engine after it.
    timers: RefCell<Vec<(Duration, TimerFn)>>,
    /// The worker's network state (it is also a poller).
    pub(crate) net: RefCell<PollerLocal>,
}

thread_local! {
    static CURRENT: Cell<*const WorkerLocal> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with this thread's worker, if this thread is a worker of `sched`.
pub(crate) fn with_current<R>(sched: &Scheduler, f: impl FnOnce(Option<&WorkerLocal>) -> R) -> R {
    let ptr = CURRENT.with(Cell::get);
    // SAFETY: CURRENT points at the WorkerLocal on the stack frame of `run_worker` on this very
    // thread, set for exactly the duration of that frame; it is only ever read on this thread.
    let local = unsafe { ptr.as_ref() };
    f(local.filter(|w| std::ptr::eq(w.sched, sched)))
}

impl WorkerLocal {
    fn push_local(&self, task: Task, sched: &Scheduler) {
        if let Some(prev) = self.lifo.replace(Some(task)) {
            self.deque.push(prev);
            sched.wake_one();
        }
    }

    fn has_local_work(&self) -> bool {
        // SAFETY-free peek: take and put back (Cell<Option<Task>> has no borrow API).
        let t = self.lifo.take();
        let has = t.is_some();
        self.lifo.set(t);
        has || !self.deque.is_empty()
    }

    fn next_task(&self, sched: &Scheduler) -> Option<Task> {
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        if self.lifo_streak.get() < LIFO_STREAK {
            if let Some(t) = self.lifo.take() {
                self.lifo_streak.set(self.lifo_streak.get() + 1);
                return Some(t);
            }
        } else if let Some(t) = self.lifo.take() {
            // Let the deque run first; the slot's task waits its turn there.
            self.deque.push(t);
        }
        self.lifo_streak.set(0);
        if ticks % INJECTOR_EVERY == 0
            && let Some(t) =
                self.steal_into_local(sched, || sched.injector.steal_batch_and_pop(&self.deque))
        {
            return Some(t);
        }
        if let Some(t) = self.deque.pop() {
            return Some(t);
        }
        if let Some(t) =
            self.steal_into_local(sched, || sched.injector.steal_batch_and_pop(&self.deque))
        {
            return Some(t);
        }
        let n = sched.stealers.len();
        for k in 1..n {
            let victim = &sched.stealers[(self.index + k) % n];
            if let Some(t) =
                self.steal_into_local(sched, || victim.steal_batch_and_pop(&self.deque))
            {
                return Some(t);
            }
        }
        None
    }
}

impl WorkerLocal {
    /// Steals a batch into the local deque and returns one task. If more tasks wait, another
    /// worker is woken to share them: tasks left behind by a worker that then runs a long
    /// handler would otherwise wait while others sleep.
    fn steal_into_local(
        &self,
        sched: &Scheduler,
        steal: impl FnMut() -> Steal<Task>,
    ) -> Option<Task> {
        let t = steal_from(steal)?;
        // If tasks are left, wake another worker to share them: this one may block in a
        // handler while they wait.
        if !self.deque.is_empty() || !sched.injector.is_empty() {
            sched.wake_one();
        }
        Some(t)
    }
}

/// Retries a steal while it reports contention.
fn steal_from(mut steal: impl FnMut() -> Steal<Task>) -> Option<Task> {
    loop {
        match steal() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => continue,
        }
    }
}

/// The body of worker thread `index`: run tasks, poll sockets, sleep when idle.
pub(crate) fn run_worker(
    index: usize,
    system: Arc<SystemInner>,
    deque: Worker<Task>,
    mut engine: Engine,
) {
    let sched: &Scheduler = &system.sched;
    let local = WorkerLocal {
        index,
        sched,
        lifo: Cell::new(None),
        lifo_streak: Cell::new(0),
        ticks: Cell::new(0),
        deque,
        timers: RefCell::new(Vec::new()),
        net: RefCell::new(PollerLocal::new(index)),
    };
    CURRENT.with(|c| c.set(&local));
    struct ResetCurrent;
    impl Drop for ResetCurrent {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(std::ptr::null()));
        }
    }
    let _reset = ResetCurrent;
    let mut idle_since: Option<std::time::Instant> = None;

    loop {
        for _ in 0..TASKS_PER_POLL {
            let Some(task) = local.next_task(sched) else {
                break;
            };
            match task.run(TURN_BUDGET) {
                Turn::Done => {}
                Turn::Again => {
                    local.deque.push(task);
                    sched.wake_one();
                }
                // The last reference may go here, after the turn: never inside it.
                Turn::Finished(keep_alive) => drop(keep_alive),
            }
        }
        for (delay, f) in local.timers.borrow_mut().drain(..) {
            engine.post_after(delay, move |_| f());
        }
        crate::net::poller::flush(&system, &local, &mut engine);
        // A flush can end connections (a graceful close with nothing left to write, a write
        // error): tell their owners now, not after the next wait.
        crate::net::poller::deliver(&system, &local, &mut engine);

        let paused = crate::net::poller::resume_paused(&system, &local, &mut engine);
        let idle = !local.has_local_work();
        if idle && system.workers_should_exit() {
            break;
        }
        // Before sleeping, keep polling for a while (`Builder::spin_before_sleep`): work that
        // arrives meanwhile then costs no wake-up.
        let spinning = if idle && !system.spin_before_sleep.is_zero() {
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            since.elapsed() < system.spin_before_sleep
        } else {
            idle_since = None;
            false
        };
        let timeout = if !idle || spinning {
            Some(Duration::ZERO)
        } else if paused {
            // Sockets wait for their owners to catch up: look again soon.
            Some(PAUSED_RECHECK)
        } else if system.is_shutting_down() {
            // While shutting down, look again regularly instead of sleeping for good.
            Some(Duration::from_millis(10))
        } else {
            None
        };
        let timeout = engine.bounded_timeout(timeout);
        let may_sleep = timeout != Some(Duration::ZERO);
        if may_sleep {
            sched.idle.going_to_sleep();
        }
        let has_work = || sched.has_stealable_work() || local.net.borrow().has_remote_work(&system);
        let res = engine.wait_and_dispatch_with(timeout, &has_work);
        if may_sleep {
            sched.idle.woke_up();
        }
        if let Err(e) = res {
            // epoll_wait failing is not recoverable for this worker's sockets; report it and
            // keep running tasks rather than spinning on the error.
            eprintln!("kendynet: worker {index}: epoll_wait failed: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        engine.run_timers();
        engine.run_posted();
        crate::net::poller::deliver(&system, &local, &mut engine);
    }
    crate::net::poller::worker_exit(&system, &local, &mut engine);
}
