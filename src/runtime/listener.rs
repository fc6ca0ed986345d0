//! Listeners with a handle: [`SystemHandle::open_listener`](crate::SystemHandle::open_listener) returns a [`ListenerHandle`] that
//! pauses, resumes and closes its listener from any thread, caps the sockets it has open
//! ([`ListenOptions::max_connections`]) and reports the pressure it met.
//!
//! A listener lives on one poller (its engine holds the listening socket); the handle reaches
//! it by posting to that poller, so every change of its state happens on the poller's
//! thread, in the order the changes were asked for. Each socket a listener accepts carries a
//! [`ListenerTicket`] inside its admission ticket: while the listener has its limit of open
//! sockets it leaves epoll (the newcomers wait in the kernel's backlog; none is accepted and
//! dropped), and the ticket of the first socket freed posts it back in.
//!
//! Accept pressure is never a busy loop: an `accept` that fails for lack of resources
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pauses the listener with the engine's back-off
//! ([`ACCEPT_BACKOFF_MIN`](crate::net::ACCEPT_BACKOFF_MIN) doubling up to
//! [`ACCEPT_BACKOFF_MAX`](crate::net::ACCEPT_BACKOFF_MAX)), counted by
//! [`ListenerHandle::accept_pauses`] and
//! [`SystemHandle::accept_pauses`](crate::SystemHandle::accept_pauses).
//!
//! This file names no other part of the runtime: the pollers reach it, and it reaches them
//! back through a [`ListenerLink`] (the system's network state implements it).

use crate::net::{ConnOptions, Engine, ListenerId};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, OnceLock, Ordering, Weak};
use std::fmt;
use std::net::SocketAddr;

/// The default of [`ListenOptions::max_connections`]: no limit of the listener's own (only
/// the system's [`Builder::max_connections`](crate::Builder::max_connections) applies).
pub const DEFAULT_LISTENER_MAX_CONNECTIONS: Option<usize> = None;

/// How [`SystemHandle::open_listener`](crate::SystemHandle::open_listener) listens. Builder-style; every setting has a named
/// default.
///
/// ```
/// use kendynet::ListenOptions;
/// use kendynet::net::ConnOptions;
///
/// let options = ListenOptions::new()
///     .max_connections(1000)
///     .conn_options(ConnOptions::default());
/// assert_eq!(options.max_connections_limit(), Some(1000));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ListenOptions {
    pub(crate) conn: Option<ConnOptions>,
    pub(crate) max_connections: Option<usize>,
}

impl ListenOptions {
    /// The defaults: the system's default [`ConnOptions`] for every socket, and
    /// [`DEFAULT_LISTENER_MAX_CONNECTIONS`].
    pub fn new() -> ListenOptions {
        ListenOptions {
            conn: None,
            max_connections: DEFAULT_LISTENER_MAX_CONNECTIONS,
        }
    }

    /// The options of every socket the listener accepts (default: the system's, as
    /// [`SystemHandle::listen`](crate::SystemHandle::listen) uses).
    #[must_use]
    pub fn conn_options(mut self, options: ConnOptions) -> ListenOptions {
        self.conn = Some(options);
        self
    }

    /// At most `max` sockets accepted by this listener open at once (at least 1). While it
    /// has them, the listener stops accepting and new clients wait in the kernel's backlog;
    /// it accepts again as soon as one of its sockets is freed. The system's own limit
    /// applies as well.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> ListenOptions {
        self.max_connections = Some(max.max(1));
        self
    }

    /// The listener's own connection limit, if any.
    pub fn max_connections_limit(&self) -> Option<usize> {
        self.max_connections
    }
}

/// How a listener reaches the pollers of its system.
pub(crate) trait ListenerLink: Send + Sync {
    /// Runs `f` on poller `poller`'s thread, with its engine.
    fn post(&self, poller: usize, f: Box<dyn FnOnce(&mut Engine) + Send>);
    /// Drops a closed listener from the list the shutdown closes.
    fn forget(&self, listener: &Arc<ListenerShared>);
}

/// A listener's state, shared by its handles, the poller that holds it and the tickets of
/// its sockets.
pub(crate) struct ListenerShared {
    addr: SocketAddr,
    /// The poller whose engine holds the listening socket.
    poller: usize,
    link: Weak<dyn ListenerLink>,
    /// Set on the poller once the socket is registered there.
    id: OnceLock<ListenerId>,
    max: Option<usize>,
    closed: AtomicBool,
    /// Paused by a handle.
    paused: AtomicBool,
    /// Paused because it has `max` sockets open.
    limit_held: AtomicBool,
    /// Sockets it accepted that are open (tickets alive).
    open: AtomicUsize,
    /// What the poller last did: held it (by a handle or the limit), and whether a back-off
    /// for lack of resources is in force.
    applied_hold: AtomicBool,
    backing_off: AtomicBool,
    accept_pauses: AtomicU64,
    limit_pauses: AtomicU64,
    refusals: AtomicU64,
}

impl ListenerShared {
    pub(crate) fn new(
        addr: SocketAddr,
        poller: usize,
        link: Weak<dyn ListenerLink>,
        max: Option<usize>,
    ) -> ListenerShared {
        ListenerShared {
            addr,
            poller,
            link,
            id: OnceLock::new(),
            max,
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            limit_held: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            applied_hold: AtomicBool::new(true),
            backing_off: AtomicBool::new(false),
            accept_pauses: AtomicU64::new(0),
            limit_pauses: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        }
    }

    pub(crate) fn poller(&self) -> usize {
        self.poller
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// On the poller: the engine has registered the socket as `id`.
    pub(crate) fn registered(&self, id: ListenerId) {
        let _ = self.id.set(id);
    }

    /// On the poller: the engine started (`true`) or ended a back-off for lack of
    /// resources.
    pub(crate) fn backing_off(&self, starts: bool) {
        if starts {
            self.accept_pauses.fetch_add(1, Ordering::Relaxed);
        }
        self.backing_off.store(starts, Ordering::SeqCst);
    }

    /// On the poller: a connection was accepted and dropped at the system's limit.
    pub(crate) fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// On the poller: applies the state asked for (held by a handle or by the limit, or
    /// listening) to the engine. Every change posts one, so the last one posted sees the
    /// last state.
    pub(crate) fn sync(&self, engine: &mut Engine) {
        let Some(&id) = self.id.get() else {
            return;
        };
        if self.is_closed() {
            return;
        }
        let hold = self.paused.load(Ordering::SeqCst) || self.limit_held.load(Ordering::SeqCst);
        if hold {
            engine.pause_listener(id);
        } else {
            engine.resume_listener(id);
        }
        self.applied_hold.store(hold, Ordering::SeqCst);
    }

    /// Posts [`ListenerShared::sync`] to the listener's poller (nothing once the system is
    /// gone).
    fn post_sync(self: &Arc<Self>) {
        if let Some(link) = self.link.upgrade() {
            let me = self.clone();
            link.post(self.poller, Box::new(move |engine| me.sync(engine)));
        }
    }

    /// Closes the listener (once: later calls do nothing); returns whether this call did.
    pub(crate) fn close(self: &Arc<Self>, link: &dyn ListenerLink) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        let me = self.clone();
        // Posted after the registration (same poller, in order): the id is set by then,
        // unless the registration saw the flag and never registered.
        link.post(
            self.poller,
            Box::new(move |engine| {
                if let Some(&id) = me.id.get() {
                    engine.close_listener(id);
                }
            }),
        );
        true
    }

    /// On the poller, in the accept callback: the ticket of a socket just accepted. Pauses
    /// the listener (directly: this is its engine) if that socket reaches its limit.
    pub(crate) fn ticket(self: &Arc<Self>, engine: &mut Engine) -> ListenerTicket {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        let ticket = ListenerTicket {
            listener: self.clone(),
        };
        if let Some(max) = self.max
            && open >= max
        {
            self.limit_held.store(true, Ordering::SeqCst);
            // A ticket freed between the count above and the flag did not see the flag:
            // look again (the drop decrements first, then takes the flag).
            if self.open.load(Ordering::SeqCst) < max {
                self.limit_held.store(false, Ordering::SeqCst);
            } else {
                self.limit_pauses.fetch_add(1, Ordering::Relaxed);
            }
            self.sync(engine);
        }
        ticket
    }
}

/// A socket's place under its listener's connection limit: moved into the socket's
/// admission, returned (and the listener resumed if the limit held it) when the socket's
/// slot is freed or its set-up fails.
pub(crate) struct ListenerTicket {
    listener: Arc<ListenerShared>,
}

impl Drop for ListenerTicket {
    fn drop(&mut self) {
        let l = &self.listener;
        let open = l.open.fetch_sub(1, Ordering::SeqCst) - 1;
        if l.max.is_some_and(|max| open < max) && l.limit_held.swap(false, Ordering::SeqCst) {
            l.post_sync();
        }
    }
}

/// A listener opened by [`SystemHandle::open_listener`](crate::SystemHandle::open_listener). Cheap to clone; usable from any
/// thread; harmless once its system is gone (its changes then do nothing). Dropping every
/// handle does not close the listener: it listens until [`ListenerHandle::close`] or the
/// system's shutdown.
#[derive(Clone)]
pub struct ListenerHandle {
    shared: Arc<ListenerShared>,
}

impl ListenerHandle {
    pub(crate) fn new(shared: Arc<ListenerShared>) -> ListenerHandle {
        ListenerHandle { shared }
    }

    /// The address it is bound to (the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Stops accepting: the listening socket stays open, and new clients complete their
    /// handshake in the kernel and wait in its backlog (up to
    /// [`LISTEN_BACKLOG`](crate::net::LISTEN_BACKLOG)) until [`ListenerHandle::resume`].
    /// Takes effect on the listener's poller shortly after the call.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        self.shared.post_sync();
    }

    /// Accepts again after [`ListenerHandle::pause`] (unless its connection limit or a
    /// back-off for lack of resources still holds it; it accepts when they end).
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.post_sync();
    }

    /// Whether its poller is accepting on it right now: registered, and neither closed,
    /// paused (by [`ListenerHandle::pause`] or its connection limit) nor backing off for
    /// lack of resources. Changes of [`ListenerHandle::pause`] and
    /// [`ListenerHandle::resume`] show here once the poller has applied them.
    pub fn is_accepting(&self) -> bool {
        let s = &self.shared;
        !s.is_closed()
            && !s.applied_hold.load(Ordering::SeqCst)
            && !s.backing_off.load(Ordering::SeqCst)
    }

    /// Whether [`ListenerHandle::pause`] is in force (asked for; see
    /// [`ListenerHandle::is_accepting`] for when the poller has applied it).
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::SeqCst)
    }

    /// Stops listening and closes the listening socket (clients waiting in the backlog are
    /// reset; later connects are refused). Sockets it accepted stay open. Idempotent; the
    /// system's shutdown closes it too.
    pub fn close(&self) {
        let Some(link) = self.shared.link.upgrade() else {
            self.shared.closed.store(true, Ordering::SeqCst);
            return;
        };
        if self.shared.close(&*link) {
            link.forget(&self.shared);
        }
    }

    /// Whether it is closed (by [`ListenerHandle::close`] or the system's shutdown).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Sockets it accepted that are open (admitted and not yet freed).
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Its own connection limit ([`ListenOptions::max_connections`]), if any.
    pub fn max_connections(&self) -> Option<usize> {
        self.shared.max
    }

    /// How many times it stopped accepting for a while because `accept` failed for lack of
    /// resources (descriptors, buffers, memory); see
    /// [`Engine::accept_pauses`](crate::net::Engine::accept_pauses) for the back-off.
    pub fn accept_pauses(&self) -> u64 {
        self.shared.accept_pauses.load(Ordering::Relaxed)
    }

    /// How many times it stopped accepting because it had its
    /// [`ListenOptions::max_connections`] sockets open.
    pub fn limit_pauses(&self) -> u64 {
        self.shared.limit_pauses.load(Ordering::Relaxed)
    }

    /// Connections it accepted and closed at once because the system had its
    /// [`Builder::max_connections`](crate::Builder::max_connections) sockets open (counted
    /// system-wide by [`SystemHandle::accept_refusals`](crate::SystemHandle::accept_refusals)).
    pub fn limit_refusals(&self) -> u64 {
        self.shared.refusals.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerHandle")
            .field("local_addr", &self.shared.addr)
            .field("closed", &self.is_closed())
            .field("paused", &self.is_paused())
            .field("connections", &self.connections())
            .finish()
    }
}
