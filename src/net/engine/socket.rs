//! A connected socket that no engine polls yet: what listeners and connectors produce, and
//! what bound sockets (layer 1) and connections (layer 2) are made from.

use crate::net::sys;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

/// A connected TCP socket that is not bound to any engine yet: what [`Engine::listen`] and
/// [`Engine::connect`] hand to their callbacks. Bind it with [`Engine::bind`] (layer 1) or
/// [`crate::net::Connection::bind`] (layer 2). Dropping it closes the socket.
///
/// [`Engine::listen`]: crate::net::Engine::listen
/// [`Engine::connect`]: crate::net::Engine::connect
/// [`Engine::bind`]: crate::net::Engine::bind
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
