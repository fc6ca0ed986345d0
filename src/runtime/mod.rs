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
mod poller;
mod sock_group;
pub(crate) mod sock_ident;
mod system;
pub(crate) mod table;
pub(crate) mod transport;

pub use broadcast::{SockGroup, SockGroupStats};
pub use sock_ident::{SockError, SockIdent};
pub use system::{Builder, DEFAULT_MAX_CONNECTIONS, DEFAULT_OWNER_BACKLOG, ShutdownReport, System};
pub use table::MAX_SOCKETS_PER_SYSTEM;

use crate::actor::{Actor, Pool, Recipient, RouteKey};
use crate::net::{DisconnectReason, RPacket};
use std::io;
use std::net::SocketAddr;

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

impl RouteKey for NetEvent {
    /// A socket's events all go to one pool instance; failed dials spread by port.
    fn route_key(&self) -> u64 {
        match self {
            NetEvent::Connected { sock, .. }
            | NetEvent::Adopted { sock, .. }
            | NetEvent::Packet { sock, .. }
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
