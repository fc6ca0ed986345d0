//! A WebSocket connection's protocol state, which the framed connection consults while it
//! cuts packets out of its receive buffer: the handshake, then frames.

use super::frame::{self, Item, OP_PONG, Reader};
use super::handshake::{self, Outcome};
use super::{WsOptions, close_code};
use crate::net::DisconnectReason;
use crate::net::packet::RPacket;
use bytes::{Bytes, BytesMut};

/// What the connection must do with what was cut.
#[derive(Debug)]
pub(crate) enum WsCut {
    /// Deliver a message.
    Packet(RPacket),
    /// Queue these bytes (a pong), and go on cutting.
    Reply(Bytes),
    /// The handshake succeeded: queue the response; the connection is open from now on.
    Opened(Bytes),
    /// Queue these bytes (a close frame, or the answer to a refused request), then close
    /// gracefully and report `reason`.
    Close(Bytes, DisconnectReason),
}

/// The protocol state of one WebSocket connection.
pub(crate) struct WsSession {
    options: WsOptions,
    reader: Reader,
    /// The handshake is done.
    open: bool,
    /// A close frame has been queued: nothing more may be sent.
    close_sent: bool,
}

impl WsSession {
    pub(crate) fn new(options: WsOptions) -> WsSession {
        WsSession {
            reader: Reader::new(options.max_message_len),
            options,
            open: false,
            close_sent: false,
        }
    }

    /// Whether messages may be sent: the handshake is done and no close frame was sent.
    #[inline]
    pub(crate) fn accepts_messages(&self) -> bool {
        self.open && !self.close_sent
    }

    /// Whether the handshake is done.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// The length of the frame at the start of `buf`, once its header is there.
    pub(crate) fn declared(&self, buf: &[u8]) -> Option<usize> {
        if self.open {
            Reader::declared(buf)
        } else {
            None
        }
    }

    /// The next thing to do with the bytes in `buf`, or `None` until more arrive.
    pub(crate) fn cut(&mut self, buf: &mut BytesMut) -> Option<WsCut> {
        if buf.is_empty() {
            return None;
        }
        if !self.open {
            return match handshake::read(buf, &self.options) {
                Outcome::Incomplete => None,
                Outcome::Upgrade(response) => {
                    self.open = true;
                    Some(WsCut::Opened(response))
                }
                Outcome::Answer(status, response) => {
                    self.close_sent = true;
                    Some(WsCut::Close(
                        response,
                        DisconnectReason::Handshake { status },
                    ))
                }
            };
        }
        // Pongs are skipped (a loop, not recursion: a buffer may hold thousands of them).
        let next = loop {
            match self.reader.next(buf) {
                Ok(Some(Item::Pong)) => continue,
                other => break other,
            }
        };
        match next {
            Ok(None) => None,
            Ok(Some(Item::Message(packet))) => Some(WsCut::Packet(packet)),
            Ok(Some(Item::Ping(payload))) => {
                Some(WsCut::Reply(frame::control_frame(OP_PONG, &payload)))
            }
            Ok(Some(Item::Pong)) => unreachable!("skipped above"),
            Ok(Some(Item::Close(code))) => {
                self.close_sent = true;
                // 1005 (no code) is answered with 1000; a valid code is echoed.
                let echo = if close_code::is_valid(code) {
                    code
                } else {
                    close_code::NORMAL
                };
                Some(WsCut::Close(
                    frame::close_frame(echo),
                    DisconnectReason::WebSocket {
                        code,
                        by_peer: true,
                    },
                ))
            }
            Err(code) => {
                self.close_sent = true;
                Some(WsCut::Close(
                    frame::close_frame(code),
                    DisconnectReason::WebSocket {
                        code,
                        by_peer: false,
                    },
                ))
            }
        }
    }

    /// The close frame of a local close (1000), unless one was sent or the handshake is not
    /// done.
    pub(crate) fn local_close(&mut self) -> Option<Bytes> {
        if !self.open || self.close_sent {
            return None;
        }
        self.close_sent = true;
        Some(frame::close_frame(close_code::NORMAL))
    }
}
