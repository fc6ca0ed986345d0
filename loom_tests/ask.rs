//! The reply slot of an ask: a reply or a drop of the reply handle on one thread, the
//! deadline timer firing on a worker, and the cancel handed from the one to the other,
//! racing on a real system. Whatever the interleaving, the outcome is delivered exactly
//! once (the asker's `map` runs once), and it agrees with what the callee was told.

use super::*;
use kendynet::{AskError, ReplyTo};
use loom::sync::{Condvar, Mutex};
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Wake, Waker};

/// A waker the model can see: a flag under a loom mutex and a condition variable.
#[derive(Default)]
struct Signal {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for Signal {
    fn wake(self: std::sync::Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

/// Polls `fut` on the model's thread, sleeping on the signal between polls (a lost wake-up
/// is a deadlock, which loom reports).
fn block_on<F: Future>(fut: F) -> F::Output {
    let signal = std::sync::Arc::new(Signal::default());
    let waker = Waker::from(signal.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = signal.woken.lock().unwrap();
        while !*woken {
            woken = signal.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}

/// Hands each reply handle to the model's thread.
struct Callee(Sender<ReplyTo<u32>>);

impl Actor for Callee {
    type Msg = ReplyTo<u32>;
    fn handle(&mut self, reply: ReplyTo<u32>, _: &mut Context<Self>) {
        self.0.send(reply).unwrap();
    }
}

enum AskerMsg {
    Go,
    Outcome(Result<u32, AskError>),
}

/// Asks once with a zero deadline (the timer fires at its worker's next look), counts the
/// calls of its `map` and reports the outcome.
struct Asker {
    callee: Addr<Callee>,
    maps: Arc<AtomicUsize>,
    out: Sender<Result<u32, AskError>>,
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, msg: AskerMsg, ctx: &mut Context<Self>) {
        match msg {
            AskerMsg::Go => {
                let maps = self.maps.clone();
                ctx.ask(
                    &self.callee,
                    |r| r,
                    Duration::ZERO,
                    move |res| {
                        maps.fetch_add(1, Ordering::SeqCst);
                        AskerMsg::Outcome(res)
                    },
                );
            }
            AskerMsg::Outcome(res) => self.out.send(res).unwrap(),
        }
    }
}

/// Runs one ask whose reply handle the model's thread settles with `answer` (which returns
/// whether a reply was taken) while the deadline fires on the worker.
/// Counts, across a model's executions, how many ended in the callee's answer (`[0]`) and
/// how many in the timeout (`[1]`); one per test, as tests run in parallel.
type Tally = [std::sync::atomic::AtomicUsize; 2];

fn race(answer: fn(ReplyTo<u32>) -> bool, tally: &'static Tally) {
    model(move || {
        let sys = system(1);
        let (reply_tx, reply_rx) = channel();
        let (out_tx, out_rx) = channel();
        let maps = Arc::new(AtomicUsize::new(0));
        let callee = sys.spawn(Callee(reply_tx));
        let asker = sys.spawn(Asker {
            callee,
            maps: maps.clone(),
            out: out_tx,
        });
        if asker.send(AskerMsg::Go).is_err() {
            panic!("the asker takes messages");
        }
        let reply = reply_rx.recv().unwrap();
        let taken = answer(reply);
        let outcome = out_rx.recv().unwrap();
        let timed_out = outcome == Err(AskError::Timeout);
        tally[usize::from(timed_out)].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match outcome {
            Ok(7) => assert!(
                taken,
                "a reply was delivered that the callee was told was not"
            ),
            Err(AskError::Timeout) => assert!(!taken, "the callee's reply was taken and lost"),
            Err(AskError::Dropped) => assert!(!taken, "dropped, yet the reply was taken"),
            other => panic!("unexpected outcome {other:?}"),
        }
        // Every racer is done once the workers have left (a timer still pending then is
        // dropped, and settles nothing).
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
        assert_eq!(maps.load(Ordering::SeqCst), 1, "one outcome per ask");
        assert!(out_rx.try_recv().is_err(), "a second outcome");
    });
}

fn both_won_somewhere(tally: &Tally) {
    let answered = tally[0].load(std::sync::atomic::Ordering::SeqCst);
    let timed_out = tally[1].load(std::sync::atomic::Ordering::SeqCst);
    println!("executions: {answered} answered, {timed_out} timed out");
    assert!(
        answered > 0 && timed_out > 0,
        "the race was never run both ways"
    );
}

/// A reply from the model's thread races the deadline firing on the worker; the winner's
/// cancel of the timer crosses threads.
#[test]
fn ask_reply_racing_the_deadline_settles_once() {
    static TALLY: Tally = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];
    race(|reply| reply.reply(7).is_ok(), &TALLY);
    both_won_somewhere(&TALLY);
}

/// The reply handle dropped on the model's thread races the deadline.
#[test]
fn ask_drop_racing_the_deadline_settles_once() {
    static TALLY: Tally = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];
    race(
        |reply| {
            drop(reply);
            false
        },
        &TALLY,
    );
    both_won_somewhere(&TALLY);
}

/// The future form, from outside: the deadline timer is set from a thread outside the pool
/// (its flag races the cancel), the callee replies on the worker, and the model's thread
/// awaits the future with loom's executor.
#[test]
fn ask_future_reply_racing_the_outside_deadline_settles_once() {
    struct Echo;
    impl Actor for Echo {
        type Msg = (u32, ReplyTo<u32>);
        fn handle(&mut self, (n, reply): (u32, ReplyTo<u32>), _: &mut Context<Self>) {
            let _ = reply.reply(n);
        }
    }
    model(|| {
        let sys = system(1);
        let echo = sys.spawn(Echo);
        let outcome = block_on(echo.ask(|r| (5, r), Duration::ZERO));
        assert!(
            matches!(outcome, Ok(5) | Err(AskError::Timeout)),
            "{outcome:?}"
        );
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// Asks twice in sequence (the second when the first settles), so that the second may reuse
/// the first one's slot, while the model's thread is still dropping the first reply handle.
struct TwiceAsker {
    callee: Addr<Callee>,
    maps: Arc<AtomicUsize>,
    asked: u32,
    out: Sender<Result<u32, AskError>>,
}

impl TwiceAsker {
    fn ask(&mut self, ctx: &mut Context<Self>) {
        self.asked += 1;
        let maps = self.maps.clone();
        ctx.ask(
            &self.callee,
            |r| r,
            Duration::ZERO,
            move |res| {
                maps.fetch_add(1, Ordering::SeqCst);
                AskerMsg::Outcome(res)
            },
        );
    }
}

impl Actor for TwiceAsker {
    type Msg = AskerMsg;
    fn handle(&mut self, msg: AskerMsg, ctx: &mut Context<Self>) {
        match msg {
            AskerMsg::Go => self.ask(ctx),
            AskerMsg::Outcome(res) => {
                self.out.send(res).unwrap();
                if self.asked == 1 {
                    self.ask(ctx);
                }
            }
        }
    }
}

/// Two asks in sequence, each answered from the model's thread while its deadline fires:
/// one outcome each, in agreement with what the callee was told, whether or not the second
/// reused the first one's slot.
#[test]
fn ask_in_sequence_reusing_the_slot_settles_each_once() {
    model(|| {
        let sys = system(1);
        let (reply_tx, reply_rx) = channel();
        let (out_tx, out_rx) = channel();
        let maps = Arc::new(AtomicUsize::new(0));
        let callee = sys.spawn(Callee(reply_tx));
        let asker = sys.spawn(TwiceAsker {
            callee,
            maps: maps.clone(),
            asked: 0,
            out: out_tx,
        });
        if asker.send(AskerMsg::Go).is_err() {
            panic!("the asker takes messages");
        }
        for value in [7, 8] {
            let taken = reply_rx.recv().unwrap().reply(value).is_ok();
            let outcome = out_rx.recv().unwrap();
            match outcome {
                Ok(v) => assert!(taken && v == value, "{outcome:?}, taken: {taken}"),
                Err(AskError::Timeout) => assert!(!taken, "a taken reply was lost"),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
        assert_eq!(maps.load(Ordering::SeqCst), 2, "one outcome per ask");
        assert!(out_rx.try_recv().is_err(), "a third outcome");
    });
}
