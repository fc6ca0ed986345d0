//! The network layers: the epoll completion engine (layer 1) and framed connections
//! (layer 2). This module knows nothing of actors; the runtime (layer 3) builds on it.
//!
//! Both are single-threaded: an [`Engine`] and everything registered with it belong to the
//! thread that runs it. The actor runtime runs one engine per worker thread.

pub(crate) mod sys;

mod conn;
mod engine;
pub(crate) mod framing;
pub mod packet;
#[cfg(not(loom))]
pub mod signal;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "websocket")]
pub mod ws;

pub use conn::{
    ConnId, ConnOptions, Connection, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_PACKET_TIMEOUT,
    DEFAULT_SEND_TIMEOUT, DEFAULT_SLOW_CONSUMER_GRACE, DEFAULT_WRITE_LIMIT, DisconnectReason,
    OnDisconnect, OnInputEnd, OnOpen, OnPacket, OnWriteFlow, SlowConsumer, WriteFlow,
};
pub(crate) use conn::{Offered, PAUSED_BY_CONSUMER, PAUSED_BY_USER};
pub use engine::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, Completion, Engine, EngineHandle, IoKind, IoRequest,
    LISTEN_BACKLOG, ListenerId, OnClearPending, OnIoFinish, RequestError, Socket, SocketId,
    Submitted,
};
pub use packet::{DEFAULT_MAX_PACKET_LEN, HEADER_LEN, RPacket, WPacket};

/// Raises this process's soft limit on open descriptors (`RLIMIT_NOFILE`) to its hard limit
/// and returns the new soft limit. A server or load client with a thousand connections needs
/// more than the usual 1024; raising the hard limit itself needs privileges (`ulimit -Hn`,
/// `LimitNOFILE=` in a systemd unit), so this is all an unprivileged process can do.
///
/// Call it once at the start of `main`. A failure need not be fatal: the process goes on with
/// the old limit, and accepts beyond it fail with `EMFILE`.
///
/// # Errors
/// The OS error of `getrlimit`/`setrlimit`.
///
/// # Example
/// ```
/// match kendynet::net::raise_fd_limit() {
///     Ok(limit) => println!("up to {limit} descriptors"),
///     Err(e) => eprintln!("cannot raise the descriptor limit: {e}"),
/// }
/// ```
pub fn raise_fd_limit() -> std::io::Result<u64> {
    sys::raise_fd_limit()
}

/// Creates a listening TCP socket on `addr` (on the calling thread, so that errors and the
/// bound address come back at once) for [`Engine::listen_on`] on an engine's thread.
pub(crate) fn bind_listener(
    addr: &std::net::SocketAddr,
    backlog: i32,
) -> std::io::Result<(std::os::fd::OwnedFd, std::net::SocketAddr)> {
    let fd = sys::listen_tcp(addr, backlog)?;
    let bound = sys::local_addr(std::os::fd::AsFd::as_fd(&fd))?;
    Ok((fd, bound))
}
