//! Opening real sockets: the pollers' network state as a system's [`Transport`], and the
//! registration of a new socket as a connection on its poller.

use super::listener::{ListenerHandle, ListenerLink, ListenerShared};
use super::net_stats::NetStats;
use super::poller::{NetShared, PollerLocal, current_poller};
use super::sock_ident::{SockIdent, system_id};
use super::table::SockTable;
use super::table::{Admission, Life, NewSlot, PollerLink};
use super::transport::Transport;
use super::{CloseWhenHandled, NetEvent};
use crate::actor::{Recipient, SystemInner};
use crate::net::{
    ConnOptions, Connection, Engine, LISTEN_BACKLOG, SlowConsumer, Socket, WriteFlow, bind_listener,
};
use crate::sync::{Arc, Ordering};
use std::cell::Cell;
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
        framing: options.framing(),
        write_limit: options.write_limit,
        drop_when_high: options.slow_consumer == SlowConsumer::Drop,
        link: Some(link),
        system,
    }) else {
        return;
    };
    let sock = SockIdent::of(id);
    let table = net.table();
    // A TLS or WebSocket connection is announced once its handshakes have succeeded; one
    // that never opens ends without a word to the owner.
    let opens_later = options.opens_later();
    let opened = Rc::new(Cell::new(!opens_later));
    let (on_packet, on_end) = (local.clone(), local.clone());
    let (on_flow, on_input_end, on_open) = (local.clone(), local.clone(), local.clone());
    let (opened_at_open, opened_at_end) = (opened.clone(), opened.clone());
    let bound = Connection::new(socket)
        .options(options)
        .on_open(move |_, _| {
            opened_at_open.set(true);
            on_open.stage(sock, NetEvent::Connected { sock, peer });
        })
        .on_write_flow(move |_, _, flow| {
            let (above, ev) = match flow {
                WriteFlow::HighWater { queued } => (true, NetEvent::HighWater { sock, queued }),
                WriteFlow::LowWater { queued } => (false, NetEvent::LowWater { sock, queued }),
            };
            if let Some(mut st) = table.lock_current(id) {
                st.above_high = above;
            }
            on_flow.stage(sock, ev);
        })
        .on_input_end(move |_, _| {
            let close = CloseWhenHandled::new(sock);
            on_input_end.stage(sock, NetEvent::InputEnded { sock, close });
        })
        .bind(
            engine,
            move |_, _, packet| on_packet.stage(sock, NetEvent::Packet { sock, packet }),
            move |_, _, reason| {
                if !opened_at_end.get() {
                    table.release(id);
                    return;
                }
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
            if !opens_later {
                local.stage(sock, NetEvent::Connected { sock, peer });
            }
        }
        Err(_) => table.release(id),
    }
}

/// The accept callback of a listener: admits each connection under the system's limit and
/// the listener's own, and registers it on a poller for `owner`.
fn accept_into(
    inner: Arc<SystemInner>,
    net: Arc<NetShared>,
    listener: Arc<ListenerShared>,
    owner: Recipient<NetEvent>,
    options: ConnOptions,
) -> impl FnMut(&mut Engine, Socket) + 'static {
    let listener_poller = listener.poller();
    move |engine, socket| {
        let Some(ticket) = admit(&inner, &net) else {
            // At the system's limit (not shutting down): the socket closes now; count it.
            if !inner.is_shutting_down() {
                listener.count_refusal();
                net.accept_refusals.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        NetStats::count(&net.stats.accepted);
        trace_event!(DEBUG, peer = %socket.peer_addr(), "accept");
        let ticket = ticket.with_listener(listener.ticket(engine));
        let target = net.pick_poller();
        let (owner, options) = (owner.clone(), options.clone());
        // Registered by the poller that will own it, on its thread.
        if target == listener_poller {
            register_here(engine, socket, ticket, owner, options);
        } else {
            let _ = net.on_poller(target, move |engine| {
                register_here(engine, socket, ticket, owner, options)
            });
        }
    }
}

impl ListenerLink for NetShared {
    fn post(&self, poller: usize, f: Box<dyn FnOnce(&mut Engine) + Send>) {
        // Fails only if the eventfd cannot be written; the closure stays queued then.
        let _ = self.on_poller(poller, f);
    }

    fn forget(&self, listener: &Arc<ListenerShared>) {
        self.listeners
            .lock()
            .unwrap()
            .retain(|l| !Arc::ptr_eq(l, listener));
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
        // A listener whose handle nobody keeps: it listens until the shutdown.
        self.open_listener(system, addr, owner, options, None)
            .map(|handle| handle.local_addr())
    }

    fn open_listener(
        self: Arc<Self>,
        system: &Arc<SystemInner>,
        addr: SocketAddr,
        owner: Recipient<NetEvent>,
        options: ConnOptions,
        max_connections: Option<usize>,
    ) -> io::Result<ListenerHandle> {
        let net = self;
        let (fd, bound) = bind_listener(&addr, LISTEN_BACKLOG)?;
        let poller = net.pick_poller();
        let link: Arc<dyn ListenerLink> = net.clone();
        let shared = Arc::new(ListenerShared::new(
            bound,
            poller,
            Arc::downgrade(&link),
            max_connections,
        ));
        net.listeners.lock().unwrap().push(shared.clone());
        let (inner, listener, net2) = (system.clone(), shared.clone(), net.clone());
        let posted = net.on_poller(poller, move |engine| {
            // Closed (by its handle or the shutdown) before it got here: the socket just
            // closes.
            if listener.is_closed() {
                return;
            }
            let on_accept = accept_into(inner, net2.clone(), listener.clone(), owner, options);
            let Ok(id) = engine.listen_on(fd, on_accept) else {
                listener.close(&*net2);
                net2.forget(&listener);
                return;
            };
            listener.registered(id);
            let (counted, net) = (listener.clone(), net2.clone());
            engine.on_accept_pause(id, move |starts| {
                counted.backing_off(starts);
                if starts {
                    net.accept_pauses.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Paused by its handle before it got here.
            listener.sync(engine);
        });
        if let Err(error) = posted {
            shared.close(&*net);
            net.forget(&shared);
            return Err(error);
        }
        // A shutdown that began meanwhile may have missed it in the list.
        if system.is_shutting_down() && shared.close(&*net) {
            net.forget(&shared);
        }
        Ok(ListenerHandle::new(shared))
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
            if !system.is_shutting_down() {
                NetStats::count(&net.stats.dials_refused);
            }
            let error = io::Error::other("the system is shutting down or at its connection limit");
            return fail(&owner, error);
        };
        let poller = net.pick_poller();
        let owner2 = owner.clone();
        let stats = net.stats.clone();
        let posted = net.on_poller(poller, move |engine| {
            let owner_fail = owner2.clone();
            let started = engine.connect(addr, timeout, move |engine, res| match res {
                Ok(socket) => {
                    NetStats::count(&stats.connected);
                    trace_event!(DEBUG, peer = %addr, "connect");
                    register_here(engine, socket, ticket, owner2, options)
                }
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

    fn accept_pauses(&self) -> u64 {
        self.accept_pauses.load(Ordering::Relaxed)
    }

    fn accept_refusals(&self) -> u64 {
        self.accept_refusals.load(Ordering::Relaxed)
    }
}
