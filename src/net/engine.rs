//! Layer 1: the single-threaded completion engine.
//!
//! An [`Engine`] owns one epoll instance and everything registered with it: listeners,
//! connects in progress, bound sockets (this module) and framed connections (layer 2,
//! [`crate::net::Connection`]). It is driven by one thread through [`Engine::run`] or
//! [`Engine::run_once`]; callbacks run on that thread and receive `&mut Engine`, so they can
//! issue further requests, bind accepted sockets or close sockets directly.
//!
//! Requests follow the IOCP model of the C original. [`Engine::recv`] and [`Engine::send`] try
//! the operation at once: if it completes, the result is returned to the caller and no callback
//! runs; otherwise the request is queued and completes later through the socket's
//! `on_io_finish` callback. [`Engine::post_recv`] and [`Engine::post_send`] only queue.
//! Requests on one socket complete in the order they were issued, per direction. Closing a
//! socket hands every request still queued to its `on_clear_pending` callback, exactly once.
//! End of stream and socket errors complete requests with an error; nothing waits forever.
//!
//! Other threads reach a running engine through an [`EngineHandle`]: `wake` interrupts a
//! blocking wait and `post` runs a closure on the engine's thread.
//!
//! Epoll is level-triggered here; readiness is a hint, and every handler tolerates a spurious
//! event by getting `WouldBlock` and waiting again.

use super::sys::{self, Epoll, EventFd, Events, Interest};
use crate::sync::{Arc, Mutex, SleepFlag};
use slab::Slab;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The epoll token of the engine's own wake-up eventfd.
const WAKER_TOKEN: u64 = u64::MAX;
/// How many events one wait collects at most.
const EVENTS_PER_WAIT: usize = 1024;
/// How many connections one readiness event of a listener accepts at most, so that a flood of
/// connections cannot starve the sockets already open.
const ACCEPTS_PER_EVENT: usize = 256;
/// The listen backlog: large enough for a burst of a thousand clients connecting at once.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Identifies a registration in an engine: slab index plus a generation, so that a stale id
/// whose slot has been reused is recognised and refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Key {
    fn token(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }
    fn from_token(token: u64) -> Key {
        Key {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

/// A socket bound to an engine with [`Engine::bind`]. `Copy`; a stale id (the socket was
/// closed, even if its slot was reused since) is refused with `NotConnected`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SocketId(pub(crate) Key);

/// A connected TCP socket that is not bound to any engine yet: what [`Engine::listen`] and
/// [`Engine::connect`] hand to their callbacks. Bind it with [`Engine::bind`] (layer 1) or
/// [`crate::net::Connection::bind`] (layer 2). Dropping it closes the socket.
#[derive(Debug)]
pub struct Socket {
    pub(crate) fd: OwnedFd,
    pub(crate) peer: SocketAddr,
}

impl Socket {
    /// The address of the other end.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of this end.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.fd.as_fd())
    }

    pub(crate) fn new(fd: OwnedFd, peer: SocketAddr) -> Socket {
        // Packets are written whole; Nagle's algorithm would only delay them.
        let _ = sys::set_nodelay(fd.as_fd(), true);
        Socket { fd, peer }
    }
}

/// The direction of a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoKind {
    /// A receive: fills the request's buffers.
    Recv,
    /// A send: writes the request's buffers.
    Send,
}

/// A request: one or more buffers (vectored I/O) plus a token for the caller's own use.
///
/// For a receive, each buffer's length is the space to fill (for example `vec![0; 4096]`); the
/// completion says how many bytes arrived, filling the buffers in order. For a send, the
/// buffers hold the bytes to write; the request completes when all of them are written.
pub struct IoRequest {
    bufs: Vec<Vec<u8>>,
    /// Bytes already written (sends that completed partially).
    done: usize,
    /// The caller's own tag, returned untouched.
    pub token: u64,
}

impl IoRequest {
    /// A request over these buffers.
    pub fn new(bufs: Vec<Vec<u8>>) -> IoRequest {
        IoRequest {
            bufs,
            done: 0,
            token: 0,
        }
    }

    /// A receive request with one buffer of `capacity` bytes.
    pub fn recv_buffer(capacity: usize) -> IoRequest {
        IoRequest::new(vec![vec![0; capacity]])
    }

    /// A send request with one buffer.
    pub fn send_buffer(data: Vec<u8>) -> IoRequest {
        IoRequest::new(vec![data])
    }

    /// Sets the caller's tag.
    #[must_use]
    pub fn with_token(mut self, token: u64) -> IoRequest {
        self.token = token;
        self
    }

    /// The buffers.
    pub fn bufs(&self) -> &[Vec<u8>] {
        &self.bufs
    }

    /// The buffers, mutably (to refill a request for reuse).
    pub fn bufs_mut(&mut self) -> &mut Vec<Vec<u8>> {
        self.done = 0;
        &mut self.bufs
    }

    /// Takes the buffers back.
    pub fn into_bufs(self) -> Vec<Vec<u8>> {
        self.bufs
    }

    /// The total length of the buffers.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }

    /// Whether the buffers hold no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gathers the first `n` received bytes into one vector (a convenience for tests and
    /// simple protocols; vectored readers can use [`IoRequest::bufs`] directly).
    pub fn received(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        for b in &self.bufs {
            let take = (n - out.len()).min(b.len());
            out.extend_from_slice(&b[..take]);
            if out.len() == n {
                break;
            }
        }
        out
    }

    fn read_from(&mut self, fd: &OwnedFd) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .bufs
            .iter_mut()
            .filter(|b| !b.is_empty())
            .map(|b| IoSliceMut::new(b))
            .collect();
        if slices.is_empty() {
            return Ok(0);
        }
        sys::readv(fd.as_fd(), &mut slices)
    }

    /// Writes what is left; returns true when the whole request has been written.
    fn write_to(&mut self, fd: &OwnedFd) -> io::Result<bool> {
        loop {
            let mut skip = self.done;
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.bufs.len());
            for b in &self.bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                slices.push(IoSlice::new(&b[skip..]));
                skip = 0;
            }
            if slices.is_empty() {
                return Ok(true);
            }
            match sys::writev(fd.as_fd(), &slices) {
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

impl fmt::Debug for IoRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoRequest")
            .field("bufs", &self.bufs.len())
            .field("len", &self.len())
            .field("token", &self.token)
            .finish()
    }
}

/// A request that finished later, as handed to `on_io_finish`.
#[derive(Debug)]
pub struct Completion {
    /// The socket it was issued on.
    pub socket: SocketId,
    /// Receive or send.
    pub kind: IoKind,
    /// The request, handed back.
    pub request: IoRequest,
    /// Bytes transferred, or why it failed (`UnexpectedEof` when the peer closed).
    pub result: io::Result<usize>,
}

/// What [`Engine::recv`] and [`Engine::send`] did with a request.
#[derive(Debug)]
#[must_use = "a request that completed at once is handed back here, not to on_io_finish"]
pub enum Submitted {
    /// It completed at once: the request and the bytes transferred.
    Done(IoRequest, usize),
    /// It was queued and completes later through `on_io_finish`.
    Pending,
}

/// A request that could not be carried out, handed back with the reason.
#[derive(Debug)]
pub struct RequestError {
    /// The request, untouched (for a send: possibly partly written, see the error).
    pub request: IoRequest,
    /// Why: `NotConnected` for an unknown or closed socket, `UnexpectedEof` when the peer has
    /// closed, or the OS error.
    pub error: io::Error,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request failed: {}", self.error)
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The completion callback of a bound socket.
pub type OnIoFinish = Box<dyn FnMut(&mut Engine, Completion)>;
/// Receives each request still queued when its socket closes, exactly once.
pub type OnClearPending = Box<dyn FnMut(SocketId, IoKind, IoRequest)>;
type OnAccept = Box<dyn FnMut(&mut Engine, Socket)>;
type OnConnect = Box<dyn FnOnce(&mut Engine, io::Result<Socket>)>;
type Posted = Box<dyn FnOnce(&mut Engine) + Send>;
type LocalPosted = Box<dyn FnOnce(&mut Engine)>;

/// The state an engine shares with other threads.
struct Shared {
    eventfd: EventFd,
    /// Whether the engine's thread is (about to be) blocked in `epoll_wait`, and whether a
    /// wake-up is pending for it. A wake that arrives while the engine is awake (between two
    /// waits) is kept until its next wait, which then does not block (fix: layer-1 tests,
    /// `wake_before_run_once_is_not_lost`).
    sleeping: SleepFlag,
    posted: Mutex<Vec<Posted>>,
}

impl Shared {
    fn wake(&self) -> io::Result<()> {
        if self.sleeping.wake() {
            self.eventfd.notify()?;
        }
        Ok(())
    }

    /// Wakes the engine if it is asleep; returns whether it was.
    fn wake_if_sleeping(&self) -> io::Result<bool> {
        if self.sleeping.claim_wake() {
            self.eventfd.notify()?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A thread-safe handle to an engine: wake it, or run a closure on its thread.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// Interrupts the engine's current or next blocking wait (one eventfd write, and only when
    /// the engine is asleep).
    ///
    /// # Errors
    /// The OS error of writing the eventfd.
    pub fn wake(&self) -> io::Result<()> {
        // Either the engine is asleep and the eventfd is written, or its next wait finds the
        // pending wake-up and does not block (see `SleepFlag`).
        self.shared.wake()
    }

    /// Runs `f` on the engine's thread during its next pass, and wakes it.
    ///
    /// # Errors
    /// The OS error of writing the eventfd (the closure stays queued).
    pub fn post(&self, f: impl FnOnce(&mut Engine) + Send + 'static) -> io::Result<()> {
        self.shared.posted.lock().unwrap().push(Box::new(f));
        // The engine raises its flag and then checks `posted` under the same lock, so either
        // it finds the closure or the claim below finds it asleep (no lost wake-up).
        self.shared.wake_if_sleeping().map(drop)
    }
}

impl EngineHandle {
    /// Wakes the engine only if it is asleep (or about to be); returns whether it was. The
    /// scheduler uses it to wake one idle worker, not all of them.
    pub(crate) fn wake_if_sleeping(&self) -> bool {
        self.shared.wake_if_sleeping().unwrap_or(false)
    }
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineHandle")
    }
}

pub(crate) struct Listener {
    fd: OwnedFd,
    on_accept: Option<OnAccept>,
}

pub(crate) struct Connector {
    fd: OwnedFd,
    peer: SocketAddr,
    on_connect: Option<OnConnect>,
}

/// A bound layer-1 socket.
pub(crate) struct BoundSocket {
    fd: OwnedFd,
    peer: SocketAddr,
    recvs: VecDeque<IoRequest>,
    sends: VecDeque<IoRequest>,
    interest: Interest,
    on_io_finish: Option<OnIoFinish>,
    on_clear_pending: OnClearPending,
}

pub(crate) enum Kind {
    Listener(Listener),
    Connector(Connector),
    Socket(BoundSocket),
    Conn(super::conn::ConnEntry),
    /// Held for an instant while a connection's state is borrowed out of the table.
    Vacant,
}

pub(crate) struct Entry {
    pub(crate) generation: u32,
    pub(crate) kind: Kind,
}

/// A timer wakes either a registration (by key) or a callback in `Engine::callbacks`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    deadline: Instant,
    seq: u64,
    key_index: u32,
    key_generation: u32,
}

/// `key_generation` of a timer that runs a callback (registrations never have generation 0).
const CALLBACK_TIMER: u32 = 0;

/// The single-threaded completion engine (layer 1). See the module docs for the model.
///
/// # Example
///
/// An echo server on the completion API:
///
/// ```no_run
/// use kendynet::net::{Completion, Engine, IoKind, IoRequest, Submitted};
/// use std::time::Duration;
///
/// fn on_finish(engine: &mut Engine, c: Completion) {
///     match (c.kind, c.result) {
///         (IoKind::Recv, Ok(n)) => {
///             let data = c.request.received(n);
///             let _ = engine.post_send(c.socket, IoRequest::send_buffer(data));
///             let _ = engine.post_recv(c.socket, c.request);
///         }
///         (IoKind::Send, Ok(_)) => {}
///         (_, Err(_)) => engine.close(c.socket),
///     }
/// }
///
/// let mut engine = Engine::new()?;
/// engine.listen("127.0.0.1:8010".parse().unwrap(), |engine, socket| {
///     let id = engine.bind(socket, on_finish, |_, _, _| {}).expect("bind");
///     let _ = engine.post_recv(id, IoRequest::recv_buffer(4096));
/// })?;
/// loop {
///     engine.run(Duration::from_millis(100))?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Engine {
    poll: Epoll,
    events: Events,
    shared: Arc<Shared>,
    pub(crate) entries: Slab<Entry>,
    next_gen: u32,
    timers: BinaryHeap<std::cmp::Reverse<Timer>>,
    timer_seq: u64,
    now: Instant,
    local_posted: Vec<LocalPosted>,
    posted_batch: Vec<Posted>,
    /// Callbacks of one-shot timers ([`Engine::post_after`]).
    callbacks: Slab<LocalPosted>,
    /// Connections with packets queued since their last flush.
    pub(crate) dirty_conns: Vec<super::conn::ConnId>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("registrations", &self.entries.len())
            .finish()
    }
}

impl Engine {
    /// Creates an engine: an epoll instance and its wake-up eventfd.
    ///
    /// # Errors
    /// The OS error of `epoll_create1` or `eventfd` (for example, out of descriptors).
    pub fn new() -> io::Result<Engine> {
        let poll = Epoll::new()?;
        let eventfd = EventFd::new()?;
        poll.add_waker(&eventfd, WAKER_TOKEN)?;
        Ok(Engine {
            poll,
            events: Events::with_capacity(EVENTS_PER_WAIT),
            shared: Arc::new(Shared {
                eventfd,
                sleeping: SleepFlag::new(),
                posted: Mutex::new(Vec::new()),
            }),
            entries: Slab::new(),
            next_gen: 1,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            now: Instant::now(),
            local_posted: Vec::new(),
            posted_batch: Vec::new(),
            dirty_conns: Vec::new(),
            callbacks: Slab::new(),
        })
    }

    /// Sets how many readiness events one wait collects at most (default 1024). The actor
    /// runtime uses small batches, so that replies to the first sockets of a batch leave
    /// before the last sockets are read.
    pub(crate) fn set_events_per_wait(&mut self, n: usize) {
        self.events = Events::with_capacity(n);
    }

    /// A thread-safe handle for waking this engine or posting work to it.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: self.shared.clone(),
        }
    }

    /// The time of the current pass (read once after each wait, so handlers need not).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of listeners, connects in progress, sockets and connections registered.
    pub fn registrations(&self) -> usize {
        self.entries.len()
    }

    /// Runs `f` on this thread at the end of the current pass (or the next one): the C
    /// original's posted request. Use it to defer work out of a callback.
    pub fn post(&mut self, f: impl FnOnce(&mut Engine) + 'static) {
        self.local_posted.push(Box::new(f));
    }

    /// Processes events for `duration`: waits, dispatches, and repeats until it has passed.
    ///
    /// # Errors
    /// The OS error of `epoll_wait` (not `EINTR`, which is retried).
    pub fn run(&mut self, duration: Duration) -> io::Result<()> {
        let end = Instant::now() + duration;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.run_once(Some(end - now))?;
        }
    }

    /// One pass: waits at most `timeout` (`None`: until something happens) for events,
    /// then runs their callbacks, due timers and posted work. Returns how many events and
    /// timers were dispatched.
    ///
    /// # Errors
    /// The OS error of `epoll_wait` (not `EINTR`, which is retried).
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout = self.bounded_timeout(timeout);
        let mut dispatched = self.wait_and_dispatch(timeout)?;
        dispatched += self.run_timers();
        self.run_posted();
        self.flush_dirty();
        Ok(dispatched)
    }

    /// Shortens a wait so that it ends at the next timer and does not block at all while
    /// posted work is waiting.
    pub(crate) fn bounded_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.local_posted.is_empty() || !self.dirty_conns.is_empty() {
            return Some(Duration::ZERO);
        }
        match self.timers.peek() {
            Some(std::cmp::Reverse(t)) => {
                let until = t.deadline.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |d| d.min(until)))
            }
            None => timeout,
        }
    }

    /// Waits (announcing sleep to wakers when the wait may block) and dispatches I/O events.
    pub(crate) fn wait_and_dispatch(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.wait_and_dispatch_with(timeout, &|| false)
    }

    /// As [`Engine::wait_and_dispatch`]; `has_work` is asked after the engine has announced
    /// that it is going to sleep, so work that another thread queued before it could see the
    /// announcement is found here (the queuing thread wakes the engine otherwise).
    pub(crate) fn wait_and_dispatch_with(
        &mut self,
        timeout: Option<Duration>,
        has_work: &dyn Fn() -> bool,
    ) -> io::Result<usize> {
        let may_block = timeout != Some(Duration::ZERO);
        // Announce the sleep, then look once more: at a pending wake-up, at closures posted
        // meanwhile, and at the caller's work.
        if may_block
            && (!self.shared.sleeping.announce()
                || !self.shared.posted.lock().unwrap().is_empty()
                || has_work())
        {
            self.shared.sleeping.retract();
            return self.wait_and_dispatch_with(Some(Duration::ZERO), has_work);
        }
        let res = self.poll.wait(&mut self.events, timeout);
        if may_block {
            self.shared.sleeping.retract();
        }
        res?;
        self.now = Instant::now();
        let n = self.events.len();
        for i in 0..n {
            let ev = self.events.get(i);
            if ev.token == WAKER_TOKEN {
                self.shared.eventfd.drain()?;
                continue;
            }
            self.dispatch(Key::from_token(ev.token), ev);
        }
        Ok(n)
    }

    /// Runs the closures posted from this thread and from other threads.
    pub(crate) fn run_posted(&mut self) {
        std::mem::swap(
            &mut self.posted_batch,
            &mut *self.shared.posted.lock().unwrap(),
        );
        for f in std::mem::take(&mut self.posted_batch) {
            f(self);
        }
        // Closures may post more; each runs once, in order, the new ones on the next pass.
        for f in std::mem::take(&mut self.local_posted) {
            f(self);
        }
    }

    pub(crate) fn run_timers(&mut self) -> usize {
        let mut fired = 0;
        let now = Instant::now();
        while let Some(std::cmp::Reverse(t)) = self.timers.peek() {
            if t.deadline > now {
                break;
            }
            let std::cmp::Reverse(t) = self.timers.pop().expect("peeked");
            fired += 1;
            self.now = now;
            if t.key_generation == CALLBACK_TIMER {
                if let Some(f) = self.callbacks.try_remove(t.key_index as usize) {
                    f(self);
                }
                continue;
            }
            let key = Key {
                index: t.key_index,
                generation: t.key_generation,
            };
            self.on_timer(key);
        }
        fired
    }

    /// Arms a wake-up for `key` at `deadline`. Timers are not cancelled: the owner checks, when
    /// called, whether its deadline has really passed, and re-arms if not.
    pub(crate) fn add_timer(&mut self, key: Key, deadline: Instant) {
        self.timer_seq += 1;
        self.timers.push(std::cmp::Reverse(Timer {
            deadline,
            seq: self.timer_seq,
            key_index: key.index,
            key_generation: key.generation,
        }));
    }

    /// Runs `f` on this thread once `delay` has passed (a one-shot timer).
    pub fn post_after(&mut self, delay: Duration, f: impl FnOnce(&mut Engine) + 'static) {
        let index = self.callbacks.insert(Box::new(f)) as u32;
        self.timer_seq += 1;
        self.timers.push(std::cmp::Reverse(Timer {
            deadline: Instant::now() + delay,
            seq: self.timer_seq,
            key_index: index,
            key_generation: CALLBACK_TIMER,
        }));
    }

    pub(crate) fn entry_mut(&mut self, key: Key) -> Option<&mut Entry> {
        self.entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation)
    }

    /// Registers `fd` for `interest` under a new key built from the entry `make` returns.
    pub(crate) fn insert(
        &mut self,
        fd: RawFd,
        interest: Interest,
        make: impl FnOnce(Key) -> Kind,
    ) -> io::Result<Key> {
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let vacant = self.entries.vacant_entry();
        let key = Key {
            index: vacant.key() as u32,
            generation,
        };
        self.poll.add(fd, interest, key.token())?;
        vacant.insert(Entry {
            generation,
            kind: make(key),
        });
        Ok(key)
    }

    pub(crate) fn set_interest(&self, fd: &OwnedFd, key: Key, interest: Interest) {
        // MOD on a registered descriptor only fails if it was closed, which the owner of the
        // entry never does while registered.
        let _ = self.poll.modify(fd.as_raw_fd(), interest, key.token());
    }

    /// Removes an entry and its epoll registration; the descriptor closes when dropped.
    pub(crate) fn remove(&mut self, key: Key) -> Option<Kind> {
        self.entry_mut(key)?;
        let entry = self.entries.remove(key.index as usize);
        let fd = match &entry.kind {
            Kind::Listener(l) => &l.fd,
            Kind::Connector(c) => &c.fd,
            Kind::Socket(s) => &s.fd,
            Kind::Conn(c) => c.fd(),
            Kind::Vacant => return Some(entry.kind),
        };
        let _ = self.poll.delete(fd.as_raw_fd());
        Some(entry.kind)
    }

    fn dispatch(&mut self, key: Key, ev: sys::Event) {
        let Some(entry) = self.entry_mut(key) else {
            return;
        };
        match &mut entry.kind {
            Kind::Listener(_) => self.on_listener_ready(key),
            Kind::Connector(_) => self.finish_connect(key, None),
            Kind::Socket(_) => self.on_socket_ready(key, ev),
            Kind::Conn(_) => super::conn::on_ready(self, key, ev),
            Kind::Vacant => {}
        }
    }

    fn on_timer(&mut self, key: Key) {
        let Some(entry) = self.entry_mut(key) else {
            return;
        };
        match &mut entry.kind {
            Kind::Connector(_) => {
                self.finish_connect(key, Some(io::Error::from(io::ErrorKind::TimedOut)))
            }
            Kind::Conn(_) => super::conn::on_timer(self, key),
            Kind::Listener(_) | Kind::Socket(_) | Kind::Vacant => {}
        }
    }

    // ----- listen -----

    /// Listens on `addr` (port 0 picks a free port: see [`Engine::listener_addr`]) and calls
    /// `on_accept` on this thread with each connected socket.
    ///
    /// # Errors
    /// The OS error of creating, binding or listening (for example `AddrInUse`).
    pub fn listen(
        &mut self,
        addr: SocketAddr,
        on_accept: impl FnMut(&mut Engine, Socket) + 'static,
    ) -> io::Result<ListenerId> {
        let fd = sys::listen_tcp(&addr, LISTEN_BACKLOG)?;
        self.listen_on(fd, on_accept)
    }

    /// Registers an already listening socket (made on another thread) with its callback.
    pub(crate) fn listen_on(
        &mut self,
        fd: OwnedFd,
        on_accept: impl FnMut(&mut Engine, Socket) + 'static,
    ) -> io::Result<ListenerId> {
        let raw = fd.as_raw_fd();
        let on_accept: OnAccept = Box::new(on_accept);
        let key = self.insert(raw, Interest::READ, move |_| {
            Kind::Listener(Listener {
                fd,
                on_accept: Some(on_accept),
            })
        })?;
        Ok(ListenerId(key))
    }

    /// The address a listener is bound to.
    ///
    /// # Errors
    /// `NotConnected` for an unknown listener, or the OS error.
    pub fn listener_addr(&mut self, id: ListenerId) -> io::Result<SocketAddr> {
        match self.entry_mut(id.0) {
            Some(Entry {
                kind: Kind::Listener(l),
                ..
            }) => sys::local_addr(l.fd.as_fd()),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Stops listening and closes the listening socket. Unknown ids are ignored.
    pub fn close_listener(&mut self, id: ListenerId) {
        if let Some(Entry {
            kind: Kind::Listener(_),
            ..
        }) = self.entry_mut(id.0)
        {
            self.remove(id.0);
        }
    }

    fn on_listener_ready(&mut self, key: Key) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let Some(Entry {
                kind: Kind::Listener(l),
                ..
            }) = self.entry_mut(key)
            else {
                return;
            };
            let accepted = match sys::accept(l.fd.as_fd()) {
                Ok(Some((fd, peer))) => Socket::new(fd, peer),
                Ok(None) => return,
                // Out of descriptors and the like: the connection stays in the backlog and
                // level-triggered epoll reports it again; a later pass retries.
                Err(_) => return,
            };
            let Some(mut cb) = l.on_accept.take() else {
                return;
            };
            cb(self, accepted);
            if let Some(Entry {
                kind: Kind::Listener(l),
                ..
            }) = self.entry_mut(key)
            {
                l.on_accept = Some(cb);
            } else {
                return;
            }
        }
    }

    // ----- connect -----

    /// Starts connecting to `addr` without blocking. `on_connect` runs on this thread exactly
    /// once with the connected socket, or with the error: `ConnectionRefused`, `TimedOut` when
    /// `timeout` passes first, or another OS error.
    ///
    /// # Errors
    /// Only when the attempt cannot even start (for example, out of descriptors); the callback
    /// is not called then.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        on_connect: impl FnOnce(&mut Engine, io::Result<Socket>) + 'static,
    ) -> io::Result<()> {
        let (fd, connected) = match sys::connect_nonblocking(&addr) {
            Ok(r) => r,
            Err(e) => {
                // A refusal the kernel knows at once still goes through the callback, so the
                // caller has one place that handles it.
                self.post(move |engine| on_connect(engine, Err(e)));
                return Ok(());
            }
        };
        if connected {
            let socket = Socket::new(fd, addr);
            self.post(move |engine| on_connect(engine, Ok(socket)));
            return Ok(());
        }
        let raw = fd.as_raw_fd();
        let on_connect: OnConnect = Box::new(on_connect);
        let key = self.insert(raw, Interest::WRITE, move |_| {
            Kind::Connector(Connector {
                fd,
                peer: addr,
                on_connect: Some(on_connect),
            })
        })?;
        let deadline = Instant::now() + timeout;
        self.add_timer(key, deadline);
        Ok(())
    }

    fn finish_connect(&mut self, key: Key, timed_out: Option<io::Error>) {
        let Some(Kind::Connector(c)) = self.remove(key) else {
            return;
        };
        let Connector {
            fd,
            peer,
            on_connect,
        } = c;
        let result = match timed_out {
            Some(e) => Err(e),
            None => match sys::take_socket_error(fd.as_fd()) {
                Ok(None) => Ok(Socket::new(fd, peer)),
                Ok(Some(e)) | Err(e) => Err(e),
            },
        };
        if let Some(cb) = on_connect {
            cb(self, result);
        }
    }

    // ----- bound sockets -----

    /// Binds a connected socket to this engine with its completion callbacks.
    ///
    /// # Errors
    /// The OS error of registering it with epoll; the socket is closed then.
    pub fn bind(
        &mut self,
        socket: Socket,
        on_io_finish: impl FnMut(&mut Engine, Completion) + 'static,
        on_clear_pending: impl FnMut(SocketId, IoKind, IoRequest) + 'static,
    ) -> io::Result<SocketId> {
        let Socket { fd, peer } = socket;
        let raw = fd.as_raw_fd();
        let on_io_finish: OnIoFinish = Box::new(on_io_finish);
        let on_clear_pending: OnClearPending = Box::new(on_clear_pending);
        let key = self.insert(raw, Interest::NONE, move |_| {
            Kind::Socket(BoundSocket {
                fd,
                peer,
                recvs: VecDeque::new(),
                sends: VecDeque::new(),
                interest: Interest::NONE,
                on_io_finish: Some(on_io_finish),
                on_clear_pending,
            })
        })?;
        // An idle bound socket stays out of epoll (see `update_socket_interest`); `insert`
        // registered it, so take it out until its first request (`raw` is still open: the
        // entry owns it).
        let _ = self.poll.delete(raw);
        Ok(SocketId(key))
    }

    fn socket_mut(&mut self, key: Key) -> Option<&mut BoundSocket> {
        match self.entry_mut(key) {
            Some(Entry {
                kind: Kind::Socket(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }

    /// The peer address of a bound socket, or `None` if it is closed.
    pub fn peer_addr(&mut self, id: SocketId) -> Option<SocketAddr> {
        self.socket_mut(id.0).map(|s| s.peer)
    }

    /// Receives now if data is waiting and nothing is queued before this request; otherwise
    /// queues the request (see the module docs).
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` (unknown or closed socket),
    /// `UnexpectedEof` (the peer closed) or the OS error.
    pub fn recv(&mut self, id: SocketId, mut req: IoRequest) -> Result<Submitted, RequestError> {
        let Some(s) = self.socket_mut(id.0) else {
            return Err(not_connected(req));
        };
        if s.recvs.is_empty() {
            match req.read_from(&s.fd) {
                Ok(0) if !req.is_empty() => {
                    return Err(RequestError {
                        request: req,
                        error: eof(),
                    });
                }
                Ok(n) => return Ok(Submitted::Done(req, n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    return Err(RequestError {
                        request: req,
                        error,
                    });
                }
            }
        }
        self.queue(id, IoKind::Recv, req);
        Ok(Submitted::Pending)
    }

    /// Sends now as much as the socket takes if nothing is queued before this request; a
    /// request written whole completes at once, otherwise the rest is queued.
    ///
    /// # Errors
    /// As [`Engine::recv`]; `BrokenPipe` or `ConnectionReset` when the peer is gone.
    pub fn send(&mut self, id: SocketId, mut req: IoRequest) -> Result<Submitted, RequestError> {
        let Some(s) = self.socket_mut(id.0) else {
            return Err(not_connected(req));
        };
        if s.sends.is_empty() {
            match req.write_to(&s.fd) {
                Ok(true) => {
                    let n = req.done;
                    return Ok(Submitted::Done(req, n));
                }
                Ok(false) => {}
                Err(error) => {
                    return Err(RequestError {
                        request: req,
                        error,
                    });
                }
            }
        }
        self.queue(id, IoKind::Send, req);
        Ok(Submitted::Pending)
    }

    /// Queues a receive without trying it now; it completes through `on_io_finish`.
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` for an unknown or closed socket.
    pub fn post_recv(&mut self, id: SocketId, req: IoRequest) -> Result<(), RequestError> {
        if self.socket_mut(id.0).is_none() {
            return Err(not_connected(req));
        }
        self.queue(id, IoKind::Recv, req);
        Ok(())
    }

    /// Queues a send without trying it now; it completes through `on_io_finish`.
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` for an unknown or closed socket.
    pub fn post_send(&mut self, id: SocketId, req: IoRequest) -> Result<(), RequestError> {
        if self.socket_mut(id.0).is_none() {
            return Err(not_connected(req));
        }
        self.queue(id, IoKind::Send, req);
        Ok(())
    }

    fn queue(&mut self, id: SocketId, kind: IoKind, req: IoRequest) {
        let Some(s) = self.socket_mut(id.0) else {
            return;
        };
        match kind {
            IoKind::Recv => s.recvs.push_back(req),
            IoKind::Send => s.sends.push_back(req),
        }
        self.update_socket_interest(id.0);
    }

    fn update_socket_interest(&mut self, key: Key) {
        let Some(Entry {
            kind: Kind::Socket(s),
            ..
        }) = self
            .entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation)
        else {
            return;
        };
        let want = Interest {
            read: !s.recvs.is_empty(),
            write: !s.sends.is_empty(),
        };
        if want != s.interest {
            // A socket with no request queued is not registered at all: epoll reports
            // EPOLLHUP/EPOLLERR (and here EPOLLRDHUP) whatever the interest, so an idle
            // socket whose peer had closed or reset made every wait return at once, a busy
            // loop until the user posted a request or closed it (fix: layer-1 tests,
            // `idle_bound_socket_does_not_spin_after_peer_closes`). `remove` ignores the
            // ENOENT of deleting an unregistered descriptor.
            let raw = s.fd.as_raw_fd();
            let _ = if want == Interest::NONE {
                self.poll.delete(raw)
            } else if s.interest == Interest::NONE {
                self.poll.add(raw, want, key.token())
            } else {
                self.poll.modify(raw, want, key.token())
            };
            s.interest = want;
        }
    }

    /// Closes a bound socket: every request still queued goes to `on_clear_pending` once, the
    /// descriptor closes, and the id becomes stale. Unknown or closed ids are ignored.
    pub fn close(&mut self, id: SocketId) {
        if self.socket_mut(id.0).is_none() {
            return;
        }
        let Some(Kind::Socket(mut s)) = self.remove(id.0) else {
            return;
        };
        for req in s.recvs.drain(..) {
            (s.on_clear_pending)(id, IoKind::Recv, req);
        }
        for req in s.sends.drain(..) {
            (s.on_clear_pending)(id, IoKind::Send, req);
        }
    }

    /// Completes queued requests that the socket is ready for, one callback each.
    fn on_socket_ready(&mut self, key: Key, ev: sys::Event) {
        let id = SocketId(key);
        if ev.readable() {
            self.complete_recvs(id);
        }
        if ev.writable() {
            self.complete_sends(id);
        }
        self.update_socket_interest(key);
    }

    fn complete_recvs(&mut self, id: SocketId) {
        loop {
            let Some(s) = self.socket_mut(id.0) else {
                return;
            };
            let Some(mut req) = s.recvs.pop_front() else {
                return;
            };
            let result = match req.read_from(&s.fd) {
                Ok(0) if !req.is_empty() => Err(eof()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.recvs.push_front(req);
                    return;
                }
                Err(e) => Err(e),
            };
            let stop = result.is_err();
            self.complete(Completion {
                socket: id,
                kind: IoKind::Recv,
                request: req,
                result,
            });
            if stop {
                // Every later receive would fail the same way: fail them now, in order.
                self.fail_all(id, IoKind::Recv);
                return;
            }
        }
    }

    fn complete_sends(&mut self, id: SocketId) {
        loop {
            let Some(s) = self.socket_mut(id.0) else {
                return;
            };
            let Some(mut req) = s.sends.pop_front() else {
                return;
            };
            let result = match req.write_to(&s.fd) {
                Ok(true) => Ok(req.done),
                Ok(false) => {
                    s.sends.push_front(req);
                    return;
                }
                Err(e) => Err(e),
            };
            let stop = result.is_err();
            self.complete(Completion {
                socket: id,
                kind: IoKind::Send,
                request: req,
                result,
            });
            if stop {
                self.fail_all(id, IoKind::Send);
                return;
            }
        }
    }

    fn fail_all(&mut self, id: SocketId, kind: IoKind) {
        loop {
            let Some(s) = self.socket_mut(id.0) else {
                return;
            };
            let next = match kind {
                IoKind::Recv => s.recvs.pop_front(),
                IoKind::Send => s.sends.pop_front(),
            };
            let Some(request) = next else { return };
            let error = match kind {
                IoKind::Recv => eof(),
                IoKind::Send => io::Error::from(io::ErrorKind::BrokenPipe),
            };
            self.complete(Completion {
                socket: id,
                kind,
                request,
                result: Err(error),
            });
        }
    }

    /// Runs `on_io_finish` with the callback taken out of its socket, so that the callback
    /// can use the engine freely (issue requests, close this socket).
    fn complete(&mut self, completion: Completion) {
        let key = completion.socket.0;
        let Some(s) = self.socket_mut(key) else {
            return;
        };
        let Some(mut cb) = s.on_io_finish.take() else {
            return;
        };
        cb(self, completion);
        if let Some(s) = self.socket_mut(key) {
            s.on_io_finish = Some(cb);
        }
    }
}

/// A listener registered with [`Engine::listen`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ListenerId(Key);

fn not_connected(request: IoRequest) -> RequestError {
    RequestError {
        request,
        error: io::ErrorKind::NotConnected.into(),
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")
}
