//! Listening sockets, as reactor sources: each readiness event accepts what is waiting (up to
//! a budget) and hands every connection to the listener's `on_accept`, on the engine's thread.

use super::reactor::{Engine, Key, Source};
use super::socket::Socket;
use crate::net::sys::{self, Event, Interest};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// How many connections one readiness event of a listener accepts at most, so that a flood of
/// connections cannot starve the sockets already open.
const ACCEPTS_PER_EVENT: usize = 256;
/// The listen backlog: large enough for a burst of a thousand clients connecting at once.
pub const LISTEN_BACKLOG: i32 = 4096;
/// The first pause of a listener whose `accept` failed for lack of resources (descriptors,
/// buffers, memory); each pause in a row doubles it, up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause of a listener that keeps running out of resources.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener registered with [`Engine::listen`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ListenerId(Key);

type OnAccept = Box<dyn FnMut(&mut Engine, Socket)>;
type OnPause = Box<dyn FnMut(bool)>;

struct Listener {
    fd: OwnedFd,
    /// Taken out while it runs, so that it can use the engine (even close this listener).
    on_accept: Option<OnAccept>,
    /// The pause in force (or last in force, while accepts keep failing); `None` once an
    /// accept has succeeded.
    backoff: Option<Duration>,
    /// How many times it paused for lack of resources.
    pauses: u64,
    /// Held by its owner ([`Engine::pause_listener`]): out of epoll until resumed.
    held: bool,
    /// A back-off is in force: out of epoll until its timer fires.
    waiting: bool,
    /// Told of each back-off as it starts (`true`) and ends (`false`): the runtime counts
    /// them where any thread can read them.
    on_pause: Option<OnPause>,
}

impl Source for Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn ready(engine: &mut Engine, key: Key, _: Event) {
        accept_some(engine, key);
    }
    /// A pause is over: listen again (the connections waited in the backlog).
    fn timer(engine: &mut Engine, key: Key) {
        if let Some(l) = engine.source_mut::<Listener>(key) {
            l.waiting = false;
            if let Some(hook) = &mut l.on_pause {
                hook(false);
            }
            // A held listener stays out until it is resumed.
            if !l.held {
                engine.set_interest(key, Interest::READ);
            }
        }
    }
}

impl Engine {
    /// Listens on `addr` (port 0 picks a free port: see [`Engine::listener_addr`]) and calls
    /// `on_accept` on this thread with each connected socket.
    ///
    /// # Errors
    /// The OS error of creating, binding or listening (for example `AddrInUse`).
    pub fn listen(
        &mut self,
        addr: SocketAddr,
        on_accept: impl FnMut(&mut Engine, Socket) + 'static,
    ) -> io::Result<ListenerId> {
        let fd = sys::listen_tcp(&addr, LISTEN_BACKLOG)?;
        self.listen_on(fd, on_accept)
    }

    /// Registers an already listening socket (made on another thread) with its callback.
    pub(crate) fn listen_on(
        &mut self,
        fd: OwnedFd,
        on_accept: impl FnMut(&mut Engine, Socket) + 'static,
    ) -> io::Result<ListenerId> {
        let listener = Listener {
            fd,
            on_accept: Some(Box::new(on_accept)),
            backoff: None,
            pauses: 0,
            held: false,
            waiting: false,
            on_pause: None,
        };
        self.register(listener, Interest::READ).map(ListenerId)
    }

    /// The address a listener is bound to.
    ///
    /// # Errors
    /// `NotConnected` for an unknown listener, or the OS error.
    pub fn listener_addr(&mut self, id: ListenerId) -> io::Result<SocketAddr> {
        match self.source_mut::<Listener>(id.0) {
            Some(l) => sys::local_addr(l.fd.as_fd()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// How many times a listener stopped accepting for a while because `accept` failed for
    /// lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): instead of being told of
    /// the waiting connection again at once (a busy loop while descriptors are short), it
    /// leaves epoll for [`ACCEPT_BACKOFF_MIN`], doubling up to [`ACCEPT_BACKOFF_MAX`] while it
    /// keeps failing; the connections wait in the backlog meanwhile. `None` for an unknown
    /// listener.
    pub fn accept_pauses(&mut self, id: ListenerId) -> Option<u64> {
        self.source_mut::<Listener>(id.0).map(|l| l.pauses)
    }

    /// Stops accepting on a listener until [`Engine::resume_listener`]: its socket leaves
    /// epoll, and new connections wait in the kernel's backlog (none is accepted and
    /// dropped). A listener pauses at once, even inside its own `on_accept` (no further
    /// connection of that event is accepted). Returns false for an unknown listener.
    pub fn pause_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.source_mut::<Listener>(id.0) else {
            return false;
        };
        l.held = true;
        self.set_interest(id.0, Interest::NONE);
        true
    }

    /// Accepts again on a listener paused by [`Engine::pause_listener`] (at once, or when a
    /// back-off for lack of resources in force ends). Returns false for an unknown listener.
    pub fn resume_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.source_mut::<Listener>(id.0) else {
            return false;
        };
        l.held = false;
        if !l.waiting {
            self.set_interest(id.0, Interest::READ);
        }
        true
    }

    /// Whether a listener is paused by [`Engine::pause_listener`]; `None` for an unknown
    /// listener.
    pub fn is_listener_paused(&mut self, id: ListenerId) -> Option<bool> {
        self.source_mut::<Listener>(id.0).map(|l| l.held)
    }

    /// Calls `f(true)` each time the listener starts a back-off for lack of resources (see
    /// [`Engine::accept_pauses`]) and `f(false)` when it ends, on this thread. Replaces an
    /// earlier hook.
    pub(crate) fn on_accept_pause(&mut self, id: ListenerId, f: impl FnMut(bool) + 'static) {
        if let Some(l) = self.source_mut::<Listener>(id.0) {
            l.on_pause = Some(Box::new(f));
        }
    }

    /// Stops listening and closes the listening socket. Unknown ids are ignored.
    pub fn close_listener(&mut self, id: ListenerId) {
        if self.source_mut::<Listener>(id.0).is_some() {
            drop(self.deregister(id.0));
        }
    }
}

/// Accepts what is waiting, up to the budget of one event.
fn accept_some(engine: &mut Engine, key: Key) {
    for _ in 0..ACCEPTS_PER_EVENT {
        let Some(l) = engine.source_mut::<Listener>(key) else {
            return;
        };
        // Held or backing off: an event collected before it left epoll is stale.
        if l.held || l.waiting {
            return;
        }
        let accepted = match sys::accept(l.fd.as_fd()) {
            Ok(Some((fd, peer))) => {
                l.backoff = None;
                Socket::new(fd, peer)
            }
            Ok(None) => return,
            Err(e) if sys::is_out_of_resources(&e) => {
                // The connection stays in the backlog, and level-triggered epoll would report
                // it again at once: pause instead, and retry after the back-off.
                let pause = l
                    .backoff
                    .map_or(ACCEPT_BACKOFF_MIN, |b| (b * 2).min(ACCEPT_BACKOFF_MAX));
                l.backoff = Some(pause);
                l.pauses += 1;
                l.waiting = true;
                if let Some(hook) = &mut l.on_pause {
                    hook(true);
                }
                engine.set_interest(key, Interest::NONE);
                let at = engine.now() + pause;
                engine.add_timer(key, at);
                return;
            }
            // A connection that failed before it was accepted (aborted, refused by a
            // filter): take the next one.
            Err(_) => continue,
        };
        let Some(mut cb) = l.on_accept.take() else {
            return;
        };
        cb(engine, accepted);
        match engine.source_mut::<Listener>(key) {
            Some(l) => {
                l.on_accept = Some(cb);
                // Paused by its callback (a connection limit reached): stop here.
                if l.held {
                    return;
                }
            }
            None => return,
        }
    }
}
