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

use super::blocking_pool::Job;
use super::cell::{self, Addr, Placement, Supervision};
use super::system::{RegistryError, SystemHandle};
use super::{Actor, Context};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use super::blocking_pool::{BLOCKING_KEEP_ALIVE, BlockingError, DEFAULT_BLOCKING_THREADS};

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

/// Spawns `actor` on a thread of its own (the test kit's simulation keeps it on the
/// simulation).
pub(crate) fn spawn_dedicated<A: Actor>(
    handle: &SystemHandle,
    actor: A,
    supervision: Supervision<A>,
    placement: Placement<'_>,
) -> Result<Addr<A>, RegistryError> {
    let system = &handle.inner;
    if system.sched.is_manual() {
        return cell::spawn(system, actor, supervision, placement);
    }
    let threads = &system.blocking;
    let placement = Placement {
        dedicated: true,
        ..placement
    };
    cell::spawn_at(system, actor, supervision, placement, |id, cell| {
        threads
            .start_dedicated(id, cell)
            .map_err(|e| RegistryError::NoThread(e.to_string()))
    })
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
        spawn_dedicated(self, actor, Supervision::None, Placement::default())
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
