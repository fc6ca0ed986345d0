//! The actor runtime end to end: an echo over a listener, an owner's backlog pausing its
//! socket's reading, a timer, and a pool as a listener's owner.

mod support;

use kendynet::{Actor, Context, NetEvent, System, WPacket};
use std::io::{Read, Write};
use std::time::Duration;
use support::wire::client;
use support::{any_port, recv, shutdown_gracefully};

struct Echo;
impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

#[test]
fn echo_round_trip() {
    let system = System::builder().workers(2).build().unwrap();
    let echo = system.spawn(Echo);
    let addr = system.listen(any_port(), &echo).unwrap();
    let mut c = client(addr);
    for i in 0..100u32 {
        let mut p = WPacket::new();
        p.write_u32(i).write_str("hello");
        let frame = p.into_frame();
        c.write_all(&frame).unwrap();
        let mut back = vec![0u8; frame.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back[..], &frame[..]);
    }
    drop(c);
    shutdown_gracefully(system);
}

/// An owner that stops handling messages must not make its mailbox grow without bound: the
/// socket stops reading once the owner's backlog passes the limit, and TCP pushes back.
#[test]
fn slow_owner_pauses_reading_instead_of_growing_its_mailbox() {
    use std::sync::mpsc;

    struct Stuck {
        gate: Option<mpsc::Receiver<()>>,
        seen: mpsc::Sender<usize>,
        count: usize,
    }
    impl Actor for Stuck {
        type Msg = NetEvent;
        fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
            if let NetEvent::Packet { .. } = ev {
                self.count += 1;
                if let Some(gate) = self.gate.take() {
                    // Block on the first packet until the test lets go (bounded).
                    let _ = gate.recv_timeout(Duration::from_secs(20));
                }
                if self.count % 1000 == 0 {
                    let _ = self.seen.send(self.count);
                }
            }
        }
    }

    const BACKLOG: usize = 1_000;
    let system = System::builder()
        .workers(2)
        .owner_backlog(BACKLOG)
        .build()
        .unwrap();
    let (release_tx, release_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let owner = system.spawn(Stuck {
        gate: Some(release_rx),
        seen: seen_tx,
        count: 0,
    });
    let addr = system.listen(any_port(), &owner).unwrap();
    let mut c = client(addr);
    c.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // 4M small packets = 48 MB in 4 KiB writes, far more than the kernel's socket buffers
    // hold; stop at the first write that times out.
    let mut p = WPacket::new();
    p.write_u64(7);
    let frame = p.into_frame();
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 341)
        .collect();
    let total_chunks = 4_000_000 / 341;
    let mut written = 0;
    let mut max_backlog = 0;
    for _ in 0..total_chunks {
        if c.write_all(&chunk).is_err() {
            break;
        }
        written += 1;
        max_backlog = max_backlog.max(owner.mailbox_len());
    }
    // Let the socket's reading settle, then look at the backlog once more.
    std::thread::sleep(Duration::from_millis(200));
    max_backlog = max_backlog.max(owner.mailbox_len());
    assert!(
        written < total_chunks,
        "the server never pushed back: {written} chunks written"
    );
    // One read pass may deliver up to 512 KiB (43k of these packets) past the limit.
    assert!(
        max_backlog < BACKLOG + 45_000,
        "mailbox grew to {max_backlog}"
    );
    // Release the owner: everything written is handled in the end.
    release_tx.send(()).unwrap();
    let expected = written * 341;
    let mut last = 0;
    while last + 1000 <= expected {
        last = seen_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the owner catches up");
    }
    drop(c);
    system.shutdown(Duration::from_secs(5));
}

/// `send_after` delivers once the delay has passed, on a worker timer.
#[test]
fn send_after_delivers_after_the_delay() {
    use std::sync::mpsc;
    use std::time::Instant;
    struct Clock(mpsc::Sender<Instant>);
    impl Actor for Clock {
        type Msg = ();
        fn handle(&mut self, _: (), _: &mut Context<Self>) {
            let _ = self.0.send(Instant::now());
        }
    }
    let system = System::builder().workers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let clock = system.spawn(Clock(tx));
    let start = Instant::now();
    clock.send_after(Duration::from_millis(50), ());
    let fired = recv(&rx, "the timer to fire");
    assert!(fired.duration_since(start) >= Duration::from_millis(50));
    system.shutdown(Duration::from_secs(5));
}

/// A pool as the listener's owner: each socket's events all reach one instance, in order,
/// and the sockets are spread over the instances.
#[test]
fn pool_as_socket_owner_keeps_each_socket_on_one_instance() {
    use kendynet::{Pool, PoolRouting, SockIdent};
    use std::collections::HashMap;
    use std::sync::mpsc;

    struct Member {
        index: usize,
        log: mpsc::Sender<(usize, SockIdent, &'static str)>,
    }
    impl Actor for Member {
        type Msg = NetEvent;
        fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
            let (sock, what) = match ev {
                NetEvent::Connected { sock, .. } => (sock, "connected"),
                NetEvent::Packet { sock, packet } => {
                    let _ = sock.send(WPacket::from(packet));
                    (sock, "packet")
                }
                NetEvent::Disconnected { sock, .. } => (sock, "disconnected"),
                _ => return,
            };
            let _ = self.log.send((self.index, sock, what));
        }
    }

    let system = System::builder().workers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let pool = Pool::spawn(&system, 3, PoolRouting::LeastLoaded, |index| Member {
        index,
        log: tx.clone(),
    });
    let addr = system.listen(any_port(), pool.socket_owner()).unwrap();
    const CLIENTS: usize = 12;
    const PACKETS: u32 = 20;
    for _ in 0..CLIENTS {
        let mut c = client(addr);
        for i in 0..PACKETS {
            let mut p = WPacket::new();
            p.write_u32(i);
            let frame = p.into_frame();
            c.write_all(&frame).unwrap();
            let mut back = vec![0u8; frame.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(&back[..], &frame[..]);
        }
    }
    // Every socket: connected, PACKETS packets, disconnected, all on one instance.
    let mut per_sock: HashMap<SockIdent, Vec<(usize, &str)>> = HashMap::new();
    let expected = CLIENTS * (PACKETS as usize + 2);
    for _ in 0..expected {
        let (index, sock, what) = recv(&rx, "an event");
        per_sock.entry(sock).or_default().push((index, what));
    }
    assert_eq!(per_sock.len(), CLIENTS);
    let mut used = std::collections::HashSet::new();
    for events in per_sock.values() {
        let first = events[0].0;
        assert!(
            events.iter().all(|(i, _)| *i == first),
            "a socket's events were split"
        );
        assert_eq!(events.first().unwrap().1, "connected");
        assert_eq!(events.last().unwrap().1, "disconnected");
        used.insert(first);
    }
    assert!(used.len() > 1, "all sockets landed on one instance");
    system.shutdown(Duration::from_secs(5));
}
