//! `SockIdent`: a socket of the actor runtime as an actor reference.
//!
//! A `SockIdent` is one `u64`: the number of its system's socket table, a slot index in that
//! table, and the slot's generation when the socket was opened. Every call locks the slot and
//! compares generations first, so a handle whose socket has closed is refused, even after its
//! slot has been reused by another socket, and a handle never reaches another system's
//! sockets: a stale handle can never reach someone else's connection.
//!
//! Sending does not touch the socket itself: the frame is queued in the slot's outbox and the
//! slot is marked for its poller, which moves the outbox into the connection and writes it in
//! one `writev` at the end of its pass. A send made on the poller's own thread (the usual
//! case: the owner runs where the socket is polled) only pushes to a thread-local list; a send
//! from another thread wakes the poller, once per batch and only when it is asleep.

use super::NetEvent;
use super::table::{Life, SlotId, SlotState, Wake, table_of};
use crate::actor::{Recipient, SystemInner};
use crate::error::TrySendError;
use crate::net::{HEADER_LEN, WPacket};
use crate::sync::SpinGuard;
use std::fmt;
use std::net::SocketAddr;

/// Bits of the slot index in a handle.
const INDEX_BITS: u32 = 20;
/// Bits of the table number in a handle (above the index; the generation fills the high 32).
const TABLE_BITS: u32 = 12;

/// A socket of the actor runtime. `Copy`, one `u64`, usable from any thread.
///
/// Every method fails (or answers `false`/`None`) once the socket has closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockIdent(u64);

impl fmt::Debug for SockIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sock#{}.{}v{}",
            self.table(),
            self.index(),
            self.generation()
        )
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
    /// The new owner belongs to another system than the socket.
    ForeignOwner,
    /// The socket belongs to another system than the socket group.
    ForeignSocket,
}

impl fmt::Display for SockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SockError::Closed => f.write_str("the socket is closed"),
            SockError::ForeignOwner => {
                f.write_str("the new owner belongs to another system than the socket")
            }
            SockError::ForeignSocket => {
                f.write_str("the socket belongs to another system than the group")
            }
        }
    }
}

impl std::error::Error for SockError {}

impl SockIdent {
    pub(crate) fn of(id: SlotId) -> SockIdent {
        SockIdent::new(id.table, id.index, id.generation)
    }

    pub(crate) fn slot_id(self) -> SlotId {
        SlotId {
            table: self.table(),
            index: self.index(),
            generation: self.generation(),
        }
    }

    fn new(table: u16, index: u32, generation: u32) -> SockIdent {
        debug_assert!(u32::from(table) < 1 << TABLE_BITS && index < 1 << INDEX_BITS);
        SockIdent(
            (u64::from(generation) << 32) | (u64::from(table) << INDEX_BITS) | u64::from(index),
        )
    }

    pub(crate) fn index(self) -> u32 {
        (self.0 as u32) & ((1 << INDEX_BITS) - 1)
    }

    pub(crate) fn table(self) -> u16 {
        ((self.0 as u32) >> INDEX_BITS) as u16 & ((1 << TABLE_BITS) - 1)
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The raw value (for logs, or to carry the handle through a `u64` field). Its low 32
    /// bits name the socket's slot (its system's table and the index in it).
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// A handle from [`SockIdent::to_u64`]. Any value is safe: a wrong one is just stale.
    pub fn from_u64(raw: u64) -> SockIdent {
        SockIdent(raw)
    }

    /// Locks the slot if this handle is current.
    pub(crate) fn slot(self) -> Option<SpinGuard<'static, SlotState>> {
        let id = self.slot_id();
        table_of(id)?.lock_current(id)
    }

    /// Sends a packet (`asyn_send`): queued now, written by the socket's poller at the end of
    /// its pass. Packets sent from one thread are written in order.
    ///
    /// # Errors
    /// The packet is handed back: [`TrySendError::Closed`] if the socket has closed or is
    /// closing, [`TrySendError::Full`] if the socket's write limit is reached (a peer that
    /// does not read).
    pub fn send(self, packet: WPacket) -> Result<(), TrySendError<WPacket>> {
        let (res, wake) = self.queue_packet(packet);
        if let Some((link, poller)) = wake {
            link.mark_dirty(poller, self.index());
        }
        res
    }

    /// The queuing half of [`SockIdent::send`]; also returns whom to wake, if anyone.
    fn queue_packet(self, packet: WPacket) -> (Result<(), TrySendError<WPacket>>, Wake) {
        let Some(mut st) = self.slot() else {
            return (Err(TrySendError::Closed(packet)), None);
        };
        if st.life != Life::Open {
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

    /// Closes gracefully: packets already sent are written first, then the socket closes and
    /// its owner receives `Disconnected { reason: ClosedLocally }`.
    ///
    /// # Errors
    /// [`SockError::Closed`] if it was already closed or closing.
    pub fn close(self) -> Result<(), SockError> {
        let wake = {
            let Some(mut st) = self.slot() else {
                return Err(SockError::Closed);
            };
            if st.life != Life::Open {
                return Err(SockError::Closed);
            }
            st.life = Life::Closing { told_conn: false };
            st.mark_pending()
        };
        if let Some((link, poller)) = wake {
            link.mark_dirty(poller, self.index());
        }
        Ok(())
    }

    /// Hands the socket to another actor: every event produced after this call returns goes
    /// to `owner`, in order. Events already queued in the old owner's mailbox stay there.
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket has closed; [`SockError::ForeignOwner`] if `owner`
    /// belongs to another system.
    pub fn hand_to(self, owner: impl Into<Recipient<NetEvent>>) -> Result<(), SockError> {
        let owner = owner.into();
        let Some(mut st) = self.slot() else {
            return Err(SockError::Closed);
        };
        if st.has_ended() {
            return Err(SockError::Closed);
        }
        if st.system != system_id(owner.system()) {
            return Err(SockError::ForeignOwner);
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
            Some(st) if !st.has_ended() => Ok(st.peer),
            _ => Err(SockError::Closed),
        }
    }

    /// Whether the socket is open for sending.
    pub fn is_open(self) -> bool {
        self.slot().is_some_and(|st| st.life == Life::Open)
    }
}

/// The identity of a system, as the sockets' slots record it: the address of its core.
pub(crate) fn system_id(system: &SystemInner) -> usize {
    std::ptr::from_ref(system) as usize
}

#[cfg(test)]
mod tests {
    use super::SockIdent;

    #[test]
    fn fields_round_trip_and_low_bits_name_the_slot() {
        let s = SockIdent::new(4095, (1 << 20) - 1, u32::MAX);
        assert_eq!(
            (s.table(), s.index(), s.generation()),
            (4095, (1 << 20) - 1, u32::MAX)
        );
        let t = SockIdent::new(7, 3, 1);
        let u = SockIdent::new(7, 3, 2);
        assert_eq!(t.to_u64() & 0xffff_ffff, u.to_u64() & 0xffff_ffff);
        assert_ne!(t, u);
        assert_ne!(
            SockIdent::new(6, 3, 1).to_u64() & 0xffff_ffff,
            t.to_u64() & 0xffff_ffff
        );
    }
}
