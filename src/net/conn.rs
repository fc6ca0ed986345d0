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
use super::framing::Framing;
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
/// The default high-water mark of a connection's queued output: past it the connection's
/// [`SlowConsumer`] policy applies and a [`WriteFlow::HighWater`] event is reported.
pub const DEFAULT_HIGH_WATER: usize = 1 << 20;
/// The default low-water mark: once queued output has fallen to it, the policy is lifted and
/// a [`WriteFlow::LowWater`] event is reported.
pub const DEFAULT_LOW_WATER: usize = 256 << 10;
/// The default time within which a packet must arrive whole once its first byte has arrived
/// (a peer that drips a packet byte by byte is closed with
/// [`DisconnectReason::PacketTimeout`]).
pub const DEFAULT_PACKET_TIMEOUT: Duration = Duration::from_secs(30);
/// The default grace period of [`SlowConsumer::Disconnect`].
pub const DEFAULT_SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);
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
    /// The idle timeout: close with [`DisconnectReason::RecvTimeout`] after this long without
    /// a byte from the peer (the clock stands still while this side has paused reading).
    /// Default: none.
    pub recv_timeout: Option<Duration>,
    /// Close with [`DisconnectReason::SendTimeout`] when the oldest queued packet has waited
    /// this long (a peer that stopped reading). Default [`DEFAULT_SEND_TIMEOUT`].
    pub send_timeout: Option<Duration>,
    /// The most bytes that may wait in the send queue, whatever the policy; a send beyond it
    /// fails with [`TrySendError::Full`]. Default [`DEFAULT_WRITE_LIMIT`] (8 MiB).
    pub write_limit: usize,
    /// Queued output past which the peer counts as a slow consumer: the
    /// [`ConnOptions::slow_consumer`] policy applies until the output has fallen to
    /// [`ConnOptions::low_water`]. Default [`DEFAULT_HIGH_WATER`] (1 MiB).
    pub high_water: usize,
    /// See [`ConnOptions::high_water`] (a value above it counts as equal to it). Default
    /// [`DEFAULT_LOW_WATER`] (256 KiB).
    pub low_water: usize,
    /// What to do with a peer whose queued output passed the high-water mark. Default
    /// [`SlowConsumer::PauseReading`].
    pub slow_consumer: SlowConsumer,
    /// Once the first byte of a packet has arrived, the whole packet must arrive within this
    /// long, or the connection closes with [`DisconnectReason::PacketTimeout`] (the clock
    /// stands still while this side has paused reading). Default [`DEFAULT_PACKET_TIMEOUT`]
    /// (30 s).
    pub packet_timeout: Option<Duration>,
    /// Raw mode: no framing; every read is delivered as one packet and packets are sent
    /// without their length header. Default: off.
    pub raw: bool,
    /// WebSocket: the connection is the server side of a WebSocket (see [`crate::ws`]);
    /// `raw` and `max_packet_len` do not apply to it. Default: none.
    #[cfg(feature = "websocket")]
    pub websocket: Option<super::ws::WsOptions>,
    /// TLS: the connection is the server side of a TLS session (see [`crate::tls`]), under
    /// its framing (framed packets, raw bytes or WebSocket). Default: none.
    #[cfg(feature = "tls")]
    pub tls: Option<super::tls::TlsAcceptor>,
}

impl Default for ConnOptions {
    fn default() -> ConnOptions {
        ConnOptions {
            max_packet_len: DEFAULT_MAX_PACKET_LEN,
            recv_timeout: None,
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            write_limit: DEFAULT_WRITE_LIMIT,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            slow_consumer: SlowConsumer::PauseReading,
            packet_timeout: Some(DEFAULT_PACKET_TIMEOUT),
            raw: false,
            #[cfg(feature = "websocket")]
            websocket: None,
            #[cfg(feature = "tls")]
            tls: None,
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
    /// Sets [`ConnOptions::high_water`] and [`ConnOptions::low_water`].
    #[must_use]
    pub fn watermarks(mut self, low: usize, high: usize) -> ConnOptions {
        self.low_water = low;
        self.high_water = high;
        self
    }
    /// Sets [`ConnOptions::slow_consumer`].
    #[must_use]
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> ConnOptions {
        self.slow_consumer = policy;
        self
    }
    /// Sets [`ConnOptions::packet_timeout`].
    #[must_use]
    pub fn packet_timeout(mut self, timeout: Option<Duration>) -> ConnOptions {
        self.packet_timeout = timeout;
        self
    }
    /// Sets [`ConnOptions::raw`].
    #[must_use]
    pub fn raw(mut self, raw: bool) -> ConnOptions {
        self.raw = raw;
        self
    }
    /// The wire format these options select.
    pub(crate) fn framing(&self) -> Framing {
        #[cfg(feature = "websocket")]
        if self.websocket.is_some() {
            return Framing::WebSocket;
        }
        if self.raw {
            Framing::Raw
        } else {
            Framing::Length
        }
    }

    /// Sets [`ConnOptions::tls`]: the connection is the server side of TLS with `acceptor`.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, acceptor: super::tls::TlsAcceptor) -> ConnOptions {
        self.tls = Some(acceptor);
        self
    }

    /// Whether the connection announces itself only once a handshake has succeeded (TLS,
    /// WebSocket): see [`Connection::on_open`].
    pub(crate) fn opens_later(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        self.framing().is_websocket()
    }

    /// Sets [`ConnOptions::websocket`]: the connection speaks WebSocket with `ws`.
    #[cfg(feature = "websocket")]
    #[must_use]
    pub fn websocket(mut self, ws: super::ws::WsOptions) -> ConnOptions {
        self.websocket = Some(ws);
        self
    }
}

/// What a connection does about a peer that does not read as fast as it is sent to: its
/// queued output passed [`ConnOptions::high_water`]. Each policy is lifted once the output has
/// fallen to [`ConnOptions::low_water`]; [`ConnOptions::write_limit`] bounds the queue
/// whatever the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Stop reading from the peer (no more requests, so no more replies; the kernel's
    /// buffers then push back on it), as Erlang's port watermarks and a tokio `Framed` echo
    /// do. Sends are still queued up to the write limit. The default.
    #[default]
    PauseReading,
    /// Keep reading, and drop new packets for the peer (sends fail with
    /// [`TrySendError::Full`], broadcasts skip it), counting them.
    Drop,
    /// Keep reading and queuing, and disconnect with [`DisconnectReason::SlowConsumer`] if
    /// the output stays above the low-water mark for `grace`.
    Disconnect {
        /// How long the output may stay above the mark.
        grace: Duration,
    },
}

impl SlowConsumer {
    /// [`SlowConsumer::Disconnect`] after [`DEFAULT_SLOW_CONSUMER_GRACE`].
    pub const DISCONNECT: SlowConsumer = SlowConsumer::Disconnect {
        grace: DEFAULT_SLOW_CONSUMER_GRACE,
    };
}

/// A connection's queued output crossed one of its watermarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFlow {
    /// Queued output passed [`ConnOptions::high_water`]: the slow-consumer policy applies.
    HighWater {
        /// Bytes queued then.
        queued: usize,
    },
    /// Queued output fell to [`ConnOptions::low_water`] after a [`WriteFlow::HighWater`]: the
    /// policy is lifted.
    LowWater {
        /// Bytes queued then.
        queued: usize,
    },
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
    /// A packet did not arrive whole within [`ConnOptions::packet_timeout`] of its first byte.
    PacketTimeout,
    /// The peer stayed above the high-water mark for longer than the grace period of
    /// [`SlowConsumer::Disconnect`].
    SlowConsumer {
        /// Bytes queued for it then.
        queued: usize,
    },
    /// The peer declared a packet longer than the maximum.
    PacketTooLarge {
        /// The declared payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A WebSocket close frame ended the connection: the peer's (`by_peer`, its code, or
    /// 1005 if it gave none), or this side's for a violation of the protocol by the peer
    /// (1002 protocol error, 1007 invalid UTF-8, 1009 message too big). A close by this side
    /// for any other reason is [`DisconnectReason::ClosedLocally`].
    WebSocket {
        /// The close code (`kendynet::ws::close_code`, with the `websocket` feature).
        code: u16,
        /// Whether the peer sent it.
        by_peer: bool,
    },
    /// A WebSocket opening handshake did not succeed: the request was answered with this
    /// HTTP status (a plain HTTP request served, a refused `Origin`, a malformed request),
    /// and the connection closed.
    Handshake {
        /// The status of the answer.
        status: u16,
    },
    /// The TLS session failed (a handshake the peer could not complete, a bad record); the
    /// alert, if any, was sent.
    Tls {
        /// What rustls reported.
        message: String,
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
            DisconnectReason::PacketTimeout => {
                f.write_str("packet timeout: a packet arrived too slowly")
            }
            DisconnectReason::SlowConsumer { queued } => {
                write!(
                    f,
                    "slow consumer: {queued} bytes queued past the grace period"
                )
            }
            DisconnectReason::PacketTooLarge { len, max } => {
                write!(f, "packet of {len} bytes exceeds the maximum of {max}")
            }
            DisconnectReason::WebSocket {
                code,
                by_peer: true,
            } => write!(f, "websocket closed by the peer with code {code}"),
            DisconnectReason::WebSocket {
                code,
                by_peer: false,
            } => write!(
                f,
                "websocket closed with code {code}: the peer broke the protocol"
            ),
            DisconnectReason::Tls { message } => write!(f, "tls: {message}"),
            DisconnectReason::Handshake { status } => {
                write!(f, "websocket handshake answered with HTTP status {status}")
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
/// Called when the queued output crosses a watermark (see [`Connection::on_write_flow`]).
pub type OnWriteFlow = Box<dyn FnMut(&mut Engine, ConnId, WriteFlow)>;
/// Called once when the peer has ended its input (see [`Connection::on_input_end`]).
pub type OnInputEnd = Box<dyn FnOnce(&mut Engine, ConnId)>;
/// Called once when a WebSocket connection's handshake has succeeded (see
/// [`Connection::on_open`]).
pub type OnOpen = Box<dyn FnOnce(&mut Engine, ConnId)>;

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
pub struct Connection {
    socket: Socket,
    options: ConnOptions,
    on_write_flow: Option<OnWriteFlow>,
    on_input_end: Option<OnInputEnd>,
    on_open: Option<OnOpen>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("socket", &self.socket)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection over `socket` with the default [`ConnOptions`].
    pub fn new(socket: Socket) -> Connection {
        Connection {
            socket,
            options: ConnOptions::default(),
            on_write_flow: None,
            on_input_end: None,
            on_open: None,
        }
    }

    /// For a TLS or WebSocket connection (`ConnOptions::tls`, `ConnOptions::websocket`):
    /// calls `f` once its handshakes have succeeded; packets may be sent from then on (sends
    /// before it are refused as [`TrySendError::Closed`]). A connection whose handshake fails
    /// (a TLS error, a plain HTTP request, a refused request) ends with
    /// [`DisconnectReason::Tls`] or [`DisconnectReason::Handshake`] without calling it. Other
    /// connections never call it.
    #[must_use]
    pub fn on_open(mut self, f: impl FnOnce(&mut Engine, ConnId) + 'static) -> Connection {
        self.on_open = Some(Box::new(f));
        self
    }

    /// Calls `f` when the queued output crosses a watermark: [`WriteFlow::HighWater`] when it
    /// passes [`ConnOptions::high_water`] (the slow-consumer policy then applies),
    /// [`WriteFlow::LowWater`] when it has fallen back to [`ConnOptions::low_water`].
    #[must_use]
    pub fn on_write_flow(
        mut self,
        f: impl FnMut(&mut Engine, ConnId, WriteFlow) + 'static,
    ) -> Connection {
        self.on_write_flow = Some(Box::new(f));
        self
    }

    /// Half-close: when the peer ends its input (end of stream after the packets before it,
    /// all of them delivered first), the connection stops reading and calls `f`, and stays
    /// open for sending until closed with [`ConnId::close`] (or the send timeout), so that the
    /// replies to the last requests still reach the peer. Its `on_disconnect` then reports
    /// [`DisconnectReason::PeerClosed`].
    ///
    /// Without it, the connection closes by itself at the end of input, after writing what
    /// was queued before and while its last packets were delivered.
    #[must_use]
    pub fn on_input_end(mut self, f: impl FnOnce(&mut Engine, ConnId) + 'static) -> Connection {
        self.on_input_end = Some(Box::new(f));
        self
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
        let Connection {
            socket,
            mut options,
            on_write_flow,
            on_input_end,
            on_open,
        } = self;
        options.low_water = options.low_water.min(options.high_water);
        let Socket { fd, peer } = socket;
        let now = engine.now();
        let framing = options.framing();
        // A connection that opens with a handshake must complete it within the packet
        // deadline, counted from its accept (progress does not restart it).
        let handshake_started = options.opens_later().then_some(now);
        #[cfg(feature = "websocket")]
        let ws = options
            .websocket
            .clone()
            .map(|o| Box::new(super::ws::WsSession::new(o)));
        #[cfg(feature = "tls")]
        let tls = match &options.tls {
            Some(acceptor) => Some(Box::new(acceptor.session()?)),
            None => None,
        };
        let conn = ConnEntry {
            fd,
            peer,
            framing,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "websocket")]
            ws,
            close_reason: None,
            on_open,
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
            paused: 0,
            above_high: false,
            above_since: now,
            flow_event: None,
            dropped: 0,
            packet_started: handshake_started,
            peer_eof: false,
            state: State::Open,
            on_packet: Some(Box::new(on_packet)),
            on_disconnect: Some(Box::new(on_disconnect)),
            on_write_flow,
            on_input_end,
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
    framing: Framing,
    /// The WebSocket protocol state, for a WebSocket connection.
    #[cfg(feature = "websocket")]
    ws: Option<Box<super::ws::WsSession>>,
    /// The TLS session, for a TLS connection.
    #[cfg(feature = "tls")]
    tls: Option<Box<super::tls::TlsSession>>,
    /// What a graceful close reports instead of [`DisconnectReason::ClosedLocally`] (a
    /// WebSocket close handshake).
    close_reason: Option<DisconnectReason>,
    on_open: Option<OnOpen>,
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
    /// Why reading is paused, if it is: a set of `PAUSED_*` bits.
    paused: u8,
    /// The queued output passed the high-water mark and has not fallen to the low-water
    /// mark since.
    above_high: bool,
    /// When it last passed the high-water mark.
    above_since: Instant,
    /// A watermark crossing not yet reported to `on_write_flow`.
    flow_event: Option<WriteFlow>,
    /// Packets dropped by the [`SlowConsumer::Drop`] policy or the write limit.
    dropped: u64,
    /// When the first byte of the partly received packet arrived (or reading resumed).
    packet_started: Option<Instant>,
    /// The peer has ended its input.
    peer_eof: bool,
    state: State,
    on_packet: Option<OnPacket>,
    on_disconnect: Option<OnDisconnect>,
    on_write_flow: Option<OnWriteFlow>,
    on_input_end: Option<OnInputEnd>,
}

/// Reading paused by the user ([`ConnId::pause_reading`]).
pub(crate) const PAUSED_BY_USER: u8 = 1;
/// Reading paused because the consumer of the packets is behind (the actor runtime's owner
/// backlog).
pub(crate) const PAUSED_BY_CONSUMER: u8 = 2;
/// Reading paused by the [`SlowConsumer::PauseReading`] policy.
const PAUSED_BY_FLOW: u8 = 4;

/// What became of a frame offered to a connection by a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued for writing.
    Queued,
    /// Dropped by the slow-consumer policy or the write limit (and counted).
    Dropped,
    /// The connection is not open for sending.
    Closed,
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
                // Input deadlines run only while this side reads (a pause is not the peer's
                // fault, and the end of input ends them).
                if self.state == State::Open && self.paused == 0 && !self.peer_eof {
                    if let Some(d) = self.options.recv_timeout {
                        consider(self.last_recv + d);
                    }
                    if let (Some(t), Some(d)) = (self.packet_started, self.options.packet_timeout) {
                        consider(t + d);
                    }
                }
                if !self.queue.is_empty()
                    && let Some(d) = self.options.send_timeout
                {
                    consider(self.oldest_queued_at + d);
                }
                if self.above_high
                    && let SlowConsumer::Disconnect { grace } = self.options.slow_consumer
                {
                    consider(self.above_since + grace);
                }
            }
        }
        next
    }

    /// Which deadline has passed at `now`, if any: the reason to end the connection.
    fn expired(&self, now: Instant) -> Option<DisconnectReason> {
        let reading = self.state == State::Open && self.paused == 0 && !self.peer_eof;
        if let (false, Some(d)) = (self.queue.is_empty(), self.options.send_timeout)
            && now >= self.oldest_queued_at + d
        {
            return Some(DisconnectReason::SendTimeout);
        }
        if let (true, SlowConsumer::Disconnect { grace }) =
            (self.above_high, self.options.slow_consumer)
            && now >= self.above_since + grace
        {
            return Some(DisconnectReason::SlowConsumer {
                queued: self.queued_bytes,
            });
        }
        if let (true, Some(d), Some(t)) =
            (reading, self.options.packet_timeout, self.packet_started)
            && now >= t + d
        {
            return Some(DisconnectReason::PacketTimeout);
        }
        if let (true, Some(d)) = (reading, self.options.recv_timeout)
            && now >= self.last_recv + d
        {
            return Some(DisconnectReason::RecvTimeout);
        }
        None
    }

    /// Sets or clears one reason to pause reading. When reading resumes, the input deadlines
    /// start again from `now` (the peer could not send while this side did not read).
    fn set_paused(&mut self, bit: u8, on: bool, now: Instant) {
        let was = self.paused;
        if on {
            self.paused |= bit;
        } else {
            self.paused &= !bit;
        }
        if was != 0 && self.paused == 0 {
            self.last_recv = now;
            if self.packet_started.is_some() {
                self.packet_started = Some(now);
            }
        }
    }

    /// Notes a watermark crossing for `on_write_flow` (a crossing back before the last was
    /// reported cancels it: the user's view was right all along).
    fn note_flow(&mut self, event: WriteFlow) {
        self.flow_event = match self.flow_event {
            Some(_) => None,
            None => Some(event),
        };
    }

    /// After output was queued: passing the high-water mark applies the policy.
    fn check_high_water(&mut self, now: Instant) {
        if self.above_high || self.queued_bytes <= self.options.high_water {
            return;
        }
        self.above_high = true;
        self.above_since = now;
        if self.options.slow_consumer == SlowConsumer::PauseReading {
            self.set_paused(PAUSED_BY_FLOW, true, now);
        }
        self.note_flow(WriteFlow::HighWater {
            queued: self.queued_bytes,
        });
    }

    /// After output was written: falling to the low-water mark lifts the policy.
    fn check_low_water(&mut self, now: Instant) {
        if !self.above_high || self.queued_bytes > self.options.low_water {
            return;
        }
        self.above_high = false;
        self.set_paused(PAUSED_BY_FLOW, false, now);
        self.note_flow(WriteFlow::LowWater {
            queued: self.queued_bytes,
        });
    }

    /// Whether a new packet must be dropped rather than queued: the [`SlowConsumer::Drop`]
    /// policy is in force.
    fn drops_new_packets(&self) -> bool {
        self.above_high && self.options.slow_consumer == SlowConsumer::Drop
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
        self.check_high_water(now);
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
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return self.flush_tls(now);
        }
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

    /// [`ConnEntry::flush`] through the TLS session: plaintext from the queue into the
    /// session as far as its buffer takes it, ciphertext out as far as the socket takes it.
    /// `Ok(true)` when both are empty.
    #[cfg(feature = "tls")]
    fn flush_tls(&mut self, now: Instant) -> io::Result<bool> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Ok(true);
            };
            let mut taken = 0;
            while !tls.is_handshaking()
                && let Some(head) = self.queue.front()
            {
                let n = tls.take_plaintext(&head[self.head_written..]);
                if n == 0 {
                    break;
                }
                taken += n;
                let head_left = head.len() - self.head_written;
                if n == head_left {
                    self.queue.pop_front();
                    self.head_written = 0;
                } else {
                    self.head_written += n;
                }
            }
            if taken > 0 {
                self.queued_bytes -= taken;
                self.oldest_queued_at = now;
            }
            let drained = tls.write_to(self.fd.as_fd())?;
            if taken > 0 {
                self.check_low_water(now);
            }
            if !drained {
                return Ok(false);
            }
            if self.queue.is_empty() {
                return Ok(true);
            }
            if taken == 0 {
                // The handshake holds the queue back: nothing more to do until it moves.
                return Ok(false);
            }
        }
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
        self.check_low_water(now);
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
            Ok(_) => Flushed::Changes(self.changes(), self.flow_event.is_some()),
        }
    }

    /// Cuts the next complete packet out of the receive buffer.
    fn next_packet(&mut self) -> Result<Option<Cut>, DisconnectReason> {
        match self.framing {
            Framing::Length => {}
            Framing::Raw => {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Cut::Packet(RPacket::from_raw(
                    self.rbuf.split().freeze(),
                ))));
            }
            #[cfg(feature = "websocket")]
            Framing::WebSocket => return Ok(self.next_ws_cut()),
        }
        match packet::parse_header(&self.rbuf, self.options.max_packet_len) {
            Ok(Some(total)) if total <= self.rbuf.len() => Ok(Some(Cut::Packet(
                RPacket::from_frame(self.rbuf.split_to(total).freeze()),
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

    /// The WebSocket protocol's next step: queues what it answers by itself (pongs, the
    /// handshake's response, close frames).
    #[cfg(feature = "websocket")]
    fn next_ws_cut(&mut self) -> Option<Cut> {
        use super::ws::WsCut;
        let now = self.last_recv;
        loop {
            let ws = self.ws.as_mut()?;
            return match ws.cut(&mut self.rbuf)? {
                WsCut::Packet(packet) => Some(Cut::Packet(packet)),
                WsCut::Reply(bytes) => {
                    self.enqueue(bytes, now);
                    self.dirty = true;
                    continue;
                }
                WsCut::Opened(response) => {
                    self.enqueue(response, now);
                    self.dirty = true;
                    Some(Cut::Opened)
                }
                WsCut::Close(bytes, reason) => {
                    self.enqueue(bytes, now);
                    Some(Cut::Close(reason))
                }
            };
        }
    }

    /// Whether a TLS or WebSocket handshake is still under way.
    #[inline]
    fn awaiting_handshake(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return true;
        }
        #[cfg(feature = "websocket")]
        if self.ws.as_ref().is_some_and(|ws| !ws.is_open()) {
            return true;
        }
        false
    }

    /// Whether packets may be queued: the connection is open, and a WebSocket's handshake
    /// is done and its close frame not sent.
    #[inline]
    fn accepts_packets(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls
            && tls.is_handshaking()
        {
            return false;
        }
        #[cfg(feature = "websocket")]
        if let Some(ws) = &self.ws
            && !ws.accepts_messages()
        {
            return false;
        }
        self.state == State::Open
    }

    /// Queues a packet's frame (header included) in this connection's framing.
    #[inline]
    fn queue_packet_frame(&mut self, frame: Bytes, text: bool, now: Instant) -> bool {
        let (prefix, body) = self.framing.wire(frame, text);
        let mut flush = false;
        if let Some(prefix) = prefix {
            flush = self.queue_frame(prefix, now);
        }
        self.queue_frame(body, now) || flush
    }

    /// Whether there is something the socket can be asked to take: queued packets (unless a
    /// TLS handshake holds them back), or TLS output.
    #[inline]
    fn has_output(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.wants_write() || (!self.queue.is_empty() && !tls.is_handshaking());
        }
        !self.queue.is_empty()
    }

    /// What epoll should report for this connection in its current state.
    fn wanted_interest(&self) -> Interest {
        match self.state {
            State::Open => Interest {
                read: self.paused == 0 && !self.peer_eof,
                write: self.has_output(),
            },
            State::Closing => Interest {
                read: false,
                write: self.has_output(),
            },
            State::Lingering { .. } => Interest::READ,
        }
    }
}

/// What was cut from the receive buffer.
enum Cut {
    /// A packet to deliver.
    Packet(RPacket),
    /// A WebSocket handshake succeeded (its response is queued).
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    Opened,
    /// Close gracefully (what the protocol answers is queued), reporting this reason.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    Close(DisconnectReason),
}

/// What the read side produced.
enum ReadStep {
    /// Read a full buffer: there may be more.
    Packets,
    /// Read what there was.
    Drained,
    /// The peer ended its input.
    Eof,
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
        if !c.accepts_packets() {
            return Err(TrySendError::Closed(packet));
        }
        if c.drops_new_packets() || c.would_exceed_limit(packet.len() + packet::HEADER_LEN) {
            c.dropped += 1;
            return Err(TrySendError::Full(packet));
        }
        let text = packet.is_text();
        let queued = (
            c.queue_packet_frame(packet.into_frame(), text, now),
            c.flow_event.is_some(),
        );
        self.after_queue(engine, queued);
        Ok(())
    }

    /// After [`ConnEntry::queue_frame`] returned `flush`: asks for the flush, and reports a
    /// watermark crossing if there was one.
    fn after_queue(self, engine: &mut Engine, (flush, crossed): (bool, bool)) {
        if flush {
            engine.request_flush(self.0);
        }
        if crossed {
            report_flow(engine, self);
        }
    }

    /// Offers a frame (header included) that a broadcast shares between many connections:
    /// queued unless the connection is not open, or its slow-consumer policy or write limit
    /// drops it (counted in [`ConnId::dropped_packets`]). Raw connections get it without the
    /// header, WebSocket ones as a message (text if `text`).
    pub(crate) fn offer_frame(self, engine: &mut Engine, frame: &Bytes, text: bool) -> Offered {
        let now = engine.now();
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return Offered::Closed;
        };
        if !c.accepts_packets() {
            return Offered::Closed;
        }
        if c.drops_new_packets() || c.would_exceed_limit(frame.len()) {
            c.dropped += 1;
            return Offered::Dropped;
        }
        let queued = (
            c.queue_packet_frame(frame.clone(), text, now),
            c.flow_event.is_some(),
        );
        self.after_queue(engine, queued);
        Offered::Queued
    }

    /// Queues bytes already in the connection's framing (a frame with its header, raw
    /// bytes, or part of a WebSocket message), past the write limit if need be (the caller
    /// accounts for it). Returns false if the connection is not open.
    pub(crate) fn send_frame(self, engine: &mut Engine, frame: Bytes) -> bool {
        let now = engine.now();
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return false;
        };
        if !c.accepts_packets() {
            return false;
        }
        let queued = (c.queue_frame(frame, now), c.flow_event.is_some());
        self.after_queue(engine, queued);
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
        #[cfg(feature = "websocket")]
        if let Some(bytes) = c.ws.as_mut().and_then(|ws| ws.local_close()) {
            let now = engine.now();
            let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
                return;
            };
            c.enqueue(bytes, now);
        }
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return;
        };
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
    /// until resumed: back-pressure for a consumer that has fallen behind, or "active once"
    /// for a protocol that reads one request at a time. Independent of the pause of the
    /// [`SlowConsumer::PauseReading`] policy: reading resumes when neither holds it.
    pub fn pause_reading(self, engine: &mut Engine) {
        self.set_paused(engine, PAUSED_BY_USER, true);
    }

    /// Reads again after [`ConnId::pause_reading`].
    pub fn resume_reading(self, engine: &mut Engine) {
        self.set_paused(engine, PAUSED_BY_USER, false);
    }

    /// Sets or clears one of the reasons why reading is paused (the `PAUSED_*` bits).
    pub(crate) fn set_paused(self, engine: &mut Engine, bit: u8, on: bool) {
        let now = engine.now();
        let Some(c) = engine.source_mut::<ConnEntry>(self.0) else {
            return;
        };
        c.set_paused(bit, on, now);
        let changes = c.changes();
        register_changes(engine, self.0, changes);
    }

    /// Packets dropped for this connection because of its [`SlowConsumer::Drop`] policy or
    /// its write limit (sends refused with [`TrySendError::Full`], broadcasts skipped).
    pub fn dropped_packets(self, engine: &mut Engine) -> u64 {
        engine
            .source_mut::<ConnEntry>(self.0)
            .map_or(0, |c| c.dropped)
    }

    /// Whether the connection is reading from its peer (open, not paused for any reason,
    /// and its input not ended).
    pub fn is_reading(self, engine: &mut Engine) -> bool {
        engine
            .source_mut::<ConnEntry>(self.0)
            .is_some_and(|c| c.state == State::Open && c.paused == 0 && !c.peer_eof)
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
    /// Tell the engine the new interest and timer ([`ConnEntry::changes`]), and report a
    /// watermark crossing if there was one.
    Changes((Interest, Option<Instant>), bool),
    /// A graceful close has written everything: linger.
    Linger,
    /// The write failed: end the connection.
    End(DisconnectReason),
}

/// Carries out what [`ConnEntry::write_queue`] left to do.
fn after_flush(engine: &mut Engine, id: ConnId, flushed: Flushed) {
    match flushed {
        Flushed::Changes(changes, crossed) => {
            register_changes(engine, id.0, changes);
            if crossed {
                report_flow(engine, id);
            }
        }
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
    if c.peer_eof {
        // The peer ended its input and everything queued is written: nothing to wait for
        // (closing sends the end of stream after the bytes still in the kernel's buffer).
        end(engine, id, DisconnectReason::PeerClosed);
        return;
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = c.tls.as_mut() {
        tls.close_notify();
        let _ = tls.write_to(c.fd.as_fd());
    }
    let cb = c.on_disconnect.take();
    let reason = c
        .close_reason
        .take()
        .unwrap_or(DisconnectReason::ClosedLocally);
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
        cb(engine, id, reason);
    }
}

/// Reports the watermark crossing noted by [`ConnEntry::note_flow`] to `on_write_flow`.
fn report_flow(engine: &mut Engine, id: ConnId) {
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    let Some(event) = c.flow_event.take() else {
        return;
    };
    let Some(mut cb) = c.on_write_flow.take() else {
        return;
    };
    cb(engine, id, event);
    if let Some(c) = engine.source_mut::<ConnEntry>(id.0)
        && c.on_write_flow.is_none()
    {
        c.on_write_flow = Some(cb);
    }
}

/// The peer ended its input, after every packet before it was delivered: stop reading, and
/// either tell the user (who closes when done) or close gracefully at once.
fn input_ended(engine: &mut Engine, id: ConnId) {
    let Some(c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    c.peer_eof = true;
    c.packet_started = None;
    match c.on_input_end.take() {
        Some(cb) => {
            let changes = c.changes();
            register_changes(engine, id.0, changes);
            cb(engine, id);
        }
        None => id.close(engine),
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
    if ev.writable() && c.has_output() {
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
        Some(c) if c.paused == 0 && !c.peer_eof => c.in_batch = true,
        _ => return,
    }
    read_batch(engine, id);
    // However the batch ended, the replies queued during it go out now, in one `writev`
    // (they asked the engine for no flush: see `queue_frame`).
    let now = engine.now();
    let Some(mut c) = engine.source_mut::<ConnEntry>(id.0) else {
        return;
    };
    c.in_batch = false;
    if c.packet_started.is_some()
        && let Some(at) = c.timer_to_arm()
    {
        engine.add_timer(id.0, at);
        let Some(again) = engine.source_mut::<ConnEntry>(id.0) else {
            return;
        };
        c = again;
    }
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
        // Sending replies may have paused reading (the slow-consumer policy).
        if c.paused != 0 {
            return;
        }
        let step = read_once(now, c);
        #[cfg(feature = "tls")]
        if c.on_open.is_some()
            && !c.framing.is_websocket()
            && c.tls.as_ref().is_some_and(|t| !t.is_handshaking())
            && let Some(cb) = c.on_open.take()
        {
            cb(engine, id);
            c = match engine.source_mut::<ConnEntry>(id.0) {
                Some(c) if c.state == State::Open => c,
                _ => return,
            };
        }
        let drained = match step {
            ReadStep::Packets => false,
            ReadStep::Drained => true,
            ReadStep::Eof => {
                // Every complete packet before the end was delivered after its read.
                input_ended(engine, id);
                return;
            }
            ReadStep::End(reason) => {
                end(engine, id, reason);
                return;
            }
        };
        let mut cut = false;
        loop {
            if c.state != State::Open {
                return;
            }
            let packet = match c.next_packet() {
                Ok(Some(Cut::Packet(packet))) => packet,
                Ok(Some(Cut::Opened)) => {
                    cut = true;
                    if let Some(cb) = c.on_open.take() {
                        cb(engine, id);
                    }
                    c = match engine.source_mut::<ConnEntry>(id.0) {
                        Some(c) => c,
                        None => return,
                    };
                    continue;
                }
                Ok(Some(Cut::Close(reason))) => {
                    c.close_reason = Some(reason);
                    c.state = State::Closing;
                    flush_conn(engine, id);
                    return;
                }
                Ok(None) => break,
                Err(reason) => {
                    end(engine, id, reason);
                    return;
                }
            };
            cut = true;
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
        // The packet deadline runs from the first byte of the packet now partly received
        // (or, until the handshakes are done, from the accept).
        if !c.awaiting_handshake() {
            if cut || c.rbuf.is_empty() {
                c.packet_started = (!c.rbuf.is_empty()).then_some(now);
            } else if c.packet_started.is_none() {
                c.packet_started = Some(now);
            }
        }
        if drained {
            break;
        }
    }
}

/// One read into the receive buffer.
fn read_once(now: Instant, c: &mut ConnEntry) -> ReadStep {
    #[cfg(feature = "tls")]
    if c.tls.is_some() {
        return read_once_tls(now, c);
    }
    // An emptied buffer goes back to the start of its allocation when no packet cut from it
    // is still alive (no allocation, no copy), so reads keep landing in the same cache-warm
    // bytes instead of walking through the whole allocation before `reserve` reclaims it.
    // If a packet still holds the buffer, this fails and the growth below decides.
    if c.rbuf.is_empty() && c.rbuf.capacity() < READ_CHUNK {
        let _ = c.rbuf.try_reclaim(READ_CHUNK);
    }
    let declared = match c.framing {
        Framing::Length => packet::parse_header(&c.rbuf, c.options.max_packet_len)
            .ok()
            .flatten(),
        Framing::Raw => None,
        #[cfg(feature = "websocket")]
        Framing::WebSocket => c.ws.as_ref().and_then(|ws| ws.declared(&c.rbuf)),
    };
    grow_for_read(&mut c.rbuf, declared);
    let spare = c.rbuf.spare_capacity_mut();
    let space = spare.len();
    match sys::recv_into(c.fd.as_fd(), spare) {
        Ok(0) => ReadStep::Eof,
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

/// [`read_once`] through the TLS session: one read of ciphertext, its plaintext appended to
/// the receive buffer. What the session has to say (its handshake, an alert) is flushed at
/// the end of the read batch.
#[cfg(feature = "tls")]
fn read_once_tls(now: Instant, c: &mut ConnEntry) -> ReadStep {
    use super::tls::TlsRead;
    let Some(tls) = c.tls.as_mut() else {
        return ReadStep::Drained;
    };
    let step = match tls.read(c.fd.as_fd(), &mut c.rbuf) {
        TlsRead::Read { full } => {
            c.last_recv = now;
            if full {
                ReadStep::Packets
            } else {
                ReadStep::Drained
            }
        }
        TlsRead::WouldBlock => ReadStep::Drained,
        TlsRead::Eof => ReadStep::Eof,
        TlsRead::Failed(e) => {
            // Send the alert, if any, on the way out (best effort: the socket may be full).
            let _ = tls.write_to(c.fd.as_fd());
            return ReadStep::End(DisconnectReason::Tls {
                message: e.to_string(),
            });
        }
    };
    if tls.wants_write() {
        c.dirty = true;
    }
    step
}

/// Makes room in the receive buffer for the next read; `declared` is the total length of
/// the packet under way, if its header has arrived (framed mode).
///
/// Small packets share chunks of [`READ_CHUNK`] bytes; when a chunk runs out, only the
/// partial packet at its end is carried into the next one (the chunk itself stays alive
/// while packets cut from it are, and they fill it). A packet larger than a chunk gets an
/// allocation of its own that grows as its bytes arrive (at most doubling what has arrived,
/// so a header alone reserves no more than a chunk) and ends exactly where the packet ends:
/// the packet then fills its allocation, and holding it (a queued echo) pins no more memory
/// than its own bytes.
fn grow_for_read(rbuf: &mut BytesMut, declared: Option<usize>) {
    let len = rbuf.len();
    let spare = rbuf.capacity() - len;
    match declared {
        Some(total) if total > READ_CHUNK && total > len => {
            let missing = total - len;
            if spare >= missing.min(READ_CHUNK / 4) {
                return;
            }
            let cap = total.min(len + len.max(READ_CHUNK));
            let mut grown = BytesMut::with_capacity(cap);
            grown.extend_from_slice(rbuf);
            *rbuf = grown;
        }
        _ => {
            if spare < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
        }
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
        State::Open | State::Closing => c.expired(now).map(Some),
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

#[cfg(test)]
mod tests {
    use super::{READ_CHUNK, grow_for_read};
    use bytes::BytesMut;

    /// Feeds `total` bytes of one packet into the buffer in reads of `step`, as `read_once`
    /// does; returns the largest capacity seen while fewer than `probe` bytes had arrived.
    fn feed(total: usize, step: usize, probe: usize) -> (BytesMut, usize) {
        let mut rbuf = BytesMut::new();
        let mut cap_early = 0;
        while rbuf.len() < total {
            let declared = (rbuf.len() >= 4).then_some(total);
            grow_for_read(&mut rbuf, declared);
            let room = rbuf.capacity() - rbuf.len();
            assert!(room > 0, "no room to read into at {} bytes", rbuf.len());
            let n = room.min(step).min(total - rbuf.len());
            rbuf.extend_from_slice(&vec![0u8; n]);
            if rbuf.len() < probe {
                cap_early = cap_early.max(rbuf.capacity());
            }
        }
        (rbuf, cap_early)
    }

    #[test]
    fn a_header_alone_reserves_no_more_than_a_chunk() {
        // A header that declares 1 MiB, then bytes trickling in.
        let (_, early) = feed(1 << 20, 100, 1000);
        assert!(
            early <= READ_CHUNK,
            "reserved {early} for a header and a few bytes"
        );
    }

    #[test]
    fn a_large_packet_ends_up_in_an_allocation_of_its_own_size() {
        for total in [READ_CHUNK + 1, 100_000, 1 << 20, 3 * READ_CHUNK + 17] {
            for step in [1 << 10, 16 << 10, 64 << 10] {
                let (rbuf, _) = feed(total, step, 0);
                assert_eq!(rbuf.len(), total);
                assert_eq!(
                    rbuf.capacity(),
                    total,
                    "a {total}-byte packet read {step} at a time pins more than its bytes"
                );
            }
        }
    }

    #[test]
    fn growth_at_most_doubles_what_has_arrived() {
        let mut rbuf = BytesMut::new();
        let total = 8 << 20;
        while rbuf.len() < total {
            let before = rbuf.len();
            grow_for_read(&mut rbuf, (before >= 4).then_some(total));
            assert!(
                rbuf.capacity() <= (2 * before).max(before + READ_CHUNK).max(READ_CHUNK),
                "{} reserved with {before} bytes arrived",
                rbuf.capacity()
            );
            let n = (rbuf.capacity() - before).min(total - before);
            rbuf.extend_from_slice(&vec![0u8; n]);
        }
    }
}
