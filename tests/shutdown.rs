//! `System::shutdown` with traffic in flight: every packet already accepted for a socket is
//! written before the socket closes, the shutdown ends within its deadline, and its report says
//! it was graceful.
//!
//! Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::{Actor, Context, NetEvent, SockIdent, System, TrySendError, WPacket};
use std::sync::mpsc::{self, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::wire::{client, numbered_packet, parse_numbered, read_frame_or_eof};
use support::{WAIT, any_port, recv};

/// Floods each new socket with numbered packets, then reports the socket.
struct Flood {
    per_conn: u32,
    pad: usize,
    out: Sender<Result<SockIdent, String>>,
}

impl Actor for Flood {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Connected { sock, .. } = ev {
            for seq in 0..self.per_conn {
                if let Err(e) = sock.send(numbered_packet(0, seq, self.pad)) {
                    let _ = self.out.send(Err(format!("send {seq} refused: {e}")));
                    return;
                }
            }
            let _ = self.out.send(Ok(sock));
        }
    }
}

/// A shutdown with packets queued on its sockets (sent by the owner on a worker and by
/// another thread, none read yet by the peers) writes them all before closing, finishes within
/// its deadline, and says it was graceful.
#[test]
fn shutdown_with_traffic_in_flight_flushes_everything_within_the_deadline() {
    const CLIENTS: usize = 3;
    const PER_SIDE: u32 = 2000;
    const PAD: usize = 1024;
    let deadline = Duration::from_secs(5);
    let system = System::builder().workers(2).pollers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let flood = system.spawn(Flood {
        per_conn: PER_SIDE,
        pad: PAD,
        out: tx,
    });
    let addr = system.listen(any_port(), &flood).unwrap();
    let mut go = Vec::new();
    let readers: Vec<JoinHandle<Result<Vec<u32>, String>>> = (0..CLIENTS)
        .map(|_| {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            go.push(go_tx);
            let mut c = client(addr);
            thread::spawn(move || {
                // Read nothing until the shutdown begins, so that it finds data queued.
                go_rx.recv_timeout(WAIT).map_err(|e| format!("go: {e}"))?;
                let mut seqs = Vec::new();
                loop {
                    match read_frame_or_eof(&mut c) {
                        Ok(Some(p)) => seqs.push(parse_numbered(&p).1),
                        Ok(None) => return Ok(seqs),
                        Err(e) => return Err(format!("after {} frames: {e}", seqs.len())),
                    }
                }
            })
        })
        .collect();
    let socks: Vec<SockIdent> = (0..CLIENTS)
        .map(|_| recv(&rx, "the owner to flood a socket").expect("owner sends"))
        .collect();
    // More from a thread that is not a worker, accepted before the shutdown begins.
    for sock in &socks {
        for seq in PER_SIDE..2 * PER_SIDE {
            if let Err(e) = sock.send(numbered_packet(0, seq, PAD)) {
                panic!("{sock:?}: send {seq} from outside refused: {e:?}");
            }
        }
    }
    for g in &go {
        g.send(()).unwrap();
    }
    let began = Instant::now();
    let report = system.shutdown(deadline);
    let took = began.elapsed();
    assert!(
        took < deadline + Duration::from_secs(2),
        "shutdown took {took:?} with a deadline of {deadline:?}"
    );
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.actors_left, 0);
    assert_eq!(report.sockets_left, 0);
    for (i, r) in readers.into_iter().enumerate() {
        let seqs = r
            .join()
            .expect("reader panicked")
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(
            seqs.len(),
            2 * PER_SIDE as usize,
            "client {i}: packets lost"
        );
        assert!(
            seqs.iter().enumerate().all(|(k, s)| *s == k as u32),
            "client {i}: packets out of order"
        );
    }
    for sock in socks {
        assert!(!sock.is_open(), "{sock:?} after shutdown");
        assert!(matches!(
            sock.send(WPacket::new()),
            Err(TrySendError::Closed(_))
        ));
    }
}
