//! Layer 3 of the echo server: the actor runtime. Actors own the sockets; a packet arrives
//! as a message and the reply is `sock.send(WPacket::from(packet))`, which shares the received
//! bytes.
//!
//! A client that does not read its echoes: past the socket's high-water mark its reading
//! pauses (the default slow-consumer policy), so it cannot make the server read, or hold,
//! more. An echo must not skip a packet: one refused for the write limit waits in a small
//! stash with the socket's reading paused, and goes out when the socket drains (`LowWater`).
//! Under `--slow-consumer drop` a refused echo is the policy's intent, and is counted.

use super::Args;
use kendynet::error::TrySendError;
use kendynet::net::SlowConsumer;
use kendynet::signal::ShutdownSignal;
use kendynet::{Actor, Addr, ConnOptions, Context, NetEvent, SockIdent, System, WPacket};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the per-second line reports beside the system's metrics: echoes refused by the
/// drop policy (the example's own count: a refusal it stashes and retries is not a drop).
#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
}

/// An echo actor. The first one (the gate) owns the listener and spreads new sockets over
/// the others with `hand_to`; each echoes whatever reaches it.
struct Echo {
    counters: Arc<Counters>,
    peers: Vec<Addr<Echo>>,
    next: usize,
    /// The drop policy is in force: a refused echo is dropped (and counted).
    dropping: bool,
    /// Echoes refused for the write limit, per socket, waiting for it to drain.
    stashed: HashMap<SockIdent, VecDeque<WPacket>>,
}

impl Echo {
    fn new(counters: Arc<Counters>, peers: Vec<Addr<Echo>>, dropping: bool) -> Echo {
        Echo {
            counters,
            peers,
            next: 0,
            dropping,
            stashed: HashMap::new(),
        }
    }

    /// Sends an echo, or keeps it (in order) until the socket drains.
    fn echo(&mut self, sock: SockIdent, reply: WPacket) {
        // (Looked up only when something waits: the usual echo pays one branch.)
        if !self.stashed.is_empty()
            && let Some(stash) = self.stashed.get_mut(&sock)
        {
            stash.push_back(reply);
            return;
        }
        match sock.send(reply) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) if self.dropping => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(reply)) => {
                let _ = sock.pause_reading();
                self.stashed.entry(sock).or_default().push_back(reply);
            }
        }
    }

    /// The socket drained: send what waited, and read again once all of it is out.
    fn drained(&mut self, sock: SockIdent) {
        let Some(mut stash) = self.stashed.remove(&sock) else {
            return;
        };
        while let Some(reply) = stash.pop_front() {
            if let Err(e) = sock.send(reply) {
                match e {
                    TrySendError::Full(reply) => {
                        stash.push_front(reply);
                        self.stashed.insert(sock, stash);
                        return;
                    }
                    TrySendError::Closed(_) => return,
                }
            }
        }
        let _ = sock.resume_reading();
    }
}

impl Actor for Echo {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } if !self.peers.is_empty() => {
                self.next = (self.next + 1) % self.peers.len();
                let _ = sock.hand_to(&self.peers[self.next]);
            }
            NetEvent::Packet { sock, packet } => self.echo(sock, WPacket::from(packet)),
            NetEvent::LowWater { sock, .. } => self.drained(sock),
            NetEvent::Disconnected { sock, .. } if !self.stashed.is_empty() => {
                self.stashed.remove(&sock);
            }
            _ => {}
        }
    }
}

/// Runs the server until `secs` pass (forever if `None`) or a shutdown signal comes,
/// printing `clients=C packets/s=P MB/s=M dropped=D` each second from the system's metrics.
fn serve(
    addr: SocketAddr,
    workers: usize,
    options: ConnOptions,
    secs: Option<f64>,
    ws: bool,
    signal: &ShutdownSignal,
) -> std::io::Result<()> {
    let dropping = options.slow_consumer == SlowConsumer::Drop;
    let system = System::builder()
        .workers(workers)
        .conn_options(options)
        .build()?;
    let counters = Arc::new(Counters::default());
    // With one worker the gate echoes everything itself; with more, sockets are spread over
    // one echo actor per worker.
    let peers: Vec<Addr<Echo>> = if workers > 1 {
        (0..workers)
            .map(|_| system.spawn(Echo::new(counters.clone(), Vec::new(), dropping)))
            .collect()
    } else {
        Vec::new()
    };
    let gate = system.spawn(Echo::new(counters.clone(), peers, dropping));
    let bound = if ws {
        listen_ws(&system, addr, &gate)?
    } else {
        system.listen(addr, &gate)?
    };
    let what = if ws { "WebSocket" } else { "framed TCP" };
    eprintln!("echo_server: layer 3 ({what}) listening on {bound} with {workers} worker(s)");
    let start = Instant::now();
    let mut last = system.metrics();
    loop {
        let left = secs.map(|s| s - start.elapsed().as_secs_f64());
        let nap = left.map_or(1.0, |l| l.clamp(0.0, 1.0));
        let stop = signal.wait_timeout(Duration::from_secs_f64(nap))?;
        let m = system.metrics();
        println!(
            "clients={} packets/s={} MB/s={:.1} dropped={}",
            m.sockets_open,
            m.packets_in - last.packets_in,
            (m.bytes_in - last.bytes_in) as f64 / 1e6,
            counters.dropped.load(Ordering::Relaxed)
        );
        last = m;
        if let Some(sig) = stop {
            eprintln!("echo_server: {sig}: shutting down");
            break;
        }
        if secs.is_some_and(|s| start.elapsed().as_secs_f64() >= s) {
            break;
        }
    }
    let report = system.shutdown(Duration::from_secs(5));
    if report.graceful {
        eprintln!("echo_server: stopped gracefully");
    } else {
        eprintln!("echo_server: shutdown was forced: {report:?}");
    }
    Ok(())
}

/// `--ws`: listens for WebSocket connections with the system's options.
#[cfg(feature = "websocket")]
fn listen_ws(system: &System, addr: SocketAddr, gate: &Addr<Echo>) -> std::io::Result<SocketAddr> {
    system
        .handle()
        .listen_ws(addr, gate, kendynet::ws::WsOptions::new())
}

#[cfg(not(feature = "websocket"))]
fn listen_ws(_: &System, _: SocketAddr, _: &Addr<Echo>) -> std::io::Result<SocketAddr> {
    unreachable!("--ws is refused without the websocket feature")
}

/// `--layer 3`: runs the actor echo server with the command line's options, then exits.
pub fn run(args: &Args, signal: &ShutdownSignal) -> ! {
    let options = args.conn_options();
    // One worker by default: on a small machine the load client needs the other core, and a
    // single worker that polls and runs the actors needs no cross-thread wake-up at all.
    let workers = args.workers.unwrap_or(1);
    match serve(args.addr, workers, options, args.secs, args.ws, signal) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("echo_server: cannot listen on {}: {e}", args.addr);
            std::process::exit(1)
        }
    }
}
