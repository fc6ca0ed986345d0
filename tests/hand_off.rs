//! A hand-off that keeps order, under load: a gate handles the first packets of each client,
//! then hands the socket to a session with `SockIdent::hand_off` while more packets are
//! queued at the gate and still arriving. The session must see every later packet, in
//! order, exactly once, and the gate none of them. Real loopback sockets, two workers (the
//! pollers deliver while the gate hands off).

mod support;

use kendynet::{Actor, Addr, Context, NetEvent, NetMsg, SockIdent, System};
use std::collections::HashMap;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};
use support::wire::{client, numbered, parse_numbered, write_frame};
use support::{WAIT, any_port, recv};

/// Who saw which packet of which socket.
#[derive(Debug)]
enum Seen {
    Gate(SockIdent, u64),
    Session(SockIdent, u64),
    Moved(usize),
    SessionEnd,
}

struct Session {
    out: Sender<Seen>,
}

impl Actor for Session {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Packet { sock, packet } => {
                let (_, n) = parse_numbered(packet.payload());
                let n = u64::from(n);
                let _ = self.out.send(Seen::Session(sock, n));
            }
            NetEvent::Disconnected { .. } => {
                let _ = self.out.send(Seen::SessionEnd);
            }
            _ => {}
        }
    }
}

/// The gate's messages: socket events and something else, to show that a hand-off leaves
/// other messages in place.
enum GateMsg {
    Net(NetEvent),
    Other(u32),
}

impl From<NetEvent> for GateMsg {
    fn from(ev: NetEvent) -> GateMsg {
        GateMsg::Net(ev)
    }
}

impl NetMsg for GateMsg {
    fn into_net_event(self) -> Result<NetEvent, GateMsg> {
        match self {
            GateMsg::Net(ev) => Ok(ev),
            other => Err(other),
        }
    }
}

struct Gate {
    out: Sender<Seen>,
    session: Addr<Session>,
    /// Packets the gate handles itself before handing a socket on.
    keep: u64,
    seen: HashMap<SockIdent, u64>,
    others: Sender<u32>,
}

impl Actor for Gate {
    type Msg = GateMsg;

    fn handle(&mut self, msg: GateMsg, ctx: &mut Context<Self>) {
        let ev = match msg {
            GateMsg::Net(ev) => ev,
            GateMsg::Other(n) => {
                let _ = self.others.send(n);
                return;
            }
        };
        if let NetEvent::Packet { sock, packet } = ev {
            let (_, n) = parse_numbered(packet.payload());
            let n = u64::from(n);
            let _ = self.out.send(Seen::Gate(sock, n));
            let count = self.seen.entry(sock).or_insert(0);
            *count += 1;
            if *count == self.keep {
                // Let more packets queue up behind this one (bounded), so that the hand-off
                // has queued events to move.
                let until = Instant::now() + Duration::from_millis(20);
                while ctx.addr().mailbox_len() < 3 && Instant::now() < until {
                    std::thread::yield_now();
                }
                let _ = ctx
                    .addr()
                    .send(GateMsg::Other(u32::from(sock.to_u64() as u16)));
                let moved = sock
                    .hand_off(ctx, &self.session)
                    .expect("hand off a live socket");
                let _ = self.out.send(Seen::Moved(moved));
            }
        }
    }
}

#[test]
fn packets_queued_at_the_gate_follow_the_socket_in_order() {
    const CLIENTS: usize = 8;
    const PACKETS: u64 = 2000;
    const KEEP: u64 = 50;
    let system = System::builder().workers(2).build().expect("system");
    let (tx, rx) = mpsc::channel();
    let (others_tx, others_rx) = mpsc::channel();
    let session = system.spawn(Session { out: tx.clone() });
    let gate = system.spawn(Gate {
        out: tx,
        session,
        keep: KEEP,
        seen: HashMap::new(),
        others: others_tx,
    });
    let addr = system.handle().listen(any_port(), &gate).expect("listen");
    let writers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = client(addr);
                for n in 0..PACKETS {
                    write_frame(&mut s, &numbered(c as u32, n as u32, 16)).expect("write");
                }
                // Closed once the server has read everything: the session sees the end.
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut s, &mut rest);
            })
        })
        .collect();
    let mut gate_saw: HashMap<SockIdent, Vec<u64>> = HashMap::new();
    let mut session_saw: HashMap<SockIdent, Vec<u64>> = HashMap::new();
    let mut moved_total = 0;
    let mut ended = 0;
    let deadline = Instant::now() + 3 * WAIT;
    while ended < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "timed out; {ended} sessions ended"
        );
        match recv(&rx, "what the gate and the session see") {
            Seen::Gate(s, n) => gate_saw.entry(s).or_default().push(n),
            Seen::Session(s, n) => session_saw.entry(s).or_default().push(n),
            Seen::Moved(m) => moved_total += m,
            Seen::SessionEnd => ended += 1,
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(gate_saw.len(), CLIENTS);
    for (sock, gate) in &gate_saw {
        let want: Vec<u64> = (0..KEEP).collect();
        assert!(
            gate == &want,
            "{sock}: the gate saw {} packets, not 0..{KEEP} (its last: {:?})",
            gate.len(),
            gate.last()
        );
        let session = session_saw.get(sock).map_or(&[][..], Vec::as_slice);
        let want: Vec<u64> = (KEEP..PACKETS).collect();
        assert!(
            session == &want[..],
            "{sock}: the session saw {} packets, not {}..{PACKETS} in order",
            session.len(),
            KEEP
        );
    }
    // The other messages queued at the gate stayed there and were handled.
    for _ in 0..CLIENTS {
        recv(&others_rx, "the gate's other messages");
    }
    assert!(
        moved_total > 0,
        "no hand-off found queued events to move: the test did not test the move"
    );
    system.shutdown(WAIT);
}
