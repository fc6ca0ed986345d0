//! Helpers for the layer-3 integration tests, on top of the shared ones in `tests/util`:
//! frame readers, numbered payloads, and a probe actor that reports every network event it is
//! given.
//!
//! Every wait here is bounded by [`WAIT`] and fails the test with a message saying what it was
//! waiting for; nothing here sleeps in the hope that something has happened meanwhile.

#![allow(dead_code, reason = "not every test uses every helper")]

pub use super::util::{WAIT, any_port, client, frame, recv, write_frame};

use kendynet::{
    Actor, ActorId, Addr, Context, DisconnectReason, NetEvent, Recipient, SockIdent, StopReason,
    WPacket,
};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Polls `done` until it holds, failing the test after [`WAIT`] (a deadline loop for things
/// that become true eventually with nothing to wait on).
#[track_caller]
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads one frame and returns its payload; `Ok(None)` at a clean end of stream before a
/// header (a timeout or a torn frame surfaces as an error).
pub fn read_frame(s: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let mut payload = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Reads one frame that must be there.
#[track_caller]
pub fn expect_frame(s: &mut TcpStream) -> Vec<u8> {
    match read_frame(s) {
        Ok(Some(p)) => p,
        Ok(None) => panic!("expected a frame, got end of stream"),
        Err(e) => panic!("expected a frame, got {e}"),
    }
}

/// Reads until the peer closes: Ok(()) at a clean end of stream; any byte is an error.
#[track_caller]
pub fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected end of stream, got {n} bytes: {:?}", &buf[..n]),
        Err(e) => panic!("expected end of stream, got {e}"),
    }
}

/// Whether the stream ends (cleanly or by a reset) within [`WAIT`]; frames before the end are
/// returned.
pub fn read_until_closed(s: &mut TcpStream) -> Result<Vec<Vec<u8>>, io::Error> {
    let mut frames = Vec::new();
    loop {
        match read_frame(s) {
            Ok(Some(p)) => frames.push(p),
            Ok(None) => return Ok(frames),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Ok(frames);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A payload: `client`, `seq`, then `pad` filler bytes.
pub fn numbered(client: u32, seq: u32, pad: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + pad);
    v.extend_from_slice(&client.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..pad).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seq as u8)));
    v
}

/// `(client, seq)` of a [`numbered`] payload, checking its filler.
#[track_caller]
pub fn parse_numbered(p: &[u8]) -> (u32, u32) {
    assert!(p.len() >= 8, "short numbered payload: {p:?}");
    let client = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    for (i, b) in p[8..].iter().enumerate() {
        assert_eq!(
            *b,
            (i as u8).wrapping_mul(31).wrapping_add(seq as u8),
            "corrupt filler in packet {seq} of client {client}"
        );
    }
    (client, seq)
}

/// A [`numbered`] packet.
pub fn numbered_packet(client: u32, seq: u32, pad: usize) -> WPacket {
    let mut p = WPacket::new();
    p.write_raw(&numbered(client, seq, pad));
    p
}

/// A small deterministic generator (xorshift64*), so that runs are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// What a probe saw, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Connected(SocketAddr),
    Packet(Vec<u8>),
    Disconnected(DisconnectReason),
    ConnectFailed(SocketAddr, io::ErrorKind),
    /// A hand-off this probe tried was refused (the socket had ended meanwhile).
    HandoffRefused,
}

/// One observation of probe `tag`.
#[derive(Debug)]
pub struct Obs {
    pub tag: usize,
    pub sock: Option<SockIdent>,
    pub seen: Seen,
}

/// Hand each socket on to `to` once `after` packets of it were handled here (0: at
/// `Connected`).
pub struct Handoff {
    pub after: usize,
    pub to: Recipient<NetEvent>,
    /// Before handing off, wait (a little, bounded) until this probe has more events queued,
    /// so that packets are in flight in the old owner's mailbox at the hand-off.
    pub wait_for_queued: bool,
}

/// Messages of a [`Probe`].
pub enum ProbeMsg {
    Net(NetEvent),
    /// Replies with the probe's tag once everything queued before it has been handled.
    Flush(Sender<usize>),
}

impl From<NetEvent> for ProbeMsg {
    fn from(ev: NetEvent) -> ProbeMsg {
        ProbeMsg::Net(ev)
    }
}

/// A socket owner that reports every event to a channel, and optionally echoes packets or
/// hands sockets on.
pub struct Probe {
    pub tag: usize,
    pub out: Sender<Obs>,
    pub echo: bool,
    /// Close the socket (gracefully, from the handler) on a packet `close`.
    pub close_on_request: bool,
    pub handoff: Option<Handoff>,
    packets: HashMap<SockIdent, usize>,
}

impl Probe {
    pub fn new(tag: usize, out: Sender<Obs>) -> Probe {
        Probe {
            tag,
            out,
            echo: false,
            close_on_request: false,
            handoff: None,
            packets: HashMap::new(),
        }
    }

    pub fn echo(mut self) -> Probe {
        self.echo = true;
        self
    }

    pub fn close_on_request(mut self) -> Probe {
        self.close_on_request = true;
        self
    }

    pub fn handoff(mut self, handoff: Handoff) -> Probe {
        self.handoff = Some(handoff);
        self
    }

    fn report(&self, sock: Option<SockIdent>, seen: Seen) {
        let _ = self.out.send(Obs {
            tag: self.tag,
            sock,
            seen,
        });
    }

    fn maybe_hand_off(&mut self, sock: SockIdent, handled: usize, ctx: &mut Context<Self>) {
        let Some(h) = &self.handoff else { return };
        if handled != h.after {
            return;
        }
        if h.wait_for_queued {
            // Bounded: if this worker is the socket's own poller, nothing can arrive meanwhile.
            let until = Instant::now() + Duration::from_millis(20);
            while ctx.addr().mailbox_len() == 0 && Instant::now() < until {
                std::thread::yield_now();
            }
        }
        if sock.hand_to(h.to.clone()).is_err() {
            self.report(Some(sock), Seen::HandoffRefused);
        }
    }
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    fn handle(&mut self, msg: ProbeMsg, ctx: &mut Context<Self>) {
        let ev = match msg {
            ProbeMsg::Net(ev) => ev,
            ProbeMsg::Flush(reply) => {
                let _ = reply.send(self.tag);
                return;
            }
        };
        match ev {
            NetEvent::Connected { sock, peer } => {
                self.report(Some(sock), Seen::Connected(peer));
                self.maybe_hand_off(sock, 0, ctx);
            }
            NetEvent::Packet { sock, packet } => {
                let payload = packet.payload().to_vec();
                let n = self.packets.entry(sock).or_insert(0);
                *n += 1;
                let n = *n;
                // Hand off before reporting: a reported packet's hand-off has happened.
                self.maybe_hand_off(sock, n, ctx);
                let close = self.close_on_request && payload == b"close";
                self.report(Some(sock), Seen::Packet(payload));
                if close {
                    if let Err(e) = sock.close() {
                        panic!("probe {}: close of a live socket failed: {e}", self.tag);
                    }
                } else if self.echo {
                    let _ = sock.send(WPacket::from(packet));
                }
            }
            NetEvent::Disconnected { sock, reason } => {
                self.packets.remove(&sock);
                self.report(Some(sock), Seen::Disconnected(reason));
            }
            NetEvent::ConnectFailed { addr, error } => {
                self.report(None, Seen::ConnectFailed(addr, error.kind()));
            }
            other => panic!("probe {}: unexpected event {other:?}", self.tag),
        }
    }
}

/// Waits until every probe in `probes` has handled everything queued before this call.
pub fn flush_probes(probes: &[&Addr<Probe>]) {
    let (tx, rx) = mpsc::channel();
    for p in probes {
        p.send(ProbeMsg::Flush(tx.clone()))
            .unwrap_or_else(|_| panic!("flush: probe {p:?} has stopped"));
    }
    for _ in probes {
        recv(&rx, "a probe to flush");
    }
}

/// Something a [`Watcher`] runs in its own context (to watch an actor of any type).
pub type WatchFn = Box<dyn FnOnce(&mut Context<Watcher>) + Send>;

/// Messages of a [`Watcher`].
pub enum WatchMsg {
    /// Watch this actor; replies when the watch is in place.
    Watch(WatchFn, Sender<()>),
}

/// Watches actors and reports each one that stops, with why.
pub struct Watcher {
    pub out: Sender<(ActorId, StopReason)>,
}

impl Actor for Watcher {
    type Msg = WatchMsg;

    fn handle(&mut self, msg: WatchMsg, ctx: &mut Context<Self>) {
        match msg {
            WatchMsg::Watch(f, done) => {
                f(ctx);
                let _ = done.send(());
            }
        }
    }

    fn watched_stopped(&mut self, id: ActorId, reason: &StopReason, _: &mut Context<Self>) {
        let _ = self.out.send((id, reason.clone()));
    }
}

/// Makes `watcher` watch `target` and waits until the watch is in place.
pub fn watch<A: Actor>(watcher: &Addr<Watcher>, target: &Addr<A>) {
    let target = target.clone();
    let (tx, rx) = mpsc::channel();
    watcher
        .send(WatchMsg::Watch(Box::new(move |ctx| ctx.watch(&target)), tx))
        .unwrap_or_else(|_| panic!("the watcher has stopped"));
    recv(&rx, "the watch to be in place");
}
