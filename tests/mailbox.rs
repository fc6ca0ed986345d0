//! An actor's mailbox: messages from one sender arrive in the order sent, with many senders
//! at once (threads and actors); a bounded mailbox refuses a send when full, and a stopped
//! actor's refuses every send, each time handing the message back.
//!
//! Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::{Actor, Addr, Context, SpawnOptions, StopReason, System, TrySendError};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use support::actors::{Watcher, expect_stopped, watch};
use support::{WAIT, recv, shutdown_gracefully};

/// Checks that every sender's messages arrive in order.
struct FifoSink {
    next: Vec<u64>,
    violations: u64,
}

enum FifoMsg {
    Item(usize, u64),
    Report(Sender<(Vec<u64>, u64)>),
}

impl Actor for FifoSink {
    type Msg = FifoMsg;
    fn handle(&mut self, msg: FifoMsg, _: &mut Context<Self>) {
        match msg {
            FifoMsg::Item(sender, seq) => {
                if self.next[sender] != seq {
                    self.violations += 1;
                }
                self.next[sender] = seq + 1;
            }
            FifoMsg::Report(reply) => {
                let _ = reply.send((self.next.clone(), self.violations));
            }
        }
    }
}

/// An actor that sends its share to the sink a chunk per turn (so that its sends interleave
/// with everyone else's, from whichever worker runs it).
struct Pump {
    id: usize,
    sink: Addr<FifoSink>,
    next: u64,
    total: u64,
    done: Sender<usize>,
}

impl Actor for Pump {
    type Msg = ();
    fn handle(&mut self, (): (), ctx: &mut Context<Self>) {
        let end = (self.next + 97).min(self.total);
        while self.next < end {
            self.sink.send(FifoMsg::Item(self.id, self.next)).unwrap();
            self.next += 1;
        }
        if self.next < self.total {
            ctx.addr().send(()).unwrap();
        } else {
            let _ = self.done.send(self.id);
        }
    }
}

/// Messages from one sender arrive in order, with many senders at once (threads and
/// actors).
#[test]
fn per_sender_fifo_under_many_concurrent_senders() {
    const THREADS: usize = 8;
    const PUMPS: usize = 4;
    const EACH: u64 = 10_000;
    let system = System::builder().workers(3).build().unwrap();
    let sink = system.spawn(FifoSink {
        next: vec![0; THREADS + PUMPS],
        violations: 0,
    });
    let (done_tx, done_rx) = mpsc::channel();
    let pumps: Vec<Addr<Pump>> = (0..PUMPS)
        .map(|i| {
            system.spawn(Pump {
                id: THREADS + i,
                sink: sink.clone(),
                next: 0,
                total: EACH,
                done: done_tx.clone(),
            })
        })
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<JoinHandle<()>> = (0..THREADS)
        .map(|id| {
            let (sink, barrier) = (sink.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for seq in 0..EACH {
                    sink.send(FifoMsg::Item(id, seq)).unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    for p in &pumps {
        p.send(()).unwrap();
    }
    for t in threads {
        t.join().expect("sender thread panicked");
    }
    for _ in 0..PUMPS {
        recv(&done_rx, "the pumps to finish");
    }
    let (tx, rx) = mpsc::channel();
    sink.send(FifoMsg::Report(tx)).unwrap();
    let (next, violations) = recv(&rx, "the sink's report");
    assert_eq!(violations, 0, "messages from one sender were reordered");
    assert_eq!(next, vec![EACH; THREADS + PUMPS], "messages were lost");
    shutdown_gracefully(system);
}

/// Blocks in its first handler until released; reports what it handles.
struct Blocker {
    release: Option<Receiver<()>>,
    entered: Sender<u32>,
    handled: Sender<u32>,
}

impl Actor for Blocker {
    type Msg = u32;
    fn handle(&mut self, n: u32, _: &mut Context<Self>) {
        let _ = self.entered.send(n);
        if let Some(release) = self.release.take() {
            release
                .recv_timeout(WAIT)
                .expect("the test to release the blocker");
        }
        let _ = self.handled.send(n);
    }
}

/// A bounded mailbox refuses a send when full and hands the message back; a stopped
/// actor refuses with `Closed`.
#[test]
fn bounded_mailbox_hands_back_the_message_when_full_and_after_stop() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (handled_tx, handled_rx) = mpsc::channel();
    let blocker = system
        .spawn_with(
            Blocker {
                release: Some(release_rx),
                entered: entered_tx,
                handled: handled_tx,
            },
            SpawnOptions::default().mailbox_capacity(2),
        )
        .unwrap();
    watch(&watcher, &blocker);
    blocker.send(1).unwrap();
    assert_eq!(recv(&entered_rx, "the blocker to take 1"), 1);
    // 1 is being handled; the mailbox holds two more.
    blocker.send(2).unwrap();
    blocker.send(3).unwrap();
    assert_eq!(blocker.mailbox_len(), 2);
    match blocker.send(4) {
        Err(e @ TrySendError::Full(_)) => {
            assert!(e.is_full() && !e.is_closed());
            assert_eq!(e.into_inner(), 4, "the refused message is handed back");
        }
        other => panic!("send to a full mailbox: {other:?}"),
    }
    assert!(matches!(blocker.send(5), Err(TrySendError::Full(5))));
    let recipient = blocker.recipient::<u32>();
    assert!(matches!(recipient.send(6), Err(TrySendError::Full(6))));
    assert_eq!(blocker.mailbox_len(), 2);

    release_tx.send(()).unwrap();
    for n in 1..=3 {
        assert_eq!(recv(&handled_rx, "the queued messages"), n);
    }
    // Room again; the refused ones never got in.
    blocker.send(7).unwrap();
    assert_eq!(recv(&handled_rx, "a message after the drain"), 7);

    blocker.stop();
    assert_eq!(expect_stopped(&wrx, blocker.id()), StopReason::Normal);
    match blocker.send(8) {
        Err(e @ TrySendError::Closed(_)) => {
            assert!(e.is_closed());
            assert_eq!(e.into_inner(), 8);
        }
        other => panic!("send to a stopped actor: {other:?}"),
    }
    assert!(matches!(recipient.send(9), Err(TrySendError::Closed(9))));
    // What it handled, exactly: 1, 2, 3, 7.
    let entered: Vec<u32> = entered_rx.try_iter().collect();
    assert_eq!(entered, [2, 3, 7]);
    shutdown_gracefully(system);
}
