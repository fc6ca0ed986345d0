//! The work-stealing scheduler and the worker loop.
//!
//! Each worker has a LIFO slot and a local FIFO deque (`crossbeam-deque`); a global injector
//! takes tasks queued from outside the pool. A task scheduled on a worker goes into its LIFO
//! slot, pushing the previous occupant into the deque, so that the actor a handler just sent to
//! runs next on the same thread (ping-pong without a hop). The slot is not stealable; the deque
//! is, and a worker that puts a task there wakes one sleeping worker, if any, to steal it. A
//! run of LIFO tasks is capped so that two actors bouncing messages cannot starve the deque.
//!
//! The scheduler knows nothing of sockets. What a worker does besides running actors (for the
//! runtime: polling its share of the sockets) sits behind its [`Driver`], which the worker
//! calls after each batch of turns and in which it parks when it finds no task, as tokio's
//! workers reach their I/O driver only through their park.
//!
//! Going to sleep and waking follow one protocol (checked in `loom_tests/`): the sleeper
//! counts itself in `sleepers`, has its driver raise its sleeping flag (a `SeqCst` fence
//! follows), and looks for work once more; a producer makes its work visible, issues a
//! `SeqCst` fence, and wakes a worker whose flag it manages to clear. One of the two always
//! sees the other, so no task waits while every worker sleeps.
//!
//! Actor timers live on the workers too: a timer set on a worker joins that worker's queue, one
//! set from another thread goes to the workers in turn, and a parked worker's wait ends at its
//! next deadline.
//!
//! With the `testkit` feature a scheduler can also be built without workers
//! ([`Scheduler::new_manual`]): tasks and timers then go to a [`Manual`] driver (the test kit's
//! seeded, single-threaded simulation), which runs them one at a time on the thread that drives
//! it. The switch sits where a task or timer comes from outside the pool, behind the check for
//! the current worker, so a worker's own scheduling never looks at it.

use super::stall::TurnMark;
use super::timers::{TimerFn, TimerKey, TimerQueue};
use crate::sync::deque::{Injector, Steal, Stealer, Worker};
use crate::sync::{Arc, AtomicBool, AtomicUsize, IdleWorkers, Mutex, Ordering, thread_local};
use std::cell::{Cell, RefCell};
use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// Messages one actor handles per turn before others get the worker.
pub(crate) const TURN_BUDGET: usize = 128;
/// Tasks a worker runs between two looks at its driver.
const TASKS_PER_POLL: usize = 256;
/// Consecutive LIFO-slot tasks before the deque gets a turn.
const LIFO_STREAK: u32 = 32;
/// Every this many tasks the injector is checked before the local deque (fairness).
const INJECTOR_EVERY: u32 = 31;

/// Something a worker can run: one actor turn.
pub(crate) trait Runnable: Send + Sync + 'static {
    /// Runs one turn, marking its start and end in `mark` (for the watchdog).
    fn run_turn(&self, budget: usize, mark: &TurnMark) -> Turn;

    /// The actor it runs.
    fn actor_id(&self) -> super::ActorId;

    /// Who runs (see [`TaskInfo`]).
    #[cfg(feature = "testkit")]
    fn info(&self) -> TaskInfo;
}

/// How a turn ended.
pub(crate) enum Turn {
    /// Nothing left: the actor is idle (or another turn is someone else's duty).
    Done,
    /// The budget ran out with messages left: queue the task again.
    Again,
    /// The actor stopped. The system's reference to it, kept alive until the turn is over.
    Finished(Arc<dyn Runnable>),
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

    /// Runs one turn of at most `budget` messages.
    pub(crate) fn run(&self, budget: usize, mark: &TurnMark) -> Turn {
        // SAFETY: the cell is alive while this task exists (see the type's docs).
        unsafe { self.0.as_ref() }.run_turn(budget, mark)
    }

    /// Who the task runs, for the test kit's ordering and trace.
    #[cfg(feature = "testkit")]
    pub(crate) fn info(&self) -> TaskInfo {
        // SAFETY: the cell is alive while this task exists (see the type's docs).
        unsafe { self.0.as_ref() }.info()
    }
}

/// What the test kit knows of a task: whose turn it is, and how far the actor has got.
#[cfg(feature = "testkit")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskInfo {
    pub(crate) id: super::ActorId,
    /// The actor's type, as `std::any::type_name` spells it.
    pub(crate) type_name: &'static str,
    /// Messages it has started handling so far.
    pub(crate) started_msgs: u64,
}

/// What a worker thread does besides running actors, owned by that thread. The runtime's
/// implementation polls the worker's share of the sockets; tests and the loom models plug in
/// others.
pub(crate) trait Driver {
    /// After a batch of turns: push out what the turns produced (writes) and hand in what is
    /// ready (events for actors). Returns how soon the driver wants to be looked at again
    /// even if no I/O arrives (for example sockets paused until their owners catch up).
    fn after_turns(&mut self) -> Option<Duration>;

    /// Waits at most `timeout` (`None`: until woken) for I/O or a wake-up through its
    /// [`Unpark`], then dispatches what arrived. A wait that may block must announce the
    /// sleep first and then ask `has_work` (and its own cross-thread queues) once more, so
    /// that work queued before the announcement is not slept through.
    ///
    /// # Errors
    /// The OS error of the wait; the worker reports it and keeps going.
    fn park(&mut self, timeout: Option<Duration>, has_work: &dyn Fn() -> bool) -> io::Result<()>;

    /// The worker leaves for good: end what the driver holds.
    fn exit(&mut self);
}

/// Where a scheduler without workers sends its tasks and timers (the test kit's simulation).
/// Both are called on any thread (senders, handlers); the driver runs them later, one at a
/// time, on its own.
#[cfg(feature = "testkit")]
pub(crate) trait Manual: Send + Sync {
    /// A task became runnable.
    fn schedule(&self, task: Task);
    /// `f` is due `delay` from now, on the driver's clock.
    fn run_after(&self, delay: Duration, f: TimerFn) -> TimerKey;
    /// Drops a timer `run_after` set, unless it has fired.
    fn cancel(&self, key: TimerKey);
}

/// A timer set through [`Scheduler::run_after`], for [`Scheduler::cancel_timer`].
#[derive(Clone, Debug)]
pub(crate) enum SchedTimer {
    /// In the queue of worker `worker`.
    Local { worker: u32, key: TimerKey },
    /// Set from outside the pool; waits in a worker's queue behind a flag that the first of
    /// firing and cancelling sets.
    Remote(Arc<AtomicBool>),
    /// In the manual driver's queue.
    #[cfg(feature = "testkit")]
    Manual(TimerKey),
}

/// The cross-thread half of a [`Driver`]: waking its worker.
pub(crate) trait Unpark: Send + Sync {
    /// Wakes the worker only if it is asleep (or about to be); returns whether it was.
    fn wake_if_sleeping(&self) -> bool;
    /// Interrupts the worker's current or next wait.
    fn wake(&self);
}

/// Per-worker state shared with other threads.
struct WorkerShared {
    unpark: Arc<dyn Unpark>,
    /// The turn it is in, for the watchdog.
    turn: TurnMark,
    /// Timers set from other threads, for this worker to take into its queue.
    remote_timers: Mutex<Vec<(Instant, TimerFn)>>,
    /// Timers of this worker that other threads cancelled, for it to drop.
    remote_cancels: Mutex<Vec<TimerKey>>,
    /// Set when either of the two above has entries.
    remote_timers_pending: AtomicBool,
}

/// The scheduler's shared part.
pub(crate) struct Scheduler {
    injector: Injector<Task>,
    stealers: Vec<Stealer<Task>>,
    workers: Vec<WorkerShared>,
    /// How many workers sleep.
    idle: IdleWorkers,
    /// The worker that gets the next timer set from outside the pool.
    next_timer_worker: AtomicUsize,
    spin_before_sleep: Duration,
    shutting_down: AtomicBool,
    exit: AtomicBool,
    /// Set for a scheduler without workers: where tasks and timers go instead.
    #[cfg(feature = "testkit")]
    manual: Option<Arc<dyn Manual>>,
}

impl Scheduler {
    /// A scheduler whose worker `i` is woken through `unparkers[i]`; returns the workers'
    /// local deques too.
    pub(crate) fn new(
        unparkers: Vec<Arc<dyn Unpark>>,
        spin_before_sleep: Duration,
    ) -> (Scheduler, Vec<Worker<Task>>) {
        let locals: Vec<Worker<Task>> = unparkers.iter().map(|_| Worker::new_fifo()).collect();
        let stealers = locals.iter().map(Worker::stealer).collect();
        let sched = Scheduler {
            injector: Injector::new(),
            stealers,
            workers: unparkers
                .into_iter()
                .map(|unpark| WorkerShared {
                    unpark,
                    turn: TurnMark::new(),
                    remote_timers: Mutex::new(Vec::new()),
                    remote_cancels: Mutex::new(Vec::new()),
                    remote_timers_pending: AtomicBool::new(false),
                })
                .collect(),
            idle: IdleWorkers::new(),
            next_timer_worker: AtomicUsize::new(0),
            spin_before_sleep,
            shutting_down: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            #[cfg(feature = "testkit")]
            manual: None,
        };
        (sched, locals)
    }

    /// A scheduler without workers: every task and timer goes to `manual`.
    #[cfg(feature = "testkit")]
    pub(crate) fn new_manual(manual: Arc<dyn Manual>) -> Scheduler {
        let (mut sched, _) = Scheduler::new(Vec::new(), Duration::ZERO);
        sched.manual = Some(manual);
        sched
    }

    /// The number of worker threads (a scheduler without workers counts the thread that
    /// drives it).
    pub(crate) fn workers(&self) -> usize {
        self.stealers.len().max(1)
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
            self.schedule_from_outside(task);
        }
    }

    /// Worker `i`'s turn mark (none for a scheduler without workers).
    pub(crate) fn turn_mark(&self, i: usize) -> Option<&TurnMark> {
        self.workers.get(i).map(|w| &w.turn)
    }

    /// The part of [`Scheduler::schedule`] for a thread that is not one of our workers. Kept
    /// out of line, so that a worker's own scheduling (the hot path) stays small whatever the
    /// compiler decides to inline into the injector's push.
    #[inline(never)]
    fn schedule_from_outside(&self, task: Task) {
        #[cfg(feature = "testkit")]
        if let Some(manual) = &self.manual {
            return manual.schedule(task);
        }
        self.injector.push(task);
        self.wake_one();
    }

    /// Wakes one sleeping worker, if there is one.
    pub(crate) fn wake_one(&self) {
        if !self.idle.should_wake() {
            return;
        }
        for w in &self.workers {
            if w.unpark.wake_if_sleeping() {
                return;
            }
        }
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn wake_all(&self) {
        for w in &self.workers {
            w.unpark.wake();
        }
    }

    /// Whether any task waits where a worker could take it.
    fn has_stealable_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Runs `f` on a worker after `delay`: on this worker if this thread is one of ours, else
    /// on the workers in turn. Returns what cancels it.
    pub(crate) fn run_after(&self, delay: Duration, f: TimerFn) -> SchedTimer {
        let leftover = with_current(self, |w| match w {
            Some(w) => Err(SchedTimer::Local {
                worker: w.index as u32,
                key: w.timers.borrow_mut().insert(Instant::now() + delay, f),
            }),
            None => Ok(f),
        });
        let f = match leftover {
            Ok(f) => f,
            Err(local) => return local,
        };
        #[cfg(feature = "testkit")]
        if let Some(manual) = &self.manual {
            return SchedTimer::Manual(manual.run_after(delay, f));
        }
        let at = Instant::now() + delay;
        let flag = Arc::new(AtomicBool::new(false));
        let fire_flag = flag.clone();
        let f: TimerFn = Box::new(move || {
            if !fire_flag.swap(true, Ordering::AcqRel) {
                f();
            }
        });
        let i = self.next_timer_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let w = &self.workers[i];
        w.remote_timers.lock().unwrap().push((at, f));
        w.remote_timers_pending.store(true, Ordering::SeqCst);
        // The worker raises its flag before it looks at `remote_timers_pending` (see `park`).
        w.unpark.wake_if_sleeping();
        SchedTimer::Remote(flag)
    }

    /// Cancels a timer of [`Scheduler::run_after`]. On the worker that holds it, or for a
    /// timer set from outside the pool, a timer that has not fired never will, and the
    /// result says whether it was still pending. From another thread the cancel is handed
    /// to the holding worker, the timer may fire before that worker takes it, and the
    /// result is false; callers that need to know keep state of their own.
    pub(crate) fn cancel_timer(&self, timer: &SchedTimer) -> bool {
        match timer {
            SchedTimer::Remote(flag) => !flag.swap(true, Ordering::AcqRel),
            #[cfg(feature = "testkit")]
            SchedTimer::Manual(key) => {
                if let Some(manual) = &self.manual {
                    manual.cancel(*key);
                }
                false
            }
            SchedTimer::Local { worker, key } => {
                let done = with_current(self, |w| match w {
                    Some(w) if w.index == *worker as usize => {
                        Some(w.timers.borrow_mut().cancel(*key))
                    }
                    _ => None,
                });
                if let Some(cancelled) = done {
                    return cancelled;
                }
                let Some(w) = self.workers.get(*worker as usize) else {
                    return false;
                };
                w.remote_cancels.lock().unwrap().push(*key);
                w.remote_timers_pending.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    /// Shutdown has begun: idle workers look around regularly instead of sleeping for good.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Tells the workers to leave once idle.
    pub(crate) fn exit_workers(&self) {
        self.exit.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    fn should_exit(&self) -> bool {
        self.exit.load(Ordering::SeqCst)
    }

    /// Whether tasks go to a manual driver (the test kit's simulation) instead of workers.
    pub(crate) fn is_manual(&self) -> bool {
        #[cfg(feature = "testkit")]
        return self.manual.is_some();
        #[cfg(not(feature = "testkit"))]
        false
    }
}

/// The part of a worker that lives on its own thread.
pub(crate) struct WorkerLocal {
    index: usize,
    sched: *const Scheduler,
    lifo: Cell<Option<Task>>,
    lifo_streak: Cell<u32>,
    ticks: Cell<u32>,
    deque: Worker<Task>,
    timers: RefCell<TimerQueue>,
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
        // A peek: take and put back (Cell<Option<Task>> has no borrow API).
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

    /// Steals a batch into the local deque and returns one task. If more tasks wait, another
    /// worker is woken to share them: tasks left behind by a worker that then runs a long
    /// handler would otherwise wait while others sleep.
    fn steal_into_local(
        &self,
        sched: &Scheduler,
        steal: impl FnMut() -> Steal<Task>,
    ) -> Option<Task> {
        let t = steal_from(steal)?;
        if !self.deque.is_empty() || !sched.injector.is_empty() {
            sched.wake_one();
        }
        Some(t)
    }

    /// Runs the timers that are due (reading the clock only if any is pending).
    fn run_due_timers(&self) {
        if self.timers.borrow_mut().next_deadline().is_none() {
            return;
        }
        let mut due = self.timers.borrow_mut().take_due(Instant::now());
        for t in due.drain(..) {
            (t.run)();
        }
        self.timers.borrow_mut().recycle(due);
    }

    /// Moves the timers other threads set for this worker into its queue.
    fn take_remote_timers(&self, shared: &WorkerShared) {
        if !shared.remote_timers_pending.load(Ordering::SeqCst) {
            return;
        }
        let mut remote = shared.remote_timers.lock().unwrap();
        let mut cancels = shared.remote_cancels.lock().unwrap();
        shared.remote_timers_pending.store(false, Ordering::SeqCst);
        let mut timers = self.timers.borrow_mut();
        for (at, f) in remote.drain(..) {
            timers.insert(at, f);
        }
        let mut cancelled = Vec::with_capacity(cancels.len());
        for key in cancels.drain(..) {
            cancelled.push(timers.cancel_take(key));
        }
        drop((timers, cancels, remote));
        // Dropped outside the queue's borrow: a closure may hold an address whose last drop
        // runs an actor's destructor.
        drop(cancelled);
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

/// The body of worker thread `index`: run tasks, drive its driver, sleep when idle. Returns
/// when the scheduler tells the workers to exit and this one has nothing left to run.
pub(crate) fn run_worker(
    index: usize,
    sched: &Scheduler,
    deque: Worker<Task>,
    driver: &mut dyn Driver,
    on_wait_error: &dyn Fn(usize, &io::Error),
) {
    let local = WorkerLocal {
        index,
        sched,
        lifo: Cell::new(None),
        lifo_streak: Cell::new(0),
        ticks: Cell::new(0),
        deque,
        timers: RefCell::new(TimerQueue::new()),
    };
    CURRENT.with(|c| c.set(&local));
    struct ResetCurrent;
    impl Drop for ResetCurrent {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(std::ptr::null()));
        }
    }
    let _reset = ResetCurrent;
    let shared = &sched.workers[index];
    let mut idle_since: Option<Instant> = None;

    loop {
        for _ in 0..TASKS_PER_POLL {
            let Some(task) = local.next_task(sched) else {
                break;
            };
            match task.run(TURN_BUDGET, &shared.turn) {
                Turn::Done => {}
                Turn::Again => {
                    local.deque.push(task);
                    sched.wake_one();
                }
                // The last reference may go here, after the turn: never inside it.
                Turn::Finished(keep_alive) => drop(keep_alive),
            }
        }
        let recheck = driver.after_turns();
        let idle = !local.has_local_work();
        if idle && sched.should_exit() {
            break;
        }
        // Before sleeping, keep polling for a while (`Builder::spin_before_sleep`): work that
        // arrives meanwhile then costs no wake-up.
        let spinning = if idle && !sched.spin_before_sleep.is_zero() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            since.elapsed() < sched.spin_before_sleep
        } else {
            idle_since = None;
            false
        };
        // An idle worker sleeps until woken, also while the system shuts down: every step of
        // a shutdown that concerns it (sockets to flush, the last actor stopping, the order
        // to exit) wakes it.
        let mut timeout = if !idle || spinning {
            Some(Duration::ZERO)
        } else {
            recheck
        };
        let next_timer = local.timers.borrow_mut().next_deadline();
        if let Some(next) = next_timer {
            let until = next.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(until, |t| t.min(until)));
        }
        let may_sleep = timeout != Some(Duration::ZERO);
        if may_sleep {
            sched.idle.going_to_sleep();
        }
        let has_work =
            || sched.has_stealable_work() || shared.remote_timers_pending.load(Ordering::SeqCst);
        let res = driver.park(timeout, &has_work);
        if may_sleep {
            sched.idle.woke_up();
        }
        if let Err(e) = res {
            // A failing wait is not recoverable for this worker's I/O; report it and keep
            // running tasks rather than spinning on the error.
            on_wait_error(index, &e);
            crate::sync::thread::pause(Duration::from_millis(10));
        }
        local.take_remote_timers(shared);
        local.run_due_timers();
    }
    driver.exit();
}
