//! WebSocket (RFC 6455) as a transport of framed connections, server side (cargo feature
//! `websocket`).
//!
//! A WebSocket connection carries the same packets as a framed TCP connection: each message
//! received is one [`RPacket`](crate::RPacket) (its whole payload, however the peer
//! fragmented it; [`RPacket::is_text`](crate::RPacket::is_text) tells a text message), and
//! each packet sent is one message (binary, or text for [`WPacket::text`](crate::WPacket::text)
//! packets). At layer 3 the owner gets `Connected` after the handshake, a `Packet` per
//! message, and `Disconnected` last, with [`DisconnectReason::WebSocket`](crate::DisconnectReason::WebSocket) when a close frame
//! ended the connection.
//!
//! What the connection does by itself:
//! - the opening handshake, with [`WsOptions::check_request`] deciding on each upgrade
//!   request before it is answered (by its `Origin`, say), and plain HTTP requests on the
//!   same port answered by [`WsOptions::http`];
//! - pings answered with pongs (pongs received are ignored);
//! - the close handshake: a close frame is answered with one carrying its code, and a local
//!   close sends 1000 first;
//! - every rule of the RFC's framing, each violation answered with the close code it names
//!   and the connection closed: unmasked client frames, reserved bits or opcodes (1002),
//!   fragmented or oversized control frames (1002), continuation out of place (1002), text
//!   that is not UTF-8 (1007), a message over [`WsOptions::max_message_len`] (1009, before
//!   its bytes are read), an invalid close code (1002).
//!
//! No extension is negotiated (`permessage-deflate` is not supported: messages go
//! uncompressed, and a compressed frame from the peer is a protocol error), and no
//! subprotocol is chosen.
//!
//! # Example
//!
//! ```no_run
//! use kendynet::ws::{HttpResponse, WsOptions};
//! use kendynet::{Actor, Context, NetEvent, System, WPacket};
//!
//! struct Echo;
//! impl Actor for Echo {
//!     type Msg = NetEvent;
//!     fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
//!         if let NetEvent::Packet { sock, packet } = ev {
//!             // The echo goes back with the message's own opcode, sharing its bytes.
//!             let _ = sock.send(WPacket::from(packet));
//!         }
//!     }
//! }
//!
//! let system = System::builder().build()?;
//! let echo = system.spawn(Echo);
//! let ws = WsOptions::new()
//!     .check_request(|req| req.origin().is_none_or(|o| o == "https://example.com"))
//!     .http(|req| match req.path() {
//!         "/" => HttpResponse::ok("text/html", "<p>hello</p>"),
//!         _ => HttpResponse::not_found(),
//!     });
//! system.handle().listen_ws("127.0.0.1:8080".parse().unwrap(), &echo, ws)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod frame;
mod handshake;
mod session;

pub(crate) use frame::{OP_BINARY, OP_TEXT, frame_header};
pub(crate) use session::{WsCut, WsSession};

use crate::sync::Arc;
use bytes::Bytes;
use std::fmt;

/// The default [`WsOptions::max_message_len`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;
/// The most bytes an opening handshake (request line and headers) may take; a longer one is
/// answered with 431 and closed.
pub const MAX_HANDSHAKE_LEN: usize = 8 << 10;
/// The most headers a handshake request may carry.
pub const MAX_HANDSHAKE_HEADERS: usize = 32;

/// Close codes of RFC 6455, section 7.4.1.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutting down, page navigated away).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// No status code was present in the close frame (never sent).
    pub const NO_STATUS: u16 = 1005;
    /// The connection closed without a close frame (never sent).
    pub const ABNORMAL: u16 = 1006;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message violated the endpoint's policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server met an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;

    /// Whether `code` may appear in a close frame on the wire.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

type CheckRequest = Arc<dyn Fn(&HttpRequest) -> bool + Send + Sync>;
type ServeHttp = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// How a WebSocket listener treats its connections: set on
/// [`ConnOptions::websocket`](crate::ConnOptions::websocket), or passed to
/// `SystemHandle::listen_ws`.
#[derive(Clone)]
pub struct WsOptions {
    pub(crate) max_message_len: usize,
    pub(crate) check: Option<CheckRequest>,
    pub(crate) http: Option<ServeHttp>,
}

impl Default for WsOptions {
    fn default() -> WsOptions {
        WsOptions::new()
    }
}

impl fmt::Debug for WsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsOptions")
            .field("max_message_len", &self.max_message_len)
            .field("check_request", &self.check.is_some())
            .field("http", &self.http.is_some())
            .finish()
    }
}

impl WsOptions {
    /// Every upgrade request accepted, plain HTTP requests answered with 426, messages up to
    /// [`DEFAULT_MAX_MESSAGE_LEN`].
    pub fn new() -> WsOptions {
        WsOptions {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            check: None,
            http: None,
        }
    }

    /// The largest message accepted from the peer (after reassembly of its fragments, at
    /// most `u32::MAX`); a frame that would take a message past it closes the connection
    /// with 1009 before its bytes are read.
    #[must_use]
    pub fn max_message_len(mut self, bytes: usize) -> WsOptions {
        self.max_message_len = bytes.min(u32::MAX as usize);
        self
    }

    /// Decides on each upgrade request before it is answered (on the socket's poller thread:
    /// keep it short): `false` answers 403 Forbidden and closes. The usual check is the
    /// browser's `Origin` ([`HttpRequest::origin`]).
    #[must_use]
    pub fn check_request(
        mut self,
        f: impl Fn(&HttpRequest) -> bool + Send + Sync + 'static,
    ) -> WsOptions {
        self.check = Some(Arc::new(f));
        self
    }

    /// Answers plain HTTP requests (not upgrades) on the same port, such as the page that
    /// opens the WebSocket (on the socket's poller thread: keep it short). The connection
    /// closes once the response is written. Without it they get 426 Upgrade Required.
    #[must_use]
    pub fn http(
        mut self,
        f: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> WsOptions {
        self.http = Some(Arc::new(f));
        self
    }
}

/// An HTTP request read by the opening handshake.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// The method (`GET`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target, query included (`/ws?room=1`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first header of that name (compared without regard to case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The `Origin` header: the page's origin, which browsers always send.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }
}

/// An answer to a plain HTTP request (see [`WsOptions::http`]).
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl HttpResponse {
    /// A response with this status, `Content-Type` and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// 200 OK.
    pub fn ok(content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
        HttpResponse::new(200, content_type, body)
    }

    /// 404 Not Found.
    pub fn not_found() -> HttpResponse {
        HttpResponse::new(404, "text/plain; charset=utf-8", "not found\n")
    }

    /// Adds a header (`Content-Length` and `Connection` are set by the connection).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }
}
