//! Asks in the test kit's simulation: the deadline follows the manual clock, so a timeout
//! happens exactly when `Sim::advance` passes it, and replay is deterministic.
#![cfg(feature = "testkit")]

use kendynet::testkit::Sim;
use kendynet::{Actor, Addr, AskError, Context, ReplyTo};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Holds each request's handle until told to answer, then answers with the request's tag.
#[derive(Default)]
struct Slow {
    held: Vec<(u32, ReplyTo<u32>)>,
}

enum SlowMsg {
    Req(u32, ReplyTo<u32>),
    Answer,
}

impl Actor for Slow {
    type Msg = SlowMsg;
    fn handle(&mut self, msg: SlowMsg, _: &mut Context<Self>) {
        match msg {
            SlowMsg::Req(tag, r) => self.held.push((tag, r)),
            SlowMsg::Answer => {
                for (tag, r) in self.held.drain(..) {
                    let _ = r.reply(tag);
                }
            }
        }
    }
}

type Log = Arc<Mutex<Vec<(u32, Result<u32, AskError>)>>>;

struct Asker {
    slow: Addr<Slow>,
    log: Log,
}

enum AskerMsg {
    Ask(u32, Duration),
    Got(u32, Result<u32, AskError>),
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, msg: AskerMsg, ctx: &mut Context<Self>) {
        match msg {
            AskerMsg::Ask(tag, deadline) => {
                ctx.ask(
                    &self.slow,
                    |r| SlowMsg::Req(tag, r),
                    deadline,
                    move |res| AskerMsg::Got(tag, res),
                );
            }
            AskerMsg::Got(tag, res) => self.log.lock().unwrap().push((tag, res)),
        }
    }
}

fn taken(log: &Log) -> Vec<(u32, Result<u32, AskError>)> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn an_ask_times_out_exactly_when_the_clock_passes_its_deadline() {
    let sim = Sim::new(11);
    let log: Log = Arc::default();
    let slow = sim.spawn(Slow::default());
    let asker = sim.spawn(Asker {
        slow: slow.clone(),
        log: log.clone(),
    });
    asker
        .send(AskerMsg::Ask(1, Duration::from_secs(2)))
        .unwrap_or_else(|_| panic!("alive"));
    asker
        .send(AskerMsg::Ask(2, Duration::from_secs(5)))
        .unwrap_or_else(|_| panic!("alive"));
    sim.run_until_idle();
    assert_eq!(sim.pending_timers(), 2, "one deadline per ask");
    sim.advance(Duration::from_millis(1999));
    assert_eq!(taken(&log), [], "1.999 s: nothing is due");
    sim.advance(Duration::from_millis(1));
    assert_eq!(taken(&log), [(1, Err(AskError::Timeout))]);
    // The second is answered before its deadline: its timer is cancelled, nothing else comes.
    slow.send(SlowMsg::Answer)
        .unwrap_or_else(|_| panic!("alive"));
    sim.run_until_idle();
    assert_eq!(
        taken(&log),
        [(2, Ok(2))],
        "the first handle was answered too late"
    );
    assert_eq!(sim.pending_timers(), 0, "the reply cancelled the deadline");
    sim.advance(Duration::from_secs(10));
    assert_eq!(taken(&log), []);
}

#[test]
fn the_future_form_follows_the_manual_clock() {
    let sim = Sim::new(12);
    let slow = sim.spawn(Slow::default());
    let mut fut = pin!(slow.ask(|r| SlowMsg::Req(0, r), Duration::from_millis(300)));
    let mut cx = std::task::Context::from_waker(Waker::noop());
    sim.run_until_idle();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    sim.advance(Duration::from_millis(299));
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        fut.as_mut().poll(&mut cx),
        Poll::Ready(Err(AskError::Timeout))
    );
}

#[test]
fn the_same_seed_gives_the_same_outcomes() {
    fn run(seed: u64) -> Vec<(u32, Result<u32, AskError>)> {
        let sim = Sim::new(seed);
        let log: Log = Arc::default();
        let slow = sim.spawn(Slow::default());
        let askers: Vec<_> = (0..3)
            .map(|_| {
                sim.spawn(Asker {
                    slow: slow.clone(),
                    log: log.clone(),
                })
            })
            .collect();
        for (i, a) in askers.iter().enumerate() {
            for k in 0..4u32 {
                let tag = i as u32 * 10 + k;
                a.send(AskerMsg::Ask(tag, Duration::from_millis(u64::from(k) * 10)))
                    .unwrap_or_else(|_| panic!("alive"));
            }
        }
        sim.run_steps(8);
        slow.send(SlowMsg::Answer)
            .unwrap_or_else(|_| panic!("alive"));
        sim.advance(Duration::from_millis(15));
        slow.send(SlowMsg::Answer)
            .unwrap_or_else(|_| panic!("alive"));
        sim.advance(Duration::from_millis(50));
        let out = taken(&log);
        assert_eq!(out.len(), 12, "one outcome per ask: {out:?}");
        out
    }
    assert_eq!(run(21), run(21));
}
