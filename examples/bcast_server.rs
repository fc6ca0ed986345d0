//! A broadcast ("room") server on the actor runtime: every packet a client sends goes,
//! unchanged, to every connected client, the sender included. One room, one [`SockGroup`].
//!
//! Wire format: the crate's (a little-endian `u32` payload length, then the payload), the
//! room protocol of the peers' `tokio-bcast` and `epoll-bcast`, which `bcast-client` drives.
//!
//! How it works: a gate actor owns the listener; each new socket joins the group and is
//! handed to one relay actor per worker, round robin. A relay broadcasts every packet it
//! receives: the packet's bytes (shared with the receive buffer, not copied) are handed to
//! each poller that has members once, and each poller queues them on its members and writes
//! them in its usual per-turn `writev`. A member that does not read is paused, has packets
//! dropped or is disconnected, by `--slow` (see `ConnOptions::slow_consumer`); a closed one
//! leaves the group by itself.
//!
//! ```text
//! bcast_server --addr 127.0.0.1:8030 [--workers N (default 1)] [--slow pause|drop|disconnect] [--secs S]
//! bcast_server --self-test [--secs S]     # loopback clients check every delivery, exit 0/1
//! ```
//!
//! Each second it prints `members=M in/s=I deliveries/s=D dropped=X closed=C` on stderr.

use kendynet::net::SlowConsumer;
use kendynet::signal::ShutdownSignal;
use kendynet::{Actor, Addr, ConnOptions, Context, NetEvent, SockGroup, System, WPacket};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The gate (owns the listener, spreads sockets) and the relays (broadcast what they get).
struct Relay {
    group: SockGroup,
    relays: Vec<Addr<Relay>>,
    next: usize,
    received: Arc<AtomicU64>,
}

impl Actor for Relay {
    type Msg = NetEvent;

    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Connected { sock, .. } => {
                if self.group.join(sock).is_err() {
                    return; // Closed already.
                }
                if !self.relays.is_empty() {
                    self.next = (self.next + 1) % self.relays.len();
                    let _ = sock.hand_to(&self.relays[self.next]);
                }
            }
            NetEvent::Packet { packet, .. } => {
                self.received.fetch_add(1, Ordering::Relaxed);
                self.group.broadcast(WPacket::from(packet));
            }
            // A closed member leaves the group by itself.
            _ => {}
        }
    }
}

struct Args {
    addr: SocketAddr,
    workers: usize,
    slow: SlowConsumer,
    secs: Option<f64>,
    self_test: bool,
}

const USAGE: &str = "usage: bcast_server [--addr ADDR] [--workers N] [--slow pause|drop|disconnect] [--secs S] [--self-test]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        // One worker by default: on a small machine the load client needs the other core,
        // and one worker that polls and relays needs no cross-thread wake-up at all.
        workers: 1,
        slow: SlowConsumer::PauseReading,
        secs: None,
        self_test: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = parse(&flag, &value()?)?,
            "--workers" => args.workers = parse::<usize>(&flag, &value()?)?.max(1),
            "--secs" => args.secs = Some(parse(&flag, &value()?)?),
            "--slow" => {
                args.slow = match value()?.as_str() {
                    "pause" => SlowConsumer::PauseReading,
                    "drop" => SlowConsumer::Drop,
                    "disconnect" => SlowConsumer::DISCONNECT,
                    other => return Err(format!("--slow: unknown policy {other:?}")),
                }
            }
            "--self-test" => args.self_test = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value {value:?}"))
}

/// A running server: its system, group and bound address.
struct Server {
    system: System,
    group: SockGroup,
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

fn start(args: &Args) -> io::Result<Server> {
    let options = ConnOptions::default().slow_consumer(args.slow);
    let system = System::builder()
        .workers(args.workers)
        .conn_options(options)
        .build()?;
    let group = system.sock_group();
    let received = Arc::new(AtomicU64::new(0));
    let relay = |relays| Relay {
        group: group.clone(),
        relays,
        next: 0,
        received: received.clone(),
    };
    let relays: Vec<Addr<Relay>> = if args.workers > 1 {
        (0..args.workers)
            .map(|_| system.spawn(relay(Vec::new())))
            .collect()
    } else {
        Vec::new()
    };
    let gate = system.spawn(relay(relays));
    let addr = system.listen(args.addr, &gate)?;
    Ok(Server {
        system,
        group,
        addr,
        received,
    })
}

fn main() -> ExitCode {
    // Before any thread starts: Ctrl-C and SIGTERM end the run gracefully.
    let signal = match ShutdownSignal::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bcast_server: cannot take SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("bcast_server: cannot raise the descriptor limit: {e}");
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bcast_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match start(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bcast_server: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bcast_server: listening on {} with {} worker(s)",
        server.addr, args.workers
    );
    let result = if args.self_test {
        self_test(&server)
    } else {
        Ok(())
    };
    report_until(&server, args.secs, args.self_test, &signal);
    let Server { system, group, .. } = server;
    let report = system.shutdown(Duration::from_secs(5));
    eprintln!("bcast_server: {}", group.stats());
    if let Err(e) = result {
        eprintln!("bcast_server: self-test failed: {e}");
        return ExitCode::FAILURE;
    }
    if args.self_test {
        eprintln!("bcast_server: self-test ok");
    }
    if !report.graceful {
        eprintln!("bcast_server: shutdown was forced: {report:?}");
    }
    ExitCode::SUCCESS
}

/// Prints a line a second until `secs` have passed (forever without it; at once in a
/// self-test without it) or a shutdown signal comes.
fn report_until(server: &Server, secs: Option<f64>, self_test: bool, signal: &ShutdownSignal) {
    let start = Instant::now();
    let (mut last_in, mut last_out) = (0, 0);
    let secs = secs.or(self_test.then_some(0.0));
    while secs.is_none_or(|s| start.elapsed().as_secs_f64() < s) {
        let left = secs.map_or(1.0, |s| s - start.elapsed().as_secs_f64());
        let stop = signal.wait_timeout(Duration::from_secs_f64(left.clamp(0.0, 1.0)));
        (last_in, last_out) = print_line(server, last_in, last_out);
        if let Ok(Some(sig)) = stop {
            eprintln!("bcast_server: {sig}: shutting down");
            return;
        }
    }
}

fn print_line(server: &Server, last_in: u64, last_out: u64) -> (u64, u64) {
    let stats = server.group.stats();
    let received = server.received.load(Ordering::Relaxed);
    eprintln!(
        "members={} in/s={} deliveries/s={} dropped={} closed={}",
        stats.members,
        received - last_in,
        stats.queued - last_out,
        stats.dropped,
        stats.closed_members
    );
    (received, stats.queued)
}

/// Loopback clients: `CLIENTS` members, the first `SENDERS` of which send `PACKETS` each;
/// every member must receive every packet exactly once, each sender's in order. Then one
/// member closes and must leave the group.
fn self_test(server: &Server) -> Result<(), String> {
    const CLIENTS: usize = 8;
    const SENDERS: usize = 4;
    const PACKETS: u32 = 100;
    const WAIT: Duration = Duration::from_secs(10);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        // (With more than one worker, members are spread over every poller.)
        let c = TcpStream::connect(server.addr).map_err(|e| format!("client {i}: {e}"))?;
        c.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        clients.push(c);
    }
    let deadline = Instant::now() + WAIT;
    while server.group.len() < CLIENTS {
        if Instant::now() > deadline {
            return Err(format!("only {} members joined", server.group.len()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (s, c) in clients.iter_mut().enumerate().take(SENDERS) {
        let mut bytes = Vec::new();
        for n in 0..PACKETS {
            let mut p = WPacket::new();
            p.write_u32(s as u32).write_u32(n);
            bytes.extend_from_slice(&p.into_frame());
        }
        c.write_all(&bytes)
            .map_err(|e| format!("sender {s}: {e}"))?;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut next = [0u32; SENDERS];
        for _ in 0..SENDERS as u32 * PACKETS {
            let mut frame = [0u8; 12];
            c.read_exact(&mut frame)
                .map_err(|e| format!("client {i}: {e} (got {next:?})"))?;
            let word = |k: usize| u32::from_le_bytes(frame[k..k + 4].try_into().unwrap());
            let (len, sender, n) = (word(0), word(4) as usize, word(8));
            if len != 8 || sender >= SENDERS || next[sender] != n {
                return Err(format!(
                    "client {i}: got packet {n} of sender {sender} (len {len}), expected {next:?}"
                ));
            }
            next[sender] += 1;
        }
    }
    drop(clients.pop());
    while server.group.len() != CLIENTS - 1 {
        if Instant::now() > deadline {
            return Err("a closed member stayed in the group".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
