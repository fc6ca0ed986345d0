//! How a connection puts a packet on the wire: the crate's length framing, raw bytes, or
//! WebSocket messages. Packets are encoded once as length-framed frames (header plus
//! payload); each framing turns such a frame into what its socket writes, sharing the payload
//! (a WebSocket adds a frame header of its own, the only bytes made per socket).

use super::packet::HEADER_LEN;
use bytes::Bytes;

/// A connection's wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Framing {
    /// A little-endian `u32` length, then the payload.
    #[default]
    Length,
    /// The payload alone (raw mode).
    Raw,
    /// One WebSocket message per packet (RFC 6455).
    #[cfg(feature = "websocket")]
    WebSocket,
}

impl Framing {
    /// What to write for `frame` (a length-framed frame, header included): an optional
    /// prefix, then the bytes of `frame` it keeps (shared, not copied). `text`: a text
    /// message, where that means something.
    #[inline]
    pub(crate) fn wire(self, frame: Bytes, text: bool) -> (Option<Bytes>, Bytes) {
        #[cfg(not(feature = "websocket"))]
        let _ = text;
        match self {
            Framing::Length => (None, frame),
            Framing::Raw => (None, frame.slice(HEADER_LEN..)),
            #[cfg(feature = "websocket")]
            Framing::WebSocket => {
                let payload = frame.slice(HEADER_LEN..);
                let opcode = if text {
                    super::ws::OP_TEXT
                } else {
                    super::ws::OP_BINARY
                };
                (
                    Some(super::ws::frame_header(opcode, payload.len())),
                    payload,
                )
            }
        }
    }

    /// Whether it is the WebSocket framing.
    #[inline]
    pub(crate) fn is_websocket(self) -> bool {
        #[cfg(feature = "websocket")]
        if self == Framing::WebSocket {
            return true;
        }
        false
    }
}
