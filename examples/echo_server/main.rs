//! An echo server of each layer, printing one line per second as the C original's test
//! server did: `clients=C packets/s=P MB/s=M`.
//!
//! ```text
//! echo_server [--addr 127.0.0.1:8010] [--layer 1|2|3] [--raw] [--max-packet N]
//!             [--recv-timeout-ms MS] [--workers N] [--secs S]
//! ```
//!
//! - `--layer 2` (the default): framed [`Connection`]s; every packet is sent back unchanged
//!   (the reply shares the received bytes). `--raw` echoes each read as it came, without
//!   framing; `--max-packet` and `--recv-timeout-ms` set the connection limits.
//! - `--layer 1`: the completion API ([`Engine::bind`], `recv`/`send`). It echoes raw bytes
//!   and never parses them, so it serves framed clients too. To make its per-second line
//!   comparable, it counts the frames going by (a header scan, no copying); with `--raw` it
//!   counts reads instead.
//! - `--layer 3`: the actor runtime (see `layer3.rs`). `--workers` applies to it only.
//!   With `--ws` (feature `websocket`) it serves WebSocket instead of framed TCP: every
//!   message comes back with its own opcode (text as text, binary as binary).
//! - `--tls-cert FILE --tls-key FILE` (PEM; feature `tls`) put TLS under layers 2 and 3,
//!   WebSocket included (wss).
//!
//! MB/s counts echoed payload bytes (layer 2; frame headers are not counted) or echoed bytes
//! (layer 1). It runs until Ctrl-C or SIGTERM, or for `--secs` seconds; the per-second line of
//! layer 3 comes from the system's metrics (`System::metrics`).

mod layer3;

use kendynet::WPacket;
use kendynet::error::TrySendError;
use kendynet::net::{
    Completion, ConnOptions, Connection, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
    DEFAULT_MAX_PACKET_LEN, Engine, IoKind, IoRequest, SlowConsumer, SocketId, Submitted,
};
use kendynet::signal::ShutdownSignal;
use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::process::exit;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Where to listen.
    pub addr: SocketAddr,
    /// 1, 2 or 3.
    pub layer: u8,
    /// No framing: echo each read as it came.
    pub raw: bool,
    /// The largest packet accepted (layer 2 and 3).
    pub max_packet: usize,
    /// Close a connection after this long without a byte.
    pub recv_timeout: Option<Duration>,
    /// Worker threads (layer 3 only).
    pub workers: Option<usize>,
    /// What to do with a client that does not read its echoes (layers 2 and 3).
    pub slow_consumer: SlowConsumer,
    /// Queued output past which that policy applies.
    pub high_water: usize,
    /// Stop after this long; `None` runs until killed.
    pub secs: Option<f64>,
    /// Serve WebSocket instead of framed TCP (layer 3, feature `websocket`).
    pub ws: bool,
    /// TLS certificate chain and key, PEM (layers 2 and 3, feature `tls`).
    pub tls: Option<(String, String)>,
}

const USAGE: &str = "usage: echo_server [--addr ADDR] [--layer 1|2|3] [--raw] [--max-packet N] \
                     [--recv-timeout-ms MS] [--workers N] [--secs S] \
                     [--slow-consumer pause|drop|disconnect] [--high-water BYTES] [--ws] \
                     [--tls-cert FILE --tls-key FILE]";

fn usage(problem: &str) -> ! {
    eprintln!("echo_server: {problem}\n{USAGE}");
    exit(2)
}

impl Args {
    /// The connection options the command line asks for.
    pub fn conn_options(&self) -> ConnOptions {
        let options = ConnOptions::default()
            .max_packet_len(self.max_packet)
            .recv_timeout(self.recv_timeout)
            .raw(self.raw)
            .slow_consumer(self.slow_consumer)
            .watermarks(DEFAULT_LOW_WATER.min(self.high_water / 4), self.high_water);
        self.with_tls(options)
    }

    /// Adds TLS to `options` if the command line asks for it (exits if the files are bad).
    #[cfg(feature = "tls")]
    fn with_tls(&self, options: ConnOptions) -> ConnOptions {
        let Some((cert, key)) = &self.tls else {
            return options;
        };
        match kendynet::tls::TlsAcceptor::from_pem_files(cert, key) {
            Ok(acceptor) => options.tls(acceptor),
            Err(e) => {
                eprintln!("echo_server: {e}");
                exit(2)
            }
        }
    }

    #[cfg(not(feature = "tls"))]
    fn with_tls(&self, options: ConnOptions) -> ConnOptions {
        options
    }

    fn parse() -> Args {
        let mut args = Args {
            addr: "127.0.0.1:8010".parse().unwrap(),
            layer: 2,
            raw: false,
            max_packet: DEFAULT_MAX_PACKET_LEN,
            recv_timeout: None,
            workers: None,
            secs: None,
            slow_consumer: SlowConsumer::PauseReading,
            high_water: DEFAULT_HIGH_WATER,
            ws: false,
            tls: None,
        };
        let (mut cert, mut key) = (None, None);
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = |name: &str| -> String {
                it.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match flag.as_str() {
                "--addr" => args.addr = parse(&flag, &value(&flag)),
                "--layer" => {
                    args.layer = parse(&flag, &value(&flag));
                    if !(1..=3).contains(&args.layer) {
                        usage("--layer must be 1, 2 or 3");
                    }
                }
                "--raw" => args.raw = true,
                "--tls-cert" => cert = Some(value(&flag)),
                "--tls-key" => key = Some(value(&flag)),
                "--ws" => {
                    if !cfg!(feature = "websocket") {
                        usage("--ws needs the `websocket` feature (cargo --features websocket)");
                    }
                    args.ws = true;
                }
                "--max-packet" => args.max_packet = parse(&flag, &value(&flag)),
                "--recv-timeout-ms" => {
                    let ms: u64 = parse(&flag, &value(&flag));
                    args.recv_timeout = Some(Duration::from_millis(ms));
                }
                "--workers" => args.workers = Some(parse(&flag, &value(&flag))),
                "--slow-consumer" => {
                    args.slow_consumer = match value(&flag).as_str() {
                        "pause" => SlowConsumer::PauseReading,
                        "drop" => SlowConsumer::Drop,
                        "disconnect" => SlowConsumer::DISCONNECT,
                        _ => usage("--slow-consumer must be pause, drop or disconnect"),
                    }
                }
                "--high-water" => args.high_water = parse(&flag, &value(&flag)),
                "--secs" => {
                    let s: f64 = parse(&flag, &value(&flag));
                    if !(s.is_finite() && s >= 0.0) {
                        usage("--secs must be a non-negative number");
                    }
                    args.secs = Some(s);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    exit(0)
                }
                _ => usage(&format!("unknown argument {flag}")),
            }
        }
        args.tls = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) if cfg!(feature = "tls") => Some((c, k)),
            (Some(_), Some(_)) => usage("TLS needs the `tls` feature (cargo --features tls)"),
            _ => usage("--tls-cert and --tls-key go together"),
        };
        if args.tls.is_some() && args.layer == 1 {
            usage("TLS applies to layers 2 and 3");
        }
        args
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {flag}: {value}")))
}

/// Raises the soft limit on open descriptors to the hard limit: a thousand connections do not
/// fit in the usual 1024.
fn raise_fd_limit() {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("echo_server: cannot raise the descriptor limit: {e}");
    }
}

/// Counters for the per-second line: plain integers, touched only by the engine's thread.
#[derive(Default)]
struct Stats {
    clients: usize,
    packets: u64,
    bytes: u64,
    /// Echoes refused by the drop policy, in all.
    dropped: u64,
}

type SharedStats = Rc<RefCell<Stats>>;

fn main() {
    let args = Args::parse();
    // Before any thread starts: Ctrl-C and SIGTERM end the run gracefully.
    let signal = ShutdownSignal::install().unwrap_or_else(|e| {
        eprintln!("echo_server: cannot take SIGINT/SIGTERM: {e}");
        exit(1)
    });
    raise_fd_limit();
    if args.ws && args.layer != 3 {
        usage("--ws applies to layer 3 only");
    }
    if args.workers.is_some() && args.layer != 3 {
        eprintln!("echo_server: --workers applies to layer 3 only; ignored");
    }
    let mut engine = Engine::new().unwrap_or_else(|e| {
        eprintln!("echo_server: cannot create the engine: {e}");
        exit(1)
    });
    let stats = SharedStats::default();
    let listening = match args.layer {
        1 => layer1::listen(&mut engine, &args, &stats),
        2 => layer2::listen(&mut engine, &args, &stats),
        _ => layer3::run(&args, &signal),
    };
    if let Err(e) = listening {
        eprintln!("echo_server: cannot listen on {}: {e}", args.addr);
        exit(1)
    }
    eprintln!(
        "echo_server: layer {} listening on {}",
        args.layer, args.addr
    );
    run(&mut engine, &args, &stats, &signal);
}

/// Runs the engine, printing the per-second line, until `--secs` have passed (or forever) or
/// a shutdown signal comes.
fn run(engine: &mut Engine, args: &Args, stats: &SharedStats, signal: &ShutdownSignal) {
    let start = Instant::now();
    let end = args.secs.map(|s| start + Duration::from_secs_f64(s));
    let mut tick = start;
    loop {
        tick += Duration::from_secs(1);
        let until = end.map_or(tick, |e| e.min(tick));
        let now = Instant::now();
        if until > now
            && let Err(e) = engine.run(until - now)
        {
            eprintln!("echo_server: engine failed: {e}");
            exit(1)
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return;
        }
        if let Ok(Some(sig)) = signal.received() {
            eprintln!("echo_server: {sig}: stopped");
            return;
        }
        let mut s = stats.borrow_mut();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "clients={} packets/s={} MB/s={:.1} dropped={}",
            s.clients,
            s.packets,
            s.bytes as f64 / 1e6,
            s.dropped
        );
        let _ = out.flush();
        s.packets = 0;
        s.bytes = 0;
    }
}

mod layer2 {
    //! The echo server on framed connections.
    use super::*;

    pub(super) fn listen(
        engine: &mut Engine,
        args: &Args,
        stats: &SharedStats,
    ) -> std::io::Result<()> {
        let options = args.conn_options();
        let dropping = args.slow_consumer == SlowConsumer::Drop;
        let stats = stats.clone();
        engine.listen(args.addr, move |engine, socket| {
            let (on_packet, on_end) = (stats.clone(), stats.clone());
            let bound = Connection::new(socket).options(options.clone()).bind(
                engine,
                move |engine, conn, packet| {
                    {
                        let mut s = on_packet.borrow_mut();
                        s.packets += 1;
                        s.bytes += packet.len() as u64;
                    }
                    // The reply shares the received bytes: nothing is copied.
                    match conn.send(engine, WPacket::from(packet)) {
                        Ok(()) | Err(TrySendError::Closed(_)) => {}
                        // The drop policy refused it (counted by the connection too).
                        Err(TrySendError::Full(_)) if dropping => {
                            on_packet.borrow_mut().dropped += 1
                        }
                        // Past the write limit, which pausing the reading of a client that
                        // does not read makes next to impossible: an echo cannot skip a
                        // packet, so close rather than lose it silently.
                        Err(TrySendError::Full(_)) => conn.abort(engine),
                    }
                },
                move |_, _, _| on_end.borrow_mut().clients -= 1,
            );
            if bound.is_ok() {
                stats.borrow_mut().clients += 1;
            }
        })?;
        Ok(())
    }
}

mod layer1 {
    //! The echo server on the completion API: what comes in goes back out, byte for byte.
    //! At most one send is outstanding per socket; while it is, the socket does not
    //! receive, so a client that does not read cannot make the server buffer without bound.
    use super::*;

    /// The receive buffer of each socket.
    const BUF: usize = 32 * 1024;

    /// Counts the frames in a byte stream without copying it: skips payloads, reads headers.
    #[derive(Default)]
    struct FrameCounter {
        header: [u8; 4],
        have: usize,
        /// Payload bytes still to skip.
        skip: usize,
    }

    impl FrameCounter {
        fn feed(&mut self, mut data: &[u8]) -> u64 {
            let mut frames = 0;
            while !data.is_empty() {
                if self.skip > 0 {
                    let n = self.skip.min(data.len());
                    self.skip -= n;
                    data = &data[n..];
                    if self.skip == 0 {
                        frames += 1;
                    }
                    continue;
                }
                let n = (4 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 4 {
                    self.have = 0;
                    self.skip = u32::from_le_bytes(self.header) as usize;
                    if self.skip == 0 {
                        frames += 1;
                    }
                }
            }
            frames
        }
    }

    /// One socket's echo state, owned by its completion callback.
    struct Echo {
        stats: SharedStats,
        frames: Option<FrameCounter>,
    }

    impl Echo {
        fn count(&mut self, data: &[u8]) {
            let mut s = self.stats.borrow_mut();
            s.bytes += data.len() as u64;
            s.packets += match &mut self.frames {
                Some(f) => f.feed(data),
                None => 1,
            };
        }

        /// Echoes the `n` bytes that `req` holds, then receives again; loops for as long as
        /// both complete at once, and stops when either has to wait for its callback.
        fn pump(&mut self, engine: &mut Engine, id: SocketId, mut req: IoRequest, mut n: usize) {
            loop {
                let buf = &mut req.bufs_mut()[0];
                buf.truncate(n);
                self.count(buf);
                req = match engine.send(id, req) {
                    Ok(Submitted::Done(req, _)) => req,
                    // Receiving resumes when the send completes (see `on_io_finish`).
                    Ok(Submitted::Pending) => return,
                    Err(_) => return self.drop_client(engine, id),
                };
                req = match self.recv(engine, id, req) {
                    Some((req, got)) => {
                        n = got;
                        req
                    }
                    None => return,
                };
            }
        }

        /// Receives into `req`; `Some` when bytes arrived at once.
        fn recv(
            &mut self,
            engine: &mut Engine,
            id: SocketId,
            mut req: IoRequest,
        ) -> Option<(IoRequest, usize)> {
            req.bufs_mut()[0].resize(BUF, 0);
            match engine.recv(id, req) {
                Ok(Submitted::Done(req, n)) => Some((req, n)),
                Ok(Submitted::Pending) => None,
                Err(_) => {
                    self.drop_client(engine, id);
                    None
                }
            }
        }

        fn on_io_finish(&mut self, engine: &mut Engine, c: Completion) {
            match (c.kind, c.result) {
                (IoKind::Recv, Ok(n)) => self.pump(engine, c.socket, c.request, n),
                (IoKind::Send, Ok(_)) => {
                    if let Some((req, n)) = self.recv(engine, c.socket, c.request) {
                        self.pump(engine, c.socket, req, n);
                    }
                }
                (_, Err(_)) => self.drop_client(engine, c.socket),
            }
        }

        fn drop_client(&mut self, engine: &mut Engine, id: SocketId) {
            // Closed sockets have no peer address: count each client out once.
            if engine.peer_addr(id).is_some() {
                engine.close(id);
                self.stats.borrow_mut().clients -= 1;
            }
        }
    }

    pub(super) fn listen(
        engine: &mut Engine,
        args: &Args,
        stats: &SharedStats,
    ) -> std::io::Result<()> {
        let stats = stats.clone();
        let raw = args.raw;
        engine.listen(args.addr, move |engine, socket| {
            let mut echo = Echo {
                stats: stats.clone(),
                frames: (!raw).then(FrameCounter::default),
            };
            let Ok(id) = engine.bind(
                socket,
                move |engine, c| echo.on_io_finish(engine, c),
                // Requests still queued at close are simply dropped.
                |_, _, _| {},
            ) else {
                return;
            };
            stats.borrow_mut().clients += 1;
            if engine.post_recv(id, IoRequest::recv_buffer(BUF)).is_err() {
                engine.close(id);
                stats.borrow_mut().clients -= 1;
            }
        })?;
        Ok(())
    }
}
