//! The chat server's rooms: its protocol and its actors (the gate and the rooms), shared by
//! the example (`examples/chat_server.rs`, which adds a blocking client, a self-test and the
//! program) and the tests that include this file: `tests/chat_server.rs` through the example
//! over loopback, and `tests/chat_rooms_sim.rs` directly, in the deterministic test kit.
//!
//! See `examples/chat_server.rs` for the design and the protocol. Nothing here knows which
//! it runs on: a real system or a simulated one.

use kendynet::net::SlowConsumer;
use kendynet::{
    Actor, Addr, ConnOptions, Context, NetEvent, NetMsg, RPacket, SockGroup, SockIdent,
    SystemHandle, WPacket,
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
/// Server → client: a request was refused (reason), for example a SAY too long to relay.
pub const ERROR: u8 = 4;

/// The longest packet payload either side sends: the server drops a client that sends a
/// longer one, and never sends one itself (a SAY whose MESSAGE would be longer is refused
/// with ERROR).
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
    /// The server refused this client's last request.
    Error { reason: String },
    /// A packet this client cannot read (a newer server's, or a damaged one): skipped.
    Unreadable { op: Option<u8>, len: usize },
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
            ERROR => ServerMsg::Error { reason: field()? },
            op => return Err(format!("unknown opcode {op}")),
        })
    }

    /// Decodes a payload sent by the server, whatever it holds: what is not a message of
    /// this protocol is [`ServerMsg::Unreadable`], for the client to skip.
    #[must_use]
    pub fn decode_lenient(payload: &[u8]) -> ServerMsg {
        ServerMsg::decode(payload).unwrap_or(ServerMsg::Unreadable {
            op: payload.first().copied(),
            len: payload.len(),
        })
    }
}

/// The payload length of the MESSAGE relaying `text` said by `name` in `room`: it must not
/// exceed [`MAX_PACKET_LEN`].
#[must_use]
pub fn message_len(room: &str, name: &str, text: &str) -> usize {
    // The opcode, then three strings of a u32 length, the bytes and a NUL each.
    1 + [room, name, text]
        .iter()
        .map(|f| 4 + f.len() + 1)
        .sum::<usize>()
}

impl fmt::Display for ServerMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerMsg::Joined { room, name } => write!(f, "* {name} joined {room}"),
            ServerMsg::Message { room, name, text } => write!(f, "[{room}] {name}: {text}"),
            ServerMsg::Left { room, name, reason } => write!(f, "* {name} left {room} ({reason})"),
            ServerMsg::Error { reason } => write!(f, "! refused: {reason}"),
            ServerMsg::Unreadable { op, len } => {
                write!(f, "? an unreadable {len}-byte packet (opcode {op:?})")
            }
        }
    }
}

// ----- the server -----

/// A running chat server: its address and its gate.
pub struct ChatServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The gate: ask it [`GateMsg::Rooms`] or [`GateMsg::Members`].
    pub gate: Addr<Gate>,
}

/// Starts a chat server in `system`, listening on `addr`.
///
/// # Errors
/// The OS error of listening (for example `AddrInUse`).
pub fn start_server(system: &SystemHandle, addr: SocketAddr) -> io::Result<ChatServer> {
    let gate = system.spawn(Gate {
        rooms: HashMap::new(),
    });
    // A member that stops reading is disconnected (and announced as dropped) once its
    // queued output has stayed above the low-water mark for the grace period.
    let options = ConnOptions::default()
        .max_packet_len(MAX_PACKET_LEN)
        .slow_consumer(SlowConsumer::DISCONNECT);
    let addr = system
        .listen_with(addr, &gate, options)
        .inspect_err(|_| gate.stop())?;
    Ok(ChatServer { addr, gate })
}

/// Owns the listener and the table of rooms: every socket is the gate's until it joins a
/// room, and again after it leaves one. A room is freed when its last member has gone and no
/// JOIN is on its way to it.
pub struct Gate {
    rooms: HashMap<String, RoomEntry>,
}

struct RoomEntry {
    addr: Addr<Room>,
    /// Joins sent to the room so far.
    joins: u64,
}

/// What the gate handles.
pub enum GateMsg {
    /// An event of a socket that is in no room.
    Net(NetEvent),
    /// A room has no members after `joins_seen` joins: it is freed unless a join is on its
    /// way to it.
    RoomEmpty { room: String, joins_seen: u64 },
    /// Answers with the number of rooms (for tests: the program never sends it).
    #[allow(dead_code, reason = "sent by tests only")]
    Rooms(std::sync::mpsc::Sender<usize>),
    /// Answers with the members of `room`, sorted (empty if there is no such room; for
    /// tests).
    #[allow(dead_code, reason = "sent by tests only")]
    Members(String, std::sync::mpsc::Sender<Vec<String>>),
}

impl From<NetEvent> for GateMsg {
    fn from(ev: NetEvent) -> GateMsg {
        GateMsg::Net(ev)
    }
}

/// Lets the gate hand a socket on with the packets already queued for it
/// ([`SockIdent::hand_off`]).
impl NetMsg for GateMsg {
    fn into_net_event(self) -> Result<NetEvent, GateMsg> {
        match self {
            GateMsg::Net(ev) => Ok(ev),
            other => Err(other),
        }
    }
}

impl Actor for Gate {
    type Msg = GateMsg;

    fn handle(&mut self, msg: GateMsg, ctx: &mut Context<Self>) {
        match msg {
            GateMsg::Net(ev) => self.net_event(ev, ctx),
            GateMsg::RoomEmpty { room, joins_seen } => {
                if self.rooms.get(&room).is_some_and(|r| r.joins == joins_seen) {
                    // No join on its way: nothing can reach the room any more.
                    let entry = self.rooms.remove(&room).expect("just found");
                    println!("chat: room {room} freed");
                    let _ = entry.addr.send(RoomMsg::Close);
                }
            }
            GateMsg::Rooms(reply) => {
                let _ = reply.send(self.rooms.len());
            }
            GateMsg::Members(room, reply) => match self.rooms.get(&room) {
                Some(r) => {
                    let _ = r.addr.send(RoomMsg::Members(reply));
                }
                None => {
                    let _ = reply.send(Vec::new());
                }
            },
        }
    }
}

impl Gate {
    fn net_event(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
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
            // SAY or LEAVE before JOIN.
            _ => return drop_client(sock, "not in a room"),
        };
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| RoomEntry {
            addr: ctx.system().spawn(Room {
                group: ctx.system().sock_group(),
                name: room,
                gate: ctx.addr(),
                members: HashMap::new(),
                joins_seen: 0,
            }),
            joins: 0,
        });
        // Tell the room who it is, then hand the socket over with what the client sent
        // after its JOIN (already queued here, or still to come): the room sees the Join
        // first, then every later packet in order, so a client may SAY right after JOIN
        // without waiting for JOINED. The room stops only when the gate says so, and the
        // gate does not while this join is on its way.
        entry.joins += 1;
        let _ = entry.addr.send(RoomMsg::Join { sock, name });
        // If the socket closed meanwhile, its Disconnected comes here, and the room finds
        // it closed when it joins it to its group.
        let _ = sock.hand_off(ctx, &entry.addr);
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

/// One room: its members' sockets, owned since the gate handed them over, in a socket group
/// that relays each message with one shared frame.
pub struct Room {
    name: String,
    gate: Addr<Gate>,
    group: SockGroup,
    members: HashMap<SockIdent, String>,
    /// Joins received from the gate (whether or not the socket was still open).
    joins_seen: u64,
}

/// What a room handles.
pub enum RoomMsg {
    /// The gate handed `sock` over: it joins as `name`.
    Join { sock: SockIdent, name: String },
    /// An event of a member's socket.
    Net(NetEvent),
    /// The gate has freed the room (it has no members, and none are on their way).
    Close,
    /// Answers with the members' names, sorted (for tests: the program never sends it).
    #[allow(dead_code, reason = "sent by tests only")]
    Members(std::sync::mpsc::Sender<Vec<String>>),
}

impl From<NetEvent> for RoomMsg {
    fn from(ev: NetEvent) -> RoomMsg {
        RoomMsg::Net(ev)
    }
}

/// Lets a room hand a leaving member's socket back to the gate with what it sent after its
/// LEAVE ([`SockIdent::hand_off`]).
impl NetMsg for RoomMsg {
    fn into_net_event(self) -> Result<NetEvent, RoomMsg> {
        match self {
            RoomMsg::Net(ev) => Ok(ev),
            other => Err(other),
        }
    }
}

impl Actor for Room {
    type Msg = RoomMsg;

    fn handle(&mut self, msg: RoomMsg, ctx: &mut Context<Self>) {
        match msg {
            RoomMsg::Join { sock, name } => {
                self.joins_seen += 1;
                // The socket may have closed during the hand-off; its Disconnected came here
                // first and found no member.
                if self.group.join(sock).is_err() {
                    return self.freed_if_empty();
                }
                println!("chat: {name} joined {}", self.name);
                self.members.insert(sock, name);
                let name = &self.members[&sock];
                self.group
                    .broadcast(server_packet(JOINED, &[&self.name, name]));
            }
            RoomMsg::Net(NetEvent::Packet { sock, mut packet }) => {
                let Some(name) = self.members.get(&sock) else {
                    // It spoke before its JOINED reached it: it overtook the hand-off.
                    return drop_client(sock, "sent before its JOINED");
                };
                match packet.read_u8() {
                    Ok(SAY) => match packet.read_str() {
                        Ok(text) if message_len(&self.name, name, text) > MAX_PACKET_LEN => {
                            let reason = format!(
                                "message too long: at most {} bytes in this room under this name",
                                text.len() - (message_len(&self.name, name, text) - MAX_PACKET_LEN)
                            );
                            let _ = sock.send(server_packet(ERROR, &[&reason]));
                        }
                        Ok(text) => {
                            self.group
                                .broadcast(server_packet(MESSAGE, &[&self.name, name, text]));
                        }
                        Err(_) => drop_client(sock, "malformed SAY"),
                    },
                    Ok(LEAVE) => {
                        // Back to the gate, with whatever the client sent after its LEAVE
                        // (a JOIN of another room), so that it need not wait for LEFT. If the
                        // socket has closed meanwhile, its Disconnected comes here and finds
                        // no member.
                        let _ = sock.hand_off(ctx, &self.gate);
                        println!("chat: {name} left {}", self.name);
                        // The leaver receives the announcement too: its confirmation.
                        self.group
                            .broadcast(server_packet(LEFT, &[&self.name, name, "left"]));
                        self.group.leave(sock);
                        self.members.remove(&sock);
                        self.freed_if_empty();
                    }
                    _ => drop_client(sock, "unknown request"),
                }
            }
            RoomMsg::Net(NetEvent::Disconnected { sock, reason }) => {
                // The socket has left the group by itself.
                if let Some(name) = self.members.remove(&sock) {
                    println!("chat: {name} dropped from {} ({reason})", self.name);
                    self.group
                        .broadcast(server_packet(LEFT, &[&self.name, &name, "dropped"]));
                    self.freed_if_empty();
                }
            }
            RoomMsg::Net(_) => {}
            RoomMsg::Close => ctx.stop(),
            RoomMsg::Members(reply) => {
                let mut names: Vec<String> = self.members.values().cloned().collect();
                names.sort();
                let _ = reply.send(names);
            }
        }
    }
}

impl Room {
    /// Tells the gate when the last member has gone: it frees the room unless a join is on
    /// its way here.
    fn freed_if_empty(&self) {
        if self.members.is_empty() {
            let _ = self.gate.send(GateMsg::RoomEmpty {
                room: self.name.clone(),
                joins_seen: self.joins_seen,
            });
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
