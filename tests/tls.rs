//! TLS at layer 3 against a client that is not ours (Python's `ssl` module): framed echo
//! over TLS 1.2 and 1.3, WebSocket over TLS (wss), a client that speaks no TLS, and a
//! handshake that stalls half-way while a neighbour is served.
//!
//! The certificate is a self-signed one for `localhost` in `tests/data` (test use only).
//! Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::tls::TlsAcceptor;
use kendynet::{
    Actor, ConnOptions, Context, DisconnectReason, NetEvent, SockIdent, System, WPacket,
};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::wire::client;
use support::{WAIT, any_port, eventually, recv};

const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls-cert.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls-key.pem");

#[derive(Debug)]
enum Seen {
    Connected(SockIdent),
    Packet(SockIdent),
    Disconnected(SockIdent, DisconnectReason),
}

/// Echoes and reports.
struct Echo(Sender<Seen>);

impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        let seen = match ev {
            NetEvent::Connected { sock, .. } => Seen::Connected(sock),
            NetEvent::Packet { sock, packet } => {
                let _ = sock.send(WPacket::from(packet));
                Seen::Packet(sock)
            }
            NetEvent::Disconnected { sock, reason } => Seen::Disconnected(sock, reason),
            _ => return,
        };
        let _ = self.0.send(seen);
    }
}

fn serve(options: ConnOptions) -> (System, SocketAddr, Receiver<Seen>) {
    let system = System::builder().workers(1).build().expect("system");
    let (tx, rx) = mpsc::channel();
    let echo = system.spawn(Echo(tx));
    let acceptor = TlsAcceptor::from_pem_files(CERT, KEY).expect("the test certificate");
    let addr = system
        .listen_with(any_port(), &echo, options.tls(acceptor))
        .expect("listen");
    (system, addr, rx)
}

/// Runs a Python client script with `PORT` and `CERT` set; returns its stdout, failing the
/// test with its stderr if it fails or takes longer than [`WAIT`].
fn python(script: &str, port: u16) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .env("CERT", CERT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed for the TLS tests");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
            assert!(status.success(), "python client failed: {stderr}{stdout}");
            return stdout;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("python client took longer than {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A framed echo client over TLS: `VERSION` selects the protocol; prints the version used.
const FRAMED_CLIENT: &str = r#"
import os, socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=os.environ["CERT"])
v = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VERSION", "")
if v == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
with socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        def recv_exact(n):
            b = b""
            while len(b) < n:
                chunk = s.recv(n - len(b))
                if not chunk:
                    raise SystemExit("connection closed early")
                b += chunk
            return b
        # Pipelined packets of many sizes, up to 200 KB (many records), then their echoes.
        sizes = [0, 1, 100, 16384, 16385, 70000, 200000]
        payloads = [bytes((i * 7 + n) % 251 for i in range(n)) for n in sizes]
        s.sendall(b"".join(struct.pack("<I", len(p)) + p for p in payloads))
        for p in payloads:
            (n,) = struct.unpack("<I", recv_exact(4))
            got = recv_exact(n)
            assert got == p, f"echo of {len(p)} bytes differs"
        print(s.version())
"#;

#[test]
fn framed_packets_echo_over_tls_13_and_12() {
    let (system, addr, rx) = serve(ConnOptions::default());
    let out = python(FRAMED_CLIENT, addr.port());
    assert_eq!(out.trim(), "TLSv1.3");
    let sock = match recv(&rx, "Connected") {
        Seen::Connected(sock) => sock,
        other => panic!("{other:?}"),
    };
    let reason = loop {
        match recv(&rx, "Disconnected") {
            Seen::Packet(s) => assert_eq!(s, sock),
            Seen::Disconnected(s, reason) => {
                assert_eq!(s, sock);
                break reason;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(reason, DisconnectReason::PeerClosed);
    let out = python(
        &FRAMED_CLIENT.replace("os.environ.get(\"VERSION\", \"\")", "\"1.2\""),
        addr.port(),
    );
    assert_eq!(out.trim(), "TLSv1.2");
    system.shutdown(WAIT);
}

#[test]
fn a_client_without_tls_is_closed_unannounced_and_a_stalled_handshake_blocks_nobody() {
    let (system, addr, rx) = serve(ConnOptions::default());
    // Not TLS at all: a framed packet in the clear.
    let mut plain = client(addr);
    plain
        .write_all(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'])
        .unwrap();
    // Half a handshake: the first bytes of a ClientHello record, then nothing.
    let mut stalled = client(addr);
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // A full client beside them is served at once.
    let out = python(FRAMED_CLIENT, addr.port());
    assert_eq!(out.trim(), "TLSv1.3");
    // The owner heard of the good client only.
    let mut connected = 0;
    while let Ok(seen) = rx.recv_timeout(Duration::from_millis(200)) {
        match seen {
            Seen::Connected(_) => connected += 1,
            Seen::Packet(_) | Seen::Disconnected(_, DisconnectReason::PeerClosed) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(connected, 1, "a socket was announced before its handshake");
    // The plaintext client was closed by the server (after an alert, if any).
    eventually("the plaintext client closed", || {
        let mut b = [0u8; 256];
        plain
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        matches!(std::io::Read::read(&mut plain, &mut b), Ok(0) | Err(_))
            && system.open_sockets() <= 1
    });
    drop(stalled);
    eventually("every socket closed", || system.open_sockets() == 0);
    system.shutdown(WAIT);
}

#[test]
fn a_stalled_handshake_is_reclaimed_by_the_packet_deadline() {
    let options = ConnOptions::default().packet_timeout(Some(Duration::from_millis(200)));
    let (system, addr, _rx) = serve(options);
    let mut stalled = client(addr);
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    eventually("the stalled socket counted", || system.open_sockets() == 1);
    eventually("the stalled socket reclaimed", || {
        system.open_sockets() == 0
    });
    system.shutdown(WAIT);
}

/// A WebSocket client over TLS, by hand on Python's `ssl` socket: handshake, one masked text
/// message, its echo, a close.
#[cfg(feature = "websocket")]
const WSS_CLIENT: &str = r#"
import base64, os, socket, ssl, struct
ctx = ssl.create_default_context(cafile=os.environ["CERT"])
with socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        text = "secure ✓".encode()
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
        h = s.recv(2)
        assert h[0] == 0x81, h
        body = b""
        while len(body) < h[1] & 0x7F:
            body += s.recv(64)
        print(body.decode())
"#;

#[cfg(feature = "websocket")]
#[test]
fn websocket_runs_over_tls() {
    let system = System::builder().workers(1).build().expect("system");
    let (tx, _rx) = mpsc::channel();
    let echo = system.spawn(Echo(tx));
    let acceptor = TlsAcceptor::from_pem_files(CERT, KEY).unwrap();
    let addr = system
        .listen_ws_with(
            any_port(),
            &echo,
            ConnOptions::default().tls(acceptor),
            kendynet::ws::WsOptions::new(),
        )
        .unwrap();
    assert_eq!(python(WSS_CLIENT, addr.port()).trim(), "secure ✓");
    system.shutdown(WAIT);
}

#[test]
fn bad_key_files_are_refused_with_the_path() {
    let err = TlsAcceptor::from_pem_files(CERT, "/nonexistent/key.pem").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
    let err = TlsAcceptor::from_pem_files(KEY, KEY).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
