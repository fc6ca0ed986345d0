//! A chat in the browser: one port serves the page and its WebSocket, and the same rooms are
//! open to the clients of `examples/chat_server` on a TCP port.
//!
//! ```text
//! cargo run --example web_chat --features websocket -- --addr 127.0.0.1:8080 --tcp-port 8081 --metrics
//! # open http://127.0.0.1:8080/ in two browser tabs, join one room, talk; and from a terminal:
//! cargo run --example chat_server -- --client 127.0.0.1:8081 --name carol --room lobby
//! ```
//!
//! Flags: `--addr ADDR` (default 127.0.0.1:8080; port 0 picks a free one), `--tcp-port P`
//! (`chat_server`'s protocol on the same IP), `--metrics` (a Prometheus page at
//! `/metrics`), `--secs S` (run S seconds, then shut down gracefully; without it, run until
//! killed). Once listening it prints one line with its addresses, then a line per join,
//! leave and freed room.
//!
//! The server (its design and its protocols) is `examples/web_chat/server.rs`; the page is
//! `examples/web_chat/index.html`, compiled in.

mod server;

use kendynet::System;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

const USAGE: &str = "usage: web_chat [--addr ADDR] [--tcp-port P] [--metrics] [--secs S]
  --addr ADDR    serve the page and the WebSocket on ADDR (default 127.0.0.1:8080)
  --tcp-port P   let chat_server's clients join the same rooms on port P of the same IP
  --metrics      serve Prometheus metrics at /metrics
  --secs S       run S seconds, then shut down gracefully (default: until killed)";

struct Args {
    config: server::Config,
    secs: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
    let (mut tcp_port, mut metrics, mut secs) = (None::<u16>, false, None::<f64>);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = parse(&flag, &value()?)?,
            "--tcp-port" => tcp_port = Some(parse(&flag, &value()?)?),
            "--metrics" => metrics = true,
            "--secs" => {
                let s: f64 = parse(&flag, &value()?)?;
                if !(s.is_finite() && s >= 0.0) {
                    return Err(format!("--secs: invalid value {s}"));
                }
                secs = Some(s);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        config: server::Config {
            http: addr,
            tcp: tcp_port.map(|port| SocketAddr::new(addr.ip(), port)),
            metrics,
        },
        secs,
    })
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: invalid value {value:?}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("web_chat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web_chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("web_chat: cannot raise the descriptor limit: {e}");
    }
    let system = System::builder()
        .build()
        .map_err(|e| format!("starting the system: {e}"))?;
    let chat = server::start(&system, &args.config).map_err(|e| format!("listening: {e}"))?;
    // One line with every address (tests wait for it).
    let tcp = chat
        .tcp
        .map_or_else(String::new, |a| format!(", chat_server clients on {a}"));
    println!(
        "web chat listening on http://{}/ (WebSocket {}){tcp}",
        chat.http,
        server::WS_PATH
    );
    if args.config.metrics {
        println!("metrics at http://{}/metrics", chat.http);
    }
    let Some(secs) = args.secs else {
        loop {
            thread::park();
        }
    };
    thread::sleep(Duration::from_secs_f64(secs));
    let (rooms, members, messages) = (
        chat.stats.rooms(),
        chat.stats.members(),
        chat.stats.messages(),
    );
    let report = system.shutdown(Duration::from_secs(5));
    println!(
        "web chat: {messages} messages relayed; {rooms} rooms with {members} members at the end"
    );
    if !report.graceful {
        return Err(format!("shutdown was not graceful: {report:?}"));
    }
    println!("web chat: shut down gracefully");
    Ok(())
}
