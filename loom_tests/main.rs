//! Loom models that drive the code that runs: the real worker loop and scheduler, the real
//! pollers and their engines, the real socket table, mailbox and registry. Under `--cfg loom`
//! the crate takes every atomic, lock, thread and thread-local from loom (`src/sync/`), and
//! its epoll wait and eventfd are loom-visible stand-ins (`src/net/sys/`): real descriptors
//! are polled without blocking, and a wait that would block sleeps on the stand-in eventfd, so
//! a lost wake-up leaves a thread blocked for good, which loom reports as a deadlock.
//!
//! What loom cannot see: crossbeam-deque's and dashmap's own lock-free paths (the switch
//! replaces them with mutex-based stand-ins of the same API, so the models cover the crate's
//! use of them, not their insides), and the kernel's side of real sockets.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom
//! ```
#![cfg(loom)]

use kendynet::net::{Engine, EngineHandle};
use kendynet::{
    Actor, Addr, Context, NetEvent, SockIdent, SpawnOptions, System, TrySendError, WPacket,
};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::mpsc::{Receiver, Sender, channel};
use loom::thread;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

mod ask;
mod listener;
mod stop;
mod timers;

/// Models run with a small preemption bound unless the environment says otherwise.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    // Idle workers of a shutting-down system and the thread waiting for them look around in
    // bounded waits, which the model turns into yields: allow for the branches they take.
    builder.max_branches = 200_000;
    builder.check(f);
}

fn packet(payload: &[u8]) -> WPacket {
    let mut p = WPacket::new();
    p.write_raw(payload);
    p
}

fn system(workers: usize) -> System {
    System::builder()
        .workers(workers)
        .build()
        .expect("system starts")
}

/// Reports each message it handles, and its stop, to the model's thread.
struct Reporter {
    out: Sender<Seen>,
    stop_after: usize,
    handled: usize,
}

#[derive(Debug, PartialEq)]
enum Seen {
    Msg(u32),
    Stopped,
}

impl Actor for Reporter {
    type Msg = u32;
    fn handle(&mut self, msg: u32, ctx: &mut Context<Self>) {
        self.out.send(Seen::Msg(msg)).unwrap();
        self.handled += 1;
        if self.handled == self.stop_after {
            ctx.stop();
        }
    }
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.out.send(Seen::Stopped).unwrap();
    }
}

/// Forwards its first message to two reporters (filling the worker's LIFO slot and pushing
/// the first one to the stealable deque), then stops.
struct Fanout(Addr<Reporter>, Addr<Reporter>, Sender<Seen>);

impl Actor for Fanout {
    type Msg = u32;
    fn handle(&mut self, msg: u32, ctx: &mut Context<Self>) {
        self.0.send(msg).unwrap();
        self.1.send(msg + 1).unwrap();
        ctx.stop();
    }
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.2.send(Seen::Stopped).unwrap();
    }
}

/// Spawn, send from outside (the injector), park, wake, and a send from inside a handler
/// that leaves a task for another worker to steal: every message is handled exactly once and
/// no worker sleeps through work (a lost wake-up would leave the model's thread waiting for
/// a message that never comes: a deadlock).
#[test]
fn scheduler_runs_every_message_without_lost_wakeups() {
    model(|| {
        let sys = system(2);
        let (tx, rx) = channel();
        let a = sys.spawn(Reporter {
            out: tx.clone(),
            stop_after: 1,
            handled: 0,
        });
        let b = sys.spawn(Reporter {
            out: tx.clone(),
            stop_after: 1,
            handled: 0,
        });
        let fan = sys.spawn(Fanout(a, b, tx));
        fan.send(10).unwrap();
        let mut seen: Vec<Seen> = (0..5).map(|_| rx.recv().unwrap()).collect();
        seen.sort_by_key(|s| match s {
            Seen::Msg(m) => *m,
            Seen::Stopped => u32::MAX,
        });
        assert_eq!(
            seen,
            [
                Seen::Msg(10),
                Seen::Msg(11),
                Seen::Stopped,
                Seen::Stopped,
                Seen::Stopped
            ]
        );
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// A send from outside the pool to an idle actor while the only worker goes to sleep: the
/// worker's last look before blocking, or the sender's wake-up, gets the message handled.
#[test]
fn an_outside_send_wakes_the_idle_worker() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let actor = sys.spawn(Reporter {
            out: tx,
            stop_after: 1,
            handled: 0,
        });
        actor.send(7).unwrap();
        assert_eq!(rx.recv().unwrap(), Seen::Msg(7));
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// `EngineHandle::post` and `wake` from another thread reach an engine blocked in its wait:
/// the posted closure runs, exactly once.
#[test]
fn engine_handle_post_reaches_a_sleeping_engine() {
    model(|| {
        let (handle_tx, handle_rx) = channel::<EngineHandle>();
        let ran = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let engine_thread = {
            let (ran, done) = (ran.clone(), done.clone());
            thread::spawn(move || {
                let mut engine = Engine::new().unwrap();
                handle_tx.send(engine.handle()).unwrap();
                while !done.load(Ordering::SeqCst) {
                    engine.run_once(None).unwrap();
                }
                ran.load(Ordering::SeqCst)
            })
        };
        let handle = handle_rx.recv().unwrap();
        let (ran2, done2) = (ran.clone(), done.clone());
        handle
            .post(move |_engine: &mut Engine| {
                ran2.fetch_add(1, Ordering::SeqCst);
                done2.store(true, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(engine_thread.join().unwrap(), 1);
    });
}

/// The owner of the sockets in the socket models: tells the model's thread what happens.
struct Owner {
    out: Sender<OwnerSaw>,
}

#[derive(Debug)]
enum OwnerSaw {
    Connected(SockIdent),
    Disconnected(SockIdent),
    Stopped,
}

impl Actor for Owner {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } => self.out.send(OwnerSaw::Connected(sock)).unwrap(),
            NetEvent::Disconnected { sock, .. } => {
                self.out.send(OwnerSaw::Disconnected(sock)).unwrap();
            }
            NetEvent::ConnectFailed { error, .. } => panic!("connect failed: {error}"),
            _ => {}
        }
        let _ = ctx;
    }
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.out.send(OwnerSaw::Stopped).unwrap();
    }
}

/// A real loopback listener (outside the model's view: only the kernel runs it).
fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Dials `addr` from the system; returns the socket's handle and the accepted peer stream
/// (non-blocking).
fn dial(
    sys: &System,
    owner: &Addr<Owner>,
    l: &TcpListener,
    rx: &Receiver<OwnerSaw>,
) -> (SockIdent, TcpStream) {
    sys.connect(l.local_addr().unwrap(), Duration::from_secs(5), owner);
    let sock = match rx.recv().unwrap() {
        OwnerSaw::Connected(s) => s,
        other => panic!("expected Connected, got {other:?}"),
    };
    let (peer, _) = l.accept().unwrap();
    peer.set_nonblocking(true).unwrap();
    (sock, peer)
}

/// Reads exactly `n` bytes from a non-blocking stream, yielding to the model's other threads
/// while nothing is there (a poller that slept through its wake-up makes this spin until
/// loom's branch limit fails the model), or up to EOF when `n` is `None`.
fn read_from(peer: &mut TcpStream, n: Option<usize>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        if n.is_some_and(|n| got.len() >= n) {
            return got;
        }
        match peer.read(&mut buf) {
            Ok(0) => return got,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::yield_now(),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Closes the peer's end with a reset (`SO_LINGER` zero) instead of a FIN: neither end then
/// lingers in TIME_WAIT, which matters when a model dials thousands of times (every
/// execution holding a loopback port for a minute would exhaust the ephemeral range).
fn close_with_reset(peer: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor owned by `peer`, and a `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
    drop(peer);
}

/// Ends a socket model: the peer closes (with a reset), the socket is closed (which also wakes its poller:
/// a blocked wait of the stand-in does not see the peer's real close), the owner sees
/// Disconnected and is stopped, and the system shuts down with nothing left to wait for.
fn finish(
    sys: System,
    owner: Addr<Owner>,
    sock: SockIdent,
    peer: TcpStream,
    rx: &Receiver<OwnerSaw>,
) {
    close_with_reset(peer);
    let _ = sock.close();
    match rx.recv().unwrap() {
        OwnerSaw::Disconnected(s) => assert_eq!(s, sock),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    owner.stop();
    assert!(matches!(rx.recv().unwrap(), OwnerSaw::Stopped));
    let report = sys.shutdown(Duration::from_secs(1));
    assert!(report.graceful, "{report:?}");
}

/// A send from a thread that is not the socket's poller: queued in the slot, the slot listed
/// for the poller (`remote_dirty`, `remote_pending`), the poller woken if asleep, and the
/// bytes written. A lost wake-up leaves the bytes unwritten.
#[test]
fn cross_thread_socket_send_wakes_the_poller() {
    model(|| {
        let sys = system(1);
        let (l, _) = listener();
        let (tx, rx) = channel();
        let owner = sys.spawn(Owner { out: tx });
        let (sock, mut peer) = dial(&sys, &owner, &l, &rx);
        let sender = thread::spawn(move || sock.send(packet(b"hi")).is_ok());
        assert!(sender.join().unwrap());
        let got = read_from(&mut peer, Some(6));
        assert_eq!(got, [2, 0, 0, 0, b'h', b'i']);
        finish(sys, owner, sock, peer, &rx);
    });
}

/// A close racing a send from another thread: a send that returned `Ok` is written before
/// the end of the stream (nothing accepted is lost), one refused hands the packet back; then
/// the freed slot is reused by the next socket, and the old handle stays stale.
#[test]
fn close_racing_send_loses_nothing_accepted_and_reuse_keeps_old_handles_stale() {
    model(|| {
        let sys = system(1);
        let (l, _) = listener();
        let (tx, rx) = channel();
        let owner = sys.spawn(Owner { out: tx });
        let (sock, mut peer) = dial(&sys, &owner, &l, &rx);
        let sender = thread::spawn(move || match sock.send(packet(b"x")) {
            Ok(()) => true,
            Err(TrySendError::Closed(p)) => {
                assert_eq!(p.len(), 1, "the packet is handed back whole");
                false
            }
            Err(e) => panic!("unexpected {e:?}"),
        });
        sock.close().unwrap();
        let accepted = sender.join().unwrap();
        let got = read_from(&mut peer, None);
        if accepted {
            assert_eq!(got, [1, 0, 0, 0, b'x'], "an accepted send must be written");
        } else {
            assert!(got.is_empty());
        }
        match rx.recv().unwrap() {
            OwnerSaw::Disconnected(s) => assert_eq!(s, sock),
            other => panic!("expected Disconnected, got {other:?}"),
        }
        close_with_reset(peer);
        // The slot is free now: the next socket takes it, with a new generation.
        let (sock2, peer2) = dial(&sys, &owner, &l, &rx);
        assert_eq!(sock2.to_u64() & 0xffff_ffff, sock.to_u64() & 0xffff_ffff);
        assert_ne!(sock2, sock);
        assert!(!sock.is_open());
        assert!(matches!(
            sock.send(packet(b"y")),
            Err(TrySendError::Closed(_))
        ));
        assert!(sock2.is_open());
        finish(sys, owner, sock2, peer2, &rx);
    });
}

/// Registry races: two threads spawn under one name; exactly one wins, a lookup finds only
/// the winner, and the name is free again once the winner has stopped.
#[test]
fn registry_refuses_a_taken_name_and_frees_it_on_stop() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let make = |tx: Sender<Seen>| Reporter {
            out: tx,
            stop_after: 1,
            handled: 0,
        };
        let other = {
            let (h, tx) = (sys.handle(), tx.clone());
            thread::spawn(move || {
                h.spawn_with(make(tx), SpawnOptions::default().name("room"))
                    .ok()
            })
        };
        let mine = sys
            .spawn_with(make(tx.clone()), SpawnOptions::default().name("room"))
            .ok();
        let theirs = other.join().unwrap();
        let winner = match (mine, theirs) {
            (Some(w), None) | (None, Some(w)) => w,
            (m, t) => panic!(
                "exactly one spawn must win: {:?} {:?}",
                m.is_some(),
                t.is_some()
            ),
        };
        assert_eq!(sys.lookup::<Reporter>("room"), Some(winner.clone()));
        winner.send(1).unwrap();
        assert_eq!(rx.recv().unwrap(), Seen::Msg(1));
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        assert!(sys.lookup::<Reporter>("room").is_none());
        let again = sys.spawn_with(make(tx), SpawnOptions::default().name("room"));
        let again = again.expect("the name is free after its holder stopped");
        again.stop();
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// Shutdown racing a sender: the shutdown finishes (no deadlock), every send either lands
/// in the mailbox or hands its message back, and once shutdown has returned every send is
/// refused.
#[test]
fn shutdown_racing_a_sender_finishes_and_refuses_later_sends() {
    model(|| {
        let sys = system(1);
        let (tx, _rx) = channel();
        let actor = sys.spawn(Reporter {
            out: tx,
            stop_after: usize::MAX,
            handled: 0,
        });
        let sender = {
            let actor = actor.clone();
            thread::spawn(move || {
                for m in 0..2 {
                    match actor.send(m) {
                        Ok(()) | Err(TrySendError::Closed(_)) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        };
        let report = sys.shutdown(Duration::from_secs(1));
        sender.join().unwrap();
        assert_eq!(report.actors_left, 0, "{report:?}");
        assert!(matches!(actor.send(9), Err(TrySendError::Closed(9))));
    });
}

mod blocking;
mod groups;
mod hand_off;
mod sock_group;
