//! Layer 3: actors on a work-stealing pool, with sockets as actor references.
//!
//! An [`Actor`] owns its state and handles one message at a time through `&mut self`; its
//! [`Addr`] is cheap to clone, `Send`, and can be sent to from any thread. Messages from one
//! sender to one actor arrive in the order they were sent.
//!
//! A [`System`](crate::System) runs N worker threads. Each worker keeps a local run queue
//! (with a one-task LIFO slot, so a reply to a message runs next on the same thread, without a
//! wake-up) and steals from the others and from a global injector when it runs dry. What a
//! worker does besides (in the runtime: polling its share of the sockets, so the actor that
//! owns a socket usually runs on the thread that read its packets) sits behind its driver,
//! in which it also sleeps when idle; this module knows nothing of sockets.
//!
//! Each turn of an actor handles at most a budget of messages, so one busy actor cannot
//! starve the others. A handler that panics never takes down a worker: the actor stops (or is
//! restarted in place, if spawned with a [`RestartPolicy`]) and its watchers are told why.

mod ask;
mod blocking;
mod blocking_pool;
mod cell;
mod group;
mod handle;
pub(crate) mod membership;
pub(crate) mod metrics;
mod pool;
pub(crate) mod scheduler;
pub(crate) mod stall;
mod supervisor;
pub(crate) mod system;
mod timer;
pub(crate) mod timers;
pub(crate) mod watchdog;

pub use ask::{AskError, AskFuture, AskTarget, MAX_ASK_DEADLINE, ReplyTo};
pub use blocking::{BLOCKING_KEEP_ALIVE, BlockingError, DEFAULT_BLOCKING_THREADS};
pub use cell::{Addr, Context, Recipient};
pub use group::{Group, GroupError, GroupEvent, GroupSendReport, LeaveReason};
pub use handle::SpawnOptions;
pub use metrics::{HANDLER_TIME_BUCKETS, HANDLER_TIME_SAMPLE, HandlerTime};
pub(crate) use pool::RouteKey;
pub use pool::{Pool, PoolRouting};
pub use stall::{DEFAULT_STALL_THRESHOLD, STALL_REPORTS_KEPT, Stall};
pub use supervisor::{
    DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW,
    Strategy, Supervisor, SupervisorMsg, SupervisorRef, SupervisorSpec,
};
pub(crate) use system::SystemInner;
pub use system::{DroppedMessages, RegistryError, SystemHandle};
pub use timer::TimerHandle;

use std::fmt;
use std::time::Duration;

/// An actor: state plus a handler for its message type.
///
/// # Example
///
/// ```
/// use kendynet::{Actor, Context, System};
/// use std::sync::mpsc;
///
/// struct Counter {
///     total: u64,
///     report: mpsc::Sender<u64>,
/// }
///
/// enum Msg {
///     Add(u64),
///     Report,
/// }
///
/// impl Actor for Counter {
///     type Msg = Msg;
///     fn handle(&mut self, msg: Msg, _ctx: &mut Context<Self>) {
///         match msg {
///             Msg::Add(n) => self.total += n,
///             Msg::Report => self.report.send(self.total).unwrap(),
///         }
///     }
/// }
///
/// let system = System::builder().workers(2).build()?;
/// let (tx, rx) = mpsc::channel();
/// let counter = system.spawn(Counter { total: 0, report: tx });
/// for n in 1..=10 {
///     counter.send(Msg::Add(n)).unwrap();
/// }
/// counter.send(Msg::Report).unwrap();
/// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), 55);
/// system.shutdown(std::time::Duration::from_secs(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Actor: Send + Sized + 'static {
    /// The messages it handles. Network owners take [`NetEvent`](crate::NetEvent)s through
    /// `From<NetEvent>`.
    type Msg: Send + 'static;

    /// Handles one message.
    fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>);

    /// Runs once, on a worker, before the first message (and again after a restart).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// Runs once when the actor stops, for whatever reason (not after a panic in `stopped`).
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// An actor this one watches ([`Context::watch`]) has stopped.
    fn watched_stopped(&mut self, id: ActorId, reason: &StopReason, ctx: &mut Context<Self>) {
        let _ = (id, reason, ctx);
    }
}

/// Identifies an actor within its system (unique for the life of the system).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(pub(crate) u64);

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor#{}", self.0)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor#{}", self.0)
    }
}

/// Why an actor stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// It called [`Context::stop`], or someone called [`Addr::stop`].
    Normal,
    /// A handler panicked (and no restart was allowed); the panic message.
    Panicked(String),
    /// It panicked more often than its [`RestartPolicy`] allows.
    RestartLimit(String),
    /// The system shut down.
    Shutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Normal => f.write_str("stopped"),
            StopReason::Panicked(m) => write!(f, "panicked: {m}"),
            StopReason::RestartLimit(m) => write!(f, "restart limit reached; last panic: {m}"),
            StopReason::Shutdown => f.write_str("system shut down"),
        }
    }
}

/// Supervision spelled as data: restart a panicking actor in place (same address, same
/// mailbox, fresh state from its factory) at most `max_restarts` times within `within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within the window; one more panic stops the actor.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in.
    pub within: Duration,
}

impl Default for RestartPolicy {
    /// Three restarts within ten seconds.
    fn default() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
        }
    }
}
