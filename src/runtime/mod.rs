//! The runtime: where actors and the network meet.
//!
//! This is the only module that names both [`crate::net`] and [`crate::actor`]. It builds a
//! [`System`] from the actor core and one poller per worker (each worker's
//! driver: an epoll [`Engine`](crate::net::Engine) holding its share of the sockets), keeps the
//! system's socket table, turns socket events into [`NetEvent`] messages for the sockets'
//! owners, flushes what actors sent at the end of each batch of turns, and opens sockets with
//! `listen` and `connect`.
//!
//! `listen` and `connect` reach the network through the system's transport (a crate-private
//! trait): the pollers' epoll engines for a [`System`], or virtual sockets for a simulated
//! system of the test kit. Everything else about a socket (its table slot, its
//! [`SockIdent`], the order of its events) is the same code for both.
//!
//! Who runs what: a socket's connection, its events and its writes all live on one poller
//! thread; its [`SockIdent`] can be used from any thread; an owner's handler runs on whichever
//! worker runs the actor, usually the socket's poller.

pub(crate) mod broadcast;
mod connect;
mod listener;
pub(crate) mod metrics;
pub(crate) mod net_stats;
mod poller;
mod sock_group;
pub(crate) mod sock_ident;
mod system;
pub(crate) mod table;
pub(crate) mod transport;

pub use broadcast::{SockGroup, SockGroupStats};
pub use listener::{DEFAULT_LISTENER_MAX_CONNECTIONS, ListenOptions, ListenerHandle};
pub use metrics::Metrics;
pub use net_stats::{ClosedSockets, close_reason_label};
pub use sock_ident::{SockError, SockIdent};

pub use system::{Builder, DEFAULT_MAX_CONNECTIONS, DEFAULT_OWNER_BACKLOG, ShutdownReport, System};
pub use table::MAX_SOCKETS_PER_SYSTEM;

use crate::actor::{Actor, Pool, Recipient, RouteKey};
use crate::net::{DisconnectReason, RPacket};
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// A network event, delivered to the actor that owns the socket. Per socket: exactly one
/// `Connected` first, then its packets in order (with `InputEnded` after the last, if the
/// peer ends its input first, and watermark events between them), then exactly one
/// `Disconnected` last. Owners take them through `From<NetEvent>` on their message type.
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
    /// The peer ended its input (it half-closed, or closed): no packet follows. Replies
    /// still go out: the socket closes gracefully (writing everything sent before) once the
    /// owner has handled this event, that is when the event, and with it `close`, is
    /// dropped, unless the owner keeps it open with [`CloseWhenHandled::keep_open`]. Its
    /// `Disconnected` then reports [`DisconnectReason::PeerClosed`]. The socket's send
    /// timeout still bounds the wait for a peer that does not read.
    InputEnded {
        /// The socket.
        sock: SockIdent,
        /// Closes the socket when dropped.
        close: CloseWhenHandled,
    },
    /// The socket's queued output passed its high-water mark
    /// ([`ConnOptions::high_water`](crate::net::ConnOptions::high_water)): the peer reads
    /// slower than it is sent to, and the socket's slow-consumer policy now applies (by
    /// default its reading pauses).
    HighWater {
        /// The socket.
        sock: SockIdent,
        /// Bytes queued then.
        queued: usize,
    },
    /// The socket's queued output fell back to its low-water mark after a `HighWater`: the
    /// policy is lifted.
    LowWater {
        /// The socket.
        sock: SockIdent,
        /// Bytes queued then.
        queued: usize,
    },
    /// The socket closed; its handle is stale from now on.
    Disconnected {
        /// The socket.
        sock: SockIdent,
        /// Why.
        reason: DisconnectReason,
    },
    /// The owner was restarted (by its [`RestartPolicy`](crate::RestartPolicy) or its
    /// supervisor) and this socket, still open, is its: one per socket, before anything else
    /// the new instance handles. Packets and the `Disconnected` of the socket follow as usual.
    Adopted {
        /// The socket.
        sock: SockIdent,
        /// Its peer.
        peer: SocketAddr,
    },
    /// A `connect` failed: refused, timed out, or another error.
    ConnectFailed {
        /// The address it tried.
        addr: SocketAddr,
        /// Why.
        error: io::Error,
    },
}

impl NetEvent {
    /// The socket the event concerns (`None` for `ConnectFailed`).
    pub fn sock(&self) -> Option<SockIdent> {
        match self {
            NetEvent::Connected { sock, .. }
            | NetEvent::Adopted { sock, .. }
            | NetEvent::Packet { sock, .. }
            | NetEvent::InputEnded { sock, .. }
            | NetEvent::HighWater { sock, .. }
            | NetEvent::LowWater { sock, .. }
            | NetEvent::Disconnected { sock, .. } => Some(*sock),
            NetEvent::ConnectFailed { .. } => None,
        }
    }
}

/// A message type that carries [`NetEvent`]s and can give them back: what an owner needs to
/// hand a socket on with the events already queued for it
/// ([`SockIdent::hand_off`]). Implemented by `NetEvent` itself; for an enum with a variant
/// that wraps `NetEvent`, four lines:
///
/// ```
/// use kendynet::{NetEvent, NetMsg};
///
/// enum Msg {
///     Net(NetEvent),
///     Tick,
/// }
///
/// impl From<NetEvent> for Msg {
///     fn from(ev: NetEvent) -> Msg {
///         Msg::Net(ev)
///     }
/// }
///
/// impl NetMsg for Msg {
///     fn into_net_event(self) -> Result<NetEvent, Msg> {
///         match self {
///             Msg::Net(ev) => Ok(ev),
///             other => Err(other),
///         }
///     }
/// }
/// ```
pub trait NetMsg: From<NetEvent> + Sized {
    /// The event this message carries, or the message itself if it carries none. Runs under
    /// the mailbox's lock during a hand-off: it must only move, never block or panic.
    ///
    /// # Errors
    /// The message handed back, if it is not a network event.
    fn into_net_event(self) -> Result<NetEvent, Self>;
}

impl NetMsg for NetEvent {
    fn into_net_event(self) -> Result<NetEvent, NetEvent> {
        Ok(self)
    }
}

/// Carried by [`NetEvent::InputEnded`]: closes the socket gracefully when dropped (once the
/// owner has handled the event, and so every packet before it), unless
/// [`CloseWhenHandled::keep_open`] disarms it.
pub struct CloseWhenHandled {
    sock: SockIdent,
    armed: bool,
}

impl CloseWhenHandled {
    pub(crate) fn new(sock: SockIdent) -> CloseWhenHandled {
        CloseWhenHandled { sock, armed: true }
    }

    /// Keeps the socket open: the owner goes on sending (the peer can still read) and
    /// closes it itself with [`SockIdent::close`] when done.
    pub fn keep_open(mut self) {
        self.armed = false;
    }
}

impl Drop for CloseWhenHandled {
    fn drop(&mut self) {
        if self.armed {
            // Already closed (by the owner, or the connection ended): nothing to do.
            let _ = self.sock.close();
        }
    }
}

impl fmt::Debug for CloseWhenHandled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseWhenHandled")
            .field("sock", &self.sock)
            .field("armed", &self.armed)
            .finish()
    }
}

impl RouteKey for NetEvent {
    /// A socket's events all go to one pool instance; failed dials spread by port.
    fn route_key(&self) -> u64 {
        match self {
            NetEvent::Connected { sock, .. }
            | NetEvent::Adopted { sock, .. }
            | NetEvent::Packet { sock, .. }
            | NetEvent::InputEnded { sock, .. }
            | NetEvent::HighWater { sock, .. }
            | NetEvent::LowWater { sock, .. }
            | NetEvent::Disconnected { sock, .. } => sock.to_u64(),
            NetEvent::ConnectFailed { addr, .. } => u64::from(addr.port()),
        }
    }
}

impl<A: Actor> Pool<A> {
    /// A socket owner for [`SystemHandle::listen`](crate::SystemHandle::listen) and
    /// [`SystemHandle::connect`](crate::SystemHandle::connect): each socket's events all go
    /// to one instance (chosen by the socket, as [`Pool::send_keyed`] does), so every
    /// instance sees its sockets' `Connected`, packets and `Disconnected` in order, and the
    /// sockets are spread over the pool: the C original's thread pool draining one network
    /// dispatcher.
    pub fn socket_owner(&self) -> Recipient<NetEvent>
    where
        A::Msg: From<NetEvent>,
    {
        self.keyed_router()
    }
}
