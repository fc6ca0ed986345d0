//! Layer 2, framed connections, over real loopback sockets.
//!
//! A server engine runs on its own thread ([`Server`]) and reports what happens on its
//! connections as [`Ev`]s through a channel; the tests talk to it with blocking std clients.
//! [`Server::finish`] stops it and checks, for every test, that no connection was told of its
//! end twice and that nothing was delivered for a connection after its end.

mod support;

use kendynet::error::TrySendError;
use kendynet::net::{ConnId, ConnOptions, Connection, DisconnectReason, Engine, Socket};
use kendynet::{PacketError, RPacket, WPacket};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};
use support::engine::{EngineThread, run_until};
use support::wire::{client, close_with_reset, expect_closed, frame, read_frame};
use support::{WAIT, any_port};

/// What happened on the server, in the order it happened.
#[derive(Debug)]
enum Ev {
    Accepted(ConnId),
    Packet(ConnId, Vec<u8>),
    Disconnected(ConnId, DisconnectReason),
    /// A test-specific observation made on the engine thread.
    Note(ConnId, String),
}

impl Ev {
    fn conn(&self) -> ConnId {
        match self {
            Ev::Accepted(c) | Ev::Packet(c, _) | Ev::Disconnected(c, _) | Ev::Note(c, _) => *c,
        }
    }
}

/// Runs on the engine thread for each accepted connection, after it is bound.
type AcceptHook = fn(&mut Engine, ConnId, &Sender<Ev>);
/// Runs on the engine thread for each packet, after it is recorded.
type PacketHook = fn(&mut Engine, ConnId, RPacket, &Sender<Ev>);

fn no_accept_hook(_: &mut Engine, _: ConnId, _: &Sender<Ev>) {}

fn echo(engine: &mut Engine, id: ConnId, packet: RPacket, _: &Sender<Ev>) {
    id.send(engine, WPacket::from(packet))
        .expect("echo: send failed");
}

fn ignore(_: &mut Engine, _: ConnId, _: RPacket, _: &Sender<Ev>) {}

/// A layer-2 server on its own engine thread.
struct Server {
    engine: EngineThread,
    addr: SocketAddr,
    rx: Receiver<Ev>,
    /// Every event so far, in order.
    seen: Vec<Ev>,
    /// Which of `seen` a `wait` has returned already.
    picked: Vec<bool>,
}

fn serve(options: ConnOptions, on_accept: AcceptHook, on_packet: PacketHook) -> Server {
    let (tx, rx) = mpsc::channel();
    let (engine, addr) = EngineThread::spawn(move |engine| {
        let listener = engine
            .listen(any_port(), move |engine, socket| {
                let (tx_p, tx_d) = (tx.clone(), tx.clone());
                let id = Connection::new(socket)
                    .options(options.clone())
                    .bind(
                        engine,
                        move |engine, id, packet| {
                            let _ = tx_p.send(Ev::Packet(id, packet.payload().to_vec()));
                            on_packet(engine, id, packet, &tx_p);
                        },
                        move |_, id, reason| {
                            let _ = tx_d.send(Ev::Disconnected(id, reason));
                        },
                    )
                    .expect("Connection::bind");
                let _ = tx.send(Ev::Accepted(id));
                on_accept(engine, id, &tx);
            })
            .expect("listen");
        engine.listener_addr(listener).expect("listener_addr")
    });
    Server {
        engine,
        addr,
        rx,
        seen: Vec::new(),
        picked: Vec::new(),
    }
}

impl Server {
    /// Waits for the first event, not picked before, that `pick` accepts (events that arrived
    /// earlier count too). Every event is kept for `finish`.
    fn wait<R>(&mut self, what: &str, mut pick: impl FnMut(&Ev) -> Option<R>) -> R {
        for (ev, picked) in self.seen.iter().zip(self.picked.iter_mut()) {
            if !*picked && let Some(r) = pick(ev) {
                *picked = true;
                return r;
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(ev) = self.rx.recv_timeout(left) else {
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; so far: {:?}",
                    self.seen
                );
            };
            let r = pick(&ev);
            self.seen.push(ev);
            self.picked.push(r.is_some());
            if let Some(r) = r {
                return r;
            }
        }
    }

    /// Connects a client and waits until the server has accepted it.
    fn connect(&mut self) -> (TcpStream, ConnId) {
        let c = client(self.addr);
        let id = self.wait("the accept", |ev| match ev {
            Ev::Accepted(id) => Some(*id),
            _ => None,
        });
        (c, id)
    }

    /// Waits for the end of `id` and returns its reason.
    fn disconnect_of(&mut self, id: ConnId) -> DisconnectReason {
        self.wait("on_disconnect", |ev| match ev {
            Ev::Disconnected(c, r) if *c == id => Some(r.clone()),
            _ => None,
        })
    }

    /// Waits for a note about `id`.
    fn note_of(&mut self, id: ConnId) -> String {
        self.wait("a note from the engine thread", |ev| match ev {
            Ev::Note(c, n) if *c == id => Some(n.clone()),
            _ => None,
        })
    }

    /// Stops the engine and checks the event history: at most one end per connection, and
    /// nothing after it. Returns the history.
    fn finish(mut self) -> Vec<Ev> {
        self.engine.stop();
        self.seen.extend(self.rx.try_iter());
        let mut ended: HashMap<ConnId, usize> = HashMap::new();
        for (i, ev) in self.seen.iter().enumerate() {
            // Notes are the test's own observations, not deliveries.
            if let Ev::Note(..) = ev {
                continue;
            }
            if let Some(&at) = ended.get(&ev.conn()) {
                panic!(
                    "{ev:?} after the connection ended (event #{at}); history: {:?}",
                    self.seen
                );
            }
            if let Ev::Disconnected(id, _) = ev {
                ended.insert(*id, i);
            }
        }
        self.seen
    }

    /// The payloads received on `id`, in order, from a history.
    fn packets_of(history: &[Ev], id: ConnId) -> Vec<Vec<u8>> {
        history
            .iter()
            .filter_map(|ev| match ev {
                Ev::Packet(c, p) if *c == id => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A payload with typed fields, so that splits fall inside every kind of field.
fn typed_payload() -> Vec<u8> {
    let mut w = WPacket::new();
    w.write_u8(1)
        .write_u16(0x0203)
        .write_u32(0x0405_0607)
        .write_str("kendynet");
    w.payload().to_vec()
}

#[test]
fn packets_split_at_every_byte_boundary_arrive_intact() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    // Three frames, one of them empty, so that splits fall inside headers, payloads and
    // between frames.
    let payloads = [typed_payload(), Vec::new(), (0..40).collect::<Vec<u8>>()];
    let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    for split in 1..stream.len() {
        c.write_all(&stream[..split]).unwrap();
        c.flush().unwrap();
        // Only to make the two parts arrive in separate reads; the result must not depend
        // on it.
        thread::sleep(Duration::from_millis(1));
        c.write_all(&stream[split..]).unwrap();
        for p in &payloads {
            assert_eq!(&read_frame(&mut c).unwrap(), p, "split at byte {split}");
        }
    }
    drop(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::PeerClosed);
    let history = server.finish();
    let got = Server::packets_of(&history, id);
    let expect: Vec<Vec<u8>> = (1..stream.len())
        .flat_map(|_| payloads.iter().cloned())
        .collect();
    assert!(got == expect, "the server saw other packets than were sent");
}

#[test]
fn many_packets_in_one_write_are_delivered_in_order() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    const N: usize = 3000;
    let payload = |i: usize| -> Vec<u8> { (0..i % 300).map(|j| (i + j) as u8).collect() };
    let stream: Vec<u8> = (0..N).flat_map(|i| frame(&payload(i))).collect();
    let mut writer = c.try_clone().unwrap();
    // Written in one call from another thread, while this one reads the echoes back.
    let w = thread::spawn(move || writer.write_all(&stream));
    for i in 0..N {
        let got = read_frame(&mut c).unwrap_or_else(|e| panic!("echo #{i}: {e}"));
        assert_eq!(got, payload(i), "echo #{i}");
    }
    w.join().unwrap().unwrap();
    drop(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::PeerClosed);
    let history = server.finish();
    let got = Server::packets_of(&history, id);
    assert_eq!(got.len(), N);
    assert!(
        (0..N).all(|i| got[i] == payload(i)),
        "server packets out of order"
    );
}

#[test]
fn zero_length_packet_is_delivered() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    c.write_all(&frame(&[])).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), Vec::<u8>::new());
    let got = server.wait("the empty packet", |ev| match ev {
        Ev::Packet(c, p) if *c == id => Some(p.clone()),
        _ => None,
    });
    assert!(got.is_empty());
    server.finish();
}

#[test]
fn oversized_packet_closes_only_that_connection() {
    const MAX: usize = 1024;
    let mut server = serve(
        ConnOptions::default().max_packet_len(MAX),
        no_accept_hook,
        echo,
    );
    let (mut good, good_id) = server.connect();
    let (mut bad, bad_id) = server.connect();
    let (mut huge, huge_id) = server.connect();

    // A packet of exactly the maximum is fine.
    let max_payload = vec![9u8; MAX];
    good.write_all(&frame(&max_payload)).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), max_payload);

    // One byte more closes that connection, before the payload has even arrived.
    bad.write_all(&((MAX + 1) as u32).to_le_bytes()).unwrap();
    bad.write_all(b"some of it").unwrap();
    assert_eq!(
        server.disconnect_of(bad_id),
        DisconnectReason::PacketTooLarge {
            len: MAX + 1,
            max: MAX
        }
    );
    expect_closed(&mut bad, "client that sent an oversized header");

    // A declared 4 GiB must not make the server reserve anything.
    huge.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(
        server.disconnect_of(huge_id),
        DisconnectReason::PacketTooLarge {
            len: u32::MAX as usize,
            max: MAX
        }
    );

    // The others carry on, and new clients are served.
    good.write_all(&frame(b"still served")).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), b"still served");
    let (mut late, _) = server.connect();
    late.write_all(&frame(b"new client")).unwrap();
    assert_eq!(read_frame(&mut late).unwrap(), b"new client");
    let history = server.finish();
    assert!(
        !history
            .iter()
            .any(|ev| matches!(ev, Ev::Disconnected(c, _) if *c == good_id)),
        "the well-behaved connection was closed"
    );
}

#[test]
fn idle_connection_is_closed_with_recv_timeout() {
    let timeout = Duration::from_millis(200);
    let mut server = serve(
        ConnOptions::default().recv_timeout(Some(timeout)),
        no_accept_hook,
        echo,
    );
    let start = Instant::now();
    let (mut c, id) = server.connect();
    assert_eq!(server.disconnect_of(id), DisconnectReason::RecvTimeout);
    assert!(
        start.elapsed() >= timeout,
        "closed after {:?}, before the timeout",
        start.elapsed()
    );
    expect_closed(&mut c, "idle client");
    server.finish();
}

/// Queues 1 MiB packets (all sharing one buffer) until the write limit refuses one, and
/// notes how that went.
fn flood(engine: &mut Engine, id: ConnId, tx: &Sender<Ev>) {
    let mut packet = WPacket::with_capacity(1 << 20);
    packet.write_raw(&vec![0x5a; 1 << 20]);
    packet.freeze();
    let mut queued = 0usize;
    let note = loop {
        match id.send(engine, packet.clone()) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(back)) => {
                let shared = back.payload().as_ptr() == packet.payload().as_ptr();
                break format!(
                    "full after {queued}; handed back {} bytes, shared {shared}; queued {} bytes",
                    back.len(),
                    id.queued_bytes(engine)
                );
            }
            Err(TrySendError::Closed(_)) => break "closed".to_owned(),
        }
    };
    let _ = tx.send(Ev::Note(id, note));
}

#[test]
fn peer_that_never_reads_hits_write_limit_then_send_timeout() {
    // 128 MiB is far more than loopback socket buffers absorb, so the queue stays non-empty.
    const LIMIT: usize = 128 << 20;
    let timeout = Duration::from_millis(300);
    let mut server = serve(
        ConnOptions::default()
            .write_limit(LIMIT)
            .send_timeout(Some(timeout)),
        flood,
        ignore,
    );
    let start = Instant::now();
    let (c, id) = server.connect();
    let note = server.note_of(id);
    let frame_len = (1 << 20) + 4;
    let fits = LIMIT / frame_len;
    assert_eq!(
        note,
        format!(
            "full after {fits}; handed back {} bytes, shared true; queued {} bytes",
            1 << 20,
            fits * frame_len
        )
    );
    assert_eq!(server.disconnect_of(id), DisconnectReason::SendTimeout);
    assert!(
        start.elapsed() >= timeout,
        "send timeout after only {:?}",
        start.elapsed()
    );
    drop(c);
    server.finish();
}

/// Queues 16 MiB in 64 KiB packets (more than the socket buffers take at once, so the close
/// has to keep flushing after `close` returns), closes gracefully, and checks that sending is
/// refused from then on.
fn queue_then_close(engine: &mut Engine, id: ConnId, tx: &Sender<Ev>) {
    for i in 0..GRACEFUL_PACKETS {
        let mut p = WPacket::with_capacity(GRACEFUL_LEN);
        p.write_raw(&vec![i as u8; GRACEFUL_LEN]);
        id.send(engine, p).expect("queue before close");
    }
    id.close(engine);
    let still_queued = id.queued_bytes(engine) > 0;
    let mut late = WPacket::new();
    late.write_str("too late");
    let note = match id.send(engine, late) {
        Err(TrySendError::Closed(p)) => format!("closed, handed back {} bytes", p.len()),
        Err(TrySendError::Full(_)) => "full".to_owned(),
        Ok(()) => "accepted".to_owned(),
    };
    let open = id.is_open(engine);
    let _ = tx.send(Ev::Note(
        id,
        format!("{note}; open {open}; still queued {still_queued}"),
    ));
}
const GRACEFUL_PACKETS: usize = 256;
const GRACEFUL_LEN: usize = 64 << 10;

#[test]
fn graceful_close_delivers_everything_queued() {
    let mut server = serve(
        ConnOptions::default().write_limit(32 << 20),
        queue_then_close,
        ignore,
    );
    let (mut c, id) = server.connect();
    assert_eq!(
        server.note_of(id),
        "closed, handed back 13 bytes; open false; still queued true"
    );
    let reader = thread::spawn(move || {
        let mut packets = Vec::new();
        for _ in 0..GRACEFUL_PACKETS {
            packets.push(read_frame(&mut c)?);
        }
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)?;
        Ok::<_, std::io::Error>((packets, rest))
    });
    assert_eq!(server.disconnect_of(id), DisconnectReason::ClosedLocally);
    let (packets, rest) = reader.join().unwrap().expect("client read");
    for (i, p) in packets.iter().enumerate() {
        assert!(
            p.len() == GRACEFUL_LEN && p.iter().all(|&b| b == i as u8),
            "packet #{i} damaged"
        );
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last packet",
        rest.len()
    );
    server.finish();
}

fn echo_then_close_on_bye(engine: &mut Engine, id: ConnId, packet: RPacket, tx: &Sender<Ev>) {
    let bye = packet.payload() == b"bye";
    echo(engine, id, packet, tx);
    if bye {
        id.close(engine);
    }
}

#[test]
fn close_from_on_packet_flushes_the_reply_first() {
    let mut server = serve(
        ConnOptions::default(),
        no_accept_hook,
        echo_then_close_on_bye,
    );
    let (mut c, id) = server.connect();
    // Both packets in one write: the second is never delivered once the first closes.
    let mut two = frame(b"bye");
    two.extend(frame(b"ignored"));
    c.write_all(&two).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"bye");
    expect_closed(&mut c, "client after bye");
    assert_eq!(server.disconnect_of(id), DisconnectReason::ClosedLocally);
    let history = server.finish();
    assert_eq!(Server::packets_of(&history, id), [b"bye".to_vec()]);
}

#[test]
fn peer_close_is_reported_as_peer_closed() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    c.write_all(&frame(b"ping")).unwrap();
    assert_eq!(read_frame(&mut c).unwrap(), b"ping");
    drop(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::PeerClosed);
    server.finish();
}

#[test]
fn peer_reset_is_reported_as_reset() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    c.write_all(&frame(b"left unread")).unwrap();
    // The echo stays unread, so closing sends RST.
    close_with_reset(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::Reset);
    server.finish();
}

#[test]
fn raw_mode_echoes_bytes_without_framing() {
    let mut server = serve(ConnOptions::default().raw(true), no_accept_hook, echo);
    let (mut c, id) = server.connect();
    let msg = b"raw bytes: no length header\x00\x01\x02";
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
    drop(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::PeerClosed);
    let history = server.finish();
    assert_eq!(Server::packets_of(&history, id).concat(), msg);
}

#[test]
fn send_on_a_closed_connection_hands_the_packet_back() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    let (c, id) = server.connect();
    drop(c);
    assert_eq!(server.disconnect_of(id), DisconnectReason::PeerClosed);
    let (sent, open, peer, queued) = server.engine.call(move |engine| {
        let mut p = WPacket::new();
        p.write_str("late");
        let sent = match id.send(engine, p) {
            Err(TrySendError::Closed(back)) => Some(back.payload().to_vec()),
            _ => None,
        };
        // Closing or aborting an ended connection does nothing (no second on_disconnect:
        // checked by `finish`).
        id.close(engine);
        id.abort(engine);
        (
            sent,
            id.is_open(engine),
            id.peer_addr(engine),
            id.queued_bytes(engine),
        )
    });
    assert_eq!(sent.as_deref(), Some(&b"\x05\0\0\0late\0"[..]));
    assert!(!open);
    assert_eq!(peer, None);
    assert_eq!(queued, 0);
    server.finish();
}

#[test]
fn typed_fields_survive_a_round_trip() {
    let mut server = serve(ConnOptions::default(), no_accept_hook, echo);
    // The client side is a layer-2 connection too, on an engine driven by this thread.
    let mut engine = Engine::new().unwrap();
    let socket: Rc<RefCell<Option<std::io::Result<Socket>>>> = Rc::default();
    let s = socket.clone();
    engine
        .connect(server.addr, WAIT, move |_, r| *s.borrow_mut() = Some(r))
        .unwrap();
    run_until(&mut engine, "the connect", |_| socket.borrow().is_some());
    let socket = socket.borrow_mut().take().unwrap().expect("connect");
    let received: Rc<RefCell<Vec<RPacket>>> = Rc::default();
    let ended: Rc<RefCell<Vec<DisconnectReason>>> = Rc::default();
    let (r, e) = (received.clone(), ended.clone());
    let conn = Connection::new(socket)
        .bind(
            &mut engine,
            move |_, _, p| r.borrow_mut().push(p),
            move |_, _, reason| e.borrow_mut().push(reason),
        )
        .unwrap();

    let blob: Vec<u8> = (0..=255).collect();
    let mut w = WPacket::new();
    w.write_u8(0xfe)
        .write_u16(0xbeef)
        .write_u32(0xdead_beef)
        .write_u64(u64::MAX - 1)
        .write_i8(-2)
        .write_i16(-300)
        .write_i32(i32::MIN)
        .write_i64(-1)
        .write_f64(std::f64::consts::PI)
        .write_str("héllo, wörld")
        .write_str("")
        .write_bytes(&blob)
        .write_bytes(&[]);
    conn.send(&mut engine, w).unwrap();
    run_until(&mut engine, "the echoed packet", |_| {
        !received.borrow().is_empty()
    });
    let mut p = received.borrow_mut().remove(0);
    assert_eq!(p.read_u8(), Ok(0xfe));
    assert_eq!(p.read_u16(), Ok(0xbeef));
    assert_eq!(p.read_u32(), Ok(0xdead_beef));
    assert_eq!(p.read_u64(), Ok(u64::MAX - 1));
    assert_eq!(p.read_i8(), Ok(-2));
    assert_eq!(p.read_i16(), Ok(-300));
    assert_eq!(p.read_i32(), Ok(i32::MIN));
    assert_eq!(p.read_i64(), Ok(-1));
    assert_eq!(p.read_f64(), Ok(std::f64::consts::PI));
    assert_eq!(p.read_str(), Ok("héllo, wörld"));
    assert_eq!(p.read_string().as_deref(), Ok(""));
    assert_eq!(p.read_bytes().as_deref(), Ok(&blob[..]));
    assert_eq!(p.read_bytes().as_deref(), Ok(&[][..]));
    assert_eq!(p.remaining(), 0);
    assert_eq!(
        p.read_u8(),
        Err(PacketError::Truncated {
            needed: 1,
            remaining: 0
        })
    );

    conn.close(&mut engine);
    run_until(&mut engine, "the client's on_disconnect", |_| {
        !ended.borrow().is_empty()
    });
    assert_eq!(*ended.borrow(), [DisconnectReason::ClosedLocally]);
    // The server sees the client's graceful close as the peer closing.
    let server_conn = server.wait("the server's connection", |ev| match ev {
        Ev::Accepted(id) => Some(*id),
        _ => None,
    });
    assert_eq!(
        server.disconnect_of(server_conn),
        DisconnectReason::PeerClosed
    );
    // The lingering client end is released once the server has closed.
    run_until(&mut engine, "the client connection to be released", |e| {
        e.registrations() == 0
    });
    assert_eq!(ended.borrow().len(), 1);
    server.finish();
}
