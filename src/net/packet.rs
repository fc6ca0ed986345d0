//! Packets: [`WPacket`] to write, [`RPacket`] to read, on shared [`bytes`] buffers.
//!
//! # Wire format
//!
//! A packet on the wire is a 4-byte little-endian `u32` payload length ([`HEADER_LEN`] bytes),
//! then the payload. The length does not count the header; a zero-length packet is valid.
//!
//! Typed fields are little-endian with no padding:
//!
//! | field   | encoding                                                              |
//! |---------|-----------------------------------------------------------------------|
//! | `u8`..`u64`, `i8`..`i64` | 1, 2, 4 or 8 bytes, little-endian                    |
//! | `f64`   | the 8 bytes of its IEEE 754 bits, little-endian                       |
//! | binary  | `u32` length, then the bytes                                          |
//! | string  | binary of the UTF-8 bytes plus a trailing NUL; the length counts the NUL |
//!
//! Strings carry their NUL because the C original sent them that way; the two interoperate.
//!
//! # Ownership and copies
//!
//! A [`WPacket`] being written owns a `BytesMut` that already holds a header placeholder, so
//! turning it into a wire frame patches the header in place and copies nothing. Once frozen
//! (by [`WPacket::freeze`], [`WPacket::to_frame`], or because it was made from a received
//! packet) it holds a shared `Bytes` of the whole frame: clones share it, which is how one
//! packet is broadcast to many sockets. Writing to a shared packet copies it once
//! (copy-on-write); the other holders never see the change.
//!
//! An [`RPacket`] holds the whole frame as cut from the receive buffer, without a copy, plus a
//! read cursor. Reading past the end is an error ([`PacketError::Truncated`]), never a silent
//! zero, and a failed read leaves the cursor where it was.

use std::error::Error;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the frame header: the little-endian `u32` payload length.
pub const HEADER_LEN: usize = 4;

/// Default largest payload accepted on receive: 1 MiB.
///
/// A peer that declares a longer packet has its connection closed with
/// [`PacketError::TooLarge`] before any buffer is reserved for the packet. The limit applies to
/// the payload only (the 4-byte header is not counted) and is configurable per connection.
pub const DEFAULT_MAX_PACKET_LEN: usize = 1 << 20;

/// Payload capacity reserved by [`WPacket::new`].
const DEFAULT_PAYLOAD_CAPACITY: usize = 64;

/// The largest payload a packet can carry: its length must fit the `u32` header.
const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// An error reading a packet or decoding a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    /// A read needed more bytes than the packet has left.
    Truncated {
        /// Bytes the read needed.
        needed: usize,
        /// Bytes left in the packet.
        remaining: usize,
    },
    /// A string field did not end with the NUL byte the wire format requires.
    MissingNul,
    /// A string field was not valid UTF-8.
    InvalidUtf8(std::str::Utf8Error),
    /// A declared length is larger than the allowed maximum.
    TooLarge {
        /// The declared length.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, remaining } => write!(
                f,
                "packet truncated: read needs {needed} bytes, {remaining} remain"
            ),
            Self::MissingNul => f.write_str("string field lacks its trailing NUL"),
            Self::InvalidUtf8(_) => f.write_str("string field is not valid UTF-8"),
            Self::TooLarge { len, max } => {
                write!(f, "declared length {len} exceeds the maximum {max}")
            }
        }
    }
}

impl Error for PacketError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::InvalidUtf8(e) => Some(e),
            _ => None,
        }
    }
}

/// Decodes a frame header at the front of `buf`.
///
/// Returns the total frame length (header plus payload) once the header is complete, or `None`
/// while fewer than [`HEADER_LEN`] bytes are buffered. The caller can reserve that much and wait
/// for the rest.
///
/// # Errors
///
/// [`PacketError::TooLarge`] when the declared payload length exceeds `max`; it is checked here,
/// before the caller reserves anything for the packet.
pub(crate) fn parse_header(buf: &[u8], max: usize) -> Result<Option<usize>, PacketError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*header) as usize;
    if len > max {
        return Err(PacketError::TooLarge { len, max });
    }
    // Only overflows on a 32-bit host with `max` near `usize::MAX`; refuse rather than wrap.
    HEADER_LEN
        .checked_add(len)
        .map(Some)
        .ok_or(PacketError::TooLarge { len, max })
}

/// Panics unless a payload of `len + extra` bytes still fits the `u32` header.
fn assert_fits(len: usize, extra: usize) {
    assert!(
        len.checked_add(extra)
            .is_some_and(|total| total <= MAX_PAYLOAD_LEN),
        "packet payload would exceed u32::MAX bytes ({len} + {extra})"
    );
}

/// Storage of a [`WPacket`].
#[derive(Clone)]
enum WBuf {
    /// Being written: header placeholder, then the payload so far.
    Building(BytesMut),
    /// A complete wire frame, header patched, possibly shared with clones and sockets.
    Frozen(Bytes),
}

/// A packet being written.
///
/// Writers append typed fields in wire format and return `&mut Self`, so they chain. The
/// packet becomes a wire frame (header plus payload) with [`into_frame`](Self::into_frame) or
/// [`to_frame`](Self::to_frame), without copying the payload.
///
/// Cloning a frozen packet shares its bytes; cloning one still being written copies it. To
/// send one packet to many sockets, [`freeze`](Self::freeze) it first (or make it from an
/// [`RPacket`], which is already frozen) and clone it per socket. Writing to a shared packet
/// copies it once, leaving the other clones unchanged.
///
/// # Panics
///
/// Every writer panics if the payload would grow beyond `u32::MAX` bytes, which the header
/// cannot express.
///
/// # Examples
///
/// ```
/// use kendynet::WPacket;
///
/// let mut pkt = WPacket::new();
/// pkt.write_u16(0x1234).write_str("hi");
/// assert_eq!(pkt.payload(), &[0x34, 0x12, 3, 0, 0, 0, b'h', b'i', 0]);
///
/// // Broadcast: freeze once, then every clone shares the same bytes.
/// pkt.freeze();
/// let copy = pkt.clone();
/// assert_eq!(copy.payload().as_ptr(), pkt.payload().as_ptr());
/// ```
#[derive(Clone)]
pub struct WPacket {
    buf: WBuf,
    /// Sent as a WebSocket text message (other transports ignore it).
    text: bool,
}

impl WPacket {
    /// Creates an empty packet with a small default capacity.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_PAYLOAD_CAPACITY)
    }

    /// Creates an empty packet with room for `payload_cap` payload bytes before reallocating.
    ///
    /// # Panics
    ///
    /// Panics if `payload_cap + HEADER_LEN` overflows `usize`.
    #[must_use]
    pub fn with_capacity(payload_cap: usize) -> Self {
        let cap = payload_cap
            .checked_add(HEADER_LEN)
            .expect("packet capacity overflows usize");
        let mut buf = BytesMut::with_capacity(cap);
        buf.put_bytes(0, HEADER_LEN);
        Self {
            buf: WBuf::Building(buf),
            text: false,
        }
    }

    /// A packet whose payload is `text`, sent as a text message on a WebSocket (and as any
    /// other packet on the other transports).
    ///
    /// Writers append raw bytes to it as to any packet; whoever appends to a text packet
    /// keeps its payload valid UTF-8 (a peer closes the connection on a text message that is
    /// not).
    ///
    /// ```
    /// use kendynet::WPacket;
    ///
    /// let pkt = WPacket::text("hello");
    /// assert!(pkt.is_text());
    /// assert_eq!(pkt.payload(), b"hello");
    /// ```
    #[must_use]
    pub fn text(text: &str) -> Self {
        let mut pkt = Self::with_capacity(text.len());
        pkt.write_raw(text.as_bytes());
        pkt.text = true;
        pkt
    }

    /// Whether the packet goes out as a WebSocket text message ([`WPacket::text`], or
    /// forwarded from a received text message).
    #[must_use]
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// Length of the payload in bytes (the header is not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.frame_slice().len() - HEADER_LEN
    }

    /// Whether the payload is empty. An empty packet is valid and is sent as a bare header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload written so far, without the header.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.frame_slice()[HEADER_LEN..]
    }

    /// Whether the packet is frozen: a complete wire frame that clones share.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        matches!(self.buf, WBuf::Frozen(_))
    }

    /// Patches the header and freezes the packet, so that clones share its bytes.
    ///
    /// Copies nothing. Does nothing if the packet is already frozen. A later write thaws the
    /// packet again (copying it only if it is still shared).
    pub fn freeze(&mut self) {
        if let WBuf::Building(buf) = &mut self.buf {
            let buf = std::mem::take(buf);
            self.buf = WBuf::Frozen(Self::seal(buf));
        }
    }

    /// Returns the complete wire frame (header plus payload), sharing the packet's bytes.
    ///
    /// Freezes the packet first. The frame is what goes on the wire, so it can be sent as-is
    /// with a raw request of the completion API, or stored and sent many times.
    #[must_use]
    pub fn to_frame(&mut self) -> Bytes {
        self.freeze();
        match &self.buf {
            WBuf::Frozen(frame) => frame.clone(),
            WBuf::Building(_) => unreachable!("freeze leaves the packet frozen"),
        }
    }

    /// Consumes the packet and returns its complete wire frame (header plus payload).
    ///
    /// Copies nothing: the header is patched in place.
    #[must_use]
    pub fn into_frame(self) -> Bytes {
        match self.buf {
            WBuf::Building(buf) => Self::seal(buf),
            WBuf::Frozen(frame) => frame,
        }
    }

    /// Appends a `u8`.
    pub fn write_u8(&mut self, v: u8) -> &mut Self {
        self.write_raw(&[v])
    }

    /// Appends a `u16`, little-endian.
    pub fn write_u16(&mut self, v: u16) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends a `u32`, little-endian.
    pub fn write_u32(&mut self, v: u32) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends a `u64`, little-endian.
    pub fn write_u64(&mut self, v: u64) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends an `i8`.
    pub fn write_i8(&mut self, v: i8) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends an `i16`, little-endian two's complement.
    pub fn write_i16(&mut self, v: i16) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends an `i32`, little-endian two's complement.
    pub fn write_i32(&mut self, v: i32) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends an `i64`, little-endian two's complement.
    pub fn write_i64(&mut self, v: i64) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends an `f64` as the 8 bytes of its IEEE 754 bits, little-endian.
    pub fn write_f64(&mut self, v: f64) -> &mut Self {
        self.write_raw(&v.to_le_bytes())
    }

    /// Appends a binary field: `data.len()` as a `u32`, then the bytes.
    ///
    /// # Panics
    ///
    /// Panics if the payload would exceed `u32::MAX` bytes.
    pub fn write_bytes(&mut self, data: &[u8]) -> &mut Self {
        self.write_prefixed(data, false)
    }

    /// Appends a string field: its UTF-8 bytes plus a trailing NUL, prefixed by their length
    /// as a `u32` (the length counts the NUL).
    ///
    /// # Panics
    ///
    /// Panics if the payload would exceed `u32::MAX` bytes.
    pub fn write_str(&mut self, s: &str) -> &mut Self {
        self.write_prefixed(s.as_bytes(), true)
    }

    /// Appends bytes as they are, with no length prefix.
    ///
    /// # Panics
    ///
    /// Panics if the payload would exceed `u32::MAX` bytes.
    pub fn write_raw(&mut self, data: &[u8]) -> &mut Self {
        assert_fits(self.len(), data.len());
        self.make_mut().put_slice(data);
        self
    }

    fn write_prefixed(&mut self, data: &[u8], nul: bool) -> &mut Self {
        let field_len = data.len() + usize::from(nul);
        assert_fits(self.len(), HEADER_LEN.saturating_add(field_len));
        let buf = self.make_mut();
        buf.reserve(HEADER_LEN + field_len);
        // Cannot truncate: `assert_fits` bounded the whole payload by `u32::MAX`.
        buf.put_u32_le(field_len as u32);
        buf.put_slice(data);
        if nul {
            buf.put_u8(0);
        }
        self
    }

    /// The whole frame; its header is only meaningful once frozen.
    fn frame_slice(&self) -> &[u8] {
        match &self.buf {
            WBuf::Building(buf) => buf,
            WBuf::Frozen(frame) => frame,
        }
    }

    /// The buffer to append to, thawing a frozen packet: without a copy when this packet is
    /// the only holder of its bytes, with one copy otherwise.
    fn make_mut(&mut self) -> &mut BytesMut {
        if let WBuf::Frozen(frame) = &mut self.buf {
            let frame = std::mem::take(frame);
            let buf = frame.try_into_mut().unwrap_or_else(|shared| {
                let mut copy = BytesMut::with_capacity(shared.len() + DEFAULT_PAYLOAD_CAPACITY);
                copy.put_slice(&shared);
                copy
            });
            self.buf = WBuf::Building(buf);
        }
        match &mut self.buf {
            WBuf::Building(buf) => buf,
            WBuf::Frozen(_) => unreachable!("thawed above"),
        }
    }

    /// Patches the header of a built frame and freezes it.
    fn seal(mut buf: BytesMut) -> Bytes {
        // Cannot truncate: every writer checked the payload against `u32::MAX`.
        let len = (buf.len() - HEADER_LEN) as u32;
        buf[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        buf.freeze()
    }
}

impl Default for WPacket {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WPacket")
            .field("len", &self.len())
            .field("frozen", &self.is_frozen())
            .finish_non_exhaustive()
    }
}

/// Forwards a received packet, sharing its bytes.
///
/// A framed packet already holds its wire frame, so nothing is copied. A packet received in raw
/// mode has no header; its payload is copied once behind a new header so that forwarding it
/// still sends a proper frame.
impl From<RPacket> for WPacket {
    fn from(pkt: RPacket) -> Self {
        if pkt.start == HEADER_LEN {
            return Self {
                buf: WBuf::Frozen(pkt.data),
                text: pkt.text,
            };
        }
        let mut wpkt = Self::with_capacity(pkt.data.len());
        wpkt.write_raw(&pkt.data);
        wpkt.freeze();
        wpkt.text = pkt.text;
        wpkt
    }
}

/// A received packet, read field by field.
///
/// Holds the received bytes (shared, never copied) and a read cursor over the payload. Every
/// reader checks that the field is all there; reading past the end returns
/// [`PacketError::Truncated`], and a failed read does not move the cursor.
///
/// # Examples
///
/// ```
/// use kendynet::{PacketError, RPacket};
///
/// let mut pkt = RPacket::from_payload(&[0x34, 0x12, 3, 0, 0, 0, b'h', b'i', 0]);
/// assert_eq!(pkt.read_u16()?, 0x1234);
/// assert_eq!(pkt.read_str()?, "hi");
/// assert_eq!(
///     pkt.read_u8(),
///     Err(PacketError::Truncated { needed: 1, remaining: 0 })
/// );
/// # Ok::<(), PacketError>(())
/// ```
#[derive(Clone)]
pub struct RPacket {
    /// The wire frame (framed mode) or the bare payload (raw mode).
    data: Bytes,
    /// Where the payload starts in `data`: `HEADER_LEN` when framed, 0 in raw mode.
    start: usize,
    /// Read cursor, relative to the payload.
    pos: usize,
    /// It arrived as a WebSocket text message (valid UTF-8).
    text: bool,
}

impl RPacket {
    /// Wraps a complete wire frame (header plus payload) cut from a receive buffer.
    pub(crate) fn from_frame(frame: Bytes) -> Self {
        debug_assert!(
            matches!(
                parse_header(&frame, usize::MAX),
                Ok(Some(len)) if len == frame.len()
            ),
            "frame header does not match the frame length"
        );
        Self {
            data: frame,
            start: HEADER_LEN,
            pos: 0,
            text: false,
        }
    }

    /// Marks a packet as a received WebSocket text message.
    #[cfg(feature = "websocket")]
    pub(crate) fn into_text(mut self) -> Self {
        self.text = true;
        self
    }

    /// Whether the packet arrived as a WebSocket text message (its payload is then valid
    /// UTF-8: see [`RPacket::as_text`]). Always false on the other transports.
    #[must_use]
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The payload of a text message as a string; `None` for any other packet.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        if self.text {
            std::str::from_utf8(self.payload()).ok()
        } else {
            None
        }
    }

    /// Wraps one read of a raw-mode connection: the bytes are the payload, with no header.
    #[allow(
        dead_code,
        reason = "the raw-mode connection calls it; drop this once it is wired"
    )]
    pub(crate) fn from_raw(bytes: Bytes) -> Self {
        Self {
            data: bytes,
            start: 0,
            pos: 0,
            text: false,
        }
    }

    /// Builds a packet from a payload, copying it behind a new header.
    ///
    /// For tests, and to feed bytes obtained elsewhere through the packet readers.
    ///
    /// # Panics
    ///
    /// Panics if `payload` is longer than `u32::MAX` bytes.
    #[must_use]
    pub fn from_payload(payload: &[u8]) -> Self {
        let mut wpkt = WPacket::with_capacity(payload.len());
        wpkt.write_raw(payload);
        Self::from_frame(wpkt.into_frame())
    }

    /// Length of the payload in bytes (the header is not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole payload, regardless of the read cursor.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// The whole payload as shared `Bytes`, without a copy.
    #[must_use]
    pub fn payload_bytes(&self) -> Bytes {
        self.data.slice(self.start..)
    }

    /// Bytes left to read after the cursor.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.len() - self.pos
    }

    /// The read cursor: how many payload bytes have been read.
    #[must_use]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves the read cursor back to the start of the payload.
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// Reads a `u8`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if no byte is left.
    pub fn read_u8(&mut self) -> Result<u8, PacketError> {
        self.read_array().map(u8::from_le_bytes)
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 2 bytes are left.
    pub fn read_u16(&mut self) -> Result<u16, PacketError> {
        self.read_array().map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 4 bytes are left.
    pub fn read_u32(&mut self) -> Result<u32, PacketError> {
        self.read_array().map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 8 bytes are left.
    pub fn read_u64(&mut self) -> Result<u64, PacketError> {
        self.read_array().map(u64::from_le_bytes)
    }

    /// Reads an `i8`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if no byte is left.
    pub fn read_i8(&mut self) -> Result<i8, PacketError> {
        self.read_array().map(i8::from_le_bytes)
    }

    /// Reads a little-endian `i16`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 2 bytes are left.
    pub fn read_i16(&mut self) -> Result<i16, PacketError> {
        self.read_array().map(i16::from_le_bytes)
    }

    /// Reads a little-endian `i32`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 4 bytes are left.
    pub fn read_i32(&mut self) -> Result<i32, PacketError> {
        self.read_array().map(i32::from_le_bytes)
    }

    /// Reads a little-endian `i64`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 8 bytes are left.
    pub fn read_i64(&mut self) -> Result<i64, PacketError> {
        self.read_array().map(i64::from_le_bytes)
    }

    /// Reads an `f64` from the 8 little-endian bytes of its IEEE 754 bits.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than 8 bytes are left.
    pub fn read_f64(&mut self) -> Result<f64, PacketError> {
        self.read_array().map(f64::from_le_bytes)
    }

    /// Reads a binary field (`u32` length, then the bytes) as a shared slice of the packet.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if the length prefix or the bytes it announces are not all
    /// there.
    pub fn read_bytes(&mut self) -> Result<Bytes, PacketError> {
        let (at, len) = self.peek_prefixed()?;
        self.pos += HEADER_LEN + len;
        Ok(self.data.slice(at..at + len))
    }

    /// Reads a string field and returns it without its trailing NUL, borrowed from the packet.
    ///
    /// The string borrows the packet; use [`read_string`](Self::read_string) to keep reading
    /// while holding it. Only the final byte must be NUL; a NUL inside the string is kept.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if the field is not all there, [`PacketError::MissingNul`] if
    /// it does not end with NUL, [`PacketError::InvalidUtf8`] if the bytes before the NUL are
    /// not UTF-8. The cursor does not move on error.
    pub fn read_str(&mut self) -> Result<&str, PacketError> {
        let (at, len) = self.peek_prefixed()?;
        let field = &self.data[at..at + len];
        let Some((0, text)) = field.split_last() else {
            return Err(PacketError::MissingNul);
        };
        let text = std::str::from_utf8(text).map_err(PacketError::InvalidUtf8)?;
        self.pos += HEADER_LEN + len;
        Ok(text)
    }

    /// Reads a string field like [`read_str`](Self::read_str), returning an owned copy.
    ///
    /// # Errors
    ///
    /// As [`read_str`](Self::read_str).
    pub fn read_string(&mut self) -> Result<String, PacketError> {
        self.read_str().map(str::to_owned)
    }

    /// Reads the next `n` bytes as they are, with no length prefix, as a shared slice.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] if fewer than `n` bytes are left.
    pub fn read_raw(&mut self, n: usize) -> Result<Bytes, PacketError> {
        let at = self.take(n)?;
        Ok(self.data.slice(at..at + n))
    }

    /// Checks that `n` more bytes are there, advances past them and returns their offset in
    /// `data`.
    fn take(&mut self, n: usize) -> Result<usize, PacketError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(PacketError::Truncated {
                needed: n,
                remaining,
            });
        }
        let at = self.start + self.pos;
        self.pos += n;
        Ok(at)
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], PacketError> {
        let at = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.data[at..at + N]);
        Ok(out)
    }

    /// Locates a length-prefixed field at the cursor without moving it: the offset of its bytes
    /// in `data` and their length.
    fn peek_prefixed(&self) -> Result<(usize, usize), PacketError> {
        let remaining = self.remaining();
        let at = self.start + self.pos;
        let Some(prefix) = self.data[at..].first_chunk::<HEADER_LEN>() else {
            return Err(PacketError::Truncated {
                needed: HEADER_LEN,
                remaining,
            });
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        let needed = HEADER_LEN.saturating_add(len);
        if needed > remaining {
            return Err(PacketError::Truncated { needed, remaining });
        }
        Ok((at + HEADER_LEN, len))
    }
}

impl fmt::Debug for RPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RPacket")
            .field("len", &self.len())
            .field("position", &self.pos)
            .field("raw", &(self.start == 0))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(payload: &[u8]) -> Bytes {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        Bytes::from(v)
    }

    #[test]
    fn parse_header_needs_four_bytes() {
        assert_eq!(parse_header(&[], 100), Ok(None));
        assert_eq!(parse_header(&[5, 0, 0], 100), Ok(None));
        assert_eq!(parse_header(&[5, 0, 0, 0], 100), Ok(Some(9)));
        assert_eq!(parse_header(&[0, 0, 0, 0, 1, 2], 100), Ok(Some(4)));
    }

    #[test]
    fn parse_header_refuses_too_large_before_the_payload_arrives() {
        assert_eq!(parse_header(&[100, 0, 0, 0], 100), Ok(Some(104)));
        assert_eq!(
            parse_header(&[101, 0, 0, 0], 100),
            Err(PacketError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            parse_header(&[0xff, 0xff, 0xff, 0xff], DEFAULT_MAX_PACKET_LEN),
            Err(PacketError::TooLarge {
                len: u32::MAX as usize,
                max: DEFAULT_MAX_PACKET_LEN
            })
        );
    }

    #[test]
    fn into_frame_patches_the_header_in_place() {
        let mut w = WPacket::with_capacity(16);
        w.write_u32(1).write_u8(2);
        let before = w.payload().as_ptr();
        let frame = w.into_frame();
        assert_eq!(&frame[..], &[5, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(frame[HEADER_LEN..].as_ptr(), before);
    }

    #[test]
    fn from_frame_reads_the_payload_without_copying() {
        let frame = frame_of(&[7, 8, 9]);
        let mut r = RPacket::from_frame(frame.clone());
        assert_eq!(r.payload(), &[7, 8, 9]);
        assert_eq!(r.payload().as_ptr(), frame[HEADER_LEN..].as_ptr());
        let raw = r.read_raw(2).unwrap();
        assert_eq!(raw.as_ptr(), frame[HEADER_LEN..].as_ptr());
    }

    #[test]
    fn rpacket_into_wpacket_shares_the_frame() {
        let frame = frame_of(b"forward me");
        let r = RPacket::from_frame(frame.clone());
        let w = WPacket::from(r);
        assert!(w.is_frozen());
        assert_eq!(w.payload(), b"forward me");
        let out = w.into_frame();
        assert_eq!(out, frame);
        assert_eq!(out.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn raw_rpacket_into_wpacket_builds_a_frame() {
        let r = RPacket::from_raw(Bytes::from_static(b"abc"));
        assert_eq!(r.payload(), b"abc");
        assert_eq!(r.len(), 3);
        let frame = WPacket::from(r).into_frame();
        assert_eq!(&frame[..], &[3, 0, 0, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn raw_rpacket_reads_from_the_first_byte() {
        let mut r = RPacket::from_raw(Bytes::from_static(&[1, 0, 2]));
        assert_eq!(r.read_u16(), Ok(1));
        assert_eq!(r.read_u8(), Ok(2));
        assert!(r.read_u8().is_err());
    }

    #[test]
    fn broadcast_clones_share_one_frame() {
        let mut w = WPacket::new();
        w.write_str("to everyone");
        let frames: Vec<Bytes> = (0..3).map(|_| w.clone().into_frame()).collect();
        // Clones of an unfrozen packet copy; freeze first for sharing.
        assert_ne!(frames[0].as_ptr(), frames[1].as_ptr());

        w.freeze();
        let shared: Vec<Bytes> = (0..3).map(|_| w.clone().into_frame()).collect();
        let original = w.to_frame();
        for f in &shared {
            assert_eq!(f.as_ptr(), original.as_ptr());
            assert_eq!(f, &frames[0]);
        }
    }

    #[test]
    fn writing_to_a_unique_frozen_packet_does_not_copy() {
        let mut w = WPacket::with_capacity(64);
        w.write_u8(1);
        w.freeze();
        let before = w.payload().as_ptr();
        w.write_u8(2);
        assert!(!w.is_frozen());
        assert_eq!(w.payload().as_ptr(), before);
        assert_eq!(&w.into_frame()[..], &[2, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn writing_to_a_shared_packet_copies_once() {
        let mut a = WPacket::new();
        a.write_u8(1);
        let frame = a.to_frame();
        a.write_u8(2);
        assert_ne!(a.payload().as_ptr(), frame[HEADER_LEN..].as_ptr());
        assert_eq!(&frame[..], &[1, 0, 0, 0, 1]);
        assert_eq!(&a.into_frame()[..], &[2, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn failed_reads_leave_the_cursor() {
        // A binary field announcing 10 bytes with only 2 present.
        let mut r = RPacket::from_payload(&[1, 10, 0, 0, 0, 1, 2]);
        assert_eq!(r.read_u8(), Ok(1));
        assert_eq!(
            r.read_bytes(),
            Err(PacketError::Truncated {
                needed: 14,
                remaining: 6
            })
        );
        assert_eq!(r.position(), 1);
        assert_eq!(
            r.read_str(),
            Err(PacketError::Truncated {
                needed: 14,
                remaining: 6
            })
        );
        assert_eq!(r.position(), 1);
        assert!(r.read_u64().is_err());
        assert_eq!(r.position(), 1);
        assert_eq!(r.read_u32(), Ok(10));
    }

    #[test]
    fn huge_declared_field_length_does_not_overflow() {
        let mut r = RPacket::from_payload(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            r.read_bytes(),
            Err(PacketError::Truncated {
                needed: HEADER_LEN + u32::MAX as usize,
                remaining: 4
            })
        );
    }

    #[test]
    fn payload_limit_is_u32_max() {
        assert_fits(0, MAX_PAYLOAD_LEN);
        assert_fits(MAX_PAYLOAD_LEN - 4, 4);
        assert!(std::panic::catch_unwind(|| assert_fits(MAX_PAYLOAD_LEN, 1)).is_err());
        assert!(std::panic::catch_unwind(|| assert_fits(usize::MAX, 1)).is_err());
    }

    #[test]
    fn errors_display_and_chain() {
        let e = PacketError::TooLarge { len: 5, max: 4 };
        assert_eq!(e.to_string(), "declared length 5 exceeds the maximum 4");
        let utf8 = String::from_utf8(vec![0xff]).unwrap_err().utf8_error();
        assert!(PacketError::InvalidUtf8(utf8).source().is_some());
        assert!(PacketError::MissingNul.source().is_none());
    }

    #[test]
    fn debug_shows_lengths_not_contents() {
        let mut w = WPacket::new();
        w.write_raw(&[0xab; 1000]);
        let s = format!("{w:?}");
        assert_eq!(s, "WPacket { len: 1000, frozen: false, .. }");
        let mut r = RPacket::from_payload(&[0; 1000]);
        r.read_u8().unwrap();
        assert_eq!(
            format!("{r:?}"),
            "RPacket { len: 1000, position: 1, raw: false, .. }"
        );
    }
}
