//! Dedicated actors: the thread of its own that runs an actor's turns sleeps on its home and
//! is woken by whoever makes the actor runnable. No wake-up may be lost between a send from
//! another thread and the thread going back to sleep, and the thread leaves with the actor.

use super::*;

/// Two senders race the dedicated thread's sleep: both messages are handled, the actor
/// stops, and shutdown finds its thread gone.
#[test]
fn dedicated_actor_wakes_for_every_send_and_leaves_with_its_actor() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let actor = sys
            .spawn_dedicated(Reporter {
                out: tx,
                stop_after: 2,
                handled: 0,
            })
            .unwrap();
        let other = {
            let actor = actor.clone();
            thread::spawn(move || actor.send(1).unwrap())
        };
        actor.send(2).unwrap();
        let mut got = [rx.recv().unwrap(), rx.recv().unwrap()];
        got.sort_by_key(|s| match s {
            Seen::Msg(m) => *m,
            Seen::Stopped => u32::MAX,
        });
        assert_eq!(got, [Seen::Msg(1), Seen::Msg(2)]);
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        other.join().unwrap();
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
        assert_eq!(report.blocking_threads_left, 0);
    });
}
