//! WebSocket connections at layer 3, against a client that is not ours (tungstenite) and a
//! raw one that breaks the rules on purpose: echo with opcodes kept, large and fragmented
//! messages, ping/pong, both close handshakes, each protocol violation answered with its close
//! code while a neighbour goes on being served, the origin check, plain HTTP on the same port,
//! and broadcast to a group that mixes WebSocket and framed TCP members.
//!
//! Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::ws::{HttpResponse, WsOptions, close_code};
use kendynet::{Actor, Context, DisconnectReason, NetEvent, SockGroup, SockIdent, System, WPacket};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::wire::{client, frame, read_frame};
use support::{WAIT, any_port, recv};
use tungstenite::Message;

/// What the server's owner saw.
#[derive(Debug)]
enum Seen {
    Connected(SockIdent),
    Packet(SockIdent, Vec<u8>, bool),
    Disconnected(SockIdent, DisconnectReason),
}

/// Echoes every message with its own opcode and reports what it sees. A message `close`
/// makes it close the socket; `join` joins the group, `shout` broadcasts the rest.
struct Echo {
    out: Sender<Seen>,
    group: Option<SockGroup>,
}

impl Actor for Echo {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        let seen = match ev {
            NetEvent::Connected { sock, .. } => Seen::Connected(sock),
            NetEvent::Packet { sock, packet } => {
                let seen = Seen::Packet(sock, packet.payload().to_vec(), packet.is_text());
                match (packet.payload(), &self.group) {
                    (b"close", _) => {
                        let _ = sock.close();
                    }
                    (b"join", Some(g)) => {
                        g.join(sock).unwrap();
                    }
                    (p, Some(g)) if p.starts_with(b"shout ") => {
                        let text = std::str::from_utf8(&p[6..]).unwrap().to_owned();
                        g.broadcast(WPacket::text(&text));
                    }
                    _ => {
                        let _ = sock.send(WPacket::from(packet));
                    }
                }
                seen
            }
            NetEvent::Disconnected { sock, reason } => Seen::Disconnected(sock, reason),
            _ => return,
        };
        let _ = self.out.send(seen);
    }
}

struct Server {
    system: System,
    ws: SocketAddr,
    tcp: SocketAddr,
    rx: Receiver<Seen>,
}

/// A one-worker system whose echo listens for WebSocket (with `options`) and framed TCP.
fn serve(options: WsOptions) -> Server {
    let system = System::builder().workers(1).build().expect("system");
    let (tx, rx) = mpsc::channel();
    let group = system.sock_group();
    let echo = system.spawn(Echo {
        out: tx,
        group: Some(group),
    });
    let ws = system
        .listen_ws(any_port(), &echo, options)
        .expect("listen_ws");
    let tcp = system.listen(any_port(), &echo).expect("listen");
    Server {
        system,
        ws,
        tcp,
        rx,
    }
}

impl Server {
    fn connected(&self) -> SockIdent {
        match recv(&self.rx, "Connected") {
            Seen::Connected(sock) => sock,
            other => panic!("expected Connected, saw {other:?}"),
        }
    }

    /// The next event that is not a packet.
    fn disconnected(&self, sock: SockIdent) -> DisconnectReason {
        loop {
            match recv(&self.rx, "Disconnected") {
                Seen::Disconnected(s, reason) if s == sock => return reason,
                Seen::Packet(..) => continue,
                other => panic!("expected Disconnected of {sock}, saw {other:?}"),
            }
        }
    }
}

type Ws = tungstenite::WebSocket<TcpStream>;

/// A tungstenite client connected to `addr`.
fn ws_client(addr: SocketAddr) -> Ws {
    let stream = client(addr);
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/echo"), stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next data message, answering nothing by hand (tungstenite answers pings itself).
fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

#[test]
fn messages_come_back_with_their_own_opcode_and_whole() {
    let server = serve(WsOptions::new());
    let mut ws = ws_client(server.ws);
    let sock = server.connected();
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 1, 2])).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(vec![0u8, 1, 2]));
    // 16-bit and 64-bit lengths.
    for len in [300usize, 200_000] {
        let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).unwrap();
        assert_eq!(next_message(&mut ws), Message::binary(big));
    }
    match recv(&server.rx, "the first packet") {
        Seen::Packet(s, p, text) => {
            assert_eq!((s, &p[..], text), (sock, "héllo".as_bytes(), true));
        }
        other => panic!("{other:?}"),
    }
    // The peer's close: answered with its code, and reported with it.
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 4000);
                break;
            }
            Ok(Message::Close(None)) => panic!("close echoed without its code"),
            Ok(_) => continue,
            Err(e) => panic!("no close echoed: {e}"),
        }
    }
    assert_eq!(
        server.disconnected(sock),
        DisconnectReason::WebSocket {
            code: 4000,
            by_peer: true
        }
    );
    server.system.shutdown(WAIT);
}

#[test]
fn a_local_close_sends_1000_and_reports_closed_locally() {
    let server = serve(WsOptions::new());
    let mut ws = ws_client(server.ws);
    let sock = server.connected();
    ws.send(Message::text("close")).unwrap();
    match next_message(&mut ws) {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), close_code::NORMAL),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The client completes the close handshake; the server then ends the connection.
    let _ = ws.flush();
    let end = loop {
        match ws.read() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(end, tungstenite::Error::ConnectionClosed), "{end}");
    assert_eq!(server.disconnected(sock), DisconnectReason::ClosedLocally);
    server.system.shutdown(WAIT);
}

/// A raw client: a handshake by hand, then frames masked or not as a test wants.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr, extra_headers: &str) -> (Raw, String) {
        let mut s = client(addr);
        write!(
            s,
            "GET /raw HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {extra_headers}\r\n"
        )
        .unwrap();
        let head = read_head(&mut s);
        (Raw { s }, head)
    }

    fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.s.write_all(&f).unwrap();
    }

    /// The next frame from the server: (opcode, payload), unmasked as a server must send.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).expect("a frame header");
        assert_eq!(h[1] & 0x80, 0, "the server masked a frame");
        assert_ne!(h[0] & 0x80, 0, "the server fragmented a frame");
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).unwrap();
        (h[0] & 0x0F, p)
    }

    /// Reads until the server's close frame; returns its code.
    fn close_code(&mut self) -> u16 {
        loop {
            let (op, p) = self.frame();
            if op == 0x8 {
                return u16::from_be_bytes([p[0], p[1]]);
            }
        }
    }

    /// Whether the server closes the TCP connection (after what it still had to say), within
    /// the client's read timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 4096];
        for _ in 0..1024 {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
        false
    }
}

/// Reads an HTTP response head (and the body, if it has a length).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 << 10, "endless response head");
        s.read_exact(&mut b).expect("a response head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn fragments_and_pings_are_handled_by_the_connection() {
    let server = serve(WsOptions::new());
    let (mut raw, head) = Raw::connect(server.ws, "");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    server.connected();
    raw.send(false, 0x1, "frag".as_bytes(), true);
    raw.send(true, 0x9, b"are you there", true);
    raw.send(false, 0x0, "men".as_bytes(), true);
    raw.send(true, 0x0, "ted ✓".as_bytes(), true);
    assert_eq!(raw.frame(), (0xA, b"are you there".to_vec()), "the pong");
    assert_eq!(raw.frame(), (0x1, "fragmented ✓".as_bytes().to_vec()));
    server.system.shutdown(WAIT);
}

#[test]
fn each_violation_gets_its_close_code_and_spares_the_neighbour() {
    let server = serve(WsOptions::new().max_message_len(64 << 10));
    let mut neighbour = ws_client(server.ws);
    let neighbour_sock = server.connected();
    type Breach = fn(&mut Raw);
    let cases: [(&str, Breach, u16); 8] = [
        ("unmasked", |r| r.send(true, 0x2, b"x", false), 1002),
        ("reserved opcode", |r| r.send(true, 0x3, b"x", true), 1002),
        (
            "126-byte ping",
            |r| r.send(true, 0x9, &[0; 126], true),
            1002,
        ),
        ("fragmented ping", |r| r.send(false, 0x9, b"x", true), 1002),
        (
            "stray continuation",
            |r| r.send(true, 0x0, b"x", true),
            1002,
        ),
        (
            "text not UTF-8",
            |r| r.send(true, 0x1, &[0xC3, 0x28], true),
            1007,
        ),
        (
            "too big",
            |r| r.send(true, 0x2, &vec![0; (64 << 10) + 1], true),
            1009,
        ),
        (
            "close code 1005 on the wire",
            |r| r.send(true, 0x8, &1005u16.to_be_bytes(), true),
            1002,
        ),
    ];
    for (what, breach, code) in cases {
        let (mut raw, _) = Raw::connect(server.ws, "");
        let sock = server.connected();
        breach(&mut raw);
        assert_eq!(raw.close_code(), code, "{what}");
        // Answering the close lets the server end the connection.
        raw.send(true, 0x8, &code.to_be_bytes(), true);
        assert!(raw.closed(), "{what}: the server kept the connection");
        assert_eq!(
            server.disconnected(sock),
            DisconnectReason::WebSocket {
                code,
                by_peer: false
            },
            "{what}"
        );
        neighbour.send(Message::text(what)).unwrap();
        assert_eq!(next_message(&mut neighbour), Message::text(what));
        match recv(&server.rx, "the neighbour's message") {
            Seen::Packet(s, _, _) => assert_eq!(s, neighbour_sock),
            other => panic!("{other:?}"),
        }
    }
    server.system.shutdown(WAIT);
}

#[test]
fn the_origin_check_refuses_before_the_owner_hears_of_it() {
    let server =
        serve(WsOptions::new().check_request(|req| req.origin() == Some("https://chat.example")));
    let (mut refused, head) = Raw::connect(server.ws, "Origin: https://evil.example\r\n");
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    assert!(refused.closed(), "a refused request keeps its connection");
    let (_ok, head) = Raw::connect(server.ws, "Origin: https://chat.example\r\n");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // The refused socket was never announced: the first event is the accepted one's.
    server.connected();
    assert!(
        server.rx.try_recv().is_err(),
        "the owner heard of a refused socket"
    );
    server.system.shutdown(WAIT);
}

#[test]
fn plain_http_is_served_on_the_same_port() {
    let server = serve(WsOptions::new().http(|req| match req.path() {
        "/" => HttpResponse::ok("text/html; charset=utf-8", "<h1>chat</h1>"),
        _ => HttpResponse::not_found(),
    }));
    let mut s = client(server.ws);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\n<h1>chat</h1>"), "{all}");
    let mut s = client(server.ws);
    s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 404 "));
    // Without a handler: 426.
    let bare = serve(WsOptions::new());
    let mut s = client(bare.ws);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 426 "));
    server.system.shutdown(WAIT);
    bare.system.shutdown(WAIT);
}

#[test]
fn a_broadcast_reaches_websocket_and_tcp_members_each_in_its_framing() {
    let server = serve(WsOptions::new());
    let mut a = ws_client(server.ws);
    server.connected();
    let mut b = ws_client(server.ws);
    server.connected();
    let mut t = client(server.tcp);
    server.connected();
    for ws in [&mut a, &mut b] {
        ws.send(Message::text("join")).unwrap();
    }
    t.write_all(&frame(b"join")).unwrap();
    // Joined once all three joins were handled.
    let mut joins = 0;
    while joins < 3 {
        if let Seen::Packet(_, p, _) = recv(&server.rx, "the joins") {
            joins += usize::from(p == b"join");
        }
    }
    a.send(Message::text("shout hello, room")).unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(next_message(ws), Message::text("hello, room"));
    }
    assert_eq!(read_frame(&mut t).unwrap(), b"hello, room");
    server.system.shutdown(WAIT);
}

#[test]
fn websocket_options_are_refused_where_they_cannot_work() {
    struct Sink(Sender<NetEvent>);
    impl Actor for Sink {
        type Msg = NetEvent;
        fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
            let _ = self.0.send(ev);
        }
    }
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let sink = system.spawn(Sink(tx));
    system.connect_with(
        "127.0.0.1:9".parse().unwrap(),
        Duration::from_secs(1),
        &sink,
        kendynet::ConnOptions::default().websocket(WsOptions::new()),
    );
    match recv(&rx, "ConnectFailed") {
        NetEvent::ConnectFailed { error, .. } => {
            assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
        }
        other => panic!("{other:?}"),
    }
    system.shutdown(WAIT);
}

#[test]
fn a_handshake_that_never_comes_is_reclaimed_by_the_packet_deadline() {
    struct Quiet;
    impl Actor for Quiet {
        type Msg = NetEvent;
        fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
            panic!("the owner heard of a socket that never upgraded: {ev:?}");
        }
    }
    let system = System::builder().workers(1).build().unwrap();
    let quiet = system.spawn(Quiet);
    let options = kendynet::ConnOptions::default().packet_timeout(Some(Duration::from_millis(200)));
    let addr = system
        .listen_ws_with(any_port(), &quiet, options, WsOptions::new())
        .unwrap();
    // One connects and says nothing; one drips half a request line.
    let _silent = client(addr);
    let mut dripping = client(addr);
    dripping.write_all(b"GET / HT").unwrap();
    support::eventually("both counted", || system.open_sockets() == 2);
    support::eventually("both reclaimed", || system.open_sockets() == 0);
    system.shutdown(WAIT);
}
