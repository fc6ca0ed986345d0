//! Soak test: many connections echo checked packets through a layer-3 server for a while, and
//! the run fails unless every echoed byte came back, in order, and memory stayed flat.
//!
//! ```text
//! soak [--secs S] [--conns N] [--addr HOST:PORT] [--workers W] [--inflight K]
//!      [--client-threads T] [--seed X] [--warmup S]
//! ```
//!
//! Without `--addr` the server runs in this process: a kendynet `System` whose echo actors own
//! the listener and the sockets (as `echo_server --layer 3` does). With `--addr` the clients
//! soak an external server that echoes length-framed packets.
//!
//! The clients are `T` threads (default 1), each driving its share of the connections with
//! non-blocking sockets and its own epoll loop: no thread per connection, and no kendynet code
//! on the receiving side, so that the framing is checked by an independent reader. Each
//! connection keeps up to `K` packets in flight. Packet `s` of connection `c` is a pure
//! function of `(seed, c, s)`: its size (16 B to 16 KiB, small sizes more likely), a
//! sequence number, a checksum and pseudo-random bytes; every echo is compared byte for byte
//! with the packet regenerated from its sequence number.
//!
//! Every 10 s (and at the end) it prints the packets checked, lost, misordered and corrupted,
//! and the process's resident memory (`VmRSS`). It exits with status 1 if anything was lost,
//! misordered or corrupted, a connection dropped, the server refused an echo
//! (`TrySendError::Full`), or the resident memory at the end (the larger of the last sample
//! under load and the one after the drain) exceeds [`RSS_GROWTH_LIMIT`] times the sample taken
//! at the end of the warm-up (`--warmup`, default half the run, at most [`MAX_WARMUP`]), plus
//! [`RSS_SLACK_MIB`]. With `--addr` the memory is this
//! process's (the clients') only.

use kendynet::signal::ShutdownSignal;
use kendynet::{Actor, Addr, Context, NetEvent, System, TrySendError, WPacket};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: soak [--secs S] [--conns N] [--addr HOST:PORT] [--workers W] \
[--inflight K] [--client-threads T] [--seed X] [--warmup S]";

/// Default number of connections.
const DEFAULT_CONNS: usize = 2000;
/// Default run time (sending), in seconds.
const DEFAULT_SECS: f64 = 60.0;
/// Default packets in flight per connection.
const DEFAULT_INFLIGHT: usize = 4;
/// Smallest packet payload: sequence number and checksum.
const MIN_PACKET: usize = 16;
/// Largest packet payload.
const MAX_PACKET: usize = 16 * 1024;
/// How often a progress line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The longest warm-up; shorter runs warm up for half their time. The server's memory
/// settles slowly: each connection's receive buffer grows towards its read chunk (64 KiB) as
/// it meets larger bursts, so a 2000-connection server went from ~60 MiB after 10 s to ~80 MiB
/// after 30 s and levelled off near 100 MiB after a minute (measured with the defaults).
const MAX_WARMUP: Duration = Duration::from_secs(60);
/// How long the clients wait, after sending stops, for the echoes still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting all the clients may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The resident memory at the end may be at most this many times the sample at the end of
/// the warm-up (plus [`RSS_SLACK_MIB`]).
const RSS_GROWTH_LIMIT: f64 = 1.25;
/// Constant slack on top of [`RSS_GROWTH_LIMIT`], in MiB (allocator noise on small heaps).
const RSS_SLACK_MIB: f64 = 16.0;

struct Args {
    secs: f64,
    conns: usize,
    addr: Option<SocketAddr>,
    workers: usize,
    inflight: usize,
    client_threads: usize,
    seed: u64,
    warmup: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        secs: DEFAULT_SECS,
        conns: DEFAULT_CONNS,
        addr: None,
        workers: 1,
        inflight: DEFAULT_INFLIGHT,
        client_threads: 1,
        seed: 0x5eed_50a6,
        warmup: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--secs" => a.secs = parse(&flag, &value)?,
            "--conns" => a.conns = parse(&flag, &value)?,
            "--addr" => {
                let addr = value
                    .to_socket_addrs()
                    .map_err(|e| format!("bad --addr {value}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--addr {value} resolves to nothing"))?;
                a.addr = Some(addr);
            }
            "--workers" => a.workers = parse(&flag, &value)?,
            "--inflight" => a.inflight = parse(&flag, &value)?,
            "--client-threads" => a.client_threads = parse(&flag, &value)?,
            "--seed" => a.seed = parse(&flag, &value)?,
            "--warmup" => a.warmup = Some(parse(&flag, &value)?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !(a.secs > 0.0 && a.secs.is_finite()) {
        return Err("--secs must be positive".into());
    }
    if a.conns == 0 || a.inflight == 0 || a.client_threads == 0 || a.workers == 0 {
        return Err(
            "--conns, --inflight, --client-threads and --workers must be at least 1".into(),
        );
    }
    a.client_threads = a.client_threads.min(a.conns);
    Ok(a)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("bad value for {flag}: {value}"))
}

// ---------------------------------------------------------------------------------------
// The in-process server.

/// What the server counts. `full` is an echo refused with `TrySendError::Full`: the socket is
/// then closed (the client sees it and the run fails), never silently dropped.
#[derive(Default)]
struct ServerCounters {
    packets: AtomicU64,
    full: AtomicU64,
    closed: AtomicU64,
}

/// An echo actor, as in `echo_server --layer 3`: the first (the gate) owns the listener and
/// spreads new sockets over the others.
struct Echo {
    counters: Arc<ServerCounters>,
    peers: Vec<Addr<Echo>>,
    next: usize,
}

impl Actor for Echo {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } if !self.peers.is_empty() => {
                self.next = (self.next + 1) % self.peers.len();
                if let Err(e) = sock.hand_to(&self.peers[self.next]) {
                    eprintln!("soak: server: cannot hand {sock} over: {e}");
                }
            }
            NetEvent::Packet { sock, packet } => {
                self.counters.packets.fetch_add(1, Ordering::Relaxed);
                match sock.send(WPacket::from(packet)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        // The client reads everything, so this is a server fault: count it
                        // and close, so that the client sees the loss at once.
                        self.counters.full.fetch_add(1, Ordering::Relaxed);
                        let _ = sock.close();
                    }
                    Err(TrySendError::Closed(_)) => {
                        self.counters.closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }
}

fn start_server(workers: usize) -> io::Result<(System, SocketAddr, Arc<ServerCounters>)> {
    let system = System::builder().workers(workers).build()?;
    let counters = Arc::new(ServerCounters::default());
    let peers: Vec<Addr<Echo>> = if workers > 1 {
        (0..workers)
            .map(|_| {
                system.spawn(Echo {
                    counters: counters.clone(),
                    peers: Vec::new(),
                    next: 0,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let gate = system.spawn(Echo {
        counters: counters.clone(),
        peers,
        next: 0,
    });
    let addr = system.listen("127.0.0.1:0".parse().expect("address"), &gate)?;
    Ok((system, addr, counters))
}

// ---------------------------------------------------------------------------------------
// Packets: a pure function of (seed, connection, sequence number).

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over the sequence number and the body.
fn checksum(seq: &[u8], body: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in seq.iter().chain(body) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes packet `seq` of the connection whose seed is `conn_seed` into `out` (cleared
/// first): `seq` (u64 LE), checksum (u64 LE), then pseudo-random bytes. Sizes run from
/// [`MIN_PACKET`] to [`MAX_PACKET`], each power-of-two range equally likely.
fn make_payload(conn_seed: u64, seq: u64, out: &mut Vec<u8>) {
    let mut state = splitmix(conn_seed ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let r = splitmix(state);
    let min_bits = MIN_PACKET.trailing_zeros();
    let max_bits = MAX_PACKET.trailing_zeros();
    let bits = min_bits + (r % u64::from(max_bits - min_bits + 1)) as u32;
    let size = ((1usize << bits) + (r >> 32) as usize % (1usize << bits)).min(MAX_PACKET);
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    while out.len() < size {
        state = splitmix(state);
        let take = (size - out.len()).min(8);
        out.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    let sum = checksum(&out[..8], &out[16..]);
    out[8..16].copy_from_slice(&sum.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// The clients.

/// Totals over all client threads.
#[derive(Default)]
struct ClientCounters {
    connected: AtomicU64,
    sent: AtomicU64,
    checked: AtomicU64,
    lost: AtomicU64,
    misordered: AtomicU64,
    corrupted: AtomicU64,
    disconnects: AtomicU64,
    bytes: AtomicU64,
}

struct Conn {
    stream: TcpStream,
    seed: u64,
    /// The next sequence number to send.
    next_send: u64,
    /// The next sequence number expected back.
    next_recv: u64,
    /// Bytes the socket has not taken yet (from `out_pos` on).
    out: Vec<u8>,
    out_pos: usize,
    /// A frame cut by the end of a read, until the rest arrives (then freed).
    inbuf: Vec<u8>,
    dead: bool,
}

/// What one batch of received bytes added up to.
#[derive(Default)]
struct Tally {
    checked: u64,
    lost: u64,
    misordered: u64,
    corrupted: u64,
}

impl Tally {
    fn add_to(&self, k: &ClientCounters) {
        k.checked.fetch_add(self.checked, Ordering::Relaxed);
        k.lost.fetch_add(self.lost, Ordering::Relaxed);
        k.misordered.fetch_add(self.misordered, Ordering::Relaxed);
        k.corrupted.fetch_add(self.corrupted, Ordering::Relaxed);
    }
}

/// The frame header: a 4-byte little-endian payload length.
const H: usize = kendynet::net::HEADER_LEN;

impl Conn {
    fn in_flight(&self) -> u64 {
        self.next_send - self.next_recv
    }

    /// Writes a frame: straight to the socket if nothing waits before it; what the socket
    /// does not take waits in `out`.
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.out.is_empty() {
            let mut pos = 0;
            while pos < frame.len() {
                match self.stream.write(&frame[pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.extend_from_slice(&frame[pos..]);
            Ok(())
        } else {
            self.out.extend_from_slice(frame);
            self.flush()
        }
    }

    /// Writes `out` until it is empty or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Give the buffer back (as `feed` does with `inbuf`): the memory stays with the
        // connections that have bytes waiting.
        self.out = Vec::new();
        self.out_pos = 0;
        Ok(())
    }

    /// Checks the frames in `bytes` (4-byte little-endian length, then the payload) against
    /// the packets regenerated from their sequence numbers. Only a frame cut by the end of
    /// `bytes` is copied (into `inbuf`, which so never holds more than one frame).
    fn feed(
        &mut self,
        mut bytes: &[u8],
        payload: &mut Vec<u8>,
        t: &mut Tally,
    ) -> Result<(), String> {
        while !bytes.is_empty() {
            if self.inbuf.is_empty() && bytes.len() >= H {
                let len = frame_len(&bytes[..H], t)?;
                if bytes.len() >= H + len {
                    self.check(&bytes[H..H + len], payload, t);
                    bytes = &bytes[H + len..];
                    continue;
                }
            }
            // Complete the header, then the frame, in `inbuf`.
            let need = if self.inbuf.len() < H {
                H - self.inbuf.len()
            } else {
                H + frame_len(&self.inbuf[..H], t)? - self.inbuf.len()
            };
            let take = need.min(bytes.len());
            self.inbuf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.inbuf.len() >= H {
                let len = frame_len(&self.inbuf[..H], t)?;
                if self.inbuf.len() == H + len {
                    // The buffer goes back to the allocator: kept, every connection would
                    // in time hold one as large as the largest frame it ever saw cut, and the
                    // process's memory would creep up for the whole run.
                    let frame = std::mem::take(&mut self.inbuf);
                    self.check(&frame[H..], payload, t);
                }
            }
        }
        Ok(())
    }

    /// Checks one echoed payload.
    fn check(&mut self, body: &[u8], payload: &mut Vec<u8>, t: &mut Tally) {
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let sum = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        if checksum(&body[..8], &body[16..]) != sum {
            t.corrupted += 1;
            return;
        }
        if seq != self.next_recv {
            t.misordered += 1;
            if seq > self.next_recv && seq < self.next_send {
                // Everything skipped is lost (should it come later, it counts as misordered
                // as well).
                t.lost += seq - self.next_recv;
                self.next_recv = seq + 1;
            }
            return;
        }
        make_payload(self.seed, seq, payload);
        if payload.as_slice() == body {
            t.checked += 1;
        } else {
            t.corrupted += 1;
        }
        self.next_recv += 1;
    }
}

/// The payload length a header declares; one outside the sizes sent is a corrupted frame
/// (and the end of that connection: the stream can no longer be parsed).
fn frame_len(header: &[u8], t: &mut Tally) -> Result<usize, String> {
    let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
    if (MIN_PACKET..=MAX_PACKET).contains(&len) {
        Ok(len)
    } else {
        t.corrupted += 1;
        Err(format!("a frame declares {len} bytes"))
    }
}

/// A minimal epoll wrapper for the client loop.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open and `ev` is a live epoll_event.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a live buffer of `events.len()` epoll_events.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

struct Client {
    conns: Vec<Conn>,
    inflight: u64,
    counters: Arc<ClientCounters>,
    payload: Vec<u8>,
    scratch: Vec<u8>,
}

impl Client {
    /// Writes what is queued, then new packets until the connection has `inflight` in
    /// flight (when `sending`). Bytes the socket does not take wait in the connection's
    /// `out`, which stays small: it only ever holds what the kernel refused.
    fn pump_out(&mut self, i: usize, sending: bool) {
        let c = &mut self.conns[i];
        if c.dead {
            return;
        }
        let mut res = c.flush();
        let mut queued = 0;
        while res.is_ok() && sending && c.in_flight() < self.inflight {
            make_payload(c.seed, c.next_send, &mut self.payload);
            let mut p = WPacket::with_capacity(self.payload.len());
            p.write_raw(&self.payload);
            res = c.send_frame(&p.into_frame());
            c.next_send += 1;
            queued += 1;
        }
        self.counters.sent.fetch_add(queued, Ordering::Relaxed);
        if let Err(e) = res {
            self.kill(i, &format!("write failed: {e}"));
        }
    }

    /// Reads what the socket has and checks every complete packet.
    fn pump_in(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            if c.dead {
                return;
            }
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.kill(i, "the server closed the connection");
                    return;
                }
                Ok(n) => {
                    self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let mut t = Tally::default();
                    let res = c.feed(&self.scratch[..n], &mut self.payload, &mut t);
                    t.add_to(&self.counters);
                    if let Err(why) = res {
                        self.kill(i, &why);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.kill(i, &format!("read failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Gives up on a connection: everything in flight is lost.
    fn kill(&mut self, i: usize, why: &str) {
        let c = &mut self.conns[i];
        if c.dead {
            return;
        }
        c.dead = true;
        let lost = c.in_flight();
        c.next_recv = c.next_send;
        let n = self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.counters.lost.fetch_add(lost, Ordering::Relaxed);
        if n < 5 {
            eprintln!("soak: connection {i}: {why} ({lost} packet(s) in flight lost)");
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }

    fn in_flight(&self) -> u64 {
        self.conns
            .iter()
            .filter(|c| !c.dead)
            .map(Conn::in_flight)
            .sum()
    }
}

/// One client thread: connects `ids`, then pumps until `stop` is set, then drains.
fn client_thread(
    addr: SocketAddr,
    ids: std::ops::Range<usize>,
    a: ClientParams,
    counters: Arc<ClientCounters>,
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let epoll = Epoll::new().map_err(|e| format!("epoll_create1: {e}"))?;
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut conns = Vec::with_capacity(ids.len());
    for id in ids {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connection {id}: cannot connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|e| format!("connection {id}: {e}"))?;
        conns.push(Conn {
            stream,
            seed: splitmix(a.seed ^ (id as u64).wrapping_mul(0xa076_1d64_78bd_642f)),
            next_send: 0,
            next_recv: 0,
            out: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            dead: false,
        });
        counters.connected.fetch_add(1, Ordering::Relaxed);
        if Instant::now() > connect_deadline {
            return Err(format!("connecting took over {CONNECT_TIMEOUT:?}"));
        }
    }
    for (i, c) in conns.iter().enumerate() {
        epoll
            .add(c.stream.as_raw_fd(), i as u64)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
    }
    let mut cl = Client {
        conns,
        inflight: a.inflight,
        counters,
        payload: Vec::with_capacity(MAX_PACKET),
        scratch: vec![0; 64 * 1024],
    };
    // Wait for every thread to connect, so that the clock starts with all connections up.
    while !go.load(Ordering::Acquire) {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(5));
    }
    for i in 0..cl.conns.len() {
        cl.pump_out(i, true);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut drain_deadline = None;
    loop {
        let sending = !stop.load(Ordering::Acquire);
        if !sending {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
            let left = cl.in_flight();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                cl.counters.lost.fetch_add(left, Ordering::Relaxed);
                return Err(format!(
                    "{left} packet(s) still in flight {DRAIN_TIMEOUT:?} after sending stopped"
                ));
            }
        }
        let n = epoll
            .wait(&mut events, Duration::from_millis(100))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let flags = ev.events;
            if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
                != 0
            {
                cl.pump_in(i);
            }
            // Echoes free room for more packets; a writable socket takes queued bytes.
            cl.pump_out(i, sending);
        }
    }
}

#[derive(Clone, Copy)]
struct ClientParams {
    inflight: u64,
    seed: u64,
}

// ---------------------------------------------------------------------------------------

/// The resident memory of this process in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(t: f64, k: &ClientCounters, server: Option<&ServerCounters>, mbps: f64, rss: u64) {
    let server = server.map_or(String::new(), |s| {
        format!(" server_full={}", s.full.load(Ordering::Relaxed))
    });
    println!(
        "soak: t={t:.0}s conns={} sent={} checked={} lost={} misordered={} corrupted={} \
         disconnects={}{server} echoed_MB/s={mbps:.1} rss={:.1}MiB",
        k.connected.load(Ordering::Relaxed),
        k.sent.load(Ordering::Relaxed),
        k.checked.load(Ordering::Relaxed),
        k.lost.load(Ordering::Relaxed),
        k.misordered.load(Ordering::Relaxed),
        k.corrupted.load(Ordering::Relaxed),
        k.disconnects.load(Ordering::Relaxed),
        mib(rss),
    );
}

fn main() -> ExitCode {
    // Before any thread starts: Ctrl-C and SIGTERM end the run early, gracefully.
    let signal = match ShutdownSignal::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: cannot take SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    match kendynet::net::raise_fd_limit() {
        Ok(limit) => eprintln!("soak: descriptor limit {limit}"),
        Err(e) => eprintln!("soak: cannot raise the descriptor limit: {e}"),
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (server, addr) = match args.addr {
        Some(addr) => (None, addr),
        None => match start_server(args.workers) {
            Ok((system, addr, counters)) => (Some((system, counters)), addr),
            Err(e) => {
                eprintln!("soak: cannot start the server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let where_ = if server.is_some() {
        "in-process layer-3 server"
    } else {
        "external server"
    };
    eprintln!(
        "soak: {} connection(s), {} in flight each, {} client thread(s), against the {where_} \
         at {addr}, for {}s",
        args.conns, args.inflight, args.client_threads, args.secs
    );

    let counters = Arc::new(ClientCounters::default());
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let params = ClientParams {
        inflight: args.inflight as u64,
        seed: args.seed,
    };
    let per = args.conns.div_ceil(args.client_threads);
    let mut threads = Vec::new();
    for t in 0..args.client_threads {
        let ids = (t * per)..((t + 1) * per).min(args.conns);
        let (k, g, s) = (counters.clone(), go.clone(), stop.clone());
        let h = thread::Builder::new()
            .name(format!("soak-client-{t}"))
            .spawn(move || client_thread(addr, ids, params, k, g, s));
        match h {
            Ok(h) => threads.push(h),
            Err(e) => {
                eprintln!("soak: cannot start a client thread: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    // Wait for all connections (or a client thread that gave up).
    let connect_start = Instant::now();
    while counters.connected.load(Ordering::Relaxed) < args.conns as u64
        && !threads.iter().any(|h| h.is_finished())
        && connect_start.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1)
    {
        thread::sleep(Duration::from_millis(10));
    }
    let connected = counters.connected.load(Ordering::Relaxed);
    eprintln!(
        "soak: {connected} connection(s) up in {:.2}s",
        connect_start.elapsed().as_secs_f64()
    );
    let all_up = connected == args.conns as u64;
    if !all_up {
        stop.store(true, Ordering::Release);
    }
    go.store(true, Ordering::Release);

    let server_counters = server.as_ref().map(|(_, c)| c.clone());
    let warmup = Duration::from_secs_f64(
        args.warmup
            .unwrap_or_else(|| (args.secs / 2.0).min(MAX_WARMUP.as_secs_f64())),
    );
    let start = Instant::now();
    let run = Duration::from_secs_f64(args.secs);
    let mut next_report = REPORT_EVERY;
    let mut warm_rss: Option<u64> = None;
    let (mut last_t, mut last_bytes) = (Duration::ZERO, 0);
    let mut early_end = false;
    let mut interrupted = false;
    loop {
        let now = start.elapsed();
        if !all_up {
            break;
        }
        if now >= run {
            break;
        }
        if threads.iter().any(|h| h.is_finished()) {
            early_end = true;
            break;
        }
        if warm_rss.is_none() && now >= warmup {
            let r = rss_kib();
            eprintln!(
                "soak: warm-up over after {:.1}s, rss={:.1}MiB",
                now.as_secs_f64(),
                mib(r)
            );
            warm_rss = Some(r);
        }
        if now >= next_report {
            let bytes = counters.bytes.load(Ordering::Relaxed);
            let mbps = (bytes - last_bytes) as f64 / 1e6 / (now - last_t).as_secs_f64();
            report(
                now.as_secs_f64(),
                &counters,
                server_counters.as_deref(),
                mbps,
                rss_kib(),
            );
            (last_t, last_bytes) = (now, bytes);
            next_report += REPORT_EVERY;
        }
        if let Ok(Some(sig)) = signal.wait_timeout(Duration::from_millis(50).min(run - now)) {
            eprintln!("soak: {sig}: ending the run early");
            interrupted = true;
            break;
        }
    }
    let sent_for = start.elapsed();
    // The last sample under load; the one after the drain is taken too, and the larger counts.
    let loaded_rss = rss_kib();
    stop.store(true, Ordering::Release);
    let mut failures = Vec::new();
    for h in threads {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a client thread panicked".into()),
        }
    }
    let final_rss = rss_kib().max(loaded_rss);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let mbps = (bytes - last_bytes) as f64 / 1e6 / (sent_for - last_t).as_secs_f64().max(1e-3);
    report(
        sent_for.as_secs_f64(),
        &counters,
        server_counters.as_deref(),
        mbps,
        final_rss,
    );
    println!(
        "soak: total {:.1} MB echoed and checked in {:.1}s",
        bytes as f64 / 1e6,
        sent_for.as_secs_f64()
    );

    if !all_up {
        failures.push(format!(
            "only {connected} of {} connection(s) came up",
            args.conns
        ));
    }
    if early_end {
        failures.push("a client thread ended before the run did".into());
    }
    let k = &counters;
    for (what, v) in [
        ("packet(s) lost", &k.lost),
        ("packet(s) misordered", &k.misordered),
        ("packet(s) corrupted", &k.corrupted),
        ("connection(s) dropped", &k.disconnects),
    ] {
        let v = v.load(Ordering::Relaxed);
        if v != 0 {
            failures.push(format!("{v} {what}"));
        }
    }
    if k.checked.load(Ordering::Relaxed) == 0 {
        failures.push("no packet was checked".into());
    }
    if let Some(s) = &server_counters {
        let full = s.full.load(Ordering::Relaxed);
        if full != 0 {
            failures.push(format!(
                "the server's echo was refused as Full {full} time(s) (socket closed)"
            ));
        }
    }
    match warm_rss {
        Some(warm) => {
            let limit = warm as f64 * RSS_GROWTH_LIMIT + RSS_SLACK_MIB * 1024.0;
            println!(
                "soak: rss after warm-up {:.1}MiB, at the end {:.1}MiB, limit {:.1}MiB \
                 ({RSS_GROWTH_LIMIT}x + {RSS_SLACK_MIB}MiB)",
                mib(warm),
                mib(final_rss),
                limit / 1024.0
            );
            if final_rss as f64 > limit {
                failures.push(format!(
                    "resident memory grew from {:.1}MiB after warm-up to {:.1}MiB (limit \
                     {RSS_GROWTH_LIMIT}x + {RSS_SLACK_MIB}MiB = {:.1}MiB)",
                    mib(warm),
                    mib(final_rss),
                    limit / 1024.0
                ));
            }
        }
        None if all_up && !early_end && !interrupted => {
            failures.push("the run ended before the warm-up did (raise --secs)".into());
        }
        None => {}
    }

    if let Some((system, counters)) = server {
        let report = system.shutdown(Duration::from_secs(5));
        if !report.graceful {
            eprintln!("soak: server shutdown was forced: {report:?}");
        }
        eprintln!(
            "soak: server echoed {} packet(s); {} echo(es) to closed sockets",
            counters.packets.load(Ordering::Relaxed),
            counters.closed.load(Ordering::Relaxed)
        );
    }

    if failures.is_empty() {
        println!("soak: PASS");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("soak: FAIL: {f}");
        }
        ExitCode::FAILURE
    }
}
