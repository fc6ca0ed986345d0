//! Blocking work off the workers: dedicated actors on threads of their own and the blocking
//! pool. The main checks are causal: while a handler or closure is blocked (for up to 2 s),
//! a layer-3 echo on the only worker completes its round trips, and the blocked call is seen
//! not to have returned yet when the echo is done.

mod support;

use kendynet::actor::BlockingError;
use kendynet::{
    Actor, ActorId, Addr, Context, NetEvent, SpawnOptions, StopReason, System, WPacket,
};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::actors::{Watcher, expect_stopped, watch};
use support::wire::client;
use support::{any_port, eventually, recv, shutdown_gracefully};

/// How long a blocked call blocks unless the test lets it go earlier.
const BLOCKED_FOR: Duration = Duration::from_secs(2);
/// Echo round trips that must complete while the call is blocked.
const ROUND_TRIPS: u32 = 200;

struct Echo;
impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

/// Runs `ROUND_TRIPS` echoes through an owner on `system`'s workers.
fn echo_round_trips(system: &System) {
    let echo = system.spawn(Echo);
    let addr = system.listen(any_port(), &echo).unwrap();
    let mut c = client(addr);
    c.set_read_timeout(Some(support::WAIT)).unwrap();
    for i in 0..ROUND_TRIPS {
        let mut p = WPacket::new();
        p.write_u32(i).write_str("ping");
        let frame = p.into_frame();
        c.write_all(&frame).unwrap();
        let mut back = vec![0u8; frame.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, frame);
    }
}

/// A blocked call: tells `entered`, then blocks until `release` fires or `BLOCKED_FOR`
/// passes, then raises `returned`.
struct Block {
    entered: Sender<()>,
    release: Receiver<()>,
    returned: Arc<AtomicBool>,
}

impl Block {
    fn new() -> (Block, Receiver<()>, Sender<()>, Arc<AtomicBool>) {
        let (entered, entered_rx) = mpsc::channel();
        let (release_tx, release) = mpsc::channel();
        let returned = Arc::new(AtomicBool::new(false));
        let b = Block {
            entered,
            release,
            returned: returned.clone(),
        };
        (b, entered_rx, release_tx, returned)
    }

    fn run(&self) {
        self.entered.send(()).unwrap();
        let _ = self.release.recv_timeout(BLOCKED_FOR);
        self.returned.store(true, Ordering::SeqCst);
    }
}

struct Sleeper(Block);
impl Actor for Sleeper {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        self.0.run();
    }
}

#[test]
fn a_blocked_dedicated_actor_does_not_hold_up_echo_on_the_only_worker() {
    let system = System::builder().workers(1).build().unwrap();
    let (block, entered, release, returned) = Block::new();
    let sleeper = system.spawn_dedicated(Sleeper(block)).unwrap();
    sleeper.send(()).unwrap();
    recv(&entered, "the dedicated actor to block");
    echo_round_trips(&system);
    assert!(
        !returned.load(Ordering::SeqCst),
        "the echo waited for the blocked handler"
    );
    release.send(()).unwrap();
    eventually("the handler to return", || returned.load(Ordering::SeqCst));
    shutdown_gracefully(system);
}

enum Loader {
    Start(Block),
    Loaded(Result<u32, BlockingError>),
}

struct LoaderActor(Sender<Result<u32, BlockingError>>);
impl Actor for LoaderActor {
    type Msg = Loader;
    fn handle(&mut self, msg: Loader, ctx: &mut Context<Self>) {
        match msg {
            Loader::Start(block) => ctx.spawn_blocking(
                move || {
                    block.run();
                    42
                },
                Loader::Loaded,
            ),
            Loader::Loaded(r) => self.0.send(r).unwrap(),
        }
    }
}

#[test]
fn a_blocked_closure_does_not_hold_up_echo_on_the_only_worker() {
    let system = System::builder().workers(1).build().unwrap();
    let (block, entered, release, returned) = Block::new();
    let (tx, rx) = mpsc::channel();
    let loader = system.spawn(LoaderActor(tx));
    loader.send(Loader::Start(block)).unwrap();
    recv(&entered, "the closure to block");
    echo_round_trips(&system);
    assert!(
        !returned.load(Ordering::SeqCst),
        "the echo waited for the blocked closure"
    );
    release.send(()).unwrap();
    assert_eq!(recv(&rx, "the result as a message"), Ok(42));
    shutdown_gracefully(system);
}

/// Reports the thread it runs on and every message, including timers.
struct Where(Sender<(String, u32)>);
impl Actor for Where {
    type Msg = u32;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.send_self_after(Duration::from_millis(5), 100);
    }
    fn handle(&mut self, n: u32, _: &mut Context<Self>) {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.0.send((name, n)).unwrap();
    }
}

#[test]
fn a_dedicated_actor_keeps_sends_timers_and_names() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = system
        .spawn_with(
            Where(tx),
            SpawnOptions::default().dedicated_thread().name("store"),
        )
        .unwrap();
    let mut seen = Vec::new();
    let found: Addr<Where> = system.lookup("store").expect("registered");
    assert_eq!(found, addr);
    found.send(1).unwrap();
    addr.send_after(Duration::from_millis(1), 2);
    for _ in 0..3 {
        seen.push(recv(&rx, "a message on the dedicated thread"));
    }
    let mut numbers: Vec<u32> = seen.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 100]);
    let thread = &seen[0].0;
    assert!(
        thread.starts_with("kendynet-blocking-"),
        "ran on {thread:?}"
    );
    assert!(
        seen.iter().all(|(t, _)| t == thread),
        "one thread: {seen:?}"
    );
    shutdown_gracefully(system);
}

struct Bomb;
impl Actor for Bomb {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        panic!("boom");
    }
}

struct Counter(Sender<u32>);
impl Actor for Counter {
    type Msg = u32;
    fn handle(&mut self, n: u32, _: &mut Context<Self>) {
        self.0.send(n).unwrap();
    }
}

#[test]
fn a_panic_in_a_dedicated_actor_stops_only_it() {
    let system = System::builder().workers(1).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let bomb = system.spawn_dedicated(Bomb).unwrap();
    watch(&watcher, &bomb);
    let (ctx, crx) = mpsc::channel();
    let pooled = system.spawn(Counter(ctx.clone()));
    let dedicated = system.spawn_dedicated(Counter(ctx)).unwrap();
    bomb.send(()).unwrap();
    match expect_stopped(&wrx, bomb.id()) {
        StopReason::Panicked(m) => assert_eq!(m, "boom"),
        other => panic!("stopped with {other:?}"),
    }
    assert!(!bomb.is_alive());
    pooled.send(1).unwrap();
    dedicated.send(2).unwrap();
    let mut got = [recv(&crx, "the pooled actor"), recv(&crx, "the other")];
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    shutdown_gracefully(system);
}

/// Tells when it stops, and why.
struct Stopping(Sender<(ActorId, &'static str)>);
impl Actor for Stopping {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {}
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _ = self.0.send((ctx.id(), "stopped"));
    }
}

#[test]
fn shutdown_ends_dedicated_actors_and_their_threads() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let a = system.spawn_dedicated(Stopping(tx.clone())).unwrap();
    let b = system.spawn_dedicated(Stopping(tx)).unwrap();
    // An actor stopped before shutdown ends its thread too.
    a.stop();
    assert_eq!(recv(&rx, "a to stop"), (a.id(), "stopped"));
    let report = system.shutdown(Duration::from_secs(5));
    assert_eq!(recv(&rx, "b to stop"), (b.id(), "stopped"));
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.blocking_threads_left, 0);
}

#[test]
fn shutdown_leaves_a_thread_stuck_past_the_deadline_and_says_so() {
    let system = System::builder().workers(1).build().unwrap();
    let (block, entered, release, returned) = Block::new();
    let sleeper = system.spawn_dedicated(Sleeper(block)).unwrap();
    sleeper.send(()).unwrap();
    recv(&entered, "the dedicated actor to block");
    let report = system.shutdown(Duration::from_millis(200));
    // Only meaningful if the handler was still blocked when shutdown gave up.
    let still_blocked = !returned.load(Ordering::SeqCst);
    release.send(()).unwrap();
    if still_blocked {
        assert!(!report.graceful, "{report:?}");
        assert_eq!(report.blocking_threads_left, 1, "{report:?}");
        assert_eq!(report.actors_left, 1, "{report:?}");
    }
}

#[test]
fn a_panicking_closure_delivers_an_error() {
    let system = System::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    system.spawn_blocking(
        || -> u32 { panic!("db down") },
        move |r| tx.send(r).unwrap(),
    );
    assert_eq!(
        recv(&rx, "the error"),
        Err(BlockingError::Panicked("db down".into()))
    );
    // The pool still runs closures afterwards.
    let (tx, rx) = mpsc::channel();
    system.spawn_blocking(|| 7, move |r| tx.send(r).unwrap());
    assert_eq!(recv(&rx, "a result"), Ok(7));
    shutdown_gracefully(system);
}

#[test]
fn closures_beyond_the_limit_wait_their_turn() {
    const LIMIT: usize = 2;
    const JOBS: usize = 8;
    let system = System::builder()
        .workers(1)
        .blocking_threads(LIMIT)
        .build()
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..JOBS {
        let (running, peak, entered, go) = (
            running.clone(),
            peak.clone(),
            entered_tx.clone(),
            go_rx.clone(),
        );
        let done = done_tx.clone();
        system.spawn_blocking(
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                entered.send(()).unwrap();
                let _ = go.lock().unwrap().recv_timeout(support::WAIT);
                running.fetch_sub(1, Ordering::SeqCst);
                i
            },
            move |r| done.send(r).unwrap(),
        );
    }
    let mut finished = Vec::new();
    for _ in 0..JOBS {
        recv(&entered_rx, "a closure to start");
        // At most LIMIT run at once: the others have not started.
        assert!(running.load(Ordering::SeqCst) <= LIMIT);
        go_tx.send(()).unwrap();
        finished.push(recv(&done_rx, "a closure to finish").unwrap());
    }
    finished.sort_unstable();
    assert_eq!(finished, (0..JOBS).collect::<Vec<_>>());
    assert!(peak.load(Ordering::SeqCst) <= LIMIT, "peak {peak:?}");
    shutdown_gracefully(system);
}

#[test]
fn queued_closures_are_cancelled_at_shutdown() {
    let system = System::builder()
        .workers(1)
        .blocking_threads(1)
        .build()
        .unwrap();
    let (block, entered, release, _returned) = Block::new();
    let (tx, rx) = mpsc::channel();
    let first = tx.clone();
    system.spawn_blocking(move || block.run(), move |r| first.send(r).unwrap());
    recv(&entered, "the first closure to block the only thread");
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    system.spawn_blocking(
        move || ran2.store(true, Ordering::SeqCst),
        move |r| tx.send(r).unwrap(),
    );
    // Shutdown cancels the queued one; once it has, the blocked one is let go.
    let releaser = std::thread::spawn(move || {
        let got = recv(&rx, "the queued closure's outcome");
        release.send(()).unwrap();
        (got, recv(&rx, "the first closure's outcome"))
    });
    let report = system.shutdown(Duration::from_secs(5));
    let (queued, first) = releaser.join().unwrap();
    assert_eq!(queued, Err(BlockingError::Cancelled));
    assert_eq!(first, Ok(()));
    assert!(!ran.load(Ordering::SeqCst));
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.blocking_threads_left, 0);
}

#[cfg(feature = "testkit")]
#[test]
fn the_simulation_runs_dedicated_actors_and_closures_on_its_own_thread() {
    use kendynet::testkit::Sim;
    let sim = Sim::new(1);
    let (tx, rx) = mpsc::channel();
    let w = sim.spawn_dedicated(Where(tx)).unwrap();
    w.send(1).unwrap();
    let (ltx, lrx) = mpsc::channel();
    let loader = sim.spawn(LoaderActor(ltx));
    let (block, _entered, release, _) = Block::new();
    release.send(()).unwrap();
    loader.send(Loader::Start(block)).unwrap();
    sim.run_until_idle();
    let me = std::thread::current().name().unwrap_or("").to_owned();
    assert_eq!(rx.try_recv().unwrap(), (me, 1));
    assert_eq!(lrx.try_recv().unwrap(), Ok(42));
    assert_eq!(sim.shutdown().blocking_threads_left, 0);
}
