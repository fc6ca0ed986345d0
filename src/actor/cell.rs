//! The actor cell: mailbox, scheduling state and the actor itself, plus the typed handles
//! onto it ([`Addr`], [`Recipient`]) and the [`Context`] a handler gets.

use super::scheduler::{ActorTimerRef, Runnable, Task, TimerTarget, Turn, WheelRef};
use super::stall::TurnMark;
use super::system::{Registered, RegistryError, Stoppable, SystemHandle, SystemInner};
use super::timer::{self, ActorTimers, Fired, TimerHandle};
use super::{Actor, ActorId, RestartPolicy, StopReason};
use crate::error::TrySendError;
use crate::mailbox::{Mailbox, PushError, SchedState};
use crate::sync::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, SpinLock, UnsafeCell, Weak,
};
use std::collections::VecDeque;
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Control messages, on the mailbox's system lane.
pub(crate) enum SystemMsg {
    /// Stop after the message in hand; what is queued is dropped (and counted).
    Stop(StopReason),
    /// Handle what is queued (the mailbox already refuses new user messages), then stop.
    Drain(StopReason),
    /// A supervisor takes the instance down (its `stopped` runs); messages keep queuing.
    /// The token is dropped once that is done (or the actor is gone).
    Suspend(Option<Done>),
    /// A supervisor brings a suspended actor back with a fresh instance; the token is
    /// dropped once its `started` has run (or the actor is gone).
    Restart(Option<Done>),
    Watch(Arc<dyn Watcher>),
    Terminated(ActorId, StopReason),
    Registered(String),
    /// Timers of the actor fired (they wait in its timer table's fired list).
    TimersFired,
}

/// Dropped when a step that a supervisor waits for is over, whichever way.
pub(crate) type Done = Box<dyn Send>;

/// How many messages of a batch run between two looks for a control message (a kill
/// overtakes the rest of a batch after at most this many more messages).
const CONTROL_LOOK_EVERY: usize = 8;

/// Where a supervised child reports that its instance failed.
pub(crate) trait SupervisorLink: Send + Sync + 'static {
    /// The child `id` lost its instance (a panic); it is suspended until told to restart.
    /// Returns false if the supervisor is gone (the child then stops for good).
    fn child_failed(&self, id: ActorId, reason: StopReason) -> bool;
}

/// Something that wants to hear when an actor stops.
pub(crate) trait Watcher: Send + Sync + 'static {
    fn notify_stopped(self: Arc<Self>, id: ActorId, reason: StopReason);
}

/// A factory, and who decides on restarts: the actor itself by a policy (with the record of
/// recent restarts), or a supervisor.
struct Restart<A> {
    factory: Box<dyn FnMut() -> A + Send>,
    decides: Decides,
    recent: VecDeque<Instant>,
}

enum Decides {
    Policy(RestartPolicy),
    Supervisor(Arc<dyn SupervisorLink>),
}

impl<A> Restart<A> {
    fn allow(&mut self, now: Instant) -> bool {
        let Decides::Policy(policy) = &self.decides else {
            return false;
        };
        let policy = *policy;
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.within)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// What only the worker running the actor touches.
struct RunState<A: Actor> {
    actor: Option<A>,
    batch: VecDeque<A::Msg>,
    started: bool,
    watchers: Vec<Arc<dyn Watcher>>,
    names: Vec<String>,
    /// Boxed: most actors are not supervised, and each spawned actor's size counts.
    restart: Option<Box<Restart<A>>>,
    /// Set by a draining stop: stop with this reason once the mailbox is empty (boxed: a
    /// rare state, and each spawned actor's size counts).
    draining: Option<Box<StopReason>>,
    /// The instance is gone until a supervisor restarts it; messages wait.
    suspended: bool,
}

pub(crate) struct ActorCell<A: Actor> {
    pub(crate) id: ActorId,
    /// How far below a top-level actor it was spawned (children stop before parents).
    pub(crate) depth: u32,
    /// Whether a supervisor decides on its restarts.
    supervised: bool,
    /// Whether its instance is down, waiting for a restart (a copy of the run state's flag,
    /// for the shutdown's look at who still has work).
    waiting_restart: AtomicBool,
    sched: SchedState,
    mailbox: Mailbox<A::Msg, SystemMsg>,
    pub(crate) system: Arc<SystemInner>,
    /// The slot in the system's table of live actors (set once, right after the cell is
    /// made and before anyone else can see it).
    live_key: AtomicUsize,
    /// How many messages the actor has started handling: lets a pool tell an instance that is
    /// making progress from one stuck in a long handler.
    started_msgs: AtomicU64,
    /// Set once, just before the mailbox closes: what a late watcher is told.
    stop_reason: Mutex<Option<StopReason>>,
    /// Pending timers (boxed on first use: most actors set none). Messages never take this
    /// lock; setting, firing and cancelling a timer do.
    timers: SpinLock<Option<Box<ActorTimers<A::Msg>>>>,
    run: UnsafeCell<RunState<A>>,
    /// 1 if its turns run on a thread of its own instead of the workers (see `blocking`).
    /// A byte in the padding beside `sched`, where a pointer would grow every cell; a `u8`,
    /// not a `bool`, so that it offers no niche and leaves the layout of the hot fields as it
    /// was.
    dedicated: u8,
}

// SAFETY: `run` is only touched by the thread that moved `sched` to RUNNING (see `run_turn`),
// and the actor and its messages are `Send`; everything else is thread-safe on its own.
unsafe impl<A: Actor> Sync for ActorCell<A> {}

impl<A: Actor> ActorCell<A> {
    fn new(
        id: ActorId,
        actor: A,
        system: Arc<SystemInner>,
        capacity: usize,
        depth: u32,
        restart: Option<(Box<dyn FnMut() -> A + Send>, Decides)>,
    ) -> ActorCell<A> {
        ActorCell {
            id,
            depth,
            supervised: matches!(restart, Some((_, Decides::Supervisor(_)))),
            waiting_restart: AtomicBool::new(false),
            sched: SchedState::new(),
            mailbox: Mailbox::new(capacity),
            system,
            live_key: AtomicUsize::new(usize::MAX),
            started_msgs: AtomicU64::new(0),
            stop_reason: Mutex::new(None),
            timers: SpinLock::new(None),
            run: UnsafeCell::new(RunState {
                actor: Some(actor),
                batch: VecDeque::new(),
                started: false,
                watchers: Vec::new(),
                names: Vec::new(),
                restart: restart.map(|(factory, decides)| {
                    Box::new(Restart {
                        factory,
                        decides,
                        recent: VecDeque::new(),
                    })
                }),
                draining: None,
                suspended: false,
            }),
            dedicated: 0,
        }
    }

    /// Runs the actor's turns on a thread of its own (set before the cell is shared).
    fn with_dedicated(mut self, dedicated: bool) -> ActorCell<A> {
        self.dedicated = u8::from(dedicated);
        self
    }

    /// Queues the actor's next turn: on the workers, or on its own thread (as `notify`).
    #[inline]
    fn schedule_turn(&self) {
        if self.dedicated != 0 {
            self.system.blocking.schedule_dedicated(self.id);
        } else {
            self.system.sched.schedule(Task::of_dyn(self));
        }
    }

    /// Records a name registered before the actor was first scheduled (it is freed when the
    /// actor stops), without scheduling it.
    pub(crate) fn note_registered(&self, name: &str) {
        let _ = self
            .mailbox
            .push_system(SystemMsg::Registered(name.to_owned()));
    }

    pub(crate) fn set_live_key(&self, key: usize) {
        self.live_key.store(key, Ordering::Relaxed);
    }

    /// Queues the actor for a worker if this notification made it runnable.
    #[inline]
    pub(crate) fn notify(self: &Arc<Self>) {
        if self.sched.notify() {
            if self.dedicated != 0 {
                self.system.blocking.schedule_dedicated(self.id);
            } else {
                self.system.sched.schedule(Task::of(self));
            }
        }
    }

    #[inline]
    pub(crate) fn push_user(
        self: &Arc<Self>,
        msg: A::Msg,
        force: bool,
    ) -> Result<(), PushError<A::Msg>> {
        if let Err(e) = self.mailbox.push(msg, force) {
            if matches!(e, PushError::Full(_)) {
                self.refused_full();
            }
            return Err(e);
        }
        self.notify();
        Ok(())
    }

    /// A send refused because the mailbox was full: counted (and traced).
    #[cold]
    fn refused_full(&self) {
        self.system.count_refused_full();
        trace_event!(
            DEBUG,
            actor = self.id.0,
            actor_type = std::any::type_name::<A>(),
            "send refused: mailbox full"
        );
    }

    pub(crate) fn push_system(self: &Arc<Self>, msg: SystemMsg) -> Result<(), SystemMsg> {
        self.mailbox.push_system(msg)?;
        self.notify();
        Ok(())
    }

    pub(crate) fn mailbox_len(&self) -> usize {
        self.mailbox.len()
    }

    /// Queued messages plus one if a worker is running the actor: what a pool compares to
    /// find a free instance (one that is only queued will run without waiting for a handler).
    pub(crate) fn load(&self) -> usize {
        self.mailbox.len() + usize::from(self.sched.is_running())
    }

    /// Messages started so far (see `started_msgs`).
    pub(crate) fn started_msgs(&self) -> u64 {
        self.started_msgs.load(Ordering::Relaxed)
    }

    fn with_context(
        self: &Arc<Self>,
        st: &mut RunState<A>,
        stop: &mut Option<StopReason>,
        f: impl FnOnce(&mut A, &mut Context<'_, A>),
    ) {
        let Some(actor) = st.actor.as_mut() else {
            return;
        };
        let mut ctx = Context {
            cell: self,
            stop,
            batch: &mut st.batch,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| f(actor, &mut ctx)));
        if let Err(payload) = outcome {
            self.on_panic(st, stop, panic_message(payload.as_ref()));
        } else if stop.is_some()
            && self.supervised
            && matches!(stop, Some(StopReason::RestartLimit(_)))
        {
            // A supervised supervisor gave up (`Context::fail`): its parent decides.
            let reason = stop.take().expect("matched");
            self.on_failure(st, stop, reason);
        }
    }

    /// A handler panicked.
    fn on_panic(
        self: &Arc<Self>,
        st: &mut RunState<A>,
        stop: &mut Option<StopReason>,
        msg: String,
    ) {
        trace_event!(
            WARN,
            actor = self.id.0,
            actor_type = std::any::type_name::<A>(),
            panic = %msg,
            "handler panicked"
        );
        self.on_failure(st, stop, StopReason::Panicked(msg));
    }

    /// The instance failed (a panic, or a supervisor child giving up): restart in place if
    /// the policy allows, hand the decision to the supervisor, or stop.
    fn on_failure(
        self: &Arc<Self>,
        st: &mut RunState<A>,
        stop: &mut Option<StopReason>,
        reason: StopReason,
    ) {
        let Some(restart) = st.restart.as_mut() else {
            *stop = Some(reason);
            return;
        };
        if let Decides::Supervisor(link) = &restart.decides {
            let link = link.clone();
            self.suspend(st, stop);
            if !link.child_failed(self.id, reason.clone()) {
                *stop = Some(reason);
            }
            return;
        }
        if !restart.allow(Instant::now()) {
            let msg = match reason {
                StopReason::Panicked(m) | StopReason::RestartLimit(m) => m,
                other => other.to_string(),
            };
            *stop = Some(StopReason::RestartLimit(msg));
            return;
        }
        self.suspend(st, stop);
        self.restart(st, stop);
    }

    /// Takes the instance down for a restart: its `stopped` runs (it may find its state
    /// broken by a panic), then it is dropped. The messages of the interrupted batch go back
    /// to the front of the mailbox, for the next instance.
    fn suspend(self: &Arc<Self>, st: &mut RunState<A>, stop: &mut Option<StopReason>) {
        if st.suspended {
            return;
        }
        st.suspended = true;
        self.waiting_restart.store(true, Ordering::Release);
        // The instance's timers go with it (the next one sets its own in `started`).
        self.drop_timers(true);
        if let Some(mut actor) = st.actor.take() {
            let mut ignored = None;
            let mut ctx = Context {
                cell: self,
                stop: &mut ignored,
                batch: &mut st.batch,
            };
            let _ = catch_unwind(AssertUnwindSafe(|| actor.stopped(&mut ctx)));
            let _ = catch_unwind(AssertUnwindSafe(move || drop(actor)));
        }
        if !st.batch.is_empty() {
            let batch = std::mem::take(&mut st.batch);
            if !self.mailbox.push_front_batch_map(batch.into_iter(), |m| m) {
                *stop = Some(StopReason::Normal);
            }
        }
        // This turn must look at the mailbox again before going idle.
        self.sched.notify();
    }

    /// Brings a suspended actor back: a fresh instance from the factory runs `started`, and
    /// the layer above (the runtime) re-announces what the actor owns, in front of what is
    /// queued.
    fn restart(self: &Arc<Self>, st: &mut RunState<A>, stop: &mut Option<StopReason>) {
        if !st.suspended {
            return;
        }
        let Some(restart) = st.restart.as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| (restart.factory)())) {
            Ok(actor) => {
                st.actor = Some(actor);
                st.suspended = false;
                self.waiting_restart.store(false, Ordering::Release);
                // What waited while it was suspended is taken before this turn goes idle.
                self.sched.notify();
                self.system.actor_restarted(self.id);
                self.with_context(st, stop, |a, ctx| a.started(ctx));
            }
            Err(p) => *stop = Some(StopReason::Panicked(panic_message(p.as_ref()))),
        }
    }

    fn on_system(
        self: &Arc<Self>,
        st: &mut RunState<A>,
        msg: SystemMsg,
        stop: &mut Option<StopReason>,
    ) {
        match msg {
            SystemMsg::Stop(reason) => *stop = Some(reason),
            SystemMsg::Drain(reason) => {
                if st.draining.is_none() {
                    st.draining = Some(Box::new(reason));
                }
            }
            SystemMsg::Suspend(done) => {
                self.suspend(st, stop);
                drop(done);
            }
            SystemMsg::Restart(done) => {
                self.restart(st, stop);
                drop(done);
            }
            SystemMsg::Watch(w) => st.watchers.push(w),
            SystemMsg::Registered(name) => st.names.push(name),
            SystemMsg::Terminated(id, reason) => {
                self.with_context(st, stop, |a, ctx| a.watched_stopped(id, &reason, ctx))
            }
            SystemMsg::TimersFired => self.on_timers(st, stop),
        }
    }

    /// Timers fired: handle the message of each that is still pending, in the order fired (an
    /// interval is armed for its next tick first). Each is taken out under the lock just
    /// before its handler runs, so a cancel made by an earlier handler still wins.
    fn on_timers(self: &Arc<Self>, st: &mut RunState<A>, stop: &mut Option<StopReason>) {
        while stop.is_none() {
            if !self.next_timer(st, stop) {
                return;
            }
        }
    }

    /// Handles the next fired timer, if any; returns false when there was none.
    fn next_timer(self: &Arc<Self>, st: &mut RunState<A>, stop: &mut Option<StopReason>) -> bool {
        let (fired, id, slot) = {
            let mut timers = self.timers.lock();
            let Some(t) = timers.as_mut() else {
                return false;
            };
            let Some((slot, wheel)) = t.pop_fired() else {
                return false;
            };
            let fired = t.fire(slot, wheel, || self.system.sched.now());
            let mut id = None;
            if matches!(fired, Some(Fired::Make(_))) {
                let at = t.interval_due(slot).expect("the interval is pending");
                self.arm(t, slot, at, &self.timer_target());
                id = Some(t.id(slot));
            }
            (fired, id, slot)
        };
        match fired {
            None => {}
            Some(Fired::Msg(msg)) => {
                count_started(&self.started_msgs);
                self.with_context(st, stop, |a, ctx| a.handle(msg, ctx));
            }
            Some(Fired::Make(mut make)) => {
                self.with_context(st, stop, |a, ctx| {
                    let msg = make();
                    count_started(&ctx.cell.started_msgs);
                    a.handle(msg, ctx);
                });
                let id = id.expect("an interval has an id");
                let mut timers = self.timers.lock();
                let unused = match timers.as_mut() {
                    Some(t) => t.give_back(slot, id, make),
                    None => Some(make),
                };
                // A maker no longer wanted is dropped outside the lock.
                drop(timers);
                drop(unused);
            }
        }
        true
    }

    /// What the wheel and the handles hold of this cell: a weak reference.
    fn timer_target(self: &Arc<Self>) -> ActorTimerRef {
        Arc::downgrade(self) as Weak<dyn TimerTarget>
    }

    /// Sets the wheel entry of timer `slot` due at scheduler time `at` and records it: in
    /// this worker's actor wheel (or the test kit's queue), or, outside the pool, as a
    /// closure timer on the workers in turn.
    fn arm(
        self: &Arc<Self>,
        t: &mut ActorTimers<A::Msg>,
        slot: u32,
        at: Duration,
        target: &ActorTimerRef,
    ) {
        let sched = &self.system.sched;
        let wheel = match sched.set_actor_timer(at, target.clone(), slot) {
            Some(wheel) => wheel,
            None => {
                let id = t.outside_id();
                let cell = Arc::downgrade(self);
                let _ = sched.run_at(
                    at,
                    Box::new(move || {
                        if let Some(cell) = cell.upgrade() {
                            cell.timers_due(&mut std::iter::once((slot, id)));
                        }
                    }),
                );
                id
            }
        };
        t.set_wheel(slot, wheel);
    }

    /// Sets a one-shot timer delivering `msg` at scheduler time `at` (zero: at once).
    pub(crate) fn set_timer(self: &Arc<Self>, at: Duration, msg: A::Msg) -> TimerHandle {
        let mut timers = self.timers.lock();
        // Checked under the lock: `drop_timers` (after the mailbox closes) takes the table
        // under it too, so a timer added here is either refused or dropped there.
        if self.mailbox.refuses_users() {
            drop(timers);
            drop(msg);
            return TimerHandle::inert();
        }
        let t = timers.get_or_insert_with(Box::default);
        let slot = t.add_once(msg);
        let target = self.timer_target();
        self.arm(t, slot, at, &target);
        let id = t.id(slot);
        drop(timers);
        timer::handle(target, slot, id)
    }

    /// Sets an interval whose ticks `make` the message, the first one `period` from now.
    pub(crate) fn set_interval(
        self: &Arc<Self>,
        period: Duration,
        make: Box<dyn FnMut() -> A::Msg + Send>,
    ) -> TimerHandle {
        assert!(!period.is_zero(), "an interval's period must not be zero");
        let start = self.system.sched.now();
        let mut timers = self.timers.lock();
        if self.mailbox.refuses_users() {
            drop(timers);
            drop(make);
            return TimerHandle::inert();
        }
        let t = timers.get_or_insert_with(Box::default);
        let slot = t.add_interval(make, start, period);
        let at = t.interval_due(slot).expect("just added");
        let target = self.timer_target();
        self.arm(t, slot, at, &target);
        let id = t.id(slot);
        drop(timers);
        timer::handle(target, slot, id)
    }

    /// Drops every pending timer (the actor stops or restarts) and takes their entries out
    /// of the wheels. `count`: whether timer messages that came due and were not handled
    /// count as dropped (not at the end of a drain: one coming due then came after the stop,
    /// like a send the draining mailbox refuses).
    fn drop_timers(&self, count: bool) {
        let table = self.timers.lock().take();
        if let Some(table) = table {
            for wheel in table.wheel_entries() {
                self.system.sched.cancel_wheel(wheel);
            }
            let pending = table.due_unhandled();
            if count && pending > 0 {
                self.system.count_timers_dropped(pending);
            }
            // Their messages are dropped here, outside the lock.
            drop(table);
        }
    }

    /// Handles the control messages waiting, until one stops the actor.
    fn handle_system(self: &Arc<Self>, st: &mut RunState<A>, stop: &mut Option<StopReason>) {
        while stop.is_none() {
            match self.mailbox.pop_system() {
                Some(msg) => self.on_system(st, msg, stop),
                None => break,
            }
        }
    }

    /// One turn: system messages first, then up to `budget` user messages. Returns true if
    /// messages are left and the actor must be queued again.
    fn turn(self: &Arc<Self>, budget: usize) -> Turn {
        self.sched.start_run();
        // SAFETY: the state is RUNNING, set by this thread; no other thread touches `run`
        // until this turn ends by leaving RUNNING (try_idle / reschedule) or never (stopped).
        let st = self.run.with_mut(|p| unsafe { &mut *p });
        let _span = turn_span!(
            self.id,
            std::any::type_name::<A>(),
            st.names.first().map(String::as_str),
            &self.started_msgs
        );
        let mut stop: Option<StopReason> = None;
        if !st.started {
            st.started = true;
            self.with_context(st, &mut stop, |a, ctx| a.started(ctx));
        }
        let mut handled = 0;
        loop {
            // A suspended actor takes only system messages; user messages wait for the next
            // instance.
            let (system_waiting, drained) = if st.suspended {
                (self.mailbox.has_system(), true)
            } else {
                self.mailbox.take_batch(&mut st.batch, budget - handled)
            };
            if system_waiting {
                self.handle_system(st, &mut stop);
            }
            while stop.is_none() && !st.suspended {
                let Some(msg) = st.batch.pop_front() else {
                    break;
                };
                handled += 1;
                count_started(&self.started_msgs);
                self.with_context(st, &mut stop, |a, ctx| a.handle(msg, ctx));
                // A control message (a kill, a supervisor's order) overtakes the rest of the
                // batch: looked for every few messages (the flag shares a cache line with the
                // senders' lock, so a look per message would cost a miss per message under
                // contention); after the batch's last message the next look at the mailbox
                // finds it anyway.
                if handled % CONTROL_LOOK_EVERY == 0
                    && !st.batch.is_empty()
                    && self.mailbox.system_waiting()
                {
                    self.handle_system(st, &mut stop);
                }
            }
            // A suspended actor drains once restarted (its supervisor's restart is pending
            // work like any message); a shutdown's deadline stops it otherwise.
            if stop.is_none()
                && st.draining.is_some()
                && !st.suspended
                && st.batch.is_empty()
                && self.mailbox.drained()
            {
                let reason = st.draining.take().map_or(StopReason::Normal, |r| *r);
                return Turn::Finished(self.finish(st, reason, true));
            }
            if let Some(reason) = stop.take() {
                return Turn::Finished(self.finish(st, reason, false));
            }
            if !drained {
                // The budget cut the batch short: let others run, come back later.
                self.sched.reschedule();
                return Turn::Again;
            }
            // Everything queued was taken. A message pushed since then found the state
            // RUNNING and turned it NOTIFIED, which makes `try_idle` fail: no second look at
            // the mailbox is needed to go idle safely.
            if self.sched.try_idle() {
                return Turn::Done;
            }
            if handled >= budget {
                self.sched.reschedule();
                return Turn::Again;
            }
        }
    }

    /// Stops for good: refuse new messages, free names, run `stopped`, tell watchers.
    /// Returns the system's reference to this cell, which the worker drops after the turn.
    /// `drained`: it stops at the end of a drain (nothing it had accepted is left).
    fn finish(
        self: &Arc<Self>,
        st: &mut RunState<A>,
        reason: StopReason,
        drained: bool,
    ) -> Arc<dyn Runnable> {
        *self.stop_reason.lock().unwrap() = Some(reason.clone());
        // Its counts stay in the system's metrics once it has left the live table.
        self.system
            .retire_counts(self.started_msgs(), self.mailbox.high_water());
        let (unhandled, system) = self.mailbox.close();
        let dropped = unhandled.len() + st.batch.len();
        if dropped > 0 {
            self.system.count_dropped(&reason, dropped);
        }
        drop(unhandled);
        st.batch.clear();
        for msg in system {
            match msg {
                SystemMsg::Watch(w) => st.watchers.push(w),
                SystemMsg::Registered(name) => st.names.push(name),
                _ => {}
            }
        }
        // After the mailbox closed: no timer can be added any more.
        self.drop_timers(!drained);
        // Names go first: a lookup must not find an actor that no longer takes messages, and
        // one that `stopped` tells of its end may want to claim the name again at once.
        for name in st.names.drain(..) {
            self.system.unregister_if(&name, self.id);
        }
        let mut ignored = None;
        self.with_context(st, &mut ignored, |a, ctx| a.stopped(ctx));
        let actor = st.actor.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(actor)));
        st.restart = None;
        for w in st.watchers.drain(..) {
            w.notify_stopped(self.id, reason.clone());
        }
        // The table's reference goes back to the worker, to be dropped after this turn (the
        // cell must outlive the code running in it); if the table no longer had it, the
        // caller's reference does the same job.
        match self
            .system
            .actor_stopped(self.live_key.load(Ordering::Relaxed))
        {
            Some(table_ref) => table_ref as Arc<dyn Runnable>,
            None => self.clone() as Arc<dyn Runnable>,
        }
    }

    /// Stops after what is queued now: new user messages are refused (handed back to their
    /// senders) from this call on.
    pub(crate) fn drain_stop(self: &Arc<Self>, reason: StopReason) {
        self.mailbox.start_draining();
        let _ = self.push_system(SystemMsg::Drain(reason));
    }

    /// Adds a watcher, or tells it at once if this actor has already stopped.
    pub(crate) fn add_watcher(self: &Arc<Self>, watcher: Arc<dyn Watcher>) {
        if let Err(SystemMsg::Watch(w)) = self.push_system(SystemMsg::Watch(watcher)) {
            let reason = self
                .stop_reason
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(StopReason::Normal);
            w.notify_stopped(self.id, reason);
        }
    }
}

impl<A: Actor> Runnable for ActorCell<A> {
    fn run_turn(&self, budget: usize, mark: &TurnMark) -> Turn {
        // SAFETY: cells only ever live in an `Arc` (see `cell::spawn`), so `self`
        // is the pointer `Arc::into_raw` would give; `ManuallyDrop` leaves the count alone.
        let this = ManuallyDrop::new(unsafe { Arc::from_raw(self as *const Self) });
        mark.begin(self.id);
        let turn = this.turn(budget);
        mark.end();
        turn
    }

    fn actor_id(&self) -> ActorId {
        self.id
    }

    #[cfg(feature = "testkit")]
    fn info(&self) -> super::scheduler::TaskInfo {
        super::scheduler::TaskInfo {
            id: self.id,
            type_name: std::any::type_name::<A>(),
            started_msgs: self.started_msgs(),
        }
    }
}

/// Counts a message started (only the thread running the actor writes it: no
/// read-modify-write).
fn count_started(started: &AtomicU64) {
    let n = started.load(Ordering::Relaxed);
    started.store(n.wrapping_add(1), Ordering::Relaxed);
}

impl<A: Actor> TimerTarget for ActorCell<A> {
    fn timers_due(self: Arc<Self>, due: &mut dyn Iterator<Item = (u32, WheelRef)>) {
        let tell = self
            .timers
            .lock()
            .as_mut()
            .is_some_and(|t| t.push_fired(due));
        if tell {
            let _ = self.push_system(SystemMsg::TimersFired);
        }
    }

    fn cancel_timer(&self, slot: u32, id: WheelRef) -> bool {
        let cancelled = self.timers.lock().as_mut().and_then(|t| t.cancel(slot, id));
        // The lock is released: the message is dropped here, and the wheel entry goes too.
        match cancelled {
            Some(c) => {
                self.system.sched.cancel_wheel(c.wheel);
                true
            }
            None => false,
        }
    }
}

impl<A: Actor> Watcher for ActorCell<A> {
    fn notify_stopped(self: Arc<Self>, id: ActorId, reason: StopReason) {
        let _ = self.push_system(SystemMsg::Terminated(id, reason));
    }
}

impl<A: Actor> Stoppable for ActorCell<A> {
    fn request_stop(self: Arc<Self>, reason: StopReason, drain: bool) {
        if drain {
            self.drain_stop(reason);
        } else {
            let _ = self.push_system(SystemMsg::Stop(reason));
        }
    }

    fn depth(&self) -> u32 {
        self.depth
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<A>()
    }

    fn counts(&self) -> (u64, usize, usize) {
        (
            self.started_msgs(),
            self.mailbox.len(),
            self.mailbox.high_water(),
        )
    }

    fn idle_and_empty(&self) -> (bool, u64) {
        (
            self.sched.is_idle()
                && self.mailbox.len() == 0
                && !self.waiting_restart.load(Ordering::Acquire),
            self.started_msgs(),
        )
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The address of an actor: cheap to clone, `Send`, usable from any thread.
pub struct Addr<A: Actor> {
    pub(crate) cell: Arc<ActorCell<A>>,
}

impl<A: Actor> Clone for Addr<A> {
    fn clone(&self) -> Addr<A> {
        Addr {
            cell: self.cell.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for Addr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({})", self.cell.id)
    }
}

impl<A: Actor> PartialEq for Addr<A> {
    fn eq(&self, other: &Addr<A>) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<A: Actor> Eq for Addr<A> {}

impl<A: Actor> Addr<A> {
    /// Queues a message. Never blocks.
    ///
    /// # Errors
    /// The message is handed back: [`TrySendError::Full`] if the actor was spawned with a
    /// mailbox capacity and it is reached, [`TrySendError::Closed`] if the actor has stopped.
    #[inline]
    pub fn send(&self, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        self.cell.push_user(msg, false).map_err(|e| match e {
            PushError::Full(m) => TrySendError::Full(m),
            PushError::Closed(m) => TrySendError::Closed(m),
        })
    }

    /// Delivers `msg` after `delay`: a one-shot timer on a worker's timing wheel (no thread
    /// per timer), never early, usually within a millisecond after it is due. Callable from
    /// any thread; a timer set outside the workers goes to them in turn. Returns the handle
    /// that cancels it ([`TimerHandle::cancel`]: a cancel that returns `true` means the
    /// message is never delivered). If the actor stops first, the message is dropped with
    /// it; the timer does not keep the actor alive.
    ///
    /// The message arrives as a system notice and is handled before the user messages
    /// already queued, past any mailbox capacity.
    pub fn send_after(&self, delay: Duration, msg: A::Msg) -> TimerHandle {
        self.cell.set_timer(timer_at(&self.cell.system, delay), msg)
    }

    /// Stops the actor gracefully: from this call on its mailbox refuses new messages
    /// (senders get them back as [`TrySendError::Closed`]); the actor handles everything
    /// queued before, then stops with [`StopReason::Normal`]. Nothing is dropped.
    ///
    /// To stop without handling what is queued, dropping it, use [`Addr::kill`].
    pub fn stop(&self) {
        self.cell.drain_stop(StopReason::Normal);
    }

    /// Stops the actor soon, with [`StopReason::Normal`], without handling what is queued: the
    /// kill overtakes the queue, and the actor stops after the message in hand (or, in the
    /// middle of a batch of queued messages, after at most 8 more: a worker looks for control
    /// messages every 8 messages). Messages still queued are dropped and counted in
    /// [`DroppedMessages::killed`](super::DroppedMessages::killed).
    pub fn kill(&self) {
        let _ = self.cell.push_system(SystemMsg::Stop(StopReason::Normal));
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.cell.id
    }

    /// Whether the actor still accepts messages (false once it stops or drains to stop).
    pub fn is_alive(&self) -> bool {
        !self.cell.mailbox.refuses_users()
    }

    /// Messages waiting in its mailbox.
    pub fn mailbox_len(&self) -> usize {
        self.cell.mailbox_len()
    }

    /// A type-erased handle that accepts any `M` the actor's message type converts from
    /// (for example [`NetEvent`](crate::NetEvent) for socket owners).
    pub fn recipient<M: Send + 'static>(&self) -> Recipient<M>
    where
        A::Msg: From<M>,
    {
        Recipient::actor(self.cell.clone())
    }
}

impl<A: Actor, M: Send + 'static> From<Addr<A>> for Recipient<M>
where
    A::Msg: From<M>,
{
    fn from(addr: Addr<A>) -> Recipient<M> {
        Recipient::actor(addr.cell)
    }
}

impl<A: Actor, M: Send + 'static> From<&Addr<A>> for Recipient<M>
where
    A::Msg: From<M>,
{
    fn from(addr: &Addr<A>) -> Recipient<M> {
        addr.recipient()
    }
}

/// Delivery of `M` into some actor whose message type converts from it. The methods only
/// queue; they return whether the caller must schedule the actor (see [`Recipient`]).
pub(crate) trait Deliver<M>: Runnable {
    fn deliver(&self, msg: M, force: bool) -> Result<bool, TrySendError<M>>;
    /// Queues all of `msgs` under one lock (the batch is drained). `None` if the actor stopped.
    /// Returns whether to schedule the actor and how many messages wait now; `None` if the
    /// actor has stopped.
    fn deliver_batch(&self, msgs: &mut Vec<M>) -> Option<(bool, usize)>;
    /// Queues `msgs` in front of what waits. Returns whether to schedule the actor; `None`
    /// if it has stopped.
    fn deliver_front(&self, msgs: Vec<M>) -> Option<bool>;
    /// Queues the actor's turn (after `deliver` or `deliver_batch` said so).
    fn schedule(&self);
    fn alive(&self) -> bool;
    fn queued(&self) -> usize;
    fn system(&self) -> &Arc<SystemInner>;
}

impl<A: Actor, M: Send + 'static> Deliver<M> for ActorCell<A>
where
    A::Msg: From<M>,
{
    fn deliver(&self, msg: M, force: bool) -> Result<bool, TrySendError<M>> {
        self.mailbox
            .push_map(msg, A::Msg::from, force)
            .map_err(|e| match e {
                PushError::Full(m) => {
                    self.refused_full();
                    TrySendError::Full(m)
                }
                PushError::Closed(m) => TrySendError::Closed(m),
            })?;
        Ok(self.sched.notify())
    }

    fn deliver_batch(&self, msgs: &mut Vec<M>) -> Option<(bool, usize)> {
        let waiting = self.mailbox.push_batch_map(msgs, A::Msg::from)?;
        Some((self.sched.notify(), waiting))
    }

    fn deliver_front(&self, msgs: Vec<M>) -> Option<bool> {
        self.mailbox
            .push_front_batch_map(msgs.into_iter(), A::Msg::from)
            .then(|| self.sched.notify())
    }

    fn schedule(&self) {
        self.schedule_turn();
    }

    fn alive(&self) -> bool {
        !self.mailbox.refuses_users()
    }

    fn queued(&self) -> usize {
        self.mailbox.len()
    }

    fn system(&self) -> &Arc<SystemInner> {
        &self.system
    }
}

/// A type-erased address that accepts messages of type `M`: any actor whose message type
/// converts from `M`, or a router in front of several (see [`Pool::socket_owner`]). Cheap to
/// clone, `Send`.
///
/// [`Pool::socket_owner`]: super::Pool::socket_owner
pub struct Recipient<M: Send + 'static> {
    target: Target<M>,
}

enum Target<M: Send + 'static> {
    Actor(Arc<dyn Deliver<M>>),
    Routed(Arc<dyn Route<M>>),
}

/// Something that forwards each message to one of several actors.
pub(crate) trait Route<M>: Send + Sync + 'static {
    fn route(&self, msg: M, force: bool) -> Result<(), TrySendError<M>>;
    /// The id it is known by (its first actor's).
    fn id(&self) -> ActorId;
    fn alive(&self) -> bool;
    fn queued(&self) -> usize;
    /// The system of the actors it routes to.
    fn system(&self) -> &Arc<SystemInner>;
}

impl<M: Send + 'static> Clone for Recipient<M> {
    fn clone(&self) -> Recipient<M> {
        let target = match &self.target {
            Target::Actor(a) => Target::Actor(a.clone()),
            Target::Routed(r) => Target::Routed(r.clone()),
        };
        Recipient { target }
    }
}

impl<M: Send + 'static> fmt::Debug for Recipient<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.id())
    }
}

impl<M: Send + 'static> Recipient<M> {
    pub(crate) fn actor(inner: Arc<dyn Deliver<M>>) -> Recipient<M> {
        Recipient {
            target: Target::Actor(inner),
        }
    }

    pub(crate) fn routed(route: Arc<dyn Route<M>>) -> Recipient<M> {
        Recipient {
            target: Target::Routed(route),
        }
    }

    /// Queues a message.
    ///
    /// # Errors
    /// As [`Addr::send`]; the message is handed back.
    pub fn send(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.deliver(msg, false)
    }

    /// The id of the actor behind it (of a router: its first actor).
    pub fn id(&self) -> ActorId {
        match &self.target {
            Target::Actor(a) => a.actor_id(),
            Target::Routed(r) => r.id(),
        }
    }

    /// Whether the actor (for a router: any of its actors) still accepts messages.
    pub fn is_alive(&self) -> bool {
        match &self.target {
            Target::Actor(a) => a.alive(),
            Target::Routed(r) => r.alive(),
        }
    }

    /// Messages waiting in the actor's mailbox (for a router: in all of them).
    pub fn mailbox_len(&self) -> usize {
        match &self.target {
            Target::Actor(a) => a.queued(),
            Target::Routed(r) => r.queued(),
        }
    }

    fn deliver(&self, msg: M, force: bool) -> Result<(), TrySendError<M>> {
        match &self.target {
            Target::Actor(a) => {
                if a.deliver(msg, force)? {
                    a.schedule();
                }
                Ok(())
            }
            Target::Routed(r) => r.route(msg, force),
        }
    }

    /// The id of the actor behind it, if it is one actor (not a router).
    pub(crate) fn direct_actor(&self) -> Option<ActorId> {
        match &self.target {
            Target::Actor(a) => Some(a.actor_id()),
            Target::Routed(_) => None,
        }
    }

    /// Queues `msgs` in front of what waits in the actor's mailbox (a router: nothing).
    pub(crate) fn deliver_front(&self, msgs: Vec<M>) {
        if let Target::Actor(a) = &self.target
            && a.deliver_front(msgs) == Some(true)
        {
            a.schedule();
        }
    }

    /// The system of the actor behind it.
    pub(crate) fn system(&self) -> &Arc<SystemInner> {
        match &self.target {
            Target::Actor(a) => a.system(),
            Target::Routed(r) => r.system(),
        }
    }

    /// Queues past the mailbox capacity (network events: their back-pressure is the
    /// socket's own limits).
    pub(crate) fn force(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.deliver(msg, true)
    }

    /// Queues a batch (under one lock, for an actor). Returns how many messages wait now, or
    /// `None` if the actor has stopped. Messages refused are left in `msgs` (for the caller
    /// to drop where it chooses: a message's destructor may need locks the caller holds).
    pub(crate) fn deliver_batch(&self, msgs: &mut Vec<M>) -> Option<usize> {
        match &self.target {
            Target::Actor(a) => {
                let (schedule, waiting) = a.deliver_batch(msgs)?;
                if schedule {
                    a.schedule();
                }
                Some(waiting)
            }
            Target::Routed(r) => {
                let mut refused = Vec::new();
                for m in msgs.drain(..) {
                    if let Err(e) = r.route(m, true) {
                        refused.push(e.into_inner());
                    }
                }
                let all = refused.is_empty();
                msgs.append(&mut refused);
                all.then(|| r.queued())
            }
        }
    }
}

/// What a handler can do besides handling: its own address, stopping, spawning, watching.
pub struct Context<'a, A: Actor> {
    pub(super) cell: &'a Arc<ActorCell<A>>,
    pub(super) stop: &'a mut Option<StopReason>,
    /// The rest of the batch being handled (taken from the mailbox, not handled yet).
    pub(super) batch: &'a mut VecDeque<A::Msg>,
}

impl<A: Actor> Context<'_, A> {
    /// Takes out of this actor's queue (the rest of the batch in hand, then the mailbox) the
    /// messages that `pick` accepts, in order; `pick` hands back the others, which stay in
    /// place. For a hand-off that moves what is queued along with what it concerns.
    pub(crate) fn take_queued<T>(
        &mut self,
        mut pick: impl FnMut(A::Msg) -> Result<T, A::Msg>,
    ) -> Vec<T> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.batch.len());
        for msg in self.batch.drain(..) {
            match pick(msg) {
                Ok(t) => taken.push(t),
                Err(msg) => kept.push_back(msg),
            }
        }
        *self.batch = kept;
        self.cell.mailbox.take_where(&mut pick, &mut taken);
        taken
    }

    /// This actor's address.
    pub fn addr(&self) -> Addr<A> {
        Addr {
            cell: self.cell.clone(),
        }
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.cell.id
    }

    /// Stops this actor once the current handler returns ([`StopReason::Normal`]); messages
    /// still queued are dropped (and counted, as by [`Addr::kill`]). To handle them first,
    /// call [`Addr::stop`] on [`Context::addr`].
    pub fn stop(&mut self) {
        if self.stop.is_none() {
            *self.stop = Some(StopReason::Normal);
        }
    }

    /// The system this actor runs in.
    pub fn system(&self) -> SystemHandle {
        SystemHandle {
            inner: self.cell.system.clone(),
        }
    }

    /// Spawns another actor in the same system, as a child of this one: at shutdown it is
    /// stopped before this actor.
    pub fn spawn<B: Actor>(&self, actor: B) -> Addr<B> {
        let placement = Placement {
            depth: self.cell.depth + 1,
            ..Placement::default()
        };
        spawn(&self.cell.system, actor, Supervision::None, placement)
            .unwrap_or_else(|_| unreachable!("an unnamed spawn cannot fail"))
    }

    /// Watches `other`: when it stops, [`Actor::watched_stopped`] runs here with its id and
    /// reason (at once, if it has stopped already).
    pub fn watch<B: Actor>(&self, other: &Addr<B>) {
        other
            .cell
            .add_watcher(self.cell.clone() as Arc<dyn Watcher>);
    }

    /// Sends this actor `msg` after `delay` (see [`Addr::send_after`]). Returns the handle
    /// that cancels it; a cancel from this actor ([`Context::cancel_timer`]) always wins,
    /// even if the timer has fired and its notice waits in the mailbox.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::{Actor, Context, System, TimerHandle};
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// /// Says "idle" if no message comes within 50 ms of the last one.
    /// struct Session {
    ///     idle: Option<TimerHandle>,
    ///     out: mpsc::Sender<&'static str>,
    /// }
    ///
    /// enum Msg {
    ///     Data,
    ///     Idle,
    /// }
    ///
    /// impl Actor for Session {
    ///     type Msg = Msg;
    ///     fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
    ///         match msg {
    ///             Msg::Data => {
    ///                 if let Some(old) = self.idle.take() {
    ///                     ctx.cancel_timer(&old);
    ///                 }
    ///                 self.idle = Some(ctx.send_self_after(Duration::from_millis(50), Msg::Idle));
    ///                 self.out.send("data").unwrap();
    ///             }
    ///             Msg::Idle => self.out.send("idle").unwrap(),
    ///         }
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(1).build()?;
    /// let (tx, rx) = mpsc::channel();
    /// let s = system.spawn(Session { idle: None, out: tx });
    /// s.send(Msg::Data).unwrap();
    /// s.send(Msg::Data).unwrap();
    /// let wait = Duration::from_secs(5);
    /// assert_eq!(rx.recv_timeout(wait).unwrap(), "data");
    /// assert_eq!(rx.recv_timeout(wait).unwrap(), "data");
    /// assert_eq!(rx.recv_timeout(wait).unwrap(), "idle"); // only one: the first was cancelled
    /// system.shutdown(wait);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_self_after(&self, delay: Duration, msg: A::Msg) -> TimerHandle {
        self.cell.set_timer(timer_at(&self.cell.system, delay), msg)
    }

    /// Delivers a message made by `make` every `period`, at fixed rate: tick `k` is due at
    /// `start + k·period` (`start` is now), so ticks do not drift however long the handler
    /// takes. A tick handled late is delivered once; ticks that fell due meanwhile are
    /// skipped, and the next one is the first of the original phase that is still ahead
    /// (no catch-up burst). Cancel it with the returned handle; it stops with the actor.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::{Actor, Context, System, TimerHandle};
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// /// A room that ticks every 10 ms and stops ticking after three.
    /// struct Room {
    ///     tick: Option<TimerHandle>,
    ///     ticks: u64,
    ///     out: mpsc::Sender<u64>,
    /// }
    ///
    /// impl Actor for Room {
    ///     type Msg = u64;
    ///     fn started(&mut self, ctx: &mut Context<Self>) {
    ///         let mut k = 0;
    ///         self.tick = Some(ctx.run_interval(Duration::from_millis(10), move || {
    ///             k += 1;
    ///             k
    ///         }));
    ///     }
    ///     fn handle(&mut self, k: u64, ctx: &mut Context<Self>) {
    ///         self.ticks += 1;
    ///         self.out.send(k).unwrap();
    ///         if self.ticks == 3 {
    ///             let cancelled = ctx.cancel_timer(self.tick.as_ref().unwrap());
    ///             assert!(cancelled); // no fourth tick will be handled
    ///         }
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(1).build()?;
    /// let (tx, rx) = mpsc::channel();
    /// system.spawn(Room { tick: None, ticks: 0, out: tx });
    /// let wait = Duration::from_secs(5);
    /// let ticks: Vec<u64> = (0..3).map(|_| rx.recv_timeout(wait).unwrap()).collect();
    /// assert_eq!(ticks, [1, 2, 3]);
    /// system.shutdown(wait);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    /// If `period` is zero.
    pub fn run_interval(
        &self,
        period: Duration,
        make: impl FnMut() -> A::Msg + Send + 'static,
    ) -> TimerHandle {
        self.cell.set_interval(period, Box::new(make))
    }

    /// Cancels a timer of this actor (or any other: it is [`TimerHandle::cancel`]). Returns
    /// `true` if it was pending; its message is then never delivered, even if the timer has
    /// already fired and its notice waits in the mailbox.
    pub fn cancel_timer(&self, timer: &TimerHandle) -> bool {
        timer.cancel()
    }

    /// Fails this actor once the current handler returns, as a panic would (its supervisor
    /// or restart policy decides), with `reason` (a `RestartLimit`).
    pub(crate) fn fail(&mut self, reason: StopReason) {
        *self.stop = Some(reason);
    }

    /// Whether a supervisor decides on this actor's restarts.
    pub(crate) fn is_supervised(&self) -> bool {
        self.cell.supervised
    }

    /// Registers this actor under `name`; the name is freed when the actor stops.
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if another actor holds it.
    pub fn register(&self, name: &str) -> Result<(), RegistryError> {
        register(&self.cell.system, name, &self.addr())
    }
}

/// The scheduler time a timer of `delay` is due at (zero: due at once).
fn timer_at(system: &SystemInner, delay: Duration) -> Duration {
    if delay.is_zero() {
        Duration::ZERO
    } else {
        system.sched.now().saturating_add(delay)
    }
}

/// How a spawned actor is supervised.
pub(crate) enum Supervision<A> {
    None,
    /// Rebuilt in place by the factory after a panic, within the policy.
    Restart(Box<dyn FnMut() -> A + Send>, RestartPolicy),
    /// Rebuilt in place by the factory when its supervisor says so.
    Supervisor(Box<dyn FnMut() -> A + Send>, Arc<dyn SupervisorLink>),
}

/// Where a spawned actor sits: its name, its mailbox capacity, its depth below a top-level
/// actor.
#[derive(Default)]
pub(crate) struct Placement<'a> {
    pub(crate) capacity: Option<usize>,
    pub(crate) name: Option<&'a str>,
    pub(crate) depth: u32,
    /// Whether its turns run on a thread of its own.
    pub(crate) dedicated: bool,
}

/// Spawns an actor into `system`; `capacity` overrides the system default, `name` registers
/// it before it can run (a taken name spawns nothing).
pub(crate) fn spawn<A: Actor>(
    system: &Arc<SystemInner>,
    actor: A,
    supervision: Supervision<A>,
    placement: Placement<'_>,
) -> Result<Addr<A>, RegistryError> {
    spawn_at(system, actor, supervision, placement, |_, _| Ok(()))
}

/// As [`spawn`], with the actor's turns run on a thread of its own if the placement says so;
/// `start` gets the cell before it is published (to start that thread) and may refuse.
pub(crate) fn spawn_at<A: Actor>(
    system: &Arc<SystemInner>,
    actor: A,
    supervision: Supervision<A>,
    placement: Placement<'_>,
    start: impl FnOnce(ActorId, Arc<dyn Runnable>) -> Result<(), RegistryError>,
) -> Result<Addr<A>, RegistryError> {
    let Placement {
        capacity,
        name,
        depth,
        dedicated,
    } = placement;
    let id = system.next_actor_id();
    let capacity = capacity.unwrap_or(system.mailbox_capacity);
    let restart = match supervision {
        Supervision::None => None,
        Supervision::Restart(factory, policy) => Some((factory, Decides::Policy(policy))),
        Supervision::Supervisor(factory, link) => Some((factory, Decides::Supervisor(link))),
    };
    // Allocate outside the live table's lock; under it, only take a slot and publish.
    let cell = Arc::new(
        ActorCell::new(id, actor, system.clone(), capacity, depth, restart)
            .with_dedicated(dedicated),
    );
    if let Some(name) = name {
        let value: Registered = (id, cell.clone() as Arc<dyn std::any::Any + Send + Sync>);
        system.claim_name(name, value)?;
        // Not scheduled yet: the note waits for the first turn.
        cell.note_registered(name);
    }
    if let Err(e) = start(id, cell.clone() as Arc<dyn Runnable>) {
        if let Some(name) = name {
            system.unregister_if(name, id);
        }
        return Err(e);
    }
    system.add_live(cell.clone() as Arc<dyn Stoppable>, |key| {
        cell.set_live_key(key)
    });
    let addr = Addr { cell };
    // Schedule the first turn, which runs `started`.
    addr.cell.notify();
    Ok(addr)
}

/// Registers `addr` under `name` until the actor stops.
pub(crate) fn register<A: Actor>(
    system: &SystemInner,
    name: &str,
    addr: &Addr<A>,
) -> Result<(), RegistryError> {
    let value: Registered = (
        addr.id(),
        addr.cell.clone() as Arc<dyn std::any::Any + Send + Sync>,
    );
    system.claim_name(name, value)?;
    // The actor frees its names when it stops; tell it this one is its own.
    if addr
        .cell
        .push_system(SystemMsg::Registered(name.to_owned()))
        .is_err()
    {
        system.unregister_if(name, addr.id());
        return Err(RegistryError::ActorStopped);
    }
    Ok(())
}

/// The actor of type `A` registered under `name`, if any.
pub(crate) fn lookup<A: Actor>(system: &SystemInner, name: &str) -> Option<Addr<A>> {
    let cell = system.lookup_any(name)?.downcast::<ActorCell<A>>().ok()?;
    Some(Addr { cell })
}
