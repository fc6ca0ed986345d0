//! eventfd: the cross-thread wake-up of an epoll loop.
//!
//! Under `--cfg loom` the eventfd is a loom-visible stand-in (a flag under a loom mutex and a
//! condition variable that a blocked [`Epoll::wait`](super::Epoll::wait) sleeps on), so that the
//! models see every wake-up and loom reports a lost one as a deadlock.

#[cfg(not(loom))]
use super::syscall;
use std::io;
#[cfg(not(loom))]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking eventfd counter.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

#[cfg(not(loom))]
impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds one to the counter, making the descriptor readable.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        let ptr = (&one as *const u64).cast::<libc::c_void>();
        match syscall!(write(self.fd.as_raw_fd(), ptr, 8)) {
            Ok(_) => Ok(()),
            // The counter is saturated: the reader has plenty of wake-ups pending already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Resets the counter to zero; a counter that is already zero is not an error.
    pub(crate) fn drain(&self) -> io::Result<()> {
        let mut value: u64 = 0;
        let ptr = (&mut value as *mut u64).cast::<libc::c_void>();
        match syscall!(read(self.fd.as_raw_fd(), ptr, 8)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The loom stand-in's shared state: whether a wake-up is pending.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct WakeState {
    pub(crate) pending: crate::sync::Mutex<bool>,
    pub(crate) cv: crate::sync::Condvar,
}

/// The loom stand-in for an eventfd (see the module docs).
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct EventFd {
    pub(crate) state: crate::sync::Arc<WakeState>,
}

#[cfg(loom)]
impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        Ok(EventFd {
            state: crate::sync::Arc::new(WakeState {
                pending: crate::sync::Mutex::new(false),
                cv: crate::sync::Condvar::new(),
            }),
        })
    }

    /// Makes the wake-up pending and wakes a waiter.
    pub(crate) fn notify(&self) -> io::Result<()> {
        *self.state.pending.lock().unwrap() = true;
        self.state.cv.notify_all();
        Ok(())
    }

    /// Clears the pending wake-up.
    pub(crate) fn drain(&self) -> io::Result<()> {
        *self.state.pending.lock().unwrap() = false;
        Ok(())
    }
}
