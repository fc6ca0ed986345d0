//! The network layers: the epoll completion engine (layer 1), framed connections (layer 2),
//! and the sockets of the actor runtime ([`SockIdent`], [`NetEvent`]).
//!
//! Both are single-threaded: an [`Engine`] and everything registered with it belong to the
//! thread that runs it. The actor runtime (layer 3) runs one engine per worker thread.

pub(crate) mod sys;

mod conn;
mod engine;
pub(crate) mod ident;
pub mod packet;
pub(crate) mod poller;

pub use conn::{
    ConnId, ConnOptions, Connection, DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_LIMIT, DisconnectReason,
    OnDisconnect, OnPacket,
};
pub use engine::{
    Completion, Engine, EngineHandle, IoKind, IoRequest, LISTEN_BACKLOG, ListenerId,
    OnClearPending, OnIoFinish, RequestError, Socket, SocketId, Submitted,
};
pub use ident::{SockError, SockIdent};
pub use packet::{DEFAULT_MAX_PACKET_LEN, HEADER_LEN};
pub use poller::NetEvent;

/// Raises this process's soft limit on open descriptors to its hard limit (a server with a
/// thousand connections needs more than the usual 1024) and returns the new limit.
///
/// # Errors
/// The OS error of `getrlimit`/`setrlimit`.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    sys::raise_fd_limit()
}
