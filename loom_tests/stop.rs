//! Stop after drain racing senders: every send either reaches the handler before the actor
//! stops or is handed back to its sender; none is accepted and then dropped.

use super::*;

#[test]
fn stop_after_drain_racing_a_sender_handles_every_accepted_message() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let actor = sys.spawn(Reporter {
            out: tx,
            stop_after: usize::MAX,
            handled: 0,
        });
        actor.send(0).unwrap();
        let sender = {
            let actor = actor.clone();
            thread::spawn(move || {
                let mut accepted = 0;
                for m in 1..3 {
                    match actor.send(m) {
                        Ok(()) => accepted += 1,
                        Err(TrySendError::Closed(_)) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                accepted
            })
        };
        actor.stop();
        let accepted = 1 + sender.join().unwrap();
        let mut handled = 0;
        loop {
            match rx.recv().unwrap() {
                Seen::Msg(_) => handled += 1,
                Seen::Stopped => break,
            }
        }
        assert_eq!(handled, accepted, "an accepted message was not handled");
        assert_eq!(sys.dropped_messages().total(), 0);
        let report = sys.shutdown(Duration::from_secs(1));
        assert_eq!(report.actors_left, 0, "{report:?}");
    });
}
