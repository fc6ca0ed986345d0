//! Layer 1, the completion engine, over real loopback sockets.
//!
//! Most tests drive one engine on the test thread and talk to it through a blocking std
//! client; the cross-thread tests (`wake`, `post`) run the engine on its own thread. Every
//! wait is bounded (see `support`).

mod support;

use kendynet::net::{Completion, Engine, IoKind, IoRequest, Socket, SocketId, Submitted};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use support::engine::{EngineThread, run_until};
use support::wire::{client, close_with_reset, expect_closed};
use support::{WAIT, any_port, recv};

/// A request that finished through `on_io_finish`, as recorded by the tests.
#[derive(Debug)]
struct Done {
    socket: SocketId,
    kind: IoKind,
    token: u64,
    result: Result<usize, io::ErrorKind>,
    /// For a receive: the bytes received; for a send: empty.
    data: Vec<u8>,
    /// The request's buffers as handed back.
    bufs: Vec<Vec<u8>>,
}

type DoneLog = Rc<RefCell<Vec<Done>>>;
type ClearLog = Rc<RefCell<Vec<(SocketId, IoKind, u64)>>>;

/// An `on_io_finish` that records every completion.
fn recording(log: &DoneLog) -> impl FnMut(&mut Engine, Completion) + 'static {
    let log = log.clone();
    move |_, c: Completion| {
        let data = match (&c.kind, &c.result) {
            (IoKind::Recv, Ok(n)) => c.request.received(*n),
            _ => Vec::new(),
        };
        log.borrow_mut().push(Done {
            socket: c.socket,
            kind: c.kind,
            token: c.request.token,
            result: c.result.map_err(|e| e.kind()),
            data,
            bufs: c.request.bufs().to_vec(),
        });
    }
}

/// An `on_clear_pending` that records every request it is handed.
fn clearing(log: &ClearLog) -> impl FnMut(SocketId, IoKind, IoRequest) + 'static {
    let log = log.clone();
    move |id, kind, req| log.borrow_mut().push((id, kind, req.token))
}

/// One accepted socket bound with recording callbacks, and its std client.
struct Bound {
    id: SocketId,
    peer: TcpStream,
    done: DoneLog,
    cleared: ClearLog,
}

/// A listener whose accepted sockets are bound with recording callbacks.
struct Acceptor {
    id: kendynet::net::ListenerId,
    addr: SocketAddr,
    slot: Rc<RefCell<Option<SocketId>>>,
    done: DoneLog,
    cleared: ClearLog,
}

impl Acceptor {
    fn new(engine: &mut Engine) -> Acceptor {
        let done = DoneLog::default();
        let cleared = ClearLog::default();
        let slot: Rc<RefCell<Option<SocketId>>> = Rc::default();
        let (d, c, s) = (done.clone(), cleared.clone(), slot.clone());
        let id = engine
            .listen(any_port(), move |engine, socket| {
                let id = engine
                    .bind(socket, recording(&d), clearing(&c))
                    .expect("bind");
                *s.borrow_mut() = Some(id);
            })
            .expect("listen");
        let addr = engine.listener_addr(id).expect("listener_addr");
        Acceptor {
            id,
            addr,
            slot,
            done,
            cleared,
        }
    }

    /// Connects a std client and waits until the engine has bound the accepted socket.
    fn accept(&self, engine: &mut Engine) -> Bound {
        let peer = client(self.addr);
        run_until(engine, "the accepted socket", |_| {
            self.slot.borrow().is_some()
        });
        Bound {
            id: self.slot.borrow_mut().take().unwrap(),
            peer,
            done: self.done.clone(),
            cleared: self.cleared.clone(),
        }
    }
}

/// Listens, connects a std client, binds the accepted socket with recording callbacks and
/// stops listening.
fn accept_one(engine: &mut Engine) -> Bound {
    let acceptor = Acceptor::new(engine);
    let bound = acceptor.accept(engine);
    engine.close_listener(acceptor.id);
    bound
}

/// Connects with the engine and waits for the outcome of `on_connect`.
fn connect(engine: &mut Engine, addr: SocketAddr, timeout: Duration) -> io::Result<Socket> {
    let outcome: Rc<RefCell<Option<io::Result<Socket>>>> = Rc::default();
    let o = outcome.clone();
    engine
        .connect(addr, timeout, move |_, r| {
            assert!(o.borrow().is_none(), "on_connect called twice");
            *o.borrow_mut() = Some(r);
        })
        .expect("connect could not start");
    run_until(engine, "on_connect", |_| outcome.borrow().is_some());
    let r = outcome.borrow_mut().take().unwrap();
    // Whatever happened, it happens once: a late timer must not call back again.
    engine.run_once(Some(Duration::ZERO)).unwrap();
    r
}

/// An echo `on_io_finish`: sends back what arrived and receives again.
fn echo(engine: &mut Engine, c: Completion) {
    match (c.kind, c.result) {
        (IoKind::Recv, Ok(n)) => {
            let data = c.request.received(n);
            match engine.send(c.socket, IoRequest::send_buffer(data)) {
                Ok(Submitted::Done(..) | Submitted::Pending) => {}
                Err(_) => return engine.close(c.socket),
            }
            let _ = engine.post_recv(c.socket, c.request);
        }
        (IoKind::Send, Ok(_)) => {}
        (_, Err(_)) => engine.close(c.socket),
    }
}

#[test]
fn listen_connect_bind_echo_round_trip() {
    let mut engine = Engine::new().unwrap();
    let listener = engine
        .listen(any_port(), |engine, socket| {
            let id = engine.bind(socket, echo, |_, _, _| {}).expect("bind");
            engine
                .post_recv(id, IoRequest::recv_buffer(64))
                .expect("post_recv");
        })
        .unwrap();
    let addr = engine.listener_addr(listener).unwrap();

    let socket = connect(&mut engine, addr, WAIT).expect("connect");
    assert_eq!(socket.peer_addr(), addr);
    assert!(socket.local_addr().unwrap().port() != 0);
    let done = DoneLog::default();
    let id = engine
        .bind(socket, recording(&done), |_, _, _| {})
        .expect("bind");
    assert_eq!(engine.peer_addr(id), Some(addr));

    let msg = b"hello, kendynet".to_vec();
    // A small write into an empty socket buffer completes at once.
    match engine.send(id, IoRequest::send_buffer(msg.clone())) {
        Ok(Submitted::Done(req, n)) => {
            assert_eq!(n, msg.len());
            assert_eq!(req.bufs()[0], msg);
        }
        other => panic!("expected the send to complete at once, got {other:?}"),
    }
    // Collect the echo, whatever way the bytes are cut.
    let mut echoed = Vec::new();
    engine
        .post_recv(id, IoRequest::recv_buffer(64).with_token(7))
        .unwrap();
    run_until(&mut engine, "the echo", |engine| {
        for d in done.borrow_mut().drain(..) {
            assert_eq!((d.socket, d.kind, d.token), (id, IoKind::Recv, 7));
            assert!(d.result.is_ok(), "recv failed: {:?}", d.result);
            echoed.extend_from_slice(&d.data);
            if echoed.len() < msg.len() {
                engine
                    .post_recv(id, IoRequest::recv_buffer(64).with_token(7))
                    .unwrap();
            }
        }
        echoed.len() >= msg.len()
    });
    assert_eq!(echoed, msg);
}

#[test]
fn recv_completes_at_once_when_data_is_waiting() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    // One write of 7 bytes is one segment on loopback: once its first byte has been received
    // (through the callback), the other six are waiting in the socket.
    b.peer.write_all(b"abcdefg").unwrap();
    engine.post_recv(b.id, IoRequest::recv_buffer(1)).unwrap();
    run_until(&mut engine, "the first byte", |_| {
        b.done.borrow().len() == 1
    });
    assert_eq!(b.done.borrow()[0].data, b"a");

    match engine.recv(b.id, IoRequest::recv_buffer(64).with_token(3)) {
        Ok(Submitted::Done(req, n)) => {
            assert_eq!(n, 6);
            assert_eq!(req.received(n), b"bcdefg");
            assert_eq!(req.token, 3, "the request is handed back as it was");
        }
        other => panic!("expected the recv to complete at once, got {other:?}"),
    }
    // Completed at once means no callback for it.
    engine.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        b.done.borrow().len(),
        1,
        "a recv that completed at once was also called back"
    );
}

#[test]
fn recv_without_data_is_pending_and_completes_through_on_io_finish() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    match engine.recv(b.id, IoRequest::recv_buffer(64).with_token(9)) {
        Ok(Submitted::Pending) => {}
        other => panic!("nothing was sent, yet recv returned {other:?}"),
    }
    engine.run_once(Some(Duration::from_millis(20))).unwrap();
    assert!(
        b.done.borrow().is_empty(),
        "completed before the peer wrote"
    );

    b.peer.write_all(b"xyz").unwrap();
    run_until(&mut engine, "the pending recv", |_| {
        !b.done.borrow().is_empty()
    });
    let done = b.done.borrow();
    assert_eq!(done.len(), 1);
    let d = &done[0];
    assert_eq!((d.socket, d.kind, d.token), (b.id, IoKind::Recv, 9));
    assert_eq!(d.result, Ok(3));
    assert_eq!(d.data, b"xyz");
}

#[test]
fn pending_recvs_complete_in_the_order_they_were_issued() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    for token in 1..=3 {
        engine
            .post_recv(b.id, IoRequest::recv_buffer(4).with_token(token))
            .unwrap();
    }
    b.peer.write_all(b"aaaabbbbcccc").unwrap();
    run_until(&mut engine, "three completions", |_| {
        b.done.borrow().len() == 3
    });
    let done = b.done.borrow();
    let got: Vec<(u64, &[u8])> = done.iter().map(|d| (d.token, &d.data[..])).collect();
    assert_eq!(
        got,
        [(1, &b"aaaa"[..]), (2, &b"bbbb"[..]), (3, &b"cccc"[..])]
    );
}

#[test]
fn vectored_recv_fills_buffers_in_order() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    let req = IoRequest::new(vec![vec![0; 3], vec![0; 4], vec![0; 10]]).with_token(5);
    engine.post_recv(b.id, req).unwrap();
    // One 11-byte write: one segment, so one read gets all of it.
    b.peer.write_all(b"hello world").unwrap();
    run_until(&mut engine, "the vectored recv", |_| {
        !b.done.borrow().is_empty()
    });
    let done = b.done.borrow();
    let d = &done[0];
    assert_eq!(d.result, Ok(11));
    assert_eq!(d.data, b"hello world");
    assert_eq!(d.bufs[0], b"hel");
    assert_eq!(d.bufs[1], b"lo w");
    assert_eq!(&d.bufs[2][..4], b"orld");
    assert_eq!(d.bufs[2].len(), 10, "buffers keep their length");
}

#[test]
fn vectored_send_writes_buffers_in_order() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    let req = IoRequest::new(vec![
        b"he".to_vec(),
        Vec::new(),
        b"llo ".to_vec(),
        b"world".to_vec(),
    ]);
    match engine.send(b.id, req) {
        Ok(Submitted::Done(_, n)) => assert_eq!(n, 11),
        other => panic!("expected the send to complete at once, got {other:?}"),
    }
    let mut got = [0u8; 11];
    b.peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello world");
}

#[test]
fn send_larger_than_the_socket_buffers_completes_later() {
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    // Far more than loopback socket buffers hold while nobody reads.
    const LEN: usize = 32 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    match engine.send(
        b.id,
        IoRequest::new(vec![data[..LEN / 2].to_vec(), data[LEN / 2..].to_vec()]).with_token(4),
    ) {
        Ok(Submitted::Pending) => {}
        other => panic!("32 MiB into an unread socket cannot complete at once: {other:?}"),
    }
    let mut peer = b.peer;
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; LEN];
        peer.read_exact(&mut got).map(|_| got)
    });
    run_until(&mut engine, "the send completion", |_| {
        !b.done.borrow().is_empty()
    });
    let d = b.done.borrow_mut().remove(0);
    assert_eq!((d.kind, d.token, d.result), (IoKind::Send, 4, Ok(LEN)));
    let got = reader.join().unwrap().expect("peer read");
    assert!(got == data, "the peer received different bytes");
}

#[test]
fn post_recv_and_post_send_only_queue() {
    let mut engine = Engine::new().unwrap();
    let mut b = accept_one(&mut engine);
    // Data is waiting before post_recv (seen through a first 1-byte receive), yet post_recv
    // must not complete it on the spot.
    b.peer.write_all(b"12345").unwrap();
    engine.post_recv(b.id, IoRequest::recv_buffer(1)).unwrap();
    run_until(&mut engine, "the first byte", |_| {
        b.done.borrow().len() == 1
    });
    b.done.borrow_mut().clear();

    engine
        .post_recv(b.id, IoRequest::recv_buffer(16).with_token(1))
        .unwrap();
    engine
        .post_send(b.id, IoRequest::send_buffer(b"out".to_vec()).with_token(2))
        .unwrap();
    assert!(
        b.done.borrow().is_empty(),
        "post_* completed inside the call"
    );
    // Nothing was written yet either: the peer has nothing to read.
    b.peer.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        b.peer.read(&mut buf).map_err(|e| e.kind()).unwrap_err(),
        io::ErrorKind::WouldBlock,
        "post_send wrote inside the call"
    );
    b.peer.set_nonblocking(false).unwrap();

    run_until(&mut engine, "both completions", |_| {
        b.done.borrow().len() == 2
    });
    let mut done = b.done.borrow_mut();
    done.sort_by_key(|d| d.token);
    assert_eq!(
        (done[0].kind, &done[0].data[..]),
        (IoKind::Recv, &b"2345"[..])
    );
    assert_eq!((done[1].kind, done[1].result), (IoKind::Send, Ok(3)));
    let mut got = [0u8; 3];
    b.peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"out");
}

#[test]
fn connect_refused_is_reported_through_the_callback() {
    // The local port of a live client connection is taken but nobody listens on it: a SYN to
    // it is answered with RST. Unlike a port that was just freed, nobody else can grab it.
    let listener = TcpListener::bind(any_port()).unwrap();
    let taken = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let target = taken.local_addr().unwrap();

    let mut engine = Engine::new().unwrap();
    let err =
        connect(&mut engine, target, WAIT).expect_err("connected to a port nobody listens on");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        engine.registrations(),
        0,
        "the failed connect left a registration"
    );
}

#[test]
fn connect_times_out_when_the_listener_never_answers() {
    use std::os::fd::AsRawFd;
    // A listener with an accept backlog of 0 holds one unaccepted connection; once that is
    // queued, Linux drops further SYNs (the client retransmits after 1 s), so a connect can
    // neither succeed nor be refused: it can only time out.
    let listener = TcpListener::bind(any_port()).unwrap();
    // SAFETY: the descriptor is a valid listening socket owned by `listener`; listen() again
    // only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    let full =
        (0..32).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => {
                    fillers.push(s);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => true,
                Err(e) => panic!("probe connect: {e}"),
            },
        );
    assert!(
        full,
        "could not fill the accept backlog (32 connections accepted)"
    );

    let mut engine = Engine::new().unwrap();
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = connect(&mut engine, addr, timeout).expect_err("connected past a full backlog");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(
        start.elapsed() >= timeout,
        "timed out early: {:?}",
        start.elapsed()
    );
    assert_eq!(
        engine.registrations(),
        0,
        "the timed-out connect left a registration"
    );
}

#[test]
fn peer_close_completes_pending_recvs_with_eof() {
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    for token in 1..=2 {
        engine
            .post_recv(b.id, IoRequest::recv_buffer(16).with_token(token))
            .unwrap();
    }
    drop(b.peer);
    run_until(&mut engine, "both recvs to fail", |_| {
        b.done.borrow().len() == 2
    });
    for (d, token) in b.done.borrow().iter().zip(1..) {
        assert_eq!((d.kind, d.token), (IoKind::Recv, token));
        assert_eq!(d.result, Err(io::ErrorKind::UnexpectedEof));
    }
    // A later recv reports it at once, handing the request back.
    let err = engine
        .recv(b.id, IoRequest::recv_buffer(16).with_token(8))
        .expect_err("recv after EOF");
    assert_eq!(err.error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(err.request.token, 8);
    engine.close(b.id);
    assert!(b.cleared.borrow().is_empty());
}

#[test]
fn peer_reset_completes_pending_recv_with_connection_reset() {
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    engine
        .post_recv(b.id, IoRequest::recv_buffer(16).with_token(1))
        .unwrap();
    match engine.send(b.id, IoRequest::send_buffer(b"unread".to_vec())) {
        Ok(Submitted::Done(..)) => {}
        other => panic!("small send: {other:?}"),
    }
    close_with_reset(b.peer);
    run_until(&mut engine, "the recv to fail", |_| {
        !b.done.borrow().is_empty()
    });
    let d = &b.done.borrow()[0];
    assert_eq!((d.kind, d.token), (IoKind::Recv, 1));
    assert_eq!(d.result, Err(io::ErrorKind::ConnectionReset));
}

#[test]
fn close_hands_each_pending_request_to_clear_pending_exactly_once() {
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    for token in [1, 2, 3] {
        engine
            .post_recv(b.id, IoRequest::recv_buffer(8).with_token(token))
            .unwrap();
    }
    for token in [11, 12] {
        engine
            .post_send(b.id, IoRequest::send_buffer(vec![1; 8]).with_token(token))
            .unwrap();
    }
    engine.close(b.id);
    engine.close(b.id); // a second close is a no-op
    engine.run_once(Some(Duration::from_millis(20))).unwrap();

    let mut cleared = b.cleared.borrow().clone();
    cleared.sort_by_key(|c| c.2);
    let expect: Vec<(SocketId, IoKind, u64)> = vec![
        (b.id, IoKind::Recv, 1),
        (b.id, IoKind::Recv, 2),
        (b.id, IoKind::Recv, 3),
        (b.id, IoKind::Send, 11),
        (b.id, IoKind::Send, 12),
    ];
    assert_eq!(cleared, expect);
    assert!(
        b.done.borrow().is_empty(),
        "a cleared request also completed"
    );
    assert_eq!(engine.registrations(), 0);
    // The socket is really closed: the peer sees the end of the stream.
    let mut peer = b.peer;
    expect_closed(&mut peer, "peer of a closed socket");
}

#[test]
fn operations_on_a_closed_socket_hand_the_request_back() {
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    engine.close(b.id);
    let check = |r: Result<(), kendynet::net::RequestError>, token: u64| {
        let e = r.expect_err("operation on a closed socket succeeded");
        assert_eq!(e.error.kind(), io::ErrorKind::NotConnected);
        assert_eq!(e.request.token, token);
        assert_eq!(e.request.bufs(), &[vec![7u8; 3]]);
    };
    let req = |token| IoRequest::new(vec![vec![7u8; 3]]).with_token(token);
    check(engine.recv(b.id, req(1)).map(drop), 1);
    check(engine.send(b.id, req(2)).map(drop), 2);
    check(engine.post_recv(b.id, req(3)), 3);
    check(engine.post_send(b.id, req(4)), 4);
    assert_eq!(engine.peer_addr(b.id), None);
    engine.close(b.id);
    assert!(b.cleared.borrow().is_empty() && b.done.borrow().is_empty());
}

/// The slab slot of an id, from its debug form `SocketId(<slot>v<generation>)`.
fn slot_of(id: SocketId) -> String {
    let s = format!("{id:?}");
    let inner = s
        .strip_prefix("SocketId(")
        .unwrap_or_else(|| panic!("unexpected debug form {s}"));
    inner.split('v').next().unwrap().to_owned()
}

#[test]
fn stale_socket_id_is_refused_after_its_slot_is_reused() {
    let mut engine = Engine::new().unwrap();
    let acceptor = Acceptor::new(&mut engine);
    let old = acceptor.accept(&mut engine);
    engine.close(old.id);
    let new = acceptor.accept(&mut engine);
    assert_eq!(
        slot_of(old.id),
        slot_of(new.id),
        "expected the new socket to reuse the old slot"
    );
    assert_ne!(old.id, new.id);

    let err = engine
        .post_recv(old.id, IoRequest::recv_buffer(8))
        .expect_err("a stale id reached the new socket");
    assert_eq!(err.error.kind(), io::ErrorKind::NotConnected);
    // Closing through the stale id must not close the new socket.
    engine.close(old.id);
    assert!(engine.peer_addr(new.id).is_some());
    let mut peer = new.peer;
    match engine.send(new.id, IoRequest::send_buffer(b"still here".to_vec())) {
        Ok(Submitted::Done(..)) => {}
        other => panic!("send on the new socket: {other:?}"),
    }
    let mut got = [0u8; 10];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
}

#[test]
fn idle_bound_socket_does_not_spin_after_peer_closes() {
    // Regression: an idle bound socket stayed registered with epoll, whose EPOLLHUP and
    // EPOLLRDHUP cannot be masked; once the peer closed, every wait returned at once.
    let mut engine = Engine::new().unwrap();
    let b = accept_one(&mut engine);
    drop(b.peer);
    let window = Duration::from_millis(200);
    let start = Instant::now();
    let mut passes = 0;
    while start.elapsed() < window {
        engine.run_once(Some(window)).unwrap();
        passes += 1;
    }
    assert!(
        passes < 20,
        "{passes} engine passes in {window:?}: busy loop"
    );
    // The socket still works: a recv now reports the end of the stream.
    engine
        .post_recv(b.id, IoRequest::recv_buffer(8).with_token(1))
        .unwrap();
    run_until(&mut engine, "the recv to fail", |_| {
        !b.done.borrow().is_empty()
    });
    assert_eq!(b.done.borrow()[0].result, Err(io::ErrorKind::UnexpectedEof));
}

/// Whether thread `tid` of this process is blocked in an epoll wait.
fn blocked_in_epoll_wait(tid: i64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let nr: i64 = s
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
    [
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
    ]
    .contains(&nr)
}

#[test]
fn wake_interrupts_a_blocked_run_once() {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut engine = Engine::new().unwrap();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as i64;
        handle_tx.send((engine.handle(), tid)).unwrap();
        let r = engine.run_once(None);
        let _ = done_tx.send(r.map_err(|e| e.kind()));
    });
    let (handle, tid) = recv(&handle_rx, "the engine handle");
    // Wake it once it is really blocked (if /proc cannot tell, wake anyway: a wake before
    // the wait must not be lost either).
    let deadline = Instant::now() + WAIT;
    while !blocked_in_epoll_wait(tid) && Instant::now() < deadline {
        thread::yield_now();
    }
    handle.wake().unwrap();
    let r = recv(&done_rx, "run_once(None) to return after wake");
    assert!(r.is_ok(), "run_once failed: {r:?}");
}

#[test]
fn wake_before_run_once_is_not_lost() {
    // Regression: a wake while the engine was awake was dropped, and the next blocking wait
    // never ended.
    let (handle_tx, handle_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut engine = Engine::new().unwrap();
        handle_tx.send(engine.handle()).unwrap();
        if go_rx.recv_timeout(WAIT).is_ok() {
            let _ = done_tx.send(engine.run_once(None).map_err(|e| e.kind()));
        }
    });
    let handle = recv(&handle_rx, "the engine handle");
    handle.wake().unwrap();
    go_tx.send(()).unwrap();
    let r = recv(&done_rx, "run_once(None) to honour the earlier wake");
    assert!(r.is_ok(), "run_once failed: {r:?}");
}

#[test]
fn handle_post_runs_the_closure_on_the_engine_thread() {
    let (engine_thread, engine_tid) = EngineThread::spawn(|_| thread::current().id());
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        engine_thread
            .handle()
            .post(move |engine| {
                let _ = tx.send((i, thread::current().id(), engine.registrations()));
            })
            .unwrap();
    }
    for i in 0..3 {
        let (n, tid, regs) = recv(&rx, "the posted closure");
        assert_eq!(n, i, "posted closures run in order");
        assert_eq!(tid, engine_tid, "ran on another thread");
        assert_eq!(regs, 0);
    }
    engine_thread.stop();
}

#[test]
fn engine_post_runs_at_the_end_of_the_pass() {
    let mut engine = Engine::new().unwrap();
    let ran = Rc::new(RefCell::new(Vec::new()));
    let r = ran.clone();
    engine.post(move |engine| {
        r.borrow_mut().push(1);
        // Work posted by posted work runs on the next pass, not in a loop within this one.
        let r2 = r.clone();
        engine.post(move |_| r2.borrow_mut().push(2));
    });
    assert!(ran.borrow().is_empty(), "post ran inside the call");
    // A pass with posted work does not block, even with no timeout.
    engine.run_once(None).unwrap();
    assert_eq!(*ran.borrow(), [1]);
    engine.run_once(None).unwrap();
    assert_eq!(*ran.borrow(), [1, 2]);
}
