//! A listener that runs out of descriptors pauses instead of spinning, and accepts what
//! waited in the backlog once descriptors are free again.
//!
//! A test binary of its own: it fills this process's descriptor table, which would starve
//! any test running beside it.

use kendynet::net::{ACCEPT_BACKOFF_MAX, Engine};
use std::cell::RefCell;
use std::fs::File;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn emfile_pauses_the_listener_then_the_backlog_is_accepted() {
    let mut engine = Engine::new().expect("engine");
    let accepted = Rc::new(RefCell::new(Vec::new()));
    let sink = accepted.clone();
    let id = engine
        .listen("127.0.0.1:0".parse().unwrap(), move |_, socket| {
            sink.borrow_mut().push(socket)
        })
        .expect("listen");
    let addr = engine.listener_addr(id).expect("listener_addr");
    // Three clients wait in the backlog (the kernel completes their handshakes).
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // A small table (this binary runs this one test), then fill it, so that accept fails
    // with EMFILE.
    lower_soft_fd_limit(512);
    let mut filler = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("unexpected error while filling the table: {e}"),
        }
        assert!(filler.len() < 100_000, "the descriptor table never filled");
    }
    // 300 ms of passes: the listener may be told once, then pauses; a busy loop would
    // dispatch an event on every pass.
    let until = Instant::now() + Duration::from_millis(300);
    let (mut passes, mut dispatched) = (0u32, 0usize);
    while Instant::now() < until {
        dispatched += engine
            .run_once(Some(Duration::from_millis(20)))
            .expect("run_once");
        passes += 1;
    }
    assert!(accepted.borrow().is_empty(), "nothing can be accepted yet");
    assert!(
        dispatched <= 6,
        "{dispatched} events in {passes} passes over 300 ms: the listener spins"
    );
    let pauses = engine.accept_pauses(id).expect("listener");
    assert!(pauses >= 1, "the listener never paused");
    // Free the table: within the longest back-off (and a margin) all three are accepted.
    drop(filler);
    let until = Instant::now() + ACCEPT_BACKOFF_MAX * 3;
    while accepted.borrow().len() < clients.len() {
        assert!(
            Instant::now() < until,
            "only {} of {} waiting connections accepted after the table was freed",
            accepted.borrow().len(),
            clients.len()
        );
        engine
            .run_once(Some(Duration::from_millis(50)))
            .expect("run_once");
    }
}

/// Lowers this process's soft limit on descriptors to `n` (if it is higher).
fn lower_soft_fd_limit(n: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    if rl.rlim_cur > n {
        rl.rlim_cur = n;
        // SAFETY: `rl` is a valid rlimit whose soft limit is below its hard limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    }
}
