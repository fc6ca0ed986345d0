//! The test's side of virtual connections: clients that test code drives by hand, and
//! listeners that take the connections actors dial.

use super::net::{ACCEPT, DIAL, VirtualNet};
use crate::net::{RPacket, WPacket};
use crate::sync::Arc;
use bytes::Bytes;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The test's end of a virtual connection: what a client program would do with a socket,
/// written by hand. Made by [`Sim::dial`](super::Sim::dial) (a client of an actor's
/// listener) or [`VirtualListener::accept`] (the server of an actor's dial).
///
/// Nothing here blocks or runs the simulation: a write is in flight until a step delivers
/// it, and a read returns what has arrived by the simulation's clock. Dropping the client
/// closes it (the actor's socket then sees `Disconnected { reason: PeerClosed }`).
pub struct VirtualClient {
    net: Arc<VirtualNet>,
    conn: u64,
    side: usize,
    local: SocketAddr,
    peer: SocketAddr,
}

impl fmt::Debug for VirtualClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualClient")
            .field("conn", &self.conn)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

impl VirtualClient {
    pub(crate) fn dialled(
        net: Arc<VirtualNet>,
        conn: u64,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> VirtualClient {
        VirtualClient {
            net,
            conn,
            side: DIAL,
            local,
            peer,
        }
    }

    /// The connection's number in the trace (`c3:d` is connection 3's dialer, `c3:a` its
    /// acceptor).
    pub fn conn_number(&self) -> u64 {
        self.conn
    }

    /// This end's address (what the actor's socket reports as its peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Writes one packet (its length header, then its payload).
    ///
    /// # Errors
    /// `BrokenPipe` after [`VirtualClient::shutdown_write`] (or the half-close fault);
    /// `ConnectionReset` once the connection has been reset.
    pub fn send(&self, packet: WPacket) -> io::Result<()> {
        self.net
            .client_write(self.conn, self.side, packet.into_frame())
    }

    /// Writes raw bytes: part of a frame, several frames, or a header declaring a packet
    /// larger than the socket accepts.
    ///
    /// # Errors
    /// As [`VirtualClient::send`].
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.net
            .client_write(self.conn, self.side, Bytes::copy_from_slice(bytes))
    }

    /// The next packet, if all of it has arrived by now.
    ///
    /// # Errors
    /// `UnexpectedEof` once the peer has closed and every packet before its FIN has been
    /// read; `ConnectionReset` once the connection has been reset (what had not been read is
    /// lost).
    pub fn recv(&self) -> io::Result<Option<RPacket>> {
        self.net.client_recv(self.conn, self.side)
    }

    /// Every byte that has arrived by now, unframed: what a socket in raw mode
    /// ([`ConnOptions::raw`](crate::ConnOptions::raw)) sent.
    ///
    /// # Errors
    /// As [`VirtualClient::recv`], once nothing is left.
    pub fn recv_bytes(&self) -> io::Result<Vec<u8>> {
        self.net.client_recv_bytes(self.conn, self.side)
    }

    /// Every complete packet that has arrived by now (stopping quietly at the end of the
    /// stream; [`VirtualClient::recv`] tells how it ended).
    pub fn recv_all(&self) -> Vec<RPacket> {
        let mut all = Vec::new();
        while let Ok(Some(p)) = self.recv() {
            all.push(p);
        }
        all
    }

    /// Half-closes: a FIN follows what was written; reading goes on.
    pub fn shutdown_write(&self) {
        self.net.client_shutdown(self.conn, self.side);
    }

    /// Resets the connection: what is in flight either way is lost, and the actor's socket
    /// sees `Disconnected { reason: Reset }`.
    pub fn reset(&self) {
        self.net.client_reset(self.conn, self.side);
    }

    /// Stops reading: what the actor sends fills this client's window, then piles up in the
    /// socket's send queue until its write limit refuses sends with `TrySendError::Full`.
    pub fn stop_reading(&self) {
        self.net.client_set_reading(self.conn, self.side, false);
    }

    /// Reads again after [`VirtualClient::stop_reading`] (or the stall fault).
    pub fn resume_reading(&self) {
        self.net.client_set_reading(self.conn, self.side, true);
    }

    /// Closes gracefully (the same as dropping it).
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for VirtualClient {
    fn drop(&mut self) {
        self.net.client_drop(self.conn, self.side);
    }
}

/// A test's listener on the virtual network: actors that dial its address
/// ([`SystemHandle::connect`](crate::SystemHandle::connect)) connect to it, and the test
/// plays the server with [`VirtualListener::accept`]. Made by
/// [`Sim::bind`](super::Sim::bind); dropping it stops listening and resets the connections
/// not accepted.
pub struct VirtualListener {
    net: Arc<VirtualNet>,
    addr: SocketAddr,
}

impl fmt::Debug for VirtualListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtualListener({})", self.addr)
    }
}

impl VirtualListener {
    pub(crate) fn new(net: Arc<VirtualNet>, addr: SocketAddr) -> VirtualListener {
        VirtualListener { net, addr }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The oldest connection an actor dialled and nobody accepted yet.
    pub fn accept(&self) -> Option<VirtualClient> {
        let (conn, peer) = self.net.accept(self.addr)?;
        Some(VirtualClient {
            net: self.net.clone(),
            conn,
            side: ACCEPT,
            local: self.addr,
            peer,
        })
    }
}

impl Drop for VirtualListener {
    fn drop(&mut self) {
        self.net.unbind(self.addr);
    }
}
