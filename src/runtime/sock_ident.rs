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

use super::table::{Life, SlotId, SlotState, Wake, table_of};
use super::{NetEvent, NetMsg};
use crate::actor::{Actor, Context, Recipient, SystemInner};
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

    /// Counts (and traces) a packet refused for a full write queue.
    #[cold]
    pub(crate) fn refused_write(self) {
        if let Some(table) = table_of(self.slot_id()) {
            table.count_refused_write();
        }
        trace_event!(DEBUG, sock = %self, "send refused: write queue full");
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
        if st.drop_when_high && st.above_high {
            st.dropped += 1;
            drop(st);
            self.refused_write();
            return (Err(TrySendError::Full(packet)), None);
        }
        if queued > 0 && queued + len > st.write_limit {
            st.dropped += 1;
            self.refused_write();
            // Ask the poller for a fresh count of what the connection still holds.
            return (Err(TrySendError::Full(packet)), st.mark_pending());
        }
        let text = packet.is_text();
        let (prefix, body) = st.framing.wire(packet.into_frame(), text);
        if let Some(prefix) = prefix {
            st.outbox.push(prefix);
        }
        st.outbox.push(body);
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
    /// to `owner`, in order. Events already queued in the old owner's mailbox stay there
    /// (for the owner itself to hand a socket on with those too, see
    /// [`SockIdent::hand_off`]).
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

    /// Bytes sent and not yet written to the socket (waiting for the poller, or for the
    /// peer to read), as of the poller's last flush; 0 once closed.
    pub fn queued_bytes(self) -> usize {
        self.slot()
            .filter(|st| !st.has_ended())
            .map_or(0, |st| st.outbox_bytes + st.conn_queued)
    }

    /// Packets dropped for this socket: sends refused with [`TrySendError::Full`] (by the
    /// write limit, or by the [`SlowConsumer::Drop`](crate::net::SlowConsumer::Drop) policy
    /// while the socket is above its high-water mark), and broadcasts of a
    /// [`SockGroup`](crate::SockGroup) skipped for it for the same reasons.
    pub fn dropped_packets(self) -> u64 {
        self.slot().map_or(0, |st| st.dropped)
    }

    /// Stops reading from the socket until [`SockIdent::resume_reading`] (no `Packet` events
    /// meanwhile; the kernel's buffers push back on the peer): "active once" for protocols
    /// that take one request at a time. Independent of the pauses of the slow-consumer
    /// policy and of the owner backlog: reading resumes when none holds it.
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket has closed.
    pub fn pause_reading(self) -> Result<(), SockError> {
        self.set_user_paused(true)
    }

    /// Reads again after [`SockIdent::pause_reading`].
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket has closed.
    pub fn resume_reading(self) -> Result<(), SockError> {
        self.set_user_paused(false)
    }

    fn set_user_paused(self, paused: bool) -> Result<(), SockError> {
        let wake = {
            let Some(mut st) = self.slot() else {
                return Err(SockError::Closed);
            };
            if st.has_ended() {
                return Err(SockError::Closed);
            }
            st.user_paused = paused;
            st.pause_changed = true;
            st.mark_pending()
        };
        if let Some((link, poller)) = wake {
            link.mark_dirty(poller, self.index());
        }
        Ok(())
    }

    /// Hands the socket on from its owner's handler, with the events already queued for it:
    /// every event of this socket that the calling owner has not handled yet (the rest of
    /// the batch in hand and what waits in its mailbox) moves to `owner`, in order, followed
    /// by every later event. After this returns, the new owner sees each of the socket's
    /// packets that the old one did not handle, in order, exactly once, and the old owner
    /// sees none of them: a gate can hand a client to its session actor mid-stream, with no
    /// acknowledgement in the protocol. Returns how many queued events moved.
    ///
    /// Call it from the handler of the socket's owner (`ctx` is the owner's context); from
    /// any other actor it moves nothing of what the owner holds, like
    /// [`SockIdent::hand_to`].
    ///
    /// ```no_run
    /// use kendynet::{Actor, Addr, Context, NetEvent};
    ///
    /// struct Session;
    /// impl Actor for Session {
    ///     type Msg = NetEvent;
    ///     fn handle(&mut self, _: NetEvent, _: &mut Context<Self>) {}
    /// }
    ///
    /// /// Takes the first packet (a login), then passes the client on.
    /// struct Gate {
    ///     session: Addr<Session>,
    /// }
    /// impl Actor for Gate {
    ///     type Msg = NetEvent;
    ///     fn handle(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
    ///         if let NetEvent::Packet { sock, .. } = ev {
    ///             // Packets the client sent after its login go to the session, in order.
    ///             let _ = sock.hand_off(ctx, &self.session);
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`SockIdent::hand_to`]; nothing moves then.
    pub fn hand_off<A: Actor>(
        self,
        ctx: &mut Context<'_, A>,
        owner: impl Into<Recipient<NetEvent>>,
    ) -> Result<usize, SockError>
    where
        A::Msg: NetMsg,
    {
        let owner = owner.into();
        let (count, refused) = {
            let Some(mut st) = self.slot() else {
                return Err(SockError::Closed);
            };
            if st.has_ended() {
                return Err(SockError::Closed);
            }
            if st.system != system_id(owner.system()) {
                return Err(SockError::ForeignOwner);
            }
            // Under the slot's lock, which the poller holds while it delivers this socket's
            // events: each batch is either queued here already (and moves) or goes to the
            // new owner after what moves.
            let mut moved = ctx.take_queued(|msg: A::Msg| match msg.into_net_event() {
                Ok(ev) if ev.sock() == Some(self) => Ok(ev),
                Ok(ev) => Err(A::Msg::from(ev)),
                Err(msg) => Err(msg),
            });
            let count = moved.len();
            if !moved.is_empty() {
                // What a stopped owner refuses stays in `moved`.
                let _ = owner.deliver_batch(&mut moved);
            }
            st.owner = Some(owner);
            (count, moved)
        };
        // Whatever the new owner refused (it has stopped) is dropped outside the lock; the
        // poller then closes the socket, as for any owner that stopped.
        drop(refused);
        Ok(count)
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
