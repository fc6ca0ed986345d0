//! The chat server's rooms (`examples/chat/rooms.rs`, the example's own actors) in the
//! deterministic test kit, under a network that delays, splits and resets: for each of many
//! seeds, clients join rooms, chat, and some connections are reset mid-way (by the test and
//! by the network). Invariants checked:
//!
//! - every surviving member of a room receives every message said in it after it joined,
//!   once, and the members of a room receive what they share in one order;
//! - a member whose connection was reset is removed from its room: the members who knew it
//!   are told it dropped, nothing of it follows, and its socket is freed;
//! - a room whose last member has gone is freed: the gate holds the rooms with members only;
//! - nothing panics (no actor stops but the freed rooms), and the system shuts down
//!   gracefully.
//!
//! A failure names its seed; `KENDYNET_SEED=<seed>` replays only that one.
#![cfg(feature = "testkit")]

#[path = "support/rng.rs"]
mod rng;
#[allow(dead_code, reason = "the tests use part of the protocol")]
#[path = "../examples/chat/rooms.rs"]
mod rooms;

use kendynet::testkit::{Faults, Sim, VirtualClient, run_seeds, seeds};
use kendynet::{Addr, WPacket};
use rooms::{Gate, GateMsg, JOIN, SAY, ServerMsg, start_server};
use std::collections::HashSet;
use std::io;
use std::time::Duration;

const ROOMS: [&str; 3] = ["lobby", "games", "music"];
const MAX_MEMBERS: usize = 16;
/// Connections the test resets by hand per run, at most.
const TEST_RESETS: usize = 4;
const ROUNDS: usize = 160;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// JOIN sent; waiting for its own JOINED.
    Joining,
    In,
    /// Its connection was reset (by the test or the network).
    Reset,
}

struct Member {
    name: String,
    room: &'static str,
    client: VirtualClient,
    state: State,
    /// Everything it received, in order.
    got: Vec<ServerMsg>,
    /// How many messages had been said (written) when its own JOINED arrived.
    joined_at: Option<usize>,
}

impl Member {
    fn send(&mut self, packet: WPacket) {
        if self.client.send(packet).is_err() {
            // Reset by the network since it last read.
            self.state = State::Reset;
        }
    }

    /// Reads what has arrived.
    fn read(&mut self, said: usize, seed: u64) {
        if self.state == State::Reset {
            return;
        }
        loop {
            match self.client.recv() {
                Ok(Some(p)) => {
                    let msg = ServerMsg::decode(p.payload())
                        .unwrap_or_else(|e| panic!("seed {seed}: {}: {e}", self.name));
                    if self.state == State::Joining
                        && msg == ServerMsg::joined(self.room, &self.name)
                    {
                        self.state = State::In;
                        self.joined_at = Some(said);
                    }
                    self.got.push(msg);
                }
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.state = State::Reset;
                    return;
                }
                Err(e) => panic!("seed {seed}: {} lost its connection: {e}", self.name),
            }
        }
    }
}

fn join_packet(room: &str, name: &str) -> WPacket {
    let mut p = WPacket::new();
    p.write_u8(JOIN).write_str(room).write_str(name);
    p
}

fn say_packet(text: &str) -> WPacket {
    let mut p = WPacket::new();
    p.write_u8(SAY).write_str(text);
    p
}

/// One seed's run: members and what was said (room, speaker, text), in the order written.
struct Run {
    sim: Sim,
    gate: Addr<Gate>,
    members: Vec<Member>,
    said: Vec<(&'static str, String, String)>,
}

fn run(seed: u64) -> Run {
    let faults = Faults::none()
        .latency(Duration::from_millis(3))
        .split(0.3)
        .reset(0.01);
    let sim = Sim::builder().seed(seed).faults(faults).build();
    let server = start_server(&sim, "10.0.0.1:8020".parse().unwrap()).unwrap();
    let addr = server.addr;
    let mut rng = rng::Rng::new(seed);
    let mut members: Vec<Member> = Vec::new();
    let mut said: Vec<(&'static str, String, String)> = Vec::new();
    let mut test_resets = 0;

    for round in 0..ROUNDS {
        match rng.range(0, 9) {
            0 | 1 if members.len() < MAX_MEMBERS => {
                let name = format!("m{}", members.len());
                let room = ROOMS[rng.range(0, ROOMS.len() - 1)];
                let client = sim.dial(addr).unwrap();
                let mut m = Member {
                    name,
                    room,
                    client,
                    state: State::Joining,
                    got: Vec::new(),
                    joined_at: None,
                };
                m.send(join_packet(room, &m.name));
                members.push(m);
            }
            2..=7 => {
                let speakers: Vec<usize> = (0..members.len())
                    .filter(|&i| members[i].state == State::In)
                    .collect();
                if !speakers.is_empty() {
                    let m = &mut members[speakers[rng.range(0, speakers.len() - 1)]];
                    let text = format!("r{round} from {}", m.name);
                    m.send(say_packet(&text));
                    if m.state == State::In {
                        said.push((m.room, m.name.clone(), text));
                    }
                }
            }
            8 if round > ROUNDS / 4 && test_resets < TEST_RESETS => {
                // The test resets someone mid-way (joined or still joining).
                let alive: Vec<usize> = (0..members.len())
                    .filter(|&i| members[i].state != State::Reset)
                    .collect();
                if alive.len() > 3 {
                    let m = &mut members[alive[rng.range(0, alive.len() - 1)]];
                    sim.note(format_args!("the test resets {}", m.name));
                    m.client.reset();
                    m.state = State::Reset;
                    test_resets += 1;
                }
            }
            _ => {}
        }
        sim.run_steps(rng.range(0, 10));
        if round % 3 == 0 {
            sim.advance(Duration::from_millis(1));
        }
        for m in &mut members {
            m.read(said.len(), seed);
        }
    }
    // Let everything in flight arrive.
    for _ in 0..5 {
        sim.advance(Duration::from_millis(50));
        for m in &mut members {
            m.read(said.len(), seed);
        }
    }
    Run {
        sim,
        gate: server.gate,
        members,
        said,
    }
}

fn check(seed: u64, run: Run) {
    let Run {
        sim,
        gate,
        members,
        said,
    } = run;
    let ctx = |what: String| format!("seed {seed}: {what}");

    // Nothing panicked: no actor stopped but rooms that the gate freed.
    if let Some(line) = sim
        .trace()
        .iter()
        .find(|l| l.contains(" stops") && !l.contains("Room"))
    {
        panic!("{}", ctx(format!("an actor stopped: {line}")));
    }

    let survivors: Vec<&Member> = members.iter().filter(|m| m.state == State::In).collect();
    let reset: Vec<&Member> = members.iter().filter(|m| m.state == State::Reset).collect();

    // What some client received was said in its room (the room broadcast it).
    let received: HashSet<&str> = members
        .iter()
        .flat_map(|m| &m.got)
        .filter_map(|msg| match msg {
            ServerMsg::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();

    for y in &survivors {
        let who = &y.name;
        assert_eq!(
            y.got.first(),
            Some(&ServerMsg::joined(y.room, who)),
            "{}",
            ctx(format!("{who}'s first message is its own JOINED"))
        );
        let mut seen = HashSet::new();
        for msg in &y.got {
            let room = match msg {
                ServerMsg::Joined { room, .. }
                | ServerMsg::Message { room, .. }
                | ServerMsg::Left { room, .. } => room,
                other => panic!("{}", ctx(format!("{who} got {other:?}"))),
            };
            assert_eq!(room, y.room, "{}", ctx(format!("{who} got {msg:?}")));
            assert!(
                seen.insert(msg.clone()),
                "{}",
                ctx(format!("{who} got {msg:?} twice"))
            );
        }
        // Every message said in its room after it joined (and that the room broadcast).
        let joined_at = y.joined_at.expect("in a room");
        for (room, speaker, text) in &said[joined_at..] {
            if *room != y.room || !received.contains(text.as_str()) {
                continue;
            }
            let want = ServerMsg::message(room, speaker, text);
            assert!(
                seen.contains(&want),
                "{}",
                ctx(format!("{who} (in {room}) missed {want:?}"))
            );
        }
    }

    // One order: what two members of a room both received, they received in the same order.
    for (i, a) in survivors.iter().enumerate() {
        for b in &survivors[i + 1..] {
            if a.room != b.room {
                continue;
            }
            let in_b: HashSet<&ServerMsg> = b.got.iter().collect();
            let in_a: HashSet<&ServerMsg> = a.got.iter().collect();
            let a_common: Vec<&ServerMsg> = a.got.iter().filter(|m| in_b.contains(m)).collect();
            let b_common: Vec<&ServerMsg> = b.got.iter().filter(|m| in_a.contains(m)).collect();
            assert_eq!(
                a_common,
                b_common,
                "{}",
                ctx(format!("{} and {} disagree on the order", a.name, b.name))
            );
        }
    }

    // A reset member is removed from its room: whoever knew it is told it dropped, and
    // hears nothing from it afterwards.
    for x in &reset {
        for y in survivors.iter().filter(|y| y.room == x.room) {
            let knew = y.got.contains(&ServerMsg::joined(x.room, &x.name))
                || x.got.contains(&ServerMsg::joined(y.room, &y.name));
            if !knew {
                continue;
            }
            let dropped = ServerMsg::left(x.room, &x.name, "dropped");
            let Some(at) = y.got.iter().position(|m| *m == dropped) else {
                panic!(
                    "{}",
                    ctx(format!("{} was not told that {} dropped", y.name, x.name))
                );
            };
            assert!(
                !y.got[at..]
                    .iter()
                    .any(|m| matches!(m, ServerMsg::Message { name, .. } if *name == x.name)),
                "{}",
                ctx(format!("{} heard {} after it dropped", y.name, x.name))
            );
        }
    }

    // Each room holds exactly its surviving members: the reset ones are gone.
    for room in ROOMS {
        let mut want: Vec<String> = survivors
            .iter()
            .filter(|m| m.room == room)
            .map(|m| m.name.clone())
            .collect();
        want.sort();
        let (tx, rx) = std::sync::mpsc::channel();
        gate.send(GateMsg::Members(room.to_owned(), tx)).unwrap();
        sim.run_until_idle();
        let held = rx.try_recv().unwrap();
        assert_eq!(held, want, "{}", ctx(format!("the members of {room}")));
    }
    // A room without members is freed: the gate holds the rooms with survivors only.
    let (tx, rx) = std::sync::mpsc::channel();
    gate.send(GateMsg::Rooms(tx)).unwrap();
    sim.run_until_idle();
    let occupied: HashSet<&str> = survivors.iter().map(|m| m.room).collect();
    assert_eq!(
        rx.try_recv().unwrap(),
        occupied.len(),
        "{}",
        ctx("rooms held".into())
    );

    // Every reset socket is freed: only the members still connected hold one.
    let connected = members.iter().filter(|m| m.state != State::Reset).count();
    assert_eq!(
        sim.open_sockets(),
        connected,
        "{}",
        ctx("sockets left open".into())
    );

    let report = sim.shutdown();
    assert!(report.graceful, "{}", ctx(format!("{report:?}")));
}

#[test]
fn rooms_keep_their_promises_under_resets() {
    let mut resets = 0;
    let mut network_resets = 0;
    let mut messages = 0;
    let mut survivors = 0;
    run_seeds(seeds(24), |seed| {
        let r = run(seed);
        resets += r.members.iter().filter(|m| m.state == State::Reset).count();
        survivors += r.members.iter().filter(|m| m.state == State::In).count();
        network_resets += r
            .sim
            .trace()
            .iter()
            .filter(|l| l.contains("fault:") && l.contains("reset"))
            .count();
        messages += r.said.len();
        check(seed, r);
    });
    // The scenario exercised what it claims to (over all seeds).
    if std::env::var(kendynet::testkit::SEED_VAR).is_err() {
        assert!(resets >= 24, "{resets} resets");
        assert!(survivors >= 24 * 4, "{survivors} survivors");
        assert!(network_resets > 0, "no reset came from the network");
        assert!(messages > 24 * 20, "{messages} messages");
    }
}

#[test]
fn a_chat_run_replays_from_its_seed() {
    let first = run(5);
    let trace = first.sim.trace();
    let got: Vec<Vec<ServerMsg>> = first.members.iter().map(|m| m.got.clone()).collect();
    drop(first);
    let again = run(5);
    assert_eq!(again.sim.trace(), trace);
    let got_again: Vec<Vec<ServerMsg>> = again.members.iter().map(|m| m.got.clone()).collect();
    assert_eq!(got_again, got);
}
