//! Virtual sockets: in-memory connections between actors' sockets and test code, with faults
//! drawn from the seed.
//!
//! # The model
//!
//! A connection has two ends, the dialer's and the acceptor's. An end is an actor's socket (a
//! slot in the simulated system's socket table, reached through a [`SockIdent`] exactly as a
//! real one: the same `send`, `close`, `hand_to` and stale-handle checks) or a test's
//! [`VirtualClient`](super::VirtualClient). Between the ends run two pipes, one per
//! direction, each an ordered queue of chunks: `Open` (the accept or the completed dial),
//! bytes, `Eof` (a FIN) and `Reset`. A chunk is due at a virtual instant (the latency fault);
//! chunks of one pipe never overtake each other, except a reset, which discards what was in
//! flight.
//!
//! Toward an actor's socket, every due chunk is a *delivery* that a simulation step can pick,
//! as it picks actor turns: so the seed interleaves the network with the actors. A delivery
//! reads one or more chunks (the split fault cuts one write into several chunks; several
//! chunks may also be read at once), cuts complete packets with the same framing rules as a
//! real connection (the maximum packet length included) and stages the events; they reach the
//! socket's current owner after the step, in order, as the pollers deliver them. Toward a test
//! client nothing runs: the client reads what is due when it asks.
//!
//! What an actor sends goes the other way: `SockIdent::send` queues the frame in the slot and
//! marks it dirty through the table's [`PollerLink`]; after each step the kit moves dirty
//! outboxes into the end's send queue and from there into the pipe, as far as the peer's
//! receive window allows (a peer that stops reading fills it: the send queue then grows
//! until the socket's write limit refuses sends with `TrySendError::Full`).

use super::rng::SimRng;
use super::world::World;
use crate::actor::{Recipient, SystemInner};
use crate::net::packet::parse_header;
use crate::net::{ConnOptions, DisconnectReason, RPacket};
use crate::runtime::sock_ident::system_id;
use crate::runtime::table::{Admission, Life, NewSlot, PollerLink, SockTable, TableLease};
use crate::runtime::transport::Transport;
use crate::runtime::{CloseWhenHandled, NetEvent, SockIdent};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The dialer's end of a connection.
pub(crate) const DIAL: usize = 0;
/// The acceptor's end.
pub(crate) const ACCEPT: usize = 1;

/// The first port given to a listener bound to port 0.
const FIRST_LISTEN_PORT: u16 = 20_000;
/// The first port of the test clients' addresses.
const FIRST_CLIENT_PORT: u16 = 40_000;

/// Faults of the virtual network, each drawn from the simulation's seed.
///
/// All are off by default ([`Faults::none`]); each setter turns one on. Probabilities are
/// clamped to `0.0..=1.0`.
///
/// # Example
///
/// ```
/// use kendynet::testkit::{Faults, Sim};
/// use std::time::Duration;
///
/// let faults = Faults::none()
///     .latency(Duration::from_millis(5))
///     .split(0.5)
///     .reset(0.01);
/// let sim = Sim::builder().seed(42).faults(faults).build();
/// # drop(sim);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    latency: Duration,
    split: f64,
    reset: f64,
    half_close: f64,
    stall: f64,
    refuse: f64,
}

impl Faults {
    /// No faults: every chunk arrives at once, whole, in order.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Delay: each chunk takes a random time in `0..=max` of the manual clock to arrive
    /// (chunks of one direction stay in order). Delayed chunks arrive only when
    /// [`Sim::advance`](super::Sim::advance) moves the clock past them.
    #[must_use]
    pub fn latency(mut self, max: Duration) -> Faults {
        self.latency = max;
        self
    }

    /// Split: each write is cut, with probability `p`, into 2 to 4 chunks that arrive as
    /// separate reads. What a socket's owner sees does not change (the packets are
    /// reassembled); only when it sees them.
    #[must_use]
    pub fn split(mut self, p: f64) -> Faults {
        self.split = p.clamp(0.0, 1.0);
        self
    }

    /// Reset: each delivery to an actor's socket resets the connection instead, with
    /// probability `p`. The socket's owner gets `Disconnected { reason: Reset }`; what was in
    /// flight either way and what the socket had queued for sending are lost; the peer's
    /// reads and writes fail with `ConnectionReset`.
    #[must_use]
    pub fn reset(mut self, p: f64) -> Faults {
        self.reset = p.clamp(0.0, 1.0);
        self
    }

    /// Half-close by the peer: after each write of a test client, with probability `p`, the
    /// client shuts its writing side down (a FIN follows the write; its later writes fail
    /// with `BrokenPipe`). The socket's owner then sees its packets and
    /// `Disconnected { reason: PeerClosed }`.
    #[must_use]
    pub fn half_close(mut self, p: f64) -> Faults {
        self.half_close = p.clamp(0.0, 1.0);
        self
    }

    /// A reader that stops reading: each time an actor's socket has bytes for a test client,
    /// with probability `p` the client stops reading (as
    /// [`VirtualClient::stop_reading`](super::VirtualClient::stop_reading); at most once per
    /// connection, until the test resumes it). Its window
    /// fills, the socket's send queue grows, and sends fail with `TrySendError::Full` once
    /// the socket's write limit is reached.
    #[must_use]
    pub fn stall(mut self, p: f64) -> Faults {
        self.stall = p.clamp(0.0, 1.0);
        self
    }

    /// A listener that refuses: each connection attempt is refused with probability `p`
    /// (`ConnectionRefused` for a test client, `ConnectFailed` for an actor).
    #[must_use]
    pub fn refuse(mut self, p: f64) -> Faults {
        self.refuse = p.clamp(0.0, 1.0);
        self
    }

    /// Draws a latency.
    fn draw_latency(&self, rng: &mut SimRng) -> Duration {
        if self.latency.is_zero() {
            return Duration::ZERO;
        }
        let max = u64::try_from(self.latency.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.next_u64() % max.saturating_add(1))
    }
}

/// The limits a simulated system's sockets live under.
#[derive(Clone, Debug)]
pub(crate) struct NetConfig {
    pub(crate) default_options: ConnOptions,
    pub(crate) max_connections: usize,
    pub(crate) owner_backlog: usize,
    /// Bytes in flight (plus unread, for a test client) that a receiver takes before the
    /// sender must wait.
    pub(crate) peer_window: usize,
}

/// Slots marked dirty by sends and closes: the table's link to the simulation.
#[derive(Default)]
pub(crate) struct Dirty(Mutex<Vec<u32>>);

impl PollerLink for Dirty {
    fn mark_dirty(&self, _poller: usize, index: u32) {
        self.0.lock().unwrap().push(index);
    }
}

/// What a pipe carries.
enum Item {
    /// The connection opened: the accept (toward the acceptor) or the completed dial.
    Open,
    /// A dial was refused (toward an actor that dialled).
    Refused,
    Data(Bytes),
    /// The sender's FIN.
    Eof,
    /// The connection was reset.
    Reset,
}

struct Chunk {
    at: Duration,
    item: Item,
}

/// One direction of a connection.
#[derive(Default)]
struct Pipe {
    items: VecDeque<Chunk>,
    /// Data bytes in `items`.
    bytes: usize,
    /// The due time of the last chunk: later chunks are not due before it.
    last_at: Duration,
}

impl Pipe {
    fn push(&mut self, at: Duration, item: Item) {
        let at = at.max(self.last_at);
        self.last_at = at;
        if let Item::Data(b) = &item {
            self.bytes += b.len();
        }
        self.items.push_back(Chunk { at, item });
    }

    fn pop(&mut self) -> Option<Chunk> {
        let c = self.items.pop_front()?;
        if let Item::Data(b) = &c.item {
            self.bytes -= b.len();
        }
        Some(c)
    }

    /// Drops what is in flight, keeping an `Open` that has not arrived (a reset does not
    /// undo an accept).
    fn discard(&mut self) {
        self.items.retain(|c| matches!(c.item, Item::Open));
        self.bytes = 0;
    }

    /// Drops everything, an `Open` included (nobody will read it).
    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    fn front_due(&self, now: Duration) -> Option<&Item> {
        self.items.front().filter(|c| c.at <= now).map(|c| &c.item)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its `Open` has not arrived yet: no slot.
    Connecting,
    Open,
    /// Closing gracefully: no more reads; ends once the send queue has left.
    Closing,
    Ended,
}

/// An actor's socket.
struct ActorEnd {
    phase: Phase,
    /// Until `Open` arrives: who will own the socket, and its admission if taken already.
    pending: Option<(Recipient<NetEvent>, Option<Admission>)>,
    sock: Option<SockIdent>,
    options: ConnOptions,
    rbuf: BytesMut,
    /// Frames moved out of the slot's outbox and not yet into the pipe, with when.
    queue: VecDeque<(Duration, Bytes)>,
    queued: usize,
    last_recv: Duration,
    fin_sent: bool,
    /// The peer's FIN has arrived: no more input; the socket closes once its owner has
    /// handled `InputEnded` (and with it reports `PeerClosed`).
    peer_eof: bool,
    /// Queued output passed the high-water mark and has not fallen to the low mark since
    /// (the slow-consumer policy applies), and since when.
    above_high: Option<Duration>,
    /// Reading paused by the owner (`SockIdent::pause_reading`).
    user_paused: bool,
    /// When the first byte of the partly received packet arrived.
    packet_started: Option<Duration>,
}

/// A test's end of a connection.
struct TestEnd {
    rbuf: BytesMut,
    window: usize,
    reading: bool,
    /// The stall fault has hit it (once per connection: `resume_reading` undoes it).
    stalled: bool,
    /// Its FIN has been sent (shut down, closed, or half-closed by the fault).
    write_shut: bool,
    /// A FIN has arrived.
    eof: bool,
    reset: bool,
    /// Its handle is gone: what arrives is discarded.
    dropped: bool,
}

enum End {
    Actor(Box<ActorEnd>),
    Test(TestEnd),
    /// Nobody: a refused dial's other side.
    Absent,
}

struct Conn {
    ends: [End; 2],
    /// `pipes[i]` carries bytes toward `ends[i]`.
    pipes: [Pipe; 2],
    addrs: [SocketAddr; 2],
}

enum ListenerKind {
    Actor {
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    },
    /// A test's listener: accepted connections wait for `VirtualListener::accept`.
    Test { accepted: VecDeque<u64> },
}

struct Listener {
    kind: ListenerKind,
    refusing: bool,
}

/// Something to deliver once the state's lock is released.
enum Out {
    /// An event of an actor's socket (connection `conn`, end `side`).
    Sock {
        sock: SockIdent,
        ev: NetEvent,
        conn: u64,
        side: usize,
    },
    /// A failed dial.
    Direct {
        owner: Recipient<NetEvent>,
        ev: NetEvent,
        conn: u64,
    },
}

struct NetState {
    world: Arc<World>,
    table: &'static SockTable,
    cfg: NetConfig,
    link: Arc<Dirty>,
    rng: SimRng,
    faults: Faults,
    listeners: BTreeMap<SocketAddr, Listener>,
    conns: BTreeMap<u64, Conn>,
    /// Which connection end each slot index holds.
    slots: HashMap<u32, (u64, usize)>,
    next_conn: u64,
    next_listen_port: u16,
    next_client_port: u16,
    /// Sockets that shutdown had to abort.
    forced: usize,
}

/// The virtual network of one simulated system: its transport.
pub(crate) struct VirtualNet {
    world: Arc<World>,
    lease: TableLease,
    link: Arc<Dirty>,
    cfg: NetConfig,
    shutting_down: AtomicBool,
    state: Mutex<NetState>,
}

/// Names a connection end in the trace: `c3:a` is connection 3's acceptor, `c3:d` its dialer.
struct EndName(u64, usize);

impl fmt::Display for EndName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = if self.1 == DIAL { 'd' } else { 'a' };
        write!(f, "c{}:{side}", self.0)
    }
}

/// A payload for the trace: its length and first bytes.
struct Preview<'a>(&'a [u8]);

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0.len())?;
        for b in self.0.iter().take(12) {
            write!(f, " {b:02x}")?;
        }
        if self.0.len() > 12 {
            f.write_str(" ..")?;
        }
        Ok(())
    }
}

impl VirtualNet {
    /// A virtual network on a socket table of its own.
    ///
    /// # Panics
    /// If 4096 systems (simulated or not) are alive in this process.
    pub(crate) fn new(world: Arc<World>, faults: Faults, cfg: NetConfig) -> VirtualNet {
        let lease = TableLease::acquire().expect("too many systems are alive in this process");
        let link = Arc::new(Dirty::default());
        let rng = SimRng::new(world.seed, 2);
        let state = NetState {
            world: world.clone(),
            table: lease.table(),
            cfg: cfg.clone(),
            link: link.clone(),
            rng,
            faults,
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            slots: HashMap::new(),
            next_conn: 0,
            next_listen_port: FIRST_LISTEN_PORT,
            next_client_port: FIRST_CLIENT_PORT,
            forced: 0,
        };
        VirtualNet {
            world,
            lease,
            link,
            cfg,
            shutting_down: AtomicBool::new(false),
            state: Mutex::new(state),
        }
    }

    fn table(&self) -> &'static SockTable {
        self.lease.table()
    }

    /// Runs `f` on the state, then delivers what it staged.
    fn with_state<R>(&self, f: impl FnOnce(&mut NetState, &mut Vec<Out>) -> R) -> R {
        let mut out = Vec::new();
        let r = {
            let mut st = self.state.lock().unwrap();
            f(&mut st, &mut out)
        };
        self.dispatch(out);
        r
    }

    /// The deliveries a step may pick now, in a fixed order.
    pub(crate) fn runnable(&self) -> Vec<(u64, usize)> {
        let st = self.state.lock().unwrap();
        let now = self.world.now();
        let mut found = Vec::new();
        for (&no, conn) in &st.conns {
            for side in [DIAL, ACCEPT] {
                if st.can_deliver(conn, side, now) {
                    found.push((no, side));
                }
            }
        }
        found
    }

    /// Runs one delivery toward an actor's socket.
    pub(crate) fn deliver(&self, no: u64, side: usize) {
        self.with_state(|st, out| st.deliver(no, side, out));
    }

    /// After a step: moves what actors sent into the connections, lets it flow as far as
    /// windows allow, finishes graceful closes, and forgets finished connections.
    pub(crate) fn flush(&self) {
        let dirty = std::mem::take(&mut *self.link.0.lock().unwrap());
        self.with_state(|st, out| st.flush(dirty, out));
    }

    /// Ends the sockets whose send or receive timeout has passed.
    pub(crate) fn expire(&self) {
        self.with_state(|st, out| st.expire(out));
    }

    /// The next instant at which something happens on the network by itself: a delayed
    /// chunk falls due toward an actor's socket, or a socket's timeout passes.
    pub(crate) fn next_event(&self) -> Option<Duration> {
        let st = self.state.lock().unwrap();
        let now = self.world.now();
        let mut next: Option<Duration> = None;
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n: Duration| n.min(t)));
        for conn in st.conns.values() {
            for side in [DIAL, ACCEPT] {
                let End::Actor(end) = &conn.ends[side] else {
                    continue;
                };
                if let Some(c) = conn.pipes[side].items.front()
                    && c.at > now
                {
                    consider(c.at);
                }
                if let Some(t) = end.deadline() {
                    consider(t);
                }
            }
        }
        next
    }

    /// Shutdown, step 1: no more accepts or dials.
    pub(crate) fn stop_accepting(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let listeners = std::mem::take(&mut self.state.lock().unwrap().listeners);
        drop(listeners);
    }

    /// Shutdown, step 3: every open socket closes gracefully.
    pub(crate) fn close_all_sockets(&self) {
        for (_, index) in self.table().begin_closing_all() {
            self.link.mark_dirty(0, index);
        }
    }

    /// Ends every socket still alive (their owners are told), and frees every slot.
    /// Returns how many had to be aborted.
    pub(crate) fn abort_all(&self) -> usize {
        self.with_state(|st, out| {
            let nos: Vec<u64> = st.conns.keys().copied().collect();
            for no in nos {
                for side in [DIAL, ACCEPT] {
                    if st.end_alive(no, side) {
                        st.forced += 1;
                        st.end_actor(no, side, DisconnectReason::ClosedLocally, out);
                    }
                }
            }
            st.forced
        })
    }

    /// After shutdown: forgets the listeners and every connection but those a test client
    /// still reads (dropped outside the lock: they may hold owners), and frees every slot.
    pub(crate) fn clear(&self) {
        let (conns, listeners) = {
            let mut st = self.state.lock().unwrap();
            st.slots.clear();
            let (keep, gone): (BTreeMap<u64, Conn>, BTreeMap<u64, Conn>) =
                std::mem::take(&mut st.conns)
                    .into_iter()
                    .partition(|(_, c)| {
                        c.ends
                            .iter()
                            .any(|e| matches!(e, End::Test(t) if !t.dropped))
                    });
            st.conns = keep;
            (gone, std::mem::take(&mut st.listeners))
        };
        drop((conns, listeners));
        let mut live = Vec::new();
        self.table().for_each_live(|id, _| live.push(id));
        for id in live {
            self.table().release(id);
        }
    }

    // ----- the test side -----

    /// A test client dials `addr`; returns its connection.
    pub(crate) fn dial(&self, addr: SocketAddr) -> io::Result<(u64, SocketAddr)> {
        self.with_state(|st, _| st.dial_from_test(addr))
    }

    /// A test listens on `addr` for actors' dials; returns the bound address.
    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let mut st = self.state.lock().unwrap();
        let addr = st.claim_addr(addr)?;
        st.listeners.insert(
            addr,
            Listener {
                kind: ListenerKind::Test {
                    accepted: VecDeque::new(),
                },
                refusing: false,
            },
        );
        st.world.record(format_args!("test listens on {addr}"));
        Ok(addr)
    }

    /// The next connection an actor dialled to a test's listener.
    pub(crate) fn accept(&self, addr: SocketAddr) -> Option<(u64, SocketAddr)> {
        let mut st = self.state.lock().unwrap();
        let Some(Listener {
            kind: ListenerKind::Test { accepted },
            ..
        }) = st.listeners.get_mut(&addr)
        else {
            return None;
        };
        let no = accepted.pop_front()?;
        let peer = st.conns.get(&no).map(|c| c.addrs[DIAL])?;
        st.world.record(format_args!(
            "test accepts {} from {peer}",
            EndName(no, ACCEPT)
        ));
        Some((no, peer))
    }

    /// A test's listener goes away: connections it has not accepted are reset.
    pub(crate) fn unbind(&self, addr: SocketAddr) {
        self.with_state(|st, out| {
            let Some(listener) = st.listeners.remove(&addr) else {
                return;
            };
            if let ListenerKind::Test { accepted } = listener.kind {
                for no in accepted {
                    st.test_gone(no, ACCEPT, true, out);
                }
            }
        });
    }

    /// Makes the listener on `addr` refuse (or accept again); false if there is none.
    pub(crate) fn set_refusing(&self, addr: SocketAddr, refusing: bool) -> bool {
        let mut st = self.state.lock().unwrap();
        let Some(l) = st.listeners.get_mut(&addr) else {
            return false;
        };
        l.refusing = refusing;
        st.world.record(format_args!(
            "listener {addr} {}",
            if refusing { "refuses" } else { "accepts" }
        ));
        true
    }

    pub(crate) fn client_write(&self, no: u64, side: usize, data: Bytes) -> io::Result<()> {
        self.with_state(|st, _| st.test_write(no, side, data))
    }

    pub(crate) fn client_recv(&self, no: u64, side: usize) -> io::Result<Option<RPacket>> {
        self.with_state(|st, out| {
            let r = st.test_recv(no, side);
            st.pump(no, out);
            r
        })
    }

    pub(crate) fn client_recv_bytes(&self, no: u64, side: usize) -> io::Result<Vec<u8>> {
        self.with_state(|st, out| {
            let r = st.test_recv_bytes(no, side);
            st.pump(no, out);
            r
        })
    }

    pub(crate) fn client_shutdown(&self, no: u64, side: usize) {
        self.with_state(|st, _| st.test_shutdown(no, side, "shuts its writing side down"));
    }

    pub(crate) fn client_reset(&self, no: u64, side: usize) {
        self.with_state(|st, out| {
            st.world
                .record(format_args!("{} resets the connection", EndName(no, side)));
            st.reset_conn(no, None, out);
        });
    }

    pub(crate) fn client_set_reading(&self, no: u64, side: usize, reading: bool) {
        self.with_state(|st, out| {
            if let Some(End::Test(t)) = st.conns.get_mut(&no).map(|c| &mut c.ends[side]) {
                t.reading = reading;
            }
            st.world.record(format_args!(
                "{} {} reading",
                EndName(no, side),
                if reading { "resumes" } else { "stops" }
            ));
            st.pump(no, out);
        });
    }

    pub(crate) fn client_drop(&self, no: u64, side: usize) {
        self.with_state(|st, out| st.test_gone(no, side, false, out));
    }

    /// Hands staged events to the sockets' current owners, a batch per run of one socket's
    /// events, as the pollers do; frees the slots whose `Disconnected` went out.
    fn dispatch(&self, out: Vec<Out>) {
        let mut batch: Vec<NetEvent> = Vec::new();
        let mut run: Option<(SockIdent, bool)> = None;
        for o in out {
            match o {
                Out::Sock {
                    sock,
                    ev,
                    conn,
                    side,
                } => {
                    if let Some((s, ends)) = run
                        && s != sock
                    {
                        self.hand_over(s, ends, &mut batch);
                        run = None;
                    }
                    self.trace_event(EndName(conn, side), sock, &ev);
                    let ends = matches!(ev, NetEvent::Disconnected { .. });
                    run = Some((sock, run.is_some_and(|(_, e)| e) || ends));
                    batch.push(ev);
                }
                Out::Direct { owner, ev, conn } => {
                    if let Some((s, ends)) = run.take() {
                        self.hand_over(s, ends, &mut batch);
                    }
                    if let NetEvent::ConnectFailed { addr, error } = &ev {
                        self.world.record(format_args!(
                            "{} -> {}: ConnectFailed {addr}: {error}",
                            EndName(conn, DIAL),
                            owner.id()
                        ));
                    }
                    let _ = owner.force(ev);
                }
            }
        }
        if let Some((s, ends)) = run {
            self.hand_over(s, ends, &mut batch);
        }
    }

    fn trace_event(&self, end: EndName, sock: SockIdent, ev: &NetEvent) {
        let owner = sock
            .slot()
            .and_then(|st| st.owner.as_ref().map(Recipient::id));
        let to = match owner {
            Some(id) => id.to_string(),
            None => "nobody".to_owned(),
        };
        match ev {
            NetEvent::Connected { peer, .. } => self
                .world
                .record(format_args!("{end} -> {to}: Connected from {peer}")),
            NetEvent::Packet { packet, .. } => self.world.record(format_args!(
                "{end} -> {to}: Packet {}",
                Preview(packet.payload())
            )),
            NetEvent::Disconnected { reason, .. } => self
                .world
                .record(format_args!("{end} -> {to}: Disconnected ({reason})")),
            NetEvent::InputEnded { .. } => {
                self.world.record(format_args!("{end} -> {to}: InputEnded"))
            }
            NetEvent::Adopted { .. }
            | NetEvent::HighWater { .. }
            | NetEvent::LowWater { .. }
            | NetEvent::ConnectFailed { .. } => {}
        }
    }

    /// As the poller's: deliver to the current owner; a socket nobody owns any more is
    /// closed; the last event frees the slot.
    fn hand_over(&self, sock: SockIdent, ends: bool, batch: &mut Vec<NetEvent>) {
        let owner = sock.slot().and_then(|st| st.owner.clone());
        let waiting = owner.as_ref().and_then(|o| o.deliver_batch(batch));
        if waiting.is_none() {
            batch.clear();
            if !ends {
                let _ = sock.close();
            }
        }
        drop(owner);
        if ends {
            self.table().release(sock.slot_id());
            let mut st = self.state.lock().unwrap();
            st.slots.remove(&sock.index());
        }
    }
}

impl Transport for VirtualNet {
    fn sock_table(&self) -> &'static SockTable {
        self.table()
    }

    fn default_options(&self) -> ConnOptions {
        self.cfg.default_options.clone()
    }

    fn supports_handshakes(&self) -> bool {
        false
    }

    fn listen(
        self: Arc<Self>,
        _system: &Arc<SystemInner>,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    ) -> io::Result<SocketAddr> {
        let mut st = self.state.lock().unwrap();
        let addr = st.claim_addr(addr)?;
        st.world
            .record(format_args!("{} listens on {addr}", owner.id()));
        st.listeners.insert(
            addr,
            Listener {
                kind: ListenerKind::Actor { owner, options },
                refusing: false,
            },
        );
        Ok(addr)
    }

    fn connect(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        _timeout: Duration,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    ) {
        let ticket = if system.is_shutting_down() || self.shutting_down.load(Ordering::SeqCst) {
            None
        } else {
            Admission::try_new(self.table(), self.cfg.max_connections)
        };
        let Some(ticket) = ticket else {
            let error = io::Error::other("the system is shutting down or at its connection limit");
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
            return;
        };
        self.with_state(|st, _| st.dial_from_actor(addr, owner, ticket, options));
    }

    fn open_sockets(&self) -> usize {
        self.table().admitted()
    }
}

impl ActorEnd {
    fn new(
        owner: Recipient<NetEvent>,
        ticket: Option<Admission>,
        options: ConnOptions,
    ) -> ActorEnd {
        ActorEnd {
            phase: Phase::Connecting,
            pending: Some((owner, ticket)),
            sock: None,
            options,
            rbuf: BytesMut::new(),
            queue: VecDeque::new(),
            queued: 0,
            last_recv: Duration::ZERO,
            fin_sent: false,
            peer_eof: false,
            above_high: None,
            user_paused: false,
            packet_started: None,
        }
    }

    /// Whether it reads: open, not paused by its owner or by the pause-reading policy.
    fn reads(&self) -> bool {
        let flow_paused = self.above_high.is_some()
            && self.options.slow_consumer == crate::net::SlowConsumer::PauseReading;
        self.phase == Phase::Open && !self.user_paused && !flow_paused && !self.peer_eof
    }

    /// After output was queued or written: a watermark crossing, as the real connection
    /// reports it (`above_high` changes, and the slot learns it for the drop policy).
    fn check_watermarks(&mut self, now: Duration) -> Option<NetEvent> {
        let sock = self.sock?;
        let crossed = match self.above_high {
            None if self.queued > self.options.high_water => {
                self.above_high = Some(now);
                NetEvent::HighWater {
                    sock,
                    queued: self.queued,
                }
            }
            Some(_) if self.queued <= self.options.low_water.min(self.options.high_water) => {
                self.above_high = None;
                NetEvent::LowWater {
                    sock,
                    queued: self.queued,
                }
            }
            _ => return None,
        };
        if let Some(mut st) = sock.slot() {
            st.above_high = self.above_high.is_some();
        }
        Some(crossed)
    }

    /// When its send or receive timeout passes, if one runs.
    fn deadline(&self) -> Option<Duration> {
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            return None;
        }
        let send = match (self.queue.front(), self.options.send_timeout) {
            (Some(&(since, _)), Some(d)) => Some(since.saturating_add(d)),
            _ => None,
        };
        let reads = self.reads();
        let recv = match (reads, self.options.recv_timeout) {
            (true, Some(d)) => Some(self.last_recv.saturating_add(d)),
            _ => None,
        };
        let packet = match (reads, self.packet_started, self.options.packet_timeout) {
            (true, Some(t), Some(d)) => Some(t.saturating_add(d)),
            _ => None,
        };
        let slow = match (self.above_high, self.options.slow_consumer) {
            (Some(t), crate::net::SlowConsumer::Disconnect { grace }) => {
                Some(t.saturating_add(grace))
            }
            _ => None,
        };
        [send, recv, packet, slow].into_iter().flatten().min()
    }

    /// Which deadline has passed at `now`, in the real connection's order of precedence.
    fn expired(&self, now: Duration) -> Option<DisconnectReason> {
        if let (Some(&(since, _)), Some(d)) = (self.queue.front(), self.options.send_timeout)
            && since.saturating_add(d) <= now
        {
            return Some(DisconnectReason::SendTimeout);
        }
        if let (Some(t), crate::net::SlowConsumer::Disconnect { grace }) =
            (self.above_high, self.options.slow_consumer)
            && t.saturating_add(grace) <= now
        {
            return Some(DisconnectReason::SlowConsumer {
                queued: self.queued,
            });
        }
        let reads = self.reads();
        if let (true, Some(t), Some(d)) = (reads, self.packet_started, self.options.packet_timeout)
            && t.saturating_add(d) <= now
        {
            return Some(DisconnectReason::PacketTimeout);
        }
        if let (true, Some(d)) = (reads, self.options.recv_timeout)
            && self.last_recv.saturating_add(d) <= now
        {
            return Some(DisconnectReason::RecvTimeout);
        }
        None
    }
}

impl TestEnd {
    fn new(window: usize) -> TestEnd {
        TestEnd {
            rbuf: BytesMut::new(),
            window,
            reading: true,
            stalled: false,
            write_shut: false,
            eof: false,
            reset: false,
            dropped: false,
        }
    }
}

impl NetState {
    fn now(&self) -> Duration {
        self.world.now()
    }

    fn next_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    fn client_addr(&mut self) -> SocketAddr {
        let port = self.next_client_port;
        self.next_client_port = self
            .next_client_port
            .checked_add(1)
            .unwrap_or(FIRST_CLIENT_PORT);
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The address a listener gets: `addr`, or a free port of its IP if its port is 0.
    fn claim_addr(&mut self, mut addr: SocketAddr) -> io::Result<SocketAddr> {
        if addr.port() == 0 {
            loop {
                addr.set_port(self.next_listen_port);
                self.next_listen_port = self.next_listen_port.wrapping_add(1).max(1);
                if !self.listeners.contains_key(&addr) {
                    break;
                }
            }
        }
        if self.listeners.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is in use in this simulation"),
            ));
        }
        Ok(addr)
    }

    /// Whether a listener on `addr` takes a dial now (refusals drawn from the seed).
    fn refuses(&mut self, addr: SocketAddr) -> bool {
        match self.listeners.get(&addr) {
            None => true,
            Some(l) if l.refusing => true,
            Some(_) => {
                let p = self.faults.refuse;
                self.rng.chance(p)
            }
        }
    }

    fn latency(&mut self) -> Duration {
        let faults = &self.faults;
        self.world.now() + faults.draw_latency(&mut self.rng)
    }

    fn dial_from_test(&mut self, addr: SocketAddr) -> io::Result<(u64, SocketAddr)> {
        let refused = self.refuses(addr);
        let no = self.next_conn();
        let local = self.client_addr();
        if refused {
            self.world
                .record(format_args!("c{no} dial {addr} from {local}: refused"));
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr} refused the connection (simulated)"),
            ));
        }
        let (owner, options) = match &self.listeners[&addr].kind {
            ListenerKind::Actor { owner, options } => (owner.clone(), options.clone()),
            ListenerKind::Test { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a test client cannot dial a test's listener",
                ));
            }
        };
        let mut conn = Conn {
            ends: [
                End::Test(TestEnd::new(self.cfg.peer_window)),
                End::Actor(Box::new(ActorEnd::new(owner, None, options))),
            ],
            pipes: Default::default(),
            addrs: [local, addr],
        };
        let at = self.latency();
        conn.pipes[ACCEPT].push(at, Item::Open);
        self.conns.insert(no, conn);
        self.world
            .record(format_args!("c{no} dial {addr} from {local}"));
        Ok((no, local))
    }

    fn dial_from_actor(
        &mut self,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        ticket: Admission,
        options: ConnOptions,
    ) {
        let refused = self.refuses(addr);
        let no = self.next_conn();
        let local = self.client_addr();
        let who = owner.id();
        let dialer = End::Actor(Box::new(ActorEnd::new(owner, Some(ticket), options)));
        let mut conn = Conn {
            ends: [dialer, End::Absent],
            pipes: Default::default(),
            addrs: [local, addr],
        };
        let at = self.latency();
        if refused {
            conn.pipes[DIAL].push(at, Item::Refused);
            self.world.record(format_args!(
                "c{no} {who} dials {addr} from {local}: refused"
            ));
            self.conns.insert(no, conn);
            return;
        }
        conn.pipes[DIAL].push(at, Item::Open);
        match &mut self.listeners.get_mut(&addr).expect("not refused").kind {
            ListenerKind::Actor { owner, options } => {
                let acceptor = ActorEnd::new(owner.clone(), None, options.clone());
                conn.ends[ACCEPT] = End::Actor(Box::new(acceptor));
                let at = self.world.now() + self.faults.draw_latency(&mut self.rng);
                conn.pipes[ACCEPT].push(at, Item::Open);
            }
            ListenerKind::Test { accepted } => {
                accepted.push_back(no);
                conn.ends[ACCEPT] = End::Test(TestEnd::new(self.cfg.peer_window));
            }
        }
        self.world
            .record(format_args!("c{no} {who} dials {addr} from {local}"));
        self.conns.insert(no, conn);
    }

    /// Whether a step may deliver toward end `side` of `conn` now.
    fn can_deliver(&self, conn: &Conn, side: usize, now: Duration) -> bool {
        let End::Actor(end) = &conn.ends[side] else {
            return false;
        };
        let Some(item) = conn.pipes[side].front_due(now) else {
            return false;
        };
        match (item, end.phase) {
            (Item::Open | Item::Refused, Phase::Connecting) => true,
            (Item::Reset, Phase::Open | Phase::Closing) => true,
            (Item::Eof, Phase::Open) => end.reads(),
            // A socket whose owner has fallen behind stops reading (`Builder::owner_backlog`),
            // as does one paused by its owner or its slow-consumer policy.
            (Item::Data(_), Phase::Open) if !end.reads() => false,
            (Item::Data(_), Phase::Open) => end.sock.is_some_and(|s| {
                s.slot()
                    .and_then(|st| st.owner.as_ref().map(Recipient::mailbox_len))
                    .is_none_or(|waiting| waiting <= self.cfg.owner_backlog)
            }),
            _ => false,
        }
    }

    fn end_alive(&self, no: u64, side: usize) -> bool {
        matches!(
            self.conns.get(&no).map(|c| &c.ends[side]),
            Some(End::Actor(a)) if a.phase != Phase::Ended
        )
    }

    fn deliver(&mut self, no: u64, side: usize, out: &mut Vec<Out>) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        let kind = match conn.pipes[side].front_due(now) {
            Some(Item::Open) => 0,
            Some(Item::Refused) => 1,
            Some(Item::Data(_)) => 2,
            Some(Item::Eof) => 3,
            Some(Item::Reset) => 4,
            None => return,
        };
        if kind != 2 {
            conn.pipes[side].pop();
        }
        match kind {
            0 => self.open_end(no, side, out),
            1 => {
                let Some(conn) = self.conns.remove(&no) else {
                    return;
                };
                let [End::Actor(mut end), _] = conn.ends else {
                    return;
                };
                if let Some((owner, ticket)) = end.pending.take() {
                    drop(ticket);
                    let error = io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("{} refused the connection (simulated)", conn.addrs[ACCEPT]),
                    );
                    let addr = conn.addrs[ACCEPT];
                    out.push(Out::Direct {
                        owner,
                        ev: NetEvent::ConnectFailed { addr, error },
                        conn: no,
                    });
                }
            }
            2 => self.read(no, side, out),
            3 => self.input_ended(no, side, out),
            _ => self.end_actor(no, side, DisconnectReason::Reset, out),
        }
    }

    /// `Open` arrived: the socket gets its slot and its owner `Connected`.
    fn open_end(&mut self, no: u64, side: usize, out: &mut Vec<Out>) {
        let now = self.now();
        let table = self.table;
        let link: Arc<dyn PollerLink> = self.link.clone();
        let max = self.cfg.max_connections;
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        let peer = conn.addrs[1 - side];
        let End::Actor(end) = &mut conn.ends[side] else {
            return;
        };
        let Some((owner, ticket)) = end.pending.take() else {
            return;
        };
        let ticket = ticket.or_else(|| Admission::try_new(table, max));
        let who = owner.id();
        let id = ticket.and_then(|ticket| {
            let system = system_id(owner.system());
            table.alloc(NewSlot {
                ticket,
                owner,
                peer,
                poller: 0,
                framing: end.options.framing(),
                write_limit: end.options.write_limit,
                drop_when_high: end.options.slow_consumer == crate::net::SlowConsumer::Drop,
                link: Some(link),
                system,
            })
        });
        let Some(id) = id else {
            // Over the connection limit: closed at once, as a real accept would be.
            end.phase = Phase::Ended;
            conn.pipes[side].clear();
            self.world.record(format_args!(
                "{} for {who}: over the connection limit, closed",
                EndName(no, side)
            ));
            self.send_fin(no, side);
            return;
        };
        let sock = SockIdent::of(id);
        end.sock = Some(sock);
        end.phase = Phase::Open;
        end.last_recv = now;
        self.slots.insert(id.index, (no, side));
        out.push(Out::Sock {
            sock,
            ev: NetEvent::Connected { sock, peer },
            conn: no,
            side,
        });
    }

    /// Reads the due data chunks at the front of the pipe (some of them: the seed decides how
    /// many one read takes), and stages the complete packets.
    fn read(&mut self, no: u64, side: usize, out: &mut Vec<Out>) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        let due = conn.pipes[side]
            .items
            .iter()
            .take_while(|c| c.at <= now && matches!(c.item, Item::Data(_)))
            .count();
        let take = if due > 1 { self.rng.range(1, due) } else { 1 };
        let reset = self.faults.reset;
        if self.rng.chance(reset) {
            self.world.record(format_args!(
                "fault: c{no} reset as {} reads",
                EndName(no, side)
            ));
            return self.reset_conn(no, Some(side), out);
        }
        let End::Actor(end) = &mut conn.ends[side] else {
            return;
        };
        let Some(sock) = end.sock else {
            return;
        };
        let mut packets = Vec::new();
        let mut read = 0;
        for _ in 0..take {
            let Some(Chunk {
                item: Item::Data(b),
                ..
            }) = conn.pipes[side].pop()
            else {
                break;
            };
            read += b.len();
            if end.options.raw {
                packets.push(RPacket::from_raw(b));
            } else {
                end.rbuf.extend_from_slice(&b);
            }
        }
        end.last_recv = now;
        self.world.record(format_args!(
            "{} reads {read}B in {take} chunk(s)",
            EndName(no, side)
        ));
        let mut too_large = None;
        if !end.options.raw {
            loop {
                match parse_header(&end.rbuf, end.options.max_packet_len) {
                    Ok(Some(total)) if total <= end.rbuf.len() => {
                        packets.push(RPacket::from_frame(end.rbuf.split_to(total).freeze()));
                    }
                    Ok(_) => break,
                    Err(crate::net::packet::PacketError::TooLarge { len, max }) => {
                        too_large = Some(DisconnectReason::PacketTooLarge { len, max });
                        break;
                    }
                    Err(_) => {
                        too_large = Some(DisconnectReason::Error {
                            kind: io::ErrorKind::InvalidData,
                            code: None,
                        });
                        break;
                    }
                }
            }
        }
        // The packet deadline runs from the first byte of the packet now partly received.
        if !end.options.raw {
            if !packets.is_empty() || end.rbuf.is_empty() {
                end.packet_started = (!end.rbuf.is_empty()).then_some(now);
            } else if end.packet_started.is_none() {
                end.packet_started = Some(now);
            }
        }
        for packet in packets {
            out.push(Out::Sock {
                sock,
                ev: NetEvent::Packet { sock, packet },
                conn: no,
                side,
            });
        }
        if let Some(reason) = too_large {
            self.end_actor(no, side, reason, out);
        }
    }

    /// The peer's FIN reached an actor's socket: as on a real socket, its owner gets
    /// `InputEnded` after the packets before it, and the socket closes gracefully once that
    /// event has been handled (or at once, if a close is under way already).
    fn input_ended(&mut self, no: u64, side: usize, out: &mut Vec<Out>) {
        let Some(End::Actor(end)) = self.conns.get_mut(&no).map(|c| &mut c.ends[side]) else {
            return;
        };
        if end.peer_eof || !matches!(end.phase, Phase::Open | Phase::Closing) {
            return;
        }
        end.peer_eof = true;
        let (phase, sock) = (end.phase, end.sock);
        self.world
            .record(format_args!("{} input ends", EndName(no, side)));
        if let (Phase::Open, Some(sock)) = (phase, sock) {
            let close = CloseWhenHandled::new(sock);
            out.push(Out::Sock {
                sock,
                ev: NetEvent::InputEnded { sock, close },
                conn: no,
                side,
            });
        }
    }

    /// Ends an actor's socket: its owner gets `Disconnected { reason }` (after what was
    /// staged before), and its peer a FIN unless the connection was reset.
    fn end_actor(&mut self, no: u64, side: usize, reason: DisconnectReason, out: &mut Vec<Out>) {
        let table = self.table;
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        let End::Actor(end) = &mut conn.ends[side] else {
            return;
        };
        let was = end.phase;
        if was == Phase::Ended {
            return;
        }
        end.phase = Phase::Ended;
        end.pending = None;
        end.queue.clear();
        end.queued = 0;
        end.rbuf.clear();
        conn.pipes[side].clear();
        if let Some(sock) = end.sock
            && was != Phase::Connecting
        {
            if let Some(mut st) = table.lock_current(sock.slot_id()) {
                st.life = Life::Ended;
                st.outbox.clear();
                st.outbox_bytes = 0;
                st.conn_queued = 0;
            }
            out.push(Out::Sock {
                sock,
                ev: NetEvent::Disconnected {
                    sock,
                    reason: reason.clone(),
                },
                conn: no,
                side,
            });
        }
        if reason != DisconnectReason::Reset {
            self.send_fin(no, side);
        }
    }

    /// End `side` sends its FIN (once), after what it has sent.
    fn send_fin(&mut self, no: u64, side: usize) {
        let at = self.latency();
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        let sent = match &mut conn.ends[side] {
            End::Actor(a) => std::mem::replace(&mut a.fin_sent, true),
            End::Test(t) => std::mem::replace(&mut t.write_shut, true),
            End::Absent => true,
        };
        if !sent {
            conn.pipes[1 - side].push(at, Item::Eof);
        }
    }

    /// Resets connection `no`: in-flight bytes and queued output are lost both ways. The
    /// actor's socket at `now_side` (the one whose read drew the fault) ends at once; the
    /// other ends learn of it through a `Reset` chunk (actors) or at their next call (tests).
    fn reset_conn(&mut self, no: u64, now_side: Option<usize>, out: &mut Vec<Out>) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&no) else {
            return;
        };
        for side in [DIAL, ACCEPT] {
            if Some(side) == now_side {
                continue;
            }
            match &mut conn.ends[side] {
                End::Actor(a) => {
                    a.queue.clear();
                    a.queued = 0;
                    a.fin_sent = true;
                    if a.phase != Phase::Ended {
                        let pipe = &mut conn.pipes[side];
                        pipe.discard();
                        pipe.last_at = pipe.last_at.min(now);
                        let at = pipe.items.back().map_or(now, |c| c.at.max(now));
                        pipe.push(at, Item::Reset);
                    }
                }
                End::Test(t) => {
                    t.reset = true;
                    t.write_shut = true;
                    t.rbuf.clear();
                    conn.pipes[side].clear();
                }
                End::Absent => {}
            }
        }
        if let Some(side) = now_side {
            if let End::Actor(a) = &mut conn.ends[side] {
                a.fin_sent = true;
            }
            self.end_actor(no, side, DisconnectReason::Reset, out);
        }
    }

    /// After each step: what actors sent moves into the connections (in connection order,
    /// whatever order it was sent in), then flows on.
    fn flush(&mut self, dirty: Vec<u32>, out: &mut Vec<Out>) {
        let now = self.now();
        let mut targets: Vec<(u64, usize, u32)> = Vec::with_capacity(dirty.len());
        for index in dirty {
            match self.slots.get(&index) {
                Some(&(no, side)) => targets.push((no, side, index)),
                None => {
                    // Its socket has gone: nothing it queued can leave.
                    if let Some(slot) = self.table.get(index) {
                        let mut st = slot.state.lock();
                        st.flush_pending = false;
                        st.outbox.clear();
                        st.outbox_bytes = 0;
                    }
                }
            }
        }
        targets.sort_unstable();
        targets.dedup();
        for (no, side, index) in targets {
            let Some(slot) = self.table.get(index) else {
                continue;
            };
            let (frames, close, pause) = {
                let mut st = slot.state.lock();
                st.flush_pending = false;
                st.outbox_bytes = 0;
                let close = st.life == Life::Closing { told_conn: false };
                if close {
                    st.life = Life::Closing { told_conn: true };
                }
                let pause = std::mem::take(&mut st.pause_changed).then_some(st.user_paused);
                (std::mem::take(&mut st.outbox), close, pause)
            };
            let Some(End::Actor(end)) = self.conns.get_mut(&no).map(|c| &mut c.ends[side]) else {
                continue;
            };
            if !matches!(end.phase, Phase::Open | Phase::Closing) {
                continue;
            }
            for frame in frames {
                end.queued += frame.len();
                end.queue.push_back((now, frame));
            }
            if let Some(paused) = pause {
                end.user_paused = paused;
                if !paused {
                    // Reading again: the input deadlines start over.
                    end.last_recv = now;
                    end.packet_started = end.packet_started.map(|_| now);
                }
            }
            if let (Some(ev), Some(sock)) = (end.check_watermarks(now), end.sock) {
                out.push(Out::Sock {
                    sock,
                    ev,
                    conn: no,
                    side,
                });
            }
            if close && end.phase == Phase::Open {
                end.phase = Phase::Closing;
                self.world
                    .record(format_args!("{} closes", EndName(no, side)));
            }
        }
        let nos: Vec<u64> = self.conns.keys().copied().collect();
        for no in nos {
            self.pump(no, out);
        }
        self.conns.retain(|_, c| {
            c.ends.iter().any(|e| match e {
                End::Actor(a) => a.phase != Phase::Ended,
                End::Test(t) => !t.dropped,
                End::Absent => false,
            })
        });
    }

    /// Moves what each actor's socket of `no` has queued into the pipe toward its peer, as
    /// far as the peer's window allows; finishes a graceful close once all has left.
    fn pump(&mut self, no: u64, out: &mut Vec<Out>) {
        for side in [DIAL, ACCEPT] {
            let other = 1 - side;
            let Some(conn) = self.conns.get_mut(&no) else {
                return;
            };
            let End::Actor(end) = &conn.ends[side] else {
                continue;
            };
            if !matches!(end.phase, Phase::Open | Phase::Closing) {
                continue;
            }
            let queued = end.queued;
            // The stall fault: a reading test client stops reading.
            if queued > 0
                && let End::Test(t) = &mut conn.ends[other]
                && t.reading
                && !t.stalled
                && !t.dropped
                && !t.reset
                && self.rng.chance(self.faults.stall)
            {
                t.reading = false;
                t.stalled = true;
                self.world
                    .record(format_args!("fault: {} stops reading", EndName(no, other)));
            }
            let sink = match &conn.ends[other] {
                End::Test(t) => t.dropped || t.reset,
                End::Actor(a) => a.phase == Phase::Ended,
                End::Absent => true,
            };
            let space = match &conn.ends[other] {
                _ if sink => usize::MAX,
                End::Test(t) if !t.reading => 0,
                End::Test(t) => t
                    .window
                    .saturating_sub(t.rbuf.len() + conn.pipes[other].bytes),
                _ => self.cfg.peer_window.saturating_sub(conn.pipes[other].bytes),
            };
            let End::Actor(end) = &mut conn.ends[side] else {
                continue;
            };
            let mut moved = BytesMut::new();
            let mut left = space.min(queued);
            while left > 0 {
                let Some((_, front)) = end.queue.front_mut() else {
                    break;
                };
                let piece = if front.len() <= left {
                    end.queue.pop_front().expect("front").1
                } else {
                    front.split_to(left)
                };
                left -= piece.len();
                end.queued -= piece.len();
                if !sink {
                    moved.extend_from_slice(&piece);
                }
            }
            let closing_done = end.phase == Phase::Closing && end.queue.is_empty();
            let crossed = end.check_watermarks(self.world.now());
            let (sock, still, peer_eof) = (end.sock, end.queued, end.peer_eof);
            if let (Some(ev), Some(sock)) = (crossed, sock) {
                out.push(Out::Sock {
                    sock,
                    ev,
                    conn: no,
                    side,
                });
            }
            if let Some(mut st) = sock.and_then(|s| s.slot()) {
                st.conn_queued = still;
            }
            if !moved.is_empty() {
                self.world.record(format_args!(
                    "{} sends {}",
                    EndName(no, side),
                    Preview(&moved)
                ));
                self.write(no, other, moved.freeze());
            }
            if closing_done {
                let reason = if peer_eof {
                    DisconnectReason::PeerClosed
                } else {
                    DisconnectReason::ClosedLocally
                };
                self.end_actor(no, side, reason, out);
            }
        }
    }

    /// Puts one write into the pipe toward `to`: split into several chunks by the fault,
    /// each due after its latency.
    fn write(&mut self, no: u64, to: usize, mut data: Bytes) {
        let pieces = if data.len() > 1 && self.rng.chance(self.faults.split) {
            let n = self.rng.range(2, data.len().min(4));
            let mut cuts: Vec<usize> = (0..n - 1)
                .map(|_| self.rng.range(1, data.len() - 1))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut pieces = Vec::with_capacity(cuts.len() + 1);
            let mut at = 0;
            for cut in cuts {
                pieces.push(data.split_to(cut - at));
                at = cut;
            }
            pieces.push(data);
            pieces
        } else {
            vec![data]
        };
        let count = pieces.len();
        let mut total = 0;
        for piece in pieces {
            let at = self.latency();
            total += piece.len();
            if let Some(conn) = self.conns.get_mut(&no) {
                conn.pipes[to].push(at, Item::Data(piece));
            }
        }
        if count > 1 {
            self.world.record(format_args!(
                "fault: {total}B to {} split into {count} chunks",
                EndName(no, to)
            ));
        }
    }

    fn expire(&mut self, out: &mut Vec<Out>) {
        let now = self.now();
        let mut due = Vec::new();
        for (&no, conn) in &self.conns {
            for side in [DIAL, ACCEPT] {
                let End::Actor(end) = &conn.ends[side] else {
                    continue;
                };
                if end.deadline().is_none_or(|t| t > now) {
                    continue;
                }
                if let Some(reason) = end.expired(now) {
                    due.push((no, side, reason));
                }
            }
        }
        for (no, side, reason) in due {
            self.end_actor(no, side, reason, out);
        }
    }

    fn test_end(&mut self, no: u64, side: usize) -> io::Result<&mut TestEnd> {
        match self.conns.get_mut(&no).map(|c| &mut c.ends[side]) {
            Some(End::Test(t)) => Ok(t),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is gone",
            )),
        }
    }

    fn test_write(&mut self, no: u64, side: usize, data: Bytes) -> io::Result<()> {
        let t = self.test_end(no, side)?;
        if t.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if t.write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let len = data.len();
        self.world.record(format_args!(
            "{} writes {}",
            EndName(no, side),
            Preview(&data)
        ));
        if len > 0 {
            self.write(no, 1 - side, data);
        }
        let p = self.faults.half_close;
        if self.rng.chance(p) {
            self.test_shutdown(no, side, "half-closes (fault)");
        }
        Ok(())
    }

    /// Moves what has arrived for a test's end into its buffer; returns the end.
    fn test_pull(&mut self, no: u64, side: usize) -> io::Result<&mut TestEnd> {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&no) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is gone",
            ));
        };
        let End::Test(t) = &mut conn.ends[side] else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if t.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let pipe = &mut conn.pipes[side];
        while !t.eof && pipe.front_due(now).is_some() {
            match pipe.pop().map(|c| c.item) {
                Some(Item::Data(b)) => t.rbuf.extend_from_slice(&b),
                Some(Item::Eof) => t.eof = true,
                Some(Item::Reset) => {
                    t.reset = true;
                    return Err(io::ErrorKind::ConnectionReset.into());
                }
                _ => {}
            }
        }
        Ok(t)
    }

    fn test_recv_bytes(&mut self, no: u64, side: usize) -> io::Result<Vec<u8>> {
        let t = self.test_pull(no, side)?;
        if t.rbuf.is_empty() && t.eof {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let bytes = t.rbuf.split().to_vec();
        if !bytes.is_empty() {
            self.world.record(format_args!(
                "{} reads {}",
                EndName(no, side),
                Preview(&bytes)
            ));
        }
        Ok(bytes)
    }

    fn test_recv(&mut self, no: u64, side: usize) -> io::Result<Option<RPacket>> {
        let t = self.test_pull(no, side)?;
        match parse_header(&t.rbuf, usize::MAX) {
            Ok(Some(total)) if total <= t.rbuf.len() => {
                let packet = RPacket::from_frame(t.rbuf.split_to(total).freeze());
                self.world.record(format_args!(
                    "{} reads Packet {}",
                    EndName(no, side),
                    Preview(packet.payload())
                ));
                Ok(Some(packet))
            }
            _ if t.eof => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(None),
        }
    }

    fn test_shutdown(&mut self, no: u64, side: usize, what: &str) {
        let Ok(t) = self.test_end(no, side) else {
            return;
        };
        if t.write_shut {
            return;
        }
        self.world
            .record(format_args!("{} {what}", EndName(no, side)));
        self.send_fin(no, side);
    }

    /// A test's end is gone (its handle dropped, or its listener never accepted it): a FIN,
    /// or a reset if `reset`.
    fn test_gone(&mut self, no: u64, side: usize, reset: bool, out: &mut Vec<Out>) {
        let Ok(t) = self.test_end(no, side) else {
            return;
        };
        if t.dropped {
            return;
        }
        t.dropped = true;
        let was_reset = t.reset;
        if reset && !was_reset {
            self.world.record(format_args!(
                "{} is reset (never accepted)",
                EndName(no, side)
            ));
            self.reset_conn(no, None, out);
        } else if !was_reset {
            self.world
                .record(format_args!("{} closes", EndName(no, side)));
            self.send_fin(no, side);
        }
        if let Some(conn) = self.conns.get_mut(&no) {
            conn.pipes[side].clear();
        }
        self.pump(no, out);
    }
}
