//! Thread-pool processing: packets from many connections handled by a pool of instances.
//!
//! In the C original, several threads could drain one `msgdisp` dispatcher with `msg_loop`,
//! so the messages of many connections were processed by a pool of threads. Here that is a
//! [`Pool`]: K instances of one handler actor behind one handle, running in parallel on the
//! system's N workers, each still handling one message at a time.
//!
//! - A **gate** actor owns the listener. It receives every socket's [`NetEvent`]s and forwards
//!   each packet to the pool with [`Pool::send_keyed`], keyed by the socket: all packets of
//!   one socket go to the same instance, so they are handled (and answered) in order, while
//!   different sockets spread over the instances.
//!   (Without the gate's counting, `system.listen(addr, pool.socket_owner())` lets the pool own
//!   the sockets directly, each socket's events on one instance.)
//! - A **handler** instance does some CPU work on the payload (a checksum, repeated a few
//!   rounds) and replies straight to the socket with [`SockIdent::send`] (any thread may send
//!   to a socket).
//! - Built-in loopback **clients** send numbered requests with a few in flight and check that
//!   every reply comes back in order with the right checksum.
//!
//! The gate prints a per-second line; at the end the program prints how many requests each
//! instance handled:
//!
//! ```text
//! clients=8 requests/s=61234 MB/s=31.4
//! instance 0: 48211 requests
//! ```
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example thread_pool -- --workers 2 --pool 4 --conns 8 --secs 5
//! ```
//!
//! Without `--secs` it runs until interrupted. With `--secs S` it stops after `S` seconds and
//! exits with status 0 if every reply was right, 1 otherwise.

use kendynet::{Actor, Context, NetEvent, Pool, PoolRouting, RPacket, SockIdent, System, WPacket};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: thread_pool [--workers N] [--pool K] [--conns C] [--secs S]
  --workers N  worker threads of the system (default: the number of CPUs)
  --pool K     handler instances in the pool (default 4)
  --conns C    loopback client connections (default 8)
  --secs S     stop after S seconds and report whether every reply was right";

/// Requests each client keeps in flight.
const IN_FLIGHT: usize = 4;

/// Rounds of the checksum per request: the "CPU work" of a handler.
const ROUNDS: u32 = 8;

// ----- the server -----

/// A request to process: the socket to answer and the packet it sent.
struct Job {
    sock: SockIdent,
    packet: RPacket,
}

/// One instance of the pool.
struct Handler {
    /// Requests this instance has handled, read by `main` at the end.
    handled: Arc<AtomicU64>,
}

impl Actor for Handler {
    type Msg = Job;

    fn handle(&mut self, Job { sock, mut packet }: Job, _: &mut Context<Self>) {
        // Request: seq u32, data binary. Reply: seq u32, checksum u64.
        let (Ok(seq), Ok(data)) = (packet.read_u32(), packet.read_bytes()) else {
            eprintln!("{sock}: malformed request, closing");
            let _ = sock.close();
            return;
        };
        let mut reply = WPacket::with_capacity(12);
        reply.write_u32(seq).write_u64(checksum(&data));
        // Fails only if the socket is closing or its peer stopped reading: nobody to answer.
        let _ = sock.send(reply);
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Owns the listener and feeds the pool.
struct Gate {
    pool: Pool<Handler>,
    clients: usize,
    requests: u64,
    bytes: u64,
    last_tick: Instant,
}

enum GateMsg {
    Net(NetEvent),
    Tick,
}

impl From<NetEvent> for GateMsg {
    fn from(ev: NetEvent) -> GateMsg {
        GateMsg::Net(ev)
    }
}

impl Actor for Gate {
    type Msg = GateMsg;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.last_tick = Instant::now();
        ctx.send_self_after(Duration::from_secs(1), GateMsg::Tick);
    }

    fn handle(&mut self, msg: GateMsg, ctx: &mut Context<Self>) {
        match msg {
            GateMsg::Net(NetEvent::Connected { .. }) => self.clients += 1,
            GateMsg::Net(NetEvent::Packet { sock, packet }) => {
                self.requests += 1;
                self.bytes += packet.len() as u64;
                // Same socket, same instance: its requests are handled in order.
                if self
                    .pool
                    .send_keyed(sock.to_u64(), Job { sock, packet })
                    .is_err()
                {
                    // The instance has stopped (only during shutdown): drop the client.
                    let _ = sock.close();
                }
            }
            GateMsg::Net(NetEvent::Disconnected { .. }) => self.clients -= 1,
            GateMsg::Net(_) => {}
            GateMsg::Tick => {
                let secs = self.last_tick.elapsed().as_secs_f64();
                self.last_tick = Instant::now();
                println!(
                    "clients={} requests/s={:.0} MB/s={:.1}",
                    self.clients,
                    self.requests as f64 / secs,
                    self.bytes as f64 / secs / 1e6,
                );
                self.requests = 0;
                self.bytes = 0;
                ctx.send_self_after(Duration::from_secs(1), GateMsg::Tick);
            }
        }
    }
}

/// FNV-1a over `data`, `ROUNDS` times over (each round seeded by the last).
fn checksum(data: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for _ in 0..ROUNDS {
        for &b in data {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

// ----- the program -----

struct Args {
    workers: Option<usize>,
    pool: usize,
    conns: usize,
    secs: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: None,
        pool: 4,
        conns: 8,
        secs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => args.workers = Some(parse(&flag, &value()?)?),
            "--pool" => args.pool = parse(&flag, &value()?)?,
            "--conns" => args.conns = parse(&flag, &value()?)?,
            "--secs" => args.secs = Some(parse(&flag, &value()?)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.workers == Some(0) || args.pool == 0 || args.conns == 0 {
        return Err("--workers, --pool and --conns must be at least 1".into());
    }
    Ok(args)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value {value:?}"))
}

fn main() -> ExitCode {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("thread_pool: cannot raise the descriptor limit: {e}");
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("thread_pool: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thread_pool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut builder = System::builder();
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    let system = builder
        .build()
        .map_err(|e| format!("starting the system: {e}"))?;

    let counts: Vec<Arc<AtomicU64>> = (0..args.pool).map(|_| Arc::default()).collect();
    let pool = Pool::spawn(&system, args.pool, PoolRouting::LeastLoaded, |i| Handler {
        handled: counts[i].clone(),
    });
    let gate = system.spawn(Gate {
        pool,
        clients: 0,
        requests: 0,
        bytes: 0,
        last_tick: Instant::now(),
    });
    let addr = system
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)), &gate)
        .map_err(|e| format!("listen: {e}"))?;
    println!(
        "listening on {addr}: {} workers, {} handler instances, {} clients",
        system.workers(),
        args.pool,
        args.conns
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.conns)
        .map(|id| {
            let stop = stop.clone();
            thread::spawn(move || client(addr, id, &stop))
        })
        .collect();

    match args.secs {
        Some(secs) => thread::sleep(Duration::from_secs(secs)),
        None => loop {
            thread::park();
        },
    }
    stop.store(true, Ordering::Relaxed);
    let mut verified = 0;
    let mut failures = Vec::new();
    for c in clients {
        match c.join() {
            Ok(Ok(n)) => verified += n,
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a client thread panicked".to_owned()),
        }
    }
    let report = system.shutdown(Duration::from_secs(5));

    for (i, n) in counts.iter().enumerate() {
        println!("instance {i}: {} requests", n.load(Ordering::Relaxed));
    }
    let handled: u64 = counts.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    println!("handled {handled} requests; clients verified {verified} replies");
    if !report.graceful {
        failures.push(format!("shutdown was not graceful: {report:?}"));
    }
    if verified == 0 {
        failures.push("no reply came back".to_owned());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failures.join("; ")))
    }
}

/// A loopback client: keeps `IN_FLIGHT` numbered requests outstanding until `stop`, and
/// checks that the replies come back in order with the right checksums. Returns how many
/// replies it verified.
fn client(addr: SocketAddr, id: usize, stop: &AtomicBool) -> Result<u64, String> {
    let fail = |what: &str, e: std::io::Error| format!("client {id}: {what}: {e}");
    let mut stream = TcpStream::connect(addr).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail("set_read_timeout", e))?;
    let mut next_seq = 0u32;
    let mut expected = std::collections::VecDeque::new();
    let mut verified = 0;
    loop {
        // Top up the requests in flight (none once asked to stop).
        while expected.len() < IN_FLIGHT && !stop.load(Ordering::Relaxed) {
            let data = request_data(id, next_seq);
            expected.push_back((next_seq, checksum(&data)));
            let mut request = WPacket::with_capacity(data.len() + 8);
            request.write_u32(next_seq).write_bytes(&data);
            stream
                .write_all(&request.into_frame())
                .map_err(|e| fail("write", e))?;
            next_seq = next_seq.wrapping_add(1);
        }
        let Some((seq, sum)) = expected.pop_front() else {
            return Ok(verified);
        };
        let mut reply = [0u8; 4 + 12];
        stream.read_exact(&mut reply).map_err(|e| fail("read", e))?;
        let (header, payload) = reply.split_at(4);
        if header != 12u32.to_le_bytes() {
            return Err(format!("client {id}: a reply has the wrong length"));
        }
        let mut reply = RPacket::from_payload(payload);
        let (got_seq, got_sum) = (reply.read_u32(), reply.read_u64());
        if (got_seq, got_sum) != (Ok(seq), Ok(sum)) {
            return Err(format!(
                "client {id}: expected reply {seq} with checksum {sum:#x}, got {got_seq:?} {got_sum:?}"
            ));
        }
        verified += 1;
    }
}

/// The payload of request `seq` of client `id`: 64 to 1087 bytes that depend on both.
fn request_data(id: usize, seq: u32) -> Vec<u8> {
    let len = 64 + (seq as usize * 31 + id * 17) % 1024;
    (0..len).map(|i| (i * 13 + id) as u8 ^ seq as u8).collect()
}
