//! The pollers: each worker's engine, holding its share of the sockets, as the worker's
//! [`Driver`].
//!
//! Every worker is also a poller: its engine holds its sockets as layer-2 connections. Their
//! callbacks only stage events (`NetEvent`s, tagged with the socket) in the poller's
//! [`PollerLocal`]; after the engine's pass the poller delivers the staged events to each
//! socket's current owner, a batch per socket under one mailbox lock. Because one thread
//! stages and delivers all events of a socket, in the order the connection produced them, an
//! owner sees `Connected` first, then the packets in order, then `Disconnected` last.
//!
//! Outgoing packets travel the other way: [`SockIdent::send`] queues a frame in the socket's
//! slot and marks the slot dirty for its poller ([`NetShared::mark_dirty`]); after each batch
//! of actor turns the poller moves dirty outboxes into the connections and writes them.

use super::NetEvent;
use super::broadcast::{BroadcastInbox, Delivery, PollerInboxes};
use super::listener::ListenerShared;
use super::net_stats::{NetStats, PollerCounters};
use super::sock_ident::SockIdent;
use super::table::{Life, PollerLink, SockTable, TableLease};
use crate::actor::Recipient;
use crate::actor::scheduler::{Driver, Unpark};
use crate::net::{
    ConnId, ConnOptions, DisconnectReason, Engine, EngineHandle, HEADER_LEN, PAUSED_BY_CONSUMER,
    PAUSED_BY_USER,
};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, thread_local};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// How soon a poller with paused sockets looks again whether their owners caught up.
const PAUSED_RECHECK: Duration = Duration::from_millis(1);

/// Per-poller state shared with other threads.
struct PollerShared {
    /// The poller's engine: its wake-up, and the way to post work to it.
    engine: EngineHandle,
    /// Slots marked dirty by other threads.
    remote_dirty: Mutex<Vec<u32>>,
    /// Whether `remote_dirty` holds anything; written under its lock, read without it, so
    /// that the poller's every pass does not take the lock for an empty list.
    remote_pending: AtomicBool,
    /// Socket groups' broadcasts for this poller's members.
    bcast: BroadcastInbox,
}

/// The network state of a system, shared by its threads.
pub(crate) struct NetShared {
    pollers: Vec<PollerShared>,
    next_poller: AtomicUsize,
    lease: TableLease,
    pub(crate) max_connections: usize,
    /// Owner mailbox length past which a socket stops reading (see `Builder::owner_backlog`).
    pub(crate) owner_backlog: usize,
    pub(crate) default_options: ConnOptions,
    /// Listeners open (closed at shutdown).
    pub(crate) listeners: Mutex<Vec<Arc<ListenerShared>>>,
    /// Waits for I/O that failed (reported here: the library never prints).
    pub(crate) wait_errors: AtomicU64,
    /// Listeners' back-offs for lack of resources, and connections accepted and dropped at
    /// the connection limit.
    pub(crate) accept_pauses: AtomicU64,
    pub(crate) accept_refusals: AtomicU64,
    /// The metrics' network counters (also reachable from the socket table).
    pub(crate) stats: Arc<NetStats>,
}

impl NetShared {
    /// `workers`: how many workers run a [`Poller`] (all of them; `engines` are those that
    /// take sockets).
    pub(crate) fn new(
        engines: Vec<EngineHandle>,
        workers: usize,
        lease: TableLease,
        max_connections: usize,
        owner_backlog: usize,
        default_options: ConnOptions,
    ) -> NetShared {
        let stats = Arc::new(NetStats::new(workers));
        lease.table().set_net_stats(Some(stats.clone()));
        NetShared {
            pollers: engines
                .into_iter()
                .map(|engine| PollerShared {
                    engine,
                    remote_dirty: Mutex::new(Vec::new()),
                    remote_pending: AtomicBool::new(false),
                    bcast: BroadcastInbox::new(),
                })
                .collect(),
            next_poller: AtomicUsize::new(0),
            lease,
            max_connections,
            owner_backlog,
            default_options,
            listeners: Mutex::new(Vec::new()),
            wait_errors: AtomicU64::new(0),
            accept_pauses: AtomicU64::new(0),
            accept_refusals: AtomicU64::new(0),
            stats,
        }
    }

    pub(crate) fn table(&self) -> &'static SockTable {
        self.lease.table()
    }

    /// Sockets open (admitted and not yet freed).
    pub(crate) fn open_sockets(&self) -> usize {
        self.table().admitted()
    }

    pub(crate) fn pick_poller(&self) -> usize {
        self.next_poller.fetch_add(1, Ordering::Relaxed) % self.pollers.len()
    }

    /// Runs `f` on poller `poller`'s thread, with its engine.
    pub(crate) fn on_poller(
        &self,
        poller: usize,
        f: impl FnOnce(&mut Engine) + Send + 'static,
    ) -> io::Result<()> {
        self.pollers[poller].engine.post(f)
    }
}

impl PollerLink for NetShared {
    fn mark_dirty(&self, poller: usize, index: u32) {
        let table = self.table().id();
        let done_locally = with_current_poller(|p| match p {
            Some(p) if p.table == table && p.index == poller => match p.state.try_borrow_mut() {
                Ok(mut st) => {
                    st.dirty.push(index);
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
        // raises its flag before it looks at this list (see `Poller::park`).
        shared.engine.wake_if_sleeping();
    }
}

impl PollerInboxes for NetShared {
    fn pollers(&self) -> usize {
        self.pollers.len()
    }

    fn hand(&self, poller: usize, delivery: Delivery) {
        let shared = &self.pollers[poller];
        shared.bcast.push(delivery);
        // As for `remote_dirty` (see `PollerLink::mark_dirty`).
        shared.engine.wake_if_sleeping();
    }
}

impl NetShared {
    /// Stop accepting and close every socket gracefully.
    /// Shutdown, step 1: closes the listeners (and so accepts no more).
    pub(crate) fn stop_accepting(&self) {
        let open: Vec<_> = self.listeners.lock().unwrap().drain(..).collect();
        // Closing is idempotent: one a handle closed already is left alone.
        for listener in open {
            listener.close(self);
        }
    }

    /// Shutdown, step 3: closes every open socket gracefully (what was queued is written
    /// first).
    pub(crate) fn close_all_sockets(&self) {
        for (poller, index) in self.table().begin_closing_all() {
            self.mark_dirty(poller, index);
        }
    }
}

/// A socket ended for `reason`: counted (and traced).
#[cold]
fn count_closed(counters: &PollerCounters, sock: SockIdent, reason: &DisconnectReason) {
    counters.closed(reason);
    trace_event!(
        DEBUG,
        sock = %sock,
        reason = %reason,
        kind = super::net_stats::close_reason_label(reason),
        "disconnect"
    );
    let _ = sock;
}

/// The [`Unpark`] of a poller: its engine's wake-up.
pub(crate) struct EngineUnpark(pub(crate) EngineHandle);

impl Unpark for EngineUnpark {
    fn wake_if_sleeping(&self) -> bool {
        self.0.wake_if_sleeping()
    }

    fn wake(&self) {
        let _ = self.0.wake();
    }
}

/// A poller's thread-local state, reached by its connections' callbacks (which hold an
/// `Rc` of it) and by sends made on its thread (through [`with_current_poller`]).
pub(crate) struct PollerLocal {
    /// Itself, for handing out `Rc`s from the thread-local pointer.
    me: Weak<PollerLocal>,
    table: u16,
    index: usize,
    net: Arc<NetShared>,
    state: RefCell<PollerState>,
}

#[derive(Default)]
struct PollerState {
    /// Slots marked dirty from this thread.
    dirty: Vec<u32>,
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
    pub(crate) fn net(&self) -> &Arc<NetShared> {
        &self.net
    }

    /// Its worker's index.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Queues an event for delivery after the engine's pass.
    pub(crate) fn stage(&self, sock: SockIdent, ev: NetEvent) {
        self.state.borrow_mut().staged.push((sock, ev));
    }
}

thread_local! {
    /// The poller of this thread, if it is a worker's.
    /// A plain pointer (no destructor, so no lazy set-up on each access: every send made on
    /// a poller's thread looks here).
    static CURRENT_POLLER: Cell<*const PollerLocal> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with this thread's poller, if this thread is one.
fn with_current_poller<R>(f: impl FnOnce(Option<&PollerLocal>) -> R) -> R {
    let ptr = CURRENT_POLLER.with(Cell::get);
    // SAFETY: the pointer is set by `Poller::new` to the `PollerLocal` in the `Rc` that the
    // poller holds, and cleared by the poller's `Drop`, both on this thread; it is only read
    // on this thread, so while it is set the `Rc` (and the value) is alive.
    f(unsafe { ptr.as_ref() })
}

/// This thread's poller, if it is one.
pub(crate) fn current_poller() -> Option<Rc<PollerLocal>> {
    with_current_poller(|p| p.and_then(|p| p.me.upgrade()))
}

/// A worker's poller: its engine and the sockets in it. The worker's [`Driver`].
pub(crate) struct Poller {
    engine: Engine,
    net: Arc<NetShared>,
    local: Rc<PollerLocal>,
}

impl Poller {
    /// The poller of worker `index`, on the worker's own thread.
    pub(crate) fn new(index: usize, engine: Engine, net: Arc<NetShared>) -> Poller {
        let local = Rc::new_cyclic(|me| PollerLocal {
            me: me.clone(),
            table: net.table().id(),
            index,
            net: net.clone(),
            state: RefCell::new(PollerState::default()),
        });
        CURRENT_POLLER.with(|c| c.set(Rc::as_ptr(&local)));
        Poller { engine, net, local }
    }

    /// Moves dirty outboxes into their connections and writes them.
    fn flush(&mut self) {
        let Poller { engine, net, local } = self;
        let table = net.table();
        let shared = &net.pollers[local.index];
        let counters = net.stats.poller(local.index);
        let broadcast = shared.bcast.run(engine, counters);
        let mut dirty = std::mem::take(&mut local.state.borrow_mut().dirty);
        if shared.remote_pending.load(Ordering::Acquire) {
            let mut remote = shared.remote_dirty.lock().unwrap();
            shared.remote_pending.store(false, Ordering::Relaxed);
            if dirty.is_empty() {
                std::mem::swap(&mut dirty, &mut remote);
            } else {
                dirty.append(&mut remote);
            }
        }
        if dirty.is_empty() {
            local.state.borrow_mut().dirty = dirty;
            if broadcast {
                engine.flush_dirty();
            }
            return;
        }
        let (mut frames, mut flushed) = {
            let mut st = local.state.borrow_mut();
            (
                std::mem::take(&mut st.spare_outbox),
                std::mem::take(&mut st.flushed),
            )
        };
        for &index in &dirty {
            let Some(slot) = table.get(index) else {
                continue;
            };
            let (conn, close, published, pause) = {
                let mut st = slot.state.lock();
                st.flush_pending = false;
                std::mem::swap(&mut st.outbox, &mut frames);
                // Every queued packet counted its header in `outbox_bytes`.
                let n = frames.len();
                counters.sent(
                    n as u64,
                    st.outbox_bytes.saturating_sub(n * HEADER_LEN) as u64,
                );
                st.outbox_bytes = 0;
                let close = st.life == Life::Closing { told_conn: false };
                if close {
                    st.life = Life::Closing { told_conn: true };
                }
                let pause = std::mem::take(&mut st.pause_changed).then_some(st.user_paused);
                (st.conn, close, st.conn_queued, pause)
            };
            let Some(conn) = conn else {
                frames.clear();
                continue;
            };
            for frame in frames.drain(..) {
                conn.send_frame(engine, frame);
            }
            if let Some(paused) = pause {
                conn.set_paused(engine, PAUSED_BY_USER, paused);
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
                && let Some(slot) = table.get(index)
            {
                slot.state.lock().conn_queued = queued;
            }
        }
        dirty.clear();
        flushed.clear();
        let mut st = local.state.borrow_mut();
        if st.dirty.is_empty() {
            st.dirty = dirty;
        }
        st.spare_outbox = frames;
        st.flushed = flushed;
    }

    /// Hands the staged events to the sockets' owners, one batch per run of events of a
    /// socket, and pauses reading from sockets whose owner has fallen behind.
    fn deliver(&mut self) {
        let (mut staged, mut batch) = {
            let mut st = self.local.state.borrow_mut();
            if st.staged.is_empty() {
                return;
            }
            (
                std::mem::take(&mut st.staged),
                std::mem::take(&mut st.batch),
            )
        };
        // The socket of the run being collected, and whether the run holds its
        // `Disconnected`.
        let mut run: Option<(SockIdent, bool)> = None;
        // For the metrics, counted in this pass over the events (packets and their bytes;
        // the ends, by reason).
        let (mut packets, mut bytes) = (0u64, 0u64);
        for (sock, ev) in staged.drain(..) {
            if let Some((c, ends)) = run
                && c != sock
            {
                self.hand_over(c, ends, &mut batch);
                run = None;
            }
            let ends = match &ev {
                NetEvent::Packet { packet, .. } => {
                    packets += 1;
                    bytes += packet.len() as u64;
                    false
                }
                NetEvent::Disconnected { reason, .. } => {
                    count_closed(self.net.stats.poller(self.local.index), sock, reason);
                    true
                }
                _ => false,
            };
            run = Some((sock, run.is_some_and(|(_, e)| e) || ends));
            batch.push(ev);
        }
        if let Some((c, ends)) = run {
            self.hand_over(c, ends, &mut batch);
        }
        self.net
            .stats
            .poller(self.local.index)
            .delivered(packets, bytes);
        let mut st = self.local.state.borrow_mut();
        if st.staged.is_empty() {
            st.staged = staged;
        }
        st.batch = batch;
    }

    /// Delivers one socket's batch to its current owner. `ends`: the batch holds
    /// `Disconnected`, after which the slot is freed.
    fn hand_over(&mut self, sock: SockIdent, ends: bool, batch: &mut Vec<NetEvent>) {
        let table = self.net.table();
        // Delivered under the slot's lock: a hand-off (`SockIdent::hand_off`), which moves
        // the socket's queued events to the new owner under the same lock, sees each batch
        // either queued at the old owner or not yet delivered, never half-way.
        let (owner, conn, waiting) = match table.lock_current(sock.slot_id()) {
            Some(st) => {
                let waiting = st.owner.as_ref().and_then(|o| o.deliver_batch(batch));
                (st.owner.clone(), st.conn, waiting)
            }
            None => (None, None, None),
        };
        // Dropped outside the lock: an `InputEnded` closes its socket when dropped.
        batch.clear();
        if waiting.is_none() && !ends {
            // Nobody owns it any more (the owner stopped): close it.
            let _ = sock.close();
        }
        if ends {
            table.release(sock.slot_id());
            return;
        }
        if let (Some(waiting), Some(owner), Some(conn)) = (waiting, owner, conn)
            && waiting > self.net.owner_backlog
        {
            conn.set_paused(&mut self.engine, PAUSED_BY_CONSUMER, true);
            self.local
                .state
                .borrow_mut()
                .paused
                .push((sock, conn, owner));
        }
    }

    /// Resumes reading from paused sockets whose owner has caught up (or stopped). Returns
    /// whether some are still paused.
    fn resume_paused(&mut self) -> bool {
        let mut paused = std::mem::take(&mut self.local.state.borrow_mut().paused);
        if paused.is_empty() {
            return false;
        }
        let low_water = self.net.owner_backlog / 2;
        let engine = &mut self.engine;
        paused.retain(|(_, conn, owner)| {
            if owner.is_alive() && owner.mailbox_len() > low_water {
                return true;
            }
            conn.set_paused(engine, PAUSED_BY_CONSUMER, false);
            false
        });
        let still = !paused.is_empty();
        let mut st = self.local.state.borrow_mut();
        paused.append(&mut st.paused);
        st.paused = paused;
        still
    }

    /// Whether other threads left slots to flush (asked after the sleeping flag is up).
    fn has_remote_work(net: &NetShared, index: usize) -> bool {
        let shared = &net.pollers[index];
        !shared.remote_dirty.lock().unwrap().is_empty() || shared.bcast.has_work()
    }
}

impl Driver for Poller {
    fn after_turns(&mut self) -> Option<Duration> {
        self.flush();
        // A flush can end connections (a graceful close with nothing left to write, a write
        // error): tell their owners now, not after the next wait.
        self.deliver();
        self.resume_paused().then_some(PAUSED_RECHECK)
    }

    fn park(&mut self, timeout: Option<Duration>, has_work: &dyn Fn() -> bool) -> io::Result<()> {
        let timeout = self.engine.bounded_timeout(timeout);
        let (net, index) = (&self.net, self.local.index);
        let has_work = || has_work() || Poller::has_remote_work(net, index);
        let res = self.engine.wait_and_dispatch_with(timeout, &has_work);
        self.engine.run_timers();
        self.engine.run_posted();
        self.deliver();
        res.map(drop)
    }

    /// Its connections end with its engine: they are aborted now (their owners are told)
    /// and the slots of sockets that never got a connection are freed, so that every handle
    /// to them is stale.
    fn exit(&mut self) {
        let table = self.net.table();
        let mut gone = Vec::new();
        table.for_each_live(|id, st| {
            if st.poller == self.local.index {
                gone.push((id, st.conn, st.life));
            }
        });
        for (id, conn, life) in gone {
            match conn {
                Some(conn) => conn.abort(&mut self.engine),
                None if life != Life::Ended => table.release(id),
                None => {}
            }
        }
        self.deliver();
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        CURRENT_POLLER.with(|c| {
            if std::ptr::eq(c.get(), Rc::as_ptr(&self.local)) {
                c.set(std::ptr::null());
            }
        });
    }
}
