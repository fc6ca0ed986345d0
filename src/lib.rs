//! # kendynet
//!
//! An actor-model message framework with its own epoll network layer, for stateful servers:
//! game servers, chat servers and message-processing services.
//!
//! It offers three layers; each builds on the one before and each can be used on its own.
//!
//! 1. **Completion API** ([`net::Engine`]): a single-threaded, IOCP-like engine over epoll.
//!    Listen, connect with a timeout, bind a socket with a completion callback, and issue
//!    `recv`/`send` requests that either complete at once or later through the callback.
//! 2. **Framed connections** ([`net::Connection`], [`WPacket`], [`RPacket`]): length-framed
//!    packets on shared, reference-counted buffers. Cutting a packet out of the receive buffer,
//!    forwarding it and broadcasting it copy nothing.
//! 3. **Actor runtime** ([`System`]): actors scheduled on a work-stealing pool of workers, each
//!    worker also polling its own share of the sockets. The network layer delivers
//!    [`NetEvent`]s (connected, packet, disconnected) into actor mailboxes, and a socket handle,
//!    [`SockIdent`], is itself an actor reference: sending a packet to it is `asyn_send`.
//!
//! ## Wire format
//!
//! A packet is a 4-byte little-endian `u32` payload length followed by that many bytes. Typed
//! fields are little-endian without padding; strings carry a trailing NUL on the wire. This is
//! the format of the C framework that kendynet reimagines, so the two interoperate.
//!
//! ## Deterministic tests
//!
//! With the cargo feature `testkit` (off by default), `kendynet::testkit` runs the same actors
//! on a seeded, single-threaded scheduler with a manual clock and virtual sockets whose faults
//! (latency, split reads, resets, half-closes, readers that stop, refusing listeners) are
//! drawn from the seed; a failing seed replays exactly.
//!
//! ## Layout
//!
//! Dependencies point one way: `sync` (the switch between std and loom) and `net::sys` (every
//! libc call) at the bottom; `mailbox` and `net` on them; `actor` on `mailbox`, knowing
//! nothing of sockets; [`runtime`] on top, the only module that names both `net` and
//! `actor`; and `testkit` (with its feature) above it, standing in for the runtime's pollers
//! and workers.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[macro_use]
mod trace;

pub(crate) mod sync;

pub mod actor;
pub mod error;
pub(crate) mod mailbox;
pub mod net;
pub mod runtime;
#[cfg(all(feature = "testkit", not(loom)))]
pub mod testkit;

pub use actor::{
    Actor, ActorId, Addr, AskError, AskFuture, AskTarget, Context, DEFAULT_STALL_THRESHOLD,
    DroppedMessages, Group, GroupEvent, HandlerTime, MAX_ASK_DEADLINE, Pool, PoolRouting,
    Recipient, RegistryError, ReplyTo, RestartPolicy, SpawnOptions, Stall, StopReason, Strategy,
    Supervisor, SupervisorRef, SupervisorSpec, SystemHandle, TimerHandle,
};
pub use error::{SendError, TrySendError};
pub use net::packet::{PacketError, RPacket, WPacket};
#[cfg(not(loom))]
pub use net::signal;
#[cfg(feature = "tls")]
pub use net::tls;
#[cfg(feature = "websocket")]
pub use net::ws;
pub use net::{ConnOptions, DisconnectReason};
pub use runtime::{
    Builder, CloseWhenHandled, ClosedSockets, ListenOptions, ListenerHandle, Metrics, NetEvent,
    NetMsg, ShutdownReport, SockError, SockGroup, SockGroupStats, SockIdent, System,
};

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
