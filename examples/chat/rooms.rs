//! The chat server's rooms: its protocol and its actors (the gate and the rooms), shared by
//! the example (`examples/chat_server.rs`, which adds a blocking client, a self-test and the
//! program) and the tests that include this file: `tests/chat_server.rs` through the example
//! over loopback, and `tests/chat_rooms_sim.rs` directly, in the deterministic test kit.
//!
//! See `examples/chat_server.rs` for the design and the protocol. Nothing here knows which
//! it runs on: a real system or a simulated one.

use kendynet::{
    Actor, Addr, ConnOptions, Context, NetEvent, RPacket, SockIdent, SpawnOptions, SystemHandle,
    WPacket,
};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;

// ----- protocol -----

/// Client → server: join a room (room: str, name: str).
pub const JOIN: u8 = 1;
/// Client → server: say something in the room (text: str).
pub const SAY: u8 = 2;
/// Client → server: leave the room.
pub const LEAVE: u8 = 3;

/// Server → client: someone joined (room, name).
pub const JOINED: u8 = 1;
/// Server → client: someone said something (room, name, text).
pub const MESSAGE: u8 = 2;
/// Server → client: someone left (room, name, reason).
pub const LEFT: u8 = 3;

/// The longest packet payload the server accepts; a longer one drops the client.
pub const MAX_PACKET_LEN: usize = 4096;
/// The longest room or member name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// A message from the server, as a client decodes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerMsg {
    /// `name` joined `room`.
    Joined { room: String, name: String },
    /// `name` said `text` in `room`.
    Message {
        room: String,
        name: String,
        text: String,
    },
    /// `name` left `room`: `reason` is `"left"` or `"dropped"`.
    Left {
        room: String,
        name: String,
        reason: String,
    },
}

impl ServerMsg {
    #[must_use]
    pub fn joined(room: &str, name: &str) -> ServerMsg {
        ServerMsg::Joined {
            room: room.into(),
            name: name.into(),
        }
    }

    #[must_use]
    pub fn message(room: &str, name: &str, text: &str) -> ServerMsg {
        ServerMsg::Message {
            room: room.into(),
            name: name.into(),
            text: text.into(),
        }
    }

    #[must_use]
    pub fn left(room: &str, name: &str, reason: &str) -> ServerMsg {
        ServerMsg::Left {
            room: room.into(),
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Decodes a payload sent by the server.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn decode(payload: &[u8]) -> Result<ServerMsg, String> {
        let mut p = RPacket::from_payload(payload);
        let op = p.read_u8().map_err(|e| e.to_string())?;
        let mut field = || p.read_string().map_err(|e| e.to_string());
        Ok(match op {
            JOINED => ServerMsg::Joined {
                room: field()?,
                name: field()?,
            },
            MESSAGE => ServerMsg::Message {
                room: field()?,
                name: field()?,
                text: field()?,
            },
            LEFT => ServerMsg::Left {
                room: field()?,
                name: field()?,
                reason: field()?,
            },
            op => return Err(format!("unknown opcode {op}")),
        })
    }
}

impl fmt::Display for ServerMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerMsg::Joined { room, name } => write!(f, "* {name} joined {room}"),
            ServerMsg::Message { room, name, text } => write!(f, "[{room}] {name}: {text}"),
            ServerMsg::Left { room, name, reason } => write!(f, "* {name} left {room} ({reason})"),
        }
    }
}

// ----- the server -----

/// Starts a chat server in `system`, listening on `addr`; returns the bound address.
///
/// # Errors
/// The OS error of listening (for example `AddrInUse`).
pub fn start_server(system: &SystemHandle, addr: SocketAddr) -> io::Result<SocketAddr> {
    let gate = system.spawn(Gate);
    let options = ConnOptions::default().max_packet_len(MAX_PACKET_LEN);
    system
        .listen_with(addr, &gate, options)
        .inspect_err(|_| gate.stop())
}

/// Owns the listener: every socket is the gate's until it joins a room, and again after it
/// leaves one.
struct Gate;

impl Actor for Gate {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
        // Connected and Disconnected need nothing: a socket that is not in a room has no
        // state here.
        let NetEvent::Packet { sock, mut packet } = ev else {
            return;
        };
        let (room, name) = match packet.read_u8() {
            Ok(JOIN) => match (packet.read_string(), packet.read_string()) {
                (Ok(room), Ok(name)) if valid_name(&room) && valid_name(&name) => (room, name),
                _ => return drop_client(sock, "malformed JOIN"),
            },
            // SAY or LEAVE before JOIN, or a packet sent before the client's JOINED arrived
            // (it overtook the hand-off to the room).
            _ => return drop_client(sock, "not in a room"),
        };
        let Some(room_addr) = room_actor(ctx, &room) else {
            return drop_client(sock, "the room could not be created");
        };
        // Hand the socket over first, then tell the room who it is: the room answers with
        // JOINED, and everything the client sends after that goes straight to the room.
        if sock.hand_to(&room_addr).is_err() {
            return; // It closed meanwhile; its Disconnected comes here.
        }
        // A room stops only when the system shuts down, which closes the socket too.
        let _ = room_addr.send(RoomMsg::Join { sock, name });
    }
}

/// The room's actor: found in the registry, or spawned and registered by the gate.
fn room_actor(ctx: &Context<Gate>, room: &str) -> Option<Addr<Room>> {
    let key = format!("room:{room}");
    let system = ctx.system();
    if let Some(addr) = system.lookup::<Room>(&key) {
        return Some(addr);
    }
    let actor = Room {
        name: room.to_owned(),
        gate: ctx.addr(),
        members: HashMap::new(),
    };
    match system.spawn_with(actor, SpawnOptions::default().name(&key)) {
        Ok(addr) => Some(addr),
        // Another gate of this system registered it just now.
        Err(_) => system.lookup::<Room>(&key),
    }
}

/// Whether `name` is a valid room or member name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// Closes a client that broke the protocol (what was queued for it is still written).
fn drop_client(sock: SockIdent, why: &str) {
    eprintln!("chat: dropping {sock}: {why}");
    let _ = sock.close();
}

/// One room: its members' sockets, owned since the gate handed them over. Registered as
/// `"room:<name>"`.
pub struct Room {
    name: String,
    gate: Addr<Gate>,
    members: HashMap<SockIdent, String>,
}

/// What a room handles.
pub enum RoomMsg {
    /// The gate handed `sock` over: it joins as `name`.
    Join { sock: SockIdent, name: String },
    /// An event of a member's socket.
    Net(NetEvent),
    /// Answers with the members' names, sorted (for tests: the program never sends it).
    #[allow(dead_code, reason = "sent by tests only")]
    Members(std::sync::mpsc::Sender<Vec<String>>),
}

impl From<NetEvent> for RoomMsg {
    fn from(ev: NetEvent) -> RoomMsg {
        RoomMsg::Net(ev)
    }
}

impl Actor for Room {
    type Msg = RoomMsg;

    fn handle(&mut self, msg: RoomMsg, _: &mut Context<Self>) {
        match msg {
            RoomMsg::Join { sock, name } => {
                // The socket may have closed during the hand-off; its Disconnected came here
                // first and found no member.
                if !sock.is_open() {
                    return;
                }
                println!("chat: {name} joined {}", self.name);
                self.members.insert(sock, name);
                let name = &self.members[&sock];
                self.broadcast(server_packet(JOINED, &[&self.name, name]));
            }
            RoomMsg::Net(NetEvent::Packet { sock, mut packet }) => {
                let Some(name) = self.members.get(&sock) else {
                    // It spoke before its JOINED reached it: it overtook the hand-off.
                    return drop_client(sock, "sent before its JOINED");
                };
                match packet.read_u8() {
                    Ok(SAY) => match packet.read_str() {
                        Ok(text) => {
                            self.broadcast(server_packet(MESSAGE, &[&self.name, name, text]));
                        }
                        Err(_) => drop_client(sock, "malformed SAY"),
                    },
                    Ok(LEAVE) => {
                        // Back to the gate before the client learns it has left, so that its
                        // next JOIN reaches the gate. If the socket has closed meanwhile, its
                        // Disconnected comes here and finds no member.
                        let _ = sock.hand_to(&self.gate);
                        println!("chat: {name} left {}", self.name);
                        // The leaver receives the announcement too: its confirmation.
                        self.broadcast(server_packet(LEFT, &[&self.name, name, "left"]));
                        self.members.remove(&sock);
                    }
                    _ => drop_client(sock, "unknown request"),
                }
            }
            RoomMsg::Net(NetEvent::Disconnected { sock, reason }) => {
                if let Some(name) = self.members.remove(&sock) {
                    println!("chat: {name} dropped from {} ({reason})", self.name);
                    self.broadcast(server_packet(LEFT, &[&self.name, &name, "dropped"]));
                }
            }
            RoomMsg::Net(_) => {}
            RoomMsg::Members(reply) => {
                let mut names: Vec<String> = self.members.values().cloned().collect();
                names.sort();
                let _ = reply.send(names);
            }
        }
    }
}

impl Room {
    /// Sends `packet` to every member: one packet, shared by all of them.
    fn broadcast(&self, mut packet: WPacket) {
        // Once frozen, every clone shares the same bytes: N members, one buffer, no copies.
        packet.freeze();
        for &sock in self.members.keys() {
            if let Err(e) = sock.send(packet.clone()) {
                if e.is_full() {
                    // It stopped reading; its Disconnected will announce it as dropped.
                    drop_client(sock, "not reading");
                }
                // Closed: its Disconnected is on its way.
            }
        }
    }
}

/// A server → client packet: the opcode, then string fields.
fn server_packet(op: u8, fields: &[&str]) -> WPacket {
    let mut packet = WPacket::new();
    packet.write_u8(op);
    for field in fields {
        packet.write_str(field);
    }
    packet
}
