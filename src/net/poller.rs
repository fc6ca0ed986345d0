//! The network side of the actor runtime: sockets whose events become actor messages.
//!
//! Every worker is also a poller: its engine holds its share of the sockets as layer-2
//! connections. Their callbacks only stage events (`NetEvent`s, tagged with the socket) in
//! the worker's [`PollerLocal`]; after the engine's pass the worker delivers the staged events
//! to each socket's current owner, a batch per socket under one mailbox lock. Because one
//! thread stages and delivers all events of a socket, in the order the connection produced
//! them, an owner sees `Connected` first, then the packets in order, then `Disconnected` last.
//!
//! Outgoing packets travel the other way: [`SockIdent::send`] queues a frame in the socket's
//! slot and marks the slot dirty for its poller; [`flush`] moves dirty outboxes into the
//! connections and writes them.

use super::conn::{ConnId, ConnOptions, Connection, DisconnectReason};
use super::engine::{Engine, Socket};
use super::ident::{SockIdent, table};
use super::packet::RPacket;
use super::sys;
use crate::actor::{Recipient, SystemHandle, SystemInner, WorkerLocal, with_current};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A network event, delivered to the actor that owns the socket. Per socket: exactly one
/// `Connected` first, then its packets in order, then exactly one `Disconnected` last.
/// Owners take them through `From<NetEvent>` on their message type.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// A socket opened (accepted, or a `connect` succeeded).
    Connected {
        /// The socket.
        sock: SockIdent,
        /// Its peer.
        peer: SocketAddr,
    },
    /// A packet arrived.
    Packet {
        /// The socket.
        sock: SockIdent,
        /// The packet (sharing the receive buffer).
        packet: RPacket,
    },
    /// The socket closed; its handle is stale from now on.
    Disconnected {
        /// The socket.
        sock: SockIdent,
        /// Why.
        reason: DisconnectReason,
    },
    /// A `connect` failed: refused, timed out, or another error.
    ConnectFailed {
        /// The address it tried.
        addr: SocketAddr,
        /// Why.
        error: io::Error,
    },
}

/// Per-poller state shared with other threads.
struct PollerShared {
    /// Slots marked dirty by other threads.
    remote_dirty: Mutex<Vec<u32>>,
    /// Whether `remote_dirty` holds anything; written under its lock, read without it, so
    /// that the poller's every pass does not take the lock for an empty list.
    remote_pending: AtomicBool,
}

/// The network part of a system.
pub(crate) struct NetShared {
    pollers: Vec<PollerShared>,
    next_poller: AtomicUsize,
    open: AtomicUsize,
    max_connections: usize,
    /// Owner mailbox length past which a socket stops reading (see `Builder::owner_backlog`).
    pub(crate) owner_backlog: usize,
    pub(crate) default_options: ConnOptions,
    listeners: Mutex<Vec<(usize, super::engine::ListenerId)>>,
}

impl NetShared {
    pub(crate) fn new(
        pollers: usize,
        max_connections: usize,
        owner_backlog: usize,
        options: ConnOptions,
    ) -> NetShared {
        NetShared {
            pollers: (0..pollers)
                .map(|_| PollerShared {
                    remote_dirty: Mutex::new(Vec::new()),
                    remote_pending: AtomicBool::new(false),
                })
                .collect(),
            next_poller: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            max_connections,
            owner_backlog,
            default_options: options,
            listeners: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn open_sockets(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn pick_poller(&self) -> usize {
        self.next_poller.fetch_add(1, Ordering::Relaxed) % self.pollers.len()
    }

    /// Tells poller `poller` that slot `index` has something to flush.
    pub(crate) fn mark_dirty(&self, sys: &SystemInner, poller: usize, index: u32) {
        let done_locally = with_current(&sys.sched, |w| match w {
            Some(w) if w.index == poller => match w.net.try_borrow_mut() {
                Ok(mut net) => {
                    net.dirty.push(index);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        });
        if done_locally {
            return;
        }
        let shared = &self.pollers[poller];
        {
            let mut remote = shared.remote_dirty.lock().unwrap();
            remote.push(index);
            shared.remote_pending.store(true, Ordering::Release);
        }
        // The push above is released by the lock before the flag is read inside; the poller
        // raises its flag before it looks at this list (see `PollerLocal::has_remote_work`).
        if let Some(w) = sys.sched.waker(poller) {
            w.wake_if_sleeping();
        }
    }

    /// Stop accepting and close every socket of `sys` gracefully.
    pub(crate) fn begin_shutdown(&self, sys: &Arc<SystemInner>) {
        for (poller, id) in self.listeners.lock().unwrap().drain(..) {
            if let Some(w) = sys.sched.waker(poller) {
                let _ = w.post(move |engine: &mut Engine| engine.close_listener(id));
            }
        }
        let mut to_mark = Vec::new();
        table().for_each_live(|ident, st| {
            if st.sys.as_ref().is_some_and(|s| std::ptr::eq(&**s, &**sys)) && st.open {
                st.open = false;
                st.close_requested = true;
                st.flush_pending = true;
                to_mark.push((st.poller, ident.index()));
            }
        });
        for (poller, index) in to_mark {
            self.mark_dirty(sys, poller, index);
        }
    }
}

/// A poller's thread-local network state.
pub(crate) struct PollerLocal {
    index: usize,
    /// Slots marked dirty from this thread.
    pub(crate) dirty: Vec<u32>,
    /// Events staged during the engine's pass, in order.
    staged: Vec<(SockIdent, NetEvent)>,
    /// Reused buffers.
    batch: Vec<NetEvent>,
    flushed: Vec<(u32, ConnId, usize)>,
    /// Sockets whose reading is paused until their owner's mailbox shrinks.
    paused: Vec<(SockIdent, ConnId, Recipient<NetEvent>)>,
    spare_outbox: Vec<bytes::Bytes>,
}

impl PollerLocal {
    pub(crate) fn new(index: usize) -> PollerLocal {
        PollerLocal {
            index,
            dirty: Vec::new(),
            staged: Vec::new(),
            batch: Vec::new(),
            flushed: Vec::new(),
            paused: Vec::new(),
            spare_outbox: Vec::new(),
        }
    }

    /// Whether other threads left slots to flush (asked after the sleeping flag is up).
    pub(crate) fn has_remote_work(&self, sys: &SystemInner) -> bool {
        sys.net
            .pollers
            .get(self.index)
            .is_some_and(|p| !p.remote_dirty.lock().unwrap().is_empty())
    }
}

fn stage(sys: &SystemInner, sock: SockIdent, ev: NetEvent) {
    with_current(&sys.sched, |w| {
        let w = w.expect("socket callbacks run on their poller's worker thread");
        w.net.borrow_mut().staged.push((sock, ev));
    });
}

/// Moves dirty outboxes into their connections and writes them.
pub(crate) fn flush(sys: &SystemInner, local: &WorkerLocal, engine: &mut Engine) {
    let mut dirty = std::mem::take(&mut local.net.borrow_mut().dirty);
    if let Some(p) = sys.net.pollers.get(local.index)
        && p.remote_pending.load(Ordering::Acquire)
    {
        let mut remote = p.remote_dirty.lock().unwrap();
        p.remote_pending.store(false, Ordering::Relaxed);
        if dirty.is_empty() {
            std::mem::swap(&mut dirty, &mut remote);
        } else {
            dirty.append(&mut remote);
        }
    }
    if dirty.is_empty() {
        local.net.borrow_mut().dirty = dirty;
        return;
    }
    let mut frames = std::mem::take(&mut local.net.borrow_mut().spare_outbox);
    let mut flushed = std::mem::take(&mut local.net.borrow_mut().flushed);
    for &index in &dirty {
        let Some((conn, close, published)) = table().take_outbox(index, &mut frames) else {
            continue;
        };
        let Some(conn) = conn else {
            frames.clear();
            continue;
        };
        for frame in frames.drain(..) {
            conn.send_frame(engine, frame);
        }
        if close {
            conn.close(engine);
        }
        flushed.push((index, conn, published));
    }
    engine.flush_dirty();
    // Publish what each connection still holds, for the senders' write limit (the usual
    // case, everything written and nothing published before, needs no lock).
    for &(index, conn, published) in &flushed {
        let queued = conn.queued_bytes(engine);
        if queued != published
            && let Some(slot) = table().get(index)
        {
            slot.state.lock().conn_queued = queued;
        }
    }
    dirty.clear();
    let mut net = local.net.borrow_mut();
    if net.dirty.is_empty() {
        net.dirty = dirty;
    }
    net.spare_outbox = frames;
    flushed.clear();
    net.flushed = flushed;
}

/// Hands the staged events to the sockets' owners, one batch per run of events of a socket,
/// and pauses reading from sockets whose owner has fallen behind.
pub(crate) fn deliver(sys: &SystemInner, local: &WorkerLocal, engine: &mut Engine) {
    let (mut staged, mut batch) = {
        let mut net = local.net.borrow_mut();
        if net.staged.is_empty() {
            return;
        }
        (
            std::mem::take(&mut net.staged),
            std::mem::take(&mut net.batch),
        )
    };
    // The socket of the run being collected, and whether the run holds its `Disconnected`.
    let mut run: Option<(SockIdent, bool)> = None;
    for (sock, ev) in staged.drain(..) {
        if let Some((c, ends)) = run
            && c != sock
        {
            hand_over(sys, local, engine, c, ends, &mut batch);
            run = None;
        }
        let ends = matches!(ev, NetEvent::Disconnected { .. });
        run = Some((sock, run.is_some_and(|(_, e)| e) || ends));
        batch.push(ev);
    }
    if let Some((c, ends)) = run {
        hand_over(sys, local, engine, c, ends, &mut batch);
    }
    let mut net = local.net.borrow_mut();
    if net.staged.is_empty() {
        net.staged = staged;
    }
    net.batch = batch;
}

/// Delivers one socket's batch to its current owner. `ends`: the batch holds `Disconnected`,
/// after which the slot is freed.
fn hand_over(
    sys: &SystemInner,
    local: &WorkerLocal,
    engine: &mut Engine,
    sock: SockIdent,
    ends: bool,
    batch: &mut Vec<NetEvent>,
) {
    let current = table()
        .lock_current(sock)
        .map(|st| (st.owner.clone(), st.conn));
    let (owner, conn) = current.unwrap_or((None, None));
    let waiting = owner.as_ref().and_then(|o| o.deliver_batch(batch));
    if waiting.is_none() {
        batch.clear();
        if !ends {
            // Nobody owns it any more (the owner stopped): close it.
            let _ = sock.close();
        }
    }
    if ends {
        table().release(sock);
        return;
    }
    if let (Some(waiting), Some(owner), Some(conn)) = (waiting, owner, conn)
        && waiting > sys.net.owner_backlog
    {
        conn.pause_reading(engine);
        local.net.borrow_mut().paused.push((sock, conn, owner));
    }
}

/// Resumes reading from paused sockets whose owner has caught up (or stopped). Returns
/// whether some are still paused (the worker then polls instead of sleeping for good).
pub(crate) fn resume_paused(sys: &SystemInner, local: &WorkerLocal, engine: &mut Engine) -> bool {
    let mut paused = std::mem::take(&mut local.net.borrow_mut().paused);
    if paused.is_empty() {
        return false;
    }
    let low_water = sys.net.owner_backlog / 2;
    paused.retain(|(_, conn, owner)| {
        if owner.is_alive() && owner.mailbox_len() > low_water {
            return true;
        }
        conn.resume_reading(engine);
        false
    });
    let still = !paused.is_empty();
    let mut net = local.net.borrow_mut();
    paused.append(&mut net.paused);
    net.paused = paused;
    still
}

/// A worker is leaving for good: its connections are dropped with its engine; free their
/// slots so that every handle to them is stale.
pub(crate) fn worker_exit(sys: &Arc<SystemInner>, local: &WorkerLocal, engine: &mut Engine) {
    let mut gone = Vec::new();
    table().for_each_live(|ident, st| {
        if st.poller == local.index && st.sys.as_ref().is_some_and(|s| Arc::ptr_eq(s, sys)) {
            gone.push((ident, st.conn, st.disconnected));
        }
    });
    for (ident, conn, disconnected) in gone {
        match conn {
            // Ends it now: its owner is told (Disconnected is staged and delivered below).
            Some(conn) => conn.abort(engine),
            None if !disconnected => {
                table().release(ident);
                sys.net.open.fetch_sub(1, Ordering::SeqCst);
            }
            None => {}
        }
    }
    deliver(sys, local, engine);
}

/// Registers an accepted or connected socket as a connection on this poller and stages its
/// `Connected` event.
fn register(
    sys: &Arc<SystemInner>,
    engine: &mut Engine,
    socket: Socket,
    owner: Recipient<NetEvent>,
    options: ConnOptions,
    poller: usize,
) {
    let peer = socket.peer_addr();
    let write_limit = options.write_limit;
    let raw = options.raw;
    let Some(sock) = table().alloc(|st| {
        st.owner = Some(owner);
        st.peer = peer;
        st.poller = poller;
        st.raw = raw;
        st.write_limit = write_limit;
        st.sys = Some(sys.clone());
    }) else {
        sys.net.open.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let sys_p = sys.clone();
    let sys_d = sys.clone();
    let bound = Connection::new(socket).options(options).bind(
        engine,
        move |_, _, packet| stage(&sys_p, sock, NetEvent::Packet { sock, packet }),
        move |_, _, reason| {
            if let Some(slot) = table().get(sock.index()) {
                let mut st = slot.state.lock();
                if st.generation == sock.generation() {
                    st.open = false;
                    st.disconnected = true;
                    st.conn = None;
                }
            }
            sys_d.net.open.fetch_sub(1, Ordering::SeqCst);
            stage(&sys_d, sock, NetEvent::Disconnected { sock, reason });
        },
    );
    match bound {
        Ok(conn) => {
            if let Some(slot) = table().get(sock.index()) {
                slot.state.lock().conn = Some(conn);
            }
            stage(sys, sock, NetEvent::Connected { sock, peer });
        }
        Err(_) => {
            table().release(sock);
            sys.net.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reserves room for one more socket under the system's limit.
fn admit(sys: &SystemInner) -> bool {
    if sys.is_shutting_down() {
        return false;
    }
    let prev = sys.net.open.fetch_add(1, Ordering::SeqCst);
    if prev >= sys.net.max_connections {
        sys.net.open.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

/// Runs `f` with the engine of poller `poller`: posted to its thread.
fn on_poller(
    sys: &Arc<SystemInner>,
    poller: usize,
    f: impl FnOnce(&mut Engine) + Send + 'static,
) -> io::Result<()> {
    let waker = sys
        .sched
        .waker(poller)
        .ok_or_else(|| io::Error::other("system is not running"))?;
    waker.post(f)
}

impl SystemHandle {
    /// Listens on `addr`; every accepted socket is owned by `owner`, which receives its
    /// [`NetEvent`]s. Returns the bound address (useful with port 0). Sockets use the
    /// system's default [`ConnOptions`].
    ///
    /// # Errors
    /// The OS error of creating, binding or listening (for example `AddrInUse`).
    pub fn listen(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
    ) -> io::Result<SocketAddr> {
        self.listen_with(addr, owner, self.inner.net.default_options.clone())
    }

    /// [`SystemHandle::listen`] with per-socket options (raw mode, timeouts, limits).
    ///
    /// # Errors
    /// As [`SystemHandle::listen`].
    pub fn listen_with(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
        options: ConnOptions,
    ) -> io::Result<SocketAddr> {
        let owner = owner.into();
        let fd = sys::listen_tcp(&addr, super::LISTEN_BACKLOG)?;
        let bound = sys::local_addr(std::os::fd::AsFd::as_fd(&fd))?;
        let sys = self.inner.clone();
        let listener_poller = sys.net.pick_poller();
        let sys2 = sys.clone();
        on_poller(&sys, listener_poller, move |engine| {
            let sys = sys2;
            let sys_cb = sys.clone();
            let res = engine.listen_on(fd, move |engine, socket| {
                if !admit(&sys_cb) {
                    return;
                }
                let target = sys_cb.net.pick_poller();
                let (owner, options) = (owner.clone(), options.clone());
                if target == listener_poller {
                    register(&sys_cb, engine, socket, owner, options, target);
                } else {
                    let sys_t = sys_cb.clone();
                    let posted = on_poller(&sys_cb, target, move |engine| {
                        register(&sys_t, engine, socket, owner, options, target)
                    });
                    if posted.is_err() {
                        sys_cb.net.open.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            });
            if let Ok(id) = res {
                sys.net
                    .listeners
                    .lock()
                    .unwrap()
                    .push((listener_poller, id));
            }
        })?;
        Ok(bound)
    }

    /// Connects to `addr` without blocking. `owner` receives `Connected` and the socket's
    /// events, or one `ConnectFailed` (refused, timed out after `timeout`, or another error).
    pub fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        owner: impl Into<Recipient<NetEvent>>,
    ) {
        self.connect_with(addr, timeout, owner, self.inner.net.default_options.clone())
    }

    /// [`SystemHandle::connect`] with per-socket options.
    pub fn connect_with(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        owner: impl Into<Recipient<NetEvent>>,
        options: ConnOptions,
    ) {
        let owner: Recipient<NetEvent> = owner.into();
        if !admit(&self.inner) {
            let error = io::Error::other("the system is shutting down or at its connection limit");
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
            return;
        }
        let sys = self.inner.clone();
        let poller = sys.net.pick_poller();
        let sys2 = sys.clone();
        let owner2 = owner.clone();
        let posted = on_poller(&sys, poller, move |engine| {
            let sys = sys2;
            let owner_fail = owner2.clone();
            let sys_fail = sys.clone();
            let started = engine.connect(addr, timeout, move |engine, res| match res {
                Ok(socket) => register(&sys, engine, socket, owner2, options, poller),
                Err(error) => {
                    sys.net.open.fetch_sub(1, Ordering::SeqCst);
                    let _ = owner2.force(NetEvent::ConnectFailed { addr, error });
                }
            });
            if let Err(error) = started {
                sys_fail.net.open.fetch_sub(1, Ordering::SeqCst);
                let _ = owner_fail.force(NetEvent::ConnectFailed { addr, error });
            }
        });
        if let Err(error) = posted {
            self.inner.net.open.fetch_sub(1, Ordering::SeqCst);
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
        }
    }

    /// Sockets open in this system.
    pub fn open_sockets(&self) -> usize {
        self.inner.net.open_sockets()
    }
}
