//! Layer 1: the single-threaded completion engine.
//!
//! An [`Engine`] owns one epoll instance and everything registered with it. It is driven by
//! one thread through [`Engine::run`] or [`Engine::run_once`]; callbacks run on that thread
//! and receive `&mut Engine`, so they can issue further requests, bind accepted sockets or
//! close sockets directly. Other threads reach a running engine through an
//! [`EngineHandle`]: `wake` interrupts a blocking wait and `post` runs a closure on the
//! engine's thread.
//!
//! The module is built in two levels, and dependencies point down only:
//! - `reactor`: the core. Epoll, the wake-up eventfd, timers, posted closures, the table of
//!   registrations and the pass. It names no kind of socket: a kind implements [`Source`]
//!   (its descriptor and its handlers), registers, and finds its state again by [`Key`]
//!   through [`Engine::source_mut`] (see the reactor's docs for who owns what).
//! - The kinds of layer 1, each a source in a file of its own, each adding its public
//!   methods to [`Engine`]: `listener` (listen, accept), `connector` (connect with a
//!   timeout), `bound` (bound sockets: the IOCP-like requests `recv`, `send`, `post_recv`,
//!   `post_send`, `close`); and `socket`, the connected [`Socket`] they hand around.
//!
//! Layer 2 ([`crate::net::Connection`]) is one more kind of source, outside this module, using
//! only the registration API above.

mod bound;
mod connector;
mod listener;
mod reactor;
mod socket;

pub use bound::{
    Completion, IoKind, IoRequest, OnClearPending, OnIoFinish, RequestError, SocketId, Submitted,
};
pub use listener::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, LISTEN_BACKLOG, ListenerId};
pub use reactor::{Engine, EngineHandle};
pub(crate) use reactor::{Key, Source};
pub use socket::Socket;
