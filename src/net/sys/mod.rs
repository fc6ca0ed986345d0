//! The platform layer: every call into `libc` that the crate makes lives below this module.
//!
//! Contract for the rest of the crate:
//! - descriptors are held as [`OwnedFd`], so each is closed exactly once, when dropped;
//! - every call goes through [`syscall!`], which turns `-1` into `io::Error::last_os_error()`;
//! - sockets are created non-blocking and close-on-exec;
//! - `EINTR` is retried here, `EAGAIN` is returned as `io::ErrorKind::WouldBlock`.
//!
//! Only Linux is supported (epoll, eventfd, `accept4`).

#[cfg(not(target_os = "linux"))]
compile_error!("kendynet supports Linux only: it is built directly on epoll and eventfd");

mod epoll;
mod eventfd;
mod limits;
#[cfg(not(loom))]
mod signal;
mod socket;

pub(crate) use epoll::{Epoll, Event, Events, Interest};
pub(crate) use eventfd::EventFd;
pub(crate) use limits::raise_fd_limit;
#[cfg(not(loom))]
pub(crate) use signal::{SIGINT, SIGTERM, SignalFd, raise_in_process};
pub(crate) use socket::{
    MAX_IOV, accept, connect_nonblocking, is_out_of_resources, listen_tcp, local_addr, readv,
    recv_into, set_nodelay, shutdown_write, take_socket_error, writev,
};

/// Calls a libc function and turns a `-1` result into the OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every caller passes arguments that satisfy the libc contract of `$fn`
        // (valid descriptors it owns or borrows, pointers to live buffers of the stated length).
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Retries `f` while it fails with `EINTR`.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
