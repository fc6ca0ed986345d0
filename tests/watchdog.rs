//! The watchdog: a handler that runs past the threshold is reported once, with the actor's
//! id, type and name, while the other actors keep running.

mod support;

use kendynet::{Actor, Context, SpawnOptions, Stall, System};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::recv;

/// Blocks in its handler until released (bounded by the tests' wait).
struct Stuck {
    release: Option<Receiver<()>>,
    done: Sender<()>,
}

impl Actor for Stuck {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        if let Some(release) = self.release.take() {
            let _ = release.recv_timeout(support::WAIT);
        }
        let _ = self.done.send(());
    }
}

/// Answers pings.
struct Ponger;

impl Actor for Ponger {
    type Msg = Sender<()>;
    fn handle(&mut self, reply: Sender<()>, _: &mut Context<Self>) {
        let _ = reply.send(());
    }
}

#[test]
fn a_stalled_handler_is_reported_once_while_others_run() {
    let (stalls_tx, stalls) = mpsc::channel::<Stall>();
    let stalls_tx = std::sync::Mutex::new(stalls_tx);
    let system = System::builder()
        .workers(2)
        .stall_threshold(Duration::from_millis(100))
        .on_stall(move |s| {
            let _ = stalls_tx.lock().unwrap().send(s.clone());
        })
        .build()
        .unwrap();
    let (release_tx, release) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let stuck = system
        .spawn_with(
            Stuck {
                release: Some(release),
                done: done_tx,
            },
            SpawnOptions::default().name("the-stuck-one"),
        )
        .unwrap();
    let ponger = system.spawn(Ponger);
    stuck.send(()).unwrap();

    let stall = recv(&stalls, "a stall report");
    assert_eq!(stall.actor, stuck.id());
    assert!(stall.type_name.ends_with("Stuck"), "{stall:?}");
    assert_eq!(stall.name.as_deref(), Some("the-stuck-one"));
    assert!(stall.running_for >= Duration::from_millis(100), "{stall:?}");
    assert!(stall.to_string().contains("the-stuck-one"));

    // The other worker keeps serving while the stall lasts.
    for _ in 0..100 {
        let (tx, rx) = mpsc::channel();
        ponger.send(tx).unwrap();
        recv(&rx, "a pong during the stall");
    }
    // Still the same stall: reported once.
    assert_eq!(system.stall_count(), 1);
    release_tx.send(()).unwrap();
    recv(&done, "the stuck handler to return");
    assert_eq!(system.stall_count(), 1, "one report per stall");
    assert_eq!(system.recent_stalls(), [stall]);
    assert!(stalls.try_recv().is_err());
    support::shutdown_gracefully(system);
}
