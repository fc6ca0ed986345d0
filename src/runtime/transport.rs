//! How a system opens sockets: the seam between [`SystemHandle::listen`] /
//! [`SystemHandle::connect`] and whatever carries the bytes.
//!
//! A system built by [`Builder::build`](super::Builder::build) keeps its pollers' network
//! state ([`NetShared`](super::poller::NetShared)) here; a simulated system of the test kit
//! keeps virtual sockets. Either way every socket lives in the system's socket table and is
//! reached through a [`SockIdent`](super::SockIdent), so an actor's code cannot tell the two
//! apart. Only opening a socket differs; what happens to an open one (sends, closes,
//! hand-offs) goes through the table and the slot's [`PollerLink`](super::table::PollerLink).

use super::NetEvent;
use super::broadcast::PollerInboxes;
use super::listener::{ListenOptions, ListenerHandle};
use super::sock_ident::SockIdent;
use super::sock_ident::system_id;
use super::table::Life;
use super::table::SockTable;
use crate::actor::{Recipient, SystemHandle, SystemInner};
use crate::net::ConnOptions;
#[cfg(feature = "websocket")]
use crate::net::ws::WsOptions;
use crate::sync::Arc;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// What a system's sockets run on. The system keeps it as its services
/// ([`SystemInner::services`]), as an `Arc<dyn Transport>`.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The options of `listen`/`connect` without options of their own.
    fn default_options(&self) -> ConnOptions;

    /// Whether it serves connections that open with a handshake (`ConnOptions::tls`,
    /// `ConnOptions::websocket`).
    fn supports_handshakes(&self) -> bool {
        true
    }

    /// Listens on `addr` for `owner` (already checked to belong to `system`); returns the
    /// bound address.
    fn listen(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    ) -> io::Result<SocketAddr>;

    /// Listens on `addr` for `owner` (already checked to belong to `system`), with a
    /// handle; `max_connections`: the listener's own limit. Transports without listener
    /// handles (the test kit's simulation) refuse with `Unsupported`.
    fn open_listener(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
        max_connections: Option<usize>,
    ) -> io::Result<ListenerHandle> {
        let _ = (system, addr, owner, options, max_connections);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this transport has no listener handles (the test kit's simulated network: use \
             SystemHandle::listen)",
        ))
    }

    /// Dials `addr` for `owner` (already checked to belong to `system`), which receives
    /// `Connected` or one `ConnectFailed`.
    fn connect(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        timeout: Duration,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    );

    /// Sockets open (admitted and not yet freed).
    fn open_sockets(&self) -> usize;

    /// The system's socket table.
    fn sock_table(&self) -> &'static SockTable;

    /// Waits for I/O that failed (see [`SystemHandle::io_wait_errors`]).
    fn io_wait_errors(&self) -> u64 {
        0
    }

    /// Back-offs of listeners for lack of resources (see [`SystemHandle::accept_pauses`]).
    fn accept_pauses(&self) -> u64 {
        0
    }

    /// Connections accepted and dropped at the system's limit (see
    /// [`SystemHandle::accept_refusals`]).
    fn accept_refusals(&self) -> u64 {
        0
    }

    /// The pollers that socket groups hand their broadcasts to; `None`: the groups send to
    /// each member through its slot.
    fn group_pollers(self: Arc<Self>) -> Option<Arc<dyn PollerInboxes>> {
        None
    }
}

/// The transport of a system built by this crate.
pub(crate) fn transport_of(inner: &SystemInner) -> &Arc<dyn Transport> {
    inner
        .services::<Arc<dyn Transport>>()
        .expect("systems are built with a transport")
}

/// Whether `owner` is an actor (or a pool) of `system`.
fn is_own(system: &SystemInner, owner: &Recipient<NetEvent>) -> bool {
    system_id(owner.system()) == system_id(system)
}

/// Refuses TLS and WebSocket options on a transport without them.
fn check_handshakes(transport: &dyn Transport, options: &ConnOptions) -> io::Result<()> {
    if options.opens_later() && !transport.supports_handshakes() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this transport has no TLS or WebSocket",
        ));
    }
    Ok(())
}

fn foreign_owner() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the owner belongs to another system",
    )
}

impl SystemHandle {
    /// Listens on `addr`; every accepted socket is owned by `owner`, which receives its
    /// [`NetEvent`]s. Returns the bound address (useful with port 0). Sockets use the
    /// system's default [`ConnOptions`].
    ///
    /// # Errors
    /// The OS error of creating, binding or listening (for example `AddrInUse`);
    /// `InvalidInput` if `owner` belongs to another system.
    pub fn listen(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
    ) -> io::Result<SocketAddr> {
        let options = transport_of(&self.inner).default_options();
        self.listen_with(addr, owner, options)
    }

    /// [`SystemHandle::listen`] with per-socket options (raw mode, timeouts, limits).
    ///
    /// # Errors
    /// As [`SystemHandle::listen`].
    pub fn listen_with(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
        options: ConnOptions,
    ) -> io::Result<SocketAddr> {
        let owner = owner.into();
        if !is_own(&self.inner, &owner) {
            return Err(foreign_owner());
        }
        let transport = transport_of(&self.inner);
        check_handshakes(transport.as_ref(), &options)?;
        transport.clone().listen(&self.inner, addr, owner, options)
    }

    /// Listens on `addr` for WebSocket connections (RFC 6455), with the system's default
    /// [`ConnOptions`]: every socket whose handshake succeeds is owned by `owner`, which
    /// receives `Connected`, then a `Packet` per message, then `Disconnected` (see
    /// [`crate::ws`]). Plain HTTP requests on the port are answered by [`WsOptions::http`].
    ///
    /// # Errors
    /// As [`SystemHandle::listen`]; `Unsupported` on the test kit's virtual network.
    #[cfg(feature = "websocket")]
    pub fn listen_ws(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
        ws: WsOptions,
    ) -> io::Result<SocketAddr> {
        let options = transport_of(&self.inner).default_options();
        self.listen_ws_with(addr, owner, options, ws)
    }

    /// [`SystemHandle::listen_ws`] with per-socket options (limits, timeouts, watermarks;
    /// `raw` and `max_packet_len` do not apply to WebSocket).
    ///
    /// # Errors
    /// As [`SystemHandle::listen_ws`].
    #[cfg(feature = "websocket")]
    pub fn listen_ws_with(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
        options: ConnOptions,
        ws: WsOptions,
    ) -> io::Result<SocketAddr> {
        self.listen_with(addr, owner, options.websocket(ws))
    }

    /// Connects to `addr` without blocking. `owner` receives `Connected` and the socket's
    /// events, or one `ConnectFailed` (refused, timed out after `timeout`, or another error).
    pub fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        owner: impl Into<Recipient<NetEvent>>,
    ) {
        let options = transport_of(&self.inner).default_options();
        self.connect_with(addr, timeout, owner, options)
    }

    /// [`SystemHandle::connect`] with per-socket options.
    pub fn connect_with(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        owner: impl Into<Recipient<NetEvent>>,
        options: ConnOptions,
    ) {
        let owner: Recipient<NetEvent> = owner.into();
        if !is_own(&self.inner, &owner) {
            let error = foreign_owner();
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
            return;
        }
        if options.opens_later() {
            let error = io::Error::new(
                io::ErrorKind::Unsupported,
                "TLS and WebSocket connections are server side only",
            );
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
            return;
        }
        transport_of(&self.inner)
            .clone()
            .connect(&self.inner, addr, timeout, owner, options);
    }

    /// Sockets open in this system.
    pub fn open_sockets(&self) -> usize {
        transport_of(&self.inner).open_sockets()
    }

    /// How many waits for I/O have failed on the workers since the system started (each is
    /// retried after a short pause; a growing count means the OS refuses the poll).
    pub fn io_wait_errors(&self) -> u64 {
        transport_of(&self.inner).io_wait_errors()
    }
}

impl SystemHandle {
    /// Listens on `addr` and returns a handle to pause, resume and close the listener and
    /// read its counters; every accepted socket is owned by `owner`, as with
    /// [`SystemHandle::listen`] (which is this with default options, keeping only the
    /// address).
    ///
    /// ```no_run
    /// # use kendynet::{ListenOptions, NetEvent, SystemHandle, Recipient};
    /// # fn demo(system: &SystemHandle, owner: Recipient<NetEvent>) -> std::io::Result<()> {
    /// let listener = system.open_listener(
    ///     "127.0.0.1:0".parse().unwrap(),
    ///     owner,
    ///     ListenOptions::new().max_connections(500),
    /// )?;
    /// println!("listening on {}", listener.local_addr());
    /// listener.pause(); // clients wait in the backlog
    /// listener.resume();
    /// listener.close();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The OS error of creating, binding or listening (for example `AddrInUse`);
    /// `InvalidInput` if `owner` belongs to another system; `Unsupported` on the test kit's
    /// simulated network, whose listeners have no handles (use
    /// [`SystemHandle::listen`] there).
    pub fn open_listener(
        &self,
        addr: SocketAddr,
        owner: impl Into<Recipient<NetEvent>>,
        options: ListenOptions,
    ) -> io::Result<ListenerHandle> {
        let owner = owner.into();
        if !is_own(&self.inner, &owner) {
            return Err(foreign_owner());
        }
        let transport = transport_of(&self.inner);
        let conn = options
            .conn
            .clone()
            .unwrap_or_else(|| transport.default_options());
        transport
            .clone()
            .open_listener(&self.inner, addr, owner, conn, options.max_connections)
    }

    /// How many times this system's listeners stopped accepting for a while because `accept`
    /// failed for lack of resources (the sum of their [`ListenerHandle::accept_pauses`],
    /// listeners of [`SystemHandle::listen`] included). A growing count means the process is
    /// short of descriptors (raise `RLIMIT_NOFILE`, see
    /// [`raise_fd_limit`](crate::net::raise_fd_limit)) or of kernel memory.
    pub fn accept_pauses(&self) -> u64 {
        transport_of(&self.inner).accept_pauses()
    }

    /// How many connections this system's listeners accepted and closed at once because the
    /// system had its [`Builder::max_connections`](super::Builder::max_connections) sockets
    /// open.
    pub fn accept_refusals(&self) -> u64 {
        transport_of(&self.inner).accept_refusals()
    }
}

/// Makes `inner` re-announce its sockets to an actor that gets a fresh instance (a restart):
/// one [`NetEvent::Adopted`] per socket it owns that is still open, in front of whatever
/// waits in its mailbox, so that the new instance knows them before their next packet.
pub(crate) fn announce_sockets_on_restart(inner: &SystemInner) {
    let table = transport_of(inner).sock_table();
    inner.set_restart_hook(Box::new(move |id| {
        let mut owned: Vec<(SockIdent, SocketAddr, Recipient<NetEvent>)> = Vec::new();
        table.for_each_live(|slot, st| {
            if st.life == Life::Open
                && let Some(owner) = &st.owner
                && owner.direct_actor() == Some(id)
            {
                owned.push((SockIdent::of(slot), st.peer, owner.clone()));
            }
        });
        let Some((_, _, owner)) = owned.first() else {
            return;
        };
        let owner = owner.clone();
        let events: Vec<NetEvent> = owned
            .into_iter()
            .map(|(sock, peer, _)| NetEvent::Adopted { sock, peer })
            .collect();
        owner.deliver_front(events);
    }));
}
