//! WebSocket frames, server side: the reader of client frames (masked, possibly fragmented)
//! and the encoder of server frames (unmasked).

use crate::net::packet::{HEADER_LEN, RPacket};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::close_code;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The most payload a control frame may carry.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The header of an unmasked, final frame of `len` payload bytes.
pub(crate) fn frame_header(opcode: u8, len: usize) -> Bytes {
    let mut h = BytesMut::with_capacity(10);
    h.put_u8(0x80 | opcode);
    if len < 126 {
        h.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        h.put_u8(126);
        h.put_u16(len as u16);
    } else {
        h.put_u8(127);
        h.put_u64(len as u64);
    }
    h.freeze()
}

/// A whole control frame (header and payload, at most 125 bytes of it).
pub(crate) fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
    let mut f = BytesMut::with_capacity(2 + payload.len());
    f.put_u8(0x80 | opcode);
    f.put_u8(payload.len() as u8);
    f.put_slice(payload);
    f.freeze()
}

/// A close frame with `code` and no reason.
pub(crate) fn close_frame(code: u16) -> Bytes {
    control_frame(OP_CLOSE, &code.to_be_bytes())
}

/// What the reader cut from the receive buffer.
#[derive(Debug)]
pub(crate) enum Item {
    /// A whole message.
    Message(RPacket),
    /// A ping, with its payload (to be echoed in a pong).
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// A close frame, with its code ([`close_code::NO_STATUS`] when it had none).
    Close(u16),
}

/// A message being reassembled from fragments.
struct Partial {
    text: bool,
    /// A length-framed frame under construction: header placeholder, then the payload.
    buf: BytesMut,
}

/// Reads client frames.
pub(crate) struct Reader {
    max_message_len: usize,
    partial: Option<Partial>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes, the masking key included.
    len: usize,
    mask: [u8; 4],
    payload: usize,
}

impl Reader {
    pub(crate) fn new(max_message_len: usize) -> Reader {
        Reader {
            max_message_len,
            partial: None,
        }
    }

    /// The total length of the frame at the start of `buf` once its header is there, for
    /// sizing the next read.
    pub(crate) fn declared(buf: &[u8]) -> Option<usize> {
        match parse_header(buf) {
            Ok(Some(h)) => Some(h.len + h.payload),
            _ => None,
        }
    }

    /// Cuts the next item out of `buf`: `Ok(None)` until a whole frame has arrived (or when
    /// a fragment was consumed and no message is complete yet: call again), `Err(code)` on a
    /// violation, with the close code to send.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, u16> {
        loop {
            let Some(h) = parse_header(buf)? else {
                return Ok(None);
            };
            let control = h.opcode >= 0x8;
            if control {
                if !h.fin || h.payload > MAX_CONTROL_PAYLOAD {
                    return Err(close_code::PROTOCOL_ERROR);
                }
            } else {
                let so_far = self
                    .partial
                    .as_ref()
                    .map_or(0, |p| p.buf.len() - HEADER_LEN);
                match (h.opcode, &self.partial) {
                    (OP_CONTINUATION, None) => return Err(close_code::PROTOCOL_ERROR),
                    (OP_TEXT | OP_BINARY, Some(_)) => return Err(close_code::PROTOCOL_ERROR),
                    _ => {}
                }
                if h.payload > self.max_message_len - so_far {
                    return Err(close_code::MESSAGE_TOO_BIG);
                }
            }
            if buf.len() < h.len + h.payload {
                return Ok(None);
            }
            unmask(&mut buf[h.len..h.len + h.payload], h.mask);
            if control {
                buf.advance(h.len);
                let payload = buf.split_to(h.payload).freeze();
                return match h.opcode {
                    OP_PING => Ok(Some(Item::Ping(payload))),
                    OP_PONG => Ok(Some(Item::Pong)),
                    _ => close_item(&payload).map(Some),
                };
            }
            if h.fin && self.partial.is_none() {
                // A whole message in one frame: the masking key's four bytes, just before the
                // payload, become the packet's length header, so the packet shares the receive
                // buffer like a framed one.
                let text = h.opcode == OP_TEXT;
                if text && std::str::from_utf8(&buf[h.len..h.len + h.payload]).is_err() {
                    return Err(close_code::INVALID_PAYLOAD);
                }
                let at = h.len - HEADER_LEN;
                buf[at..h.len].copy_from_slice(&(h.payload as u32).to_le_bytes());
                buf.advance(at);
                let packet = RPacket::from_frame(buf.split_to(HEADER_LEN + h.payload).freeze());
                return Ok(Some(Item::Message(mark(packet, text))));
            }
            let partial = self.partial.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(HEADER_LEN + h.payload * 2);
                b.put_bytes(0, HEADER_LEN);
                Partial {
                    text: h.opcode == OP_TEXT,
                    buf: b,
                }
            });
            partial.buf.put_slice(&buf[h.len..h.len + h.payload]);
            buf.advance(h.len + h.payload);
            if !h.fin {
                continue;
            }
            let Partial { text, mut buf } = self.partial.take().expect("just filled");
            let len = (buf.len() - HEADER_LEN) as u32;
            buf[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            if text && std::str::from_utf8(&buf[HEADER_LEN..]).is_err() {
                return Err(close_code::INVALID_PAYLOAD);
            }
            let packet = RPacket::from_frame(buf.freeze());
            return Ok(Some(Item::Message(mark(packet, text))));
        }
    }
}

fn mark(packet: RPacket, text: bool) -> RPacket {
    if text { packet.into_text() } else { packet }
}

/// The code of a close frame's payload, checked: a code the RFC allows on the wire and a
/// UTF-8 reason.
fn close_item(payload: &[u8]) -> Result<Item, u16> {
    match payload {
        [] => Ok(Item::Close(close_code::NO_STATUS)),
        [_] => Err(close_code::PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code::is_valid(code) {
                return Err(close_code::PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(close_code::INVALID_PAYLOAD);
            }
            Ok(Item::Close(code))
        }
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` while incomplete, `Err(code)` for a
/// frame no server may accept (reserved bits or opcodes, no mask, a 64-bit length with its
/// top bit set).
fn parse_header(buf: &[u8]) -> Result<Option<Header>, u16> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(close_code::PROTOCOL_ERROR); // no extension was negotiated
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(close_code::PROTOCOL_ERROR);
    }
    if b1 & 0x80 == 0 {
        return Err(close_code::PROTOCOL_ERROR); // clients must mask
    }
    let (payload, ext) = match b1 & 0x7F {
        126 => match rest.first_chunk::<2>() {
            Some(b) => (u16::from_be_bytes(*b) as u64, 2),
            None => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(b) => (u64::from_be_bytes(*b), 8),
            None => return Ok(None),
        },
        n => (n as u64, 0),
    };
    if payload >> 63 != 0 {
        return Err(close_code::PROTOCOL_ERROR);
    }
    let Some(mask) = rest.get(ext..ext + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        len: 2 + ext + 4,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        // Saturates on 32-bit targets; the size check refuses it then.
        payload: usize::try_from(payload).unwrap_or(usize::MAX),
    }))
}

/// XORs `data` with the repeated masking key: 64 bytes at a time against a 64-byte copy of
/// the key, a loop the compiler turns into vector instructions, then the tail.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let mut wide = [0u8; 64];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = mask[i % 4];
    }
    let mut chunks = data.chunks_exact_mut(64);
    for chunk in &mut chunks {
        for (b, m) in chunk.iter_mut().zip(wide.iter()) {
            *b ^= m;
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(wide.iter()) {
        *b ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn read_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Item>, u16> {
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = reader.next(&mut buf)? {
            items.push(item);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok(items)
    }

    #[test]
    fn messages_of_every_length_form_arrive_whole_and_shared() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut r = Reader::new(1 << 20);
            let items = read_all(
                &mut r,
                &client_frame(true, OP_BINARY, &payload, [1, 2, 3, 4]),
            )
            .unwrap();
            let [Item::Message(p)] = &items[..] else {
                panic!("{items:?}")
            };
            assert_eq!(p.payload(), &payload[..], "length {len}");
            assert!(!p.is_text());
        }
    }

    #[test]
    fn fragments_reassemble_with_controls_between_them() {
        let m = [9, 8, 7, 6];
        let mut bytes = client_frame(false, OP_TEXT, "hé".as_bytes(), m);
        bytes.extend(client_frame(true, OP_PING, b"p", m));
        bytes.extend(client_frame(false, OP_CONTINUATION, "llo ".as_bytes(), m));
        bytes.extend(client_frame(true, OP_CONTINUATION, "wörld".as_bytes(), m));
        let items = read_all(&mut Reader::new(1 << 20), &bytes).unwrap();
        match &items[..] {
            [Item::Ping(p), Item::Message(msg)] => {
                assert_eq!(&p[..], b"p");
                assert_eq!(msg.as_text(), Some("héllo wörld"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_split_across_reads_waits_for_its_last_byte() {
        let bytes = client_frame(true, OP_TEXT, b"hello", [5, 5, 5, 5]);
        let mut r = Reader::new(1 << 20);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let item = r.next(&mut buf).unwrap();
            assert_eq!(item.is_some(), i == bytes.len() - 1, "after byte {i}");
        }
    }

    #[test]
    fn each_violation_gets_its_close_code() {
        let m = [1, 1, 1, 1];
        let unmasked = vec![0x82, 0x01, 0x00];
        let mut rsv = client_frame(true, OP_BINARY, b"x", m);
        rsv[0] |= 0x40;
        let reserved_op = client_frame(true, 0x3, b"x", m);
        let long_ping = client_frame(true, OP_PING, &[0; 126], m);
        let fragmented_ping = client_frame(false, OP_PING, b"x", m);
        let lone_continuation = client_frame(true, OP_CONTINUATION, b"x", m);
        let mut interleaved = client_frame(false, OP_BINARY, b"x", m);
        interleaved.extend(client_frame(true, OP_TEXT, b"y", m));
        let bad_utf8 = client_frame(true, OP_TEXT, &[0xC3, 0x28], m);
        let mut bad_utf8_fragmented = client_frame(false, OP_TEXT, &[0xE2, 0x82], m);
        bad_utf8_fragmented.extend(client_frame(true, OP_CONTINUATION, &[0x28], m));
        let too_big = client_frame(true, OP_BINARY, &[0; 1025], m);
        let mut too_big_in_parts = client_frame(false, OP_BINARY, &[0; 1000], m);
        too_big_in_parts.extend(client_frame(true, OP_CONTINUATION, &[0; 25], m));
        let short_close = client_frame(true, OP_CLOSE, &[3], m);
        let bad_code = client_frame(true, OP_CLOSE, &1004u16.to_be_bytes(), m);
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xFF);
        let bad_reason = client_frame(true, OP_CLOSE, &bad_reason, m);
        let cases: [(&str, &[u8], u16); 14] = [
            ("unmasked", &unmasked, 1002),
            ("reserved bit", &rsv, 1002),
            ("reserved opcode", &reserved_op, 1002),
            ("126-byte ping", &long_ping, 1002),
            ("fragmented ping", &fragmented_ping, 1002),
            ("continuation first", &lone_continuation, 1002),
            ("new message mid-fragments", &interleaved, 1002),
            ("invalid UTF-8", &bad_utf8, 1007),
            ("invalid UTF-8 in fragments", &bad_utf8_fragmented, 1007),
            ("over the limit", &too_big, 1009),
            ("over the limit in parts", &too_big_in_parts, 1009),
            ("one-byte close", &short_close, 1002),
            ("reserved close code", &bad_code, 1002),
            ("close reason not UTF-8", &bad_reason, 1007),
        ];
        for (what, bytes, code) in cases {
            let mut r = Reader::new(1024);
            assert_eq!(read_all(&mut r, bytes).err(), Some(code), "{what}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let mut r = Reader::new(1 << 20);
        assert_eq!(r.next(&mut BytesMut::from(&header[..])).err(), Some(1009));
    }

    #[test]
    fn close_frames_carry_their_code() {
        let m = [2, 4, 6, 8];
        let mut with_reason = 4001u16.to_be_bytes().to_vec();
        with_reason.extend_from_slice("bye".as_bytes());
        let items = read_all(
            &mut Reader::new(64),
            &[
                client_frame(true, OP_CLOSE, &with_reason, m),
                client_frame(true, OP_CLOSE, &[], m),
            ]
            .concat(),
        )
        .unwrap();
        assert!(matches!(items[..], [Item::Close(4001), Item::Close(1005)]));
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(&frame_header(OP_TEXT, 5)[..], &[0x81, 5]);
        assert_eq!(&frame_header(OP_BINARY, 126)[..], &[0x82, 126, 0, 126]);
        assert_eq!(
            &frame_header(OP_BINARY, 65536)[..],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(&close_frame(1000)[..], &[0x88, 2, 0x03, 0xE8]);
    }
}
