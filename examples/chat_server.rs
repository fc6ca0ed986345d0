//! A small chat server: rooms as actors, sockets handed from a gate to the room they join,
//! and a socket group per room that relays each message as one shared frame.
//!
//! # Design
//!
//! - The **gate** actor owns the listener, so every new socket starts out as the gate's. When
//!   a socket sends JOIN, the gate finds the room's actor in its table of rooms, creating it
//!   on first use, and **hands the socket to it** with the packets already queued for it
//!   ([`SockIdent::hand_off`]): from then on the socket's packets and its `Disconnected` go
//!   straight to the room, in order, without passing through the gate, so a client may SAY
//!   right after JOIN, and JOIN another room right after LEAVE, without waiting for replies.
//! - Each **room** actor keeps its members in a [`SockGroup`](kendynet::SockGroup). It
//!   relays every message with one `broadcast`: the packet is encoded once, and the frame is
//!   handed to each worker that polls members once, which writes it to them; nothing is
//!   copied per member. A member that stops reading is disconnected (its slow-consumer
//!   policy) and announced as `dropped`.
//! - A member that sends LEAVE is announced as `left` and its socket is handed back to the
//!   gate, so it can JOIN another room; a member whose connection ends is announced as
//!   `dropped`. When the last member of a room has gone, the room tells the gate, which frees
//!   it unless a JOIN is already on its way to it.
//!
//! # Protocol
//!
//! Packets use the crate's wire format (a little-endian `u32` length, then the payload;
//! strings are length-prefixed and NUL-terminated). Each payload starts with a `u8` opcode.
//!
//! | direction       | opcode | fields                  |
//! |-----------------|--------|-------------------------|
//! | client → server | 1 JOIN    | room: str, name: str |
//! | client → server | 2 SAY     | text: str            |
//! | client → server | 3 LEAVE   |                      |
//! | server → client | 1 JOINED  | room, name           |
//! | server → client | 2 MESSAGE | room, name, text     |
//! | server → client | 3 LEFT    | room, name, reason (`"left"` or `"dropped"`) |
//! | server → client | 4 ERROR   | reason               |
//!
//! No packet is longer than [`MAX_PACKET_LEN`] bytes, either way: a client that sends a longer
//! one is disconnected, and a SAY whose MESSAGE would be longer (the limit is on the whole
//! relayed message: room, name and text) is refused with ERROR to its sender alone. The
//! client skips a packet it cannot read.
//!
//! Every member of a room, the newcomer included, receives JOINED; every member, the leaver
//! included, receives LEFT `"left"`. After JOIN a client waits for its own JOINED, and after
//! LEAVE for its own LEFT, before it sends anything else: that answer proves that the socket
//! has changed hands, so what the client sends next reaches the new owner. A client that
//! breaks this rule, or sends anything malformed, is disconnected.
//!
//! # Running it
//!
//! ```text
//! cargo run --example chat_server -- --addr 127.0.0.1:8020
//! cargo run --example chat_server -- --client 127.0.0.1:8020 --name alice --room lobby
//! cargo run --example chat_server -- --secs 2     # scripted self-test, then exit
//! ```
//!
//! In client mode each line read from stdin is said in the room; `/leave` or the end of
//! input leaves. With `--secs S` the server runs a scripted self-test with loopback clients
//! (join, say, drop, leave, rejoin, and a fan-out to many members), keeps serving until `S`
//! seconds have passed, and exits with status 0 if every client received exactly what it
//! should, 1 otherwise. `tests/chat_server.rs` includes this file to drive the same server.
//!
//! The protocol and the server's actors live in `examples/chat/rooms.rs`, which this file
//! includes; `tests/chat_rooms_sim.rs` includes it too, to run the same rooms in the
//! deterministic test kit under a network that resets connections.

#[path = "chat/rooms.rs"]
mod rooms;

pub use rooms::{
    ChatServer, GateMsg, JOIN, LEAVE, MAX_NAME_LEN, MAX_PACKET_LEN, SAY, ServerMsg, message_len,
    start_server, valid_name,
};

use kendynet::signal::ShutdownSignal;
use kendynet::{System, WPacket};
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

// ----- a blocking client -----

/// How long a client waits for an expected message.
pub const WAIT: Duration = Duration::from_secs(5);

/// A blocking chat client over a `TcpStream`.
pub struct ChatClient {
    stream: TcpStream,
    /// Bytes received but not yet decoded.
    buf: Vec<u8>,
}

impl ChatClient {
    /// Connects to a server.
    ///
    /// # Errors
    /// The OS error of connecting.
    pub fn connect(addr: SocketAddr) -> io::Result<ChatClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(ChatClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// A second handle on the same connection, for sending from another thread. Only one of
    /// the two should receive.
    ///
    /// # Errors
    /// The OS error of duplicating the socket.
    pub fn try_clone(&self) -> io::Result<ChatClient> {
        Ok(ChatClient {
            stream: self.stream.try_clone()?,
            buf: Vec::new(),
        })
    }

    /// Sends JOIN and waits for the server to confirm it with this client's own JOINED.
    ///
    /// # Errors
    /// A socket error, or `InvalidData` if the server answered something else.
    pub fn join(&mut self, room: &str, name: &str) -> io::Result<()> {
        self.send_join(room, name)?;
        let want = ServerMsg::joined(room, name);
        match self.recv_timeout(WAIT)? {
            Some(got) if got == want => Ok(()),
            got => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {want:?} after JOIN, got {got:?}"),
            )),
        }
    }

    /// Sends JOIN without waiting for the answer.
    ///
    /// # Errors
    /// The OS error of writing.
    pub fn send_join(&mut self, room: &str, name: &str) -> io::Result<()> {
        let mut packet = WPacket::new();
        packet.write_u8(JOIN).write_str(room).write_str(name);
        self.send(packet)
    }

    /// Says `text` in the room.
    ///
    /// # Errors
    /// The OS error of writing.
    pub fn say(&mut self, text: &str) -> io::Result<()> {
        let mut packet = WPacket::new();
        packet.write_u8(SAY).write_str(text);
        self.send(packet)
    }

    /// Leaves the room (the server answers with LEFT `"left"`).
    ///
    /// # Errors
    /// The OS error of writing.
    pub fn leave(&mut self) -> io::Result<()> {
        let mut packet = WPacket::new();
        packet.write_u8(LEAVE);
        self.send(packet)
    }

    fn send(&mut self, packet: WPacket) -> io::Result<()> {
        self.stream.write_all(&packet.into_frame())
    }

    /// Waits for the next message until it arrives.
    ///
    /// # Errors
    /// A socket error; `UnexpectedEof` if the server closed the connection; `InvalidData` if
    /// it sent a packet longer than the protocol allows (one it cannot read otherwise comes
    /// back as [`ServerMsg::Unreadable`]).
    pub fn recv(&mut self) -> io::Result<ServerMsg> {
        self.recv_until(None)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }

    /// Waits at most `timeout` for the next message; `None` if none arrived.
    ///
    /// # Errors
    /// As [`ChatClient::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> io::Result<Option<ServerMsg>> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ServerMsg>> {
        loop {
            if let Some(msg) = self.decode_buffered()? {
                return Ok(Some(msg));
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            self.stream.set_read_timeout(timeout)?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes one complete packet off the front of the buffer, if there is one.
    fn decode_buffered(&mut self) -> io::Result<Option<ServerMsg>> {
        let Some(header) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header) as usize;
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        if len > MAX_PACKET_LEN {
            // The server never sends one: the stream cannot be trusted any more.
            return Err(invalid(format!("a {len}-byte packet from the server")));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        // Whatever it holds: an unreadable packet is returned as such, not an error.
        let msg = ServerMsg::decode_lenient(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        Ok(Some(msg))
    }
}

/// Waits for the next message of `client` and checks that it is `want`.
///
/// # Errors
/// What went wrong, naming `who`.
pub fn expect(client: &mut ChatClient, who: &str, want: &ServerMsg) -> Result<(), String> {
    match client.recv_timeout(WAIT) {
        Ok(Some(got)) if got == *want => Ok(()),
        Ok(Some(got)) => Err(format!("{who}: expected {want:?}, got {got:?}")),
        Ok(None) => Err(format!("{who}: expected {want:?}, got nothing in {WAIT:?}")),
        Err(e) => Err(format!("{who}: expected {want:?}, got error {e}")),
    }
}

/// Checks that `client` receives nothing within `quiet`.
///
/// # Errors
/// What arrived, naming `who`.
pub fn expect_nothing(client: &mut ChatClient, who: &str, quiet: Duration) -> Result<(), String> {
    match client.recv_timeout(quiet) {
        Ok(None) => Ok(()),
        Ok(Some(got)) => Err(format!("{who}: expected nothing, got {got:?}")),
        Err(e) => Err(format!("{who}: expected nothing, got error {e}")),
    }
}

// ----- the self-test -----

/// The scripted self-test of `--secs`: loopback clients join, say, drop, leave and rejoin,
/// and each must receive exactly what the protocol promises.
///
/// # Errors
/// The first expectation that failed.
pub fn self_test(addr: SocketAddr) -> Result<(), String> {
    const LISTENERS: usize = 16;
    const MESSAGES: usize = 50;
    let quiet = Duration::from_millis(200);
    let connect = |room: &str, name: &str| -> Result<ChatClient, String> {
        let mut c = ChatClient::connect(addr).map_err(|e| format!("{name}: connect: {e}"))?;
        c.join(room, name)
            .map_err(|e| format!("{name}: join {room}: {e}"))?;
        Ok(c)
    };
    let io = |who: &'static str| move |e: io::Error| format!("{who}: {e}");

    // Three members in the lobby; each sees the ones who join after it.
    let mut alice = connect("lobby", "alice")?;
    let mut bob = connect("lobby", "bob")?;
    expect(&mut alice, "alice", &ServerMsg::joined("lobby", "bob"))?;
    let mut carol = connect("lobby", "carol")?;
    for (c, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        expect(c, who, &ServerMsg::joined("lobby", "carol"))?;
    }
    let mut dave = connect("other", "dave")?;

    // A SAY whose relayed MESSAGE would pass the limit is refused, to its sender alone.
    let longest = MAX_PACKET_LEN - message_len("lobby", "alice", "");
    alice.say(&"x".repeat(longest + 1)).map_err(io("alice"))?;
    match alice.recv_timeout(WAIT) {
        Ok(Some(ServerMsg::Error { .. })) => {}
        got => return Err(format!("alice: expected ERROR for a long SAY, got {got:?}")),
    }
    // One at the limit is relayed.
    alice.say(&"y".repeat(longest)).map_err(io("alice"))?;
    let long = ServerMsg::message("lobby", "alice", &"y".repeat(longest));
    for (c, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        expect(c, who, &long)?;
    }

    // One message reaches each lobby member once, and nobody else.
    alice.say("hi").map_err(io("alice"))?;
    let hi = ServerMsg::message("lobby", "alice", "hi");
    for (c, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        expect(c, who, &hi)?;
        expect_nothing(c, who, quiet)?;
    }
    expect_nothing(&mut dave, "dave", quiet)?;

    // Bob drops his connection.
    drop(bob);
    let bob_dropped = ServerMsg::left("lobby", "bob", "dropped");
    expect(&mut alice, "alice", &bob_dropped)?;
    expect(&mut carol, "carol", &bob_dropped)?;

    // Carol leaves, then joins the other room on the same connection.
    carol.leave().map_err(io("carol"))?;
    let carol_left = ServerMsg::left("lobby", "carol", "left");
    expect(&mut carol, "carol", &carol_left)?;
    expect(&mut alice, "alice", &carol_left)?;
    carol
        .join("other", "carol")
        .map_err(|e| format!("carol: join other: {e}"))?;
    expect(&mut dave, "dave", &ServerMsg::joined("other", "carol"))?;
    carol.say("hello").map_err(io("carol"))?;
    let hello = ServerMsg::message("other", "carol", "hello");
    expect(&mut carol, "carol", &hello)?;
    expect(&mut dave, "dave", &hello)?;
    expect_nothing(&mut alice, "alice", quiet)?;

    // Fan-out: one speaker, many listeners, every message to each of them, in order.
    let mut speaker = connect("fanout", "speaker")?;
    let mut listeners = Vec::new();
    for i in 0..LISTENERS {
        let name = format!("listener{i}");
        listeners.push((connect("fanout", &name)?, name.clone()));
        expect(&mut speaker, "speaker", &ServerMsg::joined("fanout", &name))?;
        for (earlier, who) in &mut listeners[..i] {
            expect(earlier, who, &ServerMsg::joined("fanout", &name))?;
        }
    }
    for n in 0..MESSAGES {
        speaker
            .say(&format!("message {n}"))
            .map_err(io("speaker"))?;
    }
    listeners.push((speaker, "speaker".to_owned()));
    for (c, who) in &mut listeners {
        for n in 0..MESSAGES {
            let want = ServerMsg::message("fanout", "speaker", &format!("message {n}"));
            expect(c, who, &want)?;
        }
    }
    Ok(())
}

// ----- the program -----

const USAGE: &str = "usage: chat_server [--addr ADDR] [--secs S]
       chat_server --client ADDR --name NAME --room ROOM
  --addr ADDR  listen on ADDR (default 127.0.0.1:0: a free port, printed)
  --secs S     run a scripted self-test with loopback clients, exit after S seconds
  --client     connect to a server, join ROOM as NAME, say each line read from stdin";

enum Mode {
    Server {
        addr: SocketAddr,
        secs: Option<u64>,
    },
    Client {
        addr: SocketAddr,
        name: String,
        room: String,
    },
}

fn parse_args() -> Result<Mode, String> {
    let (mut addr, mut secs, mut client, mut name, mut room) = (None, None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(parse(&flag, &value()?)?),
            "--secs" => secs = Some(parse(&flag, &value()?)?),
            "--client" => client = Some(parse(&flag, &value()?)?),
            "--name" => name = Some(value()?),
            "--room" => room = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    match (client, name, room) {
        (Some(addr_), Some(name), Some(room)) if addr.is_none() && secs.is_none() => {
            if !valid_name(&name) || !valid_name(&room) {
                return Err(format!(
                    "names and rooms are 1 to {MAX_NAME_LEN} bytes long"
                ));
            }
            Ok(Mode::Client {
                addr: addr_,
                name,
                room,
            })
        }
        (None, None, None) => Ok(Mode::Server {
            addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            secs,
        }),
        _ => Err("client mode takes exactly --client, --name and --room".into()),
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value {value:?}"))
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("chat_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Server { addr, secs } => run_server(addr, secs),
        Mode::Client { addr, name, room } => run_client(addr, &name, &room),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(addr: SocketAddr, secs: Option<u64>) -> Result<(), String> {
    // Before any thread starts: Ctrl-C and SIGTERM end the run gracefully.
    let signal = ShutdownSignal::install().map_err(|e| format!("taking SIGINT/SIGTERM: {e}"))?;
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("chat_server: cannot raise the descriptor limit: {e}");
    }
    let system = System::builder()
        .build()
        .map_err(|e| format!("starting the system: {e}"))?;
    let bound = start_server(&system, addr)
        .map_err(|e| format!("listening on {addr}: {e}"))?
        .addr;
    println!("chat server listening on {bound}");
    let Some(secs) = secs else {
        // Serve until Ctrl-C or SIGTERM, then shut down gracefully.
        let sig = signal
            .wait_until(None)
            .map_err(|e| format!("waiting for a signal: {e}"))?;
        println!(
            "{}: shutting down",
            sig.map_or("stop".to_owned(), |s| s.to_string())
        );
        let report = system.shutdown(Duration::from_secs(5));
        if !report.graceful {
            return Err(format!("shutdown was not graceful: {report:?}"));
        }
        println!("chat server stopped gracefully");
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let result = self_test(bound);
    // Until the deadline, or the first signal.
    if let Ok(Some(sig)) = signal.wait_until(Some(deadline)) {
        println!("{sig}: shutting down");
    }
    let report = system.shutdown(Duration::from_secs(5));
    result.map_err(|e| format!("self-test failed: {e}"))?;
    if !report.graceful {
        return Err(format!("shutdown was not graceful: {report:?}"));
    }
    println!("self-test ok");
    Ok(())
}

fn run_client(addr: SocketAddr, name: &str, room: &str) -> Result<(), String> {
    let mut client = ChatClient::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    client
        .join(room, name)
        .map_err(|e| format!("join {room}: {e}"))?;
    println!("joined {room} as {name}; each line is said, /leave or end of input leaves");
    let mut sender = client.try_clone().map_err(|e| e.to_string())?;
    let me = name.to_owned();
    let printer = thread::spawn(move || {
        loop {
            match client.recv() {
                Ok(msg) => {
                    println!("{msg}");
                    if matches!(&msg, ServerMsg::Left { name, reason, .. } if *name == me && reason == "left")
                    {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("chat_server: connection lost: {e}");
                    std::process::exit(1);
                }
            }
        }
    });
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        match line.trim() {
            "/leave" => break,
            "" => {}
            text => sender.say(text).map_err(|e| format!("send: {e}"))?,
        }
    }
    sender.leave().map_err(|e| format!("send: {e}"))?;
    let _ = printer.join();
    Ok(())
}
