//! The C original's benchmark: an echo server and a ping-pong load client on loopback.
//!
//! ```text
//! pingpong                       # server + client in this process: the whole table
//!          [--secs T] [--warmup W] [--layer 2|3]
//! pingpong --server ADDR [--secs T] [--layer 2|3]           # only the server
//! pingpong --client ADDR --conns N --size S --secs T [--warmup W]   # only the client
//! ```
//!
//! With no arguments it starts an echo server on its own thread, then measures each cell of
//! the original's table in turn (payloads of 4 KiB and 16 KiB, 1, 10, 100 and 1000
//! connections, `--secs` seconds each, default 2, after `--warmup`, default 0.5), prints a
//! progress line per cell to stderr and the table to stdout.
//!
//! The client is one thread with its own [`Engine`] and layer-2 [`Connection`]s (it uses the
//! crate it measures). Each connection keeps one packet in flight: it sends a packet, and on
//! each echo sends the next one; the echoed packets counted in the measured window give
//! msgs/s, and their payload bytes MB/s. `--client` prints the line of the peers'
//! `pingpong-client`: `conns=N size=S secs=T msgs=M MB/s=X`.
//!
//! The server is chosen by `--layer`: 3 (the default) is the actor runtime, one actor owning
//! every socket; 2 is framed connections on one engine. See `start_server`.

use kendynet::net::{ConnId, Connection, DisconnectReason, Engine, EngineHandle, Socket};
use kendynet::{Actor, Context, NetEvent, System, WPacket};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::process::exit;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: pingpong [--secs T] [--warmup W] [--layer 2|3]\n       \
                     pingpong --server ADDR [--secs T] [--layer 2|3]\n       \
                     pingpong --client ADDR --conns N --size S --secs T [--warmup W]";

/// The table of the C original.
const SIZES: [usize; 2] = [4096, 16384];
const CONNS: [usize; 4] = [1, 10, 100, 1000];
/// How long the client waits for all its connections to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn usage(problem: &str) -> ! {
    eprintln!("pingpong: {problem}\n{USAGE}");
    exit(2)
}

fn fail(what: &str) -> ! {
    eprintln!("pingpong: {what}");
    exit(1)
}

/// The command line.
struct Args {
    server: Option<SocketAddr>,
    client: Option<SocketAddr>,
    conns: Option<usize>,
    size: Option<usize>,
    secs: Option<f64>,
    warmup: f64,
    layer: u8,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            server: None,
            client: None,
            conns: None,
            size: None,
            secs: None,
            warmup: 0.5,
            layer: 3,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--server" => args.server = Some(parse(&flag, &value())),
                "--client" => args.client = Some(parse(&flag, &value())),
                "--conns" => args.conns = Some(parse(&flag, &value())),
                "--size" => args.size = Some(parse(&flag, &value())),
                "--secs" => args.secs = Some(parse_secs(&flag, &value())),
                "--warmup" => args.warmup = parse_secs(&flag, &value()),
                "--layer" => args.layer = parse(&flag, &value()),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    exit(0)
                }
                _ => usage(&format!("unknown argument {flag}")),
            }
        }
        if args.server.is_some() && args.client.is_some() {
            usage("--server and --client are exclusive");
        }
        if args.client.is_none() && (args.conns.is_some() || args.size.is_some()) {
            usage("--conns and --size go with --client");
        }
        if args.conns == Some(0) {
            usage("--conns must be at least 1");
        }
        args
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {flag}: {value}")))
}

fn parse_secs(flag: &str, value: &str) -> f64 {
    let s: f64 = parse(flag, value);
    if !(s.is_finite() && s >= 0.0) {
        usage(&format!("{flag} must be a non-negative number of seconds"));
    }
    s
}

/// Raises the soft limit on open descriptors to the hard limit: a thousand connections do not
/// fit in the usual 1024.
fn raise_fd_limit() {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("pingpong: cannot raise the descriptor limit: {e}");
    }
}

fn main() {
    let args = Args::parse();
    raise_fd_limit();
    if let Some(addr) = args.client {
        let (Some(conns), Some(size), Some(secs)) = (args.conns, args.size, args.secs) else {
            usage("--client needs --conns, --size and --secs");
        };
        let r = run_client(addr, conns, size, secs, args.warmup)
            .unwrap_or_else(|e| fail(&format!("client: {e}")));
        println!(
            "conns={conns} size={size} secs={:.2} msgs={} MB/s={:.1}",
            r.secs,
            r.msgs,
            r.mb_per_sec(size)
        );
    } else if let Some(addr) = args.server {
        let server = start_server(args.layer, addr).unwrap_or_else(|e| fail(&format!("{e}")));
        eprintln!(
            "pingpong: layer {} echo server on {}",
            args.layer,
            server.addr()
        );
        match args.secs {
            Some(secs) => {
                thread::sleep(Duration::from_secs_f64(secs));
                server.stop();
            }
            None => server.wait(),
        }
    } else {
        table(&args);
    }
}

/// Runs the whole table against a server of this process.
fn table(args: &Args) {
    let secs = args.secs.unwrap_or(2.0);
    let server = start_server(args.layer, "127.0.0.1:0".parse().unwrap())
        .unwrap_or_else(|e| fail(&format!("{e}")));
    eprintln!(
        "pingpong: layer {} echo server on {}; {secs} s per cell after {} s warm-up",
        args.layer,
        server.addr(),
        args.warmup
    );
    let mut rows = Vec::new();
    for size in SIZES {
        for conns in CONNS {
            let r = run_client(server.addr(), conns, size, secs, args.warmup)
                .unwrap_or_else(|e| fail(&format!("client, {conns} conns of {size} B: {e}")));
            eprintln!(
                "size={size:>5} conns={conns:>4}: {:>9.0} msgs/s {:>8.1} MB/s",
                r.msgs_per_sec(),
                r.mb_per_sec(size)
            );
            rows.push((size, conns, r));
        }
    }
    server.stop();
    println!("| size | conns | msgs/s | MB/s |");
    println!("|---:|---:|---:|---:|");
    for (size, conns, r) in rows {
        println!(
            "| {size} | {conns} | {:.0} | {:.1} |",
            r.msgs_per_sec(),
            r.mb_per_sec(size)
        );
    }
}

// ----- the server -----

/// A running echo server: a layer-2 engine on its own thread, or a layer-3 actor system.
enum Server {
    Engine {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        engine: EngineHandle,
        thread: JoinHandle<()>,
    },
    Actors {
        addr: SocketAddr,
        system: System,
    },
}

impl Server {
    /// Where it listens.
    fn addr(&self) -> SocketAddr {
        match self {
            Server::Engine { addr, .. } | Server::Actors { addr, .. } => *addr,
        }
    }

    /// Stops the server and waits for its threads.
    fn stop(self) {
        match self {
            Server::Engine {
                stop,
                engine,
                thread,
                ..
            } => {
                stop.store(true, Ordering::SeqCst);
                let _ = engine.wake();
                if thread.join().is_err() {
                    fail("the server thread panicked");
                }
            }
            Server::Actors { system, .. } => {
                system.shutdown(Duration::from_secs(5));
            }
        }
    }

    /// Serves until the process is killed.
    fn wait(self) -> ! {
        loop {
            thread::park();
        }
    }
}

/// Starts an echo server of `layer` on `addr` (port 0 picks one; see [`Server::addr`]).
fn start_server(layer: u8, addr: SocketAddr) -> io::Result<Server> {
    match layer {
        2 => start_layer2_server(addr),
        3 => start_layer3_server(addr),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no layer-{layer} server in pingpong (--layer 2 or 3)"),
        )),
    }
}

/// The layer-3 echo server: one actor owns the listener's sockets and echoes each packet to
/// its socket (`SockIdent::send`, sharing the received bytes). One worker: it polls the
/// sockets and runs the actor on the same thread, and leaves the other core to the client.
fn start_layer3_server(addr: SocketAddr) -> io::Result<Server> {
    struct Echo;
    impl Actor for Echo {
        type Msg = NetEvent;
        fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
            if let NetEvent::Packet { sock, packet } = ev
                && sock.send(WPacket::from(packet)).is_err()
            {
                // Over the write limit: a client that does not read.
                let _ = sock.close();
            }
        }
    }
    let system = System::builder().workers(1).name("echo-server").build()?;
    let echo = system.spawn(Echo);
    let addr = system.listen(addr, &echo)?;
    Ok(Server::Actors { addr, system })
}

/// A layer-2 echo server: one engine thread, framed connections, replies that share the
/// received bytes.
fn start_layer2_server(addr: SocketAddr) -> io::Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let setup = || -> io::Result<(Engine, SocketAddr)> {
                let mut engine = Engine::new()?;
                let listener = engine.listen(addr, |engine, socket| {
                    let _ = Connection::new(socket).bind(
                        engine,
                        |engine, conn, packet| {
                            if conn.send(engine, WPacket::from(packet)).is_err() {
                                // Over the write limit: a client that does not read.
                                conn.abort(engine);
                            }
                        },
                        |_, _, _| {},
                    );
                })?;
                let addr = engine.listener_addr(listener)?;
                Ok((engine, addr))
            };
            let mut engine = match setup() {
                Ok((engine, addr)) => {
                    let _ = tx.send(Ok((engine.handle(), addr)));
                    engine
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !flag.load(Ordering::SeqCst) {
                if let Err(e) = engine.run_once(None) {
                    fail(&format!("server engine: {e}"));
                }
            }
        })?;
    let (engine, addr) = rx
        .recv()
        .map_err(|_| io::Error::other("the server thread died while starting"))??;
    Ok(Server::Engine {
        addr,
        stop,
        engine,
        thread,
    })
}

// ----- the client -----

/// What one client run measured.
struct Measured {
    msgs: u64,
    secs: f64,
}

impl Measured {
    fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
    fn mb_per_sec(&self, size: usize) -> f64 {
        self.msgs as f64 * size as f64 / 1e6 / self.secs
    }
}

/// The client's state, shared by its callbacks (all on this thread).
struct Client {
    /// The packet every connection sends: frozen once, so each send shares its bytes.
    packet: WPacket,
    size: usize,
    /// Echoes received since the measured window opened (or since the start).
    echoed: Cell<u64>,
    /// Why the run failed, if it did.
    error: RefCell<Option<String>>,
}

impl Client {
    fn fail(&self, why: String) {
        self.error.borrow_mut().get_or_insert(why);
    }
}

/// Connects `conns` layer-2 connections to `addr` and ping-pongs `size`-byte packets on each
/// for `warmup + secs` seconds, counting the echoes of the last `secs`.
fn run_client(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    warmup: f64,
) -> io::Result<Measured> {
    let mut engine = Engine::new()?;
    let mut packet = WPacket::with_capacity(size);
    packet.write_raw(&(0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    packet.freeze();
    let client = Rc::new(Client {
        packet,
        size,
        echoed: Cell::new(0),
        error: RefCell::new(None),
    });

    // Dial them all at once; the engine reports each outcome.
    let sockets: Rc<RefCell<Vec<Socket>>> = Rc::default();
    for _ in 0..conns {
        let (sockets, client) = (sockets.clone(), client.clone());
        engine.connect(addr, CONNECT_TIMEOUT, move |_, r| match r {
            Ok(s) => sockets.borrow_mut().push(s),
            Err(e) => client.fail(format!("connect to {addr}: {e}")),
        })?;
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1);
    while sockets.borrow().len() < conns && client.error.borrow().is_none() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connecting"));
        }
        engine.run_once(Some(Duration::from_millis(100)))?;
    }
    if let Some(e) = client.error.borrow_mut().take() {
        return Err(io::Error::other(e));
    }

    let mut ids: Vec<ConnId> = Vec::with_capacity(conns);
    for socket in sockets.borrow_mut().drain(..) {
        let (on_packet, on_end) = (client.clone(), client.clone());
        let id = Connection::new(socket).bind(
            &mut engine,
            move |engine, conn, echo| {
                if echo.len() != on_packet.size {
                    on_packet.fail(format!(
                        "echo of {} bytes, sent {}",
                        echo.len(),
                        on_packet.size
                    ));
                    return;
                }
                on_packet.echoed.set(on_packet.echoed.get() + 1);
                if let Err(e) = conn.send(engine, on_packet.packet.clone()) {
                    on_packet.fail(format!("send: {e}"));
                }
            },
            move |_, _, reason: DisconnectReason| {
                on_end.fail(format!("the server ended a connection: {reason}"))
            },
        )?;
        ids.push(id);
    }
    for &id in &ids {
        id.send(&mut engine, client.packet.clone())
            .map_err(|e| io::Error::other(format!("first send: {e}")))?;
    }

    run_for(&mut engine, &client, Duration::from_secs_f64(warmup))?;
    client.echoed.set(0);
    let start = Instant::now();
    run_for(&mut engine, &client, Duration::from_secs_f64(secs))?;
    let measured = Measured {
        msgs: client.echoed.get(),
        secs: start.elapsed().as_secs_f64(),
    };
    // Tell the server at once; nothing queued is worth flushing.
    for id in ids {
        id.abort(&mut engine);
    }
    Ok(measured)
}

/// Runs the client's engine for `d`, stopping early if the run failed.
fn run_for(engine: &mut Engine, client: &Client, d: Duration) -> io::Result<()> {
    let end = Instant::now() + d;
    loop {
        if let Some(e) = client.error.borrow_mut().take() {
            return Err(io::Error::other(e));
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        engine.run_once(Some(end - now))?;
    }
}
