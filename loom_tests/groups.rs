//! Process groups: the copy-on-write member list under joins, leaves and automatic leaves
//! racing a broadcast. A send reaches each member that joined before it began exactly once,
//! and a member is never in the list twice.

use super::*;

fn reporter(out: Sender<Seen>, stop_after: usize) -> Reporter {
    Reporter {
        out,
        stop_after,
        handled: 0,
    }
}

/// A join and a leave on one thread race a send on another: the member gets the message at
/// most once, exactly when the send counted it, and for sure if it had joined before the send
/// began and its leave had not begun when the send ended.
#[test]
fn group_join_and_leave_racing_a_send() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let member = sys.spawn(reporter(tx, usize::MAX));
        let room = sys.group::<u32>("room").unwrap();
        let joined = Arc::new(AtomicBool::new(false));
        let leaving = Arc::new(AtomicBool::new(false));
        let churn = {
            let (room, member) = (room.clone(), member.clone());
            let (joined, leaving) = (joined.clone(), leaving.clone());
            thread::spawn(move || {
                assert!(room.join(&member));
                joined.store(true, Ordering::SeqCst);
                leaving.store(true, Ordering::SeqCst);
                assert!(room.leave(member.id()));
            })
        };
        let member_before = joined.load(Ordering::SeqCst);
        let report = room.send(7);
        let leave_begun = leaving.load(Ordering::SeqCst);
        churn.join().unwrap();
        assert!(report.delivered <= 1, "{report:?}");
        if member_before && !leave_begun {
            assert_eq!(report.delivered, 1, "a member before the send missed it");
        }
        if report.delivered == 1 {
            assert_eq!(rx.recv().unwrap(), Seen::Msg(7));
        }
        member.stop();
        assert_eq!(rx.recv().unwrap(), Seen::Stopped, "a second delivery");
        assert!(room.is_empty());
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// Two threads join the same actor at once, then a send: it is a member once, and gets the
/// message once.
#[test]
fn group_double_join_makes_one_member() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let member = sys.spawn(reporter(tx, usize::MAX));
        let room = sys.group::<u32>("room").unwrap();
        let other = {
            let (room, member) = (room.clone(), member.clone());
            thread::spawn(move || room.join(&member))
        };
        let mine = room.join(&member);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "exactly one join must add the member");
        assert_eq!(room.members(), vec![member.id()]);
        assert_eq!(room.send(1).delivered, 1);
        assert_eq!(rx.recv().unwrap(), Seen::Msg(1));
        member.stop();
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}

/// A member stops while another thread makes it join a second group: it ends up in
/// neither (its automatic leave finds every group it joined, whatever the order).
#[test]
fn group_join_racing_the_members_stop() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let member = sys.spawn(reporter(tx, 1));
        let (a, b) = (
            sys.group::<u32>("a").unwrap(),
            sys.group::<u32>("b").unwrap(),
        );
        assert!(a.join(&member));
        let joiner = {
            let (b, member) = (b.clone(), member.clone());
            thread::spawn(move || {
                b.join(&member);
            })
        };
        member.send(1).unwrap();
        assert_eq!(rx.recv().unwrap(), Seen::Msg(1));
        assert_eq!(rx.recv().unwrap(), Seen::Stopped);
        joiner.join().unwrap();
        // The automatic leave runs right after `stopped`; wait for it.
        while !(a.is_empty() && b.is_empty()) {
            thread::yield_now();
        }
        let report = sys.shutdown(Duration::from_secs(1));
        assert!(report.graceful, "{report:?}");
    });
}
