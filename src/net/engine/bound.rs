//! Bound sockets, as reactor sources: the completion API of layer 1.
//!
//! Requests follow the IOCP model of the C original. [`Engine::recv`] and [`Engine::send`]
//! try the operation at once: if it completes, the result is returned to the caller and no
//! callback runs; otherwise the request is queued and completes later through the socket's
//! `on_io_finish` callback. [`Engine::post_recv`] and [`Engine::post_send`] only queue.
//! Requests on one socket complete in the order they were issued, per direction. Closing a
//! socket hands every request still queued to its `on_clear_pending` callback, exactly once.
//! End of stream and socket errors complete requests with an error; nothing waits forever.
//!
//! A socket's queues and callbacks live in the engine's table; `on_io_finish` is taken out
//! while it runs, so that it can use the engine freely (issue requests, close this socket).
//! The socket is in epoll only while a request is queued (see `update_interest`).

use super::reactor::{Engine, Key, Source};
use super::socket::Socket;
use crate::net::sys::{self, Event, Interest};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A socket bound to an engine with [`Engine::bind`]. `Copy`; a stale id (the socket was
/// closed, even if its slot was reused since) is refused with `NotConnected`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SocketId(pub(crate) Key);

/// The direction of a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoKind {
    /// A receive: fills the request's buffers.
    Recv,
    /// A send: writes the request's buffers.
    Send,
}

/// A request: one or more buffers (vectored I/O) plus a token for the caller's own use.
///
/// For a receive, each buffer's length is the space to fill (for example `vec![0; 4096]`); the
/// completion says how many bytes arrived, filling the buffers in order. For a send, the
/// buffers hold the bytes to write; the request completes when all of them are written.
pub struct IoRequest {
    bufs: Vec<Vec<u8>>,
    /// Bytes already written (sends that completed partially).
    done: usize,
    /// The caller's own tag, returned untouched.
    pub token: u64,
}

impl IoRequest {
    /// A request over these buffers.
    pub fn new(bufs: Vec<Vec<u8>>) -> IoRequest {
        IoRequest {
            bufs,
            done: 0,
            token: 0,
        }
    }

    /// A receive request with one buffer of `capacity` bytes.
    pub fn recv_buffer(capacity: usize) -> IoRequest {
        IoRequest::new(vec![vec![0; capacity]])
    }

    /// A send request with one buffer.
    pub fn send_buffer(data: Vec<u8>) -> IoRequest {
        IoRequest::new(vec![data])
    }

    /// Sets the caller's tag.
    #[must_use]
    pub fn with_token(mut self, token: u64) -> IoRequest {
        self.token = token;
        self
    }

    /// The buffers.
    pub fn bufs(&self) -> &[Vec<u8>] {
        &self.bufs
    }

    /// The buffers, mutably (to refill a request for reuse).
    pub fn bufs_mut(&mut self) -> &mut Vec<Vec<u8>> {
        self.done = 0;
        &mut self.bufs
    }

    /// Takes the buffers back.
    pub fn into_bufs(self) -> Vec<Vec<u8>> {
        self.bufs
    }

    /// The total length of the buffers.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }

    /// Whether the buffers hold no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gathers the first `n` received bytes into one vector (a convenience for tests and
    /// simple protocols; vectored readers can use [`IoRequest::bufs`] directly).
    pub fn received(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        for b in &self.bufs {
            let take = (n - out.len()).min(b.len());
            out.extend_from_slice(&b[..take]);
            if out.len() == n {
                break;
            }
        }
        out
    }

    fn read_from(&mut self, fd: &OwnedFd) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .bufs
            .iter_mut()
            .filter(|b| !b.is_empty())
            .map(|b| IoSliceMut::new(b))
            .collect();
        if slices.is_empty() {
            return Ok(0);
        }
        sys::readv(fd.as_fd(), &mut slices)
    }

    /// Writes what is left; returns true when the whole request has been written.
    fn write_to(&mut self, fd: &OwnedFd) -> io::Result<bool> {
        loop {
            let mut skip = self.done;
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.bufs.len());
            for b in &self.bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                slices.push(IoSlice::new(&b[skip..]));
                skip = 0;
            }
            if slices.is_empty() {
                return Ok(true);
            }
            match sys::writev(fd.as_fd(), &slices) {
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

impl fmt::Debug for IoRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoRequest")
            .field("bufs", &self.bufs.len())
            .field("len", &self.len())
            .field("token", &self.token)
            .finish()
    }
}

/// A request that finished later, as handed to `on_io_finish`.
#[derive(Debug)]
pub struct Completion {
    /// The socket it was issued on.
    pub socket: SocketId,
    /// Receive or send.
    pub kind: IoKind,
    /// The request, handed back.
    pub request: IoRequest,
    /// Bytes transferred, or why it failed (`UnexpectedEof` when the peer closed).
    pub result: io::Result<usize>,
}

/// What [`Engine::recv`] and [`Engine::send`] did with a request.
#[derive(Debug)]
#[must_use = "a request that completed at once is handed back here, not to on_io_finish"]
pub enum Submitted {
    /// It completed at once: the request and the bytes transferred.
    Done(IoRequest, usize),
    /// It was queued and completes later through `on_io_finish`.
    Pending,
}

/// A request that could not be carried out, handed back with the reason.
#[derive(Debug)]
pub struct RequestError {
    /// The request, untouched (for a send: possibly partly written, see the error).
    pub request: IoRequest,
    /// Why: `NotConnected` for an unknown or closed socket, `UnexpectedEof` when the peer has
    /// closed, or the OS error.
    pub error: io::Error,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request failed: {}", self.error)
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The completion callback of a bound socket.
pub type OnIoFinish = Box<dyn FnMut(&mut Engine, Completion)>;
/// Receives each request still queued when its socket closes, exactly once.
pub type OnClearPending = Box<dyn FnMut(SocketId, IoKind, IoRequest)>;

/// A bound layer-1 socket: its descriptor, its queued requests and its callbacks.
struct BoundSocket {
    fd: OwnedFd,
    peer: SocketAddr,
    recvs: VecDeque<IoRequest>,
    sends: VecDeque<IoRequest>,
    on_io_finish: Option<OnIoFinish>,
    on_clear_pending: OnClearPending,
}

impl Source for BoundSocket {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Completes queued requests that the socket is ready for, one callback each.
    fn ready(engine: &mut Engine, key: Key, ev: Event) {
        let id = SocketId(key);
        if ev.readable() {
            complete_recvs(engine, id);
        }
        if ev.writable() {
            complete_sends(engine, id);
        }
        update_interest(engine, key);
    }
}

impl Engine {
    /// Binds a connected socket to this engine with its completion callbacks.
    ///
    /// # Errors
    /// The OS error of registering it with epoll; the socket is closed then.
    pub fn bind(
        &mut self,
        socket: Socket,
        on_io_finish: impl FnMut(&mut Engine, Completion) + 'static,
        on_clear_pending: impl FnMut(SocketId, IoKind, IoRequest) + 'static,
    ) -> io::Result<SocketId> {
        let Socket { fd, peer } = socket;
        let bound = BoundSocket {
            fd,
            peer,
            recvs: VecDeque::new(),
            sends: VecDeque::new(),
            on_io_finish: Some(Box::new(on_io_finish)),
            on_clear_pending: Box::new(on_clear_pending),
        };
        // An idle bound socket stays out of epoll until its first request (`update_interest`).
        self.register(bound, Interest::NONE).map(SocketId)
    }

    /// The peer address of a bound socket, or `None` if it is closed.
    pub fn peer_addr(&mut self, id: SocketId) -> Option<SocketAddr> {
        socket_mut(self, id.0).map(|s| s.peer)
    }

    /// Receives now if data is waiting and nothing is queued before this request; otherwise
    /// queues the request (see the module docs).
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` (unknown or closed socket),
    /// `UnexpectedEof` (the peer closed) or the OS error.
    pub fn recv(&mut self, id: SocketId, mut req: IoRequest) -> Result<Submitted, RequestError> {
        let Some(s) = socket_mut(self, id.0) else {
            return Err(not_connected(req));
        };
        if s.recvs.is_empty() {
            match req.read_from(&s.fd) {
                Ok(0) if !req.is_empty() => {
                    return Err(RequestError {
                        request: req,
                        error: eof(),
                    });
                }
                Ok(n) => return Ok(Submitted::Done(req, n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    return Err(RequestError {
                        request: req,
                        error,
                    });
                }
            }
        }
        queue(self, id, IoKind::Recv, req);
        Ok(Submitted::Pending)
    }

    /// Sends now as much as the socket takes if nothing is queued before this request; a
    /// request written whole completes at once, otherwise the rest is queued.
    ///
    /// # Errors
    /// As [`Engine::recv`]; `BrokenPipe` or `ConnectionReset` when the peer is gone.
    pub fn send(&mut self, id: SocketId, mut req: IoRequest) -> Result<Submitted, RequestError> {
        let Some(s) = socket_mut(self, id.0) else {
            return Err(not_connected(req));
        };
        if s.sends.is_empty() {
            match req.write_to(&s.fd) {
                Ok(true) => {
                    let n = req.done;
                    return Ok(Submitted::Done(req, n));
                }
                Ok(false) => {}
                Err(error) => {
                    return Err(RequestError {
                        request: req,
                        error,
                    });
                }
            }
        }
        queue(self, id, IoKind::Send, req);
        Ok(Submitted::Pending)
    }

    /// Queues a receive without trying it now; it completes through `on_io_finish`.
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` for an unknown or closed socket.
    pub fn post_recv(&mut self, id: SocketId, req: IoRequest) -> Result<(), RequestError> {
        if socket_mut(self, id.0).is_none() {
            return Err(not_connected(req));
        }
        queue(self, id, IoKind::Recv, req);
        Ok(())
    }

    /// Queues a send without trying it now; it completes through `on_io_finish`.
    ///
    /// # Errors
    /// The request is handed back with `NotConnected` for an unknown or closed socket.
    pub fn post_send(&mut self, id: SocketId, req: IoRequest) -> Result<(), RequestError> {
        if socket_mut(self, id.0).is_none() {
            return Err(not_connected(req));
        }
        queue(self, id, IoKind::Send, req);
        Ok(())
    }

    /// Closes a bound socket: every request still queued goes to `on_clear_pending` once, the
    /// descriptor closes, and the id becomes stale. Unknown or closed ids are ignored.
    pub fn close(&mut self, id: SocketId) {
        if socket_mut(self, id.0).is_none() {
            return;
        }
        let Some(mut s) = self
            .deregister(id.0)
            .and_then(|s| s.downcast::<BoundSocket>().ok())
        else {
            return;
        };
        for req in s.recvs.drain(..) {
            (s.on_clear_pending)(id, IoKind::Recv, req);
        }
        for req in s.sends.drain(..) {
            (s.on_clear_pending)(id, IoKind::Send, req);
        }
    }
}

fn socket_mut(engine: &mut Engine, key: Key) -> Option<&mut BoundSocket> {
    engine.source_mut::<BoundSocket>(key)
}

fn queue(engine: &mut Engine, id: SocketId, kind: IoKind, req: IoRequest) {
    let Some(s) = socket_mut(engine, id.0) else {
        return;
    };
    match kind {
        IoKind::Recv => s.recvs.push_back(req),
        IoKind::Send => s.sends.push_back(req),
    }
    update_interest(engine, id.0);
}

/// Polls for what the queued requests need, and not at all while none is queued: epoll
/// reports a hang-up whatever the interest, so an idle socket whose peer had closed would
/// otherwise wake every wait (fix: layer-1 tests,
/// `idle_bound_socket_does_not_spin_after_peer_closes`).
fn update_interest(engine: &mut Engine, key: Key) {
    let Some(s) = socket_mut(engine, key) else {
        return;
    };
    let want = Interest {
        read: !s.recvs.is_empty(),
        write: !s.sends.is_empty(),
    };
    engine.set_interest(key, want);
}

fn complete_recvs(engine: &mut Engine, id: SocketId) {
    loop {
        let Some(s) = socket_mut(engine, id.0) else {
            return;
        };
        let Some(mut req) = s.recvs.pop_front() else {
            return;
        };
        let result = match req.read_from(&s.fd) {
            Ok(0) if !req.is_empty() => Err(eof()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.recvs.push_front(req);
                return;
            }
            Err(e) => Err(e),
        };
        let stop = result.is_err();
        complete(
            engine,
            Completion {
                socket: id,
                kind: IoKind::Recv,
                request: req,
                result,
            },
        );
        if stop {
            // Every later receive would fail the same way: fail them now, in order.
            fail_all(engine, id, IoKind::Recv);
            return;
        }
    }
}

fn complete_sends(engine: &mut Engine, id: SocketId) {
    loop {
        let Some(s) = socket_mut(engine, id.0) else {
            return;
        };
        let Some(mut req) = s.sends.pop_front() else {
            return;
        };
        let result = match req.write_to(&s.fd) {
            Ok(true) => Ok(req.done),
            Ok(false) => {
                s.sends.push_front(req);
                return;
            }
            Err(e) => Err(e),
        };
        let stop = result.is_err();
        complete(
            engine,
            Completion {
                socket: id,
                kind: IoKind::Send,
                request: req,
                result,
            },
        );
        if stop {
            fail_all(engine, id, IoKind::Send);
            return;
        }
    }
}

fn fail_all(engine: &mut Engine, id: SocketId, kind: IoKind) {
    loop {
        let Some(s) = socket_mut(engine, id.0) else {
            return;
        };
        let next = match kind {
            IoKind::Recv => s.recvs.pop_front(),
            IoKind::Send => s.sends.pop_front(),
        };
        let Some(request) = next else { return };
        let error = match kind {
            IoKind::Recv => eof(),
            IoKind::Send => io::Error::from(io::ErrorKind::BrokenPipe),
        };
        complete(
            engine,
            Completion {
                socket: id,
                kind,
                request,
                result: Err(error),
            },
        );
    }
}

/// Runs `on_io_finish` with the callback taken out of its socket, so that the callback
/// can use the engine freely (issue requests, close this socket).
fn complete(engine: &mut Engine, completion: Completion) {
    let key = completion.socket.0;
    let Some(s) = socket_mut(engine, key) else {
        return;
    };
    let Some(mut cb) = s.on_io_finish.take() else {
        return;
    };
    cb(engine, completion);
    if let Some(s) = socket_mut(engine, key) {
        s.on_io_finish = Some(cb);
    }
}

fn not_connected(request: IoRequest) -> RequestError {
    RequestError {
        request,
        error: io::ErrorKind::NotConnected.into(),
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")
}
