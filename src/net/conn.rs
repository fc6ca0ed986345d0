//! Layer 2: connections that exchange length-framed packets.
//!
//! A connection is one more kind of source in an [`Engine`], beside the layer-1 sockets: it
//! registers through the engine's registration API (`register`, `source_mut`,
//! `set_interest`, `add_timer`, `request_flush`, `deregister`) and knows nothing of the
//! others. Its state stays in the engine's table for its whole life, also while its
//! callbacks run with `&mut Engine` (so `on_packet` can send on its own connection, pause or
//! close it); every handler looks the state up again by key after a callback returns. All of
//! it runs on the engine's thread.
//!
//! A connection reads until the socket is drained (or a per-event budget is spent), cuts every
//! complete packet out of its receive buffer without copying (each [`RPacket`] shares the
//! buffer), and hands them to `on_packet` in order. Outgoing packets are queued as shared
//! frames and written with gathered `writev` calls: packets sent during a callback go out in
//! one `writev` when the read batch ends, and packets sent from elsewhere when the engine's
//! pass ends.
//!
//! Every connection ends with exactly one call of `on_disconnect`, carrying the
//! [`DisconnectReason`]; no callback runs for it afterwards and its [`ConnId`] becomes stale.
//! A graceful [`ConnId::close`] first writes everything queued, then half-closes, and lingers
//! (discarding input) until the peer closes or the send timeout passes, so that the peer
//! receives all of it.

use super::engine::{Engine, Key, Socket, Source};
use super::packet::{self, DEFAULT_MAX_PACKET_LEN, PacketError, RPacket, WPacket};
use super::sys::{self, Event, Interest, MAX_IOV};
use crate::error::TrySendError;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The default limit on bytes queued for sending on one connection.
pub const DEFAULT_WRITE_LIMIT: usize = 8 << 20;
/// The default time the oldest queued packet may wait before the connection is closed with
/// [`DisconnectReason::SendTimeout`]; it also bounds the linger of a graceful close.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How much a connection tries to read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Reads one readiness event may do before other connections get their turn.
const READS_PER_EVENT: usize = 8;
/// Frames one `writev` gathers at most.
const IOV_PER_WRITE: usize = if MAX_IOV < 256 { MAX_IOV } else { 256 };
/// A queue this short is gathered on a small stack array.
const SMALL_IOV: usize = 8;

/// Per-connection limits and modes, each with a named default.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// The largest payload accepted from the peer; a larger declared length closes the
    /// connection with [`DisconnectReason::PacketTooLarge`] before anything is reserved for it.
    /// Default [`DEFAULT_MAX_PACKET_LEN`] (1 MiB).
    pub max_packet_len: usize,
    /// Close with [`DisconnectReason::RecvTimeout`] after this long without a byte from the
    /// peer. Default: none.
    pub recv_timeout: Option<Duration>,
    /// Close with [`DisconnectReason::SendTimeout`] when the oldest queued packet has waited
    /// this long (a peer that stopped reading). Default [`DEFAULT_SEND_TIMEOUT`].
    pub send_timeout: Option<Duration>,
    /// The most bytes that may wait in the send queue; a send beyond it fails with
    /// [`TrySendError::Full`]. Default [`DEFAULT_WRITE_LIMIT`] (8 MiB).
    pub write_limit: usize,
    /// Raw mode: no framing; every read is delivered as one packet and packets are sent
    /// without their length header. Default: off.
    pub raw: bool,
}

impl Default for ConnOptions {
    fn default() -> ConnOptions {
        ConnOptions {
            max_packet_len: DEFAULT_MAX_PACKET_LEN,
            recv_timeout: None,
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            write_limit: DEFAULT_WRITE_LIMIT,
            raw: false,
        }
    }
}

impl ConnOptions {
    /// Sets [`ConnOptions::max_packet_len`].
    #[must_use]
    pub fn max_packet_len(mut self, len: usize) -> ConnOptions {
        self.max_packet_len = len;
        self
    }
    /// Sets [`ConnOptions::recv_timeout`].
    #[must_use]
    pub fn recv_timeout(mut self, timeout: Option<Duration>) -> ConnOptions {
        self.recv_timeout = timeout;
        self
    }
    /// Sets [`ConnOptions::send_timeout`].
    #[must_use]
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> ConnOptions {
        self.send_timeout = timeout;
        self
    }
    /// Sets [`ConnOptions::write_limit`].
    #[must_use]
    pub fn write_limit(mut self, bytes: usize) -> ConnOptions {
        self.write_limit = bytes;
        self
    }
    /// Sets [`ConnOptions::raw`].
    #[must_use]
    pub fn raw(mut self, raw: bool) -> ConnOptions {
        self.raw = raw;
        self
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed its end (end of stream).
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// Closed by this side ([`ConnId::close`], a handle's `close`, or shutdown).
    ClosedLocally,
    /// No byte arrived for the configured receive timeout.
    RecvTimeout,
    /// The oldest queued packet waited longer than the configured send timeout.
    SendTimeout,
    /// The peer declared a packet longer than the maximum.
    PacketTooLarge {
        /// The declared payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// Another socket error.
    Error {
        /// Its kind.
        kind: io::ErrorKind,
        /// The OS error number, where there was one.
        code: Option<i32>,
    },
}

impl DisconnectReason {
    pub(crate) fn from_io(e: &io::Error) -> DisconnectReason {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => DisconnectReason::Reset,
            io::ErrorKind::UnexpectedEof => DisconnectReason::PeerClosed,
            kind => DisconnectReason::Error {
                kind,
                code: e.raw_os_error(),
            },
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer closed the connection"),
            DisconnectReason::Reset => f.write_str("connection reset by peer"),
            DisconnectReason::ClosedLocally => f.write_str("closed locally"),
            DisconnectReason::RecvTimeout => f.write_str("receive timeout"),
            DisconnectReason::SendTimeout => f.write_str("send timeout: the peer stopped reading"),
            DisconnectReason::PacketTooLarge { len, max } => {
                write!(f, "packet of {len} bytes exceeds the maximum of {max}")
            }
            DisconnectReason::Error {
                kind,
                code: Some(c),
            } => write!(f, "{kind} (os error {c})"),
            DisconnectReason::Error { kind, code: None } => write!(f, "{kind}"),
        }
    }
}

/// A framed connection in an engine. `Copy`; once the connection has ended every call with it
/// is refused (even if its slot has been reused).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnId(pub(crate) Key);

/// Called with each received packet, in order.
pub type OnPacket = Box<dyn FnMut(&mut Engine, ConnId, RPacket)>;
/// Called once when the connection ends.
pub type OnDisconnect = Box<dyn FnOnce(&mut Engine, ConnId, DisconnectReason)>;

/// A connected socket with its options, ready to be bound to an engine as a framed
/// connection.
///
/// # Example
///
/// A layer-2 echo server:
///
/// ```no_run
/// use kendynet::net::{Connection, Engine};
/// use kendynet::WPacket;
/// use std::time::Duration;
///
/// let mut engine = Engine::new()?;
/// engine.listen("127.0.0.1:8010".parse().unwrap(), |engine, socket| {
///     let _ = Connection::new(socket).bind(
///         engine,
///         |engine, conn, packet| {
///             // Echo: the reply shares the received bytes, nothing is copied.
///             let _ = conn.send(engine, WPacket::from(packet));
///         },
///         |_, _, reason| println!("disconnected: {reason}"),
///     );
/// })?;
/// loop {
///     engine.run(Duration::from_millis(100))?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    socket: Socket,
    options: ConnOptions,
}

impl Connection {
    /// A connection over `socket` with the default [`ConnOptions`].
    pub fn new(socket: Socket) -> Connection {
        Connection {
            socket,
            options: ConnOptions::default(),
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn options(mut self, options: ConnOptions) -> Connection {
        self.options = options;
        self
    }

    /// Registers the connection with `engine`. From now on `on_packet` runs for each packet
    /// and `on_disconnect` runs once at the end, both on the engine's thread.
    ///
    /// # Errors
    /// The OS error of registering with epoll; the socket is closed then.
    pub fn bind(
        self,
        engine: &mut Engine,
        on_packet: impl FnMut(&mut Engine, ConnId, RPacket) + 'static,
        on_disconnect: impl FnOnce(&mut Engine, ConnId, DisconnectReason) + 'static,
    ) -> io::Result<ConnId> {
        let Connection { socket, options } = self;
        let Socket { fd, peer } = socket;
        let now = engine.now();
        let conn = ConnEntry {
            fd,
            peer,
            options,
            rbuf: BytesMut::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_written: 0,
            oldest_queued_at: now,
            last_recv: now,
            timer_at: None,
            dirty: false,
            in_batch: false,
            paused: false,
            state: State::Open,
            on_packet: Some(Box::new(on_packet)),
            on_disconnect: Some(Box::new(on_disconnect)),
        };
        let key = engine.register(conn, Interest::READ)?;
        if let Some(at) = engine
            .source_mut::<ConnEntry>(key)
            .and_then(|c| c.timer_to_arm())
        {
            engine.add_timer(key, at);
        }
        Ok(ConnId(key))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    /// Close requested: flushing what is queued, then half-close.
    Closing,
    /// Half-closed after a graceful close: the user has been told, input is discarded until
    /// the peer closes or the linger deadline passes.
    Lingering {
        until: Instant,
    },
}

/// The state of a framed connection: a source in the engine's table, where it stays while
/// its callbacks run (so that they can send on it, pause it or close it).
struct ConnEntry {
    fd: OwnedFd,
    peer: SocketAddr,
    options: ConnOptions,
    rbuf: BytesMut,
    /// Frames waiting to be written, oldest first; the first may be partly written.
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    head_written: usize,
    /// When the oldest frame in `queue` was queued (meaningful while it is not empty).
    oldest_queued_at: Instant,
    last_recv: Instant,
    /// The earliest timer armed for this connection, if any.
    timer_at: Option<Instant>,
    /// Packets were queued since its last flush, which it has asked for (unless `in_batch`).
    dirty: bool,
    /// Its read batch is running (`read_and_deliver`), which flushes at its end: replies
    /// queued meanwhile need no flush request to the engine.
    in_batch: bool,
    /// Reading is paused (the consumer of its packets is behind).
    paused: bool,
    state: State,
    on_packet: Option<OnPacket>,
    on_disconnect: Option<OnDisconnect>,
}

impl Source for ConnEntry {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn ready(engine: &mut Engine, key: Key, ev: Event) {
        on_ready(engine, key, ev);
    }
    fn timer(engine: &mut Engine, key: Key) {
        on_timer(engine, key);
    }
    fn flush(engine: &mut Engine, key: Key) {
        on_flush(engine, key);
    }
}

impl ConnEntry {
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match self.state {
            State::Lingering { until } => consider(until),
            State::Open | State::Closing => {
                if let (State::Open, Some(d)) = (self.state, self.options.recv_timeout) {
                    consider(self.last_recv + d);
                }
                if let (false, Some(d)) = (self.queue.is_empty(), self.options.send_timeout) {
                    consider(self.oldest_queued_at + d);
                }
            }
        }
        next
    }

    /// The deadline to arm a timer for, if the next one is earlier than any armed (and
    /// notes it as armed: the caller arms it with [`Engine::add_timer`]).
    fn timer_to_arm(&mut self) -> Option<Instant> {
        let next = self.next_deadline()?;
        if self.timer_at.is_some_and(|armed| armed <= next) {
            return None;
        }
        self.timer_at = Some(next);
        Some(next)
    }

    /// What the engine must be told after a change of state: the epoll interest, and a
    /// timer to arm if a deadline moved earlier. Hand it to [`register_changes`].
    fn changes(&mut self) -> (Interest, Option<Instant>) {
        (self.wanted_interest(), self.timer_to_arm())
    }

    /// Whether queuing `len` more bytes would pass the write limit (a single packet larger
    /// than the limit is still accepted into an empty queue).
    fn would_exceed_limit(&self, len: usize) -> bool {
        !self.queue.is_empty() && self.queued_bytes + len > self.options.write_limit
    }

    fn enqueue(&mut self, frame: Bytes, now: Instant) {
        // An empty frame (an empty packet in raw mode) has nothing to write; queued, it would
        // sit at the head for good, as a write of zero bytes never consumes it.
        if frame.is_empty() {
            return;
        }
        if self.queue.is_empty() {
            self.oldest_queued_at = now;
        }
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    /// Queues a frame on an open connection and marks it dirty; returns whether the engine
    /// must be asked for a flush at the end of the pass.
    fn queue_frame(&mut self, frame: Bytes, now: Instant) -> bool {
        self.enqueue(frame, now);
        if self.dirty {
            return false;
        }
        self.dirty = true;
        // A reply from within this connection's own read batch is written when the batch
        // ends. Asking for a flush too made the end of the pass revisit every connection (its
        // table slot and state, long evicted from cache with a thousand connections) only to
        // find it flushed already.
        !self.in_batch
    }

    /// Writes as much of the queue as the socket takes. `Ok(true)` when the queue is empty.
    fn flush(&mut self, now: Instant) -> io::Result<bool> {
        while !self.queue.is_empty() {
            // A short queue (the usual case: one reply per read batch) gathers into a small
            // array; filling the full 256-entry array cost 4 KiB of stores per write, the
            // largest user-space item in a profile of the echo server.
            let res = if self.queue.len() <= SMALL_IOV {
                self.write_gathered::<SMALL_IOV>()
            } else {
                self.write_gathered::<IOV_PER_WRITE>()
            };
            let written = match res {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.consume_written(written, now);
            if written == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One `writev` of the first `N` frames at most.
    fn write_gathered<const N: usize>(&self) -> io::Result<usize> {
        let mut slices: [IoSlice<'_>; N] = [IoSlice::new(&[]); N];
        let mut n = 0;
        for (i, frame) in self.queue.iter().take(N).enumerate() {
            let start = if i == 0 { self.head_written } else { 0 };
            slices[n] = IoSlice::new(&frame[start..]);
            n += 1;
        }
        sys::writev(self.fd.as_fd(), &slices[..n])
    }

    fn consume_written(&mut self, mut written: usize, now: Instant) {
        self.queued_bytes -= written;
        while written > 0 {
            let head_left = self.queue[0].len() - self.head_written;
            if written >= head_left {
                written -= head_left;
                self.queue.pop_front();
                self.head_written = 0;
                // The send timeout measures how long the queue makes no progress: each frame
                // that leaves restarts the clock for the next one.
                self.oldest_queued_at = now;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }

    /// Writes as much of the queue as the socket takes, on the state in place in the
    /// engine's table (nothing is moved in or out of it: moving the ~300-byte state out and
    /// back, to lend the engine beside it, was ~15% of the echo server's user-space
    /// instructions); the rest, which needs the engine, is left to [`after_flush`].
    fn write_queue(&mut self, now: Instant) -> Flushed {
        self.dirty = false;
        match self.flush(now) {
            Ok(true) if self.state == State::Closing => Flushed::Linger,
            Err(e) => Flushed::End(DisconnectReason::from_io(&e)),
            Ok(_) => Flushed::Changes(self.changes()),
        }
    }

    /// Cuts the next complete packet out of the receive buffer.
    fn next_packet(&mut self) -> Result<Option<RPacket>, DisconnectReason> {
        if self.options.raw {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            return Ok(Some(RPacket::from_raw(self.rbuf.split().freeze())));
        }
        match packet::parse_header(&self.rbuf, self.options.max_packet_len) {
            Ok(Some(total)) if total <= self.rbuf.len() => Ok(Some(RPacket::from_frame(
                self.rbuf.split_to(total).freeze(),
            ))),
            Ok(_) => Ok(None),
            Err(PacketError::TooLarge { len, max }) => {
                Err(DisconnectReason::PacketTooLarge { len, max })
            }
            Err(_) => Err(DisconnectReason::Error {
                kind: io::ErrorKind::InvalidData,
                code: None,
            }),
        }
    }

    /// What epoll should report for this connection in its current state.
    fn wanted_interest(&self) -> Interest {
        match self.state {
            State::Open => Interest {
                read: !self.paused,
                write: !self.queue.is_empty(),
            },
            State::Closing => Interest {
                read: false,
                write: !self.queue.is_empty(),
            },
            State::Lingering { .. } => Interest::READ,
        }
    }
}

/// What the read side produced.
enum ReadStep {
    Packets,
    Drained,
    End(DisconnectReason),
}

impl ConnId {
    /// Queues a packet; it is written when the current read batch or engine pass ends.
    ///
    /// # Errors
    /// The packet is handed back: [`TrySendError::Closed`] if the connection has ended or is
    /// closing, [`TrySendError::Full`] if the write limit would be exceeded.
    pub fn send(self, engine: &mut Engine, packet: WPacket) -> Result<(), TrySendError<WPacket>> {
        let now = engine.now();
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return Err(TrySendError::Closed(packet));
        };
        if c.state != State::Open {
            return Err(TrySendError::Closed(packet));
        }
        if c.would_exceed_limit(packet.len() + packet::HEADER_LEN) {
            return Err(TrySendError::Full(packet));
        }
        let frame = packet.into_frame();
        let frame = if c.options.raw {
            frame.slice(packet::HEADER_LEN..)
        } else {
            frame
        };
        if c.queue_frame(frame, now) {
            engine.request_flush(self.0);
        }
        Ok(())
    }

    /// Queues an encoded frame (header included, or raw bytes in raw mode), past the write
    /// limit if need be (the caller accounts for it). Returns false if the connection is not
    /// open.
    pub(crate) fn send_frame(self, engine: &mut Engine, frame: Bytes) -> bool {
        let now = engine.now();
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return false;
        };
        if c.state != State::Open {
            return false;
        }
        if c.queue_frame(frame, now) {
            engine.request_flush(self.0);
        }
        true
    }

    /// Closes gracefully: what is queued is written first, then the connection half-closes
    /// and `on_disconnect` runs with [`DisconnectReason::ClosedLocally`]. Unknown or already
    /// closed ids are ignored.
    pub fn close(self, engine: &mut Engine) {
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return;
        };
        if c.state != State::Open {
            return;
        }
        c.state = State::Closing;
        flush_conn(engine, self);
    }

    /// Closes at once, discarding what is queued; `on_disconnect` runs with
    /// [`DisconnectReason::ClosedLocally`]. Unknown or already closed ids are ignored, a
    /// gracefully closed one included: its `on_disconnect` has run, and it only lingers until
    /// the peer closes, so that what it wrote reaches the peer (ending it here would reset
    /// the connection and destroy what the peer has not read yet).
    pub fn abort(self, engine: &mut Engine) {
        if let Some(c) = engine.source_mut::<ConnEntry>(self.0)
            && matches!(c.state, State::Lingering { .. })
        {
            return;
        }
        end(engine, self, DisconnectReason::ClosedLocally);
    }

    /// The peer's address, or `None` once the connection has ended.
    pub fn peer_addr(self, engine: &mut Engine) -> Option<SocketAddr> {
        match engine.source_mut::<ConnEntry>(self.0) {
            Some(c) if !matches!(c.state, State::Lingering { .. }) => Some(c.peer),
            _ => None,
        }
    }

    /// Stops reading from the socket (the kernel's buffers then push back on the peer)
    /// until resumed: back-pressure for a consumer that has fallen behind.
    pub fn pause_reading(self, engine: &mut Engine) {
        self.set_paused(engine, true);
    }

    /// Reads again after [`ConnId::pause_reading`].
    pub fn resume_reading(self, engine: &mut Engine) {
        self.set_paused(engine, false);
    }

    fn set_paused(self, engine: &mut Engine, paused: bool) {
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return;
        };
        c.paused = paused;
        let want = c.wanted_interest();
        engine.set_interest(self.0, want);
    }

    /// Whether the connection is open for sending.
    pub fn is_open(self, engine: &mut Engine) -> bool {
        matches!(engine.source_mut::<ConnEntry>(self.0), Some(c) if c.state == State::Open)
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(self, engine: &mut Engine) -> usize {
        engine
            .source_mut::<ConnEntry>(self.0)
            .map_or(0, |c| c.queued_bytes)
    }
}

/// Tells the engine what [`ConnEntry::changes`] found.
fn register_changes(engine: &mut Engine, key: Key, (interest, timer): (Interest, Option<Instant>)) {
    engine.set_interest(key, interest);
    if let Some(at) = timer {
        engine.add_timer(key, at);
    }
}

/// The engine's flush request (see [`ConnEntry::queue_frame`]).
fn on_flush(engine: &mut Engine, key: Key) {
    // Those that sent from another connection's callback may have been flushed since
    // (which clears `dirty`); flushing again would be wasted work.
    if engine.source_mut::<ConnEntry>(key).is_some_and(|c| c.dirty) {
        flush_conn(engine, ConnId(key));
    }
}

/// Writes what is queued; ends the connection on error, and finishes a graceful close once
/// the queue is empty.
fn flush_conn(engine: &mut Engine, id: ConnId) {
    let now = engine.now();
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    let flushed = c.write_queue(now);
    after_flush(engine, id, flushed);
}

/// What a flush leaves to do with the engine.
enum Flushed {
    /// Tell the engine the new interest and timer ([`ConnEntry::changes`]).
    Changes((Interest, Option<Instant>)),
    /// A graceful close has written everything: linger.
    Linger,
    /// The write failed: end the connection.
    End(DisconnectReason),
}

/// Carries out what [`ConnEntry::write_queue`] left to do.
fn after_flush(engine: &mut Engine, id: ConnId, flushed: Flushed) {
    match flushed {
        Flushed::Changes(changes) => register_changes(engine, id.0, changes),
        Flushed::Linger => begin_linger(engine, id),
        Flushed::End(reason) => end(engine, id, reason),
    }
}

/// After a graceful close has written everything: half-close, tell the user, and keep the
/// descriptor until the peer closes (so unread input cannot turn the close into a reset that
/// destroys what was just sent).
fn begin_linger(engine: &mut Engine, id: ConnId) {
    let now = engine.now();
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    let cb = c.on_disconnect.take();
    if sys::shutdown_write(c.fd.as_fd()).is_err() {
        drop(engine.deregister(id.0));
    } else {
        let linger = c.options.send_timeout.unwrap_or(DEFAULT_SEND_TIMEOUT);
        c.state = State::Lingering {
            until: now + linger,
        };
        c.on_packet = None;
        let changes = c.changes();
        register_changes(engine, id.0, changes);
    }
    if let Some(cb) = cb {
        cb(engine, id, DisconnectReason::ClosedLocally);
    }
}

/// Ends a connection at once and tells the user (unless already told).
fn end(engine: &mut Engine, id: ConnId, reason: DisconnectReason) {
    let Some(mut c) = engine
        .deregister(id.0)
        .and_then(|s| s.downcast::<ConnEntry>().ok())
    else {
        return;
    };
    if let Some(cb) = c.on_disconnect.take() {
        cb(engine, id, reason);
    }
}

/// Readiness of a connection's socket.
fn on_ready(engine: &mut Engine, key: Key, ev: Event) {
    let id = ConnId(key);
    let now = engine.now();
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    let state = c.state;
    if ev.writable() && !c.queue.is_empty() {
        let flushed = c.write_queue(now);
        after_flush(engine, id, flushed);
    }
    match state {
        State::Lingering { .. } => {
            if ev.readable() && linger_read(engine, id) {
                drop(engine.deregister(key));
            }
        }
        State::Closing => {}
        State::Open => {
            if ev.readable() {
                read_and_deliver(engine, id);
            }
        }
    }
}

/// Discards input of a lingering connection; true when the peer has closed.
fn linger_read(engine: &mut Engine, id: ConnId) -> bool {
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return false;
    };
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    for _ in 0..READS_PER_EVENT {
        match sys::recv_into(c.fd.as_fd(), &mut scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Reads, cuts and delivers packets (unless reading is paused), then flushes the replies
/// sent while delivering.
fn read_and_deliver(engine: &mut Engine, id: ConnId) {
    match engine.source_mut::<ConnEntry>(id.0) {
        Some(c) if !c.paused => c.in_batch = true,
        _ => return,
    }
    read_batch(engine, id);
    // However the batch ended, the replies queued during it go out now, in one `writev`
    // (they asked the engine for no flush: see `queue_frame`).
    let now = engine.now();
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    c.in_batch = false;
    if c.dirty {
        let flushed = c.write_queue(now);
        after_flush(engine, id, flushed);
    }
}

/// The reads and deliveries of one readiness event: each read is followed by the delivery of
/// every complete packet, one `on_packet` call each, in order. The state is looked up again
/// after each call; delivery stops if the connection ended or stopped being open meanwhile
/// (closed by the callback, or a packet was too large).
fn read_batch(engine: &mut Engine, id: ConnId) {
    for _ in 0..READS_PER_EVENT {
        let now = engine.now();
        let Some(mut c) = engine.source_mut::<ConnEntry>(id.0) else {
            return;
        };
        let step = read_once(now, c);
        let drained = matches!(step, ReadStep::Drained);
        if let ReadStep::End(reason) = step {
            end(engine, id, reason);
            return;
        }
        loop {
            if c.state != State::Open {
                return;
            }
            let packet = match c.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(reason) => {
                    end(engine, id, reason);
                    return;
                }
            };
            let Some(mut cb) = c.on_packet.take() else {
                return;
            };
            cb(engine, id, packet);
            c = match engine.source_mut::<ConnEntry>(id.0) {
                Some(c) if c.on_packet.is_none() && c.state == State::Open => {
                    c.on_packet = Some(cb);
                    c
                }
                _ => return,
            };
        }
        if drained {
            break;
        }
    }
}

/// One read into the receive buffer.
fn read_once(now: Instant, c: &mut ConnEntry) -> ReadStep {
    let want = if c.options.raw {
        READ_CHUNK
    } else {
        // Room for the whole packet whose header is known (its length was checked against
        // the maximum when the header arrived), and at least a chunk.
        match packet::parse_header(&c.rbuf, c.options.max_packet_len) {
            Ok(Some(total)) => total.saturating_sub(c.rbuf.len()).max(READ_CHUNK / 4),
            _ => READ_CHUNK / 4,
        }
    };
    // An emptied buffer goes back to the start of its allocation when no packet cut from it
    // is still alive (no allocation, no copy), so reads keep landing in the same cache-warm
    // bytes instead of walking through the whole allocation before `reserve` reclaims it.
    // If a packet still holds the buffer, this fails and `reserve` below decides.
    if c.rbuf.is_empty() && c.rbuf.capacity() < READ_CHUNK {
        let _ = c.rbuf.try_reclaim(READ_CHUNK);
    }
    if c.rbuf.capacity() - c.rbuf.len() < want {
        c.rbuf.reserve(want.max(READ_CHUNK));
    }
    let spare = c.rbuf.spare_capacity_mut();
    let space = spare.len();
    match sys::recv_into(c.fd.as_fd(), spare) {
        Ok(0) => ReadStep::End(DisconnectReason::PeerClosed),
        Ok(n) => {
            // SAFETY: `recv_into` initialised the first `n` bytes of the spare capacity.
            unsafe { c.rbuf.set_len(c.rbuf.len() + n) };
            c.last_recv = now;
            if n < space {
                ReadStep::Drained
            } else {
                ReadStep::Packets
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadStep::Drained,
        Err(e) => ReadStep::End(DisconnectReason::from_io(&e)),
    }
}

/// A connection's timer fired: check which deadline passed, if any, and re-arm.
fn on_timer(engine: &mut Engine, key: Key) {
    let id = ConnId(key);
    let now = engine.now();
    let Some(c) = engine.source_mut::<ConnEntry>(key) else {
        return;
    };
    c.timer_at = None;
    let expired = match c.state {
        State::Lingering { until } if now >= until => Some(None),
        State::Lingering { .. } => None,
        State::Open | State::Closing => {
            if let (false, Some(d)) = (c.queue.is_empty(), c.options.send_timeout)
                && now >= c.oldest_queued_at + d
            {
                Some(Some(DisconnectReason::SendTimeout))
            } else if let (State::Open, Some(d)) = (c.state, c.options.recv_timeout)
                && now >= c.last_recv + d
            {
                Some(Some(DisconnectReason::RecvTimeout))
            } else {
                None
            }
        }
    };
    match expired {
        Some(Some(reason)) => end(engine, id, reason),
        Some(None) => drop(engine.deregister(key)),
        None => {
            if let Some(at) = c.timer_to_arm() {
                engine.add_timer(key, at);
            }
        }
    }
}
