//! A blocking std client and the wire format spoken over it: each packet is a little-endian
//! `u32` payload length, then the payload.
//!
//! Reads and writes are bounded by the client's timeouts ([`WAIT`]), so a server that stays
//! silent fails the test with an error instead of hanging it.

use super::WAIT;
use kendynet::WPacket;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A blocking std client with read and write timeouts of [`WAIT`] and `TCP_NODELAY`.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("client connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// The wire frame of `payload`: a little-endian `u32` length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Writes one frame.
pub fn write_frame(s: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    s.write_all(&frame(payload))
}

/// Reads one frame and returns its payload; `Ok(None)` at a clean end of stream before a
/// header. A timeout, or an end of stream inside a frame, is an error.
pub fn read_frame_or_eof(s: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut payload = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Reads one frame and returns its payload; any end of stream is an error
/// (`UnexpectedEof`), as is a timeout.
pub fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    read_frame_or_eof(s)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// Reads one frame that must be there, failing the test otherwise.
#[track_caller]
pub fn expect_frame(s: &mut TcpStream) -> Vec<u8> {
    match read_frame_or_eof(s) {
        Ok(Some(p)) => p,
        Ok(None) => panic!("expected a frame, got end of stream"),
        Err(e) => panic!("expected a frame, got {e}"),
    }
}

/// Reads frames until the stream ends, cleanly or by a reset, and returns them; an error
/// (such as a timeout after [`WAIT`]) otherwise.
pub fn read_until_closed(s: &mut TcpStream) -> io::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    loop {
        match read_frame_or_eof(s) {
            Ok(Some(p)) => frames.push(p),
            Ok(None) => return Ok(frames),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Ok(frames);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asserts that the next read sees a clean end of stream: no byte, and no reset. Stricter than
/// [`expect_closed`].
#[track_caller]
pub fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected end of stream, got {n} bytes: {:?}", &buf[..n]),
        Err(e) => panic!("expected end of stream, got {e}"),
    }
}

/// Asserts that the next read sees the end of the stream or a reset (a server that closes a
/// connection with unread input resets it, which is still "closed" to the client); `what`
/// names the client in the failure.
#[track_caller]
pub fn expect_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected the connection closed, read {n} bytes"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected the connection closed, got {e}"),
    }
}

/// Waits (bounded by the read timeout) until the peer's bytes are in this socket's receive
/// buffer, without consuming them.
#[track_caller]
pub fn wait_readable(s: &TcpStream) {
    let mut b = [0u8; 1];
    let n = s.peek(&mut b).expect("peek: nothing arrived");
    assert_eq!(n, 1, "peek saw end of stream, expected data");
}

/// Closes `s` so that the peer sees a reset rather than an end of stream: data the peer sent
/// is left unread here, and closing a TCP socket with unread input sends RST (RFC 2525).
/// Waits first until that data has really arrived, so the reset does not depend on timing.
#[track_caller]
pub fn close_with_reset(s: TcpStream) {
    wait_readable(&s);
    drop(s);
}

/// A numbered payload: `client` and `seq` (little-endian `u32`s), then `pad` filler bytes
/// derived from `seq`, so that [`parse_numbered`] can tell a packet's origin, its place and
/// whether its bytes were damaged.
pub fn numbered(client: u32, seq: u32, pad: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + pad);
    v.extend_from_slice(&client.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..pad).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seq as u8)));
    v
}

/// `(client, seq)` of a [`numbered`] payload, failing the test if its filler is damaged.
#[track_caller]
pub fn parse_numbered(p: &[u8]) -> (u32, u32) {
    assert!(p.len() >= 8, "short numbered payload: {p:?}");
    let client = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    for (i, b) in p[8..].iter().enumerate() {
        assert_eq!(
            *b,
            (i as u8).wrapping_mul(31).wrapping_add(seq as u8),
            "corrupt filler in packet {seq} of client {client}"
        );
    }
    (client, seq)
}

/// A packet whose payload is [`numbered`].
pub fn numbered_packet(client: u32, seq: u32, pad: usize) -> WPacket {
    let mut p = WPacket::new();
    p.write_raw(&numbered(client, seq, pad));
    p
}
