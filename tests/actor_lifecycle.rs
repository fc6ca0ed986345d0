//! How actors end, and how they come back: a panic in a handler (or in `started`) stops only
//! that actor and becomes a `StopReason` its watchers are told, late watchers too; the workers
//! and pollers survive it, and a socket whose owner died is closed. A supervised actor is
//! rebuilt in place (same address, same mailbox, fresh state) until its restart limit.
//!
//! A [`Watcher`] reports each stop through a channel. Every wait is bounded
//! ([`WAIT`](support::WAIT)).

mod support;

use kendynet::{
    Actor, ActorId, Addr, Context, NetEvent, RestartPolicy, StopReason, System, TrySendError,
    WPacket,
};
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;
use support::actors::{Bystander, BystanderMsg, Probe, Watcher, expect_stopped, watch};
use support::wire::{client, expect_frame, read_until_closed, write_frame};
use support::{any_port, eventually, recv, shutdown_gracefully};

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

/// Panics in `started`.
struct PanicsOnStart;

impl Actor for PanicsOnStart {
    type Msg = ();
    fn started(&mut self, _: &mut Context<Self>) {
        panic!("refusing to start");
    }
    fn handle(&mut self, _: (), _: &mut Context<Self>) {}
}

/// A panicking handler stops only its actor; its watchers are told why, late
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

/// A socket owner that panics does not take its poller down: other
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
    let rest = read_until_closed(&mut doomed).expect("the orphaned socket to close");
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

/// A supervised actor is rebuilt in place after a panic (same address, same mailbox,
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
