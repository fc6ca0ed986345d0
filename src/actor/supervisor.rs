//! Supervision trees: a [`Supervisor`] actor restarts its children when they fail.
//!
//! A child is an ordinary actor built by a factory. When one of its handlers panics, the
//! child does not stop: its instance is taken down (its `stopped` runs), the messages it had
//! not handled stay in its mailbox, and it waits, suspended, while its supervisor decides:
//!
//! - **one-for-one**: only the failed child is restarted;
//! - **one-for-all**: the other children are taken down too (each runs `stopped`), then all
//!   are restarted, in the order they were started.
//!
//! A restart builds a fresh instance from the factory, in place: the address, the mailbox
//! and the registered names stay, so nobody holding an address notices more than a delay.
//! For each child, the old instance's `stopped` always finishes before the new one's
//! `started`. Sockets the child owns stay open and its new instance is told of each one
//! first, with a [`NetEvent::Adopted`](crate::NetEvent::Adopted).
//!
//! Restarts wait for an exponential back-off (`backoff_min`, doubling with each restart in
//! the intensity window, up to `backoff_max`). More than `max_restarts` restarts within
//! `within` means the trouble is not local: the supervisor gives up. A supervisor under
//! another supervisor then fails in turn (its children are taken down with it, and restarted
//! with it); a top-level supervisor stops all its children and itself with
//! [`StopReason::RestartLimit`].
//!
//! A child that stops for good (it called [`Context::stop`], someone called
//! [`Addr::stop`] or [`Addr::kill`]) is removed from its supervisor and not restarted.
//! Stopping a supervisor stops its children first (each drains its mailbox); at shutdown
//! children stop before their supervisors.

use super::cell::{self, ActorCell, Addr, Done, Placement, Supervision, SupervisorLink, SystemMsg};
use super::system::{RegistryError, SystemHandle};
use super::{Actor, ActorId, Context, StopReason};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The default [`SupervisorSpec::max_restarts`].
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The default [`SupervisorSpec::within`].
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(5);
/// The default [`SupervisorSpec::backoff_min`].
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The default [`SupervisorSpec::backoff_max`].
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which children a failure restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that failed (the default).
    #[default]
    OneForOne,
    /// Every child: the others are taken down and all restart, in start order.
    OneForAll,
}

/// How a supervisor restarts its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisorSpec {
    /// Which children a failure restarts.
    pub strategy: Strategy,
    /// Restarts allowed within [`SupervisorSpec::within`]; one more and the supervisor
    /// gives up.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in.
    pub within: Duration,
    /// The wait before the first restart in the window.
    pub backoff_min: Duration,
    /// The longest wait before a restart (the wait doubles with each restart in the window).
    pub backoff_max: Duration,
}

impl Default for SupervisorSpec {
    fn default() -> SupervisorSpec {
        SupervisorSpec {
            strategy: Strategy::OneForOne,
            max_restarts: DEFAULT_MAX_RESTARTS,
            within: DEFAULT_RESTART_WINDOW,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl SupervisorSpec {
    /// One-for-one with the defaults.
    pub fn one_for_one() -> SupervisorSpec {
        SupervisorSpec::default()
    }

    /// One-for-all with the defaults.
    pub fn one_for_all() -> SupervisorSpec {
        SupervisorSpec {
            strategy: Strategy::OneForAll,
            ..SupervisorSpec::default()
        }
    }

    /// Sets the restart intensity: at most `max_restarts` within `within`.
    #[must_use]
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> SupervisorSpec {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Sets the back-off: `min` before the first restart in the window, doubling up to
    /// `max`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> SupervisorSpec {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// The wait before the `n`-th restart in the window (from 1).
    fn delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.backoff_min
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What a supervisor can ask of a child, whatever its type.
trait Child: Send + Sync {
    fn id(&self) -> ActorId;
    /// Take the instance down (its `stopped` runs); messages keep queuing. `done` is
    /// dropped when that is over.
    fn suspend(&self, done: Option<Done>);
    /// Bring it back with a fresh instance; `done` is dropped once its `started` ran.
    fn restart(&self, done: Option<Done>);
    /// Stop for good: after what is queued (`drain`), or after the message in hand.
    fn stop(&self, reason: StopReason, drain: bool);
}

impl<A: Actor> Child for Arc<ActorCell<A>> {
    fn id(&self) -> ActorId {
        self.id
    }

    fn suspend(&self, done: Option<Done>) {
        // Refused (the child is gone): the token drops here, which is just as good.
        let _ = self.push_system(SystemMsg::Suspend(done));
    }

    fn restart(&self, done: Option<Done>) {
        let _ = self.push_system(SystemMsg::Restart(done));
    }

    fn stop(&self, reason: StopReason, drain: bool) {
        if drain {
            self.drain_stop(reason);
        } else {
            let _ = self.push_system(SystemMsg::Stop(reason));
        }
    }
}

/// The children of one supervisor, in start order: shared by the supervisor's instances
/// (it survives its own restarts) and its [`SupervisorRef`]s.
struct Children {
    list: Mutex<Vec<Arc<dyn Child>>>,
    /// Set when an instance gave up under its parent and took the children down with it:
    /// the next instance brings them back.
    taken_down: AtomicBool,
}

impl Children {
    fn new() -> Arc<Children> {
        Arc::new(Children {
            list: Mutex::new(Vec::new()),
            taken_down: AtomicBool::new(false),
        })
    }

    fn snapshot(&self) -> Vec<Arc<dyn Child>> {
        self.list.lock().unwrap().clone()
    }

    fn remove(&self, id: ActorId) {
        self.list.lock().unwrap().retain(|c| c.id() != id);
    }
}

/// A child's way back to its supervisor.
struct Link {
    supervisor: Addr<Supervisor>,
}

impl SupervisorLink for Link {
    fn child_failed(&self, id: ActorId, reason: StopReason) -> bool {
        self.supervisor
            .cell
            .push_user(SupervisorMsg(Event::ChildFailed(id, reason)), true)
            .is_ok()
    }
}

/// The messages of a [`Supervisor`] (they are its own business).
pub struct SupervisorMsg(Event);

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SupervisorMsg")
    }
}

enum Event {
    ChildFailed(ActorId, StopReason),
    /// A child taken down for round `round` has run its `stopped`.
    Suspended {
        round: u64,
    },
    /// The back-off of restart round `round` is over.
    RestartDue {
        round: u64,
    },
    /// The child restarted last in round `round` has run its `started`.
    Restarted {
        round: u64,
    },
}

/// Tells the supervisor, when dropped, that a child finished a step of round `round`.
struct Ack {
    supervisor: Addr<Supervisor>,
    event: fn(u64) -> Event,
    round: u64,
}

impl Drop for Ack {
    fn drop(&mut self) {
        let event = (self.event)(self.round);
        let _ = self.supervisor.cell.push_user(SupervisorMsg(event), true);
    }
}

/// A supervisor actor. Spawn one with [`SystemHandle::spawn_supervisor`] (or
/// [`SupervisorRef::start_supervisor`] for a nested one) and start children through the
/// [`SupervisorRef`] it gives back.
///
/// # Example
///
/// ```
/// use kendynet::{Actor, Context, SupervisorSpec, System};
/// use std::time::Duration;
///
/// struct Room {
///     players: u32,
/// }
///
/// enum RoomMsg {
///     Join,
///     Crash,
///     Count(std::sync::mpsc::Sender<u32>),
/// }
///
/// impl Actor for Room {
///     type Msg = RoomMsg;
///     fn handle(&mut self, msg: RoomMsg, _: &mut Context<Self>) {
///         match msg {
///             RoomMsg::Join => self.players += 1,
///             RoomMsg::Crash => panic!("bad state"),
///             RoomMsg::Count(tx) => tx.send(self.players).unwrap(),
///         }
///     }
/// }
///
/// let system = System::builder().workers(2).build()?;
/// let sup = system.spawn_supervisor(
///     SupervisorSpec::one_for_one().intensity(5, Duration::from_secs(10)),
/// );
/// let room = sup.start_child(|| Room { players: 0 }).expect("supervisor alive");
/// room.send(RoomMsg::Join).unwrap();
/// room.send(RoomMsg::Crash).unwrap(); // restarted in place, same address
/// room.send(RoomMsg::Join).unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// room.send(RoomMsg::Count(tx)).unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
/// system.shutdown(Duration::from_secs(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Supervisor {
    spec: SupervisorSpec,
    children: Arc<Children>,
    /// When the restarts in the window happened.
    recent: VecDeque<Instant>,
    /// The restart round in progress (a newer failure supersedes an older round).
    round: u64,
    /// Children to restart in the current round, in start order.
    waiting: Vec<ActorId>,
    /// Children of the current round still running their `stopped`.
    suspending: usize,
    /// The back-off of the current round.
    delay: Duration,
    /// Set when it gives up, with why: under a parent its `stopped` then takes the children
    /// down with it (to come back with its next instance) instead of stopping them.
    gave_up: Option<String>,
}

impl Supervisor {
    fn new(spec: SupervisorSpec, children: Arc<Children>) -> Supervisor {
        Supervisor {
            spec,
            children,
            recent: VecDeque::new(),
            round: 0,
            waiting: Vec::new(),
            suspending: 0,
            delay: Duration::ZERO,
            gave_up: None,
        }
    }

    /// Counts a restart in the window; false if that is one too many.
    fn allow_restart(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.spec.within)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.spec.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    fn ack(&self, ctx: &Context<Self>, event: fn(u64) -> Event) -> Option<Done> {
        Some(Box::new(Ack {
            supervisor: ctx.addr(),
            event,
            round: self.round,
        }))
    }

    /// A child failed: its instance is down already. Takes down the others the strategy
    /// names (waiting for each one's `stopped`), then waits the back-off, then restarts them
    /// one at a time in start order (each after the previous one's `started`).
    fn on_failure(&mut self, id: ActorId, reason: StopReason, ctx: &mut Context<Self>) {
        let children = self.children.snapshot();
        if !children.iter().any(|c| c.id() == id) {
            return;
        }
        if !self.allow_restart(Instant::now()) {
            let why = match reason {
                StopReason::Panicked(m) | StopReason::RestartLimit(m) => m,
                other => other.to_string(),
            };
            self.give_up(format!("child {id} failed too often; last: {why}"), ctx);
            return;
        }
        // A round in progress is superseded: this one restarts its children too.
        self.round += 1;
        self.delay = self.spec.delay(self.recent.len() as u32);
        let mut take_down: Vec<&Arc<dyn Child>> = Vec::new();
        match self.spec.strategy {
            Strategy::OneForOne => {
                if !self.waiting.contains(&id) {
                    self.waiting.push(id);
                }
            }
            Strategy::OneForAll => {
                take_down = children
                    .iter()
                    .filter(|c| c.id() != id && !self.waiting.contains(&c.id()))
                    .collect();
                self.waiting = children.iter().map(|c| c.id()).collect();
            }
        }
        // Keep start order.
        self.waiting
            .sort_by_key(|w| children.iter().position(|c| c.id() == *w));
        self.suspending = take_down.len();
        for c in take_down {
            c.suspend(self.ack(ctx, |round| Event::Suspended { round }));
        }
        if self.suspending == 0 {
            self.start_backoff(ctx);
        }
    }

    fn start_backoff(&mut self, ctx: &mut Context<Self>) {
        let due = SupervisorMsg(Event::RestartDue { round: self.round });
        let _ = ctx.send_self_after(self.delay, due);
    }

    /// Restarts the next child waiting in this round, if any.
    fn restart_next(&mut self, ctx: &mut Context<Self>) {
        let children = self.children.snapshot();
        while !self.waiting.is_empty() {
            let id = self.waiting.remove(0);
            if let Some(c) = children.iter().find(|c| c.id() == id) {
                c.restart(self.ack(ctx, |round| Event::Restarted { round }));
                return;
            }
        }
    }

    /// Too many restarts: fail under a parent (which decides for this whole subtree), or
    /// stop everything for good.
    fn give_up(&mut self, why: String, ctx: &mut Context<Self>) {
        self.gave_up = Some(why.clone());
        ctx.fail(StopReason::RestartLimit(why));
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After its own restart: bring back the children taken down with the old instance,
        // in start order. (Not on the first start: a child that failed before this first
        // turn is in a `ChildFailed` that waits in the mailbox, with its back-off.)
        if self.children.taken_down.swap(false, Ordering::AcqRel) {
            self.waiting = self.children.snapshot().iter().map(|c| c.id()).collect();
            self.restart_next(ctx);
        }
    }

    fn handle(&mut self, msg: SupervisorMsg, ctx: &mut Context<Self>) {
        match msg.0 {
            Event::ChildFailed(id, reason) => self.on_failure(id, reason, ctx),
            Event::Suspended { round } if round == self.round => {
                self.suspending = self.suspending.saturating_sub(1);
                if self.suspending == 0 {
                    self.start_backoff(ctx);
                }
            }
            Event::RestartDue { round } | Event::Restarted { round } if round == self.round => {
                self.restart_next(ctx);
            }
            // A superseded round.
            _ => {}
        }
    }

    fn watched_stopped(&mut self, id: ActorId, _: &StopReason, _: &mut Context<Self>) {
        self.children.remove(id);
        self.waiting.retain(|w| *w != id);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let children = self.children.snapshot();
        if self.gave_up.is_some() && ctx.is_supervised() {
            // Failing under a parent: the children go down with this instance and come
            // back with the next one.
            self.children.taken_down.store(true, Ordering::Release);
            for c in &children {
                c.suspend(None);
            }
            return;
        }
        let (reason, drain) = match self.gave_up.take() {
            Some(why) => (StopReason::RestartLimit(why), false),
            None => (StopReason::Normal, true),
        };
        for c in children.iter().rev() {
            // A child waiting for a restart has no instance to drain its mailbox with, and no
            // restart is coming: it stops at once.
            let drain = drain && !self.waiting.contains(&c.id());
            c.stop(reason.clone(), drain);
        }
        self.children.list.lock().unwrap().clear();
    }
}

/// A handle onto a running supervisor: starts its children. Cheap to clone, `Send`.
#[derive(Clone)]
pub struct SupervisorRef {
    addr: Addr<Supervisor>,
    children: Arc<Children>,
    system: SystemHandle,
}

impl fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SupervisorRef({})", self.addr.id())
    }
}

impl SupervisorRef {
    /// The supervisor's own address (to stop it, or watch it).
    pub fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    /// The ids of its children, in start order.
    pub fn children(&self) -> Vec<ActorId> {
        self.children.snapshot().iter().map(|c| c.id()).collect()
    }

    /// Starts a child built by `factory` (called now, and again for each restart).
    ///
    /// # Errors
    /// [`RegistryError::ActorStopped`] if the supervisor has stopped (nothing is started).
    pub fn start_child<A: Actor>(
        &self,
        factory: impl FnMut() -> A + Send + 'static,
    ) -> Result<Addr<A>, RegistryError> {
        self.start_named_child(factory, None)
    }

    /// As [`SupervisorRef::start_child`], registering the child under `name` (kept across
    /// restarts, freed when the child stops for good).
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if the name is held, [`RegistryError::ActorStopped`] if
    /// the supervisor has stopped.
    pub fn start_named_child<A: Actor>(
        &self,
        mut factory: impl FnMut() -> A + Send + 'static,
        name: Option<&str>,
    ) -> Result<Addr<A>, RegistryError> {
        if !self.addr.is_alive() {
            return Err(RegistryError::ActorStopped);
        }
        let first = factory();
        let link: Arc<dyn SupervisorLink> = Arc::new(Link {
            supervisor: self.addr.clone(),
        });
        let placement = Placement {
            name,
            depth: self.addr.cell.depth + 1,
            ..Placement::default()
        };
        // The list knows the child before it can run (and fail).
        let mut list = self.children.list.lock().unwrap();
        let addr = cell::spawn(
            &self.system.inner,
            first,
            Supervision::Supervisor(Box::new(factory), link),
            placement,
        )?;
        list.push(Arc::new(addr.cell.clone()));
        drop(list);
        addr.cell.add_watcher(self.addr.cell.clone());
        Ok(addr)
    }

    /// Starts a supervisor under this one: when it gives up, this one decides for its whole
    /// subtree (restarting it restarts its children, at their same addresses).
    ///
    /// # Errors
    /// As [`SupervisorRef::start_child`].
    pub fn start_supervisor(&self, spec: SupervisorSpec) -> Result<SupervisorRef, RegistryError> {
        let children = Children::new();
        let shared = children.clone();
        let addr = self.start_child(move || Supervisor::new(spec, shared.clone()))?;
        Ok(SupervisorRef {
            addr,
            children,
            system: self.system.clone(),
        })
    }
}

impl SystemHandle {
    /// Spawns a top-level supervisor; start its children through the returned handle.
    pub fn spawn_supervisor(&self, spec: SupervisorSpec) -> SupervisorRef {
        let children = Children::new();
        let addr = self.spawn(Supervisor::new(spec, children.clone()));
        SupervisorRef {
            addr,
            children,
            system: self.clone(),
        }
    }
}
