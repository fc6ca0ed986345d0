//! Graceful stop: `Addr::stop` drains what is queued, `Addr::kill` stops after the message in
//! hand; a shutdown drains mailboxes, flushes sockets, stops children before their parents,
//! and counts whatever it had to drop.

mod support;

use kendynet::{Actor, Context, NetEvent, StopReason, System, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use support::actors::{Watcher, expect_stopped, watch};
use support::wire::{client, read_until_closed, write_frame};
use support::{any_port, recv};

/// Counts "save" messages; a gate can hold its first handler until released, so that a
/// test can queue messages behind it.
struct Saver {
    saved: Arc<AtomicU64>,
    gate: Option<mpsc::Receiver<()>>,
    holding: Sender<()>,
    stopped: Sender<u64>,
}

enum SaveMsg {
    /// Waits for the gate (if any), then counts.
    Hold,
    Save,
}

impl Actor for Saver {
    type Msg = SaveMsg;
    fn handle(&mut self, msg: SaveMsg, _: &mut Context<Self>) {
        match msg {
            SaveMsg::Hold => {
                if let Some(gate) = self.gate.take() {
                    let _ = self.holding.send(());
                    let _ = gate.recv_timeout(support::WAIT);
                }
            }
            SaveMsg::Save => {
                self.saved.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.stopped.send(self.saved.load(Ordering::SeqCst));
    }
}

/// A saver, its count, the sender that opens its gate (if gated), where its stop reports
/// the count, and where it says that it holds at the gate.
type SaverParts = (
    Saver,
    Arc<AtomicU64>,
    Option<Sender<()>>,
    mpsc::Receiver<u64>,
    mpsc::Receiver<()>,
);

fn saver(gated: bool) -> SaverParts {
    let saved = Arc::new(AtomicU64::new(0));
    let (open, gate) = mpsc::channel();
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let (holding_tx, holding_rx) = mpsc::channel();
    let actor = Saver {
        saved: saved.clone(),
        gate: gated.then_some(gate),
        holding: holding_tx,
        stopped: stopped_tx,
    };
    (actor, saved, gated.then_some(open), stopped_rx, holding_rx)
}

#[test]
fn stop_handles_everything_queued_and_refuses_what_comes_after() {
    let system = System::builder().workers(2).build().unwrap();
    let (actor, saved, open, stopped, _holding) = saver(true);
    let addr = system.spawn(actor);
    addr.send(SaveMsg::Hold).unwrap();
    for _ in 0..1000 {
        addr.send(SaveMsg::Save).unwrap();
    }
    addr.stop();
    assert!(!addr.is_alive(), "a draining actor takes no new messages");
    assert!(matches!(
        addr.send(SaveMsg::Save),
        Err(TrySendError::Closed(SaveMsg::Save))
    ));
    open.unwrap().send(()).unwrap();
    assert_eq!(
        recv(&stopped, "the stop"),
        1000,
        "every queued save handled"
    );
    assert_eq!(saved.load(Ordering::SeqCst), 1000);
    assert_eq!(system.dropped_messages().total(), 0);
    support::shutdown_gracefully(system);
}

#[test]
fn kill_stops_after_the_message_in_hand_and_counts_what_it_drops() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let (actor, saved, open, stopped, holding) = saver(true);
    let addr = system.spawn(actor);
    watch(&watcher, &addr);
    addr.send(SaveMsg::Hold).unwrap();
    for _ in 0..1000 {
        addr.send(SaveMsg::Save).unwrap();
    }
    recv(&holding, "the held message to start");
    // The handler is held at the gate, so the kill is queued while it runs. The saves were
    // taken in the same batch as the held message: the kill overtakes the rest of the batch
    // at the next look for control messages (every 8 messages).
    addr.kill();
    open.unwrap().send(()).unwrap();
    let saved_at_stop = recv(&stopped, "the stop");
    assert!(
        saved_at_stop < 8,
        "the kill overtook the queue: {saved_at_stop} saves"
    );
    assert_eq!(expect_stopped(&wrx, addr.id()), StopReason::Normal);
    assert_eq!(saved.load(Ordering::SeqCst), saved_at_stop);
    assert_eq!(
        system.dropped_messages().killed as u64,
        1000 - saved_at_stop,
        "every save not handled is counted"
    );
    support::shutdown_gracefully(system);
}

/// Senders racing a stop: every send either reaches the handler or is handed back.
#[test]
fn senders_racing_a_stop_lose_nothing() {
    let system = System::builder().workers(2).build().unwrap();
    let (actor, saved, _, stopped, _) = saver(false);
    let addr = system.spawn(actor);
    let accepted = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (addr, accepted, go) = (addr.clone(), accepted.clone(), go.clone());
            thread::spawn(move || {
                while !go.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                for _ in 0..20_000 {
                    match addr.send(SaveMsg::Save) {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(TrySendError::Closed(SaveMsg::Save)) => return,
                        Err(_) => panic!("unexpected refusal"),
                    }
                }
            })
        })
        .collect();
    go.store(true, Ordering::SeqCst);
    support::eventually("some saves", || saved.load(Ordering::SeqCst) > 100);
    addr.stop();
    for s in senders {
        s.join().unwrap();
    }
    let handled = recv(&stopped, "the stop");
    assert_eq!(handled, accepted.load(Ordering::SeqCst));
    support::shutdown_gracefully(system);
}

/// The test: 10,000 saves queued when shutdown starts all reach the handler.
#[test]
fn shutdown_delivers_every_save_queued_when_it_starts() {
    let system = System::builder().workers(2).build().unwrap();
    let (actor, saved, open, stopped, _holding) = saver(true);
    let addr = system.spawn(actor);
    addr.send(SaveMsg::Hold).unwrap();
    for _ in 0..10_000 {
        addr.send(SaveMsg::Save).unwrap();
    }
    let open = open.unwrap();
    let handle = system.handle();
    // The gate opens once the shutdown is under way.
    let opener = thread::spawn(move || {
        support::eventually("the shutdown to begin", || handle.is_shutting_down());
        open.send(()).unwrap();
    });
    let report = system.shutdown(Duration::from_secs(20));
    opener.join().unwrap();
    assert!(report.graceful, "{report:?}");
    assert!(report.drained, "{report:?}");
    assert_eq!(report.dropped.total(), 0, "{report:?}");
    assert_eq!(saved.load(Ordering::SeqCst), 10_000);
    assert_eq!(recv(&stopped, "the stop"), 10_000);
}

/// Saves that take at least 1 ms each.
struct SlowSaver {
    saved: Arc<AtomicU64>,
}

impl Actor for SlowSaver {
    type Msg = SaveMsg;
    fn handle(&mut self, _: SaveMsg, _: &mut Context<Self>) {
        thread::sleep(Duration::from_millis(1));
        self.saved.fetch_add(1, Ordering::SeqCst);
    }
}

/// A deadline that passes with messages still queued: they are dropped, and counted. 500
/// saves of at least 1 ms each cannot all fit in 200 ms (plus at most 100 ms of grace).
#[test]
fn a_shutdown_deadline_counts_what_it_drops() {
    let system = System::builder().workers(2).build().unwrap();
    let saved = Arc::new(AtomicU64::new(0));
    let addr = system.spawn(SlowSaver {
        saved: saved.clone(),
    });
    for _ in 0..500 {
        addr.send(SaveMsg::Save).unwrap();
    }
    let report = system.shutdown(Duration::from_millis(200));
    assert!(!report.graceful, "{report:?}");
    let dropped = report.dropped.shutdown_deadline as u64;
    assert!(dropped > 0, "{report:?}");
    assert_eq!(dropped + saved.load(Ordering::SeqCst), 500, "{report:?}");
    assert_eq!(report.actors_left, 0, "{report:?}");
}

/// Children stop before their parents; a parent's `stopped` sees its children gone.
struct Parent {
    log: Arc<Mutex<Vec<String>>>,
    depth: u32,
}

impl Actor for Parent {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.depth < 2 {
            for _ in 0..3 {
                ctx.spawn(Parent {
                    log: self.log.clone(),
                    depth: self.depth + 1,
                });
            }
        }
    }
    fn handle(&mut self, _: (), _: &mut Context<Self>) {}
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("{}", self.depth));
    }
}

#[test]
fn shutdown_stops_children_before_their_parents() {
    let system = System::builder().workers(2).build().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    system.spawn(Parent {
        log: log.clone(),
        depth: 0,
    });
    support::eventually("the tree", || system.actor_count() == 1 + 3 + 9);
    let report = system.shutdown(Duration::from_secs(10));
    assert!(report.graceful, "{report:?}");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 13);
    let depths: Vec<u32> = log.iter().map(|d| d.parse().unwrap()).collect();
    assert!(
        depths.windows(2).all(|w| w[0] >= w[1]),
        "deepest first: {depths:?}"
    );
}

/// Sockets are flushed before their owners stop: a peer gets every reply sent before the
/// shutdown, and the owner its `Disconnected`.
struct Replier {
    replied: Sender<()>,
    disconnected: Sender<()>,
}

enum ReplierMsg {
    Net(NetEvent),
}

impl From<NetEvent> for ReplierMsg {
    fn from(ev: NetEvent) -> ReplierMsg {
        ReplierMsg::Net(ev)
    }
}

impl Actor for Replier {
    type Msg = ReplierMsg;
    fn handle(&mut self, ReplierMsg::Net(ev): ReplierMsg, _: &mut Context<Self>) {
        match ev {
            NetEvent::Packet { sock, packet } => {
                for _ in 0..100 {
                    let _ = sock.send(kendynet::WPacket::from(packet.clone()));
                }
                let _ = self.replied.send(());
            }
            NetEvent::Disconnected { .. } => {
                let _ = self.disconnected.send(());
            }
            _ => {}
        }
    }
}

#[test]
fn shutdown_flushes_sockets_before_stopping_their_owners() {
    let system = System::builder().workers(2).build().unwrap();
    let (dtx, drx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    let owner = system.spawn(Replier {
        replied: rtx,
        disconnected: dtx,
    });
    let addr = system.listen(any_port(), &owner).unwrap();
    let mut peer = client(addr);
    write_frame(&mut peer, &[7u8; 1000]).unwrap();
    recv(&rrx, "the replies to be queued");
    let reader = thread::spawn(move || read_until_closed(&mut peer).unwrap());
    let report = system.shutdown(Duration::from_secs(10));
    assert!(report.graceful, "{report:?}");
    recv(&drx, "the owner's Disconnected");
    let frames = reader.join().unwrap();
    assert_eq!(frames.len(), 100);
    assert!(frames.iter().all(|f| f == &vec![7u8; 1000]));
}
