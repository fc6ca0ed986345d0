//! Outgoing connections, `System::connect`: a dial that reaches a listener of the system gets
//! `Connected` at both ends, packets flow both ways and a close reaches both; a dial to a
//! closed port gets one `ConnectFailed` and holds no socket.
//!
//! Both ends are [`Probe`]s, which report every event they handle through a channel. Every
//! wait is bounded ([`WAIT`]).

mod support;

use kendynet::{DisconnectReason, SockIdent, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use support::actors::{Probe, Seen, flush_probes};
use support::wire::{numbered_packet, parse_numbered};
use support::{WAIT, any_port, recv, shutdown_gracefully};

/// `connect` to a listening socket of the system: both ends get `Connected`, packets
/// flow both ways, a close reaches both; a dial to a closed port gets `ConnectFailed`.
#[test]
fn connect_delivers_connected_and_both_sides_exchange_packets() {
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let server = system.spawn(Probe::new(0, tx.clone()).echo());
    let dialer = system.spawn(Probe::new(1, tx));
    let addr = system.listen(any_port(), &server).unwrap();
    system.connect(addr, WAIT, &dialer);

    let mut by_tag: HashMap<usize, (SockIdent, SocketAddr)> = HashMap::new();
    while by_tag.len() < 2 {
        let obs = recv(&rx, "Connected at both ends");
        let Seen::Connected(peer) = obs.seen else {
            panic!("expected Connected, got {obs:?}");
        };
        assert!(
            by_tag.insert(obs.tag, (obs.sock.unwrap(), peer)).is_none(),
            "two Connected at probe {}",
            obs.tag
        );
    }
    let (server_sock, server_peer) = by_tag[&0];
    let (dial_sock, dial_peer) = by_tag[&1];
    assert_eq!(dial_peer, addr, "the dialer's peer is the listener");
    assert_eq!(dial_sock.peer_addr(), Ok(addr));
    assert_eq!(server_sock.peer_addr(), Ok(server_peer));
    assert_ne!(server_sock, dial_sock);

    // Dialer -> server (echoed back) and server -> dialer.
    for seq in 0..100 {
        dial_sock.send(numbered_packet(1, seq, 16)).unwrap();
    }
    server_sock.send(numbered_packet(0, 0, 0)).unwrap();
    let (mut at_server, mut at_dialer, mut from_server) = (0u32, 0u32, 0);
    while at_server < 100 || at_dialer < 100 || from_server < 1 {
        let obs = recv(&rx, "packets both ways");
        let Seen::Packet(p) = &obs.seen else {
            panic!("expected a packet, got {obs:?}");
        };
        match (obs.tag, parse_numbered(p)) {
            (0, (1, seq)) => {
                assert_eq!(obs.sock, Some(server_sock));
                assert_eq!(seq, at_server);
                at_server += 1;
            }
            (1, (1, seq)) => {
                assert_eq!(obs.sock, Some(dial_sock));
                assert_eq!(seq, at_dialer, "echoes in order");
                at_dialer += 1;
            }
            (1, (0, 0)) => from_server += 1,
            other => panic!("unexpected packet {other:?}"),
        }
    }
    dial_sock.close().unwrap();
    let mut reasons = HashMap::new();
    while reasons.len() < 2 {
        let obs = recv(&rx, "Disconnected at both ends");
        let Seen::Disconnected(r) = obs.seen else {
            panic!("expected Disconnected, got {obs:?}");
        };
        reasons.insert(obs.tag, r);
    }
    assert_eq!(reasons[&1], DisconnectReason::ClosedLocally);
    assert_eq!(reasons[&0], DisconnectReason::PeerClosed);
    flush_probes(&[&server, &dialer]);
    assert!(rx.try_recv().is_err(), "events after Disconnected");
    assert_eq!(system.open_sockets(), 0);
    shutdown_gracefully(system);
}

#[test]
fn connect_to_a_closed_port_delivers_connect_failed() {
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let dialer = system.spawn(Probe::new(1, tx));
    let closed = {
        let l = std::net::TcpListener::bind(any_port()).unwrap();
        l.local_addr().unwrap()
    };
    for _ in 0..3 {
        system.connect(closed, WAIT, &dialer);
    }
    for _ in 0..3 {
        let obs = recv(&rx, "ConnectFailed");
        assert_eq!(obs.sock, None);
        assert_eq!(
            obs.seen,
            Seen::ConnectFailed(closed, std::io::ErrorKind::ConnectionRefused)
        );
    }
    flush_probes(&[&dialer]);
    assert!(rx.try_recv().is_err(), "more than one event per dial");
    assert_eq!(system.open_sockets(), 0, "failed dials hold no socket");
    shutdown_gracefully(system);
}
