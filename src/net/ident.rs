//! `SockIdent`: a socket of the actor runtime as an actor reference.
//!
//! A `SockIdent` is one `u64`: a slot index in the process-wide socket table and the slot's
//! generation when the socket was opened. Every call locks the slot and compares generations
//! first, so a handle whose socket has closed is refused, even after its slot has been reused
//! by another socket: a stale handle can never reach someone else's connection.
//!
//! Sending does not touch the socket itself: the frame is queued in the slot's outbox and the
//! slot is marked for its poller, which moves the outbox into the connection and writes it in
//! one `writev` at the end of its pass. A send made on the poller's own thread (the usual
//! case: the owner runs where the socket is polled) only pushes to a thread-local list; a send
//! from another thread wakes the poller, once per batch and only when it is asleep.

use super::conn::ConnId;
use super::packet::{HEADER_LEN, WPacket};
use super::poller::NetEvent;
use crate::actor::Recipient;
use crate::actor::SystemInner;
use crate::error::TrySendError;
use crate::sync::{Arc, Mutex, SpinGuard, SpinLock};
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Slots per lazily allocated chunk of the table.
#[cfg(not(loom))]
const CHUNK: usize = 1024;
#[cfg(loom)]
const CHUNK: usize = 2;
/// Chunks in the table: 16 Mi sockets per process at most.
#[cfg(not(loom))]
const CHUNKS: usize = 16 * 1024;
#[cfg(loom)]
const CHUNKS: usize = 2;

/// A socket of the actor runtime. `Copy`, one `u64`, usable from any thread.
///
/// Every method fails (or answers `false`/`None`) once the socket has closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockIdent(u64);

impl fmt::Debug for SockIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sock#{}v{}", self.index(), self.generation())
    }
}

impl fmt::Display for SockIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a [`SockIdent`] call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockError {
    /// The socket has closed (or is closing); the handle is stale.
    Closed,
}

impl fmt::Display for SockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the socket is closed")
    }
}

impl std::error::Error for SockError {}

impl SockIdent {
    pub(crate) fn new(index: u32, generation: u32) -> SockIdent {
        SockIdent(((generation as u64) << 32) | index as u64)
    }

    pub(crate) fn index(self) -> u32 {
        self.0 as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The raw value (for logs, or to carry the handle through a `u64` field).
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// A handle from [`SockIdent::to_u64`]. Any value is safe: a wrong one is just stale.
    pub fn from_u64(raw: u64) -> SockIdent {
        SockIdent(raw)
    }

    /// Locks the slot if this handle is current.
    fn slot(self) -> Option<SpinGuard<'static, SlotState>> {
        table().lock_current(self)
    }

    /// Sends a packet (`asyn_send`): queued now, written by the socket's poller at the end of
    /// its pass. Packets sent from one thread are written in order.
    ///
    /// # Errors
    /// The packet is handed back: [`TrySendError::Closed`] if the socket has closed or is
    /// closing, [`TrySendError::Full`] if the socket's write limit is reached (a peer that
    /// does not read).
    pub fn send(self, packet: WPacket) -> Result<(), TrySendError<WPacket>> {
        let (res, wake) = table().queue_packet(self, packet);
        if let Some((sys, poller)) = wake {
            sys.net.mark_dirty(&sys, poller, self.index());
        }
        res
    }

    /// Closes gracefully: packets already sent are written first, then the socket closes and
    /// its owner receives `Disconnected { reason: ClosedLocally }`.
    ///
    /// # Errors
    /// [`SockError::Closed`] if it was already closed or closing.
    pub fn close(self) -> Result<(), SockError> {
        let (res, wake) = table().request_close(self);
        if let Some((sys, poller)) = wake {
            sys.net.mark_dirty(&sys, poller, self.index());
        }
        res
    }

    /// Hands the socket to another actor: every event produced after this call returns goes
    /// to `owner`, in order. Events already queued in the old owner's mailbox stay there.
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket has closed.
    pub fn hand_to(self, owner: impl Into<Recipient<NetEvent>>) -> Result<(), SockError> {
        let owner = owner.into();
        let Some(mut st) = self.slot() else {
            return Err(SockError::Closed);
        };
        if st.disconnected {
            return Err(SockError::Closed);
        }
        st.owner = Some(owner);
        Ok(())
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket has closed.
    pub fn peer_addr(self) -> Result<SocketAddr, SockError> {
        match self.slot() {
            Some(st) if !st.disconnected => Ok(st.peer),
            _ => Err(SockError::Closed),
        }
    }

    /// Whether the socket is open for sending.
    pub fn is_open(self) -> bool {
        self.slot().is_some_and(|st| st.open)
    }
}

/// One socket's shared state.
pub struct SlotState {
    pub(crate) generation: u32,
    /// In use: from accept/connect until the owner has been handed `Disconnected`.
    pub(crate) live: bool,
    /// Accepting sends.
    pub(crate) open: bool,
    /// The connection has ended (its last event is staged or delivered).
    pub(crate) disconnected: bool,
    pub(crate) close_requested: bool,
    /// In its poller's dirty list (or about to be).
    pub(crate) flush_pending: bool,
    pub(crate) raw: bool,
    pub(crate) poller: usize,
    pub(crate) conn: Option<ConnId>,
    pub(crate) outbox: Vec<Bytes>,
    pub(crate) outbox_bytes: usize,
    /// Bytes the connection itself held at its last flush.
    pub(crate) conn_queued: usize,
    pub(crate) write_limit: usize,
    pub(crate) owner: Option<Recipient<NetEvent>>,
    pub(crate) peer: SocketAddr,
    pub(crate) sys: Option<Arc<SystemInner>>,
}

impl SlotState {
    fn empty() -> SlotState {
        SlotState {
            generation: 0,
            live: false,
            open: false,
            disconnected: true,
            close_requested: false,
            flush_pending: false,
            raw: false,
            poller: 0,
            conn: None,
            outbox: Vec::new(),
            outbox_bytes: 0,
            conn_queued: 0,
            write_limit: 0,
            owner: None,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            sys: None,
        }
    }

    /// Marks the slot for its poller; returns whom to tell if this was the first mark.
    fn mark_pending(&mut self) -> Wake {
        if self.flush_pending {
            return None;
        }
        self.flush_pending = true;
        self.sys.clone().map(|s| (s, self.poller))
    }
}

/// Whom a send or close must wake: the socket's system and poller.
pub type Wake = Option<(Arc<SystemInner>, usize)>;

pub struct Slot {
    /// A spin lock: every hold is a few field updates.
    pub(crate) state: SpinLock<SlotState>,
}

/// The process-wide socket table: chunks of slots, allocated when first needed.
pub struct SockTable {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    free: Mutex<FreeList>,
}

struct FreeList {
    free: Vec<u32>,
    next: u32,
}

/// The table (created on first use).
pub(crate) fn table() -> &'static SockTable {
    static TABLE: OnceLock<SockTable> = OnceLock::new();
    TABLE.get_or_init(SockTable::new)
}

impl SockTable {
    pub fn new() -> SockTable {
        SockTable {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            free: Mutex::new(FreeList {
                free: Vec::new(),
                next: 0,
            }),
        }
    }

    /// Locks the slot of `ident` if the handle is current.
    pub fn lock_current(&self, ident: SockIdent) -> Option<SpinGuard<'_, SlotState>> {
        let slot = self.get(ident.index())?;
        let st = slot.state.lock();
        (st.generation == ident.generation() && st.live).then_some(st)
    }

    /// The queuing half of [`SockIdent::send`]; also returns whom to wake, if anyone.
    pub fn queue_packet(
        &self,
        ident: SockIdent,
        packet: WPacket,
    ) -> (Result<(), TrySendError<WPacket>>, Wake) {
        let Some(mut st) = self.lock_current(ident) else {
            return (Err(TrySendError::Closed(packet)), None);
        };
        if !st.open {
            return (Err(TrySendError::Closed(packet)), None);
        }
        let len = packet.len() + HEADER_LEN;
        let queued = st.outbox_bytes + st.conn_queued;
        if queued > 0 && queued + len > st.write_limit {
            // Ask the poller for a fresh count of what the connection still holds.
            return (Err(TrySendError::Full(packet)), st.mark_pending());
        }
        let frame = packet.into_frame();
        let frame = if st.raw {
            frame.slice(HEADER_LEN..)
        } else {
            frame
        };
        st.outbox.push(frame);
        st.outbox_bytes += len;
        (Ok(()), st.mark_pending())
    }

    /// The state half of [`SockIdent::close`].
    pub fn request_close(&self, ident: SockIdent) -> (Result<(), SockError>, Wake) {
        let Some(mut st) = self.lock_current(ident) else {
            return (Err(SockError::Closed), None);
        };
        if !st.open {
            return (Err(SockError::Closed), None);
        }
        st.open = false;
        st.close_requested = true;
        (Ok(()), st.mark_pending())
    }

    /// The poller's half: takes what a slot has to flush. Returns the frames (swapped into
    /// `frames`), the connection, whether a close was requested, and the connection's queued
    /// bytes as last published.
    pub fn take_outbox(
        &self,
        index: u32,
        frames: &mut Vec<Bytes>,
    ) -> Option<(Option<ConnId>, bool, usize)> {
        let mut st = self.get(index)?.state.lock();
        st.flush_pending = false;
        std::mem::swap(&mut st.outbox, frames);
        st.outbox_bytes = 0;
        let close = std::mem::take(&mut st.close_requested);
        Some((st.conn, close, st.conn_queued))
    }

    pub fn get(&self, index: u32) -> Option<&Slot> {
        let i = index as usize;
        self.chunks.get(i / CHUNK)?.get().map(|c| &c[i % CHUNK])
    }

    /// Takes a free slot, initialised by `init` under its lock; returns the new handle.
    pub fn alloc(&self, init: impl FnOnce(&mut SlotState)) -> Option<SockIdent> {
        let index = {
            let mut fl = self.free.lock().unwrap();
            match fl.free.pop() {
                Some(i) => i,
                None => {
                    if fl.next as usize >= CHUNK * CHUNKS {
                        return None;
                    }
                    let i = fl.next;
                    fl.next += 1;
                    i
                }
            }
        };
        let chunk = &self.chunks[index as usize / CHUNK];
        let slots = chunk.get_or_init(|| {
            (0..CHUNK)
                .map(|_| Slot {
                    state: SpinLock::new(SlotState::empty()),
                })
                .collect()
        });
        let mut st = slots[index as usize % CHUNK].state.lock();
        // Generation 0 never names a live socket, so a zeroed handle is always stale.
        st.generation = st.generation.wrapping_add(1).max(1);
        st.live = true;
        st.open = true;
        st.disconnected = false;
        st.close_requested = false;
        st.flush_pending = false;
        st.conn = None;
        st.outbox.clear();
        st.outbox_bytes = 0;
        st.conn_queued = 0;
        init(&mut st);
        Some(SockIdent::new(index, st.generation))
    }

    /// A slot with only a write limit set (for the models in `loom_tests/`).
    #[cfg(loom)]
    pub fn alloc_plain(&self, write_limit: usize) -> Option<SockIdent> {
        self.alloc(|st| st.write_limit = write_limit)
    }

    /// [`SockTable::queue_packet`] for the models: the wake target reduced to "was this the
    /// first mark" (the models have no system).
    #[cfg(loom)]
    pub fn model_send(
        &self,
        ident: SockIdent,
        packet: WPacket,
    ) -> Result<(), TrySendError<WPacket>> {
        self.queue_packet(ident, packet).0
    }

    /// [`SockTable::request_close`] for the models.
    #[cfg(loom)]
    pub fn model_close(&self, ident: SockIdent) -> Result<(), SockError> {
        self.request_close(ident).0
    }

    /// Frees a slot whose owner has been told the socket is gone. Every handle to it is
    /// stale from here on.
    pub fn release(&self, ident: SockIdent) {
        let Some(slot) = self.get(ident.index()) else {
            return;
        };
        let leftovers = {
            let mut st = slot.state.lock();
            if st.generation != ident.generation() || !st.live {
                return;
            }
            st.live = false;
            st.open = false;
            st.disconnected = true;
            st.conn = None;
            st.owner = None;
            st.sys = None;
            std::mem::take(&mut st.outbox)
        };
        drop(leftovers);
        self.free.lock().unwrap().free.push(ident.index());
    }

    /// Calls `f` for each live slot.
    pub(crate) fn for_each_live(&self, mut f: impl FnMut(SockIdent, &mut SlotState)) {
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(slots) = chunk.get() else { break };
            for (i, slot) in slots.iter().enumerate() {
                let mut st = slot.state.lock();
                if st.live {
                    let ident = SockIdent::new((c * CHUNK + i) as u32, st.generation);
                    f(ident, &mut st);
                }
            }
        }
    }
}
