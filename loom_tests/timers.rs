//! A timer cancel racing the timer's firing, on a real system with one worker: the actor sets
//! a timer due at once in `started`; another thread cancels it while the worker fires it and
//! the actor's turn takes its message out. Exactly one outcome: the message is delivered, or
//! the cancel returned `true`; never both (a delivery after a successful cancel), never
//! neither (a cancel that said `false` for a timer that then never came).

use super::*;
use kendynet::TimerHandle;

/// Sets one timer on itself and reports what it delivers.
struct Timed {
    out: Sender<&'static str>,
    handle: Sender<TimerHandle>,
}

impl Actor for Timed {
    type Msg = &'static str;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let h = ctx.send_self_after(Duration::ZERO, "fired");
        self.handle.send(h).unwrap();
    }
    fn handle(&mut self, msg: &'static str, _: &mut Context<Self>) {
        self.out.send(msg).unwrap();
    }
}

#[test]
fn timer_cancel_racing_its_fire_has_exactly_one_outcome() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let (htx, hrx) = channel();
        let _actor = sys.spawn(Timed {
            out: tx,
            handle: htx,
        });
        let handle = hrx.recv().unwrap();
        let canceller = thread::spawn(move || handle.cancel());
        let cancelled = canceller.join().unwrap();
        // Shutdown joins the worker: whatever the actor delivered is in the channel now.
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
        let delivered = rx.try_recv().is_ok();
        assert!(
            delivered != cancelled,
            "delivered: {delivered}, cancel returned: {cancelled}"
        );
    });
}
