//! A system's socket table: one slot per open socket, shared by every thread that holds a
//! [`SockIdent`].
//!
//! Each [`System`](crate::System) leases a table of its own from a small process-wide
//! directory for as long as it runs; a `SockIdent` names its table, so a handle of one system
//! never reaches another's sockets, and a system's shutdown looks at its own slots only. A
//! table outlives its system (a handle is a plain `u64` that may be used at any time, so what
//! it points at must stay valid): the next system to lease it goes on counting generations,
//! so handles of the old system stay stale.
//!
//! A slot's life is a small state machine, changed under the slot's lock:
//!
//! ```text
//!   Free --accept/connect--> Open --close()/shutdown--> Closing
//!                             |                           |
//!                             +----- connection ends -----+--> Ended --owner told--> Free
//! ```
//!
//! Admission to the table (the system's `max_connections`) is an RAII [`Admission`] ticket:
//! taken before a socket is accepted or dialled, moved into the slot, and returned when the
//! slot is freed or wherever the socket's set-up fails, by being dropped.

use crate::actor::Recipient;
use crate::net::ConnId;
use crate::net::framing::Framing;
use crate::runtime::NetEvent;
use crate::runtime::listener::ListenerTicket;
use crate::runtime::net_stats::NetStats;
use crate::sync::capacity::{SOCKET_CHUNK, SOCKET_CHUNKS, SOCKET_TABLES};
use crate::sync::{
    Arc, AtomicUsize, Mutex, OnceLock, Ordering, SpinGuard, SpinLock, Weak, lazy_global,
};
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// The most sockets one system can hold at once (slots per table).
pub const MAX_SOCKETS_PER_SYSTEM: usize = SOCKET_CHUNK * SOCKET_CHUNKS;

/// Where a slot is in its life. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Not in use.
    Free,
    /// Open for sending.
    Open,
    /// Closing gracefully: no more sends; `told_conn` once the poller has passed the close
    /// on to the connection.
    Closing { told_conn: bool },
    /// The connection has ended; its `Disconnected` is staged for the owner, after which the
    /// slot is freed.
    Ended,
}

/// One socket's shared state.
pub(crate) struct SlotState {
    pub(crate) generation: u32,
    pub(crate) life: Life,
    /// In its poller's dirty list (or about to be).
    pub(crate) flush_pending: bool,
    /// How its packets go on the wire.
    pub(crate) framing: Framing,
    pub(crate) poller: usize,
    pub(crate) conn: Option<ConnId>,
    /// Frames sent and not yet moved into the connection.
    pub(crate) outbox: Vec<Bytes>,
    pub(crate) outbox_bytes: usize,
    /// Bytes the connection itself held at its last flush.
    pub(crate) conn_queued: usize,
    pub(crate) write_limit: usize,
    /// Its policy is [`SlowConsumer::Drop`](crate::net::SlowConsumer::Drop): sends fail
    /// while `above_high`.
    pub(crate) drop_when_high: bool,
    /// The connection's output is above its high-water mark (published by the poller).
    pub(crate) above_high: bool,
    /// Packets refused by the slow-consumer policy or the write limit.
    pub(crate) dropped: u64,
    /// Reading paused by the owner ([`SockIdent::pause_reading`](super::SockIdent)).
    pub(crate) user_paused: bool,
    /// `user_paused` changed since the poller last looked.
    pub(crate) pause_changed: bool,
    pub(crate) owner: Option<Recipient<NetEvent>>,
    pub(crate) peer: SocketAddr,
    /// The way to the socket's poller.
    pub(crate) link: Option<Arc<dyn PollerLink>>,
    /// The system the socket belongs to (the address of its core), which every owner must
    /// belong to.
    pub(crate) system: usize,
    /// The socket's place under the system's connection limit.
    ticket: Option<Admission>,
    /// The socket groups it has joined (each with its mark), told when the slot is freed.
    pub(crate) groups: Vec<(usize, Weak<dyn SlotGroup>)>,
}

impl SlotState {
    fn empty() -> SlotState {
        SlotState {
            generation: 0,
            life: Life::Free,
            flush_pending: false,
            framing: Framing::Length,
            poller: 0,
            conn: None,
            outbox: Vec::new(),
            outbox_bytes: 0,
            conn_queued: 0,
            write_limit: 0,
            drop_when_high: false,
            above_high: false,
            dropped: 0,
            user_paused: false,
            pause_changed: false,
            owner: None,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            link: None,
            system: 0,
            ticket: None,
            groups: Vec::new(),
        }
    }

    /// Marks the slot for its poller; returns whom to tell if this was the first mark.
    pub(crate) fn mark_pending(&mut self) -> Wake {
        if self.flush_pending {
            return None;
        }
        self.flush_pending = true;
        self.link.clone().map(|l| (l, self.poller))
    }

    /// Whether the connection has ended (or the slot is free).
    pub(crate) fn has_ended(&self) -> bool {
        matches!(self.life, Life::Ended | Life::Free)
    }
}

/// How a slot reaches its poller (the runtime's network state implements it).
pub(crate) trait PollerLink: Send + Sync {
    /// Tells poller `poller` that slot `index` has something to flush.
    fn mark_dirty(&self, poller: usize, index: u32);
}

/// A socket group (`runtime::broadcast`), as a slot knows it: told when a member's slot is
/// freed, so that closed sockets leave their groups by themselves.
pub(crate) trait SlotGroup: Send + Sync {
    /// The slot `id` has been freed (called outside the slot's lock).
    fn slot_freed(&self, id: SlotId);
}

/// Whom a send or close must tell: the socket's poller, through its link.
pub(crate) type Wake = Option<(Arc<dyn PollerLink>, usize)>;

/// A slot's name: its table, its index there and its generation when the socket opened; a
/// [`SockIdent`](super::SockIdent) packs it into one `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlotId {
    pub(crate) table: u16,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// What a new slot starts with.
pub(crate) struct NewSlot {
    pub(crate) ticket: Admission,
    pub(crate) owner: Recipient<NetEvent>,
    pub(crate) peer: SocketAddr,
    pub(crate) poller: usize,
    pub(crate) framing: Framing,
    pub(crate) write_limit: usize,
    pub(crate) drop_when_high: bool,
    pub(crate) link: Option<Arc<dyn PollerLink>>,
    pub(crate) system: usize,
}

pub(crate) struct Slot {
    /// A spin lock: every hold is a few field updates.
    pub(crate) state: SpinLock<SlotState>,
}

/// A socket table. See the module docs.
pub(crate) struct SockTable {
    /// Its number in the directory, carried by every `SockIdent` of the table.
    id: u16,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    /// Free slot indexes, reused oldest first, so that one slot's generation advances as
    /// slowly as possible.
    free: Mutex<FreeList>,
    /// Admitted sockets (tickets alive).
    admitted: AtomicUsize,
    /// The network counters of the system leasing it (none for a simulated network).
    stats: SpinLock<Option<Arc<NetStats>>>,
}

struct FreeList {
    free: VecDeque<u32>,
    next: u32,
}

impl SockTable {
    fn new(id: u16) -> SockTable {
        SockTable {
            id,
            chunks: (0..SOCKET_CHUNKS).map(|_| OnceLock::new()).collect(),
            free: Mutex::new(FreeList {
                free: VecDeque::new(),
                next: 0,
            }),
            admitted: AtomicUsize::new(0),
            stats: SpinLock::new(None),
        }
    }

    /// The network counters of the system leasing it.
    pub(crate) fn net_stats(&self) -> Option<Arc<NetStats>> {
        self.stats.lock().clone()
    }

    /// Sets the counters of the system leasing it (`None` when the lease ends).
    pub(crate) fn set_net_stats(&self, stats: Option<Arc<NetStats>>) {
        *self.stats.lock() = stats;
    }

    /// A packet refused because a socket's write queue was full.
    #[cold]
    pub(crate) fn count_refused_write(&self) {
        if let Some(stats) = &*self.stats.lock() {
            NetStats::count(&stats.refused_write_full);
        }
    }

    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    /// Sockets admitted and not yet released.
    pub(crate) fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        let i = index as usize;
        self.chunks
            .get(i / SOCKET_CHUNK)?
            .get()
            .map(|c| &c[i % SOCKET_CHUNK])
    }

    /// Locks the slot of `ident` if the handle is current (its socket is not freed).
    pub(crate) fn lock_current(&self, id: SlotId) -> Option<SpinGuard<'_, SlotState>> {
        if id.table != self.id {
            return None;
        }
        let slot = self.get(id.index)?;
        let st = slot.state.lock();
        (st.generation == id.generation && st.life != Life::Free).then_some(st)
    }

    /// Takes a free slot for a new socket; returns its handle, or `None` if the table is full
    /// (the ticket is dropped then).
    pub(crate) fn alloc(&'static self, new: NewSlot) -> Option<SlotId> {
        let index = {
            let mut fl = self.free.lock().unwrap();
            match fl.free.pop_front() {
                Some(i) => i,
                None => {
                    if fl.next as usize >= MAX_SOCKETS_PER_SYSTEM {
                        return None;
                    }
                    let i = fl.next;
                    fl.next += 1;
                    i
                }
            }
        };
        let chunk = &self.chunks[index as usize / SOCKET_CHUNK];
        let slots = chunk.get_or_init(|| {
            (0..SOCKET_CHUNK)
                .map(|_| Slot {
                    state: SpinLock::new(SlotState::empty()),
                })
                .collect()
        });
        let mut st = slots[index as usize % SOCKET_CHUNK].state.lock();
        debug_assert_eq!(st.life, Life::Free);
        // Generation 0 never names a live socket, so a zeroed handle is always stale.
        st.generation = st.generation.wrapping_add(1).max(1);
        st.life = Life::Open;
        st.flush_pending = false;
        st.conn = None;
        st.outbox.clear();
        st.outbox_bytes = 0;
        st.conn_queued = 0;
        st.framing = new.framing;
        st.poller = new.poller;
        st.write_limit = new.write_limit;
        st.drop_when_high = new.drop_when_high;
        st.above_high = false;
        st.dropped = 0;
        st.user_paused = false;
        st.pause_changed = false;
        st.owner = Some(new.owner);
        st.peer = new.peer;
        st.link = new.link;
        st.system = new.system;
        st.ticket = Some(new.ticket);
        Some(SlotId {
            table: self.id,
            index,
            generation: st.generation,
        })
    }

    /// Frees a slot whose owner has been told the socket is gone (or that never got one).
    /// Every handle to it is stale from here on; its admission ticket is returned.
    pub(crate) fn release(&self, id: SlotId) {
        let Some(mut st) = self.lock_current(id) else {
            return;
        };
        let leftovers = {
            st.life = Life::Free;
            st.conn = None;
            (
                std::mem::take(&mut st.outbox),
                st.owner.take(),
                st.link.take(),
                st.ticket.take(),
            )
        };
        let groups = std::mem::take(&mut st.groups);
        drop(st);
        // Dropped outside the slot's lock: an owner's last reference may run a destructor.
        drop(leftovers);
        for group in groups.iter().filter_map(|(_, g)| g.upgrade()) {
            group.slot_freed(id);
        }
        self.free.lock().unwrap().free.push_back(id.index);
    }

    /// Calls `f` for each slot in use.
    /// Shutdown: turns every open socket to a graceful close with its queue to flush, and
    /// returns them as (poller, slot index) for their pollers to be told.
    pub(crate) fn begin_closing_all(&self) -> Vec<(usize, u32)> {
        let mut closing = Vec::new();
        self.for_each_live(|id, st| {
            if st.life == Life::Open {
                st.life = Life::Closing { told_conn: false };
                st.flush_pending = true;
                closing.push((st.poller, id.index));
            }
        });
        closing
    }

    pub(crate) fn for_each_live(&self, mut f: impl FnMut(SlotId, &mut SlotState)) {
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(slots) = chunk.get() else { break };
            for (i, slot) in slots.iter().enumerate() {
                let mut st = slot.state.lock();
                if st.life != Life::Free {
                    let id = SlotId {
                        table: self.id,
                        index: (c * SOCKET_CHUNK + i) as u32,
                        generation: st.generation,
                    };
                    f(id, &mut st);
                }
            }
        }
    }
}

/// A socket's place under its system's connection limit; returned when dropped.
pub(crate) struct Admission {
    table: &'static SockTable,
    /// The socket's place under its listener's own limit, if it has one.
    listener: Option<ListenerTicket>,
}

impl Admission {
    /// A ticket if fewer than `max` sockets are admitted.
    pub(crate) fn try_new(table: &'static SockTable, max: usize) -> Option<Admission> {
        let prev = table.admitted.fetch_add(1, Ordering::SeqCst);
        if prev >= max {
            table.admitted.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Admission {
            table,
            listener: None,
        })
    }

    /// Carries `ticket` too: both are returned together.
    pub(crate) fn with_listener(mut self, ticket: ListenerTicket) -> Admission {
        self.listener = Some(ticket);
        self
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.table.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The process-wide directory of socket tables.
struct Directory {
    tables: Box<[OnceLock<SockTable>]>,
    /// Table numbers not leased, reused oldest first.
    free: Mutex<VecDeque<u16>>,
}

fn directory() -> &'static Directory {
    lazy_global!(
        Directory,
        Directory {
            tables: (0..SOCKET_TABLES).map(|_| OnceLock::new()).collect(),
            free: Mutex::new((0..SOCKET_TABLES as u16).collect()),
        }
    )
}

/// The table a slot id names, if that table exists.
pub(crate) fn table_of(id: SlotId) -> Option<&'static SockTable> {
    directory().tables.get(id.table as usize)?.get()
}

/// A system's lease on a table; the table goes back to the directory when the lease drops
/// (after the system's workers have freed every slot).
pub(crate) struct TableLease {
    table: &'static SockTable,
}

impl TableLease {
    /// Leases a table, or `None` if `SOCKET_TABLES` systems are running already.
    pub(crate) fn acquire() -> Option<TableLease> {
        let dir = directory();
        let id = dir.free.lock().unwrap().pop_front()?;
        let table = dir.tables[id as usize].get_or_init(|| SockTable::new(id));
        Some(TableLease { table })
    }

    pub(crate) fn table(&self) -> &'static SockTable {
        self.table
    }
}

impl Drop for TableLease {
    fn drop(&mut self) {
        self.table.set_net_stats(None);
        directory().free.lock().unwrap().push_back(self.table.id);
    }
}
