//! Opening real sockets: the pollers' network state as a system's [`Transport`], and the
//! registration of a new socket as a connection on its poller.

use super::NetEvent;
use super::poller::{NetShared, PollerLocal, current_poller};
use super::sock_ident::{SockIdent, system_id};
use super::table::SockTable;
use super::table::{Admission, Life, NewSlot, PollerLink};
use super::transport::Transport;
use crate::actor::{Recipient, SystemInner};
use crate::net::{ConnOptions, Connection, Engine, LISTEN_BACKLOG, Socket, bind_listener};
use crate::sync::{Arc, Ordering};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// A ticket under the system's connection limit, unless it is shutting down or full.
fn admit(inner: &SystemInner, net: &NetShared) -> Option<Admission> {
    if inner.is_shutting_down() {
        return None;
    }
    Admission::try_new(net.table(), net.max_connections)
}

/// Registers an accepted or connected socket as a connection on this thread's poller and
/// stages its `Connected` event. On any failure the socket closes and its ticket is returned.
fn register_here(
    engine: &mut Engine,
    socket: Socket,
    ticket: Admission,
    owner: Recipient<NetEvent>,
    options: ConnOptions,
) {
    // Posted closures and engine callbacks run on a poller's thread; without one (the
    // system is gone) the socket and its ticket are simply dropped.
    if let Some(local) = current_poller() {
        register(&local, engine, socket, ticket, owner, options);
    }
}

/// As [`register_here`], with the poller at hand.
fn register(
    local: &Rc<PollerLocal>,
    engine: &mut Engine,
    socket: Socket,
    ticket: Admission,
    owner: Recipient<NetEvent>,
    options: ConnOptions,
) {
    let (net, poller) = (local.net(), local.index());
    let peer = socket.peer_addr();
    let system = system_id(owner.system());
    let link: Arc<dyn PollerLink> = net.clone();
    let Some(id) = net.table().alloc(NewSlot {
        ticket,
        owner,
        peer,
        poller,
        raw: options.raw,
        write_limit: options.write_limit,
        link: Some(link),
        system,
    }) else {
        return;
    };
    let sock = SockIdent::of(id);
    let table = net.table();
    let (on_packet, on_end) = (local.clone(), local.clone());
    let bound = Connection::new(socket).options(options).bind(
        engine,
        move |_, _, packet| on_packet.stage(sock, NetEvent::Packet { sock, packet }),
        move |_, _, reason| {
            if let Some(mut st) = table.lock_current(id) {
                st.life = Life::Ended;
                st.conn = None;
            }
            on_end.stage(sock, NetEvent::Disconnected { sock, reason });
        },
    );
    match bound {
        Ok(conn) => {
            if let Some(mut st) = table.lock_current(id) {
                st.conn = Some(conn);
            }
            local.stage(sock, NetEvent::Connected { sock, peer });
        }
        Err(_) => table.release(id),
    }
}

impl Transport for NetShared {
    fn sock_table(&self) -> &'static SockTable {
        self.table()
    }

    fn group_pollers(self: Arc<Self>) -> Option<Arc<dyn super::broadcast::PollerInboxes>> {
        Some(self)
    }

    fn default_options(&self) -> ConnOptions {
        self.default_options.clone()
    }

    fn listen(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    ) -> io::Result<SocketAddr> {
        let net = self;
        let (fd, bound) = bind_listener(&addr, LISTEN_BACKLOG)?;
        let inner = system.clone();
        let listener_poller = net.pick_poller();
        let net2 = net.clone();
        net.on_poller(listener_poller, move |engine| {
            let net = net2;
            let net_cb = net.clone();
            let res = engine.listen_on(fd, move |engine, socket| {
                let Some(ticket) = admit(&inner, &net_cb) else {
                    return;
                };
                let target = net_cb.pick_poller();
                let (owner, options) = (owner.clone(), options.clone());
                // Registered by the poller that will own it, on its thread.
                if target == listener_poller {
                    register_here(engine, socket, ticket, owner, options);
                } else {
                    let _ = net_cb.on_poller(target, move |engine| {
                        register_here(engine, socket, ticket, owner, options)
                    });
                }
            });
            if let Ok(id) = res {
                net.listeners.lock().unwrap().push((listener_poller, id));
            }
        })?;
        Ok(bound)
    }

    fn connect(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        timeout: Duration,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
    ) {
        let net = self;
        let fail = |owner: &Recipient<NetEvent>, error: io::Error| {
            let _ = owner.force(NetEvent::ConnectFailed { addr, error });
        };
        let Some(ticket) = admit(system, &net) else {
            let error = io::Error::other("the system is shutting down or at its connection limit");
            return fail(&owner, error);
        };
        let poller = net.pick_poller();
        let owner2 = owner.clone();
        let posted = net.on_poller(poller, move |engine| {
            let owner_fail = owner2.clone();
            let started = engine.connect(addr, timeout, move |engine, res| match res {
                Ok(socket) => register_here(engine, socket, ticket, owner2, options),
                Err(error) => {
                    drop(ticket);
                    let _ = owner2.force(NetEvent::ConnectFailed { addr, error });
                }
            });
            if let Err(error) = started {
                let _ = owner_fail.force(NetEvent::ConnectFailed { addr, error });
            }
        });
        if let Err(error) = posted {
            fail(&owner, error);
        }
    }

    fn open_sockets(&self) -> usize {
        NetShared::open_sockets(self)
    }

    fn io_wait_errors(&self) -> u64 {
        self.wait_errors.load(Ordering::Relaxed)
    }
}
