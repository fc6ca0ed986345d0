//! epoll, level-triggered.
//!
//! Readiness is a hint: events can be spurious, so every handler tolerates `WouldBlock`.
//! Level triggering means a handler that stops reading before `EAGAIN` is told again on the
//! next wait, which lets a reader stop after a short read without an extra syscall.
//!
//! Under `--cfg loom` the wait is a stand-in: real descriptors are polled without blocking,
//! and a wait that would block sleeps on the loom-visible eventfd stand-in instead, so the
//! models drive the real engine and loom sees (and checks) every sleep and wake-up. A bounded
//! wait yields to the model's other threads and then ends (the model has no clock), and
//! readiness of a real descriptor does not end a wait that is already blocked: models wake
//! the poller (a send or a close) after making a socket ready.

use super::syscall;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
    /// The loom stand-in of the registered eventfd, and its token.
    #[cfg(loom)]
    waker: std::cell::RefCell<Option<(crate::sync::Arc<super::eventfd::WakeState>, u64)>>,
}

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

impl Interest {
    pub(crate) const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub(crate) const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    pub(crate) const NONE: Interest = Interest {
        read: false,
        write: false,
    };

    fn bits(self) -> u32 {
        // RDHUP only with read interest: a connection that no longer reads (flushing before
        // a close) must not be woken again and again by a peer's half-close.
        let mut bits = 0;
        if self.read {
            bits |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if self.write {
            bits |= libc::EPOLLOUT as u32;
        }
        bits
    }
}

/// One readiness event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) token: u64,
    bits: u32,
}

impl Event {
    pub(crate) fn readable(&self) -> bool {
        self.bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }
    pub(crate) fn writable(&self) -> bool {
        self.bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }
}

/// A reusable buffer of events filled by [`Epoll::wait`].
pub(crate) struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    pub(crate) fn with_capacity(cap: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)],
            len: 0,
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn get(&self, i: usize) -> Event {
        let e = self.buf[..self.len][i];
        Event {
            token: e.u64,
            bits: e.events,
        }
    }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a fresh descriptor that nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            #[cfg(loom)]
            waker: std::cell::RefCell::new(None),
        })
    }

    /// Registers the engine's wake-up eventfd for reading under `token`.
    #[cfg(not(loom))]
    pub(crate) fn add_waker(&self, waker: &super::EventFd, token: u64) -> io::Result<()> {
        self.add(waker.raw(), Interest::READ, token)
    }

    /// Registers the loom stand-in of the engine's eventfd under `token`.
    #[cfg(loom)]
    pub(crate) fn add_waker(&self, waker: &super::EventFd, token: u64) -> io::Result<()> {
        *self.waker.borrow_mut() = Some((waker.state.clone(), token));
        Ok(())
    }

    fn ctl(&self, op: i32, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev)).map(drop)
    }

    pub(crate) fn add(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)
    }

    pub(crate) fn modify(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        syscall!(epoll_ctl(
            self.fd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut()
        ))
        .map(drop)
    }

    /// Waits for events; `None` waits without limit. Interrupted waits return no events.
    #[cfg(loom)]
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|d| !d.is_zero()) {
            // A bounded wait: let the model's other threads run first (they may be what this
            // one waits for, a peer closing a real socket say), then look without blocking.
            crate::sync::thread::yield_now();
        }
        self.wait_real(events, Some(Duration::ZERO))?;
        let waker = self.waker.borrow();
        let Some((state, token)) = waker.as_ref() else {
            return Ok(());
        };
        let mut pending = state.pending.lock().unwrap();
        if !*pending && events.len == 0 && timeout.is_none() {
            while !*pending {
                pending = state.cv.wait(pending).unwrap();
            }
        }
        if *pending && events.len < events.buf.len() {
            events.buf[events.len] = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: *token,
            };
            events.len += 1;
        }
        Ok(())
    }

    /// Waits for events; `None` waits without limit. Interrupted waits return no events.
    #[cfg(not(loom))]
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.wait_real(events, timeout)
    }

    fn wait_real(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Round up so that a 0.5 ms timeout does not become a busy loop of 0 ms waits.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        let cap = events.buf.len() as i32;
        let res = syscall!(epoll_wait(
            self.fd.as_raw_fd(),
            events.buf.as_mut_ptr(),
            cap,
            ms
        ));
        match res {
            Ok(n) => events.len = n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.len = 0,
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
