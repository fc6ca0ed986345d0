//! Request/reply with a deadline: each outcome (reply, timeout, dropped, stopped, full), each
//! form (from an actor, blocking, a future), each kind of target (address, recipient, pool,
//! a name from the registry), and exactly one outcome per ask under racing deadlines.

use kendynet::{
    Actor, ActorId, Addr, AskError, AskFuture, Context, Pool, PoolRouting, Recipient, ReplyTo,
    SpawnOptions, StopReason, System,
};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a test waits for something that must happen (a bound, never a sleep).
const WAIT: Duration = Duration::from_secs(10);
/// A deadline that must not be what ends an ask in a test that checks causality.
const LONG: Duration = Duration::from_secs(60);

fn system(workers: usize) -> System {
    System::builder()
        .workers(workers)
        .build()
        .expect("system starts")
}

// ----- a callee with every behaviour -----

/// What the callee does with a request.
enum Req {
    /// Replies `n + 1`.
    Inc(u64, ReplyTo<u64>),
    /// Drops the reply handle unanswered.
    Drop(ReplyTo<u64>),
    /// Keeps the handle (no reply until `ReplyHeld`).
    Hold(ReplyTo<u64>),
    /// Answers the held handle with `n`; reports whether the reply was taken.
    ReplyHeld(u64, mpsc::Sender<Result<(), u64>>),
    /// Blocks until the gate opens (after telling `entered`), to keep the callee busy.
    Block(mpsc::Sender<()>, mpsc::Receiver<()>),
    /// Replies with its own id.
    Who(ReplyTo<ActorId>),
    /// Stops.
    Stop,
}

#[derive(Default)]
struct Callee {
    held: Vec<ReplyTo<u64>>,
    stopped: Option<mpsc::Sender<()>>,
}

impl Actor for Callee {
    type Msg = Req;
    fn handle(&mut self, msg: Req, ctx: &mut Context<Self>) {
        match msg {
            Req::Inc(n, reply) => {
                let _ = reply.reply(n + 1);
            }
            Req::Drop(reply) => drop(reply),
            Req::Hold(reply) => self.held.push(reply),
            Req::ReplyHeld(n, out) => {
                let reply = self.held.pop().expect("a held reply");
                out.send(reply.reply(n)).unwrap();
            }
            Req::Block(entered, gate) => {
                entered.send(()).unwrap();
                gate.recv_timeout(WAIT).expect("the test opens the gate");
            }
            Req::Who(reply) => {
                let _ = reply.reply(ctx.id());
            }
            Req::Stop => ctx.stop(),
        }
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.stopped.take() {
            tx.send(()).unwrap();
        }
    }
}

// ----- an asker: asks from a handler, reports each outcome -----

type Build = Box<dyn FnOnce(ReplyTo<u64>) -> Req + Send>;

enum AskerMsg {
    /// Ask the callee with this request and deadline.
    Ask(Build, Duration),
    /// An outcome, tagged with when the ask was made.
    Outcome(Instant, Result<u64, AskError>),
}

struct Asker {
    callee: Addr<Callee>,
    out: mpsc::Sender<(Duration, Result<u64, AskError>)>,
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, msg: AskerMsg, ctx: &mut Context<Self>) {
        match msg {
            AskerMsg::Ask(build, deadline) => {
                let t0 = Instant::now();
                ctx.ask(&self.callee, build, deadline, move |res| {
                    AskerMsg::Outcome(t0, res)
                });
            }
            AskerMsg::Outcome(t0, res) => self.out.send((t0.elapsed(), res)).unwrap(),
        }
    }
}

type Outcomes = mpsc::Receiver<(Duration, Result<u64, AskError>)>;

fn asker(sys: &System, callee: &Addr<Callee>) -> (Addr<Asker>, Outcomes) {
    let (tx, rx) = mpsc::channel();
    let a = sys.spawn(Asker {
        callee: callee.clone(),
        out: tx,
    });
    (a, rx)
}

fn ask(a: &Addr<Asker>, build: impl FnOnce(ReplyTo<u64>) -> Req + Send + 'static, d: Duration) {
    a.send(AskerMsg::Ask(Box::new(build), d))
        .unwrap_or_else(|_| panic!("the asker takes messages"));
}

/// The next outcome, and that no second one follows for the same ask (checked at the end of
/// each test through `no_more`).
fn outcome(rx: &Outcomes) -> Result<u64, AskError> {
    rx.recv_timeout(WAIT).expect("an outcome arrives").1
}

/// Stops the asker (its `stopped` closes the channel) and checks nothing else was delivered.
fn no_more(sys: System, rx: Outcomes) {
    let report = sys.shutdown(WAIT);
    assert!(report.graceful, "{report:?}");
    let extra: Vec<_> = rx.try_iter().collect();
    assert!(extra.is_empty(), "outcomes beyond one per ask: {extra:?}");
}

#[test]
fn a_reply_comes_back_as_a_message_of_the_asker() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let (a, rx) = asker(&sys, &callee);
    for n in 0..100 {
        ask(&a, move |r| Req::Inc(n, r), LONG);
        assert_eq!(outcome(&rx), Ok(n + 1));
    }
    no_more(sys, rx);
}

#[test]
fn no_reply_before_the_deadline_is_a_timeout() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let (a, rx) = asker(&sys, &callee);
    ask(&a, Req::Hold, Duration::from_millis(20));
    assert_eq!(outcome(&rx), Err(AskError::Timeout));
    // A reply after the deadline is handed back to the callee, and not delivered.
    let (tx, taken) = mpsc::channel();
    callee.send(Req::ReplyHeld(5, tx)).unwrap();
    assert_eq!(taken.recv_timeout(WAIT).unwrap(), Err(5));
    no_more(sys, rx);
}

#[test]
fn a_dropped_reply_handle_is_reported_at_once_not_at_the_deadline() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let (a, rx) = asker(&sys, &callee);
    // The deadline is far past the wait: only the drop can end this ask in time.
    ask(&a, Req::Drop, LONG);
    assert_eq!(outcome(&rx), Err(AskError::Dropped));
    no_more(sys, rx);
}

#[test]
fn a_request_left_queued_when_the_callee_stops_is_dropped_at_once() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let (a, rx) = asker(&sys, &callee);
    let (entered, gate_rx, gate) = gate();
    callee.send(Req::Block(entered, gate_rx)).unwrap();
    gate.entered();
    callee.send(Req::Stop).unwrap();
    ask(&a, Req::Hold, LONG);
    // The ask is queued behind the stop; wait until it is, then let the callee go.
    let give_up = Instant::now() + WAIT;
    while callee.mailbox_len() < 2 {
        assert!(Instant::now() < give_up, "the ask was never queued");
        thread::yield_now();
    }
    gate.open();
    assert_eq!(outcome(&rx), Err(AskError::Dropped));
    no_more(sys, rx);
}

/// A one-shot gate for a callee blocked in `Req::Block`.
struct Gate {
    entered: mpsc::Receiver<()>,
    open: mpsc::Sender<()>,
}

impl Gate {
    fn entered(&self) {
        self.entered.recv_timeout(WAIT).expect("the callee blocks");
    }
    fn open(&self) {
        self.open.send(()).unwrap();
    }
}

fn gate() -> (mpsc::Sender<()>, mpsc::Receiver<()>, Gate) {
    let (entered_tx, entered) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    (entered_tx, open_rx, Gate { entered, open })
}

#[test]
fn asking_a_stopped_actor_fails_at_once() {
    let sys = system(2);
    let (tx, stopped) = mpsc::channel();
    let callee = sys.spawn(Callee {
        stopped: Some(tx),
        ..Callee::default()
    });
    callee.send(Req::Stop).unwrap();
    stopped.recv_timeout(WAIT).expect("the callee stops");
    assert!(!callee.is_alive());

    let (a, rx) = asker(&sys, &callee);
    ask(&a, |r| Req::Inc(1, r), LONG);
    assert_eq!(outcome(&rx), Err(AskError::Stopped));
    assert_eq!(
        callee.ask_blocking(|r| Req::Inc(1, r), LONG),
        Err(AskError::Stopped)
    );
    assert_eq!(
        block_on(callee.ask(|r| Req::Inc(1, r), LONG)),
        Err(AskError::Stopped)
    );
    no_more(sys, rx);
}

#[test]
fn a_full_mailbox_fails_at_once() {
    let sys = system(2);
    let callee = sys
        .spawn_with(
            Callee::default(),
            SpawnOptions::default().mailbox_capacity(1),
        )
        .unwrap();
    let (a, rx) = asker(&sys, &callee);
    let (entered, gate_rx, gate) = gate();
    callee.send(Req::Block(entered, gate_rx)).unwrap();
    gate.entered();
    // The callee is busy and its one place is taken.
    callee.send(Req::Drop(dummy_reply(&sys))).unwrap();
    ask(&a, |r| Req::Inc(1, r), LONG);
    assert_eq!(outcome(&rx), Err(AskError::Full));
    assert_eq!(
        callee.ask_blocking(|r| Req::Inc(1, r), LONG),
        Err(AskError::Full)
    );
    gate.open();
    // Once there is room again, asks go through.
    let deadline = Instant::now() + WAIT;
    loop {
        match callee.ask_blocking(|r| Req::Inc(1, r), LONG) {
            Ok(v) => break assert_eq!(v, 2),
            Err(AskError::Full) if Instant::now() < deadline => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    no_more(sys, rx);
}

/// A reply handle whose ask nobody waits for (to fill a mailbox with).
fn dummy_reply(sys: &System) -> ReplyTo<u64> {
    let holder = sys.spawn(Callee::default());
    let (tx, rx) = mpsc::channel();
    let fut = holder.ask(
        |r| {
            tx.send(r).unwrap();
            Req::Stop
        },
        LONG,
    );
    drop(fut);
    rx.recv().unwrap()
}

// ----- outside the system -----

#[test]
fn a_plain_thread_asks_and_blocks_until_the_outcome() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    assert_eq!(callee.ask_blocking(|r| Req::Inc(41, r), LONG), Ok(42));
    assert_eq!(
        callee.ask_blocking(Req::Drop, LONG),
        Err(AskError::Dropped),
        "dropped: at once, long before the timeout"
    );
    assert_eq!(
        callee.ask_blocking(Req::Hold, Duration::from_millis(20)),
        Err(AskError::Timeout)
    );
    // Several threads at once.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let callee = callee.clone();
            thread::spawn(move || {
                for n in 0..200 {
                    let v = t * 1000 + n;
                    assert_eq!(callee.ask_blocking(|r| Req::Inc(v, r), LONG), Ok(v + 1));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    sys.shutdown(WAIT);
}

#[test]
fn ask_blocking_on_a_worker_of_the_same_system_panics_with_a_clear_message() {
    struct Blocker {
        callee: Addr<Callee>,
        out: mpsc::Sender<String>,
    }
    impl Actor for Blocker {
        type Msg = ();
        fn handle(&mut self, (): (), _: &mut Context<Self>) {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.callee.ask_blocking(|r| Req::Inc(1, r), LONG)
            }));
            let text = match res {
                Ok(r) => format!("returned {r:?}"),
                Err(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
            };
            self.out.send(text).unwrap();
        }
    }
    let sys = system(1);
    let callee = sys.spawn(Callee::default());
    let (tx, rx) = mpsc::channel();
    let b = sys.spawn(Blocker { callee, out: tx });
    b.send(()).unwrap();
    let text = rx.recv_timeout(WAIT).unwrap();
    assert!(text.contains("worker thread"), "{text}");
    sys.shutdown(WAIT);
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: polls on this thread, parks between polls (bounded by `WAIT`).
fn block_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let give_up = Instant::now() + WAIT;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < give_up, "the future was never woken");
        thread::park_timeout(WAIT);
    }
}

#[test]
fn the_future_form_works_under_a_hand_written_executor() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    assert_eq!(block_on(callee.ask(|r| Req::Inc(1, r), LONG)), Ok(2));
    assert_eq!(
        block_on(callee.ask(Req::Drop, LONG)),
        Err(AskError::Dropped)
    );
    // The deadline runs on the system's timers, which wake the future.
    assert_eq!(
        block_on(callee.ask(Req::Hold, Duration::from_millis(20))),
        Err(AskError::Timeout)
    );
    // Made on one thread, awaited on another.
    let fut: AskFuture<u64> = callee.ask(|r| Req::Inc(9, r), LONG);
    let got = thread::spawn(move || block_on(fut)).join().unwrap();
    assert_eq!(got, Ok(10));
    sys.shutdown(WAIT);
}

#[test]
fn a_dropped_future_abandons_the_ask_and_hands_a_late_reply_back() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let fut = callee.ask(Req::Hold, LONG);
    // Wait until the callee holds the handle.
    let (tx, rx) = mpsc::channel();
    let probe = callee.ask(|r| Req::Inc(0, r), LONG);
    assert_eq!(block_on(probe), Ok(1));
    drop(fut);
    callee.send(Req::ReplyHeld(3, tx)).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Err(3));
    sys.shutdown(WAIT);
}

#[test]
fn the_future_form_works_under_tokio() {
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let a = callee.ask(|r| Req::Inc(1, r), LONG).await;
        let b = callee.ask(Req::Hold, Duration::from_millis(20)).await;
        let c = callee.ask(Req::Drop, LONG).await;
        (a, b, c)
    });
    assert_eq!(got, (Ok(2), Err(AskError::Timeout), Err(AskError::Dropped)));
    sys.shutdown(WAIT);
}

// ----- targets -----

/// A request that reaches `Callee` through a `Recipient<Inc>`.
struct Inc(u64, ReplyTo<u64>);

impl From<Inc> for Req {
    fn from(Inc(n, r): Inc) -> Req {
        Req::Inc(n, r)
    }
}

#[test]
fn a_recipient_can_be_asked_from_an_actor_and_from_outside() {
    struct RecAsker {
        to: Recipient<Inc>,
        out: mpsc::Sender<Result<u64, AskError>>,
    }
    impl Actor for RecAsker {
        type Msg = Option<Result<u64, AskError>>;
        fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>) {
            match msg {
                None => ctx.ask(&self.to, |r| Inc(10, r), LONG, Some),
                Some(res) => self.out.send(res).unwrap(),
            }
        }
    }
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let to: Recipient<Inc> = callee.recipient();
    assert_eq!(to.ask_blocking(|r| Inc(1, r), LONG), Ok(2));
    assert_eq!(block_on(to.ask(|r| Inc(2, r), LONG)), Ok(3));
    let (tx, rx) = mpsc::channel();
    let a = sys.spawn(RecAsker { to, out: tx });
    a.send(None).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(11));
    sys.shutdown(WAIT);
}

#[test]
fn a_pool_is_answered_by_a_free_instance() {
    let sys = system(2);
    let pool = Pool::spawn(&sys, 2, PoolRouting::LeastLoaded, |_| Callee::default());
    let ids: Vec<ActorId> = pool.members().iter().map(Addr::id).collect();
    // Instance 0 is stuck in a long handler: every ask goes to the other one.
    let (entered, gate_rx, gate) = gate();
    pool.members()[0]
        .send(Req::Block(entered, gate_rx))
        .unwrap();
    gate.entered();
    for _ in 0..20 {
        assert_eq!(pool.ask_blocking(Req::Who, LONG), Ok(ids[1]));
        assert_eq!(block_on(pool.ask(Req::Who, LONG)), Ok(ids[1]));
    }
    gate.open();
    // From an actor, through the pool.
    struct PoolAsker {
        pool: Pool<Callee>,
        out: mpsc::Sender<Result<ActorId, AskError>>,
    }
    impl Actor for PoolAsker {
        type Msg = Option<Result<ActorId, AskError>>;
        fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>) {
            match msg {
                None => ctx.ask(&self.pool, Req::Who, LONG, Some),
                Some(res) => self.out.send(res).unwrap(),
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let a = sys.spawn(PoolAsker {
        pool: pool.clone(),
        out: tx,
    });
    a.send(None).unwrap();
    let id = rx.recv_timeout(WAIT).unwrap().unwrap();
    assert!(ids.contains(&id));
    sys.shutdown(WAIT);
}

#[test]
fn a_name_looked_up_in_the_registry_can_be_asked() {
    struct ByName {
        out: mpsc::Sender<Result<u64, AskError>>,
    }
    impl Actor for ByName {
        type Msg = Option<Result<u64, AskError>>;
        fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>) {
            match msg {
                None => {
                    let accounts: Addr<Callee> =
                        ctx.system().lookup("accounts").expect("registered");
                    ctx.ask(&accounts, |r| Req::Inc(100, r), LONG, Some);
                }
                Some(res) => self.out.send(res).unwrap(),
            }
        }
    }
    let sys = system(2);
    sys.spawn_with(Callee::default(), SpawnOptions::default().name("accounts"))
        .unwrap();
    let found: Addr<Callee> = sys.lookup("accounts").expect("registered");
    assert_eq!(found.ask_blocking(|r| Req::Inc(1, r), LONG), Ok(2));
    let (tx, rx) = mpsc::channel();
    let a = sys.spawn(ByName { out: tx });
    a.send(None).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(101));
    sys.shutdown(WAIT);
}

// ----- the map and the asker -----

#[test]
fn a_panicking_outcome_map_stops_the_asker_with_the_panic() {
    struct Careless(Addr<Callee>);
    impl Actor for Careless {
        type Msg = ();
        fn handle(&mut self, (): (), ctx: &mut Context<Self>) {
            ctx.ask(
                &self.0,
                |r| Req::Inc(1, r),
                LONG,
                |_: Result<u64, _>| panic!("map exploded"),
            );
        }
    }
    /// Watches the asker and reports why it stopped.
    struct Watch(Addr<Careless>, mpsc::Sender<StopReason>);
    impl Actor for Watch {
        type Msg = ();
        fn handle(&mut self, (): (), _: &mut Context<Self>) {}
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.watch(&self.0);
        }
        fn watched_stopped(&mut self, _: ActorId, reason: &StopReason, _: &mut Context<Self>) {
            self.1.send(reason.clone()).unwrap();
        }
    }
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let careless = sys.spawn(Careless(callee));
    let (tx, rx) = mpsc::channel();
    sys.spawn(Watch(careless.clone(), tx));
    careless.send(()).unwrap();
    match rx.recv_timeout(WAIT).unwrap() {
        StopReason::Panicked(m) => assert!(m.contains("map exploded"), "{m}"),
        other => panic!("{other:?}"),
    }
    sys.shutdown(WAIT);
}

// ----- exactly once -----

/// Many asks at once with tiny deadlines racing replies, drops and late replies, from actors
/// on two workers and from plain threads: every ask gets exactly one outcome.
#[test]
fn every_ask_gets_exactly_one_outcome_under_racing_deadlines() {
    const ASKERS: usize = 4;
    const ASKS: u64 = 2_000;
    const THREADS: u64 = 2;

    /// Replies, drops, or holds and replies later, by the request's number.
    struct Racer {
        held: Vec<ReplyTo<u64>>,
    }
    impl Actor for Racer {
        type Msg = (u64, ReplyTo<u64>);
        fn handle(&mut self, (n, reply): (u64, ReplyTo<u64>), _: &mut Context<Self>) {
            match n % 4 {
                0 => drop(reply),
                1 => self.held.push(reply),
                _ => {
                    let _ = reply.reply(n);
                }
            }
            if self.held.len() > 3 || n % 7 == 0 {
                for r in self.held.drain(..) {
                    let _ = r.reply(u64::MAX);
                }
            }
        }
    }

    struct Many {
        pool: Pool<Racer>,
        seen: Vec<u8>,
        outcomes: u64,
        done: mpsc::Sender<(Vec<u8>, [u64; 4])>,
        kinds: [u64; 4],
    }
    enum ManyMsg {
        Go,
        Outcome(u64, Result<u64, AskError>),
    }
    impl Actor for Many {
        type Msg = ManyMsg;
        fn handle(&mut self, msg: ManyMsg, ctx: &mut Context<Self>) {
            match msg {
                ManyMsg::Go => {
                    for i in 0..ASKS {
                        // Deadlines from zero to a few tens of microseconds.
                        let deadline = Duration::from_micros((i * 7919) % 40);
                        ctx.ask(
                            &self.pool,
                            |r| (i, r),
                            deadline,
                            move |res| ManyMsg::Outcome(i, res),
                        );
                    }
                }
                ManyMsg::Outcome(i, res) => {
                    self.seen[i as usize] += 1;
                    self.outcomes += 1;
                    let k = match res {
                        Ok(_) => 0,
                        Err(AskError::Timeout) => 1,
                        Err(AskError::Dropped) => 2,
                        Err(_) => 3,
                    };
                    self.kinds[k] += 1;
                    if self.outcomes == ASKS {
                        self.done
                            .send((std::mem::take(&mut self.seen), self.kinds))
                            .unwrap();
                    }
                }
            }
        }
    }

    let sys = system(2);
    let pool = Pool::spawn(&sys, 3, PoolRouting::RoundRobin, |_| Racer {
        held: Vec::new(),
    });
    let (tx, rx) = mpsc::channel();
    let askers: Vec<_> = (0..ASKERS)
        .map(|_| {
            sys.spawn(Many {
                pool: pool.clone(),
                seen: vec![0; ASKS as usize],
                outcomes: 0,
                done: tx.clone(),
                kinds: [0; 4],
            })
        })
        .collect();
    let outside = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, outside) = (pool.clone(), outside.clone());
            thread::spawn(move || {
                for i in 0..ASKS / 4 {
                    let d = Duration::from_micros((i * 31 + t) % 30);
                    let n = i * 4 + (i % 4);
                    let _ = if i % 2 == 0 {
                        pool.ask_blocking(|r| (n, r), d)
                    } else {
                        block_on(pool.ask(|r| (n, r), d))
                    };
                    outside.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for a in &askers {
        a.send(ManyMsg::Go).unwrap_or_else(|_| panic!("alive"));
    }
    let mut kinds = [0u64; 4];
    for _ in 0..ASKERS {
        let (seen, k) = rx.recv_timeout(WAIT).expect("every ask settles");
        assert!(
            seen.iter().all(|&c| c == 1),
            "an ask settled {:?} times",
            seen.iter().find(|&&c| c != 1)
        );
        for (sum, x) in kinds.iter_mut().zip(k) {
            *sum += x;
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(outside.load(Ordering::Relaxed) as u64, THREADS * ASKS / 4);
    assert_eq!(kinds.iter().sum::<u64>(), ASKERS as u64 * ASKS);
    assert_eq!(kinds[3], 0, "no Stopped or Full: {kinds:?}");
    println!("outcomes (reply, timeout, dropped): {kinds:?}");
    // Let late outcomes (there must be none) arrive before counting again: shut down, then
    // nothing more came.
    sys.shutdown(WAIT);
    assert!(rx.try_recv().is_err(), "a second round of outcomes");
}

#[test]
fn the_handles_are_send_and_the_error_is_an_error() {
    fn send<T: Send>() {}
    fn unpin<T: Unpin>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<ReplyTo<u64>>();
    send::<AskFuture<u64>>();
    unpin::<AskFuture<u64>>();
    error::<AskError>();
    assert_eq!(AskError::Timeout.to_string(), "the ask timed out");
    assert_eq!(
        kendynet::MAX_ASK_DEADLINE,
        Duration::from_secs(24 * 60 * 60)
    );
}

/// Both bridges to tokio: an actor hands async work to a tokio runtime through its
/// `Handle` and gets the result back as a message; the async task itself awaits an ask.
#[test]
fn an_actor_hands_work_to_tokio_and_the_task_asks_an_actor_back() {
    struct Bridge {
        rt: tokio::runtime::Handle,
        callee: Addr<Callee>,
        out: mpsc::Sender<Result<u64, AskError>>,
    }
    enum BridgeMsg {
        Fetch(u64),
        Fetched(Result<u64, AskError>),
    }
    impl Actor for Bridge {
        type Msg = BridgeMsg;
        fn handle(&mut self, msg: BridgeMsg, ctx: &mut Context<Self>) {
            match msg {
                BridgeMsg::Fetch(n) => {
                    let (me, callee) = (ctx.addr(), self.callee.clone());
                    self.rt.spawn(async move {
                        // Async work (a database call, say), then an ask from async code.
                        let v = callee.ask(|r| Req::Inc(n, r), LONG).await;
                        let _ = me.send(BridgeMsg::Fetched(v));
                    });
                }
                BridgeMsg::Fetched(v) => self.out.send(v).unwrap(),
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let sys = system(2);
    let callee = sys.spawn(Callee::default());
    let (tx, rx) = mpsc::channel();
    let bridge = sys.spawn(Bridge {
        rt: rt.handle().clone(),
        callee,
        out: tx,
    });
    bridge
        .send(BridgeMsg::Fetch(41))
        .unwrap_or_else(|_| panic!("alive"));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(42));
    sys.shutdown(WAIT);
    rt.shutdown_timeout(WAIT);
}
