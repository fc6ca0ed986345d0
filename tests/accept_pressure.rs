//! Accepting under pressure at layer 3: a system whose process runs out of descriptors
//! pauses its listener with the engine's back-off (counted by `accept_pauses`) instead of
//! spinning, and serves the clients that waited in the backlog once descriptors are free.
//!
//! The test lowers `RLIMIT_NOFILE` and fills the descriptor table, which would starve any
//! test running beside it, so it runs in a child process: the test re-runs this binary with
//! [`CHILD_ENV`] set and `--exact` its own name, and checks that the child passed.

mod support;

use kendynet::{ListenOptions, System};
use std::fs::File;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::actors::{Probe, expect_connected};
use support::{any_port, eventually, shutdown_gracefully};

/// Set in the child's environment: run the body instead of spawning.
const CHILD_ENV: &str = "KENDYNET_ACCEPT_PRESSURE_CHILD";
/// The soft descriptor limit of the child.
const FD_LIMIT: u64 = 256;
/// Clients that wait in the backlog while descriptors are short.
const CLIENTS: usize = 3;
/// The window over which the child's CPU time is measured.
const WINDOW: Duration = Duration::from_secs(1);
/// A loose bound on CPU time spent in [`WINDOW`] while every accept fails: a listener that
/// spins keeps a core busy (close to the whole window); one that backs off sleeps.
const CPU_BOUND: Duration = Duration::from_millis(500);
/// How long the child may run at most.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn emfile_backs_off_without_spinning_then_serves_the_backlog() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_body();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "emfile_backs_off_without_spinning_then_serves_the_backlog",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let until = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the child ran over {CHILD_DEADLINE:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "the child failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the body (and not zero tests).
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    if let Some(at) = stdout.find("accept pauses:") {
        println!("child: {}", stdout[at..].lines().next().unwrap_or_default());
    }
}

/// In the child: run a server, pause its listener, queue clients, fill the descriptor table,
/// resume, and watch it back off; then free the table and see the clients served.
fn child_body() {
    lower_soft_fd_limit(FD_LIMIT);
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let probe = system.spawn(Probe::new(0, tx));
    let listener = system
        .open_listener(any_port(), &probe, ListenOptions::new())
        .unwrap();
    eventually("the listener to be accepting", || listener.is_accepting());
    listener.pause();
    eventually("the pause to be applied", || !listener.is_accepting());
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(listener.local_addr()).expect("connect"))
        .collect();
    // Fill the table, so that accept fails with EMFILE.
    let mut filler = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("unexpected error while filling the table: {e}"),
        }
        assert!(filler.len() < 100_000, "the descriptor table never filled");
    }
    listener.resume();
    eventually("the listener to back off", || listener.accept_pauses() >= 1);
    assert_eq!(system.accept_pauses(), listener.accept_pauses());

    // A second of descriptor shortage: the listener retries after each back-off (100, 200,
    // 400 ms...) and sleeps in between.
    let pauses_before = listener.accept_pauses();
    let cpu_before = cpu_time();
    std::thread::sleep(WINDOW);
    let cpu = cpu_time() - cpu_before;
    let pauses = listener.accept_pauses() - pauses_before;
    assert!(
        pauses >= 1,
        "the listener did not retry (and back off again) within {WINDOW:?}"
    );
    assert!(
        cpu < CPU_BOUND,
        "{cpu:?} of CPU time in {WINDOW:?} while accept fails: the server spins"
    );
    assert_eq!(listener.connections(), 0, "nothing can be accepted yet");
    assert!(rx.try_recv().is_err(), "nothing can have connected yet");

    // Free the table: the clients waiting in the backlog are served.
    drop(filler);
    let mut peers: Vec<_> = (0..CLIENTS).map(|_| expect_connected(&rx).1).collect();
    let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    peers.sort();
    want.sort();
    assert_eq!(peers, want);
    assert_eq!(listener.connections(), CLIENTS);
    eventually("the listener to accept again", || listener.is_accepting());
    println!(
        "accept pauses: {} ({} in the measured {WINDOW:?}), CPU time in it: {cpu:?}",
        listener.accept_pauses(),
        pauses
    );
    drop(clients);
    shutdown_gracefully(system);
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
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
