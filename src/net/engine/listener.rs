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

struct Listener {
    fd: OwnedFd,
    /// Taken out while it runs, so that it can use the engine (even close this listener).
    on_accept: Option<OnAccept>,
    /// The pause in force (or last in force, while accepts keep failing); `None` once an
    /// accept has succeeded.
    backoff: Option<Duration>,
    /// How many times it paused for lack of resources.
    pauses: u64,
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
        if engine.source_mut::<Listener>(key).is_some() {
            engine.set_interest(key, Interest::READ);
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
            Some(l) => l.on_accept = Some(cb),
            None => return,
        }
    }
}
