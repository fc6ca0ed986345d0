//! Layer 3 of the echo server: the actor runtime. Actors own the sockets; a packet arrives
//! as a message and the reply is `sock.send(WPacket::from(packet))`, which shares the received
//! bytes.

use super::Args;
use kendynet::{Actor, Addr, ConnOptions, Context, NetEvent, System, WPacket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the per-second line reports.
#[derive(Default)]
struct Counters {
    clients: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// An echo actor. The first one (the gate) owns the listener and spreads new sockets over
/// the others with `hand_to`; each echoes whatever reaches it.
struct Echo {
    counters: Arc<Counters>,
    peers: Vec<Addr<Echo>>,
    next: usize,
}

impl Actor for Echo {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } => {
                self.counters.clients.fetch_add(1, Ordering::Relaxed);
                if !self.peers.is_empty() {
                    self.next = (self.next + 1) % self.peers.len();
                    let _ = sock.hand_to(&self.peers[self.next]);
                }
            }
            NetEvent::Packet { sock, packet } => {
                self.counters.packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(packet.len() as u64, Ordering::Relaxed);
                let _ = sock.send(WPacket::from(packet));
            }
            NetEvent::Disconnected { .. } => {
                self.counters.clients.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Runs the server until `secs` pass (forever if `None`), printing
/// `clients=C packets/s=P MB/s=M` each second.
fn serve(
    addr: SocketAddr,
    workers: usize,
    options: ConnOptions,
    secs: Option<f64>,
) -> std::io::Result<()> {
    let system = System::builder()
        .workers(workers)
        .conn_options(options)
        .build()?;
    let counters = Arc::new(Counters::default());
    // With one worker the gate echoes everything itself; with more, sockets are spread over
    // one echo actor per worker.
    let peers: Vec<Addr<Echo>> = if workers > 1 {
        let mk = |_| Echo {
            counters: counters.clone(),
            peers: Vec::new(),
            next: 0,
        };
        (0..workers).map(|i| system.spawn(mk(i))).collect()
    } else {
        Vec::new()
    };
    let gate = system.spawn(Echo {
        counters: counters.clone(),
        peers,
        next: 0,
    });
    let bound = system.listen(addr, &gate)?;
    eprintln!("echo_server: layer 3 listening on {bound} with {workers} worker(s)");
    let start = Instant::now();
    let (mut last_p, mut last_b) = (0, 0);
    loop {
        let left = secs.map(|s| s - start.elapsed().as_secs_f64());
        let nap = left.map_or(1.0, |l| l.clamp(0.0, 1.0));
        std::thread::sleep(Duration::from_secs_f64(nap));
        let p = counters.packets.load(Ordering::Relaxed);
        let b = counters.bytes.load(Ordering::Relaxed);
        println!(
            "clients={} packets/s={} MB/s={:.1}",
            counters.clients.load(Ordering::Relaxed),
            p - last_p,
            (b - last_b) as f64 / 1e6
        );
        (last_p, last_b) = (p, b);
        if secs.is_some_and(|s| start.elapsed().as_secs_f64() >= s) {
            break;
        }
    }
    let report = system.shutdown(Duration::from_secs(5));
    if !report.graceful {
        eprintln!("echo_server: shutdown was forced: {report:?}");
    }
    Ok(())
}

/// `--layer 3`: runs the actor echo server with the command line's options, then exits.
pub fn run(args: &Args) -> ! {
    let options = ConnOptions::default()
        .max_packet_len(args.max_packet)
        .recv_timeout(args.recv_timeout)
        .raw(args.raw);
    // One worker by default: on a small machine the load client needs the other core, and a
    // single worker that polls and runs the actors needs no cross-thread wake-up at all.
    let workers = args.workers.unwrap_or(1);
    match serve(args.addr, workers, options, args.secs) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("echo_server: cannot listen on {}: {e}", args.addr);
            std::process::exit(1)
        }
    }
}
