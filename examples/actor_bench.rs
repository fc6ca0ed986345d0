//! Actor micro-benchmarks with the same flags and output line as the peers' `*-bench`
//! binaries (`../shared/peers`), so they can be run side by side:
//!
//! ```text
//! cargo run --release --example actor_bench -- --bench pingpong|fanin|spawn|ask --threads T \
//!     [--n N] [--senders S --m M] [--actors A]
//! ```
//!
//! - `pingpong`: two actors bounce one message `n` times (tell-style, one in flight).
//! - `fanin`: `senders` actors each send `m` messages to one counter.
//! - `spawn`: spawn `actors` actors, send each one message on which it stops; the time until
//!   all have stopped, and the peak RSS of the process.
//! - `ask`: one actor makes `n` sequential request-reply calls to another, each with a 5 s
//!   deadline (`Context::ask`; the reply comes back as a message).
//!
//! `--threads` is the number of worker threads.

use kendynet::{Actor, Addr, AskError, Context, ReplyTo, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: actor_bench --bench pingpong|fanin|spawn|ask [--threads T] [--n N] [--senders S] [--m M] [--actors A] [--spin-us U]"
    );
    std::process::exit(2)
}

struct Args {
    bench: String,
    threads: usize,
    n: u64,
    senders: usize,
    m: u64,
    actors: usize,
    spin_us: u64,
    /// Whether `--n` was given (the default depends on the bench, as for the peers).
    n_given: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        bench: "pingpong".into(),
        threads: 1,
        n: 1_000_000,
        senders: 4,
        m: 1_000_000,
        actors: 100_000,
        spin_us: 0,
        n_given: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let num = || value.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--bench" => a.bench = value.clone(),
            "--threads" => a.threads = num() as usize,
            "--n" => {
                a.n = num();
                a.n_given = true;
            }
            "--senders" => a.senders = num() as usize,
            "--m" => a.m = num(),
            "--actors" => a.actors = num() as usize,
            "--spin-us" => a.spin_us = num(),
            _ => usage(),
        }
    }
    a
}

// ---------- ping-pong ----------
enum PingMsg {
    Start(Addr<Pong>),
    Ball(u64),
}

struct Ping {
    pong: Option<Addr<Pong>>,
    n: u64,
    done: mpsc::Sender<()>,
}

impl Actor for Ping {
    type Msg = PingMsg;
    fn handle(&mut self, msg: PingMsg, _: &mut Context<Self>) {
        match msg {
            PingMsg::Start(pong) => {
                pong.send(0).ok();
                self.pong = Some(pong);
            }
            PingMsg::Ball(k) => {
                let k = k + 1;
                if k == self.n {
                    self.done.send(()).ok();
                } else if let Some(p) = &self.pong {
                    p.send(k).ok();
                }
            }
        }
    }
}

struct Pong {
    ping: Addr<Ping>,
}

impl Actor for Pong {
    type Msg = u64;
    fn handle(&mut self, k: u64, _: &mut Context<Self>) {
        self.ping.send(PingMsg::Ball(k)).ok();
    }
}

// ---------- fan-in ----------
struct Counter {
    got: u64,
    expect: u64,
    done: mpsc::Sender<()>,
}

impl Actor for Counter {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        self.got += 1;
        if self.got == self.expect {
            self.done.send(()).ok();
        }
    }
}

struct Sender {
    counter: Addr<Counter>,
    m: u64,
}

impl Actor for Sender {
    type Msg = ();
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        for _ in 0..self.m {
            self.counter.send(()).ok();
        }
    }
}

// ---------- spawn ----------
/// Stops on its first message; the last one to stop signals the end (as the peers do).
struct Worker {
    stopped: Arc<AtomicUsize>,
    n: usize,
    done: mpsc::Sender<()>,
}

impl Actor for Worker {
    type Msg = ();
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) {
        ctx.stop();
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.stopped.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
            self.done.send(()).ok();
        }
    }
}

/// Spawns `n` workers, then sends each its message.
struct Spawner {
    n: usize,
    done: mpsc::Sender<()>,
}

impl Actor for Spawner {
    type Msg = ();
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) {
        let stopped = Arc::new(AtomicUsize::new(0));
        let addrs: Vec<_> = (0..self.n)
            .map(|_| {
                let (stopped, n, done) = (stopped.clone(), self.n, self.done.clone());
                ctx.spawn(Worker { stopped, n, done })
            })
            .collect();
        for ad in &addrs {
            ad.send(()).ok();
        }
    }
}

// ---------- ask ----------
struct Server;

impl Actor for Server {
    type Msg = (u64, ReplyTo<u64>);
    fn handle(&mut self, (v, reply): (u64, ReplyTo<u64>), _: &mut Context<Self>) {
        reply.reply(v + 1).ok();
    }
}

enum AskerMsg {
    Go,
    Got(Result<u64, AskError>),
}

/// Asks the server `n` times in sequence, each ask sent when the previous reply arrives.
struct Asker {
    server: Addr<Server>,
    n: u64,
    done: mpsc::Sender<u64>,
}

const ASK_DEADLINE: Duration = Duration::from_secs(5);

impl Asker {
    fn ask(&self, v: u64, ctx: &mut Context<Self>) {
        ctx.ask(&self.server, |r| (v, r), ASK_DEADLINE, AskerMsg::Got);
    }
}

impl Actor for Asker {
    type Msg = AskerMsg;
    fn handle(&mut self, msg: AskerMsg, ctx: &mut Context<Self>) {
        match msg {
            AskerMsg::Go => self.ask(0, ctx),
            AskerMsg::Got(Ok(v)) if v == self.n => {
                self.done.send(v).ok();
            }
            AskerMsg::Got(Ok(v)) => self.ask(v, ctx),
            AskerMsg::Got(Err(e)) => panic!("ask failed: {e}"),
        }
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("actor_bench: cannot raise the descriptor limit: {e}");
    }
    let a = parse_args();
    let system = System::builder()
        .workers(a.threads)
        .build()
        .expect("start the system");
    let (tx, rx) = mpsc::channel();
    match a.bench.as_str() {
        "pingpong" => {
            let ping = system.spawn(Ping {
                pong: None,
                n: a.n,
                done: tx,
            });
            let pong = system.spawn(Pong { ping: ping.clone() });
            let start = Instant::now();
            ping.send(PingMsg::Start(pong)).ok();
            rx.recv_timeout(LIMIT).expect("ping-pong finished in time");
            let s = start.elapsed().as_secs_f64();
            println!(
                "bench=pingpong peer=kendynet threads={} n={} secs={:.3} roundtrips/s={:.0} msgs/s={:.0}",
                a.threads,
                a.n,
                s,
                a.n as f64 / s,
                2.0 * a.n as f64 / s
            );
        }
        "fanin" => {
            let expect = a.senders as u64 * a.m;
            let counter = system.spawn(Counter {
                got: 0,
                expect,
                done: tx,
            });
            let senders: Vec<_> = (0..a.senders)
                .map(|_| {
                    system.spawn(Sender {
                        counter: counter.clone(),
                        m: a.m,
                    })
                })
                .collect();
            let start = Instant::now();
            for s in &senders {
                s.send(()).ok();
            }
            rx.recv_timeout(LIMIT).expect("fan-in finished in time");
            let s = start.elapsed().as_secs_f64();
            println!(
                "bench=fanin peer=kendynet threads={} senders={} total={} secs={:.3} msgs/s={:.0}",
                a.threads,
                a.senders,
                expect,
                s,
                expect as f64 / s
            );
        }
        "spawn" => {
            // Spawned from inside the system, as the peers do (actix spawns on its arbiter).
            let spawner = system.spawn(Spawner {
                n: a.actors,
                done: tx,
            });
            let start = Instant::now();
            spawner.send(()).ok();
            rx.recv_timeout(LIMIT).expect("all actors stopped in time");
            let s = start.elapsed().as_secs_f64();
            println!(
                "bench=spawn peer=kendynet actors={} secs={:.3} actors/s={:.0} peak_rss_kib={}",
                a.actors,
                s,
                a.actors as f64 / s,
                vm_hwm_kib()
            );
        }
        "ask" => {
            let n = if a.n_given { a.n } else { 100_000 };
            let server = system.spawn(Server);
            let (done, got) = mpsc::channel();
            let asker = system.spawn(Asker { server, n, done });
            let start = Instant::now();
            asker.send(AskerMsg::Go).ok();
            let v = got.recv_timeout(LIMIT).expect("asks finished in time");
            let s = start.elapsed().as_secs_f64();
            assert_eq!(v, n);
            drop(tx);
            println!(
                "bench=ask peer=kendynet threads={} n={} secs={:.3} asks/s={:.0}",
                a.threads,
                n,
                s,
                n as f64 / s
            );
        }
        _ => usage(),
    }
    system.shutdown(Duration::from_secs(5));
}
