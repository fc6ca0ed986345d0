//! Connects in progress, as reactor sources: a non-blocking connect waits for writability
//! (the kernel's answer) or for its timer (the timeout), whichever comes first; then the
//! source leaves the table and `on_connect` runs once, on the engine's thread.

use super::reactor::{Engine, Key, Source};
use super::socket::Socket;
use crate::net::sys::{self, Event, Interest};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

type OnConnect = Box<dyn FnOnce(&mut Engine, io::Result<Socket>)>;

struct Connector {
    fd: OwnedFd,
    peer: SocketAddr,
    on_connect: OnConnect,
}

impl Source for Connector {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Writable: the kernel has answered.
    fn ready(engine: &mut Engine, key: Key, _: Event) {
        finish(engine, key, None);
    }
    fn timer(engine: &mut Engine, key: Key) {
        finish(engine, key, Some(io::ErrorKind::TimedOut.into()));
    }
}

impl Engine {
    /// Starts connecting to `addr` without blocking. `on_connect` runs on this thread exactly
    /// once with the connected socket, or with the error: `ConnectionRefused`, `TimedOut` when
    /// `timeout` passes first, or another OS error.
    ///
    /// # Errors
    /// Only when the attempt cannot even start (for example, out of descriptors); the callback
    /// is not called then.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        on_connect: impl FnOnce(&mut Engine, io::Result<Socket>) + 'static,
    ) -> io::Result<()> {
        let (fd, connected) = match sys::connect_nonblocking(&addr) {
            Ok(r) => r,
            Err(e) => {
                // A refusal the kernel knows at once still goes through the callback, so the
                // caller has one place that handles it.
                self.post(move |engine| on_connect(engine, Err(e)));
                return Ok(());
            }
        };
        if connected {
            let socket = Socket::new(fd, addr);
            self.post(move |engine| on_connect(engine, Ok(socket)));
            return Ok(());
        }
        let connector = Connector {
            fd,
            peer: addr,
            on_connect: Box::new(on_connect),
        };
        let key = self.register(connector, Interest::WRITE)?;
        let deadline = Instant::now() + timeout;
        self.add_timer(key, deadline);
        Ok(())
    }
}

/// Ends the attempt (whichever of readiness and timeout comes second finds the key stale).
fn finish(engine: &mut Engine, key: Key, timed_out: Option<io::Error>) {
    let Some(connector) = engine
        .deregister(key)
        .and_then(|s| s.downcast::<Connector>().ok())
    else {
        return;
    };
    let Connector {
        fd,
        peer,
        on_connect,
    } = *connector;
    let result = match timed_out {
        Some(e) => Err(e),
        None => match sys::take_socket_error(fd.as_fd()) {
            Ok(None) => Ok(Socket::new(fd, peer)),
            Ok(Some(e)) | Err(e) => Err(e),
        },
    };
    on_connect(engine, result);
}
