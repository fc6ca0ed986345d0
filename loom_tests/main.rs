//! Loom models of the crate's concurrent structures, driving the crate's own code through the
//! `src/sync.rs` switch. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom
//! ```
#![cfg(loom)]

use kendynet::__loom::{IdleWorkers, Mailbox, NameMap, SchedState, SleepFlag, SockTable};
use kendynet::WPacket;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use std::collections::VecDeque;

/// One actor turn as the runtime does it: start, drain, try to go idle, loop if notified.
/// Returns how many messages it handled. Panics if two turns overlap.
fn run_turn(mb: &Mailbox<u32, ()>, st: &SchedState, running: &AtomicBool) -> usize {
    st.start_run();
    assert!(
        !running.swap(true, Ordering::SeqCst),
        "actor ran on two threads at once"
    );
    let mut batch = VecDeque::new();
    let mut handled = 0;
    loop {
        let (_, drained) = mb.take_batch(&mut batch, 1);
        handled += batch.len();
        batch.clear();
        if !drained {
            continue;
        }
        running.store(false, Ordering::SeqCst);
        if st.try_idle() {
            return handled;
        }
        assert!(
            !running.swap(true, Ordering::SeqCst),
            "actor ran on two threads at once"
        );
    }
}

/// Mailbox push/pop with the idle/scheduled/running transitions: two senders, each running
/// the actor when its notification made it runnable (as a worker would). The actor never runs
/// on two threads at once, and no message is left behind in an idle mailbox.
#[test]
fn mailbox_schedules_exactly_once() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::<u32, ()>::new(0));
        let st = Arc::new(SchedState::new());
        let running = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|i| {
                let (mb, st, running, handled) =
                    (mb.clone(), st.clone(), running.clone(), handled.clone());
                thread::spawn(move || {
                    mb.push(i, false).unwrap();
                    if st.notify() {
                        handled.fetch_add(run_turn(&mb, &st, &running), Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(
            handled.load(Ordering::SeqCst),
            2,
            "a message was left in an idle mailbox"
        );
        // The actor is idle again: the next message schedules it.
        mb.push(9, false).unwrap();
        assert!(st.notify());
    });
}

/// A stand-in for the eventfd: a flag with a condition variable.
struct Signal {
    raised: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            raised: Mutex::new(false),
            cv: Condvar::new(),
        }
    }
    fn raise(&self) {
        *self.raised.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut r = self.raised.lock().unwrap();
        while !*r {
            r = self.cv.wait(r).unwrap();
        }
        *r = false;
    }
}

/// Worker park and wake: a worker that finds nothing announces sleep, looks once more and
/// blocks; a producer queues work and wakes it if it claims the flag. The worker always gets
/// the work (a lost wake-up would leave it blocked, which loom reports as a deadlock).
#[test]
fn worker_park_wake_loses_no_wakeup() {
    loom::model(|| {
        let queue = Arc::new(Mutex::new(VecDeque::<u32>::new()));
        let flag = Arc::new(SleepFlag::new());
        let signal = Arc::new(Signal::new());
        let worker = {
            let (queue, flag, signal) = (queue.clone(), flag.clone(), signal.clone());
            thread::spawn(move || {
                loop {
                    if let Some(t) = queue.lock().unwrap().pop_front() {
                        return t;
                    }
                    flag.announce();
                    if !queue.lock().unwrap().is_empty() {
                        flag.retract();
                        continue;
                    }
                    signal.wait();
                    flag.retract();
                }
            })
        };
        queue.lock().unwrap().push_back(7);
        if flag.claim_wake() {
            signal.raise();
        }
        assert_eq!(worker.join().unwrap(), 7);
    });
}

/// The cross-thread send queue of a socket and its poller wake-up: a sender queues a packet
/// in the slot and, if it was the first to mark the slot, hands it to the poller's remote list
/// and wakes the poller; the poller sleeps with the same protocol and flushes the slot. Every
/// accepted packet reaches the poller.
#[test]
fn socket_send_reaches_sleeping_poller() {
    loom::model(|| {
        let table = Arc::new(SockTable::new());
        let ident = table.alloc_plain(1 << 20).unwrap();
        let remote = Arc::new(Mutex::new(Vec::<u32>::new()));
        let flag = Arc::new(SleepFlag::new());
        let signal = Arc::new(Signal::new());
        let sender = {
            let (table, remote, flag, signal) =
                (table.clone(), remote.clone(), flag.clone(), signal.clone());
            thread::spawn(move || {
                let mut p = WPacket::new();
                p.write_u8(1);
                assert!(table.model_send(ident, p).is_ok());
                // The first mark of the slot is this sender's duty to hand over to the
                // poller (in the runtime the wake target names it; here there is one).
                remote.lock().unwrap().push(ident.to_u64() as u32);
                if flag.claim_wake() {
                    signal.raise();
                }
            })
        };
        // The poller.
        let mut frames = Vec::new();
        loop {
            let dirty: Vec<u32> = std::mem::take(&mut *remote.lock().unwrap());
            for index in dirty {
                table.take_outbox(index, &mut frames);
            }
            if !frames.is_empty() {
                break;
            }
            flag.announce();
            if !remote.lock().unwrap().is_empty() {
                flag.retract();
                continue;
            }
            signal.wait();
            flag.retract();
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &[1, 0, 0, 0, 1]);
        sender.join().unwrap();
    });
}

/// `SockIdent` close racing a send, then slot reuse: a send either lands before the close
/// (and is flushed with it) or is refused as closed; after the slot is freed and reused, the
/// old handle reaches nothing.
#[test]
fn close_races_send_and_stale_handle_after_reuse() {
    loom::model(|| {
        let table = Arc::new(SockTable::new());
        let old = table.alloc_plain(1 << 20).unwrap();
        let sender = {
            let table = table.clone();
            thread::spawn(move || table.model_send(old, WPacket::new()).is_ok())
        };
        let closer = {
            let table = table.clone();
            thread::spawn(move || table.model_close(old).is_ok())
        };
        let sent = sender.join().unwrap();
        assert!(closer.join().unwrap(), "the first close succeeds");
        let mut frames = Vec::new();
        let (_, close, _) = table.take_outbox(old.to_u64() as u32, &mut frames).unwrap();
        assert!(close);
        assert_eq!(
            frames.len(),
            usize::from(sent),
            "an accepted send is flushed, a refused one is not"
        );
        assert!(
            table.model_send(old, WPacket::new()).is_err(),
            "send after close is refused"
        );
        table.release(old);
        let new = table.alloc_plain(1 << 20).unwrap();
        assert_eq!(
            new.to_u64() as u32,
            old.to_u64() as u32,
            "the slot is reused"
        );
        assert!(
            table.model_send(old, WPacket::new()).is_err(),
            "a stale handle is refused"
        );
        assert!(table.model_close(old).is_err());
        let mut frames = Vec::new();
        table.take_outbox(new.to_u64() as u32, &mut frames);
        assert!(frames.is_empty(), "the stale handle reached the new socket");
    });
}

/// Registry register/unregister racing lookup: an actor frees only its own name, a duplicate
/// is refused, and a lookup sees either nothing or a current holder.
#[test]
fn registry_register_unregister_race_lookup() {
    loom::model(|| {
        let map = Arc::new(NameMap::<u32>::new());
        map.try_insert("room", 1).unwrap();
        let leaver = {
            let map = map.clone();
            thread::spawn(move || {
                // Actor 1 stops and frees its name.
                assert!(map.remove_if("room", |v| *v == 1));
            })
        };
        let joiner = {
            let map = map.clone();
            thread::spawn(move || map.try_insert("room", 2).is_ok())
        };
        let looker = {
            let map = map.clone();
            thread::spawn(move || map.get("room"))
        };
        leaver.join().unwrap();
        let joined = joiner.join().unwrap();
        let seen = looker.join().unwrap();
        assert!(matches!(seen, None | Some(1) | Some(2)));
        // Actor 1's late cleanup never removes actor 2's registration.
        assert!(!map.remove_if("room", |v| *v == 1));
        assert_eq!(map.get("room"), if joined { Some(2) } else { None });
    });
}

/// Parking across the pool (`IdleWorkers`): two sleeping workers, two tasks pushed together,
/// the first of which blocks its worker until the second has run. Each push wakes a sleeper,
/// and a worker that takes a task and sees more wakes the next. Both tasks run (a worker left
/// asleep with a task queued would block the model: loom reports the deadlock).
#[test]
fn blocked_worker_does_not_strand_queued_tasks() {
    loom::model(|| {
        let queue = Arc::new(Mutex::new(VecDeque::<u32>::new()));
        let idle = Arc::new(IdleWorkers::new());
        let flags: Arc<[SleepFlag; 2]> = Arc::new([SleepFlag::new(), SleepFlag::new()]);
        let signals: Arc<[Signal; 2]> = Arc::new([Signal::new(), Signal::new()]);
        let done = Arc::new((Mutex::new(0u32), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // `wake_one` as the scheduler does it.
        let wake_one = {
            let (idle, flags, signals) = (idle.clone(), flags.clone(), signals.clone());
            move || {
                if !idle.should_wake() {
                    return;
                }
                for (flag, signal) in flags.iter().zip(signals.iter()) {
                    if flag.claim_wake() {
                        signal.raise();
                        return;
                    }
                }
            }
        };
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (queue, idle, flags, signals, done, stop, wake_one) = (
                    queue.clone(),
                    idle.clone(),
                    flags.clone(),
                    signals.clone(),
                    done.clone(),
                    stop.clone(),
                    wake_one.clone(),
                );
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let (task, more) = {
                            let mut q = queue.lock().unwrap();
                            let t = q.pop_front();
                            (t, !q.is_empty())
                        };
                        if let Some(task) = task {
                            if more {
                                wake_one();
                            }
                            let mut n = done.0.lock().unwrap();
                            if task == 0 {
                                // A handler that blocks until the other task has run: only
                                // another worker can run it.
                                while *n < 1 {
                                    n = done.1.wait(n).unwrap();
                                }
                            }
                            *n += 1;
                            done.1.notify_all();
                            continue;
                        }
                        idle.going_to_sleep();
                        flags[i].announce();
                        if !queue.lock().unwrap().is_empty() || stop.load(Ordering::SeqCst) {
                            flags[i].retract();
                            idle.woke_up();
                            continue;
                        }
                        signals[i].wait();
                        flags[i].retract();
                        idle.woke_up();
                    }
                })
            })
            .collect();
        for t in 0..2 {
            queue.lock().unwrap().push_back(t);
            wake_one();
        }
        {
            let mut n = done.0.lock().unwrap();
            while *n < 2 {
                n = done.1.wait(n).unwrap();
            }
        }
        stop.store(true, Ordering::SeqCst);
        for s in signals.iter() {
            s.raise();
        }
        for w in workers {
            w.join().unwrap();
        }
    });
}
