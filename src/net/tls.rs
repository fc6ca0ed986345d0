//! TLS under a framed or WebSocket connection, server side (cargo feature `tls`, with
//! `rustls`).
//!
//! The connection reads ciphertext, hands it to the TLS session, and cuts packets out of the
//! plaintext as usual; what it sends is queued as plaintext (so watermarks, limits and
//! policies count plaintext bytes) and encrypted as the socket takes it. The handshake runs
//! on the socket's poller like every other read: each readiness event reads about one record
//! at a time, a few times, before the other sockets get their turn, and
//! rustls does the work of the records that arrived, so a client that sends its handshake
//! slowly costs nothing while it waits, and a handshake never holds the poller for more than
//! the records at hand. A handshake must complete within the connection's packet deadline
//! ([`ConnOptions::packet_timeout`](crate::ConnOptions::packet_timeout)); until it has, the
//! owner knows nothing of the socket (layer 3's `Connected` comes after it) and sends are
//! refused.
//!
//! # Example
//!
//! ```no_run
//! use kendynet::tls::TlsAcceptor;
//! use kendynet::{ConnOptions, NetEvent, System, Actor, Context, WPacket};
//!
//! struct Echo;
//! impl Actor for Echo {
//!     type Msg = NetEvent;
//!     fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
//!         if let NetEvent::Packet { sock, packet } = ev {
//!             let _ = sock.send(WPacket::from(packet));
//!         }
//!     }
//! }
//!
//! let acceptor = TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
//! let system = System::builder().build()?;
//! let echo = system.spawn(Echo);
//! let options = ConnOptions::default().tls(acceptor);
//! system.listen_with("127.0.0.1:8443".parse().unwrap(), &echo, options)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use super::sys;
use crate::sync::Arc;
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::fmt;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// A read of ciphertext this large may have left more in the socket (the session reads
/// about one record's worth at a time).
const FULL_READ: usize = 16 * 1024;
/// The most plaintext a session buffers for encryption beyond the connection's own queue.
const TLS_BUFFER: usize = 64 * 1024;

/// The server side of TLS for a listener: a `rustls` server configuration, shared by its
/// connections. Set it with [`ConnOptions::tls`](crate::ConnOptions::tls).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor with a configuration of your own (client authentication, ALPN, session
    /// resumption, another crypto provider).
    pub fn new(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor { config }
    }

    /// An acceptor with rustls' safe defaults (TLS 1.2 and 1.3, the `ring` provider) for
    /// the certificate chain and private key in two PEM files.
    ///
    /// # Errors
    /// `InvalidInput` if a file cannot be read or parsed, holds no certificate or no key, or
    /// the key does not suit the certificate.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<TlsAcceptor> {
        let (cert_chain, key) = (cert_chain.as_ref(), key.as_ref());
        let bad = |what: &str, path: &Path, e: &dyn fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} {}: {e}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(cert_chain)
            .map_err(|e| bad("cannot read certificates from", cert_chain, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("cannot parse certificates in", cert_chain, &e))?;
        if certs.is_empty() {
            return Err(bad("no certificate in", cert_chain, &"empty"));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad("cannot read a private key from", key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("no protocol versions for", cert_chain, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("the key does not suit the certificate in", cert_chain, &e))?;
        Ok(TlsAcceptor::new(Arc::new(config)))
    }

    /// A new session for an accepted connection.
    pub(crate) fn session(&self) -> io::Result<TlsSession> {
        let mut conn = ServerConnection::new(self.config.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(TlsSession { conn })
    }
}

/// One connection's TLS session.
pub(crate) struct TlsSession {
    conn: ServerConnection,
}

/// What one read of ciphertext produced.
pub(crate) enum TlsRead {
    /// Plaintext may have been added; `full`: the read filled its buffer (there may be more).
    Read { full: bool },
    /// The peer ended its input (`close_notify`, or the end of the stream).
    Eof,
    /// The socket would block.
    WouldBlock,
    /// A socket error, or a TLS error (the alert, if any, is queued: flush it).
    Failed(io::Error),
}

impl TlsSession {
    /// Whether the handshake is still under way.
    #[inline]
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the session holds ciphertext to write.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Reads ciphertext once from `fd` (straight into the session's buffer), and appends
    /// the plaintext it carries to `rbuf`.
    pub(crate) fn read(&mut self, fd: BorrowedFd<'_>, rbuf: &mut BytesMut) -> TlsRead {
        let n = match self.conn.read_tls(&mut FdReader(fd)) {
            Ok(0) => return TlsRead::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TlsRead::WouldBlock,
            Err(e) => return TlsRead::Failed(e),
        };
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => return TlsRead::Failed(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let mut plain = state.plaintext_bytes_to_read();
        let peer_closed = state.peer_has_closed();
        if plain > 0 {
            rbuf.reserve(plain);
            // Copied once, from the session's buffers into the receive buffer.
            let mut reader = self.conn.reader();
            while plain > 0 {
                let chunk = match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => chunk,
                    Ok(_) => break,
                    Err(e) => return TlsRead::Failed(e),
                };
                let got = chunk.len();
                rbuf.extend_from_slice(chunk);
                reader.consume(got);
                plain = plain.saturating_sub(got);
            }
        }
        if peer_closed {
            return TlsRead::Eof;
        }
        TlsRead::Read {
            full: n >= FULL_READ,
        }
    }

    /// Takes plaintext for encryption: returns how much of `data` it took (0 when its
    /// buffer is full, or while the handshake is under way and its buffer is full).
    pub(crate) fn take_plaintext(&mut self, data: &[u8]) -> usize {
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Writes ciphertext to `fd` until it has none left (`Ok(true)`) or the socket would
    /// block (`Ok(false)`).
    pub(crate) fn write_to(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut out = FdWriter(fd);
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut out) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a `close_notify` alert (written by the next [`TlsSession::write_to`]).
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}

/// A socket as an `io::Read` for `read_tls`.
struct FdReader<'a>(BorrowedFd<'a>);

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and `recv_into` only
        // writes initialised bytes into the slice, so it stays initialised.
        let buf = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
        sys::recv_into(self.0, buf)
    }
}

/// A socket as an `io::Write` for `write_tls`, with gathered writes.
struct FdWriter<'a>(BorrowedFd<'a>);

impl Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::writev(self.0, &[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.len().min(sys::MAX_IOV);
        sys::writev(self.0, &bufs[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
