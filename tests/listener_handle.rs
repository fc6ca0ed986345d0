//! Listener handles (`SystemHandle::open_listener`): pause and resume (clients wait in the
//! kernel's backlog meanwhile), close (later connects are refused), the per-listener
//! connection limit (the next client waits until a socket is freed, never accepted and
//! dropped), and the counters, including refusals at the system's own limit.
//!
//! Real threads and loopback sockets; every wait is bounded ([`WAIT`]). The checks that
//! nothing arrives while a listener is paused wait [`QUIET`] for a `Connected` that must not
//! come: they can only miss a bug, never fail a correct listener.

mod support;

use kendynet::{ListenOptions, ListenerHandle, System};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;
use support::actors::{Obs, Probe, expect_connected, expect_disconnected};
use support::{WAIT, any_port, eventually, shutdown_gracefully};

/// How long a paused listener is watched for a `Connected` that must not arrive.
const QUIET: Duration = Duration::from_millis(300);

fn system() -> System {
    System::builder().workers(2).pollers(2).build().unwrap()
}

/// Fails if the probe reports anything within [`QUIET`].
#[track_caller]
fn expect_nothing(rx: &Receiver<Obs>, why: &str) {
    match rx.recv_timeout(QUIET) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(obs) => panic!("{why}: got {obs:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the probe is gone"),
    }
}

/// A listener that must be accepting before the test goes on (its registration is posted
/// to its poller).
fn open(system: &System, probe: &kendynet::Addr<Probe>, options: ListenOptions) -> ListenerHandle {
    let handle = system.open_listener(any_port(), probe, options).unwrap();
    eventually("the listener to be accepting", || handle.is_accepting());
    handle
}

#[test]
fn pause_keeps_clients_in_the_backlog_until_resume() {
    let system = system();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = open(&system, &probe, ListenOptions::new());
    let addr = listener.local_addr();

    listener.pause();
    assert!(listener.is_paused());
    eventually("the pause to be applied", || !listener.is_accepting());
    // The kernel completes the handshake: the client is connected, waiting in the backlog.
    let client = TcpStream::connect(addr).expect("connect completes while paused");
    expect_nothing(&rx, "a paused listener accepted");
    assert_eq!(listener.connections(), 0);

    listener.resume();
    assert!(!listener.is_paused());
    let (sock, peer) = expect_connected(&rx);
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(listener.is_accepting());
    assert_eq!(listener.connections(), 1);

    // Pause and resume are idempotent and can come from any thread.
    let remote = listener.clone();
    std::thread::spawn(move || {
        remote.pause();
        remote.pause();
        remote.resume();
        remote.resume();
    })
    .join()
    .unwrap();
    eventually("accepting again", || listener.is_accepting());
    let _second = TcpStream::connect(addr).unwrap();
    expect_connected(&rx);
    assert_eq!(listener.connections(), 2);

    drop(client);
    expect_disconnected(&rx, sock);
    eventually("the freed socket to be counted", || {
        listener.connections() == 1
    });
    assert_eq!(listener.accept_pauses(), 0);
    assert_eq!(listener.limit_pauses(), 0);
    shutdown_gracefully(system);
    assert!(
        listener.is_closed(),
        "the shutdown closes handle-made listeners"
    );
}

#[test]
fn close_refuses_later_connects_and_is_idempotent() {
    let system = system();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = open(&system, &probe, ListenOptions::new());
    let addr = listener.local_addr();

    let client = TcpStream::connect(addr).unwrap();
    let (sock, _) = expect_connected(&rx);

    listener.close();
    listener.close();
    listener.clone().close();
    assert!(listener.is_closed());
    assert!(!listener.is_accepting());
    eventually("connects to be refused", || {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
            // Reset: it reached the backlog just before the socket closed.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("a connect to a closed listener failed with {e}"),
            // Still in the backlog of the socket about to close: try again.
            Ok(_) => false,
        }
    });
    // Sockets it accepted stay open.
    assert_eq!(sock.peer_addr(), Ok(client.local_addr().unwrap()));
    assert_eq!(listener.connections(), 1);
    // Pausing or resuming a closed listener does nothing.
    listener.pause();
    listener.resume();
    assert!(!listener.is_accepting());
    // The shutdown leaves the closed listener alone and goes on gracefully.
    shutdown_gracefully(system);
    assert!(listener.is_closed());
    listener.close();
}

#[test]
fn per_listener_limit_holds_the_next_client_in_the_backlog() {
    let system = system();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = open(&system, &probe, ListenOptions::new().max_connections(2));
    assert_eq!(listener.max_connections(), Some(2));
    let addr = listener.local_addr();

    let first = TcpStream::connect(addr).unwrap();
    let second = TcpStream::connect(addr).unwrap();
    let mut socks = vec![expect_connected(&rx), expect_connected(&rx)];
    eventually("the limit to hold the listener", || {
        !listener.is_accepting()
    });
    assert_eq!(listener.connections(), 2);
    assert_eq!(listener.limit_pauses(), 1);

    let third = TcpStream::connect(addr).expect("the third completes in the kernel");
    expect_nothing(&rx, "a listener at its limit accepted");
    assert_eq!(system.open_sockets(), 2);

    // The first client leaves: its socket is freed and the third is accepted.
    let first_addr = first.local_addr().unwrap();
    let i = socks.iter().position(|(_, p)| *p == first_addr).unwrap();
    let (gone, _) = socks.remove(i);
    drop(first);
    expect_disconnected(&rx, gone);
    let (_, peer) = expect_connected(&rx);
    assert_eq!(peer, third.local_addr().unwrap());
    assert_eq!(listener.connections(), 2);
    // At its limit again.
    eventually("the limit to hold the listener again", || {
        listener.limit_pauses() == 2 && !listener.is_accepting()
    });
    assert_eq!(listener.limit_refusals(), 0);
    assert_eq!(system.accept_refusals(), 0);
    drop((second, third));
    shutdown_gracefully(system);
}

#[test]
fn system_limit_refusals_are_counted_per_listener_and_system_wide() {
    let system = System::builder()
        .workers(1)
        .max_connections(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = open(&system, &probe, ListenOptions::new());
    let addr = listener.local_addr();

    let _first = TcpStream::connect(addr).unwrap();
    expect_connected(&rx);
    // The system is full: the second is accepted and closed at once, and counted.
    let second = TcpStream::connect(addr).unwrap();
    eventually("the refusal to be counted", || {
        listener.limit_refusals() == 1
    });
    assert_eq!(system.accept_refusals(), 1);
    assert_eq!(listener.connections(), 1);
    // The refused client sees its connection end.
    second
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    let mut buf = [0u8; 1];
    match std::io::Read::read(&mut &second, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the refused client should see its connection end, got {other:?}"),
    }
    expect_nothing(&rx, "a refused connection reached the owner");
    assert_eq!(system.accept_pauses(), 0);
    shutdown_gracefully(system);
}

#[test]
fn open_listener_reports_bind_errors_and_plain_listen_still_works() {
    let system = system();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = open(&system, &probe, ListenOptions::new());
    let err = system
        .open_listener(listener.local_addr(), &probe, ListenOptions::new())
        .expect_err("the address is taken");
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    // `listen` keeps its signature and behaviour.
    let addr = system.listen(any_port(), &probe).unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (_, peer) = expect_connected(&rx);
    assert_eq!(peer, client.local_addr().unwrap());
    // Not accepted by the handle's listener.
    assert_eq!(listener.connections(), 0);
    let debug = format!("{listener:?}");
    assert!(debug.contains("ListenerHandle"), "{debug}");
    shutdown_gracefully(system);
    // Harmless once the system is gone.
    listener.pause();
    listener.resume();
    listener.close();
    assert!(listener.is_closed());
}

/// The test kit's simulated network has no listener handles: `open_listener` says so
/// plainly, and `listen` works there as before.
#[cfg(feature = "testkit")]
#[test]
fn simulated_network_refuses_open_listener_as_unsupported() {
    use kendynet::testkit::Sim;
    let sim = Sim::new(1);
    let (tx, _rx) = mpsc::channel();
    let probe = sim.spawn(Probe::new(0, tx));
    let err = sim
        .handle()
        .open_listener(any_port(), &probe, ListenOptions::new())
        .expect_err("no handles on the simulated network");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("listen"), "{err}");
    sim.handle()
        .listen(any_port(), &probe)
        .expect("listen works");
    assert_eq!(sim.handle().accept_pauses(), 0);
    assert_eq!(sim.handle().accept_refusals(), 0);
}
