//! Drives the web chat of `examples/web_chat` in-process over loopback: browsers played by a
//! small hand-written WebSocket client (the handshake, masked frames out, frames in), and
//! `chat_server`'s blocking client for the TCP side.
//!
//! Examples cannot be imported, so the example's server file is included as a module (and
//! `examples/chat_server.rs`, for its client). Every read has a deadline, so a server that
//! stays silent fails the test instead of hanging it.

#[allow(dead_code, reason = "the example's program is not used here")]
#[path = "../examples/web_chat/server.rs"]
mod web_chat;

#[allow(
    dead_code,
    unused_imports,
    reason = "only the client of the chat_server example is used here"
)]
#[allow(
    clippy::duplicate_mod,
    reason = "both examples include chat_server's protocol (examples/chat/rooms.rs)"
)]
#[path = "../examples/chat_server.rs"]
mod chat;
mod support;

use chat::{ChatClient, ServerMsg};
use kendynet::{System, WPacket};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{WAIT, any_port, shutdown_gracefully};
use web_chat::{Config, GateMsg, HISTORY_LEN, MAX_NAME_LEN, MAX_PACKET_LEN, WebChat, message_len};

/// How long a client listens to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

fn server() -> (System, WebChat) {
    let system = System::builder().workers(2).build().expect("system");
    let config = Config {
        http: any_port(),
        tcp: Some(any_port()),
        metrics: true,
    };
    let chat = web_chat::start(&system, &config).expect("listen");
    (system, chat)
}

// ----- a minimal WebSocket client -----

/// The key of RFC 6455's example handshake, and the accept value it must get back.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A message (or the end) as the client sees it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, with its code.
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Eof,
}

struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Varies the masking key from frame to frame.
    frames_sent: u32,
}

/// Opens a TCP connection and sends an upgrade request for `path`; returns the stream and
/// the response head.
fn upgrade(addr: SocketAddr, path: &str, origin: Option<&str>) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let origin = origin.map_or_else(String::new, |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            return (stream, head, rest);
        }
        match read_some(&mut stream, &mut buf, deadline) {
            Ok(true) => {}
            Ok(false) => panic!("no response head in {WAIT:?}: {buf:?}"),
            Err(e) => panic!("reading the response head: {e} (so far {buf:?})"),
        }
    }
}

/// Reads what is there, waiting until `deadline`: `Ok(false)` if it passed.
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<bool> {
    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
        return Ok(false);
    };
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut chunk = [0u8; 16 << 10];
    match stream.read(&mut chunk) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(Instant::now() < deadline)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e),
    }
}

impl WsClient {
    fn connect(addr: SocketAddr) -> WsClient {
        let (stream, head, rest) = upgrade(addr, web_chat::WS_PATH, None);
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("sec-websocket-accept: {ACCEPT}"))),
            "wrong accept key: {head}"
        );
        WsClient {
            stream,
            buf: rest,
            frames_sent: 0,
        }
    }

    /// Connects and joins `room` as `nick`, checking the welcome (with `present`, the nicks
    /// already there) and the client's own `joined`; the replay must be empty.
    fn join(addr: SocketAddr, room: &str, nick: &str, present: &[&str]) -> WsClient {
        let mut c = WsClient::connect(addr);
        c.send_text(&format!("JOIN {room} {nick}"));
        c.expect(nick, &welcome(room, nick, present));
        c.expect(nick, &joined(room, nick));
        c
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes());
    }

    /// Sends one whole message as a masked frame.
    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.frames_sent += 1;
        let mask = (0x5a17_c3e9u32 ^ self.frames_sent.wrapping_mul(0x9e37_79b9)).to_be_bytes();
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // The server may have closed already (a test of garbage): what it answers tells.
        let _ = self.stream.write_all(&frame);
    }

    /// The next message, or `None` if none came within `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Option<Got> {
        let deadline = Instant::now() + timeout;
        let mut message = Vec::new();
        let mut message_op = None;
        loop {
            while let Some((fin, op, payload)) = self.take_frame() {
                match op {
                    0x8 => {
                        let code = payload.first_chunk::<2>().map(|c| u16::from_be_bytes(*c));
                        return Some(Got::Close(code));
                    }
                    0x9 | 0xa => continue, // ping, pong
                    0x0 => message.extend_from_slice(&payload),
                    op => {
                        message_op = Some(op);
                        message = payload;
                    }
                }
                if fin {
                    return Some(match message_op {
                        Some(0x1) => Got::Text(String::from_utf8(message).expect("UTF-8 text")),
                        Some(0x2) => Got::Binary(message),
                        other => panic!("a message of opcode {other:?}"),
                    });
                }
            }
            match read_some(&mut self.stream, &mut self.buf, deadline) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Some(Got::Eof);
                }
                Err(e) => panic!("reading: {e}"),
            }
        }
    }

    /// Takes one complete frame off the buffer: (fin, opcode, payload).
    fn take_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "a server frame must not be masked");
        let (len, at) = match b[1] & 0x7f {
            126 => (
                u16::from_be_bytes(b.get(2..4)?.try_into().unwrap()) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(b.get(2..10)?.try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let (fin, op) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((fin, op, payload))
    }

    #[track_caller]
    fn expect(&mut self, who: &str, want: &str) {
        match self.recv_timeout(WAIT) {
            Some(Got::Text(got)) => assert_eq!(got, want, "{who}"),
            other => panic!("{who}: expected {want}, got {other:?}"),
        }
    }

    #[track_caller]
    fn expect_nothing(&mut self, who: &str) {
        if let Some(got) = self.recv_timeout(QUIET) {
            panic!("{who}: expected nothing, got {got:?}");
        }
    }

    /// Expects the server to close the connection (with a close frame, or without).
    #[track_caller]
    fn expect_closed(&mut self, who: &str) -> Option<u16> {
        loop {
            match self.recv_timeout(WAIT) {
                Some(Got::Close(code)) => return code,
                Some(Got::Eof) => return None,
                Some(Got::Text(t)) if t.starts_with(r#"{"type":"error""#) => {}
                other => panic!("{who}: expected the server to close, got {other:?}"),
            }
        }
    }
}

// ----- what the server says, written out -----

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

fn welcome(room: &str, nick: &str, members: &[&str]) -> String {
    format!(
        r#"{{"type":"welcome","room":"{room}","nick":"{nick}","members":{}}}"#,
        list(members)
    )
}

fn joined(room: &str, nick: &str) -> String {
    format!(r#"{{"type":"joined","room":"{room}","nick":"{nick}"}}"#)
}

fn message(room: &str, nick: &str, text: &str) -> String {
    format!(r#"{{"type":"message","room":"{room}","nick":"{nick}","text":"{text}"}}"#)
}

fn history(room: &str, nick: &str, text: &str) -> String {
    format!(
        r#"{{"type":"message","room":"{room}","nick":"{nick}","text":"{text}","history":true}}"#
    )
}

fn left(room: &str, nick: &str, reason: &str) -> String {
    format!(r#"{{"type":"left","room":"{room}","nick":"{nick}","reason":"{reason}"}}"#)
}

// ----- HTTP -----

/// A plain GET: (status, head, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    // The server closes once the response is written.
    loop {
        match read_some(&mut stream, &mut buf, deadline) {
            Ok(true) => {}
            Ok(false) => panic!("GET {path}: no end of response in {WAIT:?}"),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
    let text = String::from_utf8(buf).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: a bad status line: {head}"));
    (status, head.to_owned(), body.to_owned())
}

fn rooms(chat: &WebChat) -> usize {
    let (tx, rx) = std::sync::mpsc::channel();
    chat.gate.send(GateMsg::Rooms(tx)).unwrap();
    support::recv(&rx, "the gate's count of rooms")
}

fn members(chat: &WebChat, room: &str) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    chat.gate.send(GateMsg::Members(room.into(), tx)).unwrap();
    support::recv(&rx, "the room's members")
}

// ----- the tests -----

#[test]
fn the_page_and_the_metrics_are_served_on_the_websocket_port() {
    let (system, chat) = server();
    let (status, head, body) = http_get(chat.http, "/");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    for id in ["nick", "room", "join", "text", "send", "log", "members"] {
        assert!(
            body.contains(&format!("id=\"{id}\"")),
            "the page has no #{id}"
        );
    }

    let mut alice = WsClient::join(chat.http, "lobby", "alice", &[]);
    alice.send_text("SAY hi");
    alice.expect("alice", &message("lobby", "alice", "hi"));
    let (status, head, body) = http_get(chat.http, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (sample, value) = line.rsplit_once(' ').expect("name value");
        // A name, then labels if any: `name{label="value",...}`.
        let name = sample.split_once('{').map_or(sample, |(name, labels)| {
            assert!(labels.ends_with('}'), "{line}");
            name
        });
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    for want in [
        "# TYPE kendynet_actors_live gauge",
        "# TYPE kendynet_sockets_open gauge",
        "web_chat_rooms 1",
        "web_chat_members 1",
        "web_chat_messages_total 1",
    ] {
        assert!(body.lines().any(|l| l == want), "no {want:?} in\n{body}");
    }

    assert_eq!(http_get(chat.http, "/nothing").0, 404);
    // Upgrades: only at /ws, and only from this server's pages (or from no page at all).
    let (_, head, _) = upgrade(chat.http, "/", None);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head, _) = upgrade(chat.http, "/ws", Some("http://elsewhere.example"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head, _) = upgrade(chat.http, "/ws", Some(&format!("http://{}", chat.http)));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, head, _) = upgrade(chat.http, "/ws?v=1", None);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(http_get(chat.http, "/?v=1").0, 200);
    shutdown_gracefully(system);
}

#[test]
fn members_see_joins_messages_and_leaves_in_order_and_nobody_else_does() {
    let (system, chat) = server();
    let addr = chat.http;
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);
    let mut bob = WsClient::join(addr, "lobby", "bob", &["alice"]);
    alice.expect("alice", &joined("lobby", "bob"));
    let mut dave = WsClient::join(addr, "other", "dave", &[]);
    assert_eq!(members(&chat, "lobby"), ["alice", "bob"]);

    alice.send_text(r#"SAY hi "bob" \o/"#);
    let hi = message("lobby", "alice", r#"hi \"bob\" \\o/"#);
    alice.expect("alice", &hi);
    bob.expect("bob", &hi);
    dave.expect_nothing("dave");

    // Bob leaves (and is told so, as everyone is), then joins the other room at once.
    bob.send_text("LEAVE");
    bob.send_text("JOIN other bob");
    let bob_left = left("lobby", "bob", "left");
    alice.expect("alice", &bob_left);
    bob.expect("bob", &bob_left);
    bob.expect("bob", &welcome("other", "bob", &["dave"]));
    bob.expect("bob", &joined("other", "bob"));
    dave.expect("dave", &joined("other", "bob"));
    alice.expect_nothing("alice");

    // Dave's connection ends: he is announced as dropped.
    drop(dave);
    bob.expect("bob", &left("other", "dave", "dropped"));
    assert_eq!(members(&chat, "other"), ["bob"]);
    shutdown_gracefully(system);
}

#[test]
fn a_newcomer_gets_the_presence_list_and_the_last_50_messages() {
    let (system, chat) = server();
    let addr = chat.http;
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);
    let mut bob = WsClient::join(addr, "lobby", "bob", &["alice"]);
    alice.expect("alice", &joined("lobby", "bob"));
    let total = HISTORY_LEN + 10;
    for n in 0..total {
        let who = if n % 2 == 0 { &mut alice } else { &mut bob };
        who.send_text(&format!("SAY message {n}"));
    }
    // Both see every message, each in the same order.
    let mut seen = Vec::new();
    for (c, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let mut order = Vec::new();
        for _ in 0..total {
            match c.recv_timeout(WAIT) {
                Some(Got::Text(t)) => order.push(t),
                other => panic!("{who}: expected a message, got {other:?}"),
            }
        }
        seen.push(order);
    }
    assert_eq!(seen[0], seen[1], "alice and bob saw different orders");

    // Carol comes in: the presence list, then the last 50 in that order, then her joined.
    let mut carol = WsClient::connect(addr);
    carol.send_text("JOIN lobby carol");
    carol.expect("carol", &welcome("lobby", "carol", &["alice", "bob"]));
    for live in &seen[0][total - HISTORY_LEN..] {
        let replay = live.replace('}', r#","history":true}"#);
        carol.expect("carol", &replay);
    }
    carol.expect("carol", &joined("lobby", "carol"));
    alice.expect("alice", &joined("lobby", "carol"));

    // A chat_server client gets its own JOINED first, then the same replay as packets.
    let mut dave = ChatClient::connect(chat.tcp.unwrap()).unwrap();
    dave.join("lobby", "dave").unwrap();
    for live in &seen[0][total - HISTORY_LEN..] {
        // {"type":"message","room":"lobby","nick":"NICK","text":"TEXT"}
        let fields: Vec<&str> = live.split('"').collect();
        let want = ServerMsg::message("lobby", fields[11], fields[15]);
        assert_eq!(live, &message("lobby", fields[11], fields[15]));
        chat::expect(&mut dave, "dave", &want).unwrap();
    }
    chat::expect_nothing(&mut dave, "dave", QUIET).unwrap();
    carol.expect("carol", &joined("lobby", "dave"));
    assert_eq!(members(&chat, "lobby"), ["alice", "bob", "carol", "dave"]);
    // The replay was for the newcomers alone.
    alice.expect("alice", &joined("lobby", "dave"));
    alice.expect_nothing("alice");
    shutdown_gracefully(system);
}

#[test]
fn browsers_and_chat_server_clients_talk_in_one_room_each_in_its_protocol() {
    let (system, chat) = server();
    let mut alice = WsClient::join(chat.http, "lobby", "alice", &[]);
    let mut dave = ChatClient::connect(chat.tcp.unwrap()).unwrap();
    dave.join("lobby", "dave").unwrap();
    alice.expect("alice", &joined("lobby", "dave"));

    // A WebSocket client may speak chat_server's packets too, in binary messages.
    let mut erin = WsClient::connect(chat.http);
    let mut join = WPacket::new();
    join.write_u8(chat::JOIN)
        .write_str("lobby")
        .write_str("erin");
    erin.send_frame(0x2, join.payload());
    let erin_joined = ServerMsg::joined("lobby", "erin");
    let binary = |c: &mut WsClient, who: &str| match c.recv_timeout(WAIT) {
        Some(Got::Binary(p)) => ServerMsg::decode(&p).unwrap_or_else(|e| panic!("{who}: {e}")),
        other => panic!("{who}: expected a binary message, got {other:?}"),
    };
    assert_eq!(binary(&mut erin, "erin"), erin_joined);
    alice.expect("alice", &joined("lobby", "erin"));
    chat::expect(&mut dave, "dave", &erin_joined).unwrap();

    dave.say("hello from tcp").unwrap();
    alice.send_text("SAY hello from the web");
    let from_dave = ServerMsg::message("lobby", "dave", "hello from tcp");
    let from_alice = ServerMsg::message("lobby", "alice", "hello from the web");
    // The room's order is the order of arrival: whichever it was, everyone sees the same.
    let first = match alice.recv_timeout(WAIT) {
        Some(Got::Text(t)) if t == message("lobby", "dave", "hello from tcp") => 0,
        Some(Got::Text(t)) if t == message("lobby", "alice", "hello from the web") => 1,
        other => panic!("alice: expected a message, got {other:?}"),
    };
    let order = if first == 0 {
        [from_dave, from_alice]
    } else {
        [from_alice, from_dave]
    };
    let text_of = |m: &ServerMsg| match m {
        ServerMsg::Message { name, text, .. } => message("lobby", name, text),
        _ => unreachable!(),
    };
    alice.expect("alice", &text_of(&order[1]));
    for want in &order {
        chat::expect(&mut dave, "dave", want).unwrap();
        assert_eq!(&binary(&mut erin, "erin"), want);
    }

    // A TCP member that drops is announced to both kinds.
    drop(dave);
    alice.expect("alice", &left("lobby", "dave", "dropped"));
    assert_eq!(
        binary(&mut erin, "erin"),
        ServerMsg::left("lobby", "dave", "dropped")
    );
    shutdown_gracefully(system);
}

#[test]
fn a_room_is_freed_when_its_last_member_goes() {
    let (system, chat) = server();
    let addr = chat.http;
    assert_eq!(rooms(&chat), 0);
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);
    let bob = WsClient::join(addr, "other", "bob", &[]);
    assert_eq!(rooms(&chat), 2);
    assert_eq!(chat.stats.members(), 2);

    alice.send_text("LEAVE");
    alice.expect("alice", &left("lobby", "alice", "left"));
    drop(bob);
    support::eventually("both rooms freed", || rooms(&chat) == 0);
    assert_eq!(chat.stats.rooms(), 0);
    assert_eq!(chat.stats.members(), 0);

    // A freed room's name makes a new, empty room: no replay of the old one's messages.
    let mut carol = WsClient::join(addr, "lobby", "carol", &[]);
    carol.send_text("SAY a new start");
    carol.expect("carol", &message("lobby", "carol", "a new start"));
    alice.send_text("JOIN lobby alice");
    alice.expect("alice", &welcome("lobby", "alice", &["carol"]));
    alice.expect("alice", &history("lobby", "carol", "a new start"));
    alice.expect("alice", &joined("lobby", "alice"));
    assert_eq!(rooms(&chat), 1);
    shutdown_gracefully(system);
}

#[test]
fn long_names_and_messages_are_refused_with_an_error_to_the_sender_alone() {
    let (system, chat) = server();
    let addr = chat.http;
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);
    let mut bob = WsClient::connect(addr);
    let long_nick = "b".repeat(MAX_NAME_LEN + 1);
    for bad in [
        format!("JOIN lobby {long_nick}"),
        "JOIN lobby".to_owned(),
        "JOIN lobby b b".to_owned(),
        "JOIN  bob".to_owned(),
    ] {
        bob.send_text(&bad);
        match bob.recv_timeout(WAIT) {
            Some(Got::Text(t)) => assert!(t.starts_with(r#"{"type":"error","reason":"#), "{t}"),
            other => panic!("bob: expected an error for {bad:?}, got {other:?}"),
        }
    }
    // Still connected, bob may try again.
    bob.send_text(&format!("JOIN lobby {}", "b".repeat(MAX_NAME_LEN)));
    let bob_nick = "b".repeat(MAX_NAME_LEN);
    bob.expect("bob", &welcome("lobby", &bob_nick, &["alice"]));
    bob.expect("bob", &joined("lobby", &bob_nick));
    alice.expect("alice", &joined("lobby", &bob_nick));

    // The limit is on the relayed message (room, nick and text), as in chat_server.
    let longest = MAX_PACKET_LEN - message_len("lobby", "alice", "");
    alice.send_text(&format!("SAY {}", "x".repeat(longest + 1)));
    match alice.recv_timeout(WAIT) {
        Some(Got::Text(t)) => assert!(
            t.starts_with(r#"{"type":"error","reason":"message too long"#),
            "{t}"
        ),
        other => panic!("alice: expected an error, got {other:?}"),
    }
    bob.expect_nothing("bob");
    let text = "y".repeat(longest);
    alice.send_text(&format!("SAY {text}"));
    alice.expect("alice", &message("lobby", "alice", &text));
    bob.expect("bob", &message("lobby", "alice", &text));
    shutdown_gracefully(system);
}

#[test]
fn garbage_disconnects_the_client_and_spares_the_others() {
    let (system, chat) = server();
    let addr = chat.http;
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);

    for garbage in ["HELLO", "SAY hi before joining", "LEAVE", ""] {
        let mut c = WsClient::connect(addr);
        c.send_text(garbage);
        c.expect_closed(garbage);
    }
    // A message over the limit: closed with 1009 before it is read.
    let mut big = WsClient::connect(addr);
    big.send_text(&format!("SAY {}", "z".repeat(MAX_PACKET_LEN)));
    assert_eq!(big.expect_closed("big"), Some(1009));

    // A member that sends binary in a text session, or JOIN in a room, is dropped.
    for (i, bad) in [&b"\x02\x00"[..], b"JOIN other x"].into_iter().enumerate() {
        let nick = format!("bad{i}");
        let mut c = WsClient::join(addr, "lobby", &nick, &["alice"]);
        alice.expect("alice", &joined("lobby", &nick));
        c.send_frame(if i == 0 { 0x2 } else { 0x1 }, bad);
        c.expect_closed(&nick);
        alice.expect("alice", &left("lobby", &nick, "dropped"));
    }
    alice.send_text("SAY still here");
    alice.expect("alice", &message("lobby", "alice", "still here"));
    alice.expect_nothing("alice");
    shutdown_gracefully(system);
}

#[test]
fn a_client_may_say_right_after_join_and_join_right_after_leave() {
    let (system, chat) = server();
    let addr = chat.http;
    let mut alice = WsClient::join(addr, "lobby", "alice", &[]);
    // Bob sends everything at once, without waiting for any answer.
    let mut bob = WsClient::connect(addr);
    for command in [
        "JOIN lobby bob",
        "SAY first",
        "LEAVE",
        "JOIN other bob",
        "SAY second",
    ] {
        bob.send_text(command);
    }
    for want in [
        joined("lobby", "bob"),
        message("lobby", "bob", "first"),
        left("lobby", "bob", "left"),
    ] {
        alice.expect("alice", &want);
    }
    for want in [
        welcome("lobby", "bob", &["alice"]),
        joined("lobby", "bob"),
        message("lobby", "bob", "first"),
        left("lobby", "bob", "left"),
        welcome("other", "bob", &[]),
        joined("other", "bob"),
        message("other", "bob", "second"),
    ] {
        bob.expect("bob", &want);
    }
    alice.expect_nothing("alice");
    shutdown_gracefully(system);
}
