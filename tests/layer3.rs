//! Layer 3, the actor runtime, over real loopback sockets and real threads.
//!
//! Socket owners here are mostly [`Probe`]s, which report every event they handle through a
//! channel; the tests check what the probes saw against what the std clients did. Every wait
//! is bounded ([`util3::WAIT`]); a test that would otherwise hang fails with what it waited for.

mod util;
mod util3;

use kendynet::{
    Actor, ActorId, Addr, ConnOptions, Context, DisconnectReason, NetEvent, Pool, PoolRouting,
    RegistryError, RestartPolicy, SockError, SockIdent, SpawnOptions, StopReason, System,
    TrySendError, WPacket,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use util3::{
    Handoff, Obs, Probe, Rng, Seen, WAIT, Watcher, any_port, client, eventually, expect_eof,
    expect_frame, flush_probes, frame, numbered, numbered_packet, parse_numbered, read_frame, recv,
    watch, write_frame,
};

/// The slot index of a handle (its low 32 bits).
fn slot_index(sock: SockIdent) -> u64 {
    sock.to_u64() & 0xffff_ffff
}

/// Shuts `system` down and checks that it went gracefully.
#[track_caller]
fn shutdown_gracefully(system: System) {
    let report = system.shutdown(Duration::from_secs(5));
    assert!(report.graceful, "shutdown was forced: {report:?}");
}

/// Connects `conns` clients from each of `threads` threads; each streams `packets` numbered
/// packets (random filler, written in random-sized pieces interleaved across its connections).
/// Returns each client's stream with its local address and id; the caller closes them.
fn stream_clients(
    addr: SocketAddr,
    threads: u32,
    conns: u32,
    packets: u32,
    seed: u64,
) -> Vec<JoinHandle<Vec<(SocketAddr, u32, TcpStream)>>> {
    (0..threads)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng::new(seed.wrapping_mul(1000) + u64::from(t));
                let mut streams: Vec<(u32, TcpStream, Vec<u8>, usize)> = Vec::new();
                for c in 0..conns {
                    let id = t * conns + c;
                    let mut bytes = Vec::new();
                    for seq in 0..packets {
                        bytes.extend(frame(&numbered(id, seq, rng.range(0, 40))));
                    }
                    streams.push((id, client(addr), bytes, 0));
                }
                loop {
                    let mut active = false;
                    for (_, s, bytes, at) in &mut streams {
                        if *at < bytes.len() {
                            active = true;
                            let end = (*at + rng.range(1, 400)).min(bytes.len());
                            s.write_all(&bytes[*at..end]).expect("client write");
                            *at = end;
                        }
                    }
                    if !active {
                        break;
                    }
                }
                streams
                    .into_iter()
                    .map(|(id, s, _, _)| (s.local_addr().unwrap(), id, s))
                    .collect()
            })
        })
        .collect()
}

/// Checks one socket's events as its owner saw them: exactly one `Connected` first (from a
/// known client), then that client's packets `0..packets` in order, then exactly one
/// `Disconnected` last, with `reason`. Returns the client id.
#[track_caller]
fn check_socket_story(
    sock: SockIdent,
    seen: &[Seen],
    clients: &HashMap<SocketAddr, u32>,
    packets: u32,
    reason: &DisconnectReason,
) -> u32 {
    let Some(Seen::Connected(peer)) = seen.first() else {
        panic!("{sock:?}: first event is not Connected: {:?}", seen.first());
    };
    let client = *clients
        .get(peer)
        .unwrap_or_else(|| panic!("{sock:?}: Connected from unknown peer {peer}"));
    match seen.last() {
        Some(Seen::Disconnected(r)) if seen.len() > 1 => {
            assert_eq!(r, reason, "{sock:?}: disconnect reason")
        }
        other => panic!("{sock:?}: last event is not Disconnected: {other:?}"),
    }
    let middle = &seen[1..seen.len() - 1];
    assert_eq!(
        middle.len(),
        packets as usize,
        "{sock:?}: expected {packets} packets between Connected and Disconnected"
    );
    for (i, s) in middle.iter().enumerate() {
        let Seen::Packet(p) = s else {
            panic!("{sock:?}: event {} is {s:?}, expected a packet", i + 1);
        };
        assert_eq!(
            parse_numbered(p),
            (client, i as u32),
            "{sock:?}: packet {i} out of order or from another client"
        );
    }
    client
}

/// Test 1: per socket, exactly one `Connected` first, packets in order, exactly one
/// `Disconnected` last, with many connections spread over several pollers.
fn event_order_per_socket(workers: usize, pollers: usize, seed: u64) {
    const THREADS: u32 = 5;
    const CONNS: u32 = 10;
    const PACKETS: u32 = 200;
    let total = (THREADS * CONNS) as usize;
    let system = System::builder()
        .workers(workers)
        .pollers(pollers)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let addr = system.listen(any_port(), &probe).unwrap();
    let mut clients = HashMap::new();
    for t in stream_clients(addr, THREADS, CONNS, PACKETS, seed) {
        // Close each client as soon as it has written everything.
        for (peer, id, stream) in t.join().expect("client thread panicked") {
            clients.insert(peer, id);
            drop(stream);
        }
    }
    let mut stories: HashMap<SockIdent, Vec<Seen>> = HashMap::new();
    let mut ended = 0;
    while ended < total {
        let obs = recv(&rx, "socket events");
        ended += usize::from(matches!(obs.seen, Seen::Disconnected(_)));
        stories
            .entry(obs.sock.expect("a socket event"))
            .or_default()
            .push(obs.seen);
    }
    // Anything delivered after the last Disconnected is a violation too.
    flush_probes(&[&probe]);
    for obs in rx.try_iter() {
        stories
            .entry(obs.sock.expect("a socket event"))
            .or_default()
            .push(obs.seen);
    }
    assert_eq!(stories.len(), total, "one story per connection");
    let mut seen_clients = HashSet::new();
    for (sock, seen) in &stories {
        let c = check_socket_story(
            *sock,
            seen,
            &clients,
            PACKETS,
            &DisconnectReason::PeerClosed,
        );
        assert!(seen_clients.insert(c), "client {c} seen on two sockets");
    }
    assert_eq!(system.open_sockets(), 0);
    shutdown_gracefully(system);
}

#[test]
fn event_order_per_socket_two_workers_two_pollers() {
    event_order_per_socket(2, 2, 1);
}

#[test]
fn event_order_per_socket_three_workers_two_pollers() {
    event_order_per_socket(3, 2, 2);
}

#[test]
fn event_order_per_socket_three_workers_three_pollers() {
    event_order_per_socket(3, 3, 3);
}

#[test]
fn event_order_per_socket_one_poller_among_three_workers() {
    event_order_per_socket(3, 1, 4);
}

/// Test 2: sockets handed from a gate to a player (and on to a room) while the client keeps
/// streaming: every packet reaches exactly one owner, each owner's share is in order, each
/// owner's share precedes the next owner's, and only the last owner hears `Disconnected`.
#[test]
fn hand_off_with_packets_in_flight_loses_and_duplicates_nothing() {
    const CONNS: u32 = 8;
    const PACKETS: u32 = 3000;
    let system = System::builder().workers(3).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel::<Obs>();
    // Listener A: gate 0 hands off at Connected to player 1, which hands off after 50 of its
    // packets to room 2. Listener B: gate 3 hands off after 300 packets to player 4.
    let room = system.spawn(Probe::new(2, tx.clone()));
    let player_a = system.spawn(Probe::new(1, tx.clone()).handoff(Handoff {
        after: 50,
        to: room.recipient(),
        wait_for_queued: true,
    }));
    let gate_a = system.spawn(Probe::new(0, tx.clone()).handoff(Handoff {
        after: 0,
        to: player_a.recipient(),
        wait_for_queued: true,
    }));
    let player_b = system.spawn(Probe::new(4, tx.clone()));
    let gate_b = system.spawn(Probe::new(3, tx.clone()).handoff(Handoff {
        after: 300,
        to: player_b.recipient(),
        wait_for_queued: true,
    }));
    drop(tx);
    let chains: [&[usize]; 2] = [&[0, 1, 2], &[3, 4]];
    // Who hands off after how many packets of its own.
    let hands_off_after: HashMap<usize, usize> = [(0, 0), (1, 50), (3, 300)].into();
    let addr_a = system.listen(any_port(), &gate_a).unwrap();
    let addr_b = system.listen(any_port(), &gate_b).unwrap();
    let mut handles = stream_clients(addr_a, 1, CONNS, PACKETS, 10);
    handles.extend(stream_clients(addr_b, 1, CONNS, PACKETS, 11));
    let mut clients = HashMap::new();
    let mut streams = Vec::new();
    for t in handles {
        for (peer, id, stream) in t.join().expect("client thread panicked") {
            clients.insert(peer, id);
            streams.push(stream);
        }
    }

    // Per socket, per owner (probe tag), what that owner saw, in its order. The clients stay
    // connected until every packet has reached an owner (a probe reports a packet after the
    // hand-off it triggers), so that every hand-off meets a live socket; then they close.
    let mut stories: HashMap<SockIdent, BTreeMap<usize, Vec<Seen>>> = HashMap::new();
    let (mut packets, mut ended) = (0, 0);
    while ended < 2 * CONNS as usize {
        let obs = rx.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!("{e:?} waiting for events: {packets} packets, {ended} ends so far")
        });
        ended += usize::from(matches!(obs.seen, Seen::Disconnected(_)));
        packets += usize::from(matches!(obs.seen, Seen::Packet(_)));
        if packets == (2 * CONNS * PACKETS) as usize {
            streams.clear();
        }
        let sock = obs.sock.expect("a socket event");
        let story = stories.entry(sock).or_default();
        story.entry(obs.tag).or_default().push(obs.seen);
    }
    flush_probes(&[&gate_a, &player_a, &room, &gate_b, &player_b]);
    for obs in rx.try_iter() {
        let sock = obs.sock.expect("a socket event");
        let story = stories.entry(sock).or_default();
        story.entry(obs.tag).or_default().push(obs.seen);
    }
    assert_eq!(stories.len(), 2 * CONNS as usize);

    let mut hops: BTreeMap<usize, usize> = BTreeMap::new();
    let mut kept_in_flight = 0;
    for (sock, by_owner) in &stories {
        // The owners that saw anything, in chain order, are a prefix of one chain: owner k+1
        // appears exactly when owner k handed the socket on.
        let chain = chains
            .iter()
            .find(|c| by_owner.contains_key(&c[0]))
            .unwrap_or_else(|| panic!("{sock:?}: no gate saw it: {by_owner:?}"));
        let owners: Vec<usize> = by_owner.keys().copied().collect();
        assert_eq!(
            owners,
            chain[..owners.len()],
            "{sock:?}: its owners are not a prefix of the chain {chain:?}"
        );
        *hops.entry(owners.len()).or_default() += 1;
        let Some(Seen::Connected(peer)) = by_owner[&chain[0]].first() else {
            panic!("{sock:?}: the gate did not see Connected first: {by_owner:?}");
        };
        let client = clients[peer];
        // Walk the owners: Connected at the first only (first), Disconnected at the last only
        // (last), and their packets, concatenated in order, are 0..PACKETS exactly.
        let mut next_seq = 0u32;
        for (pos, tag) in owners.iter().enumerate() {
            let is_last = pos == owners.len() - 1;
            let seen = &by_owner[tag];
            let mut share = 0;
            for (i, s) in seen.iter().enumerate() {
                match s {
                    Seen::Connected(_) => assert!(
                        pos == 0 && i == 0,
                        "{sock:?}: owner {tag} saw Connected at {i}"
                    ),
                    Seen::Packet(p) => {
                        let (c, seq) = parse_numbered(p);
                        assert_eq!(c, client, "{sock:?}: packet of another client");
                        assert_eq!(
                            seq, next_seq,
                            "{sock:?}: owner {tag} got packet {seq}, expected {next_seq} \
                             (lost, duplicated or reordered across the hand-off)"
                        );
                        next_seq += 1;
                        share += 1;
                    }
                    Seen::Disconnected(r) => {
                        assert!(
                            is_last && i == seen.len() - 1,
                            "{sock:?}: owner {tag} saw Disconnected at {i} of {} (owners {owners:?})",
                            seen.len()
                        );
                        assert_eq!(*r, DisconnectReason::PeerClosed);
                    }
                    other => panic!("{sock:?}: owner {tag}: unexpected {other:?}"),
                }
            }
            let after = hands_off_after.get(tag).copied();
            if is_last {
                assert!(
                    after.is_none_or(|a| share < a),
                    "{sock:?}: owner {tag} saw {share} packets but never handed off"
                );
                assert!(
                    matches!(seen.last(), Some(Seen::Disconnected(_))),
                    "{sock:?}: the last owner {tag} did not see Disconnected last"
                );
            } else {
                let after = after.expect("only hand-off owners have successors");
                assert!(
                    share >= after,
                    "{sock:?}: owner {tag} hands off after {after} packets, saw only {share}"
                );
                kept_in_flight += usize::from(share > after);
            }
        }
        assert_eq!(next_seq, PACKETS, "{sock:?}: packets lost");
    }
    eprintln!(
        "hand-off: sockets by number of owners {hops:?}; {kept_in_flight} hand-offs left \
         packets queued at the old owner"
    );
    shutdown_gracefully(system);
}

/// Receives the next observation, which must be of `sock` (or of a new socket if `None`).
#[track_caller]
fn next_obs(rx: &Receiver<Obs>, what: &str) -> (SockIdent, Seen) {
    let obs = recv(rx, what);
    (obs.sock.expect("a socket event"), obs.seen)
}

/// Expects a `Connected` and returns its socket and peer.
#[track_caller]
fn expect_connected(rx: &Receiver<Obs>) -> (SockIdent, SocketAddr) {
    match next_obs(rx, "Connected") {
        (sock, Seen::Connected(peer)) => (sock, peer),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Expects `Disconnected` of `sock` and returns why.
#[track_caller]
fn expect_disconnected(rx: &Receiver<Obs>, sock: SockIdent) -> DisconnectReason {
    match next_obs(rx, "Disconnected") {
        (s, Seen::Disconnected(reason)) if s == sock => reason,
        other => panic!("expected Disconnected of {sock:?}, got {other:?}"),
    }
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

/// Test 3: a handle is refused once its socket closes, and stays refused when the slot is
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
    // (The peer closes too: see `local_close_reports_disconnected_while_the_peer_stays` for
    // why this test does not wait for Disconnected with the peer still connected.)
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

/// Bug: events staged outside the engine's pass are not delivered until the worker wakes for
/// something else. A graceful close that finds nothing left to write half-closes the socket
/// and stages `Disconnected { ClosedLocally }` from `poller::flush`, which runs after the
/// actors' turns; the worker then sleeps in `epoll_wait` with the event staged (`deliver` only
/// runs after a wait), so the owner hears of its own close only when the peer closes too or
/// the linger deadline (the send timeout, 30 s by default) wakes the worker. One worker makes
/// it deterministic: the owner closes from its handler, on the socket's own poller, so no
/// wake-up is written at all.
#[test]
fn local_close_reports_disconnected_while_the_peer_stays() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx).close_on_request());
    let addr = system.listen(any_port(), &probe).unwrap();
    let mut c = client(addr);
    let (sock, _) = expect_connected(&rx);
    write_frame(&mut c, b"close").unwrap();
    match next_obs(&rx, "the close request") {
        (s, Seen::Packet(p)) if s == sock => assert_eq!(p, b"close"),
        other => panic!("{other:?}"),
    }
    // The close has happened on the wire...
    expect_eof(&mut c);
    // ...and its owner must be told without waiting for the peer (which stays connected).
    assert_eq!(
        expect_disconnected(&rx, sock),
        DisconnectReason::ClosedLocally
    );
    drop(c);
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

/// A victim of panics: `Boom` panics with the given text.
struct Victim;

enum VictimMsg {
    Boom(String),
    Ping(Sender<()>),
}

impl Actor for Victim {
    type Msg = VictimMsg;
    fn handle(&mut self, msg: VictimMsg, _: &mut Context<Self>) {
        match msg {
            VictimMsg::Boom(text) => panic!("{text}"),
            VictimMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Counts what it is sent.
struct Bystander {
    count: u64,
}

enum BystanderMsg {
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

/// Panics in `started`.
struct PanicsOnStart;

impl Actor for PanicsOnStart {
    type Msg = ();
    fn started(&mut self, _: &mut Context<Self>) {
        panic!("refusing to start");
    }
    fn handle(&mut self, _: (), _: &mut Context<Self>) {}
}

/// Expects the watcher's next report to be `id` stopping with `reason`.
#[track_caller]
fn expect_stopped(rx: &Receiver<(ActorId, StopReason)>, id: ActorId) -> StopReason {
    let (who, reason) = recv(rx, "a watched actor to stop");
    assert_eq!(who, id, "the stopped actor");
    reason
}

/// Test 4a: a panicking handler stops only its actor; its watchers are told why, late
/// watchers too; workers keep running everything else.
#[test]
fn panicking_handler_stops_its_actor_tells_watchers_and_spares_others() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let bystander = system.spawn(Bystander { count: 0 });

    let victim = system.spawn(Victim);
    watch(&watcher, &victim);
    let (ptx, prx) = mpsc::channel();
    victim.send(VictimMsg::Ping(ptx.clone())).unwrap();
    recv(&prx, "the victim to answer");
    for _ in 0..100 {
        bystander.send(BystanderMsg::Add).unwrap();
    }
    victim
        .send(VictimMsg::Boom("boom: handler failed with 42".into()))
        .unwrap();
    match expect_stopped(&wrx, victim.id()) {
        StopReason::Panicked(msg) => assert!(
            msg.contains("boom: handler failed with 42"),
            "panic text: {msg:?}"
        ),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(!victim.is_alive());
    match victim.send(VictimMsg::Ping(ptx.clone())) {
        Err(TrySendError::Closed(VictimMsg::Ping(_))) => {}
        other => panic!("send to a panicked actor: {:?}", other.map(|_| ())),
    }
    // A watcher that comes late is told at once, with the same reason.
    let (late_tx, late_rx) = mpsc::channel();
    let late = system.spawn(Watcher { out: late_tx });
    watch(&late, &victim);
    assert!(matches!(
        expect_stopped(&late_rx, victim.id()),
        StopReason::Panicked(m) if m.contains("42")
    ));

    // More panics than workers, a panic in `started` too: every worker survives them all.
    let victims: Vec<Addr<Victim>> = (0..8).map(|_| system.spawn(Victim)).collect();
    for (i, v) in victims.iter().enumerate() {
        watch(&watcher, v);
        v.send(VictimMsg::Boom(format!("victim {i} down"))).unwrap();
    }
    let mut down: HashMap<ActorId, StopReason> = HashMap::new();
    for _ in &victims {
        let (id, reason) = recv(&wrx, "the victims to stop");
        down.insert(id, reason);
    }
    for (i, v) in victims.iter().enumerate() {
        assert_eq!(
            down.get(&v.id()),
            Some(&StopReason::Panicked(format!("victim {i} down")))
        );
    }
    let grumpy = system.spawn(PanicsOnStart);
    watch(&watcher, &grumpy);
    assert_eq!(
        expect_stopped(&wrx, grumpy.id()),
        StopReason::Panicked("refusing to start".into())
    );

    for _ in 0..10_000 {
        bystander.send(BystanderMsg::Add).unwrap();
    }
    let (btx, brx) = mpsc::channel();
    bystander.send(BystanderMsg::Get(btx)).unwrap();
    assert_eq!(recv(&brx, "the bystander's count"), 10_100);
    // A new actor still runs, and the bystander was never stopped.
    let fresh = system.spawn(Victim);
    fresh.send(VictimMsg::Ping(ptx)).unwrap();
    recv(&prx, "a new actor to answer");
    assert!(wrx.try_recv().is_err(), "an unexpected stop was reported");
    shutdown_gracefully(system);
}

/// An echo owner that panics on the packet `die`.
struct Fragile;

impl Actor for Fragile {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            assert_ne!(packet.payload(), b"die", "fragile owner died");
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

/// Test 4a, network side: a socket owner that panics does not take its poller down: other
/// sockets on the same pollers are still served, and its own socket is closed at its next
/// event instead of being left without an owner.
#[test]
fn panicking_socket_owner_spares_pollers_and_other_sockets() {
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let fragile = system.spawn(Fragile);
    watch(&watcher, &fragile);
    let (tx, _rx) = mpsc::channel();
    let sturdy = system.spawn(Probe::new(0, tx).echo());
    let fragile_addr = system.listen(any_port(), &fragile).unwrap();
    let sturdy_addr = system.listen(any_port(), &sturdy).unwrap();
    let mut doomed = client(fragile_addr);
    let mut others: Vec<TcpStream> = (0..4).map(|_| client(sturdy_addr)).collect();
    let round_trip = |c: &mut TcpStream, text: &[u8]| {
        write_frame(c, text).unwrap();
        assert_eq!(expect_frame(c), text);
    };
    round_trip(&mut doomed, b"hello");
    for c in &mut others {
        round_trip(c, b"before");
    }
    write_frame(&mut doomed, b"die").unwrap();
    match expect_stopped(&wrx, fragile.id()) {
        StopReason::Panicked(m) => assert!(m.contains("fragile owner died"), "{m:?}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The next event of the orphaned socket closes it.
    write_frame(&mut doomed, b"anyone there?").unwrap();
    let rest = util3::read_until_closed(&mut doomed).expect("the orphaned socket to close");
    assert!(rest.is_empty(), "a dead owner echoed {rest:?}");
    for _ in 0..3 {
        for c in &mut others {
            round_trip(c, b"after");
        }
    }
    drop(others);
    drop(doomed);
    eventually("all sockets to close", || system.open_sockets() == 0);
    shutdown_gracefully(system);
}

/// A supervised counter: `started` and construction are counted from outside.
struct Tally {
    count: u64,
    starts: Arc<AtomicUsize>,
}

enum TallyMsg {
    Inc,
    Get(Sender<u64>),
    Boom(&'static str),
}

impl Actor for Tally {
    type Msg = TallyMsg;
    fn started(&mut self, _: &mut Context<Self>) {
        self.starts.fetch_add(1, Ordering::SeqCst);
    }
    fn handle(&mut self, msg: TallyMsg, _: &mut Context<Self>) {
        match msg {
            TallyMsg::Inc => self.count += 1,
            TallyMsg::Get(reply) => {
                let _ = reply.send(self.count);
            }
            TallyMsg::Boom(text) => panic!("{text}"),
        }
    }
}

/// Test 4b: a supervised actor is rebuilt in place after a panic (same address, same mailbox,
/// fresh state, `started` again) until its policy's limit, then stops with `RestartLimit`.
#[test]
fn supervised_actor_restarts_with_fresh_state_until_its_limit() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let built = Arc::new(AtomicUsize::new(0));
    let starts = Arc::new(AtomicUsize::new(0));
    let (b, s) = (built.clone(), starts.clone());
    let tally = system.spawn_supervised(
        move || {
            b.fetch_add(1, Ordering::SeqCst);
            Tally {
                count: 0,
                starts: s.clone(),
            }
        },
        RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
    );
    watch(&watcher, &tally);
    let (tx, rx) = mpsc::channel();
    let get = |tally: &Addr<Tally>| {
        tally.send(TallyMsg::Get(tx.clone())).unwrap();
        recv(&rx, "the tally")
    };
    for _ in 0..3 {
        tally.send(TallyMsg::Inc).unwrap();
    }
    assert_eq!(get(&tally), 3);
    assert_eq!(built.load(Ordering::SeqCst), 1);
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    // Messages queued behind the panicking one survive it (same mailbox) and reach the new
    // instance, whose state starts afresh.
    tally.send(TallyMsg::Boom("first failure")).unwrap();
    tally.send(TallyMsg::Inc).unwrap();
    assert_eq!(
        get(&tally),
        1,
        "fresh state after a restart, queued Inc kept"
    );
    assert!(tally.is_alive());
    assert_eq!(built.load(Ordering::SeqCst), 2);
    assert_eq!(
        starts.load(Ordering::SeqCst),
        2,
        "started runs after a restart"
    );

    tally.send(TallyMsg::Boom("second failure")).unwrap();
    assert_eq!(get(&tally), 0);
    assert_eq!(built.load(Ordering::SeqCst), 3);
    assert!(wrx.try_recv().is_err(), "a restart is not a stop");

    // One panic more than the policy allows.
    tally.send(TallyMsg::Boom("third failure")).unwrap();
    match expect_stopped(&wrx, tally.id()) {
        StopReason::RestartLimit(m) => assert!(m.contains("third failure"), "{m:?}"),
        other => panic!("expected RestartLimit, got {other:?}"),
    }
    assert!(!tally.is_alive());
    assert!(matches!(
        tally.send(TallyMsg::Inc),
        Err(TrySendError::Closed(TallyMsg::Inc))
    ));
    assert_eq!(built.load(Ordering::SeqCst), 3, "no rebuild past the limit");
    shutdown_gracefully(system);
}

/// A registrable actor that says who it is.
struct Named {
    label: &'static str,
}

enum NamedMsg {
    Who(Sender<&'static str>),
    Register(String, Sender<Result<(), RegistryError>>),
    Boom,
}

impl Actor for Named {
    type Msg = NamedMsg;
    fn handle(&mut self, msg: NamedMsg, ctx: &mut Context<Self>) {
        match msg {
            NamedMsg::Who(reply) => {
                let _ = reply.send(self.label);
            }
            NamedMsg::Register(name, reply) => {
                let _ = reply.send(ctx.register(&name));
            }
            NamedMsg::Boom => panic!("named actor fails"),
        }
    }
}

/// Test 5: register and look up; duplicates refused; a name is freed when its holder stops
/// (however it stops) and can then be taken again; a lookup with the wrong type finds nothing.
#[test]
fn registry_refuses_duplicates_and_frees_names_of_stopped_actors() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let first = system.spawn(Named { label: "first" });
    let second = system.spawn(Named { label: "second" });
    let (tx, rx) = mpsc::channel();
    let who = |a: &Addr<Named>| {
        a.send(NamedMsg::Who(tx.clone())).unwrap();
        recv(&rx, "an answer")
    };

    assert_eq!(system.register("svc", &first), Ok(()));
    let found = system.lookup::<Named>("svc").expect("a registered name");
    assert_eq!(found, first);
    assert_eq!(who(&found), "first");
    assert!(system.lookup::<Named>("nope").is_none());
    assert!(
        system.lookup::<Bystander>("svc").is_none(),
        "a lookup with the wrong type"
    );

    // Duplicates are refused, never replaced: by register, spawn_with and Context::register.
    assert_eq!(
        system.register("svc", &second),
        Err(RegistryError::NameTaken("svc".into()))
    );
    assert_eq!(
        system.register("svc", &first),
        Err(RegistryError::NameTaken("svc".into())),
        "not even by its holder"
    );
    match system.spawn_with(
        Named { label: "third" },
        SpawnOptions::default().name("svc"),
    ) {
        Err(RegistryError::NameTaken(n)) => assert_eq!(n, "svc"),
        other => panic!("spawn_with a taken name: {other:?}"),
    }
    let (rtx, rrx) = mpsc::channel();
    second
        .send(NamedMsg::Register("svc".into(), rtx.clone()))
        .unwrap();
    assert_eq!(
        recv(&rrx, "Context::register"),
        Err(RegistryError::NameTaken("svc".into()))
    );
    assert_eq!(who(&system.lookup::<Named>("svc").unwrap()), "first");

    // Several threads race for one name: exactly one wins.
    let racers: Vec<Addr<Named>> = (0..8)
        .map(|_| system.spawn(Named { label: "racer" }))
        .collect();
    let barrier = Arc::new(Barrier::new(racers.len()));
    let wins: usize = racers
        .iter()
        .map(|r| {
            let (h, r, b) = (system.handle(), r.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                h.register("contested", &r)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap().is_ok()))
        .sum();
    assert_eq!(wins, 1, "exactly one racer holds the name");

    // An actor under two names (one from inside) loses both when it stops normally.
    second
        .send(NamedMsg::Register("svc-b".into(), rtx.clone()))
        .unwrap();
    assert_eq!(recv(&rrx, "Context::register"), Ok(()));
    assert_eq!(system.register("svc-b2", &second), Ok(()));
    watch(&watcher, &first);
    watch(&watcher, &second);
    first.stop();
    assert_eq!(expect_stopped(&wrx, first.id()), StopReason::Normal);
    eventually("the name of a stopped actor to be freed", || {
        system.lookup::<Named>("svc").is_none()
    });
    // Taken again by another actor.
    let again = system
        .spawn_with(
            Named { label: "again" },
            SpawnOptions::default().name("svc"),
        )
        .expect("a freed name can be taken again");
    assert_eq!(who(&system.lookup::<Named>("svc").unwrap()), "again");
    assert_eq!(again, system.lookup::<Named>("svc").unwrap());

    // A panic frees names too.
    second.send(NamedMsg::Boom).unwrap();
    assert!(matches!(
        expect_stopped(&wrx, second.id()),
        StopReason::Panicked(_)
    ));
    eventually("the names of a panicked actor to be freed", || {
        system.lookup::<Named>("svc-b").is_none() && system.lookup::<Named>("svc-b2").is_none()
    });
    assert_eq!(system.register("svc-b", &again), Ok(()));
    // Registering a stopped actor is refused, and does not take the name.
    assert_eq!(
        system.register("ghost", &first),
        Err(RegistryError::ActorStopped)
    );
    assert!(system.lookup::<Named>("ghost").is_none());
    assert_eq!(system.register("ghost", &again), Ok(()));
    assert_eq!(system.registered_names(), 4, "svc, svc-b, ghost, contested");
    shutdown_gracefully(system);
}

/// Checks that every sender's messages arrive in order.
struct FifoSink {
    next: Vec<u64>,
    violations: u64,
}

enum FifoMsg {
    Item(usize, u64),
    Report(Sender<(Vec<u64>, u64)>),
}

impl Actor for FifoSink {
    type Msg = FifoMsg;
    fn handle(&mut self, msg: FifoMsg, _: &mut Context<Self>) {
        match msg {
            FifoMsg::Item(sender, seq) => {
                if self.next[sender] != seq {
                    self.violations += 1;
                }
                self.next[sender] = seq + 1;
            }
            FifoMsg::Report(reply) => {
                let _ = reply.send((self.next.clone(), self.violations));
            }
        }
    }
}

/// An actor that sends its share to the sink a chunk per turn (so that its sends interleave
/// with everyone else's, from whichever worker runs it).
struct Pump {
    id: usize,
    sink: Addr<FifoSink>,
    next: u64,
    total: u64,
    done: Sender<usize>,
}

impl Actor for Pump {
    type Msg = ();
    fn handle(&mut self, (): (), ctx: &mut Context<Self>) {
        let end = (self.next + 97).min(self.total);
        while self.next < end {
            self.sink.send(FifoMsg::Item(self.id, self.next)).unwrap();
            self.next += 1;
        }
        if self.next < self.total {
            ctx.addr().send(()).unwrap();
        } else {
            let _ = self.done.send(self.id);
        }
    }
}

/// Test 6: messages from one sender arrive in order, with many senders at once (threads and
/// actors).
#[test]
fn per_sender_fifo_under_many_concurrent_senders() {
    const THREADS: usize = 8;
    const PUMPS: usize = 4;
    const EACH: u64 = 10_000;
    let system = System::builder().workers(3).build().unwrap();
    let sink = system.spawn(FifoSink {
        next: vec![0; THREADS + PUMPS],
        violations: 0,
    });
    let (done_tx, done_rx) = mpsc::channel();
    let pumps: Vec<Addr<Pump>> = (0..PUMPS)
        .map(|i| {
            system.spawn(Pump {
                id: THREADS + i,
                sink: sink.clone(),
                next: 0,
                total: EACH,
                done: done_tx.clone(),
            })
        })
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<JoinHandle<()>> = (0..THREADS)
        .map(|id| {
            let (sink, barrier) = (sink.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for seq in 0..EACH {
                    sink.send(FifoMsg::Item(id, seq)).unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    for p in &pumps {
        p.send(()).unwrap();
    }
    for t in threads {
        t.join().expect("sender thread panicked");
    }
    for _ in 0..PUMPS {
        recv(&done_rx, "the pumps to finish");
    }
    let (tx, rx) = mpsc::channel();
    sink.send(FifoMsg::Report(tx)).unwrap();
    let (next, violations) = recv(&rx, "the sink's report");
    assert_eq!(violations, 0, "messages from one sender were reordered");
    assert_eq!(next, vec![EACH; THREADS + PUMPS], "messages were lost");
    shutdown_gracefully(system);
}

/// Floods each new socket with numbered packets, then reports the socket.
struct Flood {
    per_conn: u32,
    pad: usize,
    out: Sender<Result<SockIdent, String>>,
}

impl Actor for Flood {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Connected { sock, .. } = ev {
            for seq in 0..self.per_conn {
                if let Err(e) = sock.send(numbered_packet(0, seq, self.pad)) {
                    let _ = self.out.send(Err(format!("send {seq} refused: {e}")));
                    return;
                }
            }
            let _ = self.out.send(Ok(sock));
        }
    }
}

/// Test 7: a shutdown with packets queued on its sockets (sent by the owner on a worker and by
/// another thread, none read yet by the peers) writes them all before closing, finishes within
/// its deadline, and says it was graceful.
#[test]
fn shutdown_with_traffic_in_flight_flushes_everything_within_the_deadline() {
    const CLIENTS: usize = 3;
    const PER_SIDE: u32 = 2000;
    const PAD: usize = 1024;
    let deadline = Duration::from_secs(5);
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let flood = system.spawn(Flood {
        per_conn: PER_SIDE,
        pad: PAD,
        out: tx,
    });
    let addr = system.listen(any_port(), &flood).unwrap();
    let mut go = Vec::new();
    let readers: Vec<JoinHandle<Result<Vec<u32>, String>>> = (0..CLIENTS)
        .map(|_| {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            go.push(go_tx);
            let mut c = client(addr);
            thread::spawn(move || {
                // Read nothing until the shutdown begins, so that it finds data queued.
                go_rx.recv_timeout(WAIT).map_err(|e| format!("go: {e}"))?;
                let mut seqs = Vec::new();
                loop {
                    match read_frame(&mut c) {
                        Ok(Some(p)) => seqs.push(parse_numbered(&p).1),
                        Ok(None) => return Ok(seqs),
                        Err(e) => return Err(format!("after {} frames: {e}", seqs.len())),
                    }
                }
            })
        })
        .collect();
    let socks: Vec<SockIdent> = (0..CLIENTS)
        .map(|_| recv(&rx, "the owner to flood a socket").expect("owner sends"))
        .collect();
    // More from a thread that is not a worker, accepted before the shutdown begins.
    for sock in &socks {
        for seq in PER_SIDE..2 * PER_SIDE {
            if let Err(e) = sock.send(numbered_packet(0, seq, PAD)) {
                panic!("{sock:?}: send {seq} from outside refused: {e:?}");
            }
        }
    }
    for g in &go {
        g.send(()).unwrap();
    }
    let began = Instant::now();
    let report = system.shutdown(deadline);
    let took = began.elapsed();
    assert!(
        took < deadline + Duration::from_secs(2),
        "shutdown took {took:?} with a deadline of {deadline:?}"
    );
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.actors_left, 0);
    assert_eq!(report.sockets_left, 0);
    for (i, r) in readers.into_iter().enumerate() {
        let seqs = r
            .join()
            .expect("reader panicked")
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(
            seqs.len(),
            2 * PER_SIDE as usize,
            "client {i}: packets lost"
        );
        assert!(
            seqs.iter().enumerate().all(|(k, s)| *s == k as u32),
            "client {i}: packets out of order"
        );
    }
    for sock in socks {
        assert!(!sock.is_open(), "{sock:?} after shutdown");
        assert!(matches!(
            sock.send(WPacket::new()),
            Err(TrySendError::Closed(_))
        ));
    }
}

/// Blocks in its first handler until released; reports what it handles.
struct Blocker {
    release: Option<Receiver<()>>,
    entered: Sender<u32>,
    handled: Sender<u32>,
}

impl Actor for Blocker {
    type Msg = u32;
    fn handle(&mut self, n: u32, _: &mut Context<Self>) {
        let _ = self.entered.send(n);
        if let Some(release) = self.release.take() {
            release
                .recv_timeout(WAIT)
                .expect("the test to release the blocker");
        }
        let _ = self.handled.send(n);
    }
}

/// Test 8: a bounded mailbox refuses a send when full and hands the message back; a stopped
/// actor refuses with `Closed`.
#[test]
fn bounded_mailbox_hands_back_the_message_when_full_and_after_stop() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (handled_tx, handled_rx) = mpsc::channel();
    let blocker = system
        .spawn_with(
            Blocker {
                release: Some(release_rx),
                entered: entered_tx,
                handled: handled_tx,
            },
            SpawnOptions::default().mailbox_capacity(2),
        )
        .unwrap();
    watch(&watcher, &blocker);
    blocker.send(1).unwrap();
    assert_eq!(recv(&entered_rx, "the blocker to take 1"), 1);
    // 1 is being handled; the mailbox holds two more.
    blocker.send(2).unwrap();
    blocker.send(3).unwrap();
    assert_eq!(blocker.mailbox_len(), 2);
    match blocker.send(4) {
        Err(e @ TrySendError::Full(_)) => {
            assert!(e.is_full() && !e.is_closed());
            assert_eq!(e.into_inner(), 4, "the refused message is handed back");
        }
        other => panic!("send to a full mailbox: {other:?}"),
    }
    assert!(matches!(blocker.send(5), Err(TrySendError::Full(5))));
    let recipient = blocker.recipient::<u32>();
    assert!(matches!(recipient.send(6), Err(TrySendError::Full(6))));
    assert_eq!(blocker.mailbox_len(), 2);

    release_tx.send(()).unwrap();
    for n in 1..=3 {
        assert_eq!(recv(&handled_rx, "the queued messages"), n);
    }
    // Room again; the refused ones never got in.
    blocker.send(7).unwrap();
    assert_eq!(recv(&handled_rx, "a message after the drain"), 7);

    blocker.stop();
    assert_eq!(expect_stopped(&wrx, blocker.id()), StopReason::Normal);
    match blocker.send(8) {
        Err(e @ TrySendError::Closed(_)) => {
            assert!(e.is_closed());
            assert_eq!(e.into_inner(), 8);
        }
        other => panic!("send to a stopped actor: {other:?}"),
    }
    assert!(matches!(recipient.send(9), Err(TrySendError::Closed(9))));
    // What it handled, exactly: 1, 2, 3, 7.
    let entered: Vec<u32> = entered_rx.try_iter().collect();
    assert_eq!(entered, [2, 3, 7]);
    shutdown_gracefully(system);
}

/// Test 9: `connect` to a listening socket of the system: both ends get `Connected`, packets
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

/// A pool member: checks per-key order, records which keys it saw.
struct Member {
    index: usize,
    next: HashMap<u64, u64>,
    violations: u64,
    done: Sender<(usize, u32)>,
}

enum MemberMsg {
    Keyed(u64, u64),
    /// Work item `n`, blocking on the receiver first if there is one.
    Work(u32, Option<Receiver<()>>),
    Report(Sender<(usize, HashMap<u64, u64>, u64)>),
}

impl Actor for Member {
    type Msg = MemberMsg;
    fn handle(&mut self, msg: MemberMsg, _: &mut Context<Self>) {
        match msg {
            MemberMsg::Keyed(key, seq) => {
                let next = self.next.entry(key).or_insert(0);
                if *next != seq {
                    self.violations += 1;
                }
                *next = seq + 1;
            }
            MemberMsg::Work(n, block) => {
                if let Some(release) = block {
                    let _ = self.done.send((self.index, u32::MAX));
                    release.recv_timeout(WAIT).expect("the test to release");
                }
                let _ = self.done.send((self.index, n));
            }
            MemberMsg::Report(reply) => {
                let _ = reply.send((self.index, self.next.clone(), self.violations));
            }
        }
    }
}

fn member_pool(
    system: &System,
    size: usize,
    routing: PoolRouting,
) -> (Pool<Member>, Receiver<(usize, u32)>) {
    let (tx, rx) = mpsc::channel();
    let pool = Pool::spawn(system, size, routing, |index| Member {
        index,
        next: HashMap::new(),
        violations: 0,
        done: tx.clone(),
    });
    (pool, rx)
}

/// Test 10a: `send_keyed` sends every message of a key to one member, so per-key order holds,
/// with many keys and several sending threads.
#[test]
fn pool_send_keyed_keeps_order_per_key() {
    const KEYS: u64 = 200;
    const PER_KEY: u64 = 50;
    const THREADS: u64 = 4;
    let system = System::builder().workers(3).build().unwrap();
    let (pool, _done) = member_pool(&system, 4, PoolRouting::LeastLoaded);
    let senders: Vec<JoinHandle<()>> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                for seq in 0..PER_KEY {
                    for key in (t..KEYS).step_by(THREADS as usize) {
                        pool.send_keyed(key * 0x1_0001, MemberMsg::Keyed(key, seq))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender panicked");
    }
    let (tx, rx) = mpsc::channel();
    for m in pool.members() {
        m.send(MemberMsg::Report(tx.clone())).unwrap();
    }
    let mut owner_of: HashMap<u64, usize> = HashMap::new();
    let mut used = 0;
    for _ in 0..pool.len() {
        let (index, next, violations) = recv(&rx, "the members' reports");
        assert_eq!(
            violations, 0,
            "member {index}: a key's messages out of order"
        );
        used += usize::from(!next.is_empty());
        for (key, count) in next {
            assert_eq!(count, PER_KEY, "key {key}: messages lost at member {index}");
            if let Some(other) = owner_of.insert(key, index) {
                panic!("key {key} reached members {other} and {index}");
            }
        }
    }
    assert_eq!(owner_of.len(), KEYS as usize, "every key reached a member");
    assert!(used > 1, "all keys landed on one member");
    shutdown_gracefully(system);
}

/// Test 10b: with one member busy, `LeastLoaded` keeps the others working.
#[test]
fn pool_least_loaded_uses_other_members_while_one_is_busy() {
    const ITEMS: u32 = 20;
    let system = System::builder().workers(3).build().unwrap();
    let (pool, done) = member_pool(&system, 3, PoolRouting::LeastLoaded);
    let (release_tx, release_rx) = mpsc::channel();
    pool.send(MemberMsg::Work(0, Some(release_rx))).unwrap();
    let (busy, marker) = recv(&done, "a member to block");
    assert_eq!(marker, u32::MAX);
    for n in 1..=ITEMS {
        pool.send(MemberMsg::Work(n, None)).unwrap();
    }
    // While `busy` is blocked, others complete work.
    let (worker, n) = recv(&done, "another member to complete work");
    assert_ne!(
        worker, busy,
        "only the blocked member could have completed {n}"
    );
    release_tx.send(()).unwrap();
    let mut by_member: HashMap<usize, u32> = HashMap::from([(worker, 1)]);
    for _ in 1..=ITEMS {
        let (m, _) = recv(&done, "all work to complete");
        *by_member.entry(m).or_default() += 1;
    }
    assert!(by_member.len() > 1, "{by_member:?}");
    assert_eq!(by_member.values().sum::<u32>(), ITEMS + 1);
    shutdown_gracefully(system);
}

/// Pool, `LeastLoaded`: "a free instance (one whose mailbox is empty)". A member that is busy
/// in a long handler has an empty mailbox too, so it is picked while others are idle, and the
/// message waits behind the long handler. Pool of two, member 0 blocked: every other message
/// lands behind it although member 1 is idle.
#[test]
fn pool_least_loaded_does_not_queue_behind_a_busy_member_while_another_is_idle() {
    let system = System::builder().workers(3).build().unwrap();
    let (pool, done) = member_pool(&system, 2, PoolRouting::LeastLoaded);
    let (release_tx, release_rx) = mpsc::channel();
    pool.send(MemberMsg::Work(0, Some(release_rx))).unwrap();
    let (busy, _) = recv(&done, "a member to block");
    // One at a time, each sent only when the previous one is done: the idle member is always
    // free, so each should complete while the busy one is still blocked.
    for n in 1..=4 {
        pool.send(MemberMsg::Work(n, None)).unwrap();
        match done.recv_timeout(Duration::from_secs(2)) {
            Ok((m, got)) => {
                assert_eq!(got, n);
                assert_ne!(m, busy);
            }
            Err(_) => {
                release_tx.send(()).unwrap();
                panic!(
                    "message {n} was queued behind the busy member {busy} while the other was idle"
                );
            }
        }
    }
    release_tx.send(()).unwrap();
    shutdown_gracefully(system);
}

/// Test 10c: `RoundRobin` deals messages to the members in turn.
#[test]
fn pool_round_robin_deals_evenly() {
    let system = System::builder().workers(2).build().unwrap();
    let (pool, done) = member_pool(&system, 4, PoolRouting::RoundRobin);
    for n in 0..400 {
        pool.send(MemberMsg::Work(n, None)).unwrap();
    }
    let mut by_member: HashMap<usize, Vec<u32>> = HashMap::new();
    for _ in 0..400 {
        let (m, n) = recv(&done, "the work to complete");
        by_member.entry(m).or_default().push(n);
    }
    assert_eq!(by_member.len(), 4);
    for (m, ns) in &by_member {
        assert_eq!(ns.len(), 100, "member {m}");
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "member {m} out of order"
        );
    }
    shutdown_gracefully(system);
}

/// Test 11: the maximum packet length of `listen_with` holds in layer 3: a larger declared
/// length closes that socket with `PacketTooLarge`, a packet of exactly the maximum passes,
/// and other sockets are served on.
#[test]
fn max_packet_len_closes_only_the_offending_socket() {
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let owner = system.spawn(Probe::new(0, tx).echo());
    let addr = system
        .listen_with(
            any_port(),
            &owner,
            ConnOptions::default().max_packet_len(16),
        )
        .unwrap();
    let mut good = client(addr);
    let (good_sock, _) = expect_connected(&rx);
    let exactly_max = [7u8; 16];
    write_frame(&mut good, &exactly_max).unwrap();
    assert_eq!(expect_frame(&mut good), exactly_max);
    write_frame(&mut good, b"").unwrap();
    assert_eq!(expect_frame(&mut good), b"");
    for expected in [&exactly_max[..], &[][..]] {
        match next_obs(&rx, "the good client's packets") {
            (s, Seen::Packet(p)) if s == good_sock => assert_eq!(p, expected),
            other => panic!("{other:?}"),
        }
    }

    for declared in [1000u32, 17] {
        let mut bad = client(addr);
        let (bad_sock, _) = expect_connected(&rx);
        // Only the header: the limit holds before any payload arrives.
        bad.write_all(&declared.to_le_bytes()).unwrap();
        assert_eq!(
            expect_disconnected(&rx, bad_sock),
            DisconnectReason::PacketTooLarge {
                len: declared as usize,
                max: 16
            }
        );
        let rest = util3::read_until_closed(&mut bad).expect("the offender to be closed");
        assert!(rest.is_empty());
        assert!(!bad_sock.is_open());

        // The other socket is served on.
        write_frame(&mut good, b"still here").unwrap();
        assert_eq!(expect_frame(&mut good), b"still here");
        match next_obs(&rx, "the good client's packet") {
            (s, Seen::Packet(p)) if s == good_sock => assert_eq!(p, b"still here"),
            other => panic!("{other:?}"),
        }
    }
    assert!(good_sock.is_open());
    drop(good);
    assert_eq!(
        expect_disconnected(&rx, good_sock),
        DisconnectReason::PeerClosed
    );
    shutdown_gracefully(system);
}
