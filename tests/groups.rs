//! Process groups on real threads: membership, automatic leave on stop, broadcast counts,
//! membership events, and joins and leaves racing broadcasts.

mod support;

use kendynet::actor::{GroupError, LeaveReason};
use kendynet::{Actor, ActorId, Addr, Context, GroupEvent, StopReason, System};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::{recv, shutdown_gracefully};

/// What a group carries.
#[derive(Clone, Debug, PartialEq)]
struct Say(u64);

/// A member: reports each `Say` with its own id; stops on request.
struct Member {
    out: Sender<(ActorId, u64)>,
}

enum MemberMsg {
    Say(Say),
    /// Reply once everything before it has been handled.
    Flush(Sender<()>),
    Stop,
}

impl From<Say> for MemberMsg {
    fn from(s: Say) -> MemberMsg {
        MemberMsg::Say(s)
    }
}

impl Actor for Member {
    type Msg = MemberMsg;
    fn handle(&mut self, msg: MemberMsg, ctx: &mut Context<Self>) {
        match msg {
            MemberMsg::Say(Say(n)) => self.out.send((ctx.id(), n)).unwrap(),
            MemberMsg::Flush(done) => done.send(()).unwrap(),
            MemberMsg::Stop => ctx.stop(),
        }
    }
}

/// Another actor type in the same group.
struct Logger(Sender<(ActorId, u64)>);
impl Actor for Logger {
    type Msg = Say;
    fn handle(&mut self, Say(n): Say, ctx: &mut Context<Self>) {
        self.0.send((ctx.id(), n)).unwrap();
    }
}

/// Forwards membership events.
struct EventLog(Sender<GroupEvent>);
impl Actor for EventLog {
    type Msg = GroupEvent;
    fn handle(&mut self, ev: GroupEvent, _: &mut Context<Self>) {
        self.0.send(ev).unwrap();
    }
}

fn flush(addr: &Addr<Member>) {
    let (tx, rx) = mpsc::channel();
    addr.send(MemberMsg::Flush(tx)).unwrap();
    recv(&rx, "a member to catch up");
}

fn sorted(mut v: Vec<ActorId>) -> Vec<ActorId> {
    v.sort_unstable();
    v
}

#[test]
fn join_leave_and_list() {
    let system = System::builder().workers(2).build().unwrap();
    let (tx, _rx) = mpsc::channel();
    let a = system.spawn(Member { out: tx.clone() });
    let b = system.spawn(Member { out: tx.clone() });
    let log = system.spawn(Logger(tx));
    let room = system.group::<Say>("room:1").unwrap();
    assert!(room.is_empty());
    assert!(room.join(&a));
    assert!(room.join(&b));
    assert!(room.join(&log));
    assert!(!room.join(&a), "a second join is a no-op");
    assert_eq!(room.len(), 3);
    assert_eq!(
        sorted(room.members()),
        sorted(vec![a.id(), b.id(), log.id()])
    );
    assert!(room.leave(b.id()));
    assert!(!room.leave(b.id()));
    assert!(!room.contains(b.id()));
    assert_eq!(sorted(room.members()), sorted(vec![a.id(), log.id()]));
    // The same name gives the same group.
    let again = system.group::<Say>("room:1").unwrap();
    assert_eq!(again.len(), 2);
    // Another message type under the name is an error, not a panic.
    match system.group::<u32>("room:1") {
        Err(GroupError::TypeMismatch { name, .. }) => assert_eq!(name, "room:1"),
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    shutdown_gracefully(system);
}

#[test]
fn a_group_lives_while_it_has_members_or_handles() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, _rx) = mpsc::channel();
    let a = system.spawn(Member { out: tx });
    system.group::<Say>("topic").unwrap().join(&a);
    // No handle left, but a member: the group is still there.
    assert_eq!(
        system.group::<Say>("topic").unwrap().members(),
        vec![a.id()]
    );
    system.group::<Say>("topic").unwrap().leave(a.id());
    // Neither members nor handles: the name is free for another type.
    let other = system.group::<u32>("topic").unwrap();
    assert!(other.is_empty());
    shutdown_gracefully(system);
}

#[test]
fn a_stopping_member_leaves_by_itself() {
    let system = System::builder().workers(2).build().unwrap();
    let (tx, _rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let events = system.spawn(EventLog(etx));
    let a = system.spawn(Member { out: tx.clone() });
    let b = system.spawn(Member { out: tx });
    let rooms = [
        system.group::<Say>("room:a").unwrap(),
        system.group::<Say>("room:b").unwrap(),
    ];
    for room in &rooms {
        room.join(&a);
        room.join(&b);
    }
    rooms[0].watch(&events);
    let _ = (recv(&erx, "joined a"), recv(&erx, "joined b"));
    // Leave and join again: still one automatic leave per group.
    rooms[1].leave(a.id());
    rooms[1].join(&a);
    a.send(MemberMsg::Stop).unwrap();
    match recv(&erx, "a to leave") {
        GroupEvent::Left { group, id, reason } => {
            assert_eq!(&*group, "room:a");
            assert_eq!(id, a.id());
            assert_eq!(reason, LeaveReason::Stopped(StopReason::Normal));
        }
        other => panic!("expected a Left event, got {other:?}"),
    }
    support::eventually("a to leave room:b", || !rooms[1].contains(a.id()));
    for room in &rooms {
        assert_eq!(room.members(), vec![b.id()]);
    }
    // Joining an actor that has stopped takes it out again at once.
    rooms[0].join(&a);
    support::eventually("the stopped actor to be taken out", || {
        !rooms[0].contains(a.id())
    });
    shutdown_gracefully(system);
}

#[test]
fn a_send_reaches_each_member_once() {
    const MEMBERS: usize = 20;
    const SENDS: u64 = 200;
    let system = System::builder().workers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let room = system.group::<Say>("room").unwrap();
    let members: Vec<Addr<Member>> = (0..MEMBERS)
        .map(|_| system.spawn(Member { out: tx.clone() }))
        .collect();
    let logger = system.spawn(Logger(tx));
    for m in &members {
        room.join(m);
    }
    room.join(&logger);
    for n in 0..SENDS {
        let report = room.send(Say(n));
        assert_eq!(report.delivered, MEMBERS + 1);
        assert_eq!((report.full, report.stopped), (0, 0));
    }
    let mut counts: HashMap<(ActorId, u64), usize> = HashMap::new();
    for _ in 0..(MEMBERS + 1) * SENDS as usize {
        *counts.entry(recv(&rx, "a broadcast")).or_default() += 1;
    }
    for m in &members {
        flush(m);
    }
    assert!(rx.try_recv().is_err(), "a member got more than it was sent");
    assert_eq!(counts.len(), (MEMBERS + 1) * SENDS as usize);
    assert!(counts.values().all(|&c| c == 1));
    shutdown_gracefully(system);
}

#[test]
fn a_full_mailbox_is_counted_not_hidden() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let room = system.group::<Say>("room").unwrap();
    // One blocked member with room for one message.
    let (block_tx, block_rx) = mpsc::channel::<()>();
    struct Blocked(Receiver<()>, Sender<u64>);
    impl Actor for Blocked {
        type Msg = Say;
        fn handle(&mut self, Say(n): Say, _: &mut Context<Self>) {
            let _ = self.0.recv_timeout(support::WAIT);
            self.1.send(n).unwrap();
        }
    }
    let opts = kendynet::SpawnOptions::default().mailbox_capacity(1);
    let blocked = system.spawn_with(Blocked(block_rx, tx), opts).unwrap();
    room.join(&blocked);
    assert_eq!(room.send(Say(0)).delivered, 1);
    // Whether the first is taken yet or not, at most two fit: the rest are reported full.
    let mut full = 0;
    for n in 1..10 {
        full += room.send(Say(n)).full;
    }
    assert!(full >= 8, "full: {full}");
    for _ in 0..(10 - full) {
        block_tx.send(()).unwrap();
        recv(&rx, "a message the member took");
    }
    shutdown_gracefully(system);
}

#[test]
fn watchers_see_membership_changes_in_order() {
    let system = System::builder().workers(2).build().unwrap();
    let (tx, _rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let room = system.group::<Say>("room").unwrap();
    let first = system.spawn(Member { out: tx.clone() });
    room.join(&first);
    room.watch(system.spawn(EventLog(etx)));
    let others: Vec<Addr<Member>> = (0..10)
        .map(|_| system.spawn(Member { out: tx.clone() }))
        .collect();
    let mut expected = vec![GroupEvent::Joined {
        group: "room".into(),
        id: first.id(),
    }];
    for (i, m) in others.iter().enumerate() {
        room.join(m);
        expected.push(GroupEvent::Joined {
            group: "room".into(),
            id: m.id(),
        });
        if i % 3 == 0 {
            room.leave(m.id());
            expected.push(GroupEvent::Left {
                group: "room".into(),
                id: m.id(),
                reason: LeaveReason::Left,
            });
        }
    }
    for want in expected {
        assert_eq!(recv(&erx, "the next membership event"), want);
    }
    shutdown_gracefully(system);
}

/// Joins a group from inside a handler.
struct SelfJoining {
    room: kendynet::Group<Say>,
    out: Sender<(ActorId, u64)>,
}
impl Actor for SelfJoining {
    type Msg = Say;
    fn started(&mut self, ctx: &mut Context<Self>) {
        assert!(ctx.join(&self.room));
    }
    fn handle(&mut self, Say(n): Say, ctx: &mut Context<Self>) {
        self.out.send((ctx.id(), n)).unwrap();
        if n == 1 {
            assert!(ctx.leave(&self.room));
        }
    }
}

#[test]
fn an_actor_joins_and_leaves_from_its_context() {
    let system = System::builder().workers(1).build().unwrap();
    let room = system.group::<Say>("room").unwrap();
    let (tx, rx) = mpsc::channel();
    let a = system.spawn(SelfJoining {
        room: room.clone(),
        out: tx,
    });
    support::eventually("the actor to join", || room.contains(a.id()));
    room.send(Say(1));
    assert_eq!(recv(&rx, "the broadcast"), (a.id(), 1));
    support::eventually("the actor to leave", || room.is_empty());
    shutdown_gracefully(system);
}

/// Joins, leaves and sends race on several threads. Checked: no member gets a message
/// twice; a member that never leaves gets every message; and a member always gets a
/// message sent after its join returned (the joining thread sends it itself).
#[test]
fn joins_and_leaves_racing_sends() {
    const CHURNERS: usize = 4;
    const ROUNDS: u64 = 200;
    const SENDS: u64 = 500;
    let system = System::builder().workers(2).build().unwrap();
    let room = system.group::<Say>("room").unwrap();
    let (tx, rx) = mpsc::channel();
    let stable = system.spawn(Member { out: tx.clone() });
    room.join(&stable);
    let churners: Vec<Addr<Member>> = (0..CHURNERS)
        .map(|_| system.spawn(Member { out: tx.clone() }))
        .collect();
    // Markers sent by churning threads right after their join: above this base.
    const MARK: u64 = 1 << 40;
    let mut threads = Vec::new();
    for (t, m) in churners.iter().enumerate() {
        let (room, m) = (room.clone(), m.clone());
        threads.push(std::thread::spawn(move || {
            for r in 0..ROUNDS {
                assert!(room.join(&m));
                let marker = MARK + (t as u64) * ROUNDS + r;
                assert!(room.send(Say(marker)).delivered >= 1);
                assert!(room.leave(m.id()));
            }
        }));
    }
    let sender = {
        let room = room.clone();
        std::thread::spawn(move || {
            for n in 0..SENDS {
                room.send(Say(n));
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    sender.join().unwrap();
    flush(&stable);
    for m in &churners {
        flush(m);
    }
    drop(tx);
    let mut seen: HashMap<(ActorId, u64), usize> = HashMap::new();
    while let Ok(got) = rx.recv_timeout(Duration::ZERO) {
        *seen.entry(got).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for n in 0..SENDS {
        assert!(
            seen.contains_key(&(stable.id(), n)),
            "stable member missed {n}"
        );
    }
    for (t, m) in churners.iter().enumerate() {
        for r in 0..ROUNDS {
            let marker = MARK + (t as u64) * ROUNDS + r;
            assert!(
                seen.contains_key(&(m.id(), marker)),
                "a member missed a send made after its join"
            );
        }
    }
    assert!(room.members() == vec![stable.id()]);
    shutdown_gracefully(system);
}
