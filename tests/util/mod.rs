//! Helpers shared by the loopback integration tests.
//!
//! Every wait here is bounded by [`WAIT`] and fails the test with a message saying what it was
//! waiting for; nothing here sleeps in the hope that something has happened meanwhile.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use kendynet::net::{Engine, EngineHandle};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test fails. Generous: the machine is
/// shared and slow, and a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long an engine thread may live at most, so that a test that forgets to stop it (or
/// panics first) cannot leave it running.
const ENGINE_LIFETIME: Duration = Duration::from_secs(60);

/// `127.0.0.1:0`: a free loopback port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Runs `engine` on this thread until `done` holds, failing after [`WAIT`].
pub fn run_until(engine: &mut Engine, what: &str, mut done: impl FnMut(&mut Engine) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(engine) {
        let now = Instant::now();
        assert!(
            now < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        engine
            .run_once(Some((deadline - now).min(Duration::from_millis(50))))
            .expect("run_once");
    }
}

/// An engine running on its own thread (an `Engine` is not `Send`, so it is made there).
/// Stopped and joined on drop; a panic on the engine thread fails the test when it is stopped.
pub struct EngineThread {
    handle: EngineHandle,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl EngineThread {
    /// Creates an engine on a new thread, runs `setup` there and hands its result back, then
    /// keeps running the engine until stopped.
    pub fn spawn<R: Send + 'static>(
        setup: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> (EngineThread, R) {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let join = thread::Builder::new()
            .name("test-engine".into())
            .spawn(move || {
                let mut engine = Engine::new().expect("Engine::new");
                let r = setup(&mut engine);
                tx.send((engine.handle(), r)).unwrap();
                let born = Instant::now();
                while !flag.load(Ordering::SeqCst) && born.elapsed() < ENGINE_LIFETIME {
                    engine
                        .run_once(Some(Duration::from_millis(100)))
                        .expect("run_once");
                }
            })
            .expect("spawn engine thread");
        let (handle, r) = rx
            .recv_timeout(WAIT)
            .expect("engine thread did not start (setup panicked?)");
        (
            EngineThread {
                handle,
                stop,
                join: Some(join),
            },
            r,
        )
    }

    /// The engine's cross-thread handle.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    /// Runs `f` on the engine thread and returns its result.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.handle
            .post(move |engine| {
                let _ = tx.send(f(engine));
            })
            .expect("post");
        rx.recv_timeout(WAIT)
            .expect("posted closure did not run on the engine thread")
    }

    /// Stops the engine thread and joins it, failing the test if it panicked.
    pub fn stop(mut self) {
        self.shutdown(true);
    }

    fn shutdown(&mut self, check: bool) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.wake();
        if let Some(join) = self.join.take() {
            let res = join.join();
            if check && res.is_err() {
                panic!("the engine thread panicked");
            }
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        // Do not panic while a failing test is already unwinding.
        self.shutdown(false);
    }
}

/// Receives from `rx`, failing after [`WAIT`] with `what`.
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("timed out after {WAIT:?} waiting for {what}"),
        Err(RecvTimeoutError::Disconnected) => panic!("sender gone while waiting for {what}"),
    }
}

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

/// Reads one frame and returns its payload (a timeout surfaces as an error).
pub fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let mut payload = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

/// Writes one frame.
pub fn write_frame(s: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    s.write_all(&frame(payload))
}

/// Reads until end of stream (bounded by the read timeout).
pub fn read_to_eof(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Asserts that the next read sees the end of the stream (or a reset: a server that closes a
/// connection with unread input resets it, which is still "closed" to the client).
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
pub fn wait_readable(s: &TcpStream) {
    let mut b = [0u8; 1];
    let n = s.peek(&mut b).expect("peek: nothing arrived");
    assert_eq!(n, 1, "peek saw end of stream, expected data");
}

/// Closes `s` so that the peer sees a reset rather than an end of stream: data the peer sent
/// is left unread here, and closing a TCP socket with unread input sends RST (RFC 2525).
/// Waits first until that data has really arrived, so the reset does not depend on timing.
pub fn close_with_reset(s: TcpStream) {
    wait_readable(&s);
    drop(s);
}
