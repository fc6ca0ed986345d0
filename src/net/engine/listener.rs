//! Listening sockets, as reactor sources: each readiness event accepts what is waiting (up to
//! a budget) and hands every connection to the listener's `on_accept`, on the engine's thread.

use super::reactor::{Engine, Key, Source};
use super::socket::Socket;
use crate::net::sys::{self, Event, Interest};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// How many connections one readiness event of a listener accepts at most, so that a flood of
/// connections cannot starve the sockets already open.
const ACCEPTS_PER_EVENT: usize = 256;
/// The listen backlog: large enough for a burst of a thousand clients connecting at once.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listener registered with [`Engine::listen`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ListenerId(Key);

type OnAccept = Box<dyn FnMut(&mut Engine, Socket)>;

struct Listener {
    fd: OwnedFd,
    /// Taken out while it runs, so that it can use the engine (even close this listener).
    on_accept: Option<OnAccept>,
}

impl Source for Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn ready(engine: &mut Engine, key: Key, _: Event) {
        accept_some(engine, key);
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
            Ok(Some((fd, peer))) => Socket::new(fd, peer),
            Ok(None) => return,
            // Out of descriptors and the like: the connection stays in the backlog and
            // level-triggered epoll reports it again; a later pass retries.
            Err(_) => return,
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
