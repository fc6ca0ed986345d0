//! A `SockIdent` is a handle that goes stale when its socket ends: from the socket's
//! `Disconnected` on (inside that very handler too) every call on it fails, a packet sent on
//! it is handed back, and it never reaches a later socket that reuses its slot.
//!
//! Socket owners here are [`Probe`]s, which report every event they handle through a channel.
//! Every wait is bounded ([`WAIT`](support::WAIT)).

mod support;

use kendynet::{
    Actor, Addr, Context, DisconnectReason, NetEvent, SockError, SockIdent, System, TrySendError,
    WPacket,
};
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use support::actors::{Probe, Seen, expect_connected, expect_disconnected, flush_probes, next_obs};
use support::wire::{
    client, expect_eof, expect_frame, numbered, numbered_packet, parse_numbered, write_frame,
};
use support::{any_port, recv, shutdown_gracefully};

/// The slot index of a handle: its low 32 bits, the slot within its system.
fn slot_index(sock: SockIdent) -> u64 {
    sock.to_u64() & 0xffff_ffff
}

/// Every call on a stale handle fails, and a refused packet is handed back intact.
#[track_caller]
fn assert_stale(sock: SockIdent, thief: &Addr<Probe>) {
    let payload = numbered(77, 77, 5);
    match sock.send(numbered_packet(77, 77, 5)) {
        Err(TrySendError::Closed(p)) => assert_eq!(p.payload(), &payload[..], "handed back"),
        other => panic!("{sock:?}: send on a stale handle: {other:?}"),
    }
    assert_eq!(sock.close(), Err(SockError::Closed), "{sock:?}: close");
    assert_eq!(
        sock.peer_addr(),
        Err(SockError::Closed),
        "{sock:?}: peer_addr"
    );
    assert_eq!(
        sock.hand_to(thief),
        Err(SockError::Closed),
        "{sock:?}: hand_to"
    );
    assert!(!sock.is_open(), "{sock:?}: is_open");
}

/// A handle is refused once its socket closes, and stays refused when the slot is
/// reused by a new socket, which it never reaches.
#[test]
fn stale_sock_ident_after_close_and_after_slot_reuse() {
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let (thief_tx, thief_rx) = mpsc::channel();
    let thief = system.spawn(Probe::new(9, thief_tx));
    let addr = system.listen(any_port(), &probe).unwrap();

    // Closed locally: refused at once after close(), and after Disconnected.
    let mut c1 = client(addr);
    let (s1, peer) = expect_connected(&rx);
    assert_eq!(peer, c1.local_addr().unwrap());
    assert!(s1.is_open());
    assert_eq!(s1.peer_addr(), Ok(peer));
    s1.send(numbered_packet(1, 0, 3)).unwrap();
    assert_eq!(s1.close(), Ok(()));
    assert!(!s1.is_open(), "closing: no longer open for sending");
    assert_eq!(s1.close(), Err(SockError::Closed), "a second close");
    assert!(
        matches!(
            s1.send(numbered_packet(1, 1, 3)),
            Err(TrySendError::Closed(_))
        ),
        "a send after close"
    );
    // The packet sent before close() is flushed first, then the stream ends.
    assert_eq!(parse_numbered(&expect_frame(&mut c1)), (1, 0));
    expect_eof(&mut c1);
    // (The peer closes too: see `local_close_reports_disconnected_while_the_peer_stays` in
    // `socket_events.rs` for why this test does not wait for Disconnected with the peer still
    // connected.)
    drop(c1);
    assert_eq!(
        expect_disconnected(&rx, s1),
        DisconnectReason::ClosedLocally
    );
    assert_stale(s1, &thief);

    // Closed by the peer, then its slot reused: open connections until one lands in the slot
    // of the last closed one (the free list is LIFO, but other tests share the process-wide
    // table, so it may take a few tries).
    let mut old = s1;
    let mut reused = None;
    for _ in 0..200 {
        let c = client(addr);
        let (s, peer) = expect_connected(&rx);
        assert_eq!(peer, c.local_addr().unwrap());
        if slot_index(s) == slot_index(old) {
            reused = Some((c, s));
            break;
        }
        drop(c);
        assert_eq!(expect_disconnected(&rx, s), DisconnectReason::PeerClosed);
        assert_stale(s, &thief);
        old = s;
    }
    let (mut c, s) = reused.expect("no slot was reused in 200 connections");
    assert_ne!(s, old, "a reused slot gets a new generation");
    assert_ne!(s.to_u64(), old.to_u64());
    assert_stale(old, &thief);
    // Values that are not (or no longer) any socket's handle are stale too.
    let next_generation = SockIdent::from_u64(s.to_u64().wrapping_add(1 << 32));
    for bogus in [
        SockIdent::from_u64(0),
        SockIdent::from_u64(u64::MAX),
        next_generation,
    ] {
        assert_stale(bogus, &thief);
    }

    // The new socket was not touched by any of that: it is open, its peer is right, nothing
    // sent on the stale handles reached it, and its events still go to its owner.
    assert!(s.is_open());
    assert_eq!(s.peer_addr(), Ok(c.local_addr().unwrap()));
    s.send(numbered_packet(2, 0, 0)).unwrap();
    assert_eq!(
        parse_numbered(&expect_frame(&mut c)),
        (2, 0),
        "the first frame on the new socket is the one sent on its own handle"
    );
    write_frame(&mut c, &numbered(3, 0, 0)).unwrap();
    match next_obs(&rx, "a packet on the new socket") {
        (sock, Seen::Packet(p)) if sock == s => assert_eq!(parse_numbered(&p), (3, 0)),
        other => panic!("expected the new socket's packet at its owner, got {other:?}"),
    }
    flush_probes(&[&probe, &thief]);
    assert!(
        thief_rx.try_recv().is_err(),
        "a stale hand_to moved events elsewhere"
    );
    drop(c);
    assert_eq!(expect_disconnected(&rx, s), DisconnectReason::PeerClosed);
    shutdown_gracefully(system);
}

/// The socket owner of [`disconnected_handle_is_stale_inside_the_disconnected_handler`]:
/// checks, while handling `Disconnected`, that every call on the handle already fails.
struct StaleChecker {
    out: Sender<Result<(), String>>,
}

impl Actor for StaleChecker {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
        let NetEvent::Disconnected { sock, .. } = ev else {
            return;
        };
        let mut wrong = Vec::new();
        if sock.peer_addr().is_ok() {
            wrong.push("peer_addr is Ok");
        }
        if sock.is_open() {
            wrong.push("is_open is true");
        }
        if sock.close().is_ok() {
            wrong.push("close is Ok");
        }
        if sock.send(WPacket::new()).is_ok() {
            wrong.push("send is Ok");
        }
        if sock.hand_to(ctx.addr()).is_ok() {
            wrong.push("hand_to is Ok");
        }
        let verdict = if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{sock:?} in its Disconnected handler: {wrong:?}"))
        };
        let _ = self.out.send(verdict);
    }
}

/// `NetEvent::Disconnected` promises "its handle is stale from now on": every call on it fails
/// while the owner handles that very event, whichever worker runs the owner.
#[test]
fn disconnected_handle_is_stale_inside_the_disconnected_handler() {
    const CONNS: usize = 200;
    let system = System::builder().workers(3).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let checker = system.spawn(StaleChecker { out: tx });
    let addr = system.listen(any_port(), &checker).unwrap();
    let mut failures = Vec::new();
    for _ in 0..CONNS / 20 {
        let batch: Vec<TcpStream> = (0..20).map(|_| client(addr)).collect();
        drop(batch);
        for _ in 0..20 {
            if let Err(e) = recv(&rx, "a Disconnected verdict") {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CONNS} handles were not stale in their Disconnected handler, e.g. {}",
        failures.len(),
        failures[0]
    );
    shutdown_gracefully(system);
}
