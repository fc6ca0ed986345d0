//! Single-threaded closed-loop TLS ping-pong load client (tokio + tokio-rustls).
//!
//! Wire format: 4-byte little-endian u32 payload length, then the payload, inside
//! the TLS session. Each connection keeps one packet in flight: it writes a packet,
//! reads its echo whole, and sends the next. The output line is the one of the
//! plain pingpong-client peer, with round-trip latency percentiles of the measured
//! window (after `--warmup`):
//!
//!   tls-client --addr 127.0.0.1:PORT --ca CERT.pem [--server-name localhost]
//!              --conns N --size S --secs T [--warmup W] [--server-pid PID]
//!
//! The client runs on ONE thread (a current_thread runtime, one local task per
//! connection), so that on a 2-core machine a single-threaded server gets the
//! other core to itself and the comparison between servers stays fair.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls_peer::{Args, MAX_FRAME, proc_cpu_ns, raise_nofile, rusage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_rustls::TlsConnector;

/// State shared by the connection tasks (all on this one thread).
#[derive(Default)]
struct Shared {
    /// inside the measured window: count echoes and record their latency
    measuring: Cell<bool>,
    /// the run is over: tasks stop after their current round trip
    stop: Cell<bool>,
    msgs: Cell<u64>,
    lat_us: RefCell<Vec<u32>>,
}

fn fail(what: String) -> ! {
    eprintln!("tls-client: {what}");
    std::process::exit(1);
}

fn main() {
    let a = Args::parse();
    let addr = a.str_or("addr", "127.0.0.1:9443");
    let nconns: usize = a.num_or("conns", 1);
    let size: usize = a.num_or("size", 4096);
    let secs = a.f64_or("secs", 5.0);
    let warmup = a.f64_or("warmup", 0.0);
    // Optional: report the CPU use of this pid (all threads) over the measured window.
    let server_pid: u32 = a.num_or("server-pid", 0);
    let server_name = a.str_or("server-name", "localhost");
    let Some(ca) = a.get("ca") else {
        eprintln!(
            "usage: tls-client --addr HOST:PORT --ca FILE [--server-name NAME] --conns N \
             --size S --secs T [--warmup W] [--server-pid PID]"
        );
        std::process::exit(2);
    };
    if size > MAX_FRAME || nconns == 0 || secs <= 0.0 {
        eprintln!("bad --size/--conns/--secs (size at most {MAX_FRAME})");
        std::process::exit(2);
    }
    raise_nofile();

    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| fail(format!("{ca}: {e}")));
    if certs.is_empty() {
        fail(format!("{ca}: no certificate"));
    }
    for c in certs {
        roots.add(c).unwrap_or_else(|e| fail(format!("{ca}: {e}")));
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.clone())
        .unwrap_or_else(|e| fail(format!("--server-name {server_name}: {e}")));

    let mut pkt = Vec::with_capacity(4 + size);
    pkt.extend_from_slice(&(size as u32).to_le_bytes());
    pkt.extend((0..size).map(|i| (i % 251) as u8));
    let pkt = Rc::new(pkt);

    // One thread: see the module comment.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let sh = Rc::new(Shared::default());
        // Every connection finishes its handshake before the first packet is sent.
        let start = Rc::new(Barrier::new(nconns + 1));
        let tc = Instant::now();
        for i in 0..nconns {
            let (addr, connector, name) = (addr.clone(), connector.clone(), name.clone());
            let (pkt, start, sh) = (pkt.clone(), start.clone(), sh.clone());
            tokio::task::spawn_local(async move {
                let tcp = TcpStream::connect(&addr)
                    .await
                    .unwrap_or_else(|e| fail(format!("connect #{i} to {addr}: {e}")));
                tcp.set_nodelay(true).unwrap();
                let mut tls = connector
                    .connect(name, tcp)
                    .await
                    .unwrap_or_else(|e| fail(format!("TLS handshake #{i} with {addr}: {e}")));
                let mut body = vec![0u8; size];
                start.wait().await;
                let io_fail = |what: &str, e: io::Error| -> ! {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        fail(format!("server closed connection #{i}"));
                    }
                    fail(format!("{what} #{i}: {e}"));
                };
                while !sh.stop.get() {
                    let sent = Instant::now();
                    if let Err(e) = tls.write_all(&pkt).await {
                        io_fail("write", e);
                    }
                    if let Err(e) = tls.flush().await {
                        io_fail("write", e);
                    }
                    let mut hdr = [0u8; 4];
                    if let Err(e) = tls.read_exact(&mut hdr).await {
                        io_fail("read", e);
                    }
                    let len = u32::from_le_bytes(hdr) as usize;
                    if len != size {
                        fail(format!("conn #{i}: echoed length {len} != sent {size}"));
                    }
                    if let Err(e) = tls.read_exact(&mut body).await {
                        io_fail("read", e);
                    }
                    if sh.measuring.get() {
                        sh.msgs.set(sh.msgs.get() + 1);
                        let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        sh.lat_us.borrow_mut().push(us);
                    }
                }
            });
        }
        start.wait().await;
        let connect_secs = tc.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let ru0 = rusage();
        if warmup > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        }
        let srv0 = proc_cpu_ns(server_pid);
        let cli0 = rusage();
        let m_start = Instant::now();
        sh.measuring.set(true);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        sh.measuring.set(false);
        sh.stop.set(true);
        let elapsed = m_start.elapsed().as_secs_f64();
        let srv1 = proc_cpu_ns(server_pid);
        let cli1 = rusage();
        let total_wall = t0.elapsed().as_secs_f64();
        let m = sh.msgs.get();
        let mbps = (m as f64) * (size as f64) / 1e6 / elapsed;
        eprintln!(
            "tls-client: cpu={:.0}% ({:.2}s cpu over {:.2}s wall incl. warmup; connect phase {:.2}s)",
            100.0 * (cli1 - ru0) / total_wall,
            cli1 - ru0,
            total_wall,
            connect_secs
        );
        if server_pid != 0 {
            eprintln!(
                "measured-window cpu: client={:.0}% server={:.0}%",
                100.0 * (cli1 - cli0) / elapsed,
                100.0 * (srv1 - srv0) as f64 / 1e9 / elapsed
            );
        }
        let mut lat_us = sh.lat_us.take();
        lat_us.sort_unstable();
        let pct = |q: f64| -> u32 {
            if lat_us.is_empty() {
                return 0;
            }
            lat_us[((lat_us.len() - 1) as f64 * q).round() as usize]
        };
        // Same line as pingpong-client (closed loop: rate=0).
        println!(
            "conns={nconns} size={size} secs={elapsed:.2} msgs={m} MB/s={mbps:.1} rate=0 p50_us={} p99_us={} p999_us={} max_us={}",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            lat_us.last().copied().unwrap_or(0)
        );
    });
}
