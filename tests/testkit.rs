//! The deterministic test kit (`--features testkit`): each piece on its own (the seeded
//! scheduler, the manual clock, virtual sockets and each fault), the same actor code on a
//! real system and in a simulation, and the replay of a whole scenario from its seed.
#![cfg(feature = "testkit")]

#[path = "support/rng.rs"]
mod rng;

use kendynet::testkit::{Faults, Sim, run_seeds, seeds};
use kendynet::{
    Actor, Addr, ConnOptions, Context, DisconnectReason, NetEvent, RPacket, SockError, SockIdent,
    System, TrySendError, WPacket,
};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

// ----- helpers -----

/// What a [`Recorder`] handled, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connected(SocketAddr),
    Packet(String),
    Disconnected(DisconnectReason),
    ConnectFailed(io::ErrorKind),
    Text(String),
    Stopped,
}

/// Everything every recorder handled, in the order handled: (tag, socket, what).
type Log = Arc<Mutex<Vec<(usize, Option<SockIdent>, Seen)>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// What recorder `tag` handled.
fn seen(log: &Log, tag: usize) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| *t == tag)
        .map(|(_, _, s)| s.clone())
        .collect()
}

/// The socket of recorder `tag`'s first `Connected`.
fn first_sock(log: &Log, tag: usize) -> SockIdent {
    log.lock()
        .unwrap()
        .iter()
        .find(|(t, s, what)| *t == tag && s.is_some() && matches!(what, Seen::Connected(_)))
        .and_then(|(_, s, _)| *s)
        .expect("a Connected")
}

/// An actor that records what it handles; echoes packets if asked to.
struct Recorder {
    tag: usize,
    log: Log,
    echo: bool,
}

enum Msg {
    Net(NetEvent),
    Text(String),
    Stop,
    /// Send `text` to this actor itself after `delay`.
    Later(Duration, String),
}

impl From<NetEvent> for Msg {
    fn from(ev: NetEvent) -> Msg {
        Msg::Net(ev)
    }
}

impl Recorder {
    fn new(tag: usize, log: &Log) -> Recorder {
        Recorder {
            tag,
            log: log.clone(),
            echo: false,
        }
    }

    fn echoing(tag: usize, log: &Log) -> Recorder {
        Recorder {
            echo: true,
            ..Recorder::new(tag, log)
        }
    }

    fn push(&self, sock: Option<SockIdent>, what: Seen) {
        self.log.lock().unwrap().push((self.tag, sock, what));
    }
}

impl Actor for Recorder {
    type Msg = Msg;

    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Net(NetEvent::Connected { sock, peer }) => {
                self.push(Some(sock), Seen::Connected(peer));
            }
            Msg::Net(NetEvent::Packet { sock, packet }) => {
                self.push(Some(sock), Seen::Packet(text(&packet)));
                if self.echo {
                    let _ = sock.send(WPacket::from(packet));
                }
            }
            Msg::Net(NetEvent::Disconnected { sock, reason }) => {
                self.push(Some(sock), Seen::Disconnected(reason));
            }
            Msg::Net(NetEvent::ConnectFailed { error, .. }) => {
                self.push(None, Seen::ConnectFailed(error.kind()));
            }
            Msg::Net(_) => {}
            Msg::Text(t) => self.push(None, Seen::Text(t)),
            Msg::Stop => ctx.stop(),
            Msg::Later(delay, t) => {
                ctx.send_self_after(delay, Msg::Text(t));
            }
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.push(None, Seen::Stopped);
    }
}

fn packet(text: &str) -> WPacket {
    let mut p = WPacket::new();
    p.write_raw(text.as_bytes());
    p
}

fn text(p: &RPacket) -> String {
    String::from_utf8_lossy(p.payload()).into_owned()
}

fn texts(packets: Vec<RPacket>) -> Vec<String> {
    packets.iter().map(text).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ----- the scheduler -----

/// Every step runs one message of one actor (the first turn also runs `started`).
#[test]
fn each_step_runs_at_most_one_message() {
    let sim = Sim::new(1);
    let log = log();
    let actors: Vec<Addr<Recorder>> = (0..3).map(|i| sim.spawn(Recorder::new(i, &log))).collect();
    for a in &actors {
        a.send(Msg::Text("one".into())).unwrap();
        a.send(Msg::Text("two".into())).unwrap();
    }
    let mut handled = 0;
    while sim.step() {
        let now = log.lock().unwrap().len();
        assert!(now <= handled + 1, "a step ran more than one message");
        handled = now;
    }
    assert_eq!(handled, 6);
    assert_eq!(sim.steps(), 6);
    for i in 0..3 {
        assert_eq!(
            seen(&log, i),
            [Seen::Text("one".into()), Seen::Text("two".into())]
        );
    }
}

/// The order in which four actors' messages interleave: what a seed decides.
fn interleaving(seed: u64) -> Vec<(usize, String)> {
    let sim = Sim::new(seed);
    let log = log();
    let actors: Vec<Addr<Recorder>> = (0..4).map(|i| sim.spawn(Recorder::new(i, &log))).collect();
    for n in 0..5 {
        for a in &actors {
            a.send(Msg::Text(n.to_string())).unwrap();
        }
    }
    sim.run_until_idle();
    let order: Vec<(usize, String)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(tag, _, s)| match s {
            Seen::Text(t) => (*tag, t.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // Whatever the interleaving, each actor's messages keep their order.
    for tag in 0..4 {
        let mine: Vec<&str> = order
            .iter()
            .filter(|(t, _)| *t == tag)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(mine, ["0", "1", "2", "3", "4"], "actor {tag}, seed {seed}");
    }
    order
}

#[test]
fn one_seed_gives_one_order_and_another_seed_another() {
    assert_eq!(interleaving(1), interleaving(1));
    assert_ne!(interleaving(1), interleaving(2));
    // Not a fixed rotation either: across seeds, more than two orders appear.
    let orders: std::collections::HashSet<_> = (0..8).map(interleaving).collect();
    assert!(orders.len() > 2);
}

/// Actors that keep each other busy forever are reported, with the seed.
#[test]
fn a_livelock_is_reported_with_its_seed() {
    struct Bouncer(Option<Addr<Bouncer>>);
    impl Actor for Bouncer {
        type Msg = Option<Addr<Bouncer>>;
        fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>) {
            if msg.is_some() {
                self.0 = msg;
            }
            if let Some(other) = &self.0 {
                let _ = other.send(Some(ctx.addr()));
            }
        }
    }
    let result = std::panic::catch_unwind(|| {
        let sim = Sim::builder().seed(77).max_steps(1_000).build();
        let a = sim.spawn(Bouncer(None));
        let b = sim.spawn(Bouncer(None));
        a.send(Some(b)).unwrap();
        sim.run_until_idle();
    });
    let err = result.expect_err("the livelock must be reported");
    let msg = err.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("seed 77"), "{msg}");
}

// ----- the manual clock -----

#[test]
fn timers_fire_only_when_the_clock_passes_them_in_deadline_order() {
    let sim = Sim::new(3);
    let log = log();
    let a = sim.spawn(Recorder::new(0, &log));
    for (ms, t) in [(30, "c"), (10, "a"), (10, "b"), (50, "d")] {
        a.send_after(Duration::from_millis(ms), Msg::Text(t.into()));
    }
    sim.run_until_idle();
    assert_eq!(seen(&log, 0), []);
    assert_eq!(sim.pending_timers(), 4);

    sim.advance(Duration::from_millis(9));
    assert_eq!(seen(&log, 0), [], "9 ms: nothing is due");
    sim.advance(Duration::from_millis(1));
    // Same deadline: in the order they were set.
    assert_eq!(
        seen(&log, 0),
        [Seen::Text("a".into()), Seen::Text("b".into())]
    );
    sim.advance(Duration::from_millis(100));
    let all: Vec<Seen> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| Seen::Text((*t).into()))
        .collect();
    assert_eq!(seen(&log, 0), all);
    assert_eq!(sim.now(), Duration::from_millis(110));
    assert_eq!(sim.pending_timers(), 0);
}

/// A timer set when another fires, due before the end of the same `advance`, fires in it.
#[test]
fn a_timer_set_by_a_handler_fires_within_the_same_advance() {
    struct Ticker {
        log: Log,
        ticks: u32,
    }
    impl Actor for Ticker {
        type Msg = ();
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.send_self_after(Duration::from_millis(10), ());
        }
        fn handle(&mut self, (): (), ctx: &mut Context<Self>) {
            self.ticks += 1;
            self.log
                .lock()
                .unwrap()
                .push((0, None, Seen::Text(self.ticks.to_string())));
            ctx.send_self_after(Duration::from_millis(10), ());
        }
    }
    let sim = Sim::new(4);
    let log = log();
    sim.spawn(Ticker {
        log: log.clone(),
        ticks: 0,
    });
    sim.run_until_idle();
    sim.advance(Duration::from_millis(35));
    assert_eq!(seen(&log, 0).len(), 3, "ticks at 10, 20 and 30 ms");
    sim.advance(Duration::from_millis(5));
    assert_eq!(seen(&log, 0).len(), 4, "and at 40 ms");
}

#[test]
fn a_stopped_actors_timer_delivers_nothing() {
    let sim = Sim::new(5);
    let log = log();
    let a = sim.spawn(Recorder::new(0, &log));
    a.send(Msg::Later(Duration::from_millis(10), "late".into()))
        .unwrap();
    a.send(Msg::Stop).unwrap();
    sim.run_until_idle();
    assert!(!a.is_alive());
    sim.advance(Duration::from_millis(20));
    assert_eq!(seen(&log, 0), [Seen::Stopped], "the timer found nobody");
    let trace = sim.trace_text();
    assert!(
        trace.contains("timer 1 cancelled") && !trace.contains("timer 1 fires"),
        "it was taken out of the wheel when its actor stopped:\n{trace}"
    );
}

#[test]
fn a_timer_due_now_waits_for_advance() {
    let sim = Sim::new(6);
    let log = log();
    let a = sim.spawn(Recorder::new(0, &log));
    a.send_after(Duration::ZERO, Msg::Text("now".into()));
    sim.run_until_idle();
    assert_eq!(seen(&log, 0), []);
    sim.advance(Duration::ZERO);
    assert_eq!(seen(&log, 0), [Seen::Text("now".into())]);
}

// ----- virtual sockets -----

/// Dials `server` (owned by recorder 0 of `log`) and runs until idle.
fn dial(sim: &Sim, server: SocketAddr) -> kendynet::testkit::VirtualClient {
    let c = sim.dial(server).expect("dial");
    sim.run_until_idle();
    c
}

#[test]
fn a_virtual_socket_delivers_connected_then_packets_in_order_then_disconnected() {
    let sim = Sim::new(7);
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = sim.dial(at).unwrap();
    for n in 0..5 {
        client.send(packet(&format!("p{n}"))).unwrap();
    }
    let local = client.local_addr();
    client.close();
    sim.run_until_idle();
    let mut want = vec![Seen::Connected(local)];
    want.extend((0..5).map(|n| Seen::Packet(format!("p{n}"))));
    want.push(Seen::Disconnected(DisconnectReason::PeerClosed));
    assert_eq!(seen(&log, 0), want);
    assert_eq!(sim.open_sockets(), 0, "the slot is freed");
}

/// `send`, `hand_to`, `close`, `is_open` and the refusal of stale handles: the same code as
/// for real sockets.
#[test]
fn sock_ident_works_unchanged_on_virtual_sockets() {
    let sim = Sim::new(8);
    let log = log();
    let first = sim.spawn(Recorder::new(0, &log));
    let second = sim.spawn(Recorder::new(1, &log));
    let at = sim.listen(addr("127.0.0.1:9000"), &first).unwrap();
    let client = dial(&sim, at);
    let sock = first_sock(&log, 0);
    assert!(sock.is_open());
    assert_eq!(sock.peer_addr(), Ok(client.local_addr()));

    // From the test thread, as from any thread.
    sock.send(packet("hello")).unwrap();
    sim.run_until_idle();
    assert_eq!(texts(client.recv_all()), ["hello"]);

    // Handed over: what arrives next goes to the second actor.
    sock.hand_to(&second).unwrap();
    client.send(packet("to second")).unwrap();
    sim.run_until_idle();
    assert_eq!(seen(&log, 1), [Seen::Packet("to second".into())]);

    // A graceful close: what was sent goes first, then the end of the stream.
    sock.send(packet("last")).unwrap();
    sock.close().unwrap();
    assert!(!sock.is_open());
    sim.run_until_idle();
    assert_eq!(texts(client.recv_all()), ["last"]);
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    assert_eq!(
        seen(&log, 1).last(),
        Some(&Seen::Disconnected(DisconnectReason::ClosedLocally))
    );

    // Stale from now on, even once its slot is reused.
    let stale = |s: SockIdent| {
        assert!(matches!(s.send(packet("x")), Err(TrySendError::Closed(_))));
        assert_eq!(s.close(), Err(SockError::Closed));
        assert_eq!(s.hand_to(&first), Err(SockError::Closed));
        assert_eq!(s.peer_addr(), Err(SockError::Closed));
        assert!(!s.is_open());
    };
    stale(sock);
    drop(client);
    let again = dial(&sim, at);
    let sock2 = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(_, s, what)| matches!(what, Seen::Connected(_)).then_some(*s))
        .flatten()
        .unwrap();
    assert_ne!(sock2, sock);
    assert_eq!(
        sock2.to_u64() & 0xffff_ffff,
        sock.to_u64() & 0xffff_ffff,
        "the slot was reused"
    );
    stale(sock);
    assert!(sock2.is_open());
    drop(again);
}

#[test]
fn a_packet_over_the_limit_ends_the_connection() {
    let sim = Sim::builder()
        .seed(9)
        .conn_options(ConnOptions::default().max_packet_len(16))
        .build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    client.send(packet("small")).unwrap();
    client.write(&1000u32.to_le_bytes()).unwrap();
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 0)[1..],
        [
            Seen::Packet("small".into()),
            Seen::Disconnected(DisconnectReason::PacketTooLarge { len: 1000, max: 16 })
        ]
    );
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

/// Actors dial: a listener of the test's, another actor's listener, and nobody.
#[test]
fn actors_dial_the_test_each_other_and_nobody() {
    let sim = Sim::new(10);
    let log = log();
    let dialer = sim.spawn(Recorder::new(0, &log));
    let server = sim.spawn(Recorder::echoing(1, &log));

    // The test plays the server.
    let listener = sim.bind(addr("10.0.0.1:5000")).unwrap();
    sim.connect(listener.local_addr(), Duration::from_secs(1), &dialer);
    sim.run_until_idle();
    let conn = listener.accept().expect("the actor's dial");
    assert!(listener.accept().is_none());
    let sock = first_sock(&log, 0);
    sock.send(packet("hi test")).unwrap();
    conn.send(packet("hi actor")).unwrap();
    sim.run_until_idle();
    assert_eq!(texts(conn.recv_all()), ["hi test"]);
    assert_eq!(
        seen(&log, 0),
        [
            Seen::Connected(listener.local_addr()),
            Seen::Packet("hi actor".into())
        ]
    );

    // Actor to actor: the echo answers.
    let at = sim.listen(addr("10.0.0.2:6000"), &server).unwrap();
    sim.connect(at, Duration::from_secs(1), &dialer);
    sim.run_until_idle();
    let to_server = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(t, s, what)| (*t == 0 && matches!(what, Seen::Connected(_))).then_some(*s))
        .flatten()
        .unwrap();
    to_server.send(packet("ping")).unwrap();
    sim.run_until_idle();
    assert_eq!(seen(&log, 1)[1..], [Seen::Packet("ping".into())]);
    assert_eq!(seen(&log, 0).last(), Some(&Seen::Packet("ping".into())));

    // Nobody listens there.
    sim.connect(addr("10.0.0.3:7000"), Duration::from_secs(1), &dialer);
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 0).last(),
        Some(&Seen::ConnectFailed(io::ErrorKind::ConnectionRefused))
    );
}

/// An actor that listens from its own `started` through `ctx.system()`, and answers each
/// packet with `pong:` and the packet: the same code on a real system and in a simulation.
struct SelfListening {
    addr: SocketAddr,
    bound: mpsc::Sender<SocketAddr>,
}

impl Actor for SelfListening {
    type Msg = NetEvent;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let bound = ctx.system().listen(self.addr, ctx.addr()).unwrap();
        self.bound.send(bound).unwrap();
    }
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let mut reply = WPacket::new();
            reply.write_raw(b"pong:").write_raw(packet.payload());
            let _ = sock.send(reply);
        }
    }
}

#[test]
fn the_same_actor_code_runs_on_a_real_system_and_in_a_simulation() {
    // Real: loopback TCP.
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    system.spawn(SelfListening {
        addr: addr("127.0.0.1:0"),
        bound: tx,
    });
    let bound = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut stream = TcpStream::connect(bound).unwrap();
    stream.write_all(&packet("ping").into_frame()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    assert_eq!(body, b"pong:ping");
    assert!(system.shutdown(Duration::from_secs(5)).graceful);

    // Simulated: the same actor, a virtual client.
    let sim = Sim::new(11);
    let (tx, rx) = mpsc::channel();
    sim.spawn(SelfListening {
        addr: addr("127.0.0.1:0"),
        bound: tx,
    });
    sim.run_until_idle();
    let bound = rx.try_recv().unwrap();
    let client = sim.dial(bound).unwrap();
    client.send(packet("ping")).unwrap();
    sim.run_until_idle();
    assert_eq!(texts(client.recv_all()), ["pong:ping"]);
    assert!(sim.shutdown().graceful);
}

#[test]
fn socket_timeouts_run_on_the_manual_clock() {
    let options = ConnOptions::default()
        .recv_timeout(Some(Duration::from_secs(5)))
        .send_timeout(Some(Duration::from_secs(2)));
    let sim = Sim::builder()
        .seed(12)
        .conn_options(options)
        .peer_window(16)
        .build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();

    // Nothing from the peer for 5 s.
    let quiet = dial(&sim, at);
    sim.advance(Duration::from_millis(4_999));
    assert_eq!(seen(&log, 0).len(), 1);
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        seen(&log, 0).last(),
        Some(&Seen::Disconnected(DisconnectReason::RecvTimeout))
    );
    drop(quiet);

    // A peer that does not read: the oldest queued byte waits 2 s.
    let stuck = dial(&sim, at);
    stuck.stop_reading();
    first_sock_of_last(&log)
        .send(packet("more than the window"))
        .unwrap();
    sim.run_until_idle();
    stuck.send(packet("alive")).unwrap();
    sim.advance(Duration::from_secs(1));
    assert_eq!(seen(&log, 0).last(), Some(&Seen::Packet("alive".into())));
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        seen(&log, 0).last(),
        Some(&Seen::Disconnected(DisconnectReason::SendTimeout))
    );
}

/// The socket of the latest `Connected` in the log.
fn first_sock_of_last(log: &Log) -> SockIdent {
    log.lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(_, s, what)| matches!(what, Seen::Connected(_)).then_some(*s))
        .flatten()
        .unwrap()
}

// ----- faults -----

/// A client sends ten packets of various sizes to a recorder, under `faults`; returns what
/// the recorder saw and the trace.
fn ten_packets(seed: u64, faults: Faults) -> (Vec<Seen>, String) {
    let sim = Sim::builder().seed(seed).faults(faults).build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:7100"), &server).unwrap();
    let client = sim.dial(at).unwrap();
    for n in 0..10 {
        client.send(packet(&"x".repeat(n * 7))).unwrap();
    }
    client.close();
    sim.advance(Duration::from_secs(1));
    let saw = seen(&log, 0)
        .into_iter()
        .map(|s| match s {
            Seen::Connected(_) => Seen::Connected(addr("0.0.0.0:0")),
            s => s,
        })
        .collect();
    (saw, sim.trace_text())
}

#[test]
fn split_reads_do_not_change_what_the_owner_sees() {
    let (whole, _) = ten_packets(13, Faults::none());
    for seed in 0..4 {
        let (split, trace) = ten_packets(seed, Faults::none().split(1.0));
        assert_eq!(split, whole, "seed {seed}");
        assert!(trace.contains("split into"), "{trace}");
        // Reads that end mid-packet happened.
        assert!(
            trace
                .lines()
                .any(|l| l.contains("reads") && l.contains("chunk")),
            "{trace}"
        );
    }
}

#[test]
fn latency_holds_chunks_until_the_clock_passes_them_in_order() {
    let sim = Sim::builder()
        .seed(14)
        .faults(Faults::none().latency(Duration::from_millis(10)))
        .build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = sim.dial(at).unwrap();
    for n in 0..20 {
        client.send(packet(&n.to_string())).unwrap();
    }
    sim.run_until_idle();
    let early = seen(&log, 0).len();
    sim.advance(Duration::from_millis(10));
    let all = seen(&log, 0);
    assert_eq!(all.len(), 21, "everything arrived within the latency");
    assert!(early < 21, "not before the clock moved");
    let packets: Vec<Seen> = (0..20).map(|n| Seen::Packet(n.to_string())).collect();
    assert_eq!(all[1..], packets, "in order");
    assert!(matches!(all[0], Seen::Connected(_)));
}

#[test]
fn a_reset_reports_reset_and_loses_what_was_queued() {
    let sim = Sim::builder().seed(15).peer_window(8).build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    let sock = first_sock(&log, 0);
    client.stop_reading();
    sock.send(packet("queued and lost")).unwrap();
    sim.run_until_idle();
    client.reset();
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 0).last(),
        Some(&Seen::Disconnected(DisconnectReason::Reset))
    );
    client.resume_reading();
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(
        client.send(packet("after")).unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert!(!sock.is_open());

    // Drawn from the seed: the first delivery resets.
    let sim = Sim::builder()
        .seed(16)
        .faults(Faults::none().reset(1.0))
        .build();
    let log = self::log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    client.send(packet("lost")).unwrap();
    sim.run_until_idle();
    let saw = seen(&log, 0);
    assert_eq!(saw[1..], [Seen::Disconnected(DisconnectReason::Reset)]);
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert!(sim.trace_text().contains("fault: c1 reset"));
}

#[test]
fn a_half_close_by_the_peer_ends_with_peer_closed_and_the_peer_still_reads() {
    let sim = Sim::new(17);
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    first_sock(&log, 0).send(packet("welcome")).unwrap();
    client.send(packet("a")).unwrap();
    client.send(packet("b")).unwrap();
    client.shutdown_write();
    assert_eq!(
        client.send(packet("c")).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 0)[1..],
        [
            Seen::Packet("a".into()),
            Seen::Packet("b".into()),
            Seen::Disconnected(DisconnectReason::PeerClosed)
        ]
    );
    assert_eq!(texts(client.recv_all()), ["welcome"]);
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );

    // Drawn from the seed: the first write is followed by a FIN.
    let sim = Sim::builder()
        .seed(18)
        .faults(Faults::none().half_close(1.0))
        .build();
    let log = self::log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    client.send(packet("only")).unwrap();
    assert_eq!(
        client.send(packet("refused")).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 0)[1..],
        [
            Seen::Packet("only".into()),
            Seen::Disconnected(DisconnectReason::PeerClosed)
        ]
    );
}

/// Sends 100-byte packets on its socket until the write limit refuses one; records how many
/// went.
struct Flooder {
    log: Log,
    sock: Option<SockIdent>,
}

impl Actor for Flooder {
    type Msg = Msg;
    fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
        match msg {
            Msg::Net(NetEvent::Connected { sock, .. }) => self.sock = Some(sock),
            Msg::Text(_) => {
                let sock = self.sock.expect("connected");
                let mut sent = 0;
                let full = loop {
                    match sock.send(packet(&"f".repeat(100))) {
                        Ok(()) => sent += 1,
                        Err(e) => break e.is_full(),
                    }
                    assert!(sent < 10_000, "never full");
                };
                assert!(full, "refused as full, not closed");
                self.log
                    .lock()
                    .unwrap()
                    .push((0, None, Seen::Text(sent.to_string())));
            }
            _ => {}
        }
    }
}

#[test]
fn a_reader_that_stops_reading_makes_sends_full_until_it_reads_again() {
    for (seed, faults) in [(19, Faults::none()), (20, Faults::none().stall(1.0))] {
        let sim = Sim::builder()
            .seed(seed)
            .faults(faults.clone())
            .peer_window(1_000)
            .conn_options(ConnOptions::default().write_limit(2_000))
            .build();
        let log = log();
        let flooder = sim.spawn(Flooder {
            log: log.clone(),
            sock: None,
        });
        let at = sim.listen(addr("127.0.0.1:0"), &flooder).unwrap();
        let client = dial(&sim, at);
        if faults == Faults::none() {
            client.stop_reading();
        }
        flooder.send(Msg::Text("flood".into())).unwrap();
        sim.run_until_idle();
        // The first 104-byte frames fill the write limit; once the poll publishes that the
        // window took some of them, more go.
        flooder.send(Msg::Text("flood".into())).unwrap();
        sim.run_until_idle();
        let sent: usize = seen(&log, 0)
            .iter()
            .map(|s| match s {
                Seen::Text(n) => n.parse::<usize>().unwrap(),
                _ => 0,
            })
            .sum();
        assert!(sent > 0 && sent * 104 <= 1_000 + 2_000 + 104, "sent {sent}");
        if seed == 20 {
            assert!(sim.trace_text().contains("fault: c1:d stops reading"));
        }
        // Reading again drains everything; then sends go through again.
        client.resume_reading();
        let got = client.recv_all().len();
        assert_eq!(got, sent, "everything sent arrives");
        flooder.send(Msg::Text("flood".into())).unwrap();
        sim.run_until_idle();
        assert_eq!(seen(&log, 0).len(), 3);
    }
}

#[test]
fn a_listener_that_refuses() {
    let sim = Sim::new(21);
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let dialer = sim.spawn(Recorder::new(1, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    sim.refuse(at, true).unwrap();
    assert_eq!(
        sim.dial(at).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    sim.connect(at, Duration::from_secs(1), &dialer);
    sim.run_until_idle();
    assert_eq!(
        seen(&log, 1),
        [Seen::ConnectFailed(io::ErrorKind::ConnectionRefused)]
    );
    assert_eq!(seen(&log, 0), [], "the listener's owner saw nothing");
    sim.refuse(at, false).unwrap();
    assert!(sim.dial(at).is_ok());
    assert!(sim.refuse(addr("127.0.0.1:1"), true).is_err());

    let sim = Sim::builder()
        .seed(22)
        .faults(Faults::none().refuse(1.0))
        .build();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    assert_eq!(
        sim.dial(at).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn shutdown_closes_sockets_and_stops_actors() {
    let sim = Sim::new(23);
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    first_sock(&log, 0).send(packet("bye")).unwrap();
    let report = sim.shutdown();
    assert!(report.graceful, "{report:?}");
    assert_eq!(
        seen(&log, 0)[1..],
        [
            Seen::Disconnected(DisconnectReason::ClosedLocally),
            Seen::Stopped
        ]
    );
    assert_eq!(texts(client.recv_all()), ["bye"]);
    assert_eq!(
        client.recv().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

// ----- replay -----

/// A hub: broadcasts every packet to every connected socket (iterating a `HashMap`), and a
/// tick every 5 ms.
struct Hub {
    members: HashMap<SockIdent, u32>,
    next: u32,
    ticks: u32,
}

enum HubMsg {
    Net(NetEvent),
    Tick,
}

impl From<NetEvent> for HubMsg {
    fn from(ev: NetEvent) -> HubMsg {
        HubMsg::Net(ev)
    }
}

impl Hub {
    fn broadcast(&self, text: &str) {
        let mut p = packet(text);
        p.freeze();
        for sock in self.members.keys() {
            let _ = sock.send(p.clone());
        }
    }
}

impl Actor for Hub {
    type Msg = HubMsg;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.send_self_after(Duration::from_millis(5), HubMsg::Tick);
    }
    fn handle(&mut self, msg: HubMsg, ctx: &mut Context<Self>) {
        match msg {
            HubMsg::Net(NetEvent::Connected { sock, .. }) => {
                self.next += 1;
                self.members.insert(sock, self.next);
            }
            HubMsg::Net(NetEvent::Packet { sock, packet }) => {
                let who = self.members.get(&sock).copied().unwrap_or(0);
                kendynet::testkit::note(format_args!("hub relays from member {who}"));
                self.broadcast(&format!("{who}:{}", text(&packet)));
            }
            HubMsg::Net(NetEvent::Disconnected { sock, .. }) => {
                self.members.remove(&sock);
            }
            HubMsg::Net(_) => {}
            HubMsg::Tick => {
                self.ticks += 1;
                self.broadcast(&format!("tick {}", self.ticks));
                if self.ticks < 20 {
                    ctx.send_self_after(Duration::from_millis(5), HubMsg::Tick);
                }
            }
        }
    }
}

/// Five clients chat through a hub over a faulty network, driven by the seed; returns the
/// trace and what each client read.
fn hub_scenario(seed: u64) -> (Vec<String>, Vec<Vec<String>>) {
    let faults = Faults::none()
        .latency(Duration::from_millis(2))
        .split(0.3)
        .reset(0.02);
    let sim = Sim::builder().seed(seed).faults(faults).build();
    let hub = sim.spawn(Hub {
        members: HashMap::new(),
        next: 0,
        ticks: 0,
    });
    let at = sim.listen(addr("10.1.0.1:4000"), &hub).unwrap();
    let clients: Vec<_> = (0..5).map(|_| sim.dial(at).unwrap()).collect();
    let mut got = vec![Vec::new(); clients.len()];
    let mut rng = rng::Rng::new(seed);
    for round in 0..60 {
        let who = rng.range(0, clients.len() - 1);
        let _ = clients[who].send(packet(&format!("m{round}")));
        sim.run_steps(rng.range(0, 6));
        if round % 4 == 0 {
            sim.advance(Duration::from_millis(1));
        }
        for (c, got) in clients.iter().zip(&mut got) {
            got.extend(texts(c.recv_all()));
        }
    }
    sim.advance(Duration::from_millis(200));
    for (c, got) in clients.iter().zip(&mut got) {
        got.extend(texts(c.recv_all()));
    }
    (sim.trace(), got)
}

#[test]
fn the_same_seed_replays_the_same_trace_and_another_seed_does_not() {
    let (trace, got) = hub_scenario(31);
    assert!(trace.len() > 200, "a scenario with some substance");
    assert!(got.iter().any(|g| g.len() > 20));
    let (again, got_again) = hub_scenario(31);
    assert_eq!(got, got_again);
    if trace != again {
        let at = trace.iter().zip(&again).position(|(a, b)| a != b);
        panic!(
            "seed 31 diverged at line {at:?}:\n{:?}\n{:?}",
            at.map(|i| &trace[i]),
            at.map(|i| &again[i])
        );
    }
    let (other, _) = hub_scenario(32);
    assert_ne!(trace, other);
}

#[test]
fn a_failing_seed_is_named() {
    let result = std::panic::catch_unwind(|| {
        run_seeds([3, 4, 5], |seed| {
            let sim = Sim::new(seed);
            sim.run_until_idle();
            assert!(seed != 4, "seed four breaks");
        });
    });
    let err = result.expect_err("seed 4 fails");
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("seed 4") && msg.contains("KENDYNET_SEED=4") && msg.contains("seed four"),
        "{msg}"
    );
    if std::env::var("KENDYNET_SEED").is_err() {
        assert_eq!(seeds(3), [0, 1, 2]);
    }
}

#[test]
fn raw_mode_sockets_deliver_each_read_as_a_packet() {
    let sim = Sim::builder()
        .seed(24)
        .conn_options(ConnOptions::default().raw(true))
        .build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let client = dial(&sim, at);
    client.write(b"no header").unwrap();
    sim.run_until_idle();
    assert_eq!(seen(&log, 0)[1..], [Seen::Packet("no header".into())]);
    first_sock(&log, 0).send(packet("raw reply")).unwrap();
    sim.run_until_idle();
    assert_eq!(client.recv_bytes().unwrap(), b"raw reply");
}

/// A timer that sets itself again with no delay would keep `advance` at one instant forever.
#[test]
fn a_timer_loop_at_one_instant_is_reported_with_its_seed() {
    struct Again;
    impl Actor for Again {
        type Msg = ();
        fn handle(&mut self, (): (), ctx: &mut Context<Self>) {
            ctx.send_self_after(Duration::ZERO, ());
        }
    }
    let result = std::panic::catch_unwind(|| {
        let sim = Sim::builder().seed(25).max_steps(100).build();
        sim.spawn(Again).send(()).unwrap();
        sim.advance(Duration::from_millis(1));
    });
    let err = result.expect_err("reported");
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("seed 25"), "{msg}");
}

#[test]
fn the_trace_keeps_its_last_lines() {
    let sim = Sim::builder().seed(26).trace_limit(10).build();
    let log = log();
    let a = sim.spawn(Recorder::new(0, &log));
    for n in 0..50 {
        a.send(Msg::Text(n.to_string())).unwrap();
    }
    sim.run_until_idle();
    sim.note("the end");
    let trace = sim.trace();
    assert_eq!(trace.len(), 10);
    assert!(trace[9].ends_with("note: the end"), "{trace:?}");
    assert!(trace[8].contains("handles message 50"), "{trace:?}");
    assert_eq!(sim.trace_lines_dropped(), 52 - 10);
}

#[test]
fn the_connection_limit_holds_in_a_simulation() {
    let sim = Sim::builder().seed(27).max_connections(1).build();
    let log = log();
    let server = sim.spawn(Recorder::new(0, &log));
    let dialer = sim.spawn(Recorder::new(1, &log));
    let at = sim.listen(addr("127.0.0.1:0"), &server).unwrap();
    let first = dial(&sim, at);
    let second = dial(&sim, at);
    assert_eq!(
        second.recv().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof,
        "over the limit: closed at once"
    );
    sim.connect(at, Duration::from_secs(1), &dialer);
    sim.run_until_idle();
    assert!(matches!(seen(&log, 1)[..], [Seen::ConnectFailed(_)]));
    assert_eq!(seen(&log, 0).len(), 1, "one Connected only");
    assert_eq!(sim.open_sockets(), 1);
    drop(first);
    sim.run_until_idle();
    assert_eq!(sim.open_sockets(), 0);
    let third = dial(&sim, at);
    assert!(third.recv().unwrap().is_none(), "admitted again");
    assert_eq!(sim.open_sockets(), 1);
}
