//! An ordered hand-off racing the poller: the owner hands its socket on from its handler
//! (`SockIdent::hand_off`) while the socket's poller, on another thread, reads and delivers
//! the client's next packet. That packet must reach the new owner exactly once and never
//! the old one, whichever side of the hand-off its delivery falls on.

use super::*;
use std::io::Write;
use std::sync::Mutex as StdMutex;

#[derive(Debug, PartialEq)]
enum Saw {
    Connected(SockIdent),
    Gate(Vec<u8>),
    Session(Vec<u8>),
}

struct Session {
    out: Sender<Saw>,
}

impl Actor for Session {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Packet { packet, .. } => {
                self.out
                    .send(Saw::Session(packet.payload().to_vec()))
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// Takes the first packet, then (while the client's second packet is on its way) hands the
/// socket to the session.
struct Gate {
    out: Sender<Saw>,
    session: Addr<Session>,
    /// The client's end, to send its second packet from inside the hand-off's handler.
    client: Arc<StdMutex<Option<TcpStream>>>,
    handed: bool,
}

impl Actor for Gate {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } => self.out.send(Saw::Connected(sock)).unwrap(),
            NetEvent::Packet { sock, packet } => {
                self.out.send(Saw::Gate(packet.payload().to_vec())).unwrap();
                if self.handed {
                    return;
                }
                self.handed = true;
                // The client's next packet arrives now, and a send wakes the socket's poller
                // (on the other worker, if this one is not it) to read it.
                if let Some(c) = self.client.lock().unwrap().as_mut() {
                    c.write_all(&[1, 0, 0, 0, b'b']).unwrap();
                }
                let _ = sock.send(packet_of(b"w"));
                sock.hand_off(ctx, &self.session)
                    .expect("hand off a live socket");
            }
            _ => {}
        }
    }
}

fn packet_of(payload: &[u8]) -> WPacket {
    packet(payload)
}

/// The state space of two workers, a real socket and two hand-overs is large: one
/// preemption already covers the race (a delivery that read the old owner, preempted by the
/// whole hand-off), and keeps the model to seconds.
#[test]
fn hand_off_racing_the_pollers_delivery() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.max_branches = 200_000;
    builder.check(|| {
        // One worker, which polls the socket; the gate runs on a thread of its own, so that
        // its hand-off and the poller's delivery run side by side.
        let sys = system(1);
        let (tx, rx) = channel();
        let client = Arc::new(StdMutex::new(None));
        let session = sys.spawn(Session { out: tx.clone() });
        let gate = sys
            .spawn_with(
                Gate {
                    out: tx,
                    session: session.clone(),
                    client: client.clone(),
                    handed: false,
                },
                SpawnOptions::default().dedicated_thread(),
            )
            .expect("spawn the gate");
        let (l, addr) = listener();
        sys.connect(addr, Duration::from_secs(5), &gate);
        let sock = match rx.recv().unwrap() {
            Saw::Connected(s) => s,
            other => panic!("expected Connected, got {other:?}"),
        };
        let (mut peer, _) = l.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        *client.lock().unwrap() = Some(peer.try_clone().unwrap());
        peer.write_all(&[1, 0, 0, 0, b'a']).unwrap();
        // Wake the poller to read it (its stand-in wait does not see the kernel's data).
        let _ = sock.send(packet(b"w"));
        assert_eq!(rx.recv().unwrap(), Saw::Gate(b"a".to_vec()));
        match rx.recv().unwrap() {
            Saw::Session(p) => assert_eq!(p, b"b", "the packet after the hand-off"),
            other => panic!("the second packet went astray: {other:?}"),
        }
        client.lock().unwrap().take();
        close_with_reset(peer);
        drop((gate, session));
        // The shutdown closes the socket (now the session's) and stops both actors.
        let report = sys.shutdown(Duration::from_secs(1));
        assert_eq!(report.actors_left, 0, "{report:?}");
    });
}
