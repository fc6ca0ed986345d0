//! Supervision trees: one-for-one and one-for-all restarts in place (same address, the old
//! instance's `stopped` before the new one's `started`), restart intensity, back-off on the
//! test kit's manual clock, nested supervisors, and sockets re-announced to a restarted owner.

mod support;

use kendynet::testkit::Sim;
use kendynet::{
    Actor, ActorId, Addr, Context, NetEvent, SockIdent, StopReason, SupervisorSpec, System,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::actors::{Watcher, watch};
use support::wire::{client, expect_frame, write_frame};
use support::{any_port, recv, shutdown_gracefully};

/// What a [`Member`] reports: its tag, which instance, and the event.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Life {
    Started(&'static str, usize),
    Stopped(&'static str, usize),
}

/// A supervised actor that counts, reports its life, and panics on demand.
struct Member {
    tag: &'static str,
    instance: usize,
    count: u64,
    log: Sender<Life>,
}

enum MemberMsg {
    Inc,
    Get(Sender<u64>),
    Boom,
}

impl Actor for Member {
    type Msg = MemberMsg;
    fn started(&mut self, _: &mut Context<Self>) {
        let _ = self.log.send(Life::Started(self.tag, self.instance));
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.log.send(Life::Stopped(self.tag, self.instance));
    }
    fn handle(&mut self, msg: MemberMsg, _: &mut Context<Self>) {
        match msg {
            MemberMsg::Inc => self.count += 1,
            MemberMsg::Get(tx) => {
                let _ = tx.send(self.count);
            }
            MemberMsg::Boom => panic!("{} fails on purpose", self.tag),
        }
    }
}

/// A factory of numbered [`Member`] instances.
fn member(tag: &'static str, log: &Sender<Life>) -> impl FnMut() -> Member + Send + 'static {
    let log = log.clone();
    let mut built = 0;
    move || {
        built += 1;
        Member {
            tag,
            instance: built,
            count: 0,
            log: log.clone(),
        }
    }
}

fn count(addr: &Addr<Member>) -> u64 {
    let (tx, rx) = mpsc::channel();
    addr.send(MemberMsg::Get(tx)).unwrap();
    recv(&rx, "a count")
}

fn expect_life(rx: &Receiver<Life>, want: Life) {
    assert_eq!(recv(rx, "a life event"), want);
}

fn quick() -> SupervisorSpec {
    SupervisorSpec::one_for_one()
        .intensity(10, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[test]
fn one_for_one_restarts_only_the_failed_child_in_place() {
    let system = System::builder().workers(2).build().unwrap();
    let (log, events) = mpsc::channel();
    let sup = system.spawn_supervisor(quick());
    let a = sup.start_child(member("a", &log)).unwrap();
    let b = sup.start_child(member("b", &log)).unwrap();
    let mut first = vec![recv(&events, "a start"), recv(&events, "a start")];
    first.sort_by_key(|l| format!("{l:?}"));
    assert_eq!(first, [Life::Started("a", 1), Life::Started("b", 1)]);
    assert_eq!(sup.children(), [a.id(), b.id()]);

    b.send(MemberMsg::Inc).unwrap();
    a.send(MemberMsg::Inc).unwrap();
    a.send(MemberMsg::Boom).unwrap();
    // Queued behind the failing message: kept for the new instance.
    a.send(MemberMsg::Inc).unwrap();
    expect_life(&events, Life::Stopped("a", 1));
    expect_life(&events, Life::Started("a", 2));
    assert_eq!(count(&a), 1, "a fresh instance, the queued Inc kept");
    assert_eq!(count(&b), 1, "the sibling kept its state");
    assert!(a.is_alive());
    assert!(events.try_recv().is_err(), "b was not touched: {events:?}");
    shutdown_gracefully(system);
}

#[test]
fn one_for_all_takes_every_child_down_before_any_restarts() {
    let system = System::builder().workers(2).build().unwrap();
    let (log, events) = mpsc::channel();
    let spec = SupervisorSpec::one_for_all()
        .intensity(10, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(5));
    let sup = system.spawn_supervisor(spec);
    let a = sup.start_child(member("a", &log)).unwrap();
    let b = sup.start_child(member("b", &log)).unwrap();
    let c = sup.start_child(member("c", &log)).unwrap();
    for _ in 0..3 {
        assert!(matches!(recv(&events, "a start"), Life::Started(_, 1)));
    }
    b.send(MemberMsg::Inc).unwrap();
    assert_eq!(count(&b), 1);
    a.send(MemberMsg::Inc).unwrap();
    c.send(MemberMsg::Inc).unwrap();
    b.send(MemberMsg::Boom).unwrap();

    let seen: Vec<Life> = (0..6).map(|_| recv(&events, "a life event")).collect();
    for tag in ["a", "b", "c"] {
        let stopped = seen.iter().position(|l| *l == Life::Stopped(tag, 1));
        let started = seen.iter().position(|l| *l == Life::Started(tag, 2));
        assert!(
            stopped.is_some() && started.is_some() && stopped < started,
            "{tag}: {seen:?}"
        );
    }
    // Every old instance stopped before any new one started.
    let last_stop = seen
        .iter()
        .rposition(|l| matches!(l, Life::Stopped(..)))
        .unwrap();
    let first_start = seen
        .iter()
        .position(|l| matches!(l, Life::Started(..)))
        .unwrap();
    assert!(last_stop < first_start, "{seen:?}");
    // New instances start in start order.
    let starts: Vec<&Life> = seen
        .iter()
        .filter(|l| matches!(l, Life::Started(..)))
        .collect();
    assert_eq!(
        starts,
        [
            &Life::Started("a", 2),
            &Life::Started("b", 2),
            &Life::Started("c", 2)
        ]
    );
    for m in [&a, &b, &c] {
        assert_eq!(count(m), 0, "fresh state everywhere");
    }
    shutdown_gracefully(system);
}

#[test]
fn a_supervisor_that_fails_too_often_stops_its_children_and_itself() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let (log, events) = mpsc::channel();
    let spec = SupervisorSpec::one_for_one()
        .intensity(2, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(2));
    let sup = system.spawn_supervisor(spec);
    let a = sup.start_child(member("a", &log)).unwrap();
    watch(&watcher, sup.addr());
    watch(&watcher, &a);
    expect_life(&events, Life::Started("a", 1));
    for instance in 1..=2 {
        a.send(MemberMsg::Boom).unwrap();
        expect_life(&events, Life::Stopped("a", instance));
        expect_life(&events, Life::Started("a", instance + 1));
    }
    a.send(MemberMsg::Boom).unwrap();
    expect_life(&events, Life::Stopped("a", 3));
    let mut stops: Vec<(ActorId, StopReason)> =
        vec![recv(&wrx, "a watched stop"), recv(&wrx, "a watched stop")];
    stops.sort_by_key(|(id, _)| *id);
    for (id, reason) in &stops {
        assert!(
            matches!(reason, StopReason::RestartLimit(m) if m.contains("fails on purpose")),
            "{id}: {reason:?}"
        );
    }
    let ids: Vec<ActorId> = stops.iter().map(|(id, _)| *id).collect();
    let mut want = vec![sup.addr().id(), a.id()];
    want.sort();
    assert_eq!(ids, want);
    assert!(!a.is_alive() && !sup.addr().is_alive());
    assert!(sup.start_child(member("late", &log)).is_err());
    shutdown_gracefully(system);
}

#[test]
fn a_nested_supervisor_that_gives_up_is_restarted_with_its_children_at_their_addresses() {
    let system = System::builder().workers(2).build().unwrap();
    let (log, events) = mpsc::channel();
    let outer = system.spawn_supervisor(quick());
    let inner = outer
        .start_supervisor(
            SupervisorSpec::one_for_one()
                .intensity(1, Duration::from_secs(60))
                .backoff(Duration::from_millis(1), Duration::from_millis(2)),
        )
        .unwrap();
    let leaf = inner.start_child(member("leaf", &log)).unwrap();
    let sibling = inner.start_child(member("sibling", &log)).unwrap();
    for _ in 0..2 {
        assert!(matches!(recv(&events, "a start"), Life::Started(_, 1)));
    }
    sibling.send(MemberMsg::Inc).unwrap();
    assert_eq!(count(&sibling), 1);
    // The first failure is within the inner supervisor's intensity.
    leaf.send(MemberMsg::Boom).unwrap();
    expect_life(&events, Life::Stopped("leaf", 1));
    expect_life(&events, Life::Started("leaf", 2));
    // The second is not: the inner supervisor gives up, the outer one restarts its subtree.
    leaf.send(MemberMsg::Boom).unwrap();
    let seen: Vec<Life> = (0..4).map(|_| recv(&events, "a life event")).collect();
    for (tag, old) in [("leaf", 2), ("sibling", 1)] {
        let stopped = seen.iter().position(|l| *l == Life::Stopped(tag, old));
        let started = seen.iter().position(|l| *l == Life::Started(tag, old + 1));
        assert!(
            stopped.is_some() && started.is_some() && stopped < started,
            "{tag}: {seen:?}"
        );
    }
    assert!(inner.addr().is_alive() && leaf.is_alive() && sibling.is_alive());
    assert_eq!(count(&sibling), 0, "restarted with the subtree");
    assert_eq!(outer.children(), [inner.addr().id()]);
    assert_eq!(inner.children(), [leaf.id(), sibling.id()]);
    shutdown_gracefully(system);
}

#[test]
fn a_child_that_stops_for_good_leaves_its_supervisor() {
    let system = System::builder().workers(1).build().unwrap();
    let (log, events) = mpsc::channel();
    let sup = system.spawn_supervisor(quick());
    let a = sup.start_child(member("a", &log)).unwrap();
    let b = sup.start_child(member("b", &log)).unwrap();
    for _ in 0..2 {
        recv(&events, "a start");
    }
    a.stop();
    expect_life(&events, Life::Stopped("a", 1));
    support::eventually("a to leave", || sup.children() == [b.id()]);
    shutdown_gracefully(system);
}

/// Back-off doubles with each restart in the window, up to its cap: checked on the test
/// kit's manual clock, where nothing happens between two instants.
#[test]
fn restarts_wait_an_exponential_back_off() {
    let sim = Sim::new(7);
    let (log, events) = mpsc::channel();
    let spec = SupervisorSpec::one_for_one()
        .intensity(10, Duration::from_secs(600))
        .backoff(Duration::from_millis(100), Duration::from_millis(400));
    let sup = sim.spawn_supervisor(spec);
    let a = sup.start_child(member("a", &log)).unwrap();
    sim.run_until_idle();
    expect_life(&events, Life::Started("a", 1));
    for (instance, wait_ms) in [(1, 100), (2, 200), (3, 400), (4, 400)] {
        a.send(MemberMsg::Boom).unwrap();
        sim.run_until_idle();
        expect_life(&events, Life::Stopped("a", instance));
        sim.advance(Duration::from_millis(wait_ms - 1));
        assert!(
            events.try_recv().is_err(),
            "restart {instance} came before {wait_ms} ms"
        );
        sim.advance(Duration::from_millis(1));
        expect_life(&events, Life::Started("a", instance + 1));
    }
    let report = sim.shutdown();
    assert!(report.graceful, "{report:?}");
}

/// A socket owner under a supervisor: after a restart, the new instance is told of the
/// socket (with its peer) before its next packet, and keeps serving it.
struct EchoOwner {
    instance: usize,
    log: Sender<(usize, &'static str, SockIdent, Option<SocketAddr>)>,
}

enum EchoMsg {
    Net(NetEvent),
}

impl From<NetEvent> for EchoMsg {
    fn from(ev: NetEvent) -> EchoMsg {
        EchoMsg::Net(ev)
    }
}

impl Actor for EchoOwner {
    type Msg = EchoMsg;
    fn handle(&mut self, EchoMsg::Net(ev): EchoMsg, _: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, peer } => {
                let _ = self
                    .log
                    .send((self.instance, "connected", sock, Some(peer)));
            }
            NetEvent::Adopted { sock, peer } => {
                let _ = self.log.send((self.instance, "adopted", sock, Some(peer)));
            }
            NetEvent::Packet { sock, packet } => {
                if packet.payload() == b"boom" {
                    panic!("the owner fails on purpose");
                }
                let _ = self.log.send((self.instance, "packet", sock, None));
                let _ = sock.send(kendynet::WPacket::from(packet));
            }
            NetEvent::Disconnected { sock, .. } => {
                let _ = self.log.send((self.instance, "disconnected", sock, None));
            }
            _ => {}
        }
    }
}

#[test]
fn a_restarted_socket_owner_is_told_of_its_sockets_first() {
    let system = System::builder().workers(2).build().unwrap();
    let (log, seen) = mpsc::channel();
    let sup = system.spawn_supervisor(quick());
    let built = Arc::new(AtomicUsize::new(0));
    let b = built.clone();
    let owner = sup
        .start_child(move || EchoOwner {
            instance: b.fetch_add(1, Ordering::SeqCst) + 1,
            log: log.clone(),
        })
        .unwrap();
    let addr = system.listen(any_port(), &owner).unwrap();
    let mut peer = client(addr);
    let (inst, what, sock, from) = recv(&seen, "the connection");
    assert_eq!((inst, what), (1, "connected"));
    let from = from.unwrap();
    write_frame(&mut peer, b"one").unwrap();
    assert_eq!(expect_frame(&mut peer), b"one");
    assert_eq!(recv(&seen, "a packet"), (1, "packet", sock, None));

    write_frame(&mut peer, b"boom").unwrap();
    write_frame(&mut peer, b"two").unwrap();
    assert_eq!(
        recv(&seen, "the adoption"),
        (2, "adopted", sock, Some(from)),
        "the new instance hears of its socket first"
    );
    assert_eq!(recv(&seen, "a packet"), (2, "packet", sock, None));
    assert_eq!(expect_frame(&mut peer), b"two");
    drop(peer);
    assert_eq!(recv(&seen, "the end"), (2, "disconnected", sock, None));
    shutdown_gracefully(system);
}

/// Restarts keep the registered name.
#[test]
fn a_named_child_keeps_its_name_across_restarts() {
    let system = System::builder().workers(2).build().unwrap();
    let (log, events) = mpsc::channel();
    let sup = system.spawn_supervisor(quick());
    let a = sup
        .start_named_child(member("a", &log), Some("the-a"))
        .unwrap();
    expect_life(&events, Life::Started("a", 1));
    a.send(MemberMsg::Boom).unwrap();
    expect_life(&events, Life::Stopped("a", 1));
    expect_life(&events, Life::Started("a", 2));
    let found: Addr<Member> = system.lookup("the-a").expect("still registered");
    assert_eq!(found, a);
    shutdown_gracefully(system);
}

/// A child that fails before its supervisor's first turn still waits for the back-off (the
/// supervisor's first `started` restarts nothing). Over seeds, so that some run the child
/// first.
#[test]
fn a_child_failing_before_its_supervisors_first_turn_waits_for_the_back_off() {
    kendynet::testkit::run_seeds(kendynet::testkit::seeds(16), |seed| {
        let sim = Sim::new(seed);
        let (log, events) = mpsc::channel();
        let spec = SupervisorSpec::one_for_one()
            .intensity(10, Duration::from_secs(600))
            .backoff(Duration::from_millis(100), Duration::from_millis(100));
        let sup = sim.spawn_supervisor(spec);
        let a = sup.start_child(member("a", &log)).unwrap();
        a.send(MemberMsg::Boom).unwrap();
        a.send(MemberMsg::Inc).unwrap();
        sim.run_until_idle();
        expect_life(&events, Life::Started("a", 1));
        expect_life(&events, Life::Stopped("a", 1));
        assert!(events.try_recv().is_err(), "restarted before the back-off");
        sim.advance(Duration::from_millis(100));
        expect_life(&events, Life::Started("a", 2));
        let report = sim.shutdown();
        assert!(report.graceful, "{report:?}");
        assert_eq!(report.dropped.total(), 0);
    });
}
