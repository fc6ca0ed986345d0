//! Slow and hostile clients in the deterministic test kit, on the manual clock: the same
//! watermark events, slow-consumer policies, packet deadline, "active once" reading and
//! half-close as on real sockets, so that an owner's handling of them can be tested step by
//! step.
#![cfg(feature = "testkit")]

use kendynet::net::SlowConsumer;
use kendynet::testkit::{Sim, VirtualClient};
use kendynet::{
    Actor, ConnOptions, Context, DisconnectReason, NetEvent, RPacket, SockIdent, TrySendError,
    WPacket,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connected,
    Packet(Vec<u8>),
    HighWater,
    LowWater,
    InputEnded,
    Full,
    Disconnected(DisconnectReason),
}

type Log = Arc<Mutex<Vec<(SockIdent, Seen)>>>;

/// Echoes (or answers each request `n` with `n` bytes, if `bulk`), and records what it sees.
struct Echo {
    log: Log,
    bulk: bool,
}

impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        let (sock, seen) = match ev {
            NetEvent::Connected { sock, .. } => (sock, Seen::Connected),
            NetEvent::Packet { sock, packet } => {
                let payload = packet.payload().to_vec();
                let reply = if self.bulk {
                    let n: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                    WPacket::from(RPacket::from_payload(&vec![b'r'; n]))
                } else {
                    WPacket::from(packet)
                };
                if let Err(TrySendError::Full(_)) = sock.send(reply) {
                    self.log.lock().unwrap().push((sock, Seen::Full));
                }
                (sock, Seen::Packet(payload))
            }
            NetEvent::HighWater { sock, .. } => (sock, Seen::HighWater),
            NetEvent::LowWater { sock, .. } => (sock, Seen::LowWater),
            NetEvent::InputEnded { sock, .. } => (sock, Seen::InputEnded),
            NetEvent::Disconnected { sock, reason } => (sock, Seen::Disconnected(reason)),
            _ => return,
        };
        self.log.lock().unwrap().push((sock, seen));
    }
}

fn sim_with(options: ConnOptions, bulk: bool) -> (Sim, SocketAddr, Log) {
    let sim = Sim::builder().seed(7).conn_options(options).build();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let echo = sim.spawn(Echo {
        log: log.clone(),
        bulk,
    });
    let at = sim.listen("127.0.0.1:0".parse().unwrap(), &echo).unwrap();
    (sim, at, log)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
}

fn count(log: &Log, what: &Seen) -> usize {
    seen(log).iter().filter(|s| *s == what).count()
}

fn payload(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 4096]
}

fn send_all(client: &VirtualClient, n: usize) {
    for i in 0..n {
        client
            .send(WPacket::from(RPacket::from_payload(&payload(i))))
            .unwrap();
    }
}

#[test]
fn a_reader_that_pauses_stops_the_reading_then_gets_every_echo() {
    let options = ConnOptions::default().watermarks(8 << 10, 32 << 10);
    let (sim, at, log) = sim_with(options, false);
    let client = sim.dial(at).unwrap();
    client.stop_reading();
    send_all(&client, 64);
    sim.run_until_idle();
    // Past the high mark the socket stops being read: not every packet has arrived.
    assert_eq!(count(&log, &Seen::HighWater), 1, "{:?}", seen(&log));
    let read = seen(&log)
        .iter()
        .filter(|s| matches!(s, Seen::Packet(_)))
        .count();
    assert!(
        read < 64,
        "all {read} packets were read past the high-water mark"
    );
    client.resume_reading();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if got.len() == 64 {
            break;
        }
        sim.advance(Duration::from_millis(1));
        got.extend(client.recv_all());
    }
    assert_eq!(got.len(), 64);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.payload(), &payload(i)[..], "echo {i}");
    }
    assert_eq!(count(&log, &Seen::Full), 0);
    assert!(count(&log, &Seen::LowWater) >= 1);
}

#[test]
fn the_drop_policy_refuses_and_counts_past_the_mark() {
    let options = ConnOptions::default()
        .watermarks(8 << 10, 32 << 10)
        .slow_consumer(SlowConsumer::Drop);
    let (sim, at, log) = sim_with(options, false);
    let client = sim.dial(at).unwrap();
    client.stop_reading();
    send_all(&client, 64);
    sim.run_until_idle();
    let read = seen(&log)
        .iter()
        .filter(|s| matches!(s, Seen::Packet(_)))
        .count();
    assert_eq!(read, 64, "the drop policy keeps reading");
    let fulls = count(&log, &Seen::Full);
    assert!(fulls > 0);
    let sock = log.lock().unwrap()[0].0;
    assert_eq!(sock.dropped_packets(), fulls as u64);
}

#[test]
fn the_disconnect_policy_closes_after_its_grace_on_the_manual_clock() {
    let options = ConnOptions::default()
        .watermarks(8 << 10, 32 << 10)
        .slow_consumer(SlowConsumer::Disconnect {
            grace: Duration::from_secs(3),
        });
    let (sim, at, log) = sim_with(options, false);
    let client = sim.dial(at).unwrap();
    client.stop_reading();
    send_all(&client, 64);
    sim.run_until_idle();
    assert_eq!(count(&log, &Seen::HighWater), 1);
    sim.advance(Duration::from_millis(2_999));
    assert!(
        !seen(&log)
            .iter()
            .any(|s| matches!(s, Seen::Disconnected(_)))
    );
    sim.advance(Duration::from_millis(1));
    assert!(
        matches!(
            seen(&log).last(),
            Some(Seen::Disconnected(DisconnectReason::SlowConsumer { .. }))
        ),
        "{:?}",
        seen(&log).last()
    );
}

#[test]
fn a_drip_fed_packet_times_out_on_the_manual_clock() {
    let options = ConnOptions::default().packet_timeout(Some(Duration::from_secs(10)));
    let (sim, at, log) = sim_with(options, false);
    let client = sim.dial(at).unwrap();
    client.write(&100u32.to_le_bytes()).unwrap();
    for _ in 0..9 {
        sim.advance(Duration::from_secs(1));
        client.write(b"x").unwrap();
    }
    sim.advance(Duration::from_millis(999));
    assert!(
        !seen(&log)
            .iter()
            .any(|s| matches!(s, Seen::Disconnected(_)))
    );
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        seen(&log).last(),
        Some(&Seen::Disconnected(DisconnectReason::PacketTimeout))
    );
}

#[test]
fn a_half_close_gets_its_replies_then_the_end() {
    let (sim, at, log) = sim_with(ConnOptions::default(), true);
    let client = sim.dial(at).unwrap();
    for _ in 0..5 {
        client
            .send(WPacket::from(RPacket::from_payload(b"20000")))
            .unwrap();
    }
    client.shutdown_write();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        sim.advance(Duration::from_millis(1));
        got.extend(client.recv_all());
        if got.len() == 5 {
            break;
        }
    }
    sim.advance(Duration::from_secs(1));
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|p| p.payload().len() == 20_000));
    let saw = seen(&log);
    let ended = saw
        .iter()
        .position(|s| *s == Seen::InputEnded)
        .expect("InputEnded");
    assert_eq!(
        saw.last(),
        Some(&Seen::Disconnected(DisconnectReason::PeerClosed))
    );
    assert_eq!(
        saw[..ended]
            .iter()
            .filter(|s| matches!(s, Seen::Packet(_)))
            .count(),
        5,
        "every packet before the end of input"
    );
}

#[test]
fn an_owner_can_pause_and_resume_reading() {
    let (sim, at, log) = sim_with(ConnOptions::default(), false);
    let client = sim.dial(at).unwrap();
    sim.run_until_idle();
    let sock = log.lock().unwrap()[0].0;
    sock.pause_reading().unwrap();
    send_all(&client, 3);
    sim.advance(Duration::from_secs(5));
    assert_eq!(seen(&log), vec![Seen::Connected]);
    sock.resume_reading().unwrap();
    sim.run_until_idle();
    assert_eq!(
        seen(&log)
            .iter()
            .filter(|s| matches!(s, Seen::Packet(_)))
            .count(),
        3
    );
}
