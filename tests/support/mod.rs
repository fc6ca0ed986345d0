//! Helpers shared by the integration tests, grouped by subject:
//!
//! - this module: the bound on every wait ([`WAIT`]), bounded waits on a channel ([`recv`]) or
//!   a condition ([`eventually`]), a free loopback port ([`any_port`]), and a checked shutdown
//!   of a `System` ([`shutdown_gracefully`]);
//! - [`wire`]: a blocking std client and the packet framing over it, and numbered payloads
//!   whose order and integrity a test can check;
//! - [`engine`]: driving a layer-1 `Engine`, on the test thread or on a thread of its own;
//! - [`actors`]: layer-3 actors that report what they see ([`actors::Probe`],
//!   [`actors::Watcher`]) and the waits that go with them;
//! - [`rng`]: a small seeded generator, so that a randomised test repeats exactly.
//!
//! Every wait here is bounded by [`WAIT`] and fails the test with a message saying what it was
//! waiting for; nothing here sleeps in the hope that something has happened meanwhile.
//!
//! Only the crate's public API is used. Each test binary declares `mod support;` and compiles
//! its own copy of this module, using a different subset of it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod actors;
pub mod engine;
pub mod rng;
pub mod wire;

use kendynet::System;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test fails. Generous: the machine is
/// shared and slow, and a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// `127.0.0.1:0`: a free loopback port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Receives from `rx`, failing after [`WAIT`] with `what`.
#[track_caller]
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("timed out after {WAIT:?} waiting for {what}"),
        Err(RecvTimeoutError::Disconnected) => panic!("sender gone while waiting for {what}"),
    }
}

/// Polls `done` until it holds, failing the test after [`WAIT`] (a deadline loop for things
/// that become true eventually with nothing to wait on).
#[track_caller]
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Shuts `system` down (deadline 5 s) and checks that it went gracefully.
#[track_caller]
pub fn shutdown_gracefully(system: System) {
    let report = system.shutdown(Duration::from_secs(5));
    assert!(report.graceful, "shutdown was forced: {report:?}");
}
