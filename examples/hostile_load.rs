//! Measures what slow and hostile clients do to an echo server (such as
//! `echo_server --layer 3`): its memory, its CPU time, and the latency a well-behaved client
//! sees meanwhile. A benchmark, not a test: it reports numbers and exits 0 unless it could not
//! run at all.
//!
//! ```text
//! hostile_load --addr HOST:PORT [--server-pid PID] [--secs S] [--baseline S]
//!              [--never-read N] [--size BYTES] [--pause-read SECS] [--pause-size BYTES]
//!              [--pause-rate PER_SEC] [--good-size BYTES]
//! ```
//!
//! - One **good client** does closed-loop round trips of small packets for the whole run:
//!   alone for `--baseline` seconds (default 1), then beside the hostile ones. Its p50, p99 and
//!   maximum round-trip times are reported for both phases.
//! - `--never-read N`: N clients send packets of `--size` bytes (default 65536) as fast as
//!   their sockets take them and never read.
//! - `--pause-read SECS`: one client sends numbered packets of `--pause-size` bytes (default
//!   1024) at `--pause-rate` per second (default 1000), stops reading for SECS one second after
//!   it starts, then reads again; at the end it reports how many echoes came back out of how
//!   many packets it sent, and whether they came back in order.
//! - `--server-pid PID`: samples the server's `VmRSS` (/proc/PID/status) and CPU time
//!   (`utime + stime` of /proc/PID/stat) every [`SAMPLE_EVERY`].
//!
//! Frames are kendynet's wire format: a 4-byte little-endian length, then the payload. Every
//! wait is bounded: the hostile clients stop at `--secs`, and the clients that read wait at
//! most [`DRAIN`] more for echoes still on their way.

use kendynet::WPacket;
use kendynet::net::HEADER_LEN;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: hostile_load --addr HOST:PORT [--server-pid PID] [--secs S] \
[--baseline S] [--never-read N] [--size BYTES] [--pause-read SECS] [--pause-size BYTES] \
[--pause-rate PER_SEC] [--good-size BYTES]";

/// How often the server's memory and CPU time are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long the reading clients wait for echoes after the run ends.
const DRAIN: Duration = Duration::from_secs(3);
/// How long connecting one client may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a blocking read waits before the caller checks its deadline again.
const READ_SLICE: Duration = Duration::from_millis(200);
/// A never-read client that sends nothing in this last stretch of the run counts as stalled
/// (its server stopped reading it).
const STALL_WINDOW: Duration = Duration::from_secs(1);
/// When the pause-read client stops reading, counted from its start.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

struct Args {
    addr: SocketAddr,
    server_pid: Option<u32>,
    secs: f64,
    baseline: f64,
    never_read: usize,
    size: usize,
    pause_read: Option<f64>,
    pause_size: usize,
    pause_rate: f64,
    good_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut a = Args {
        addr: "127.0.0.1:0".parse().expect("address"),
        server_pid: None,
        secs: 10.0,
        baseline: 1.0,
        never_read: 0,
        size: 65536,
        pause_read: None,
        pause_size: 1024,
        pause_rate: 1000.0,
        good_size: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .to_socket_addrs()
                        .map_err(|e| format!("bad --addr {value}: {e}"))?
                        .next()
                        .ok_or_else(|| format!("--addr {value} resolves to nothing"))?,
                );
            }
            "--server-pid" => a.server_pid = Some(parse(&flag, &value)?),
            "--secs" => a.secs = parse(&flag, &value)?,
            "--baseline" => a.baseline = parse(&flag, &value)?,
            "--never-read" => a.never_read = parse(&flag, &value)?,
            "--size" => a.size = parse(&flag, &value)?,
            "--pause-read" => a.pause_read = Some(parse(&flag, &value)?),
            "--pause-size" => a.pause_size = parse(&flag, &value)?,
            "--pause-rate" => a.pause_rate = parse(&flag, &value)?,
            "--good-size" => a.good_size = parse(&flag, &value)?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    a.addr = addr.ok_or("--addr is required")?;
    if !(a.secs > 0.0 && a.secs.is_finite() && a.baseline >= 0.0 && a.baseline < a.secs) {
        return Err("--secs must be positive and --baseline in [0, --secs)".into());
    }
    if a.pause_size < 8 || a.good_size < 8 {
        return Err("--pause-size and --good-size must be at least 8 (a sequence number)".into());
    }
    if !(a.pause_rate > 0.0 && a.pause_rate.is_finite()) {
        return Err("--pause-rate must be positive".into());
    }
    Ok(a)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("bad value for {flag}: {value}"))
}

/// A frame whose payload is `size` bytes: `seq` (u64 LE) first, then a fill pattern.
fn frame(seq: u64, size: usize) -> Vec<u8> {
    let mut body = vec![0xa5u8; size];
    if size >= 8 {
        body[..8].copy_from_slice(&seq.to_le_bytes());
    }
    let mut p = WPacket::with_capacity(size);
    p.write_raw(&body);
    p.into_frame().to_vec()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// The server sampler.

/// What the sampler saw of the server.
#[derive(Debug, Default)]
struct ServerSample {
    rss_start_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    cpu_ticks: u64,
    wall: Duration,
    gone: bool,
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `utime + stime` of /proc/PID/stat, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Samples the server from `start` to `end`.
fn sample_server(pid: u32, start: Instant, end: Instant) -> ServerSample {
    let mut s = ServerSample::default();
    let (Some(rss), Some(ticks0)) = (proc_rss_kib(pid), proc_cpu_ticks(pid)) else {
        s.gone = true;
        return s;
    };
    s.rss_start_kib = rss;
    s.rss_peak_kib = rss;
    let mut ticks = ticks0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep(SAMPLE_EVERY.min(end - now));
        match (proc_rss_kib(pid), proc_cpu_ticks(pid)) {
            (Some(r), Some(t)) => {
                s.rss_peak_kib = s.rss_peak_kib.max(r);
                s.rss_end_kib = r;
                ticks = t;
            }
            _ => {
                s.gone = true;
                break;
            }
        }
    }
    s.cpu_ticks = ticks - ticks0;
    s.wall = start.elapsed();
    s
}

// ---------------------------------------------------------------------------------------
// The good client.

struct GoodResult {
    /// (time since start, round-trip time)
    rtts: Vec<(Duration, Duration)>,
    unanswered: u64,
    error: Option<String>,
}

/// Reads exactly one frame (within `deadline`) and returns its payload.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if buf.len() >= HEADER_LEN {
            let len = u32::from_le_bytes(buf[..HEADER_LEN].try_into().expect("4 bytes")) as usize;
            if buf.len() >= HEADER_LEN + len {
                let payload = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
                buf.drain(..HEADER_LEN + len);
                return Ok(payload);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(READ_SLICE.min(deadline - now)))?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

fn good_client(addr: SocketAddr, size: usize, start: Instant, end: Instant) -> GoodResult {
    let mut r = GoodResult {
        rtts: Vec::new(),
        unanswered: 0,
        error: None,
    };
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("cannot connect: {e}"));
            return r;
        }
    };
    if let Err(e) = s.set_write_timeout(Some(Duration::from_secs(5))) {
        r.error = Some(e.to_string());
        return r;
    }
    let mut buf = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < end {
        let f = frame(seq, size);
        let t0 = Instant::now();
        if let Err(e) = s.write_all(&f) {
            r.error = Some(format!("write failed: {e}"));
            break;
        }
        match read_frame(&mut s, &mut buf, end + DRAIN) {
            Ok(p) if p.len() == size && p[..8] == seq.to_le_bytes() => {
                r.rtts.push((t0 - start, t0.elapsed()));
            }
            Ok(p) => {
                r.error = Some(format!(
                    "a wrong echo ({} bytes) for round trip {seq}",
                    p.len()
                ));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                r.unanswered += 1;
                break;
            }
            Err(e) => {
                r.error = Some(format!("read failed: {e}"));
                break;
            }
        }
        seq += 1;
    }
    r
}

/// p50, p99 and max of `v` (sorted here), in microseconds.
fn percentiles(v: &mut [Duration]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Some((at(0.50), at(0.99), at(1.0)))
}

// ---------------------------------------------------------------------------------------
// The never-read clients.

struct NeverReadResult {
    clients: usize,
    bytes: u64,
    closed_by_server: usize,
    first_close: Option<Duration>,
    stalled: usize,
    error: Option<String>,
}

/// The most bytes one never-read socket writes before the next gets its turn.
const NEVER_READ_BURST: usize = 4 << 20;

/// One never-read client.
struct Hog {
    stream: TcpStream,
    /// Where in the frame the next write starts.
    off: usize,
    open: bool,
    /// Bytes the socket took.
    sent: u64,
    /// `sent` when the run's last [`STALL_WINDOW`] began.
    mark: Option<u64>,
}

/// Waits (at most `timeout`) until one of `fds` is writable.
fn poll_writable(fds: &[i32], timeout: Duration) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfds.
    unsafe {
        libc::poll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            timeout.as_millis().min(1000) as i32,
        )
    };
}

fn never_read_clients(
    addr: SocketAddr,
    n: usize,
    size: usize,
    start: Instant,
    end: Instant,
) -> NeverReadResult {
    let mut r = NeverReadResult {
        clients: n,
        bytes: 0,
        closed_by_server: 0,
        first_close: None,
        stalled: 0,
        error: None,
    };
    let f = frame(0, size);
    let mut socks: Vec<Hog> = Vec::with_capacity(n);
    for i in 0..n {
        match connect(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => socks.push(Hog {
                stream,
                off: 0,
                open: true,
                sent: 0,
                mark: None,
            }),
            Err(e) => {
                r.error = Some(format!("never-read client {i}: cannot connect: {e}"));
                return r;
            }
        }
    }
    let last_second = end.checked_sub(STALL_WINDOW).unwrap_or(end);
    while Instant::now() < end {
        let snapshot = Instant::now() >= last_second;
        for h in socks.iter_mut().filter(|h| h.open) {
            if snapshot {
                h.mark.get_or_insert(h.sent);
            }
            // A bounded burst per socket, so that one fast socket cannot hold the loop.
            let mut burst = 0;
            while burst < NEVER_READ_BURST {
                match h.stream.write(&f[h.off..]) {
                    Ok(k) => {
                        r.bytes += k as u64;
                        h.sent += k as u64;
                        burst += k;
                        h.off = (h.off + k) % f.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        h.open = false;
                        r.closed_by_server += 1;
                        r.first_close.get_or_insert(start.elapsed());
                        break;
                    }
                }
            }
        }
        let fds: Vec<i32> = socks
            .iter()
            .filter(|h| h.open)
            .map(|h| h.stream.as_raw_fd())
            .collect();
        if fds.is_empty() {
            break;
        }
        let now = Instant::now();
        if now < end {
            poll_writable(&fds, (end - now).min(Duration::from_millis(100)));
        }
    }
    // A socket that took nothing in the last second is one whose server stopped reading it.
    r.stalled = socks
        .iter()
        .filter(|h| h.open && h.mark == Some(h.sent))
        .count();
    r
}

// ---------------------------------------------------------------------------------------
// The pause-read client.

struct PauseResult {
    sent: u64,
    skipped: u64,
    received: u64,
    breaks: u64,
    pause: (Duration, Duration),
    closed_by_server: Option<Duration>,
    error: Option<String>,
}

fn pause_read_client(
    addr: SocketAddr,
    pause: Duration,
    size: usize,
    rate: f64,
    start: Instant,
    end: Instant,
) -> PauseResult {
    let t0 = Instant::now();
    let pause_from = t0 + PAUSE_AFTER;
    let pause_to = pause_from + pause;
    let mut r = PauseResult {
        sent: 0,
        skipped: 0,
        received: 0,
        breaks: 0,
        pause: (pause_from - start, pause_to - start),
        closed_by_server: None,
        error: None,
    };
    let mut s = match connect(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("cannot connect: {e}"));
            return r;
        }
    };
    let flen = HEADER_LEN + size;
    let mut out: Vec<u8> = Vec::new();
    let mut out_pos = 0usize;
    let mut written = 0u64;
    let mut seq = 0u64;
    let mut slots = 0u64;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut next_seq_back = 0u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Never queue more than a second's worth of unsent packets here: the rest are not sent.
    let max_backlog = ((rate as usize).max(1) * flen).max(flen);
    loop {
        let now = Instant::now();
        let sending = now < end;
        if !sending && (r.received >= written / flen as u64 || now >= end + DRAIN) {
            break;
        }
        // Send what is due.
        if sending {
            // The rate is wall-clock, not a debt: a slot that finds the backlog full is
            // skipped (and counted), and sequence numbers stay contiguous.
            let due = ((now - t0).as_secs_f64() * rate) as u64;
            while slots < due {
                slots += 1;
                if out.len() - out_pos + flen > max_backlog {
                    r.skipped += 1;
                    continue;
                }
                if out_pos == out.len() {
                    out.clear();
                    out_pos = 0;
                }
                out.extend_from_slice(&frame(seq, size));
                seq += 1;
            }
        }
        while out_pos < out.len() {
            match s.write(&out[out_pos..]) {
                Ok(k) => {
                    out_pos += k;
                    written += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    r.closed_by_server.get_or_insert(start.elapsed());
                    r.error.get_or_insert(format!("write failed: {e}"));
                    break;
                }
            }
        }
        if r.closed_by_server.is_some() {
            break;
        }
        // Read unless paused.
        if !(pause_from..pause_to).contains(&now) {
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => {
                        r.closed_by_server.get_or_insert(start.elapsed());
                        break;
                    }
                    Ok(k) => inbuf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        r.closed_by_server.get_or_insert(start.elapsed());
                        r.error.get_or_insert(format!("read failed: {e}"));
                        break;
                    }
                }
            }
            let mut pos = 0;
            while inbuf.len() - pos >= HEADER_LEN {
                let len = u32::from_le_bytes(inbuf[pos..pos + HEADER_LEN].try_into().expect("4"))
                    as usize;
                if inbuf.len() - pos - HEADER_LEN < len {
                    break;
                }
                let body = &inbuf[pos + HEADER_LEN..pos + HEADER_LEN + len];
                if len >= 8 {
                    let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    if seq != next_seq_back {
                        r.breaks += 1;
                    }
                    next_seq_back = seq + 1;
                }
                r.received += 1;
                pos += HEADER_LEN + len;
            }
            inbuf.drain(..pos);
            if r.closed_by_server.is_some() {
                break;
            }
        }
        thread::sleep(interval.min(Duration::from_millis(1)));
    }
    r.sent = written / flen as u64;
    r
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("hostile_load: cannot raise the descriptor limit: {e}");
    }
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let hostile_start = start + Duration::from_secs_f64(a.baseline);
    println!(
        "hostile_load: server {}{}, {}s (baseline {}s), never-read {} x {} B, pause-read {}",
        a.addr,
        a.server_pid
            .map_or(String::new(), |p| format!(" (pid {p})")),
        a.secs,
        a.baseline,
        a.never_read,
        a.size,
        a.pause_read.map_or("off".to_string(), |p| format!(
            "{p}s ({} B at {}/s)",
            a.pause_size, a.pause_rate
        )),
    );

    let sampler = a
        .server_pid
        .map(|pid| thread::spawn(move || sample_server(pid, start, end)));
    let (addr, good_size) = (a.addr, a.good_size);
    let good = thread::spawn(move || good_client(addr, good_size, start, end));
    let wait_until = |t: Instant| {
        let now = Instant::now();
        if t > now {
            thread::sleep(t - now);
        }
    };
    let (n, size) = (a.never_read, a.size);
    let never = (n > 0).then(|| {
        thread::spawn(move || {
            wait_until(hostile_start);
            never_read_clients(addr, n, size, start, end)
        })
    });
    let (psize, prate) = (a.pause_size, a.pause_rate);
    let pause = a.pause_read.map(|secs| {
        thread::spawn(move || {
            wait_until(hostile_start);
            pause_read_client(
                addr,
                Duration::from_secs_f64(secs),
                psize,
                prate,
                start,
                end,
            )
        })
    });

    let good = good.join().expect("the good client panicked");
    let never = never.map(|h| h.join().expect("the never-read clients panicked"));
    let pause = pause.map(|h| h.join().expect("the pause-read client panicked"));
    let server = sampler.map(|h| h.join().expect("the sampler panicked"));

    println!("== report");
    let mut ok = true;
    if let Some(s) = &server {
        if s.gone {
            println!("server: process gone or unreadable during the run");
        } else {
            let cpu = s.cpu_ticks as f64 / clock_ticks_per_sec() / s.wall.as_secs_f64() * 100.0;
            println!(
                "server: rss start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; cpu {cpu:.0}% of \
                 one core over {:.1}s",
                s.rss_start_kib as f64 / 1024.0,
                s.rss_peak_kib as f64 / 1024.0,
                s.rss_end_kib as f64 / 1024.0,
                s.wall.as_secs_f64()
            );
        }
    }
    let split = hostile_start - start;
    let (mut base, mut load): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for &(t, rtt) in &good.rtts {
        if t < split {
            base.push(rtt);
        } else {
            load.push(rtt);
        }
    }
    for (name, v) in [("baseline", &mut base), ("under load", &mut load)] {
        match percentiles(v) {
            Some((p50, p99, max)) => println!(
                "good client, {name}: {} round trips, p50 {p50:.0} us, p99 {p99:.0} us, max \
                 {max:.0} us",
                v.len()
            ),
            None => println!("good client, {name}: no round trip completed"),
        }
    }
    if good.unanswered > 0 {
        println!(
            "good client: its last packet got no echo within the run plus {}s",
            DRAIN.as_secs()
        );
    }
    if let Some(e) = &good.error {
        println!("good client: {e}");
        ok = false;
    }
    if let Some(nr) = &never {
        println!(
            "never-read: {} client(s) sent {:.1} MB; {} closed by the server{}; {} stalled (took \
             nothing in the run's last {}s: the server had stopped reading them)",
            nr.clients,
            nr.bytes as f64 / 1e6,
            nr.closed_by_server,
            nr.first_close.map_or(String::new(), |t| format!(
                " (first after {:.1}s)",
                t.as_secs_f64()
            )),
            nr.stalled,
            STALL_WINDOW.as_secs()
        );
        if let Some(e) = &nr.error {
            println!("never-read: {e}");
            ok = false;
        }
    }
    if let Some(p) = &pause {
        let pct = if p.sent > 0 {
            p.received as f64 / p.sent as f64 * 100.0
        } else {
            0.0
        };
        println!(
            "pause-read: paused from {:.1}s to {:.1}s; echoes received {}/{} sent ({pct:.1}%), \
             {} break(s) in the sequence (a gap or a reorder); {} not sent (a second's worth was already waiting for the socket){}",
            p.pause.0.as_secs_f64(),
            p.pause.1.as_secs_f64(),
            p.received,
            p.sent,
            p.breaks,
            p.skipped,
            p.closed_by_server.map_or(String::new(), |t| format!(
                "; closed by the server after {:.1}s",
                t.as_secs_f64()
            ))
        );
        if let Some(e) = &p.error {
            println!("pause-read: {e}");
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
