//! Layer 2 against clients that do not read, or end their input early, over real loopback
//! sockets: write watermarks and their events, reading paused while the peer is behind,
//! and a half-close that still gets every reply.

mod support;

use kendynet::WPacket;
use kendynet::net::{ConnId, ConnOptions, Connection, DisconnectReason, Engine, WriteFlow};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};
use support::engine::EngineThread;
use support::wire::{client, frame, read_frame, write_frame};
use support::{WAIT, any_port};

#[derive(Debug)]
enum Ev {
    Flow(WriteFlow, bool),
    InputEnded,
    Disconnected(DisconnectReason),
}

/// How the server answers a request.
#[derive(Clone, Copy)]
enum Answer {
    /// The same packet back.
    Echo,
    /// `n` bytes for a request that says `n`.
    Bulk,
}

/// A layer-2 server on its own thread: answers each packet, reports flow events (with
/// whether the connection is reading then), the end of input and the end. With
/// `goodbye`, it answers the end of input with a last "bye" packet and closes.
fn serve(
    options: ConnOptions,
    answer: Answer,
    goodbye: bool,
) -> (EngineThread, SocketAddr, Receiver<Ev>) {
    let (tx, rx) = mpsc::channel::<Ev>();
    let (engine, addr) = EngineThread::spawn(move |engine: &mut Engine| {
        let listener = engine
            .listen(any_port(), move |engine, socket| {
                let (tx_f, tx_i, tx_d) = (tx.clone(), tx.clone(), tx.clone());
                let mut conn = Connection::new(socket)
                    .options(options.clone())
                    .on_write_flow(move |engine, id: ConnId, flow| {
                        let _ = tx_f.send(Ev::Flow(flow, id.is_reading(engine)));
                    });
                if goodbye {
                    conn = conn.on_input_end(move |engine, id| {
                        let _ = tx_i.send(Ev::InputEnded);
                        id.send(
                            engine,
                            WPacket::from(kendynet::RPacket::from_payload(b"bye")),
                        )
                        .expect("a half-closed connection still sends");
                        id.close(engine);
                    });
                }
                conn.bind(
                    engine,
                    move |engine, id, packet| {
                        let reply = match answer {
                            Answer::Echo => WPacket::from(packet),
                            Answer::Bulk => {
                                let n: usize = std::str::from_utf8(packet.payload())
                                    .unwrap()
                                    .parse()
                                    .unwrap();
                                WPacket::from(kendynet::RPacket::from_payload(&vec![b'r'; n]))
                            }
                        };
                        id.send(engine, reply).expect("no reply may be refused");
                    },
                    move |_, _, reason| {
                        let _ = tx_d.send(Ev::Disconnected(reason));
                    },
                )
                .expect("bind");
            })
            .expect("listen");
        engine.listener_addr(listener).expect("listener_addr")
    });
    (engine, addr, rx)
}

fn next(rx: &Receiver<Ev>, what: &str) -> Ev {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

#[test]
fn a_half_closing_client_gets_every_reply_then_the_end() {
    let (engine, addr, rx) = serve(ConnOptions::default(), Answer::Bulk, false);
    let mut c = client(addr);
    const N: usize = 20;
    const SIZE: usize = 256 << 10;
    for _ in 0..N {
        write_frame(&mut c, SIZE.to_string().as_bytes()).unwrap();
    }
    c.shutdown(Shutdown::Write).unwrap();
    for i in 0..N {
        let reply = read_frame(&mut c).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(reply.len(), SIZE);
    }
    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "then the end of stream");
    loop {
        match next(&rx, "Disconnected") {
            Ev::Disconnected(r) => {
                assert_eq!(r, DisconnectReason::PeerClosed);
                break;
            }
            Ev::Flow(..) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    engine.stop();
}

#[test]
fn the_end_of_input_can_be_answered_before_closing() {
    let (engine, addr, rx) = serve(ConnOptions::default(), Answer::Echo, true);
    let mut c = client(addr);
    for i in 0..10u8 {
        write_frame(&mut c, &[i]).unwrap();
    }
    c.shutdown(Shutdown::Write).unwrap();
    for i in 0..10u8 {
        assert_eq!(read_frame(&mut c).unwrap(), [i]);
    }
    assert_eq!(read_frame(&mut c).unwrap(), b"bye");
    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
    assert!(matches!(next(&rx, "InputEnded"), Ev::InputEnded));
    assert!(matches!(
        next(&rx, "Disconnected"),
        Ev::Disconnected(DisconnectReason::PeerClosed)
    ));
    engine.stop();
}

#[test]
fn a_reader_that_pauses_stops_the_reading_and_gets_everything_back() {
    let options = ConnOptions::default().watermarks(32 << 10, 128 << 10);
    let (engine, addr, rx) = serve(options, Answer::Echo, false);
    let mut c = client(addr);
    let mut w = c.try_clone().unwrap();
    const N: usize = 2048;
    let payload = |i: usize| vec![(i % 253) as u8; 8 << 10];
    let writer = std::thread::spawn(move || {
        w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        for i in 0..N {
            w.write_all(&frame(&payload(i))).unwrap();
        }
    });
    // Passing the mark pauses reading (reported with the event).
    match next(&rx, "HighWater") {
        Ev::Flow(WriteFlow::HighWater { queued }, reading) => {
            assert!(queued > 128 << 10);
            assert!(!reading, "still reading past the high-water mark");
        }
        other => panic!("unexpected {other:?}"),
    }
    let deadline = Instant::now() + WAIT;
    for i in 0..N {
        assert!(Instant::now() < deadline, "echoes too slow");
        assert!(read_frame(&mut c).unwrap() == payload(i), "echo {i}");
    }
    writer.join().unwrap();
    // Every crossing is reported, alternating, the last one a LowWater with reading on.
    let mut last = None;
    while let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) {
        match ev {
            Ev::Flow(flow, reading) => {
                if let Some(WriteFlow::HighWater { .. }) | None = last {
                    assert!(matches!(flow, WriteFlow::LowWater { .. }), "{flow:?} twice");
                } else {
                    assert!(
                        matches!(flow, WriteFlow::HighWater { .. }),
                        "{flow:?} twice"
                    );
                }
                assert_eq!(reading, matches!(flow, WriteFlow::LowWater { .. }));
                last = Some(flow);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(last, Some(WriteFlow::LowWater { .. })), "{last:?}");
    drop(c);
    engine.stop();
}

#[test]
fn the_write_limit_still_bounds_the_queue() {
    // A single server-side check: the write limit still bounds the queue under the
    // pause-reading policy, and `queued_bytes` reports it.
    let (tx, rx) = mpsc::channel::<(usize, bool)>();
    let (engine, addr) = EngineThread::spawn(move |engine: &mut Engine| {
        let tx: Sender<(usize, bool)> = tx;
        let listener = engine
            .listen(any_port(), move |engine, socket| {
                let id = Connection::new(socket)
                    .options(ConnOptions::default().write_limit(1 << 20))
                    .bind(engine, |_, _, _| {}, |_, _, _| {})
                    .expect("bind");
                // The peer reads nothing yet: queue 2 MiB in 64 KiB packets.
                let mut refused = false;
                for _ in 0..32 {
                    let p = WPacket::from(kendynet::RPacket::from_payload(&vec![0u8; 64 << 10]));
                    refused |= id.send(engine, p).is_err();
                }
                let _ = tx.send((id.queued_bytes(engine), refused));
            })
            .expect("listen");
        engine.listener_addr(listener).expect("listener_addr")
    });
    let _c = client(addr);
    let (queued, refused) = rx.recv_timeout(WAIT).expect("report");
    assert!(refused, "2 MiB went into a 1 MiB write limit");
    assert!(queued <= (1 << 20) + (64 << 10) + 4, "{queued} queued");
    engine.stop();
}
