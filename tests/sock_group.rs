//! Socket groups (`SockGroup`) over real loopback sockets and real worker threads: a broadcast
//! reaches every member exactly once and in order, whichever worker polls it; a member that
//! never reads has its packets dropped and counted under the drop policy while the others get
//! everything; a closed member leaves by itself; and a broadcast hands its frame to each
//! poller with members once, not once per member.

mod support;

use kendynet::net::SlowConsumer;
use kendynet::{
    Actor, ConnOptions, Context, NetEvent, SockError, SockGroup, SockIdent, System, WPacket,
};
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};
use support::{WAIT, any_port, eventually, recv, shutdown_gracefully};

/// Owns the listener: joins each new socket to the group and reports it.
struct Joiner {
    group: SockGroup,
    out: Sender<SockIdent>,
}

impl Actor for Joiner {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Connected { sock, .. } = ev {
            assert_eq!(self.group.join(sock), Ok(true));
            assert_eq!(
                self.group.join(sock),
                Ok(false),
                "a second join changes nothing"
            );
            self.out.send(sock).unwrap();
        }
    }
}

/// A system of `workers` workers whose listener joins every socket to one group.
fn room(workers: usize, options: ConnOptions) -> (System, SockGroup, SocketAddr, Joins) {
    let system = System::builder()
        .workers(workers)
        .conn_options(options)
        .build()
        .expect("system");
    let group = system.sock_group();
    let (tx, rx) = channel();
    let owner = system.spawn(Joiner {
        group: group.clone(),
        out: tx,
    });
    let addr = system.listen(any_port(), &owner).expect("listen");
    (system, group, addr, Joins { addr, rx })
}

/// The way to a room's listener, and its reports of sockets joined.
struct Joins {
    addr: SocketAddr,
    rx: Receiver<SockIdent>,
}

impl Joins {
    /// Connects a client and waits until the server has joined it to the group.
    fn member(&self) -> (TcpStream, SockIdent) {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        (stream, recv(&self.rx, "the member's join"))
    }
}

fn numbered(n: u32, size: usize) -> WPacket {
    let mut p = WPacket::new();
    p.write_u32(n);
    p.write_raw(&vec![n as u8; size.saturating_sub(4)]);
    p
}

/// Reads one frame; returns its payload.
fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("a frame's header");
    let mut payload = vec![0u8; u32::from_le_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("a frame's payload");
    payload
}

fn number_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().unwrap())
}

/// Checks that nothing more arrives on `stream` for a short while.
fn nothing_more(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
    stream.set_read_timeout(Some(WAIT)).unwrap();
}

#[test]
fn a_broadcast_reaches_every_member_exactly_once_and_in_order_across_two_workers() {
    const MEMBERS: usize = 6;
    const PACKETS: u32 = 500;
    let (system, group, _, joins) = room(2, ConnOptions::default());
    let mut members: Vec<_> = (0..MEMBERS).map(|_| joins.member()).collect();
    assert_eq!(group.len(), MEMBERS);
    for (_, sock) in &members {
        assert!(group.contains(*sock));
    }
    // From a thread that is no poller, and interleaved with reads.
    let sender = {
        let group = group.clone();
        std::thread::spawn(move || {
            for n in 0..PACKETS {
                assert_eq!(group.broadcast(numbered(n, 32)), MEMBERS);
            }
        })
    };
    for (stream, _) in &mut members {
        for n in 0..PACKETS {
            let payload = read_frame(stream);
            assert_eq!(payload.len(), 32);
            assert_eq!(number_of(&payload), n, "in order, each exactly once");
        }
    }
    sender.join().unwrap();
    for (stream, _) in &mut members {
        nothing_more(stream);
    }
    eventually("every delivery counted", || {
        group.stats().queued == u64::from(PACKETS) * MEMBERS as u64
    });
    let stats = group.stats();
    assert_eq!(stats.broadcasts, u64::from(PACKETS));
    assert_eq!((stats.dropped, stats.closed_members), (0, 0), "{stats}");
    shutdown_gracefully(system);
}

#[test]
fn a_member_that_never_reads_has_drops_counted_while_the_others_get_everything() {
    const SIZE: usize = 16 << 10;
    let options = ConnOptions::default()
        .slow_consumer(SlowConsumer::Drop)
        .watermarks(16 << 10, 64 << 10)
        .write_limit(256 << 10);
    let (system, group, _, joins) = room(2, options);
    let (mut a, _) = joins.member();
    let (_stalled, stalled_sock) = joins.member();
    let (mut b, _) = joins.member();
    // Broadcast one packet at a time, each read by the readers before the next, until the
    // stalled member's kernel buffers and queue are full and its packets are dropped.
    let deadline = Instant::now() + WAIT;
    let mut n = 0u32;
    while group.stats().dropped < 10 {
        assert!(
            Instant::now() < deadline,
            "no drops for the stalled member after {n} packets: {}",
            group.stats()
        );
        assert_eq!(group.broadcast(numbered(n, SIZE)), 3);
        for reader in [&mut a, &mut b] {
            let payload = read_frame(reader);
            assert_eq!((number_of(&payload), payload.len()), (n, SIZE));
        }
        n += 1;
    }
    let stats = group.stats();
    // Every packet went to the readers; what the stalled member could not take was dropped
    // for it alone; nobody was closed.
    assert_eq!(stats.queued + stats.dropped, 3 * u64::from(n), "{stats}");
    assert!(stats.queued >= 2 * u64::from(n), "{stats}");
    assert_eq!(stats.closed_members, 0);
    assert!(group.contains(stalled_sock) && stalled_sock.is_open());
    assert_eq!(
        stalled_sock.dropped_packets(),
        stats.dropped,
        "the socket counts what the group dropped for it"
    );
    nothing_more(&mut a);
    nothing_more(&mut b);
    shutdown_gracefully(system);
}

#[test]
fn a_closed_member_leaves_the_group_by_itself() {
    let (system, group, _, joins) = room(2, ConnOptions::default());
    let (mut a, _) = joins.member();
    let (b, b_sock) = joins.member();
    let (c, c_sock) = joins.member();
    assert_eq!(group.len(), 3);

    // The peer closes: the member leaves once its owner is told.
    drop(b);
    eventually("the closed member leaves", || !group.contains(b_sock));
    // Closed from the server's side.
    c_sock.close().unwrap();
    eventually("the closed member leaves", || !group.contains(c_sock));
    assert_eq!(group.len(), 1);
    assert_eq!(group.stats().closed_members, 2);
    // A stale handle cannot join; leave of a non-member is false.
    assert_eq!(group.join(b_sock), Err(SockError::Closed));
    assert!(!group.leave(c_sock));
    drop(c);

    assert_eq!(group.broadcast(numbered(7, 8)), 1);
    assert_eq!(number_of(&read_frame(&mut a)), 7);
    shutdown_gracefully(system);
}

#[test]
fn leave_stops_deliveries_and_a_socket_of_another_system_is_refused() {
    let (system, group, _, joins) = room(1, ConnOptions::default());
    let (mut a, a_sock) = joins.member();
    let (mut b, _) = joins.member();
    assert!(group.leave(a_sock));
    assert!(!group.contains(a_sock) && a_sock.is_open());
    group.broadcast(numbered(1, 8));
    assert_eq!(number_of(&read_frame(&mut b)), 1);
    nothing_more(&mut a);

    let (other, other_group, _, other_joins) = room(1, ConnOptions::default());
    let (_o, o_sock) = other_joins.member();
    assert_eq!(group.join(o_sock), Err(SockError::ForeignSocket));
    assert_eq!(other_group.len(), 1);
    shutdown_gracefully(other);
    shutdown_gracefully(system);
}

#[test]
fn a_broadcast_hands_its_frame_to_each_poller_once_not_once_per_member() {
    const MEMBERS: usize = 8;
    let (system, group, _, joins) = room(2, ConnOptions::default());
    // Sockets are spread over the two pollers in turn: four on each.
    let mut members: Vec<_> = (0..MEMBERS).map(|_| joins.member()).collect();
    assert_eq!(group.broadcast(numbered(42, 16)), MEMBERS);
    for (stream, _) in &mut members {
        assert_eq!(number_of(&read_frame(stream)), 42);
    }
    eventually("every delivery counted", || {
        group.stats().queued == MEMBERS as u64
    });
    let stats = group.stats();
    assert_eq!(stats.broadcasts, 1);
    assert_eq!(stats.poller_handoffs, 2, "one hand-off per poller: {stats}");

    // An empty group hands nothing to anyone.
    let empty = system.sock_group();
    assert_eq!(empty.broadcast(numbered(1, 4)), 0);
    assert_eq!(empty.stats().poller_handoffs, 0);
    shutdown_gracefully(system);
}

#[test]
fn a_group_that_outlives_its_system_broadcasts_to_nobody() {
    let (system, group, _, joins) = room(1, ConnOptions::default());
    let (_a, a_sock) = joins.member();
    shutdown_gracefully(system);
    assert!(!group.contains(a_sock), "shutdown closed the member");
    assert_eq!(group.broadcast(numbered(1, 4)), 0);
    assert_eq!(group.join(a_sock), Err(SockError::Closed));
}
