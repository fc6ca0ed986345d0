//! Layer-3 actors for the tests, and the waits that go with them:
//!
//! - [`Probe`]: a socket owner that reports every network event it handles as an [`Obs`]
//!   through a channel (and can echo, close on request, or hand sockets on); read its reports
//!   with [`next_obs`], [`expect_connected`] and [`expect_disconnected`], and make sure it has
//!   handled everything with [`flush_probes`];
//! - [`Watcher`]: watches actors and reports each one that stops, with why; see [`watch`] and
//!   [`expect_stopped`];
//! - [`Bystander`]: counts what it is sent, to show that other actors' troubles left it alone.

use super::recv;
use kendynet::{
    Actor, ActorId, Addr, Context, DisconnectReason, NetEvent, Recipient, SockIdent, StopReason,
    WPacket,
};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

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
    /// Which probe saw it.
    pub tag: usize,
    /// The socket it was about; `None` for a failed dial, which never had one.
    pub sock: Option<SockIdent>,
    pub seen: Seen,
}

/// Hand each socket on to `to` once `after` packets of it were handled here (0: at
/// `Connected`).
pub struct Handoff {
    /// Packets of the socket this probe handles before handing it on; 0: at `Connected`.
    pub after: usize,
    /// The next owner.
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
    /// Names this probe in its reports.
    pub tag: usize,
    /// Where the reports go.
    pub out: Sender<Obs>,
    /// Send every packet back on its socket.
    pub echo: bool,
    /// Close the socket (gracefully, from the handler) on a packet `close`.
    pub close_on_request: bool,
    pub handoff: Option<Handoff>,
    /// Packets handled so far, per socket (for the hand-off).
    packets: HashMap<SockIdent, usize>,
}

impl Probe {
    /// A probe that only reports, as `tag`, to `out`.
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

    /// Also echoes every packet.
    pub fn echo(mut self) -> Probe {
        self.echo = true;
        self
    }

    /// Also closes a socket that sends the packet `close`.
    pub fn close_on_request(mut self) -> Probe {
        self.close_on_request = true;
        self
    }

    /// Also hands each socket on as `handoff` says.
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
            // Dropping it closes the socket once the replies are written.
            NetEvent::InputEnded { .. } => {}
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
    /// Where each stop is reported.
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

/// Expects the watcher's next report to be `id` stopping, and returns why it stopped.
#[track_caller]
pub fn expect_stopped(rx: &Receiver<(ActorId, StopReason)>, id: ActorId) -> StopReason {
    let (who, reason) = recv(rx, "a watched actor to stop");
    assert_eq!(who, id, "the stopped actor");
    reason
}

/// Receives a [`Probe`]'s next observation, which must be of a socket (not a failed dial), and
/// returns the socket and what was seen.
#[track_caller]
pub fn next_obs(rx: &Receiver<Obs>, what: &str) -> (SockIdent, Seen) {
    let obs = recv(rx, what);
    (obs.sock.expect("a socket event"), obs.seen)
}

/// Expects a `Connected` and returns its socket and peer.
#[track_caller]
pub fn expect_connected(rx: &Receiver<Obs>) -> (SockIdent, SocketAddr) {
    match next_obs(rx, "Connected") {
        (sock, Seen::Connected(peer)) => (sock, peer),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Expects `Disconnected` of `sock` and returns why.
#[track_caller]
pub fn expect_disconnected(rx: &Receiver<Obs>, sock: SockIdent) -> DisconnectReason {
    match next_obs(rx, "Disconnected") {
        (s, Seen::Disconnected(reason)) if s == sock => reason,
        other => panic!("expected Disconnected of {sock:?}, got {other:?}"),
    }
}

/// Counts the `Add`s it is sent and tells the count on `Get`: a bystander whose count shows
/// that other actors' failures did not touch it.
pub struct Bystander {
    pub count: u64,
}

/// Messages of a [`Bystander`].
pub enum BystanderMsg {
    Add,
    Get(Sender<u64>),
}

impl Actor for Bystander {
    type Msg = BystanderMsg;
    fn handle(&mut self, msg: BystanderMsg, _: &mut Context<Self>) {
        match msg {
            BystanderMsg::Add => self.count += 1,
            BystanderMsg::Get(reply) => {
                let _ = reply.send(self.count);
            }
        }
    }
}
