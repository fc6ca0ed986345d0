//! The web chat's server: one port that serves the page and the WebSocket endpoint, and
//! optionally a second one for the clients of `examples/chat_server`, all in the same rooms.
//! Shared by the program (`examples/web_chat/main.rs`) and `tests/web_chat.rs`, which
//! includes this file to drive the server in-process.
//!
//! # Design
//!
//! The design of `examples/chat_server`, with two protocols in each room:
//!
//! - The **gate** actor owns both listeners, so every new socket starts out as the gate's.
//!   The first request of a socket decides its protocol: a WebSocket text message speaks the
//!   text protocol below, a packet (a framed TCP packet, or a binary WebSocket message)
//!   speaks `chat_server`'s packet protocol. On a valid JOIN the gate finds the room's actor,
//!   creating it on first use, and **hands the socket to it** with what the client sent after
//!   its JOIN ([`SockIdent::hand_off`]).
//! - Each **room** keeps its members in two [`SockGroup`]s, one per protocol, and relays
//!   every event with one broadcast to each: a text message (JSON) to the text members, a
//!   `chat_server` packet to the others. Each member thus receives every event of the room in
//!   the room's order, in its own protocol. The room keeps its last [`HISTORY_LEN`] messages
//!   and replays them to a newcomer.
//! - What a room or the gate sends to one socket alone (the welcome, the history, an error)
//!   goes through a group of its own ([`Unicast`]), not [`SockIdent::send`]: a poller writes
//!   the frames of groups before the packets sent to single sockets in the same flush, so only
//!   a group keeps such a message in order with the room's broadcasts.
//! - LEAVE hands the socket back to the gate (it may JOIN again at once); a member whose
//!   connection ends is announced as `dropped`. When the last member has gone, the room tells
//!   the gate, which frees it unless a JOIN is on its way to it.
//!
//! # The text protocol (WebSocket text messages)
//!
//! Client → server, one command per message:
//!
//! | message              | meaning |
//! |----------------------|---------|
//! | `JOIN <room> <nick>` | join a room; names are 1 to [`MAX_NAME_LEN`] bytes, without spaces or control characters |
//! | `SAY <text>`         | say `text` (everything after `SAY `) in the room |
//! | `LEAVE`              | leave the room |
//!
//! Server → client, one JSON object per message:
//!
//! | `type`    | fields | when |
//! |-----------|--------|------|
//! | `welcome` | `room`, `nick`, `members` (the nicks present before the newcomer, in the order they joined) | to the newcomer alone, first |
//! | `message` | `room`, `nick`, `text`, and `"history": true` for the replay of older messages | the replay to the newcomer after `welcome`, then each message said |
//! | `joined`  | `room`, `nick` | to every member, the newcomer included (after its replay) |
//! | `left`    | `room`, `nick`, `reason` (`"left"` or `"dropped"`) | to every member, the leaver included |
//! | `error`   | `reason` | a refused request: names that break the rules, a message too long |
//!
//! Members of the packet protocol get `chat_server`'s JOINED, MESSAGE, LEFT and ERROR
//! packets; a newcomer gets its own JOINED first, then the replay as MESSAGE packets.
//!
//! # Limits and garbage
//!
//! As in `chat_server`: no message longer than [`MAX_PACKET_LEN`] bytes either way (a longer
//! WebSocket message closes the connection with 1009, a longer packet closes it too), and a
//! SAY whose relayed MESSAGE would pass it (room, nick and text count) is refused with an
//! error to its sender alone. A text JOIN with bad names is refused with an error and the
//! client may try again; a packet JOIN with bad names, a request out of place (SAY before
//! JOIN, JOIN in a room), an unknown command, a binary message in a text session (or the
//! reverse) disconnects the client.

#[allow(
    dead_code,
    unused_imports,
    reason = "only the protocol of chat_server is used here, not its actors"
)]
#[path = "../chat/rooms.rs"]
mod packets;

use packets::{ERROR, JOIN, JOINED, LEAVE, LEFT, MESSAGE, SAY};
pub use packets::{MAX_NAME_LEN, MAX_PACKET_LEN, message_len, valid_name};

use kendynet::net::SlowConsumer;
use kendynet::ws::{HttpRequest, HttpResponse, WsOptions};
use kendynet::{
    Actor, Addr, ConnOptions, Context, NetEvent, NetMsg, RPacket, SockGroup, SockIdent,
    SystemHandle, WPacket,
};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many of its last messages a room replays to a newcomer.
pub const HISTORY_LEN: usize = 50;
/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
/// The page, served at `/`.
pub const INDEX_HTML: &str = include_str!("index.html");

/// Where the server listens.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HTTP and WebSocket port.
    pub http: SocketAddr,
    /// The port for `chat_server`'s clients, if any.
    pub tcp: Option<SocketAddr>,
    /// Serve a Prometheus page at `/metrics`.
    pub metrics: bool,
}

/// A running web chat.
pub struct WebChat {
    /// The bound HTTP and WebSocket address.
    pub http: SocketAddr,
    /// The bound address for `chat_server`'s clients.
    pub tcp: Option<SocketAddr>,
    /// The gate: ask it [`GateMsg::Rooms`] or [`GateMsg::Members`].
    #[allow(dead_code, reason = "asked by tests only")]
    pub gate: Addr<Gate>,
    /// What the rooms count.
    pub stats: Arc<ChatStats>,
}

/// Counts kept by the gate and the rooms, read by the metrics page.
#[derive(Debug, Default)]
pub struct ChatStats {
    rooms: AtomicUsize,
    members: AtomicUsize,
    messages: AtomicU64,
}

impl ChatStats {
    /// Rooms open now.
    pub fn rooms(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }
    /// Members of all rooms now.
    pub fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }
    /// Messages relayed since the start.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

/// Starts a web chat in `system`.
///
/// # Errors
/// The OS error of listening (for example `AddrInUse`).
pub fn start(system: &SystemHandle, config: &Config) -> io::Result<WebChat> {
    let stats = Arc::new(ChatStats::default());
    let gate = system.spawn(Gate {
        rooms: HashMap::new(),
        unicast: Unicast(system.sock_group()),
        stats: stats.clone(),
    });
    // A member that stops reading is disconnected (and announced as dropped) once its
    // queued output has stayed above the low-water mark for the grace period.
    let options = ConnOptions::default().slow_consumer(SlowConsumer::DISCONNECT);
    let metrics = config.metrics.then(|| (system.clone(), stats.clone()));
    let ws = WsOptions::new()
        .max_message_len(MAX_PACKET_LEN)
        .check_request(|req| route(req) == WS_PATH && same_origin(req))
        .http(move |req| serve_http(req, metrics.as_ref()));
    let started = (|| {
        let http = system.listen_ws_with(config.http, &gate, options.clone(), ws)?;
        let tcp = match config.tcp {
            Some(addr) => {
                Some(system.listen_with(addr, &gate, options.max_packet_len(MAX_PACKET_LEN))?)
            }
            None => None,
        };
        Ok((http, tcp))
    })();
    let (http, tcp) = started.inspect_err(|_: &io::Error| gate.stop())?;
    Ok(WebChat {
        http,
        tcp,
        gate,
        stats,
    })
}

/// Whether an upgrade request comes from a page of this server: a browser always sends
/// `Origin`, and a page elsewhere must not open a chat session in its visitor's name. Other
/// clients send none.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.origin() else {
        return true;
    };
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some() && host == req.header("host")
}

/// The request's path without its query.
fn route(req: &HttpRequest) -> &str {
    req.path().split('?').next().unwrap_or("")
}

/// Answers a plain HTTP request: the page, the metrics, or 404.
fn serve_http(req: &HttpRequest, metrics: Option<&(SystemHandle, Arc<ChatStats>)>) -> HttpResponse {
    if req.method() != "GET" {
        return HttpResponse::new(405, "text/plain; charset=utf-8", "method not allowed\n");
    }
    match (route(req), metrics) {
        ("/" | "/index.html", _) => HttpResponse::ok("text/html; charset=utf-8", INDEX_HTML),
        ("/metrics", Some((system, stats))) => HttpResponse::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_page(system, stats),
        ),
        _ => HttpResponse::not_found(),
    }
}

/// The Prometheus page of `--metrics`: the system's metrics
/// ([`Metrics::to_prometheus`](kendynet::Metrics::to_prometheus)), then the chat's.
pub fn metrics_page(system: &SystemHandle, stats: &ChatStats) -> String {
    let mut page = system.metrics().to_prometheus();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            page,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "web_chat_rooms",
        "gauge",
        "Rooms with members (or a member on its way).",
        stats.rooms() as u64,
    );
    metric(
        "web_chat_members",
        "gauge",
        "Members of all rooms.",
        stats.members() as u64,
    );
    metric(
        "web_chat_messages_total",
        "counter",
        "Messages relayed since the start.",
        stats.messages(),
    );
    page
}

// ----- protocol -----

/// The protocol a socket speaks, decided by its JOIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// WebSocket text messages: commands in, JSON out.
    Text,
    /// `chat_server`'s packets (over TCP, or as binary WebSocket messages).
    Packets,
}

impl Proto {
    fn of(packet: &RPacket) -> Proto {
        if packet.is_text() {
            Proto::Text
        } else {
            Proto::Packets
        }
    }
}

/// A client's request, in either protocol.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Join { room: String, nick: String },
    Say(String),
    Leave,
}

/// Reads a request of `proto`; `Err` says why it is garbage (the client is disconnected).
fn parse_request(mut packet: RPacket, proto: Proto) -> Result<Request, &'static str> {
    if Proto::of(&packet) != proto {
        return Err("text and binary messages mixed");
    }
    match proto {
        Proto::Text => parse_text(packet.payload()),
        Proto::Packets => match packet.read_u8() {
            Ok(JOIN) => match (packet.read_string(), packet.read_string()) {
                (Ok(room), Ok(nick)) => Ok(Request::Join { room, nick }),
                _ => Err("malformed JOIN"),
            },
            Ok(SAY) => packet
                .read_string()
                .map(Request::Say)
                .map_err(|_| "malformed SAY"),
            Ok(LEAVE) => Ok(Request::Leave),
            _ => Err("unknown request"),
        },
    }
}

/// Reads a command of the text protocol.
fn parse_text(payload: &[u8]) -> Result<Request, &'static str> {
    let line = std::str::from_utf8(payload).map_err(|_| "not UTF-8")?;
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        // Names are checked by the gate, which answers bad ones with an error.
        "JOIN" => {
            let (room, nick) = rest.split_once(' ').unwrap_or((rest, ""));
            Ok(Request::Join {
                room: room.to_owned(),
                nick: nick.to_owned(),
            })
        }
        "SAY" if line.len() > command.len() => Ok(Request::Say(rest.to_owned())),
        "LEAVE" if rest.is_empty() && line.len() == command.len() => Ok(Request::Leave),
        _ => Err("unknown command"),
    }
}

/// Whether `name` is a valid room or nick in the text protocol: 1 to [`MAX_NAME_LEN`]
/// bytes, no spaces or control characters.
pub fn valid_text_name(name: &str) -> bool {
    valid_name(name) && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What the text protocol says about names, in its error.
fn name_rule() -> String {
    format!("room and nick must be 1 to {MAX_NAME_LEN} bytes, without spaces")
}

/// Writes `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object of the text protocol: its `type`, then string fields, then `extra` (already
/// JSON: `,"key":value` pairs).
pub fn json(kind: &str, fields: &[(&str, &str)], extra: &str) -> String {
    let mut out = String::from("{\"type\":");
    push_json_str(&mut out, kind);
    for (key, value) in fields {
        out.push(',');
        push_json_str(&mut out, key);
        out.push(':');
        push_json_str(&mut out, value);
    }
    out.push_str(extra);
    out.push('}');
    out
}

/// A JSON array of strings.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, item);
    }
    out.push(']');
    out
}

/// A `chat_server` packet: the opcode, then string fields.
fn server_packet(op: u8, fields: &[&str]) -> WPacket {
    let mut packet = WPacket::new();
    packet.write_u8(op);
    for field in fields {
        packet.write_str(field);
    }
    packet
}

/// An error for a client of `proto`.
fn error_packet(proto: Proto, reason: &str) -> WPacket {
    match proto {
        Proto::Text => WPacket::text(&json("error", &[("reason", reason)], "")),
        Proto::Packets => server_packet(ERROR, &[reason]),
    }
}

/// Sends to single sockets through a socket group of its own, so that what it sends keeps
/// its order with the broadcasts of rooms (see the design above).
struct Unicast(SockGroup);

impl Unicast {
    fn send(&self, sock: SockIdent, packets: impl IntoIterator<Item = WPacket>) {
        // A socket that has closed meanwhile cannot join: nothing to send.
        if self.0.join(sock).is_ok() {
            for packet in packets {
                self.0.broadcast(packet);
            }
            self.0.leave(sock);
        }
    }
}

/// Closes a client that broke the protocol (what was queued for it is still written).
fn drop_client(sock: SockIdent, why: &str) {
    eprintln!("web chat: dropping {sock}: {why}");
    let _ = sock.close();
}

// ----- the gate -----

/// Owns the listeners and the table of rooms: every socket is the gate's until it joins a
/// room, and again after it leaves one.
pub struct Gate {
    rooms: HashMap<String, RoomEntry>,
    unicast: Unicast,
    stats: Arc<ChatStats>,
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
    /// Answers with the number of rooms (for tests).
    #[allow(dead_code, reason = "sent by tests only")]
    Rooms(std::sync::mpsc::Sender<usize>),
    /// Answers with the nicks in `room`, sorted (empty if there is no such room; for tests).
    #[allow(dead_code, reason = "sent by tests only")]
    Members(String, std::sync::mpsc::Sender<Vec<String>>),
}

impl From<NetEvent> for GateMsg {
    fn from(ev: NetEvent) -> GateMsg {
        GateMsg::Net(ev)
    }
}

/// Lets the gate hand a socket on with the packets already queued for it.
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
            GateMsg::Net(NetEvent::Packet { sock, packet }) => {
                let proto = Proto::of(&packet);
                match parse_request(packet, proto) {
                    Ok(Request::Join { room, nick }) => self.join(sock, proto, room, nick, ctx),
                    Ok(_) => drop_client(sock, "not in a room"),
                    Err(why) => drop_client(sock, why),
                }
            }
            // A socket that is not in a room has no state here.
            GateMsg::Net(_) => {}
            GateMsg::RoomEmpty { room, joins_seen } => {
                if self.rooms.get(&room).is_some_and(|r| r.joins == joins_seen) {
                    // No join on its way: nothing can reach the room any more.
                    let entry = self.rooms.remove(&room).expect("just found");
                    self.stats.rooms.fetch_sub(1, Ordering::Relaxed);
                    println!("web chat: room {room} freed");
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
    fn join(
        &mut self,
        sock: SockIdent,
        proto: Proto,
        room: String,
        nick: String,
        ctx: &mut Context<Self>,
    ) {
        match proto {
            Proto::Text if !(valid_text_name(&room) && valid_text_name(&nick)) => {
                return self.unicast.send(sock, [error_packet(proto, &name_rule())]);
            }
            Proto::Packets if !(valid_name(&room) && valid_name(&nick)) => {
                return drop_client(sock, "malformed JOIN");
            }
            _ => {}
        }
        let stats = &self.stats;
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| {
            stats.rooms.fetch_add(1, Ordering::Relaxed);
            RoomEntry {
                addr: ctx.system().spawn(Room {
                    text: ctx.system().sock_group(),
                    packets: ctx.system().sock_group(),
                    unicast: Unicast(ctx.system().sock_group()),
                    name: room,
                    gate: ctx.addr(),
                    members: HashMap::new(),
                    next_seq: 0,
                    history: VecDeque::new(),
                    joins_seen: 0,
                    stats: stats.clone(),
                }),
                joins: 0,
            }
        });
        // As in chat_server: the room sees the Join first, then every later packet of the
        // socket in order; it stops only when the gate says so, and the gate does not while
        // this join is on its way.
        entry.joins += 1;
        let _ = entry.addr.send(RoomMsg::Join { sock, nick, proto });
        let _ = sock.hand_off(ctx, &entry.addr);
    }
}

// ----- the rooms -----

/// One room: its members' sockets in a group per protocol, and its last messages.
pub struct Room {
    name: String,
    gate: Addr<Gate>,
    text: SockGroup,
    packets: SockGroup,
    unicast: Unicast,
    members: HashMap<SockIdent, Member>,
    /// The order of joining, for the presence list.
    next_seq: u64,
    /// The last messages: (nick, text).
    history: VecDeque<(String, String)>,
    /// Joins received from the gate (whether or not the socket was still open).
    joins_seen: u64,
    stats: Arc<ChatStats>,
}

struct Member {
    nick: String,
    proto: Proto,
    seq: u64,
}

/// What a room handles.
pub enum RoomMsg {
    /// The gate handed `sock` over: it joins as `nick`.
    Join {
        sock: SockIdent,
        nick: String,
        proto: Proto,
    },
    /// An event of a member's socket.
    Net(NetEvent),
    /// The gate has freed the room.
    Close,
    /// Answers with the members' nicks, sorted (for tests).
    Members(std::sync::mpsc::Sender<Vec<String>>),
}

impl From<NetEvent> for RoomMsg {
    fn from(ev: NetEvent) -> RoomMsg {
        RoomMsg::Net(ev)
    }
}

/// Lets a room hand a leaving member's socket back to the gate with what it sent after its
/// LEAVE.
impl NetMsg for RoomMsg {
    fn into_net_event(self) -> Result<NetEvent, RoomMsg> {
        match self {
            RoomMsg::Net(ev) => Ok(ev),
            other => Err(other),
        }
    }
}

/// An event relayed to every member.
enum Event<'a> {
    Joined { nick: &'a str },
    Message { nick: &'a str, text: &'a str },
    Left { nick: &'a str, reason: &'a str },
}

impl Actor for Room {
    type Msg = RoomMsg;

    fn handle(&mut self, msg: RoomMsg, ctx: &mut Context<Self>) {
        match msg {
            RoomMsg::Join { sock, nick, proto } => self.join(sock, nick, proto),
            RoomMsg::Net(NetEvent::Packet { sock, packet }) => {
                let Some(member) = self.members.get(&sock) else {
                    // It spoke before its JOIN reached the room: it overtook the hand-off.
                    return drop_client(sock, "sent before joining");
                };
                let proto = member.proto;
                match parse_request(packet, proto) {
                    Ok(Request::Say(text)) => self.say(sock, proto, &text),
                    Ok(Request::Leave) => {
                        // Back to the gate, with whatever the client sent after its LEAVE.
                        let _ = sock.hand_off(ctx, &self.gate);
                        self.remove(sock, "left");
                    }
                    Ok(Request::Join { .. }) => drop_client(sock, "JOIN while in a room"),
                    Err(why) => drop_client(sock, why),
                }
            }
            RoomMsg::Net(NetEvent::Disconnected { sock, reason }) => {
                // The socket has left its group by itself.
                if self.members.contains_key(&sock) {
                    println!("web chat: {sock} dropped from {} ({reason})", self.name);
                    self.remove(sock, "dropped");
                }
            }
            RoomMsg::Net(_) => {}
            RoomMsg::Close => ctx.stop(),
            RoomMsg::Members(reply) => {
                let mut nicks: Vec<String> =
                    self.members.values().map(|m| m.nick.clone()).collect();
                nicks.sort();
                let _ = reply.send(nicks);
            }
        }
    }
}

impl Room {
    fn group(&self, proto: Proto) -> &SockGroup {
        match proto {
            Proto::Text => &self.text,
            Proto::Packets => &self.packets,
        }
    }

    fn join(&mut self, sock: SockIdent, nick: String, proto: Proto) {
        self.joins_seen += 1;
        // The socket may have closed during the hand-off; its Disconnected came here first
        // and found no member.
        if self.group(proto).join(sock).is_err() {
            return self.freed_if_empty();
        }
        println!("web chat: {nick} joined {}", self.name);
        if proto == Proto::Text {
            // The welcome with the presence list, then the replay, then (below) the joined.
            let mut present: Vec<&Member> = self.members.values().collect();
            present.sort_by_key(|m| m.seq);
            let members = json_list(present.iter().map(|m| m.nick.as_str()));
            let welcome = json(
                "welcome",
                &[("room", &self.name), ("nick", &nick)],
                &format!(",\"members\":{members}"),
            );
            let replay = self.history.iter().map(|(who, text)| {
                WPacket::text(&json(
                    "message",
                    &[("room", &self.name), ("nick", who), ("text", text)],
                    ",\"history\":true",
                ))
            });
            self.unicast
                .send(sock, std::iter::once(WPacket::text(&welcome)).chain(replay));
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        self.members.insert(sock, Member { nick, proto, seq });
        self.stats.members.fetch_add(1, Ordering::Relaxed);
        let nick = &self.members[&sock].nick;
        self.relay(&Event::Joined { nick });
        if proto == Proto::Packets {
            // chat_server's clients wait for their own JOINED first.
            let replay = self
                .history
                .iter()
                .map(|(who, text)| server_packet(MESSAGE, &[&self.name, who, text]));
            self.unicast.send(sock, replay);
        }
    }

    fn say(&mut self, sock: SockIdent, proto: Proto, text: &str) {
        let nick = &self.members[&sock].nick;
        let len = message_len(&self.name, nick, text);
        if len > MAX_PACKET_LEN {
            let reason = format!(
                "message too long: at most {} bytes in this room under this name",
                text.len() - (len - MAX_PACKET_LEN)
            );
            return self.unicast.send(sock, [error_packet(proto, &reason)]);
        }
        self.relay(&Event::Message { nick, text });
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back((nick.clone(), text.to_owned()));
    }

    /// Announces that `sock` has gone (`reason`: `left` or `dropped`) and forgets it. A
    /// leaver still in its group receives the announcement too: its confirmation.
    fn remove(&mut self, sock: SockIdent, reason: &str) {
        let nick = self.members[&sock].nick.clone();
        if reason == "left" {
            println!("web chat: {nick} left {}", self.name);
        }
        self.relay(&Event::Left {
            nick: &nick,
            reason,
        });
        let member = self.members.remove(&sock).expect("a member");
        self.group(member.proto).leave(sock);
        self.stats.members.fetch_sub(1, Ordering::Relaxed);
        self.freed_if_empty();
    }

    /// Sends `event` to every member, in each one's protocol: each encoded once.
    fn relay(&self, event: &Event<'_>) {
        let room = self.name.as_str();
        if !self.text.is_empty() {
            let text = match *event {
                Event::Joined { nick } => json("joined", &[("room", room), ("nick", nick)], ""),
                Event::Message { nick, text } => json(
                    "message",
                    &[("room", room), ("nick", nick), ("text", text)],
                    "",
                ),
                Event::Left { nick, reason } => json(
                    "left",
                    &[("room", room), ("nick", nick), ("reason", reason)],
                    "",
                ),
            };
            self.text.broadcast(WPacket::text(&text));
        }
        if !self.packets.is_empty() {
            let packet = match *event {
                Event::Joined { nick } => server_packet(JOINED, &[room, nick]),
                Event::Message { nick, text } => server_packet(MESSAGE, &[room, nick, text]),
                Event::Left { nick, reason } => server_packet(LEFT, &[room, nick, reason]),
            };
            self.packets.broadcast(packet);
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands_parse() {
        let join = |room: &str, nick: &str| Request::Join {
            room: room.into(),
            nick: nick.into(),
        };
        assert_eq!(parse_text(b"JOIN lobby alice"), Ok(join("lobby", "alice")));
        assert_eq!(parse_text(b"JOIN lobby"), Ok(join("lobby", "")));
        assert_eq!(parse_text(b"JOIN a b c"), Ok(join("a", "b c")));
        assert_eq!(
            parse_text(b"SAY hi there"),
            Ok(Request::Say("hi there".into()))
        );
        assert_eq!(parse_text(b"SAY "), Ok(Request::Say(String::new())));
        assert_eq!(parse_text(b"LEAVE"), Ok(Request::Leave));
        for garbage in [
            &b"SAY"[..],
            b"LEAVE now",
            b"LEAVE ",
            b"HELLO",
            b"",
            b"\xff\xfe",
        ] {
            assert!(parse_text(garbage).is_err(), "{garbage:?}");
        }
        assert!(!valid_text_name("b c"));
        assert!(!valid_text_name(""));
        assert!(!valid_text_name(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(valid_text_name(&"x".repeat(MAX_NAME_LEN)));
    }

    #[test]
    fn json_escapes_what_it_must() {
        assert_eq!(
            json(
                "message",
                &[("text", "a\"b\\c\nd\u{1}")],
                ",\"history\":true"
            ),
            r#"{"type":"message","text":"a\"b\\c\nd\u0001","history":true}"#
        );
        assert_eq!(json_list(["a", "b\""]), r#"["a","b\""]"#);
        assert_eq!(json_list([]), "[]");
    }
}
