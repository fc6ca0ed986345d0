//! Socket groups: [`SockGroup`], a set of sockets that one [`SockGroup::broadcast`] reaches
//! with one shared frame.
//!
//! A broadcast encodes its packet once into a frozen frame (`bytes::Bytes`). The group keeps
//! its members partitioned by poller (each socket lives on one poller for its whole life), and
//! hands the frame to each poller that has members **once**, with a snapshot of that poller's
//! members: a [`Delivery`] in the poller's [`BroadcastInbox`]. At the start of its next flush
//! the poller queues the frame (a reference-counted clone) on each member's connection,
//! applying the member's slow-consumer policy and write limit, and writes everything in its
//! usual per-turn `writev`. Nothing is copied per member and no per-socket lock is taken.
//!
//! Membership is a copy-on-write list per poller ([`Membership`]): a broadcast takes a
//! snapshot (an `Arc` clone), a join or leave copies the list only while a snapshot is still
//! held by a pending delivery.
//!
//! A member leaves by itself when its socket's slot is freed (its owner has been told
//! `Disconnected`): the slot keeps a weak reference to each group it joined and tells them
//! ([`SlotGroup`]). A join racing the close re-checks the slot after inserting, so a dead
//! socket never stays a member.
//!
//! A simulated system of the test kit has no pollers: its groups send the shared frame to each
//! member through [`SockIdent::send`], with the same counting.

use super::net_stats::PollerCounters;
use super::sock_ident::{SockError, SockIdent};
use super::table::{Life, SlotGroup, SlotId, SockTable};
use crate::actor::LeaveReason;
use crate::actor::membership::Membership;
use crate::error::TrySendError;
use crate::net::{ConnId, Engine, HEADER_LEN, Offered, RPacket, WPacket};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, Weak};
use bytes::Bytes;
use std::fmt;

/// One poller's share of a group: its members and their connections.
type Members = Membership<SockIdent, Option<ConnId>>;

/// A snapshot of one poller's members.
type Snapshot = Arc<Vec<(SockIdent, Option<ConnId>)>>;

/// How a group reaches the pollers of its system (implemented by the runtime's network state).
pub(crate) trait PollerInboxes: Send + Sync {
    /// How many pollers there are.
    fn pollers(&self) -> usize;
    /// Queues `delivery` for poller `poller` and wakes it if it sleeps.
    fn hand(&self, poller: usize, delivery: Delivery);
}

/// One broadcast for one poller: the shared frame and the poller's members when it was sent.
pub(crate) struct Delivery {
    group: Arc<GroupCore>,
    members: Snapshot,
    frame: Bytes,
    /// A text message, for WebSocket members.
    text: bool,
}

/// A poller's inbox of broadcasts handed to it by other threads (its own thread's too, so
/// that broadcasts keep their order), taken at the start of its flush.
pub(crate) struct BroadcastInbox {
    queue: Mutex<Vec<Delivery>>,
    /// Whether `queue` holds anything; written under its lock, read without it, so that the
    /// poller's every pass does not take the lock for an empty inbox.
    pending: AtomicBool,
}

impl BroadcastInbox {
    pub(crate) fn new() -> BroadcastInbox {
        BroadcastInbox {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
        }
    }

    /// Adds a delivery (the caller wakes the poller).
    pub(crate) fn push(&self, delivery: Delivery) {
        let mut q = self.queue.lock().unwrap();
        q.push(delivery);
        self.pending.store(true, Ordering::Release);
    }

    /// Whether deliveries wait (asked under the lock, after the poller's sleeping flag is up).
    pub(crate) fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }

    /// On the poller's thread: queues every waiting broadcast on its members' connections
    /// (written by the flush that follows). Returns whether there were any.
    pub(crate) fn run(&self, engine: &mut Engine, counters: &PollerCounters) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        let batch = {
            let mut q = self.queue.lock().unwrap();
            self.pending.store(false, Ordering::Relaxed);
            std::mem::take(&mut *q)
        };
        for delivery in batch {
            delivery.deliver(engine, counters);
        }
        true
    }
}

impl Delivery {
    /// Offers the frame to each member's connection.
    fn deliver(self, engine: &mut Engine, counters: &PollerCounters) {
        let (mut queued, mut dropped, mut closed) = (0u64, 0u64, 0u64);
        for &(sock, conn) in self.members.iter() {
            let Some(conn) = conn else {
                closed += 1;
                continue;
            };
            match conn.offer_frame(engine, &self.frame, self.text) {
                Offered::Queued => queued += 1,
                Offered::Dropped => {
                    dropped += 1;
                    // Counted for the socket too (`SockIdent::dropped_packets`).
                    if let Some(mut st) = sock.slot() {
                        st.dropped += 1;
                    }
                    sock.refused_write();
                }
                // Closing or ended: its slot's release takes it out of the group.
                Offered::Closed => closed += 1,
            }
        }
        let payload = self.frame.len().saturating_sub(HEADER_LEN) as u64;
        counters.sent(queued, queued * payload);
        self.group.count(queued, dropped, closed);
    }
}

/// What a group has done: see [`SockGroup::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SockGroupStats {
    /// Members now.
    pub members: usize,
    /// Broadcasts made (each with at least one member).
    pub broadcasts: u64,
    /// Frames handed to pollers: one per poller with members, per broadcast (not one per
    /// member).
    pub poller_handoffs: u64,
    /// Frames queued on members' connections.
    pub queued: u64,
    /// Frames a member's slow-consumer policy or write limit dropped (each also counted by
    /// the member's connection).
    pub dropped: u64,
    /// Frames not queued because the member was closing or closed.
    pub skipped_closed: u64,
    /// Members that left because their socket closed (a disconnect by the slow-consumer
    /// policy included).
    pub closed_members: u64,
}

impl fmt::Display for SockGroupStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "members={} broadcasts={} poller_handoffs={} queued={} dropped={} skipped_closed={} closed_members={}",
            self.members,
            self.broadcasts,
            self.poller_handoffs,
            self.queued,
            self.dropped,
            self.skipped_closed,
            self.closed_members
        )
    }
}

/// The state of a group, shared by its handles, the deliveries in flight and (weakly) the
/// slots of its members.
pub(crate) struct GroupCore {
    table: &'static SockTable,
    /// The system's pollers; `None` in a simulated system (per-socket sends). Weak: a group
    /// may outlive its system, and the deliveries in a poller's inbox hold the group.
    pollers: Option<Weak<dyn PollerInboxes>>,
    /// Members by poller (one list in a simulated system).
    members: Box<[Members]>,
    broadcasts: AtomicU64,
    handoffs: AtomicU64,
    queued: AtomicU64,
    dropped: AtomicU64,
    skipped_closed: AtomicU64,
    closed_members: AtomicU64,
}

impl GroupCore {
    fn count(&self, queued: u64, dropped: u64, closed: u64) {
        for (counter, n) in [
            (&self.queued, queued),
            (&self.dropped, dropped),
            (&self.skipped_closed, closed),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The member list of `poller`.
    fn list(&self, poller: usize) -> &Members {
        &self.members[poller.min(self.members.len() - 1)]
    }

    /// This group's mark in a slot's list of groups.
    fn mark(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn remove(&self, sock: SockIdent) -> bool {
        let mut removed = false;
        for list in &self.members {
            removed |= list.remove(sock, LeaveReason::Left).is_some();
        }
        removed
    }
}

impl SlotGroup for GroupCore {
    fn slot_freed(&self, id: SlotId) {
        if self.remove(SockIdent::of(id)) {
            self.closed_members.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A group of sockets of one system, for broadcasts: [`SockGroup::broadcast`] encodes a packet
/// once and hands the shared frame to each poller that has members once, which queues it on
/// each of its members and writes it in its usual per-turn `writev`.
///
/// - Each member's slow-consumer policy ([`ConnOptions::slow_consumer`]) and write limit apply:
///   a frame a member cannot take is dropped for that member alone and counted (in the group's
///   [`stats`](SockGroup::stats) and in the member's connection); a member that its policy
///   disconnects leaves the group.
/// - A member whose socket closes leaves by itself, when its owner is told `Disconnected`.
/// - Broadcasts made from one thread reach each member in order. Their order relative to the
///   member's own [`SockIdent::send`]s is not defined.
///
/// `Clone` (handles share the group), `Send` and `Sync`. Made by
/// [`SystemHandle::sock_group`](crate::SystemHandle::sock_group).
///
/// [`ConnOptions::slow_consumer`]: crate::net::ConnOptions::slow_consumer
///
/// # Examples
///
/// ```
/// use kendynet::{Actor, Context, NetEvent, SockGroup, System, WPacket};
///
/// /// Every packet goes to every member, the sender included.
/// struct Room(SockGroup);
///
/// impl Actor for Room {
///     type Msg = NetEvent;
///     fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
///         match ev {
///             NetEvent::Connected { sock, .. } => {
///                 let _ = self.0.join(sock);
///             }
///             NetEvent::Packet { packet, .. } => {
///                 self.0.broadcast(WPacket::from(packet));
///             }
///             // A closed socket leaves the group by itself.
///             _ => {}
///         }
///     }
/// }
///
/// let system = System::builder().workers(2).build().unwrap();
/// let room = system.spawn(Room(system.sock_group()));
/// let addr = system.listen("127.0.0.1:0".parse().unwrap(), &room).unwrap();
/// # let _ = addr;
/// system.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct SockGroup {
    core: Arc<GroupCore>,
}

impl fmt::Debug for SockGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockGroup")
            .field("members", &self.len())
            .finish_non_exhaustive()
    }
}

impl SockGroup {
    pub(crate) fn new(
        table: &'static SockTable,
        pollers: Option<Arc<dyn PollerInboxes>>,
    ) -> SockGroup {
        let lists = pollers.as_ref().map_or(1, |p| p.pollers().max(1));
        SockGroup {
            core: Arc::new(GroupCore {
                table,
                pollers: pollers.as_ref().map(Arc::downgrade),
                members: (0..lists).map(|_| Membership::new()).collect(),
                broadcasts: AtomicU64::new(0),
                handoffs: AtomicU64::new(0),
                queued: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                skipped_closed: AtomicU64::new(0),
                closed_members: AtomicU64::new(0),
            }),
        }
    }

    /// Adds `sock`; `Ok(false)` if it is a member already.
    ///
    /// # Errors
    /// [`SockError::Closed`] if the socket is closed or closing (or closes during the join: it
    /// is not left in the group); [`SockError::ForeignSocket`] if it belongs to another
    /// system than the group.
    pub fn join(&self, sock: SockIdent) -> Result<bool, SockError> {
        let core = &self.core;
        if sock.table() != core.table.id() {
            return Err(SockError::ForeignSocket);
        }
        let (poller, conn) = {
            let Some(st) = core.table.lock_current(sock.slot_id()) else {
                return Err(SockError::Closed);
            };
            if st.life != Life::Open {
                return Err(SockError::Closed);
            }
            (st.poller, st.conn)
        };
        let list = core.list(poller);
        if !list.insert(sock, conn) {
            return Ok(false);
        }
        // Tell the slot, unless it was freed meanwhile: then its release may have looked for
        // this member before it was inserted, so take it out here.
        let Some(mut st) = core.table.lock_current(sock.slot_id()) else {
            list.remove(sock, LeaveReason::Left);
            return Err(SockError::Closed);
        };
        let mark = core.mark();
        st.groups.retain(|(m, _)| *m != mark);
        st.groups
            .push((mark, Arc::downgrade(core) as Weak<dyn SlotGroup>));
        Ok(true)
    }

    /// Takes `sock` out; whether it was a member.
    pub fn leave(&self, sock: SockIdent) -> bool {
        let removed = self.core.remove(sock);
        if removed && let Some(mut st) = self.core.table.lock_current(sock.slot_id()) {
            let mark = self.core.mark();
            st.groups.retain(|(m, _)| *m != mark);
        }
        removed
    }

    /// Whether `sock` is a member.
    pub fn contains(&self, sock: SockIdent) -> bool {
        self.core.members.iter().any(|l| l.contains(sock))
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.core.members.iter().map(Members::len).sum()
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `packet` to every member: encoded once, the frame handed to each poller with
    /// members once, and queued on each member by its poller (see the type's docs). Returns
    /// how many members it was sent to; what became of it for each (queued, dropped by a
    /// slow-consumer policy, or skipped as closed) is counted in [`SockGroup::stats`].
    pub fn broadcast(&self, packet: WPacket) -> usize {
        let text = packet.is_text();
        let frame = packet.into_frame();
        let core = &self.core;
        let mut sent = 0;
        match &core.pollers {
            Some(pollers) => {
                let Some(pollers) = pollers.upgrade() else {
                    return 0; // The system has gone, and its sockets with it.
                };
                let mut handoffs = 0;
                for (poller, list) in core.members.iter().enumerate() {
                    let members = list.snapshot();
                    if members.is_empty() {
                        continue;
                    }
                    sent += members.len();
                    handoffs += 1;
                    pollers.hand(
                        poller,
                        Delivery {
                            group: core.clone(),
                            members,
                            frame: frame.clone(),
                            text,
                        },
                    );
                }
                if handoffs > 0 {
                    core.broadcasts.fetch_add(1, Ordering::Relaxed);
                    core.handoffs.fetch_add(handoffs, Ordering::Relaxed);
                }
            }
            None => {
                let members = core.members[0].snapshot();
                if members.is_empty() {
                    return 0;
                }
                sent = members.len();
                let (mut queued, mut dropped, mut closed) = (0, 0, 0);
                for &(sock, _) in members.iter() {
                    let packet = WPacket::from(RPacket::from_frame(frame.clone()));
                    match sock.send(packet) {
                        Ok(()) => queued += 1,
                        Err(TrySendError::Full(_)) => dropped += 1,
                        Err(_) => closed += 1,
                    }
                }
                core.broadcasts.fetch_add(1, Ordering::Relaxed);
                core.handoffs.fetch_add(1, Ordering::Relaxed);
                core.count(queued, dropped, closed);
            }
        }
        sent
    }

    /// What the group has done so far. Deliveries are counted by the pollers as they queue
    /// them, so the counts of a broadcast just made may still be on their way.
    pub fn stats(&self) -> SockGroupStats {
        let c = &self.core;
        SockGroupStats {
            members: self.len(),
            broadcasts: c.broadcasts.load(Ordering::Relaxed),
            poller_handoffs: c.handoffs.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            skipped_closed: c.skipped_closed.load(Ordering::Relaxed),
            closed_members: c.closed_members.load(Ordering::Relaxed),
        }
    }
}
