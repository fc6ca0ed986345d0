//! Drives the chat server of `examples/chat_server.rs` over loopback.
//!
//! Examples cannot be imported, so the example's file is included as a module: its server
//! (`start_server`) runs in a system started here, and its blocking client speaks the
//! protocol. Every wait is bounded (the client's read deadlines), so a server that stays
//! silent fails the test instead of hanging it.

#[allow(
    dead_code,
    reason = "the example's main and client mode are not used here"
)]
#[path = "../examples/chat_server.rs"]
mod chat;
mod support;

use chat::{
    ChatClient, ChatServer, GateMsg, MAX_PACKET_LEN, ServerMsg, expect, expect_nothing, message_len,
};
use kendynet::System;
use std::net::SocketAddr;
use std::time::Duration;
use support::{any_port, shutdown_gracefully};

/// How long a client listens to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

fn server() -> (System, SocketAddr) {
    let (system, server) = server_with_gate();
    (system, server.addr)
}

fn server_with_gate() -> (System, ChatServer) {
    let system = System::builder().workers(2).build().expect("system");
    let server = chat::start_server(&system, any_port()).expect("listen");
    (system, server)
}

/// How many rooms the gate holds now.
fn rooms(server: &ChatServer) -> usize {
    let (tx, rx) = std::sync::mpsc::channel();
    server.gate.send(GateMsg::Rooms(tx)).unwrap();
    rx.recv_timeout(chat::WAIT).expect("the gate answers")
}

/// Waits (bounded) until the gate holds `n` rooms.
fn rooms_become(server: &ChatServer, n: usize) {
    let deadline = std::time::Instant::now() + chat::WAIT;
    loop {
        let now = rooms(server);
        if now == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} rooms, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn join(addr: SocketAddr, room: &str, name: &str) -> ChatClient {
    let mut client = ChatClient::connect(addr).expect("connect");
    client
        .join(room, name)
        .unwrap_or_else(|e| panic!("{name} joining {room}: {e}"));
    client
}

/// Three members in "lobby" (each having seen the later ones join) and one in "other".
fn lobby_of_three(addr: SocketAddr) -> [ChatClient; 4] {
    let mut alice = join(addr, "lobby", "alice");
    let mut bob = join(addr, "lobby", "bob");
    expect(&mut alice, "alice", &ServerMsg::joined("lobby", "bob")).unwrap();
    let carol = join(addr, "lobby", "carol");
    expect(&mut alice, "alice", &ServerMsg::joined("lobby", "carol")).unwrap();
    expect(&mut bob, "bob", &ServerMsg::joined("lobby", "carol")).unwrap();
    let dave = join(addr, "other", "dave");
    [alice, bob, carol, dave]
}

#[test]
fn a_message_reaches_each_member_of_the_room_exactly_once_and_nobody_else() {
    let (system, addr) = server();
    let [mut alice, mut bob, mut carol, mut dave] = lobby_of_three(addr);

    bob.say("hi").unwrap();
    let hi = ServerMsg::message("lobby", "bob", "hi");
    for (client, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        expect(client, who, &hi).unwrap();
        expect_nothing(client, who, QUIET).unwrap();
    }
    expect_nothing(&mut dave, "dave", QUIET).unwrap();

    shutdown_gracefully(system);
}

#[test]
fn a_member_whose_connection_drops_is_announced_as_dropped() {
    let (system, addr) = server();
    let [mut alice, bob, mut carol, mut dave] = lobby_of_three(addr);

    drop(bob);
    let dropped = ServerMsg::left("lobby", "bob", "dropped");
    expect(&mut alice, "alice", &dropped).unwrap();
    expect(&mut carol, "carol", &dropped).unwrap();
    expect_nothing(&mut dave, "dave", QUIET).unwrap();

    // The room goes on without him.
    carol.say("still here").unwrap();
    let msg = ServerMsg::message("lobby", "carol", "still here");
    expect(&mut alice, "alice", &msg).unwrap();
    expect(&mut carol, "carol", &msg).unwrap();
    expect_nothing(&mut alice, "alice", QUIET).unwrap();

    shutdown_gracefully(system);
}

#[test]
fn a_member_who_leaves_is_announced_as_left_and_can_join_another_room() {
    let (system, addr) = server();
    let [mut alice, mut bob, mut carol, mut dave] = lobby_of_three(addr);

    carol.leave().unwrap();
    let left = ServerMsg::left("lobby", "carol", "left");
    // The leaver gets the announcement too, as its confirmation.
    for (client, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        expect(client, who, &left).unwrap();
    }
    expect_nothing(&mut dave, "dave", QUIET).unwrap();

    // No longer in the lobby: the lobby's messages no longer reach her.
    alice.say("bye carol").unwrap();
    let bye = ServerMsg::message("lobby", "alice", "bye carol");
    expect(&mut alice, "alice", &bye).unwrap();
    expect(&mut bob, "bob", &bye).unwrap();
    expect_nothing(&mut carol, "carol", QUIET).unwrap();

    // The same connection joins "other" (its socket went back to the gate).
    carol.join("other", "carol").unwrap();
    expect(&mut dave, "dave", &ServerMsg::joined("other", "carol")).unwrap();
    dave.say("welcome").unwrap();
    let welcome = ServerMsg::message("other", "dave", "welcome");
    expect(&mut carol, "carol", &welcome).unwrap();
    expect(&mut dave, "dave", &welcome).unwrap();
    expect_nothing(&mut alice, "alice", QUIET).unwrap();

    shutdown_gracefully(system);
}

#[test]
fn a_client_that_speaks_before_joining_is_disconnected() {
    let (system, addr) = server();
    let mut stranger = ChatClient::connect(addr).unwrap();
    stranger.say("hello?").unwrap();
    match stranger.recv_timeout(chat::WAIT) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
    shutdown_gracefully(system);
}

#[test]
fn the_examples_self_test_passes() {
    let (system, addr) = server();
    chat::self_test(addr).unwrap();
    shutdown_gracefully(system);
}

#[test]
fn a_room_is_freed_when_its_last_member_leaves() {
    let (system, server) = server_with_gate();
    let addr = server.addr;
    assert_eq!(rooms(&server), 0);
    let mut alice = join(addr, "lobby", "alice");
    let bob = join(addr, "lobby", "bob");
    expect(&mut alice, "alice", &ServerMsg::joined("lobby", "bob")).unwrap();
    let mut dave = join(addr, "other", "dave");
    assert_eq!(rooms(&server), 2);

    // The last member of "other" leaves (and stays connected): its room is freed.
    dave.leave().unwrap();
    expect(&mut dave, "dave", &ServerMsg::left("other", "dave", "left")).unwrap();
    rooms_become(&server, 1);

    // The lobby empties, one by a drop and one by a leave.
    drop(bob);
    expect(
        &mut alice,
        "alice",
        &ServerMsg::left("lobby", "bob", "dropped"),
    )
    .unwrap();
    assert_eq!(rooms(&server), 1);
    alice.leave().unwrap();
    expect(
        &mut alice,
        "alice",
        &ServerMsg::left("lobby", "alice", "left"),
    )
    .unwrap();
    rooms_become(&server, 0);

    // A freed room's name can be used again: a new, empty room.
    dave.join("lobby", "dave").unwrap();
    alice.join("lobby", "alice").unwrap();
    expect(&mut dave, "dave", &ServerMsg::joined("lobby", "alice")).unwrap();
    assert_eq!(rooms(&server), 1);
    shutdown_gracefully(system);
}

#[test]
fn a_say_whose_message_would_pass_the_limit_is_refused_and_everyone_stays_connected() {
    let (system, addr) = server();
    let [mut alice, mut bob, mut carol, mut dave] = lobby_of_three(addr);
    // The longest text that bob can say in the lobby: its MESSAGE is exactly at the limit.
    let longest = MAX_PACKET_LEN - message_len("lobby", "bob", "");
    assert_eq!(
        message_len("lobby", "bob", &"a".repeat(longest)),
        MAX_PACKET_LEN
    );

    // The SAY packet itself is within the limit, but its MESSAGE would not be.
    bob.say(&"b".repeat(longest + 1)).unwrap();
    match bob.recv_timeout(chat::WAIT).unwrap() {
        Some(ServerMsg::Error { reason }) => assert!(reason.contains("too long"), "{reason}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    for (client, who) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        expect_nothing(client, who, QUIET).unwrap();
    }

    // Everyone is still there, and a message at the limit is relayed whole.
    let text = "c".repeat(longest);
    bob.say(&text).unwrap();
    let msg = ServerMsg::message("lobby", "bob", &text);
    for (client, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        expect(client, who, &msg).unwrap();
    }
    expect_nothing(&mut dave, "dave", QUIET).unwrap();
    shutdown_gracefully(system);
}

#[test]
fn a_client_may_say_right_after_join_and_join_right_after_leave() {
    let (system, addr) = server();
    let mut alice = join(addr, "lobby", "alice");
    // Bob sends JOIN, SAY, LEAVE, JOIN and SAY at once, without waiting for any reply: the
    // gate hands his socket to the room with what he sent after JOIN, and the room hands it
    // back with what he sent after LEAVE, in order.
    let mut bob = ChatClient::connect(addr).unwrap();
    bob.send_join("lobby", "bob").unwrap();
    bob.say("first").unwrap();
    bob.leave().unwrap();
    bob.send_join("other", "bob").unwrap();
    bob.say("second").unwrap();
    for want in [
        ServerMsg::joined("lobby", "bob"),
        ServerMsg::message("lobby", "bob", "first"),
        ServerMsg::left("lobby", "bob", "left"),
    ] {
        expect(&mut alice, "alice", &want).unwrap();
    }
    for want in [
        ServerMsg::joined("lobby", "bob"),
        ServerMsg::message("lobby", "bob", "first"),
        ServerMsg::left("lobby", "bob", "left"),
        ServerMsg::joined("other", "bob"),
        ServerMsg::message("other", "bob", "second"),
    ] {
        expect(&mut bob, "bob", &want).unwrap();
    }
    expect_nothing(&mut alice, "alice", QUIET).unwrap();
    shutdown_gracefully(system);
}
