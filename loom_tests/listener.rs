//! A listener held by its connection limit, released by a freed socket on the poller while
//! another thread pauses and resumes it through its handle: whatever the interleaving, the
//! last state asked for wins (the listener accepts again) and the client that waited in the
//! backlog gets its `Connected`. A change applied out of order leaves the listener paused:
//! the model's thread then waits for good, which loom reports as a deadlock.

use super::*;
use kendynet::ListenOptions;

#[test]
fn limit_release_racing_pause_and_resume_accepts_the_waiting_client() {
    model(|| {
        let sys = system(1);
        let (tx, rx) = channel();
        let owner = sys.spawn(Owner { out: tx });
        let listener = sys
            .open_listener(
                "127.0.0.1:0".parse().unwrap(),
                &owner,
                ListenOptions::new().max_connections(1),
            )
            .unwrap();
        let addr = listener.local_addr();
        // Both handshakes complete in the kernel; the second client waits in the backlog.
        let first = TcpStream::connect(addr).unwrap();
        let second = TcpStream::connect(addr).unwrap();
        // A posted change wakes the poller, which then finds the backlog (the stand-in's
        // wait sees real readiness only when it looks).
        listener.resume();
        let s1 = match rx.recv().unwrap() {
            OwnerSaw::Connected(s) => s,
            other => panic!("expected Connected, got {other:?}"),
        };
        let remote = listener.clone();
        let toggler = thread::spawn(move || {
            remote.pause();
            remote.resume();
        });
        // Freeing the first socket releases the limit (on the poller).
        close_with_reset(first);
        let _ = s1.close();
        toggler.join().unwrap();
        let mut s2 = None;
        let mut gone = false;
        while s2.is_none() || !gone {
            match rx.recv().unwrap() {
                OwnerSaw::Disconnected(s) => {
                    assert_eq!(s, s1);
                    gone = true;
                }
                OwnerSaw::Connected(s) => s2 = Some(s),
                OwnerSaw::Stopped => panic!("the owner stopped"),
            }
        }
        assert_eq!(listener.connections(), 1);
        let s2 = s2.unwrap();
        second.set_nonblocking(true).unwrap();
        finish(sys, owner, s2, second, &rx);
        assert!(listener.is_closed());
    });
}
