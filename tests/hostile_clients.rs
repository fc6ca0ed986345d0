//! Clients that do not play along, against a layer-3 echo over real loopback sockets: a
//! reader that pauses, readers that never read (under each slow-consumer policy), a
//! drip-feed, a half-close with large replies still queued, and an owner that reads one
//! request at a time. The server must stay up, bound what it holds, lose nothing without
//! saying so, and keep serving the others.
//!
//! Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::net::SlowConsumer;
use kendynet::{
    Actor, Addr, ConnOptions, Context, DisconnectReason, NetEvent, SockIdent, System, WPacket,
};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};
use support::wire::{client, frame, read_frame, write_frame};
use support::{WAIT, any_port, eventually};

/// What the echo saw.
#[derive(Debug)]
enum Seen {
    Connected(SockIdent),
    HighWater(SockIdent),
    LowWater(SockIdent),
    InputEnded(SockIdent),
    /// A send refused with `Full`, with the socket's dropped count then.
    Full(SockIdent, u64),
    Disconnected(SockIdent, DisconnectReason),
}

enum Msg {
    Net(NetEvent),
    Resume(SockIdent),
}

impl From<NetEvent> for Msg {
    fn from(ev: NetEvent) -> Msg {
        Msg::Net(ev)
    }
}

/// An echo that reports what it sees. `bulk`: each request `n` (a decimal number) is
/// answered with a packet of `n` bytes instead. `pause_on_connect`: reads one request at a
/// time ("active once"), resumed by `Msg::Resume`.
struct Echo {
    out: Sender<Seen>,
    packets: Arc<AtomicU64>,
    bulk: bool,
    pause_on_connect: bool,
}

impl Echo {
    fn new(out: Sender<Seen>) -> Echo {
        Echo {
            out,
            packets: Arc::new(AtomicU64::new(0)),
            bulk: false,
            pause_on_connect: false,
        }
    }
}

impl Actor for Echo {
    type Msg = Msg;

    fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
        let ev = match msg {
            Msg::Net(ev) => ev,
            Msg::Resume(sock) => {
                sock.resume_reading().expect("resume a live socket");
                return;
            }
        };
        let seen = match ev {
            NetEvent::Connected { sock, .. } => {
                if self.pause_on_connect {
                    sock.pause_reading().expect("pause a live socket");
                }
                Seen::Connected(sock)
            }
            NetEvent::Packet { sock, packet } => {
                self.packets.fetch_add(1, Ordering::SeqCst);
                let reply = if self.bulk {
                    let n: usize = std::str::from_utf8(packet.payload())
                        .expect("utf-8 request")
                        .parse()
                        .expect("a length");
                    WPacket::from(kendynet::RPacket::from_payload(&vec![b'r'; n]))
                } else {
                    WPacket::from(packet)
                };
                match sock.send(reply) {
                    Err(kendynet::error::TrySendError::Full(_)) => {
                        Seen::Full(sock, sock.dropped_packets())
                    }
                    _ => return,
                }
            }
            NetEvent::HighWater { sock, .. } => Seen::HighWater(sock),
            NetEvent::LowWater { sock, .. } => Seen::LowWater(sock),
            NetEvent::InputEnded { sock, .. } => Seen::InputEnded(sock),
            NetEvent::Disconnected { sock, reason } => Seen::Disconnected(sock, reason),
            _ => return,
        };
        let _ = self.out.send(seen);
    }
}

/// A one-worker system with `options`, an echo listening on a free port, and what it sees.
fn serve(
    options: ConnOptions,
    echo: impl FnOnce(Sender<Seen>) -> Echo,
) -> (
    System,
    Addr<Echo>,
    std::net::SocketAddr,
    Receiver<Seen>,
    Arc<AtomicU64>,
) {
    let system = System::builder().workers(1).build().expect("system");
    let (tx, rx) = mpsc::channel();
    let echo = echo(tx);
    let packets = echo.packets.clone();
    let addr = system.spawn(echo);
    let bound = system
        .handle()
        .listen_with(any_port(), &addr, options)
        .expect("listen");
    (system, addr, bound, rx, packets)
}

/// Receives until `pick` matches, skipping the rest.
#[track_caller]
fn wait_for<T>(rx: &Receiver<Seen>, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(seen) => {
                if let Some(v) = pick(seen) {
                    return v;
                }
            }
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
        }
    }
}

/// Fixes a socket's kernel receive buffer at 256 KiB, so that a client that does not read
/// stops the server's writes soon (loopback buffers grow to megabytes otherwise).
///
/// Not smaller: loopback's segment size is about 64 KiB, and a receive window that cannot
/// open by a whole segment leaves the sender on zero-window probes, whose backoff grows to
/// minutes. A reader that resumes would then wait on the kernel, not on the server.
fn small_rcvbuf(s: &TcpStream) {
    let size: libc::c_int = 256 * 1024;
    // SAFETY: a valid descriptor, and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF)");
}

/// Writes `frame` over and over without reading until the server stops taking bytes (writes
/// block for `quiet`); returns how many whole frames were written.
fn write_until_stalled(s: &mut TcpStream, frame: &[u8], quiet: Duration) -> u64 {
    s.set_nonblocking(true).unwrap();
    let (mut frames, mut at) = (0u64, 0usize);
    let mut last_progress = Instant::now();
    let deadline = Instant::now() + WAIT;
    while last_progress.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "the server never stopped reading"
        );
        match s.write(&frame[at..]) {
            Ok(n) => {
                at += n;
                if at == frame.len() {
                    at = 0;
                    frames += 1;
                }
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    frames
}

#[test]
fn a_reader_that_pauses_gets_every_echo_back() {
    let options = ConnOptions::default().watermarks(64 << 10, 256 << 10);
    let (system, _echo, addr, rx, _) = serve(options, Echo::new);
    let mut c = client(addr);
    small_rcvbuf(&c);
    let sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    // 32 MiB of echoes: far more than the kernel buffers and the 8 MiB write limit hold.
    const N: usize = 4096;
    const SIZE: usize = 8 << 10;
    let payload = |i: usize| {
        let mut p = vec![(i % 251) as u8; SIZE];
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p
    };
    let written = Arc::new(AtomicU64::new(0));
    let mut w = c.try_clone().unwrap();
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        for i in 0..N {
            w.write_all(&frame(&payload(i))).expect("write");
            progress.store(i as u64 + 1, Ordering::SeqCst);
        }
    });
    // The client does not read until the server has passed its high-water mark and the
    // writer has stalled: the server stopped reading instead of dropping echoes.
    wait_for(&rx, "HighWater", |s| match s {
        Seen::HighWater(s) if s == sock => Some(()),
        Seen::Full(..) => panic!("an echo was refused: {s:?}"),
        _ => None,
    });
    let mut last = written.load(Ordering::SeqCst);
    let mut still_since = Instant::now();
    eventually("the writer to stall", || {
        let now = written.load(Ordering::SeqCst);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
        still_since.elapsed() > Duration::from_millis(300)
    });
    assert!(
        (last as usize) < N,
        "the writer never stalled: the server kept reading"
    );
    for i in 0..N {
        let got = read_frame(&mut c).unwrap_or_else(|e| panic!("echo {i}: {e}"));
        assert!(got == payload(i), "echo {i} differs");
    }
    writer.join().unwrap();
    wait_for(&rx, "LowWater", |s| match s {
        Seen::LowWater(s) if s == sock => Some(()),
        Seen::Full(..) | Seen::Disconnected(..) => panic!("unexpected {s:?}"),
        _ => None,
    });
    drop(c);
    let reason = wait_for(&rx, "Disconnected", |s| match s {
        Seen::Disconnected(_, r) => Some(r),
        Seen::Full(..) => panic!("an echo was refused: {s:?}"),
        _ => None,
    });
    assert_eq!(reason, DisconnectReason::PeerClosed);
    system.shutdown(WAIT);
}

#[test]
fn clients_that_never_read_stop_being_read_and_a_neighbour_is_served() {
    let options = ConnOptions::default().watermarks(64 << 10, 256 << 10);
    let (system, _echo, addr, rx, packets) = serve(options, Echo::new);
    let big = frame(&vec![7u8; 64 << 10]);
    let mut hostile = Vec::new();
    let mut socks = Vec::new();
    for _ in 0..4 {
        let mut c = client(addr);
        small_rcvbuf(&c);
        let sock = wait_for(&rx, "Connected", |s| match s {
            Seen::Connected(sock) => Some(sock),
            _ => None,
        });
        write_until_stalled(&mut c, &big, Duration::from_millis(300));
        hostile.push(c);
        socks.push(sock);
    }
    // Every hostile socket is held at its high-water mark, far below the write limit, and
    // the server reads nothing more from them.
    for &sock in &socks {
        let queued = sock.queued_bytes();
        assert!(
            queued <= 2 << 20,
            "{sock}: {queued} bytes queued for a client that never reads"
        );
    }
    let before = packets.load(Ordering::SeqCst);
    // A well-behaved client beside them gets its round trips.
    let mut good = client(addr);
    for i in 0..100u32 {
        write_frame(&mut good, &i.to_le_bytes()).unwrap();
        assert_eq!(read_frame(&mut good).unwrap(), i.to_le_bytes());
    }
    assert_eq!(
        packets.load(Ordering::SeqCst) - before,
        100,
        "the server read from a client whose output is above its high-water mark"
    );
    while let Ok(seen) = rx.try_recv() {
        assert!(
            !matches!(seen, Seen::Full(..)),
            "an echo was refused: {seen:?}"
        );
    }
    drop(hostile);
    system.shutdown(WAIT);
}

#[test]
fn the_drop_policy_keeps_reading_and_counts_what_it_drops() {
    let options = ConnOptions::default()
        .watermarks(16 << 10, 64 << 10)
        .slow_consumer(SlowConsumer::Drop);
    let (system, _echo, addr, rx, packets) = serve(options, Echo::new);
    let mut c = client(addr);
    small_rcvbuf(&c);
    let sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    // 16 MiB sent, never read: the server goes on reading all of it, though the kernel
    // buffers hold only a few MiB of the echoes.
    const N: u64 = 4096;
    let f = frame(&[1u8; 4096]);
    for _ in 0..N {
        c.write_all(&f).expect("the server kept reading");
    }
    eventually("every packet read", || packets.load(Ordering::SeqCst) == N);
    wait_for(&rx, "HighWater", |s| match s {
        Seen::HighWater(s) if s == sock => Some(()),
        _ => None,
    });
    let dropped = sock.dropped_packets();
    assert!(
        dropped > 0,
        "nothing was dropped for a client that never reads"
    );
    assert!(
        dropped < N,
        "every echo was dropped, none queued up to the mark"
    );
    // Each refusal the echo saw is counted once, and every count is a refusal it saw.
    let mut fulls = 0;
    eventually("every refusal reported", || {
        while let Ok(seen) = rx.try_recv() {
            if let Seen::Full(s, count) = seen {
                assert_eq!(s, sock);
                fulls += 1;
                assert_eq!(count, fulls, "each refused send is counted once");
            }
        }
        fulls == sock.dropped_packets()
    });
    drop(c);
    system.shutdown(WAIT);
}

#[test]
fn the_disconnect_policy_closes_a_slow_consumer_after_its_grace() {
    let options = ConnOptions::default()
        .watermarks(16 << 10, 64 << 10)
        .slow_consumer(SlowConsumer::Disconnect {
            grace: Duration::from_millis(200),
        });
    let (system, _echo, addr, rx, _) = serve(options, Echo::new);
    let mut c = client(addr);
    small_rcvbuf(&c);
    let sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    c.set_nonblocking(true).unwrap();
    let f = frame(&[2u8; 4096]);
    let reason = {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "never disconnected");
            let _ = c.write(&f);
            if let Ok(Seen::Disconnected(s, r)) = rx.recv_timeout(Duration::from_millis(5)) {
                assert_eq!(s, sock);
                break r;
            }
        }
    };
    assert!(
        matches!(reason, DisconnectReason::SlowConsumer { queued } if queued > 16 << 10),
        "{reason:?}"
    );
    system.shutdown(WAIT);
}

#[test]
fn a_drip_fed_packet_hits_the_packet_deadline_and_whole_packets_do_not() {
    let options = ConnOptions::default().packet_timeout(Some(Duration::from_millis(300)));
    let (system, _echo, addr, rx, _) = serve(options, Echo::new);
    // One byte every 50 ms of a packet that declares 100: never whole in time.
    let mut drip = client(addr);
    let dripping = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    // Whole small packets every 50 ms over the same time: never late.
    let mut steady = client(addr);
    let steady_sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    drip.write_all(&100u32.to_le_bytes()).unwrap();
    let deadline = Instant::now() + WAIT;
    let reason = loop {
        assert!(Instant::now() < deadline, "the drip-feed was never closed");
        let _ = drip.write_all(b"x");
        write_frame(&mut steady, b"ping").unwrap();
        assert_eq!(read_frame(&mut steady).unwrap(), b"ping");
        if let Ok(Seen::Disconnected(s, r)) = rx.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(s, dripping, "only the drip-feed is closed");
            break r;
        }
    };
    assert_eq!(reason, DisconnectReason::PacketTimeout);
    assert!(steady_sock.is_open());
    system.shutdown(WAIT);
}

#[test]
fn a_half_close_gets_every_reply_queued_after_it() {
    let (system, _echo, addr, rx, _) = serve(ConnOptions::default(), |out| Echo {
        bulk: true,
        ..Echo::new(out)
    });
    let mut c = client(addr);
    let sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    // 20 requests for 256 KiB each (5 MiB of replies, past the high-water mark), then the
    // client ends its output at once.
    const N: usize = 20;
    const SIZE: usize = 256 << 10;
    for _ in 0..N {
        write_frame(&mut c, SIZE.to_string().as_bytes()).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    for i in 0..N {
        let reply = read_frame(&mut c).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(reply.len(), SIZE, "reply {i}");
    }
    let mut rest = [0u8; 1];
    assert_eq!(
        c.read(&mut rest).unwrap(),
        0,
        "the server closes after the replies"
    );
    wait_for(&rx, "InputEnded", |s| match s {
        Seen::InputEnded(s) if s == sock => Some(()),
        Seen::Disconnected(..) => panic!("closed before the input ended: {s:?}"),
        _ => None,
    });
    let reason = wait_for(&rx, "Disconnected", |s| match s {
        Seen::Disconnected(s, r) if s == sock => Some(r),
        _ => None,
    });
    assert_eq!(reason, DisconnectReason::PeerClosed);
    system.shutdown(WAIT);
}

#[test]
fn an_owner_can_read_one_request_at_a_time() {
    let (system, echo, addr, rx, packets) = serve(ConnOptions::default(), |out| Echo {
        pause_on_connect: true,
        ..Echo::new(out)
    });
    let mut c = client(addr);
    let sock = wait_for(&rx, "Connected", |s| match s {
        Seen::Connected(sock) => Some(sock),
        _ => None,
    });
    for i in 0..3u8 {
        write_frame(&mut c, &[i]).unwrap();
    }
    // Paused: nothing is read, however long we look (a bounded look).
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        c.read(&mut byte).is_err(),
        "an echo came back while reading was paused"
    );
    assert_eq!(packets.load(Ordering::SeqCst), 0);
    c.set_read_timeout(Some(WAIT)).unwrap();
    assert!(echo.send(Msg::Resume(sock)).is_ok(), "resume");
    for i in 0..3u8 {
        assert_eq!(read_frame(&mut c).unwrap(), [i]);
    }
    system.shutdown(WAIT);
}
