//! Shutdown signals through a `signalfd`: SIGINT and SIGTERM blocked in the calling thread
//! (and so in every thread it starts afterwards) and read from a descriptor instead of
//! interrupting whatever thread the kernel picks.

use super::{retry_eintr, syscall};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The numbers of the shutdown signals.
pub(crate) const SIGINT: i32 = libc::SIGINT;
pub(crate) const SIGTERM: i32 = libc::SIGTERM;

/// A signalfd for SIGINT and SIGTERM, which are blocked in the thread that made it.
#[derive(Debug)]
pub(crate) struct SignalFd {
    fd: OwnedFd,
}

fn shutdown_set() -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    syscall!(sigemptyset(set.as_mut_ptr()))?;
    syscall!(sigaddset(set.as_mut_ptr(), libc::SIGINT))?;
    syscall!(sigaddset(set.as_mut_ptr(), libc::SIGTERM))?;
    // SAFETY: sigemptyset initialised the set (it returned 0).
    Ok(unsafe { set.assume_init() })
}

impl SignalFd {
    /// Blocks SIGINT and SIGTERM in this thread and opens a non-blocking signalfd for them.
    pub(crate) fn shutdown_signals() -> io::Result<SignalFd> {
        let set = shutdown_set()?;
        // SAFETY: `set` is an initialised signal set; a null old set is allowed.
        let res = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if res != 0 {
            return Err(io::Error::from_raw_os_error(res));
        }
        let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Waits up to `timeout` (`None`: without end) for a signal and takes it; returns its
    /// number, or `None` when the time is up.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<i32>> {
        let ms = timeout.map_or(-1, |t| {
            // Rounded up, so that a short wait does not become a busy poll.
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = retry_eintr(|| syscall!(poll(&mut pfd, 1, ms)))?;
        if ready == 0 {
            return Ok(None);
        }
        self.take()
    }

    /// Takes a pending signal without waiting.
    pub(crate) fn take(&self) -> io::Result<Option<i32>> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        match retry_eintr(|| {
            syscall!(read(
                self.fd.as_raw_fd(),
                info.as_mut_ptr().cast::<libc::c_void>(),
                size
            ))
        }) {
            Ok(n) if n as usize == size => {
                // SAFETY: the kernel filled the whole structure (`n` bytes of it).
                let info = unsafe { info.assume_init() };
                Ok(Some(info.ssi_signo as i32))
            }
            Ok(_) => Err(io::Error::other("short read from a signalfd")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Sends `signal` to this process (for tests and for passing a shutdown on).
pub(crate) fn raise_in_process(signal: i32) -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    syscall!(kill(pid, signal)).map(drop)
}
