//! Two echo services sharing one network layer: the C original's layer-3 example.
//!
//! In the C framework, one `asynnet` (the poller threads) served several `msgdisp`
//! dispatchers, each a separate service with its own listener and its own thread. Here the
//! network layer is the [`System`] and each service is an actor: service A listens on port P,
//! service B on port P+1, both on the same workers and pollers. Each service owns the
//! sockets its listener accepts: it receives their [`NetEvent`]s as messages, echoes every
//! packet back (forwarding the received packet copies nothing), and prints its own line
//! every second from a timer:
//!
//! ```text
//! service=A port=8010 clients=2 packets/s=48210 MB/s=49.6
//! ```
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example echo_services                  # ports 8010 and 8011
//! cargo run --release --example echo_services -- --port 0      # two free ports
//! cargo run --release --example echo_services -- --secs 5      # self-test, then exit
//! ```
//!
//! With `--secs S` it also runs a few loopback clients of its own against both ports, checks
//! that every echo matches what was sent, and exits after `S` seconds: status 0 if every
//! echo matched, 1 otherwise. Without `--secs` it serves until interrupted.

use kendynet::signal::ShutdownSignal;
use kendynet::{Actor, Context, NetEvent, System, WPacket};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: echo_services [--port P] [--secs S]
  --port P   service A listens on P, service B on P+1 (default 8010; 0 picks two free ports)
  --secs S   run loopback clients against both services, check the echoes, exit after S seconds";

/// Loopback clients per service in the self-test.
const CLIENTS_PER_SERVICE: usize = 2;

/// One echo service: an actor that owns the sockets of its listener.
struct EchoService {
    name: &'static str,
    port: u16,
    clients: usize,
    packets: u64,
    bytes: u64,
    last_tick: Instant,
}

enum Msg {
    /// The listener is bound to this port.
    Listening(u16),
    /// A socket event from the service's listener.
    Net(NetEvent),
    /// Print the per-second line.
    Tick,
}

/// What lets `listen` deliver socket events into this actor's mailbox.
impl From<NetEvent> for Msg {
    fn from(ev: NetEvent) -> Msg {
        Msg::Net(ev)
    }
}

impl EchoService {
    fn new(name: &'static str) -> EchoService {
        EchoService {
            name,
            port: 0,
            clients: 0,
            packets: 0,
            bytes: 0,
            last_tick: Instant::now(),
        }
    }
}

impl Actor for EchoService {
    type Msg = Msg;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.last_tick = Instant::now();
        ctx.send_self_after(Duration::from_secs(1), Msg::Tick);
    }

    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Listening(port) => self.port = port,
            Msg::Net(NetEvent::Connected { .. }) => self.clients += 1,
            Msg::Net(NetEvent::Packet { sock, packet }) => {
                self.packets += 1;
                self.bytes += packet.len() as u64;
                // The echo shares the received bytes. A send fails only if the socket is
                // closing (its Disconnected is on the way) or the peer stopped reading.
                let _ = sock.send(WPacket::from(packet));
            }
            Msg::Net(NetEvent::Disconnected { .. }) => self.clients -= 1,
            Msg::Net(_) => {}
            Msg::Tick => {
                let secs = self.last_tick.elapsed().as_secs_f64();
                self.last_tick = Instant::now();
                println!(
                    "service={} port={} clients={} packets/s={:.0} MB/s={:.1}",
                    self.name,
                    self.port,
                    self.clients,
                    self.packets as f64 / secs,
                    self.bytes as f64 / secs / 1e6,
                );
                self.packets = 0;
                self.bytes = 0;
                ctx.send_self_after(Duration::from_secs(1), Msg::Tick);
            }
        }
    }
}

struct Args {
    port: u16,
    secs: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 8010,
        secs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = parse(&flag, &value()?)?,
            "--secs" => args.secs = Some(parse(&flag, &value()?)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.port == u16::MAX {
        return Err("--port must leave room for P+1".into());
    }
    Ok(args)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value {value:?}"))
}

fn main() -> ExitCode {
    // Before any thread starts: Ctrl-C and SIGTERM end the run gracefully.
    let signal = match ShutdownSignal::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_services: cannot take SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("echo_services: cannot raise the descriptor limit: {e}");
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_services: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args, &signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_services: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, signal: &ShutdownSignal) -> Result<(), String> {
    // One network layer (the system's pollers) for both services.
    let system = System::builder()
        .build()
        .map_err(|e| format!("starting the system: {e}"))?;

    let mut ports = Vec::new();
    // With --port 0 each service gets its own free port; otherwise P and P+1.
    let next = if args.port == 0 { 0 } else { args.port + 1 };
    for (name, port) in [("A", args.port), ("B", next)] {
        let service = system.spawn(EchoService::new(name));
        // The service owns its listener: every socket it accepts sends its events there.
        let bound = system
            .listen(SocketAddr::from(([0, 0, 0, 0], port)), &service)
            .map_err(|e| format!("service {name}: listening on port {port}: {e}"))?;
        let _ = service.send(Msg::Listening(bound.port()));
        println!("service={name} listening on {bound}");
        ports.push(bound.port());
    }

    let Some(secs) = args.secs else {
        // Serve until Ctrl-C or SIGTERM, then shut down gracefully.
        let sig = signal
            .wait_until(None)
            .map_err(|e| format!("waiting for a signal: {e}"))?;
        println!(
            "{}: shutting down",
            sig.map_or("stop".to_owned(), |s| s.to_string())
        );
        let report = system.shutdown(Duration::from_secs(5));
        if !report.graceful {
            return Err(format!("shutdown was not graceful: {report:?}"));
        }
        println!("stopped gracefully");
        return Ok(());
    };

    // Self-test: loopback clients against both services until the deadline.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = ports
        .iter()
        .flat_map(|&port| (0..CLIENTS_PER_SERVICE).map(move |i| (port, i)))
        .map(|(port, i)| thread::spawn(move || echo_client(port, i, deadline)))
        .collect();
    let mut echoes = 0;
    let mut failures = Vec::new();
    for c in clients {
        match c.join() {
            Ok(Ok(n)) => echoes += n,
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a client thread panicked".to_owned()),
        }
    }
    let report = system.shutdown(Duration::from_secs(5));
    if !report.graceful {
        failures.push(format!("shutdown was not graceful: {report:?}"));
    }
    if echoes == 0 {
        failures.push("no echo came back".to_owned());
    }
    if failures.is_empty() {
        println!("self-test ok: {echoes} echoes verified on ports {ports:?}");
        Ok(())
    } else {
        Err(format!("self-test failed: {}", failures.join("; ")))
    }
}

/// Sends batches of numbered packets until `deadline`, checking that each echo is
/// byte-for-byte what was sent; returns how many echoes it verified.
fn echo_client(port: u16, id: usize, deadline: Instant) -> Result<u64, String> {
    const BATCH: u32 = 8;
    let fail = |what: &str, e: std::io::Error| format!("client {id} on port {port}: {what}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail("set_read_timeout", e))?;
    let mut seq = 0u32;
    let mut echoes = 0;
    let mut back = Vec::new();
    while Instant::now() < deadline {
        let mut sent = Vec::new();
        for _ in 0..BATCH {
            let mut packet = WPacket::new();
            packet.write_u32(seq).write_bytes(&payload(seq));
            seq = seq.wrapping_add(1);
            sent.extend_from_slice(&packet.into_frame());
        }
        stream.write_all(&sent).map_err(|e| fail("write", e))?;
        back.resize(sent.len(), 0);
        stream.read_exact(&mut back).map_err(|e| fail("read", e))?;
        if back != sent {
            return Err(format!(
                "client {id} on port {port}: an echo differs from what was sent"
            ));
        }
        echoes += u64::from(BATCH);
    }
    Ok(echoes)
}

/// A payload whose length and bytes depend on its sequence number (16 to 1039 bytes).
fn payload(seq: u32) -> Vec<u8> {
    let len = 16 + (seq as usize * 7919) % 1024;
    (0..len).map(|i| (i as u32 ^ seq) as u8).collect()
}
