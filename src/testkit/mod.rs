//! A deterministic test kit: the same actors, run one message at a time in an order chosen by
//! a seed, on a manual clock, over virtual sockets with faults drawn from the same seed. A
//! failing seed replays exactly. (Cargo feature `testkit`, off by default.)
//!
//! # What runs
//!
//! A [`Sim`] is a system of this crate without worker threads: it dereferences to
//! [`SystemHandle`], so `spawn`, `lookup`, `listen` and `connect` work as on a [`System`](crate::System);
//! and inside the actors `Context`, `Addr`, `SockIdent`, `send_after` and `ctx.system()` are
//! the same code. What differs is underneath:
//!
//! - **Scheduling.** Nothing runs until the test asks. [`Sim::step`] picks one runnable
//!   thing with the seeded generator (an actor that has messages, or a network delivery that
//!   is due) and runs it: one actor turn with a budget of one message, or one read of a
//!   virtual socket. Everything runs on the calling thread. [`Sim::run_until_idle`] steps
//!   until nothing is runnable.
//! - **Time.** Timers (`send_after`, `send_self_after`) are set on a manual clock that starts
//!   at zero and moves only in [`Sim::advance`], which fires what falls due in deadline order
//!   (timers due at the same instant in the order they were set) and runs the system until
//!   idle after each deadline. A timer whose actor has stopped delivers nothing.
//! - **Sockets.** `listen`/`connect` open virtual sockets, in the system's socket table like
//!   real ones: `SockIdent::send`, `close`, `hand_to`, `is_open`, `peer_addr` and the refusal
//!   of stale handles run the same code. Each socket's owner sees `Connected` first, its
//!   packets in order, `Disconnected { reason }` last. Test code plays the other side with
//!   [`VirtualClient`]s ([`Sim::dial`], or [`Sim::bind`] to accept what actors dial).
//! - **Faults** ([`Faults`]), drawn from the seed: latency, split reads, resets, half-closes
//!   by the peer, peers that stop reading (then `TrySendError::Full`), listeners that
//!   refuse. Each can also be caused by hand from the test ([`VirtualClient::reset`],
//!   [`VirtualClient::shutdown_write`], [`VirtualClient::stop_reading`], [`Sim::refuse`]).
//!
//! # Replaying a seed
//!
//! Every step, delivered network event, timer and fault is recorded as a line of the trace
//! ([`Sim::trace`]); the same seed and the same test give the same trace, line for line. A
//! `Sim` dropped while its thread panics prints its seed and the end of its trace, so a
//! failing test names the seed that broke it; [`seeds`] runs only the seed in
//! `KENDYNET_SEED` when it is set, and [`run_seeds`] names the seed in the panic message.
//! Actors can add lines of their own with [`note`].
//!
//! Determinism holds as long as everything the actors do is a function of the messages they
//! get. It breaks when they
//!
//! - read the real clock (`Instant::now`, `SystemTime`; restart windows of supervised
//!   actors count real time too) or real randomness;
//! - iterate a `HashMap` with the default hasher to decide whom to send to *in what order
//!   to one actor* (the order of sends to different actors or sockets does not matter: the
//!   kit orders runnable actors by id and flushes sockets by connection, whatever order they
//!   were woken in);
//! - depend on the raw value of a [`SockIdent`](crate::SockIdent) (its table number depends
//!   on how many systems the process has run; the trace names connections `c1`, `c2`, ...);
//! - use threads, real sockets or blocking calls, or are sent to from other threads while the
//!   simulation runs.
//!
//! # What is not simulated
//!
//! The epoll engine, the pollers and the work-stealing scheduler are not run: what they do
//! in parallel (two actors handling messages at the same instant on two workers) is replaced
//! by one seeded order of the same turns, and the kit's turns handle one message each, where
//! the real scheduler handles up to 128. No real socket is opened: a dial to an address
//! without a virtual listener is refused, and `connect` timeouts do not run (a virtual
//! listener answers within the latency). The socket's receive and send timeouts
//! (`ConnOptions`) and its write limit do run, on the manual clock. Kernel buffers are one
//! window per receiver ([`SimBuilder::peer_window`]); a graceful close does not linger.
//!
//! # Example
//!
//! ```
//! use kendynet::testkit::Sim;
//! use kendynet::{Actor, Context, NetEvent, WPacket};
//! use std::time::Duration;
//!
//! /// Echoes every packet; says "bye" and closes after a second without one.
//! struct Echo {
//!     seen: u64,
//! }
//!
//! enum Msg {
//!     Net(NetEvent),
//!     Idle(kendynet::SockIdent, u64),
//! }
//!
//! impl From<NetEvent> for Msg {
//!     fn from(ev: NetEvent) -> Msg {
//!         Msg::Net(ev)
//!     }
//! }
//!
//! impl Actor for Echo {
//!     type Msg = Msg;
//!     fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
//!         match msg {
//!             Msg::Net(NetEvent::Packet { sock, packet }) => {
//!                 self.seen += 1;
//!                 let _ = sock.send(WPacket::from(packet));
//!                 ctx.send_self_after(Duration::from_secs(1), Msg::Idle(sock, self.seen));
//!             }
//!             Msg::Idle(sock, seen) if seen == self.seen => {
//!                 let mut bye = WPacket::new();
//!                 bye.write_str("bye");
//!                 let _ = sock.send(bye);
//!                 let _ = sock.close();
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! let sim = Sim::new(7);
//! let echo = sim.spawn(Echo { seen: 0 });
//! let addr = sim.listen("127.0.0.1:7000".parse()?, &echo)?; // the SystemHandle's listen
//! let client = sim.dial(addr)?;
//! let mut hello = WPacket::new();
//! hello.write_str("hello");
//! client.send(hello)?;
//! sim.run_until_idle();
//! assert_eq!(client.recv()?.expect("the echo").read_string()?, "hello");
//!
//! sim.advance(Duration::from_millis(999));
//! assert!(client.recv()?.is_none(), "not a second yet");
//! sim.advance(Duration::from_millis(1));
//! assert_eq!(client.recv()?.expect("the goodbye").read_string()?, "bye");
//! assert!(client.recv().is_err(), "then the end of the stream");
//! assert!(sim.trace().iter().any(|line| line.contains("Disconnected")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod net;
mod rng;
mod sched;
mod world;

pub use client::{VirtualClient, VirtualListener};
pub use net::Faults;

use crate::actor::scheduler::{Manual, Scheduler, Task, Turn};
use crate::actor::stall::TurnMark;
use crate::actor::{StopReason, SystemHandle, SystemInner};
use crate::net::ConnOptions;
use crate::runtime::transport::Transport;
use crate::runtime::{DEFAULT_MAX_CONNECTIONS, DEFAULT_OWNER_BACKLOG, ShutdownReport};
use crate::sync::{Arc, thread};
use net::{NetConfig, VirtualNet};
use sched::{Pick, SimCore};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use world::World;

/// Messages an actor handles per simulated turn.
const SIM_BUDGET: usize = 1;
/// The default of [`SimBuilder::max_steps`].
pub const DEFAULT_MAX_STEPS: usize = 1_000_000;
/// The default of [`SimBuilder::peer_window`]: 64 KiB.
pub const DEFAULT_PEER_WINDOW: usize = 64 << 10;
/// Trace lines a failing simulation prints.
const FAILURE_TAIL: usize = 40;
/// The default of [`SimBuilder::trace_limit`]: the last million lines are kept.
pub const DEFAULT_TRACE_LIMIT: usize = 1 << 20;
/// The environment variable that picks the one seed [`seeds`] runs.
pub const SEED_VAR: &str = "KENDYNET_SEED";

/// Configures a [`Sim`].
#[derive(Clone, Debug)]
pub struct SimBuilder {
    seed: u64,
    faults: Faults,
    peer_window: usize,
    max_connections: usize,
    owner_backlog: usize,
    mailbox_capacity: usize,
    conn_options: ConnOptions,
    max_steps: usize,
    trace_limit: usize,
}

impl Default for SimBuilder {
    fn default() -> SimBuilder {
        SimBuilder {
            seed: 0,
            faults: Faults::none(),
            peer_window: DEFAULT_PEER_WINDOW,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            owner_backlog: DEFAULT_OWNER_BACKLOG,
            mailbox_capacity: 0,
            conn_options: ConnOptions::default(),
            max_steps: DEFAULT_MAX_STEPS,
            trace_limit: DEFAULT_TRACE_LIMIT,
        }
    }
}

impl SimBuilder {
    /// The seed of every choice the simulation makes. Default 0.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> SimBuilder {
        self.seed = seed;
        self
    }

    /// The network's faults. Default: none.
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> SimBuilder {
        self.faults = faults;
        self
    }

    /// Bytes a receiver takes in flight (and, for a test client, unread) before the sender
    /// must wait: the stand-in for the kernel's socket buffers. Default
    /// [`DEFAULT_PEER_WINDOW`].
    #[must_use]
    pub fn peer_window(mut self, bytes: usize) -> SimBuilder {
        self.peer_window = bytes.max(1);
        self
    }

    /// As [`Builder::max_connections`](crate::Builder::max_connections).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> SimBuilder {
        self.max_connections = n.clamp(1, crate::runtime::MAX_SOCKETS_PER_SYSTEM);
        self
    }

    /// As [`Builder::owner_backlog`](crate::Builder::owner_backlog): a socket whose owner has
    /// more messages waiting is not read.
    #[must_use]
    pub fn owner_backlog(mut self, messages: usize) -> SimBuilder {
        self.owner_backlog = messages.max(1);
        self
    }

    /// As [`Builder::mailbox_capacity`](crate::Builder::mailbox_capacity).
    #[must_use]
    pub fn mailbox_capacity(mut self, n: usize) -> SimBuilder {
        self.mailbox_capacity = n;
        self
    }

    /// As [`Builder::conn_options`](crate::Builder::conn_options).
    #[must_use]
    pub fn conn_options(mut self, options: ConnOptions) -> SimBuilder {
        self.conn_options = options;
        self
    }

    /// Steps one [`Sim::run_until_idle`] may take before it gives up (a livelock: actors
    /// that keep each other busy forever). Default [`DEFAULT_MAX_STEPS`].
    #[must_use]
    pub fn max_steps(mut self, n: usize) -> SimBuilder {
        self.max_steps = n.max(1);
        self
    }

    /// How many lines of the trace are kept (the most recent; older ones are let go, so that
    /// a long run does not hold all of them). Default [`DEFAULT_TRACE_LIMIT`].
    #[must_use]
    pub fn trace_limit(mut self, lines: usize) -> SimBuilder {
        self.trace_limit = lines.max(1);
        self
    }

    /// Builds the simulation.
    ///
    /// # Panics
    /// If 4096 systems (simulated or not) are alive in this process (each has its own socket
    /// table).
    pub fn build(self) -> Sim {
        let world = Arc::new(World::new(self.seed, self.trace_limit));
        let core = Arc::new(SimCore::new(world.clone()));
        let cfg = NetConfig {
            default_options: self.conn_options,
            max_connections: self.max_connections,
            owner_backlog: self.owner_backlog,
            peer_window: self.peer_window,
        };
        let net = Arc::new(VirtualNet::new(world.clone(), self.faults, cfg));
        let transport: Arc<dyn Transport> = net.clone();
        let manual: Arc<dyn Manual> = core.clone();
        let inner = Arc::new(SystemInner::new(
            Scheduler::new_manual(manual),
            self.mailbox_capacity,
            Box::new(transport),
        ));
        crate::runtime::transport::announce_sockets_on_restart(&inner);
        world.record(format_args!("simulation starts, seed {}", self.seed));
        Sim {
            handle: SystemHandle { inner },
            world,
            core,
            net,
            max_steps: self.max_steps,
            down: false,
            turn_mark: TurnMark::new(),
        }
    }
}

/// A simulated system: a seeded, single-threaded scheduler, a manual clock and a virtual
/// network. See the [module docs](self).
///
/// `Sim` dereferences to [`SystemHandle`] for spawning, lookups, `listen` and `connect`.
/// Dropping it shuts it down (as [`Sim::shutdown`]); dropping it while the thread panics
/// prints the seed and the end of the trace instead.
pub struct Sim {
    handle: SystemHandle,
    world: Arc<World>,
    core: Arc<SimCore>,
    net: Arc<VirtualNet>,
    max_steps: usize,
    down: bool,
    /// The simulation's one "worker" marks its turns too (no watchdog looks at it).
    turn_mark: TurnMark,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.world.seed)
            .field("now", &self.world.now())
            .field("steps", &self.world.step())
            .field("actors", &self.handle.actor_count())
            .finish()
    }
}

impl std::ops::Deref for Sim {
    type Target = SystemHandle;
    fn deref(&self) -> &SystemHandle {
        &self.handle
    }
}

impl Sim {
    /// A simulation with seed `seed` and the defaults (no faults).
    pub fn new(seed: u64) -> Sim {
        SimBuilder::default().seed(seed).build()
    }

    /// A builder with the defaults.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.world.seed
    }

    /// A handle to give to code that takes a [`SystemHandle`].
    pub fn handle(&self) -> SystemHandle {
        self.handle.clone()
    }

    /// The manual clock: the time since the simulation began.
    pub fn now(&self) -> Duration {
        self.world.now()
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.world.step()
    }

    /// Runs one step: one turn (one message) of a runnable actor, or one delivery of a
    /// virtual socket, chosen with the seed. Returns false if nothing was runnable. Timers
    /// never fire here, even due ones: only [`Sim::advance`] moves time.
    ///
    /// Before and after the step, what sockets were sent (by actors, or by the test through
    /// a `SockIdent`) moves into the virtual connections, as a poller writes at the end of
    /// its pass.
    pub fn step(&self) -> bool {
        let _entered = self.world.enter();
        // What was sent since the last step (from the test, say) leaves first.
        self.net.flush();
        let deliveries = self.net.runnable();
        let Some(pick) = self.core.pick(deliveries.len()) else {
            return false;
        };
        self.world.next_step();
        match pick {
            Pick::Actor(task) => self.turn(task),
            Pick::Net(i) => {
                let (conn, side) = deliveries[i];
                self.net.deliver(conn, side);
            }
        }
        self.net.flush();
        true
    }

    fn turn(&self, task: Task) {
        let before = task.info();
        let turn = task.run(SIM_BUDGET, &self.turn_mark);
        // The cell is still alive: the live table holds it unless this turn finished it, and
        // then `Finished` holds it; only this thread runs turns, so nothing else can end it
        // meanwhile.
        let after = task.info();
        let (id, name) = (after.id, short_name(after.type_name));
        let handled = (after.started_msgs > before.started_msgs).then_some(after.started_msgs);
        match (&turn, handled) {
            (Turn::Finished(_), Some(n)) => self
                .world
                .record(format_args!("{id} {name} handles message {n} and stops")),
            (Turn::Finished(_), None) => {
                self.world.record(format_args!("{id} {name} stops"));
            }
            (_, Some(n)) => self
                .world
                .record(format_args!("{id} {name} handles message {n}")),
            (_, None) => self
                .world
                .record(format_args!("{id} {name} runs (start or control)")),
        }
        match turn {
            Turn::Done => {}
            Turn::Again => self.core.schedule(task),
            // The last reference may go here, after the turn.
            Turn::Finished(keep_alive) => drop(keep_alive),
        }
    }

    /// Runs at most `n` steps; returns how many ran (fewer if the system went idle).
    pub fn run_steps(&self, n: usize) -> usize {
        (0..n).take_while(|_| self.step()).count()
    }

    /// Steps until nothing is runnable: no actor has messages and no delivery is due (delayed
    /// chunks and timers wait for [`Sim::advance`]). Returns the steps run.
    ///
    /// # Panics
    /// After [`SimBuilder::max_steps`] steps (a livelock), naming the seed.
    pub fn run_until_idle(&self) -> usize {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(
                steps < self.max_steps,
                "kendynet::testkit: seed {}: still busy after {steps} steps (a livelock?); \
                 raise SimBuilder::max_steps if this is expected",
                self.world.seed
            );
        }
        steps
    }

    /// Moves the clock forward by `by`: every timer and every delayed network event that
    /// falls due on the way happens at its instant, in deadline order, and the system runs
    /// until idle after each. Ends with the clock at `now + by` and the system idle.
    /// `advance(Duration::ZERO)` fires what is due now.
    ///
    /// # Panics
    /// As [`Sim::run_until_idle`]; also when more than [`SimBuilder::max_steps`] instants
    /// fall due in one call (a timer that keeps setting itself with no delay), naming the
    /// seed.
    pub fn advance(&self, by: Duration) {
        let target = self.world.now().saturating_add(by);
        let mut instants = 0;
        loop {
            self.run_until_idle();
            let now = self.world.now();
            let next = [self.core.next_deadline(), self.net.next_event()]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|&at| at <= target) else {
                break;
            };
            instants += 1;
            assert!(
                instants < self.max_steps,
                "kendynet::testkit: seed {}: timers keep falling due at {:?} (a timer that \
                 sets itself again with no delay?)",
                self.world.seed,
                self.world.now()
            );
            self.world.set_now(at.max(now));
            let _entered = self.world.enter();
            for (seq, due, key, aux, fire) in self.core.take_due(self.world.now()) {
                self.world.record(format_args!(
                    "timer {seq} fires (due at {:.6}s)",
                    due.as_secs_f64()
                ));
                fire.fire(aux, key);
            }
            self.net.expire();
        }
        self.world.set_now(target);
    }

    /// Whether nothing is runnable now.
    pub fn is_idle(&self) -> bool {
        self.core.pending().0 == 0 && self.net.runnable().is_empty()
    }

    /// Timers set and not yet fired.
    pub fn pending_timers(&self) -> usize {
        self.core.pending().1
    }

    /// A test client dials `addr` (a listener opened by an actor, or through this
    /// handle's `listen`). The actor's socket appears when a step delivers the accept.
    ///
    /// # Errors
    /// `ConnectionRefused` if no virtual listener is there, or it refuses ([`Sim::refuse`],
    /// [`Faults::refuse`]); `InvalidInput` for a listener of the test's own ([`Sim::bind`]).
    pub fn dial(&self, addr: SocketAddr) -> io::Result<VirtualClient> {
        let (conn, local) = self.net.dial(addr)?;
        Ok(VirtualClient::dialled(self.net.clone(), conn, local, addr))
    }

    /// Listens on `addr` as the test: actors that `connect` to it are taken with
    /// [`VirtualListener::accept`]. Port 0 picks a free port.
    ///
    /// # Errors
    /// `AddrInUse` if something listens there already.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<VirtualListener> {
        let addr = self.net.bind(addr)?;
        Ok(VirtualListener::new(self.net.clone(), addr))
    }

    /// Makes the listener on `addr` refuse every connection (`refusing`), or accept again.
    ///
    /// # Errors
    /// `NotFound` if nothing listens on `addr`.
    pub fn refuse(&self, addr: SocketAddr, refusing: bool) -> io::Result<()> {
        if self.net.set_refusing(addr, refusing) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("nothing listens on {addr} in this simulation"),
            ))
        }
    }

    /// The trace so far: one line per step, delivered network event, timer set or fired,
    /// fault, and test-side action, stamped with the clock and the step. Only the last
    /// [`SimBuilder::trace_limit`] lines are kept.
    pub fn trace(&self) -> Vec<String> {
        self.world.lines()
    }

    /// How many of the oldest trace lines were let go to stay within the limit.
    pub fn trace_lines_dropped(&self) -> u64 {
        self.world.dropped_lines()
    }

    /// The trace as one text, a line each.
    pub fn trace_text(&self) -> String {
        self.world.lines().join("\n")
    }

    /// Adds a line to the trace.
    pub fn note(&self, what: impl fmt::Display) {
        self.world.record(format_args!("note: {what}"));
    }

    /// Shuts down as [`System::shutdown`](crate::System::shutdown) does: stops accepting,
    /// lets the actors drain their mailboxes, closes every socket gracefully (what was sent
    /// is delivered first, as far as the peers read), stops the actors, children before
    /// their parents (each handles what is queued, then runs `stopped`), and reports.
    /// Sockets whose peer does not read are aborted, which makes the report not graceful.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> ShutdownReport {
        self.down = true;
        let inner = self.handle.inner.clone();
        let dropped_before = inner.dropped();
        self.world.record(format_args!("shutdown begins"));
        inner.sched.begin_shutdown();
        self.net.stop_accepting();
        self.run_until_idle();
        self.net.close_all_sockets();
        self.run_until_idle();
        let forced = self.net.abort_all();
        self.run_until_idle();
        while let Some(depth) = inner.deepest_live() {
            inner.stop_actors(depth, StopReason::Shutdown, true);
            self.run_until_idle();
            if inner.deepest_live() == Some(depth) {
                // Someone keeps it from draining (a timer that keeps sending, say).
                inner.stop_actors(depth, StopReason::Shutdown, false);
                self.run_until_idle();
                if inner.deepest_live() == Some(depth) {
                    break;
                }
            }
        }
        let actors_left = inner.live_count();
        let sockets_left = self.handle.open_sockets();
        self.core.clear();
        self.net.clear();
        self.world.record(format_args!(
            "shutdown ends: {forced} socket(s) aborted, {actors_left} actor(s) left"
        ));
        let dropped = inner.dropped().since(&dropped_before);
        ShutdownReport {
            graceful: forced == 0 && actors_left == 0 && sockets_left == 0 && dropped.total() == 0,
            drained: true,
            actors_left,
            sockets_left,
            dropped,
            // The simulation starts no threads (see `SystemHandle::spawn_dedicated`).
            blocking_threads_left: 0,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if thread::panicking() {
            // Running the actors now could panic again; what the simulation holds leaks.
            eprintln!(
                "kendynet::testkit: the simulation with seed {seed} was running when the \
                 test failed (replay it alone with {SEED_VAR}={seed}); the last lines of its \
                 trace:\n{tail}",
                seed = self.world.seed,
                tail = self.world.tail(FAILURE_TAIL)
            );
            self.down = true;
            return;
        }
        self.shutdown_inner();
    }
}

/// A type's name without its path (`chat::Room` -> `Room`, `a::B<c::D>` -> `B<..>`).
fn short_name(full: &'static str) -> String {
    let (base, generic) = match full.find('<') {
        Some(i) => (&full[..i], true),
        None => (full, false),
    };
    let last = base.rsplit("::").next().unwrap_or(base);
    if generic {
        format!("{last}<..>")
    } else {
        last.to_owned()
    }
}

/// Adds a line to the trace of the simulation whose step runs on this thread (from an
/// actor's handler, say); does nothing outside a simulation.
pub fn note(what: impl fmt::Display) {
    world::note_current(format_args!("{what}"));
}

/// The seeds a randomised test runs: `0..count`, or only the seed in the environment
/// variable `KENDYNET_SEED` (decimal, or hex with `0x`) when it is set, to replay a failure.
///
/// # Panics
/// If `KENDYNET_SEED` is set to something that is not a number.
pub fn seeds(count: u64) -> Vec<u64> {
    match std::env::var(SEED_VAR) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            vec![parsed.unwrap_or_else(|_| panic!("{SEED_VAR}={s:?} is not a seed"))]
        }
        Err(_) => (0..count).collect(),
    }
}

/// Runs `test` once per seed; if it panics, panics again with a message that names the seed
/// (and how to replay it alone).
///
/// # Panics
/// When `test` does, for the first seed that fails.
///
/// # Example
///
/// ```
/// use kendynet::testkit::{Sim, run_seeds, seeds};
///
/// run_seeds(seeds(8), |seed| {
///     let sim = Sim::new(seed);
///     // ... spawn, dial, step, check ...
///     sim.run_until_idle();
/// });
/// ```
pub fn run_seeds(seeds: impl IntoIterator<Item = u64>, mut test: impl FnMut(u64)) {
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(seed)));
        if let Err(payload) = outcome {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            panic!(
                "kendynet::testkit: failed with seed {seed} (replay it alone with {SEED_VAR}={seed}): {what}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(short_name("chat::rooms::Room"), "Room");
        assert_eq!(short_name("Echo"), "Echo");
        assert_eq!(short_name("a::Pool<b::Worker<c::D>>"), "Pool<..>");
    }
}
