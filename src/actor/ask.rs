//! Request/reply with a mandatory deadline.
//!
//! An ask sends a request that carries a [`ReplyTo`] and waits, without blocking anyone,
//! for exactly one outcome: the reply, or an [`AskError`] (`Timeout`, `Stopped`, `Dropped`,
//! `Full`). Three forms share one mechanism:
//!
//! - [`Context::ask`], from a handler: the outcome comes back to the asking actor as one
//!   message of its own type, built by a `map` closure;
//! - [`Addr::ask`] (and on [`Recipient`] and [`Pool`]): an [`AskFuture`], a plain
//!   `std::future::Future` that any executor can await;
//! - [`Addr::ask_blocking`]: for plain threads and tests.
//!
//! # The model
//!
//! Each ask has one reply slot, shared by the [`ReplyTo`] inside the request, the deadline
//! timer and the asker (asks made in sequence from a handler reuse one allocation). Its state
//! moves once from pending to settled, by one atomic read-modify-write; whoever makes that
//! move (a reply, the reply handle's drop, the timer, a failed send, the asker giving up) is
//! the only one that delivers an outcome, and the others do nothing. So the outcome arrives
//! exactly once whichever of them races the others, on whatever threads. The winner also cancels the deadline timer: exactly on the worker that holds it,
//! otherwise by handing the cancel to that worker (a timer that fires meanwhile finds the
//! slot settled and does nothing).
//!
//! The deadline timer lives on the system's workers (for [`Context::ask`], on the asker's
//! worker). A timer dropped unfired because the system shut down settles the ask as
//! [`AskError::Stopped`], so no ask waits past the end of its system.
//!
//! An ask made in a handler arms its deadline when its worker next looks at its timers,
//! after the current batch of turns, and only if it is still pending then: a callee on the
//! same worker usually answers within that batch, and such an ask never touches the timers.
//! So the deadline counts from the end of that batch (a deadline fires late rather than
//! early, as any timer of a busy worker does). Asks from outside the workers arm theirs at
//! once.
//!
//! # Where the `map` of [`Context::ask`] runs
//!
//! On the thread that settles the ask: inside the callee's handler when it replies, on a
//! worker when the deadline fires, in the asker's own handler when the send fails. It should
//! do no more than wrap the outcome into a message. Its result is queued past the asker's
//! mailbox capacity (an outcome is never refused for space); if the asker has stopped
//! meanwhile, it is dropped. A `map` that panics stops the asker with
//! [`StopReason::Panicked`].

use super::cell::{ActorCell, SystemMsg, panic_message};
use super::scheduler::{SchedTimer, Scheduler, with_current};
use super::system::SystemInner;
use super::{Actor, Addr, Context, Pool, Recipient, StopReason};
use crate::error::TrySendError;
use crate::sync::{Arc, AtomicU8, Condvar, Mutex, MutexGuard, Ordering, UnsafeCell, thread_local};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The longest deadline an ask keeps: a longer one is cut to this (one day). A deadline of
/// zero is allowed: the callee then has until the deadline timer's worker next looks at its
/// timers, which in practice means [`AskError::Timeout`].
pub const MAX_ASK_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Why an ask got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AskError {
    /// The deadline passed before a reply came.
    Timeout,
    /// The actor asked had stopped, so the request was not queued; or the system shut down
    /// before the deadline.
    Stopped,
    /// The [`ReplyTo`] was dropped unanswered: by the callee, or with the request still
    /// queued when the callee stopped. Reported at once, not at the deadline.
    Dropped,
    /// The actor's mailbox was at its capacity: the request was not queued.
    Full,
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AskError::Timeout => "the ask timed out",
            AskError::Stopped => "the actor asked has stopped",
            AskError::Dropped => "the request was dropped without a reply",
            AskError::Full => "the mailbox of the actor asked is full",
        })
    }
}

impl std::error::Error for AskError {}

/// What an ask can be sent to: an [`Addr`], a [`Recipient`] or a [`Pool`] (any free instance
/// answers, as [`Pool::send`] routes). An actor found in the registry
/// ([`SystemHandle::lookup`](super::SystemHandle::lookup)) is an [`Addr`].
pub trait AskTarget {
    /// The message type the request is built as.
    type Msg: Send + 'static;

    /// Queues the request (as `send` on the target does).
    ///
    /// # Errors
    /// As `send`: the request is handed back.
    fn send_request(&self, msg: Self::Msg) -> Result<(), TrySendError<Self::Msg>>;
}

impl<A: Actor> AskTarget for Addr<A> {
    type Msg = A::Msg;
    fn send_request(&self, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        self.send(msg)
    }
}

impl<M: Send + 'static> AskTarget for Recipient<M> {
    type Msg = M;
    fn send_request(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.send(msg)
    }
}

impl<A: Actor> AskTarget for Pool<A> {
    type Msg = A::Msg;
    fn send_request(&self, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        self.send(msg)
    }
}

/// Slot state bits. `SETTLED` is set once, by the one that settles; `ARMED` once the
/// deadline timer is in the `timer` field.
const SETTLED: u8 = 1;
const ARMED: u8 = 2;

/// Where the outcome of an ask goes. `finish` runs once, on the thread that settled the ask.
trait Outlet<R>: Send + Sync + 'static {
    /// Cancels `timer` (the deadline, when someone else than the timer settled) and delivers.
    fn finish(&self, outcome: Result<R, AskError>, timer: Option<SchedTimer>);
}

/// The reply slot of one ask.
struct Slot<R, O> {
    state: AtomicU8,
    /// The deadline timer, written once by whoever arms it before it sets `ARMED`. Read by
    /// one thread only: the one that settles, if it saw `ARMED` (the timer itself excepted,
    /// which never cancels itself), or else the one that armed, if it saw `SETTLED`.
    timer: UnsafeCell<Option<SchedTimer>>,
    outlet: O,
    _reply: PhantomData<fn(R) -> R>,
}

// SAFETY: `timer` is written before `ARMED` is set (release) and read after an acquire that
// saw `ARMED` by the winner, or by the armer after it saw `SETTLED`, never both (see the
// field's docs and `Slot::arm`); everything else is `Sync` on its own.
unsafe impl<R, O: Sync> Sync for Slot<R, O> {}

impl<R: Send + 'static, O: Outlet<R>> Slot<R, O> {
    fn new(outlet: O) -> Arc<Slot<R, O>> {
        Arc::new(Slot {
            state: AtomicU8::new(0),
            timer: UnsafeCell::new(None),
            outlet,
            _reply: PhantomData,
        })
    }

    /// Makes a settled slot that nobody else holds ready for a new ask.
    fn refill(&mut self, outlet: O) {
        *self = Slot {
            state: AtomicU8::new(0),
            timer: UnsafeCell::new(None),
            outlet,
            _reply: PhantomData,
        };
    }

    /// Settles the ask with `outcome` if nobody has; hands `outcome` back otherwise.
    fn settle(
        &self,
        outcome: Result<R, AskError>,
        from_timer: bool,
    ) -> Result<(), Result<R, AskError>> {
        let prev = self.state.fetch_or(SETTLED, Ordering::AcqRel);
        if prev & SETTLED != 0 {
            return Err(outcome);
        }
        let timer = if from_timer || prev & ARMED == 0 {
            // Not armed yet: whoever arms it will see `SETTLED` and cancel it.
            None
        } else {
            // SAFETY: this thread won, and saw `ARMED`: the write is visible and the armer
            // will not touch the field again (see the field's docs).
            self.timer.with_mut(|t| unsafe { (*t).take() })
        };
        self.outlet.finish(outcome, timer);
        Ok(())
    }

    fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) & SETTLED == 0
    }

    /// Sets the deadline timer on `sched` (once per ask). If the ask settled meanwhile, its
    /// winner did not see the timer: cancel it here.
    fn arm(self: &Arc<Self>, sched: &Scheduler, deadline: Duration) {
        let guard = DeadlineGuard { slot: self.clone() };
        let timer = sched.run_after(
            deadline.min(MAX_ASK_DEADLINE),
            Box::new(move || guard.fire()),
        );
        // SAFETY: `ARMED` is not set yet, so no other thread reads the field (see its docs).
        self.timer.with_mut(|t| unsafe { *t = Some(timer) });
        if self.state.fetch_or(ARMED, Ordering::AcqRel) & SETTLED != 0 {
            // SAFETY: the winner settled before `ARMED` was set, so it left the field alone.
            if let Some(timer) = self.timer.with_mut(|t| unsafe { (*t).take() }) {
                sched.cancel_timer(&timer);
            }
        }
    }

    /// Builds the request around a fresh reply handle and sends it; a failed send settles
    /// the ask (`Full` or `Stopped`) before the request, and the handle in it, is dropped.
    fn send<T: AskTarget + ?Sized>(
        self: &Arc<Self>,
        target: &T,
        request: impl FnOnce(ReplyTo<R>) -> T::Msg,
    ) {
        let msg = request(ReplyTo {
            slot: Some(self.clone()),
        });
        if let Err(refused) = target.send_request(msg) {
            let why = if refused.is_full() {
                AskError::Full
            } else {
                AskError::Stopped
            };
            let _ = self.settle(Err(why), false);
            drop(refused);
        }
    }
}

/// The deadline timer's closure: fires `Timeout`; dropped unfired (the system went down
/// with it pending), settles `Stopped`. A cancelled timer is dropped after the ask settled,
/// and then does nothing.
struct DeadlineGuard<R: Send + 'static, O: Outlet<R>> {
    slot: Arc<Slot<R, O>>,
}

impl<R: Send + 'static, O: Outlet<R>> DeadlineGuard<R, O> {
    fn fire(self) {
        let _ = self.slot.settle(Err(AskError::Timeout), true);
    }
}

impl<R: Send + 'static, O: Outlet<R>> Drop for DeadlineGuard<R, O> {
    fn drop(&mut self) {
        if self.slot.is_pending() {
            let _ = self.slot.settle(Err(AskError::Stopped), true);
        }
    }
}

/// A slot whose deadline waits to be armed (see [`deferred_slot`]).
trait Arm: Send + Sync {
    /// Arms the deadline now, unless the ask has settled.
    fn arm_deferred(self: Arc<Self>, sched: &Scheduler, deadline: Duration);
    /// The system is going down with the deadline unarmed: settle `Stopped`.
    fn abandon(&self);
    /// Whether the ask still waits.
    fn is_pending(&self) -> bool;
    /// The slot as `Any`, for reuse by a next ask of the same type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<R: Send + 'static, O: Outlet<R>> Arm for Slot<R, O> {
    fn arm_deferred(self: Arc<Self>, sched: &Scheduler, deadline: Duration) {
        if self.is_pending() {
            self.arm(sched, deadline);
        }
    }

    fn abandon(&self) {
        let _ = self.settle(Err(AskError::Stopped), true);
    }

    fn is_pending(&self) -> bool {
        Slot::is_pending(self)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Asks made on this worker thread whose deadlines wait for its next look at its timers,
/// and whether the timer that arms them is set.
struct Deferred(Vec<(Arc<dyn Arm>, Duration)>, bool);

impl Drop for Deferred {
    fn drop(&mut self) {
        for (slot, _) in self.0.drain(..) {
            slot.abandon();
        }
    }
}

thread_local! {
    static DEFERRED_ASKS: RefCell<Deferred> = const { RefCell::new(Deferred(Vec::new(), false)) };
}

/// The slot of an ask made on a worker of `system` (the caller checked), its deadline
/// deferred until that worker next runs its due timers (after the current batch of turns):
/// an ask answered by then, the common case of a callee on the same worker, never touches
/// the timers. One zero-delay timer per batch does the arming.
///
/// Asks in sequence reuse one allocation: if the previous ask in the list has settled, has
/// the same type and nobody else holds it any more, its slot is refilled for this one.
fn deferred_slot<R: Send + 'static, O: Outlet<R>>(
    outlet: O,
    system: &Arc<SystemInner>,
    deadline: Duration,
) -> Arc<Slot<R, O>> {
    let (slot, first) = DEFERRED_ASKS.with(|d| {
        let mut d = d.borrow_mut();
        let settled = match d.0.last() {
            Some((last, _)) if !last.is_pending() => d.0.pop(),
            _ => None,
        };
        // Dropping a settled slot (when it cannot be reused) touches nothing but its own
        // fields (its outlet was emptied when it settled), never this list.
        let mut outlet = Some(outlet);
        let reused = settled
            .and_then(|(last, _)| last.into_any().downcast::<Slot<R, O>>().ok())
            .and_then(|mut last| {
                let unique = Arc::get_mut(&mut last)?;
                unique.refill(outlet.take()?);
                Some(last)
            });
        let slot =
            reused.unwrap_or_else(|| Slot::new(outlet.take().expect("the outlet is used once")));
        d.0.push((slot.clone(), deadline));
        (slot, !std::mem::replace(&mut d.1, true))
    });
    if first {
        let arm = ArmDeferred {
            system: system.clone(),
            fired: false,
        };
        let _ = system
            .sched
            .run_after(Duration::ZERO, Box::new(move || arm.fire()));
    }
    slot
}

/// The zero-delay timer that arms the deferred deadlines of its worker; dropped unfired (the
/// worker left), it settles them `Stopped`.
struct ArmDeferred {
    system: Arc<SystemInner>,
    fired: bool,
}

impl ArmDeferred {
    fn fire(mut self) {
        self.fired = true;
        self.drain(true);
    }

    fn drain(&self, arm: bool) {
        let mut list = DEFERRED_ASKS.with(|d| {
            let mut d = d.borrow_mut();
            d.1 = false;
            std::mem::take(&mut d.0)
        });
        for (slot, deadline) in list.drain(..) {
            if arm {
                slot.arm_deferred(&self.system.sched, deadline);
            } else {
                slot.abandon();
            }
        }
        // Keep the vector's capacity for the next batch, unless asks came meanwhile.
        DEFERRED_ASKS.with(|d| {
            let mut d = d.borrow_mut();
            if d.0.is_empty() {
                d.0 = list;
            }
        });
    }
}

impl Drop for ArmDeferred {
    fn drop(&mut self) {
        if !self.fired {
            self.drain(false);
        }
    }
}

/// The reply slot as the callee's handle sees it.
trait Settle<R>: Send + Sync {
    fn settle(&self, outcome: Result<R, AskError>) -> Result<(), Result<R, AskError>>;
    fn is_pending(&self) -> bool;
}

impl<R: Send + 'static, O: Outlet<R>> Settle<R> for Slot<R, O> {
    fn settle(&self, outcome: Result<R, AskError>) -> Result<(), Result<R, AskError>> {
        Slot::settle(self, outcome, false)
    }

    fn is_pending(&self) -> bool {
        Slot::is_pending(self)
    }
}

/// The handle a callee answers an ask through, carried inside the request message.
///
/// `Send`, not `Clone`: one request, one answer. [`ReplyTo::reply`] consumes it; dropping it
/// unanswered tells the asker [`AskError::Dropped`] at once.
///
/// # Example
///
/// ```
/// use kendynet::{Actor, Context, ReplyTo};
///
/// struct Accounts;
/// enum AccountMsg {
///     Balance { user: u32, reply: ReplyTo<u64> },
/// }
///
/// impl Actor for Accounts {
///     type Msg = AccountMsg;
///     fn handle(&mut self, msg: AccountMsg, _: &mut Context<Self>) {
///         match msg {
///             AccountMsg::Balance { user, reply } => {
///                 // Err hands the value back: the asker gave up (deadline) or is gone.
///                 let _ = reply.reply(u64::from(user) * 100);
///             }
///         }
///     }
/// }
/// ```
pub struct ReplyTo<R: Send + 'static> {
    slot: Option<Arc<dyn Settle<R>>>,
}

impl<R: Send + 'static> ReplyTo<R> {
    /// Answers the ask.
    ///
    /// # Errors
    /// The value is handed back if the ask has already been settled: its deadline passed,
    /// or the asker gave up (a dropped [`AskFuture`]).
    pub fn reply(mut self, value: R) -> Result<(), R> {
        let slot = self
            .slot
            .take()
            .expect("a reply handle holds its slot until consumed");
        slot.settle(Ok(value)).map_err(|outcome| match outcome {
            Ok(value) => value,
            Err(_) => unreachable!("settle hands back the outcome it was given"),
        })
    }

    /// Whether the asker still waits (false once the deadline has passed or the asker gave
    /// up): a callee can skip work nobody will see.
    pub fn is_waiting(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| s.is_pending())
    }
}

impl<R: Send + 'static> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = slot.settle(Err(AskError::Dropped));
        }
    }
}

impl<R: Send + 'static> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("waiting", &self.is_waiting())
            .finish()
    }
}

/// The outlet of [`Context::ask`]: the asker's cell and the closure that turns the outcome
/// into one of its messages, taken by the one that settles.
struct ActorOutlet<A: Actor, F> {
    payload: UnsafeCell<Option<(Arc<ActorCell<A>>, F)>>,
}

// SAFETY: `payload` is taken once, by `finish`, which only the thread that settled the ask
// runs; the cell and the closure are `Send`.
unsafe impl<A: Actor, F: Send> Sync for ActorOutlet<A, F> {}

impl<A, R, F> Outlet<R> for ActorOutlet<A, F>
where
    A: Actor,
    R: Send + 'static,
    F: FnOnce(Result<R, AskError>) -> A::Msg + Send + 'static,
{
    fn finish(&self, outcome: Result<R, AskError>, timer: Option<SchedTimer>) {
        // SAFETY: `finish` runs once, on the thread that settled the ask (see the impl of
        // `Sync`).
        let Some((cell, map)) = self.payload.with_mut(|p| unsafe { (*p).take() }) else {
            return;
        };
        if let Some(timer) = timer {
            cell.system.sched.cancel_timer(&timer);
        }
        match catch_unwind(AssertUnwindSafe(move || map(outcome))) {
            // Forced: an outcome is never refused for space. A stopped asker drops it.
            Ok(msg) => drop(cell.push_user(msg, true)),
            Err(panic) => {
                let why = format!(
                    "the outcome map of an ask panicked: {}",
                    panic_message(panic.as_ref())
                );
                let _ = cell.push_system(SystemMsg::Stop(StopReason::Panicked(why)));
            }
        }
    }
}

impl<A: Actor> Context<'_, A> {
    /// Asks `target` without blocking: sends the request `request` builds around a
    /// [`ReplyTo`], and delivers the outcome to this actor as one message, `map(outcome)`,
    /// exactly once: the reply, or [`AskError::Timeout`] when `deadline` passes first,
    /// [`AskError::Dropped`] as soon as the reply handle is dropped unanswered,
    /// [`AskError::Stopped`] or [`AskError::Full`] (as the next message) when the request
    /// cannot be queued. The deadline timer is cancelled when the ask settles otherwise.
    ///
    /// `map` runs on the thread that settles the ask: inside the callee's handler when it
    /// replies, on a worker when the deadline passes, here when the send fails. It should
    /// only wrap the outcome into a message. That message is queued past this actor's
    /// mailbox capacity (an outcome is never refused for space); if this actor has stopped
    /// meanwhile, it is dropped. A `map` that panics stops this actor with
    /// [`StopReason::Panicked`].
    ///
    /// The deadline counts from the end of the current batch of turns on this worker: the
    /// timer is armed when the worker next looks at its timers, and only if the ask is still
    /// pending then (an ask answered within the batch costs no timer). Deadlines over
    /// [`MAX_ASK_DEADLINE`] are cut to it; a zero deadline is allowed.
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::{Actor, AskError, Context, ReplyTo, System};
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    ///
    /// struct Accounts;
    /// enum AccountMsg {
    ///     Balance { user: u32, reply: ReplyTo<u64> },
    /// }
    /// impl Actor for Accounts {
    ///     type Msg = AccountMsg;
    ///     fn handle(&mut self, msg: AccountMsg, _: &mut Context<Self>) {
    ///         let AccountMsg::Balance { user, reply } = msg;
    ///         let _ = reply.reply(u64::from(user) * 100);
    ///     }
    /// }
    ///
    /// struct Login {
    ///     accounts: kendynet::Addr<Accounts>,
    ///     out: mpsc::Sender<Result<u64, AskError>>,
    /// }
    /// enum LoginMsg {
    ///     Start(u32),
    ///     Balance(Result<u64, AskError>),
    /// }
    /// impl Actor for Login {
    ///     type Msg = LoginMsg;
    ///     fn handle(&mut self, msg: LoginMsg, ctx: &mut Context<Self>) {
    ///         match msg {
    ///             LoginMsg::Start(user) => ctx.ask(
    ///                 &self.accounts,
    ///                 |reply| AccountMsg::Balance { user, reply },
    ///                 Duration::from_secs(2),
    ///                 LoginMsg::Balance,
    ///             ),
    ///             LoginMsg::Balance(res) => self.out.send(res).unwrap(),
    ///         }
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(2).build()?;
    /// let accounts = system.spawn(Accounts);
    /// let (tx, rx) = mpsc::channel();
    /// let login = system.spawn(Login { accounts, out: tx });
    /// login.send(LoginMsg::Start(7)).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(700));
    /// system.shutdown(Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ask<T, R, F>(
        &self,
        target: &T,
        request: impl FnOnce(ReplyTo<R>) -> T::Msg,
        deadline: Duration,
        map: F,
    ) where
        T: AskTarget + ?Sized,
        R: Send + 'static,
        F: FnOnce(Result<R, AskError>) -> A::Msg + Send + 'static,
    {
        let system = &self.cell.system;
        let outlet = ActorOutlet {
            payload: UnsafeCell::new(Some((self.cell.clone(), map))),
        };
        if with_current(&system.sched, |w| w.is_some()) {
            deferred_slot(outlet, system, deadline).send(target, request);
        } else {
            let slot = Slot::new(outlet);
            slot.send(target, request);
            if slot.is_pending() {
                slot.arm(&system.sched, deadline);
            }
        }
    }
}

/// The outlet of the future and blocking forms: the outcome waits here for its reader.
struct WaitOutlet<R> {
    /// Where the deadline timer is (to cancel it).
    system: Arc<SystemInner>,
    state: Mutex<WaitState<R>>,
    ready: Condvar,
}

struct WaitState<R> {
    outcome: Option<Result<R, AskError>>,
    waker: Option<Waker>,
}

impl<R> WaitOutlet<R> {
    fn new(system: &Arc<SystemInner>) -> WaitOutlet<R> {
        WaitOutlet {
            system: system.clone(),
            state: Mutex::new(WaitState {
                outcome: None,
                waker: None,
            }),
            ready: Condvar::new(),
        }
    }

    /// The lock is never held across user code but a waker's clone; a panic there leaves
    /// the state consistent.
    fn lock(&self) -> MutexGuard<'_, WaitState<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<R: Send + 'static> Outlet<R> for WaitOutlet<R> {
    fn finish(&self, outcome: Result<R, AskError>, timer: Option<SchedTimer>) {
        if let Some(timer) = timer {
            self.system.sched.cancel_timer(&timer);
        }
        let waker = {
            let mut st = self.lock();
            st.outcome = Some(outcome);
            st.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

type WaitSlot<R> = Slot<R, WaitOutlet<R>>;

/// The outcome of an ask from outside the system ([`Addr::ask`], [`Recipient::ask`],
/// [`Pool::ask`]): a plain `std::future::Future` with no runtime behind it, so any executor
/// (tokio, a hand-written `block_on`) can await it. The request is sent when the future is
/// made; the deadline runs on the system's timers, which wake the future.
///
/// Dropping it before it completes abandons the ask: its deadline timer is cancelled and a
/// later reply is handed back to the callee ([`ReplyTo::reply`] returns `Err`).
///
/// # Panics
/// Polling it again after it returned `Ready`.
#[must_use = "the outcome arrives through the future; dropping it abandons the ask"]
pub struct AskFuture<R: Send + 'static> {
    slot: Option<Arc<WaitSlot<R>>>,
}

impl<R: Send + 'static> fmt::Debug for AskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskFuture")
            .field("done", &self.slot.is_none())
            .finish()
    }
}

impl<R: Send + 'static> Future for AskFuture<R> {
    type Output = Result<R, AskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slot = this
            .slot
            .as_ref()
            .expect("AskFuture polled after it completed");
        let mut st = slot.outlet.lock();
        if let Some(outcome) = st.outcome.take() {
            drop(st);
            this.slot = None;
            return Poll::Ready(outcome);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<R: Send + 'static> Drop for AskFuture<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // Abandoned: settle (cancelling the timer) with an outcome nobody reads.
            let _ = slot.settle(Err(AskError::Dropped), false);
        }
    }
}

fn ask_future<T: AskTarget + ?Sized, R: Send + 'static>(
    target: &T,
    system: &Arc<SystemInner>,
    request: impl FnOnce(ReplyTo<R>) -> T::Msg,
    deadline: Duration,
) -> AskFuture<R> {
    let slot = WaitSlot::new(WaitOutlet::new(system));
    slot.arm(&system.sched, deadline);
    slot.send(target, request);
    AskFuture { slot: Some(slot) }
}

fn ask_blocking<T: AskTarget + ?Sized, R: Send + 'static>(
    target: &T,
    system: &Arc<SystemInner>,
    request: impl FnOnce(ReplyTo<R>) -> T::Msg,
    timeout: Duration,
) -> Result<R, AskError> {
    assert!(
        !with_current(&system.sched, |w| w.is_some()),
        "ask_blocking called on a worker thread of the system it asks: it would block the \
         worker that may have to run the reply; use Context::ask from an actor"
    );
    let slot = WaitSlot::new(WaitOutlet::new(system));
    slot.send(target, request);
    // The deadline is this thread's own wait: no system timer is involved.
    let mut deadline = Instant::now().checked_add(timeout.min(MAX_ASK_DEADLINE));
    let out = &slot.outlet;
    let mut st = out.lock();
    loop {
        if let Some(outcome) = st.outcome.take() {
            return outcome;
        }
        let Some(at) = deadline else {
            st = out.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let now = Instant::now();
        if now >= at {
            drop(st);
            // Whoever settled first (this timeout, or a reply just in) has stored the
            // outcome, or is about to: wait for it without a deadline.
            let _ = slot.settle(Err(AskError::Timeout), true);
            deadline = None;
            st = out.lock();
            continue;
        }
        st = out
            .ready
            .wait_timeout(st, at - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

macro_rules! outside_asks {
    ($target:literal) => {
        concat!(
            "Asks ",
            $target,
            " from outside the system: sends the request `request` builds around a \
             [`ReplyTo`] and returns an [`AskFuture`] of the outcome (the reply, or an \
             [`AskError`]). The deadline runs on the system's timers, so the future needs no \
             runtime; deadlines over [`MAX_ASK_DEADLINE`] are cut to it.\n\n\
             From a handler use [`Context::ask`] instead: it never blocks the worker."
        )
    };
}

macro_rules! blocking_asks {
    ($target:literal) => {
        concat!(
            "Asks ",
            $target,
            " and blocks this thread until the outcome, at most `timeout` (cut to \
             [`MAX_ASK_DEADLINE`]): for plain threads and tests.\n\n\
             # Errors\n\
             [`AskError::Timeout`] when `timeout` passes first, [`AskError::Dropped`] as \
             soon as the reply handle is dropped unanswered, [`AskError::Stopped`] or \
             [`AskError::Full`] at once when the request cannot be queued.\n\n\
             In a simulation of the test kit nothing runs while this thread blocks (the \
             thread drives the simulation): use the future form there, or \
             [`Context::ask`].\n\n\
             # Panics\n\
             When called on a worker thread of the same system (a handler), which could \
             wait for a reply that only that worker would run; use [`Context::ask`] there."
        )
    };
}

impl<A: Actor> Addr<A> {
    #[doc = outside_asks!("this actor")]
    ///
    /// # Example
    ///
    /// ```
    /// use kendynet::{Actor, Context, ReplyTo, System};
    /// use std::time::Duration;
    ///
    /// struct Doubler;
    /// impl Actor for Doubler {
    ///     type Msg = (u64, ReplyTo<u64>);
    ///     fn handle(&mut self, (n, reply): (u64, ReplyTo<u64>), _: &mut Context<Self>) {
    ///         let _ = reply.reply(2 * n);
    ///     }
    /// }
    ///
    /// let system = System::builder().workers(1).build()?;
    /// let doubler = system.spawn(Doubler);
    /// let fut = doubler.ask(|reply| (21, reply), Duration::from_secs(2));
    /// // Any executor can await `fut`; here, the blocking form instead.
    /// drop(fut);
    /// let got = doubler.ask_blocking(|reply| (21, reply), Duration::from_secs(2));
    /// assert_eq!(got, Ok(42));
    /// system.shutdown(Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ask<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        deadline: Duration,
    ) -> AskFuture<R> {
        ask_future(self, &self.cell.system, request, deadline)
    }

    #[doc = blocking_asks!("this actor")]
    pub fn ask_blocking<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        timeout: Duration,
    ) -> Result<R, AskError> {
        ask_blocking(self, &self.cell.system, request, timeout)
    }
}

impl<M: Send + 'static> Recipient<M> {
    #[doc = outside_asks!("the actor behind this recipient")]
    pub fn ask<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> M,
        deadline: Duration,
    ) -> AskFuture<R> {
        ask_future(self, self.system(), request, deadline)
    }

    #[doc = blocking_asks!("the actor behind this recipient")]
    pub fn ask_blocking<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        ask_blocking(self, self.system(), request, timeout)
    }
}

impl<A: Actor> Pool<A> {
    #[doc = outside_asks!("one instance (chosen as [`Pool::send`] chooses)")]
    pub fn ask<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        deadline: Duration,
    ) -> AskFuture<R> {
        ask_future(self, &self.members()[0].cell.system, request, deadline)
    }

    #[doc = blocking_asks!("one instance (chosen as [`Pool::send`] chooses)")]
    pub fn ask_blocking<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        timeout: Duration,
    ) -> Result<R, AskError> {
        ask_blocking(self, &self.members()[0].cell.system, request, timeout)
    }
}
