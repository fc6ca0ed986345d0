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
//! Timers live on the workers too: each worker has two timing wheels (`timers.rs`), one for
//! actors' own timers (a node holds a weak reference to the actor and its timer's slot) and
//! one for closures. A timer set on a worker joins that worker's wheel, one set from another
//! thread goes to the workers in turn (as a closure), and a parked worker's wait ends at its
//! next deadline. A worker with no pending timer pays two branches per loop for them.
//!
//! With the `testkit` feature a scheduler can also be built without workers
//! ([`Scheduler::new_manual`]): tasks and timers then go to a [`Manual`] driver (the test kit's
//! seeded, single-threaded simulation), which runs them one at a time on the thread that drives
//! it. The switch sits where a task or timer comes from outside the pool, behind the check for
//! the current worker, so a worker's own scheduling never looks at it.

use super::metrics::{TurnSampler, TurnTotals};
use super::stall::TurnMark;
use super::timers::{TimerFn, TimerKey, TimerQueue};
use crate::sync::deque::{Injector, Steal, Stealer, Worker};
use crate::sync::{Arc, AtomicBool, AtomicUsize, IdleWorkers, Mutex, Ordering, Weak, thread_local};
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
/// Called on any thread (senders, handlers); the driver runs tasks and timers later, one at a
/// time, on its own.
#[cfg(feature = "testkit")]
pub(crate) trait Manual: Send + Sync {
    /// A task became runnable.
    fn schedule(&self, task: Task);
    /// The driver's clock: time since it started.
    fn now(&self) -> Duration;
    /// `action` (with `aux` beside it) is due at `at` on the driver's clock (now, if that has
    /// passed).
    fn run_at(&self, at: Duration, aux: u32, action: TimerAction) -> TimerKey;
    /// Drops a timer `run_at` set, unless it has fired.
    fn cancel(&self, key: TimerKey);
}

/// Something with timers of its own (an actor), told when one of them falls due.
pub(crate) trait TimerTarget: Send + Sync + 'static {
    /// Timers of it are due: each one's slot and wheel entry (a batch: the timers of one
    /// target that fall due together reach it in one call).
    fn timers_due(self: Arc<Self>, due: &mut dyn Iterator<Item = (u32, WheelRef)>);
    /// Cancels its timer in slot `slot` if that is still the one of handle id `id`; returns
    /// whether it did (see `TimerHandle::cancel`).
    fn cancel_timer(&self, slot: u32, id: WheelRef) -> bool;
}

/// An actor timer's wheel entry: only a weak reference (16 bytes), so that a pending timer
/// does not keep a stopped actor's cell alive; the wheel's `aux` word is the timer's slot.
pub(crate) type ActorTimerRef = Weak<dyn TimerTarget>;

/// Tells the actor behind `target`, if it still exists, that its timer is due.
#[cfg(feature = "testkit")]
pub(crate) fn fire_actor_timer(target: ActorTimerRef, slot: u32, wheel: WheelRef) {
    if let Some(target) = target.upgrade() {
        target.timers_due(&mut std::iter::once((slot, wheel)));
    }
}

/// What a timer of the manual driver's queue does when it fires.
#[cfg(feature = "testkit")]
pub(crate) enum TimerAction {
    /// Runs a closure.
    Run(TimerFn),
    /// Tells an actor that its timer is due.
    Actor(ActorTimerRef),
}

#[cfg(feature = "testkit")]
impl TimerAction {
    /// Fires the timer of `key` in the manual driver's queue, with `aux` stored beside it.
    pub(crate) fn fire(self, aux: u32, key: TimerKey) {
        match self {
            TimerAction::Run(f) => f(),
            TimerAction::Actor(target) => fire_actor_timer(
                target,
                aux,
                WheelRef {
                    worker: MANUAL_WHEEL,
                    key,
                },
            ),
        }
    }
}

/// Where a timer of [`Scheduler::set_actor_timer`] waits: a worker's wheel or, for
/// `worker == MANUAL_WHEEL`, the manual driver's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WheelRef {
    pub(crate) worker: u32,
    pub(crate) key: TimerKey,
}

/// The `worker` of a [`WheelRef`] into the manual driver's queue.
#[cfg(feature = "testkit")]
pub(crate) const MANUAL_WHEEL: u32 = u32::MAX;

/// A timer set through [`Scheduler::run_after`], for [`Scheduler::cancel_timer`].
#[allow(dead_code)]
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
    /// Timers of this worker that other threads cancelled, for it to drop (`true`: of its
    /// actor wheel).
    remote_cancels: Mutex<Vec<(bool, TimerKey)>>,
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
    /// Time zero of the workers' wheels and of [`Scheduler::now`].
    epoch: Instant,
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
            epoch: Instant::now(),
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

    /// Adds the workers' turn counters to `totals`.
    pub(crate) fn add_turns(&self, totals: &mut TurnTotals) {
        for w in &self.workers {
            w.turn.counters.add_to(totals);
        }
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

    /// The scheduler's clock, as time since it started (the manual driver's clock for a
    /// scheduler without workers). Deadlines of [`Scheduler::set_actor_timer`] are on it.
    pub(crate) fn now(&self) -> Duration {
        #[cfg(feature = "testkit")]
        if let Some(manual) = &self.manual {
            return manual.now();
        }
        self.epoch.elapsed()
    }

    /// The instant of scheduler time `at`; time zero stands for "due at once" (the wheel's
    /// rounding up to its tick would otherwise delay a zero delay to the next millisecond).
    fn instant(&self, at: Duration) -> Instant {
        if at.is_zero() {
            return self.epoch;
        }
        self.epoch
            .checked_add(at)
            .unwrap_or_else(|| self.epoch + Duration::from_secs(100 * 365 * 86_400))
    }

    /// Runs `f` on a worker after `delay`: on this worker if this thread is one of ours, else
    /// on the workers in turn. Returns what cancels it.
    #[allow(dead_code)] // the closure timers' entry point (actors' own timers use the cell's)
    pub(crate) fn run_after(&self, delay: Duration, f: TimerFn) -> SchedTimer {
        let at = if delay.is_zero() {
            Duration::ZERO
        } else {
            self.now().saturating_add(delay)
        };
        self.run_at(at, f)
    }

    /// Runs `f` on a worker at scheduler time `at` (zero: at once), as
    /// [`Scheduler::run_after`].
    pub(crate) fn run_at(&self, at: Duration, f: TimerFn) -> SchedTimer {
        let leftover = with_current(self, |w| match w {
            Some(w) => Err(SchedTimer::Local {
                worker: w.index as u32,
                key: w.timers.borrow_mut().insert_since_epoch(at, 0, f),
            }),
            None => Ok(f),
        });
        let f = match leftover {
            Ok(f) => f,
            Err(local) => return local,
        };
        #[cfg(feature = "testkit")]
        if let Some(manual) = &self.manual {
            return SchedTimer::Manual(manual.run_at(at, 0, TimerAction::Run(f)));
        }
        let flag = Arc::new(AtomicBool::new(false));
        let fire_flag = flag.clone();
        let f: TimerFn = Box::new(move || {
            if !fire_flag.swap(true, Ordering::AcqRel) {
                f();
            }
        });
        let i = self.next_timer_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let w = &self.workers[i];
        w.remote_timers.lock().unwrap().push((self.instant(at), f));
        w.remote_timers_pending.store(true, Ordering::SeqCst);
        // The worker raises its flag before it looks at `remote_timers_pending` (see `park`).
        w.unpark.wake_if_sleeping();
        SchedTimer::Remote(flag)
    }

    /// Sets an actor's timer, due at scheduler time `at` (zero: at once), in the actor wheel
    /// of this worker (or the manual driver's queue): `target` hears of its slot `slot` and
    /// of the returned wheel entry when it fires, unless [`Scheduler::cancel_wheel`] took it
    /// out first. `None` on a thread outside the pool: the caller sets a closure timer
    /// instead ([`Scheduler::run_at`], which spreads them over the workers).
    pub(crate) fn set_actor_timer(
        &self,
        at: Duration,
        target: ActorTimerRef,
        slot: u32,
    ) -> Option<WheelRef> {
        let leftover = with_current(self, |w| match w {
            Some(w) => Err(WheelRef {
                worker: w.index as u32,
                // The wheel's epoch is the scheduler's: no round trip through an `Instant`.
                key: w
                    .actor_timers
                    .borrow_mut()
                    .insert_since_epoch(at, slot, target),
            }),
            None => Ok(target),
        });
        let target = match leftover {
            Ok(target) => target,
            Err(local) => return Some(local),
        };
        #[cfg(feature = "testkit")]
        if let Some(manual) = &self.manual {
            let key = manual.run_at(at, slot, TimerAction::Actor(target));
            return Some(WheelRef {
                worker: MANUAL_WHEEL,
                key,
            });
        }
        drop(target);
        None
    }

    /// Takes an entry of [`Scheduler::set_actor_timer`] out of its wheel, if it is still
    /// there: at once on the worker that holds it (and in the test kit), else at that
    /// worker's next loop. Only frees memory early: what makes the timer deliver nothing is
    /// the target forgetting it.
    pub(crate) fn cancel_wheel(&self, at: WheelRef) {
        #[cfg(feature = "testkit")]
        if at.worker == MANUAL_WHEEL {
            if let Some(manual) = &self.manual {
                manual.cancel(at.key);
            }
            return;
        }
        let taken = with_current(self, |w| match w {
            Some(w) if w.index == at.worker as usize => {
                Ok(w.actor_timers.borrow_mut().cancel_take(at.key))
            }
            _ => Err(()),
        });
        match taken {
            // Dropped once the wheel is no longer borrowed.
            Ok(target) => drop(target),
            Err(()) => {
                if let Some(w) = self.workers.get(at.worker as usize) {
                    w.remote_cancels.lock().unwrap().push((true, at.key));
                    w.remote_timers_pending.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Cancels a timer of [`Scheduler::run_after`]. On the worker that holds it, or for a
    /// timer set from outside the pool, a timer that has not fired never will, and the
    /// result says whether it was still pending. From another thread the cancel is handed
    /// to the holding worker, the timer may fire before that worker takes it, and the
    /// result is false; callers that need to know keep state of their own.
    #[allow(dead_code)]
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
                w.remote_cancels.lock().unwrap().push((false, *key));
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
    /// Closure timers.
    timers: RefCell<TimerQueue<Instant, TimerFn>>,
    /// Actors' own timers: 40 bytes a node.
    actor_timers: RefCell<TimerQueue<Instant, ActorTimerRef>>,
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

    /// Timers pending on both wheels.
    fn timers_pending(&self) -> usize {
        self.timers.borrow().len() + self.actor_timers.borrow().len()
    }

    /// The earliest deadline of either wheel (two branches when both are empty).
    fn next_timer(&self) -> Option<Instant> {
        let a = self.timers.borrow_mut().next_deadline();
        let b = self.actor_timers.borrow_mut().next_deadline();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers that are due, as one batch per wheel (reading the clock only if any
    /// is pending).
    fn run_due_timers(&self) {
        let Some(next) = self.next_timer() else {
            return;
        };
        let now = Instant::now();
        if next > now {
            return;
        }
        let mut due = self.timers.borrow_mut().take_due(now);
        for t in due.drain(..) {
            (t.payload)();
        }
        self.timers.borrow_mut().recycle(due);
        let mut due = self.actor_timers.borrow_mut().take_due(now);
        // Consecutive timers of one actor go to it as one batch: one upgrade, one lock of its
        // timer table, at most one notice in its mailbox.
        let worker = self.index as u32;
        let mut rest = &due[..];
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .position(|t| !Weak::ptr_eq(&t.payload, &first.payload))
                .unwrap_or(rest.len());
            if let Some(target) = first.payload.upgrade() {
                let mut batch = rest[..run].iter().map(|t| {
                    let wheel = WheelRef { worker, key: t.key };
                    (t.aux, wheel)
                });
                target.timers_due(&mut batch);
            }
            rest = &rest[run..];
        }
        // The weak references go here, outside the wheel's borrow.
        due.clear();
        self.actor_timers.borrow_mut().recycle(due);
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
        let mut actor_timers = self.actor_timers.borrow_mut();
        for (at, f) in remote.drain(..) {
            timers.insert(at, 0, f);
        }
        let mut cancelled = Vec::new();
        let mut actor_cancelled = Vec::new();
        for (actor, key) in cancels.drain(..) {
            if actor {
                actor_cancelled.push(actor_timers.cancel_take(key));
            } else {
                cancelled.push(timers.cancel_take(key));
            }
        }
        drop((timers, actor_timers, cancels, remote));
        // Dropped outside the queue's borrow: a closure may hold an address whose last drop
        // runs an actor's destructor.
        drop((cancelled, actor_cancelled));
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
        timers: RefCell::new(TimerQueue::with_epoch(sched.epoch)),
        actor_timers: RefCell::new(TimerQueue::with_epoch(sched.epoch)),
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
    let mut sampler = TurnSampler::new();
    let mut timers_shown = 0;

    loop {
        for _ in 0..TASKS_PER_POLL {
            let Some(task) = local.next_task(sched) else {
                break;
            };
            let mark = &shared.turn;
            let turn = if sampler.due() {
                TurnSampler::timed(&mark.counters, false, || task.run(TURN_BUDGET, mark))
            } else {
                task.run(TURN_BUDGET, mark)
            };
            match turn {
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
        let next_timer = local.next_timer();
        // Published for the metrics; a worker without timers pays one compare.
        if next_timer.is_some() || timers_shown != 0 {
            timers_shown = local.timers_pending();
            shared.turn.counters.set_timers(timers_shown);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    struct NoUnpark;
    impl Unpark for NoUnpark {
        fn wake_if_sleeping(&self) -> bool {
            false
        }
        fn wake(&self) {}
    }

    struct Nobody;
    impl TimerTarget for Nobody {
        fn timers_due(self: Arc<Self>, _: &mut dyn Iterator<Item = (u32, WheelRef)>) {}
        fn cancel_timer(&self, _: u32, _: WheelRef) -> bool {
            false
        }
    }

    /// Timers set outside the pool go to the workers in turn, not all to worker 0 (actors'
    /// timers set there become closure timers: there is no actor wheel to put them in).
    #[test]
    fn timers_set_outside_the_pool_are_spread_over_the_workers() {
        let unparkers: Vec<Arc<dyn Unpark>> = (0..3).map(|_| Arc::new(NoUnpark) as _).collect();
        let (sched, _locals) = Scheduler::new(unparkers, Duration::ZERO);
        for i in 0..6 {
            let _ = sched.run_after(Duration::from_secs(1), Box::new(|| {}));
            let target = Weak::<Nobody>::new() as Weak<dyn TimerTarget>;
            assert!(
                sched
                    .set_actor_timer(Duration::from_secs(1), target, i)
                    .is_none(),
                "no actor wheel outside the pool"
            );
        }
        for w in &sched.workers {
            assert_eq!(w.remote_timers.lock().unwrap().len(), 2);
            assert!(w.remote_timers_pending.load(Ordering::SeqCst));
        }
    }
}
