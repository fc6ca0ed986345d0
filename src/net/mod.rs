//! The network layers: the epoll completion engine (layer 1) and framed connections (layer 2).
//!
//! Both are single-threaded: an [`Engine`] and everything registered with it belong to the
//! thread that runs it. The actor runtime (layer 3) runs one engine per worker thread.

pub(crate) mod sys;

mod conn;
mod engine;
pub mod packet;

pub use conn::{
    ConnId, ConnOptions, Connection, DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_LIMIT, DisconnectReason,
    OnDisconnect, OnPacket,
};
pub use engine::{
    Completion, Engine, EngineHandle, IoKind, IoRequest, LISTEN_BACKLOG, ListenerId,
    OnClearPending, OnIoFinish, RequestError, Socket, SocketId, Submitted,
};
pub use packet::{DEFAULT_MAX_PACKET_LEN, HEADER_LEN};
