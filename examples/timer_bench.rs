//! Timer load: one actor schedules N timers on itself with random delays of 1-10 s, cancels
//! every other one, then sets M short timers (1-5 ms) and counts them as they arrive.
//!
//! Prints, on one line: ns per schedule, ns per cancel, short timers fired (and handled) per
//! second, the RSS growth per pending timer while N were pending, and the peak RSS. The short
//! timers are all due at one instant, 50 ms after the first is set (each one's delay is
//! computed from the clock), so that the rate measures firing and handling a batch, not the
//! spread of the deadlines; it is counted from that instant to the last arrival (so it also
//! pays the wake-up of the worker and the rounding of the deadline to the millisecond). The same
//! load on tokio's `DelayQueue` is `bench/timer-peer` (same flags, same output line).
//!
//! ```text
//! cargo run --release --example timer_bench -- [--timers N] [--short M] [--seed S]
//! ```
//!
//! Each timer is an actor's own (`Context::send_self_after`): its message waits in the
//! actor's timer table and the worker's wheel holds a weak reference to the actor. The
//! handles are kept (cancelling needs them) in a vector allocated and touched before the
//! first RSS sample, so they do not count in the bytes per timer (`handle_bytes` says what
//! each costs the caller); the peer keeps its keys the same way.

use kendynet::{Actor, Context, System, TimerHandle};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// When the short timers are due, from the moment the first is set.
const SHORT_DUE: Duration = Duration::from_millis(50);

/// What the timers deliver: a small enum, as a game's buff or cooldown expiry would be.
enum Msg {
    Run,
    Expire(#[allow(dead_code)] u32),
    Short,
}

struct Bench {
    timers: usize,
    short: usize,
    rng: u64,
    handles: Vec<TimerHandle>,
    fired: usize,
    first_fire: Option<Instant>,
    report: mpsc::Sender<Report>,
    partial: Report,
}

#[derive(Default, Clone)]
struct Report {
    schedule_ns: f64,
    cancel_ns: f64,
    bytes_per_timer: f64,
    fired_per_s: f64,
    /// From the instant the short timers were due to the first one handled.
    first_late_ms: f64,
}

impl Bench {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Actor for Bench {
    type Msg = Msg;
    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Run => {
                let rss0 = status_kb("VmRSS:");
                let t0 = Instant::now();
                for i in 0..self.timers {
                    let delay = Duration::from_millis(1000 + self.next() % 9001);
                    let h = ctx.send_self_after(delay, Msg::Expire(i as u32));
                    self.handles.push(h);
                }
                let t1 = Instant::now();
                let rss1 = status_kb("VmRSS:");
                for h in self.handles.iter().step_by(2) {
                    ctx.cancel_timer(h);
                }
                let t2 = Instant::now();
                self.partial = Report {
                    schedule_ns: (t1 - t0).as_nanos() as f64 / self.timers as f64,
                    cancel_ns: (t2 - t1).as_nanos() as f64 / self.timers.div_ceil(2) as f64,
                    bytes_per_timer: (rss1.saturating_sub(rss0) * 1024) as f64 / self.timers as f64,
                    fired_per_s: 0.0,
                    first_late_ms: 0.0,
                };
                let due = Instant::now() + SHORT_DUE;
                self.first_fire = Some(due);
                for _ in 0..self.short {
                    let delay = due.saturating_duration_since(Instant::now());
                    ctx.send_self_after(delay, Msg::Short);
                }
            }
            Msg::Expire(_) => {}
            Msg::Short => {
                self.fired += 1;
                let due = self.first_fire.expect("set with the timers");
                if self.fired == 1 {
                    self.partial.first_late_ms = due.elapsed().as_secs_f64() * 1e3;
                }
                if self.fired == self.short {
                    let secs = due.elapsed().as_secs_f64().max(1e-9);
                    let mut r = self.partial.clone();
                    r.fired_per_s = self.short as f64 / secs;
                    let _ = self.report.send(r);
                }
            }
        }
    }
}

/// A vector with room for `n` whose pages are already resident (zeroes written into its
/// spare capacity), so that filling it does not move the RSS.
fn touched_vec<T>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    for slot in v.spare_capacity_mut() {
        *slot = std::mem::MaybeUninit::zeroed();
    }
    v
}

/// A field of /proc/self/status, in kB (0 where there is none).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> std::io::Result<()> {
    if let Err(e) = kendynet::net::raise_fd_limit() {
        eprintln!("timer_bench: cannot raise the descriptor limit: {e}");
    }
    let mut timers = 1_000_000usize;
    let mut short = 100_000usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--timers" => timers = v.parse().expect("--timers N"),
            "--short" => short = v.parse().expect("--short M"),
            "--seed" => seed = v.parse().expect("--seed S"),
            _ => panic!("unknown flag {a} (--timers N --short M --seed S)"),
        }
    }
    let system = System::builder().workers(1).build()?;
    let (tx, rx) = mpsc::channel();
    let bench = system.spawn(Bench {
        timers,
        short,
        rng: seed | 1,
        handles: touched_vec(timers),
        fired: 0,
        first_fire: None,
        report: tx,
        partial: Report::default(),
    });
    bench.send(Msg::Run).expect("the bench actor runs");
    let r = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the short timers fire within two minutes");
    println!(
        "timer_bench impl=kendynet timers={timers} short={short} schedule_ns={:.1} cancel_ns={:.1} \
         fired_per_s={:.0} first_late_ms={:.2} bytes_per_timer={:.1} handle_bytes={} peak_rss_mb={:.1}",
        r.schedule_ns,
        r.cancel_ns,
        r.fired_per_s,
        r.first_late_ms,
        r.bytes_per_timer,
        std::mem::size_of::<TimerHandle>(),
        status_kb("VmHWM:") as f64 / 1024.0
    );
    system.shutdown(Duration::from_secs(10));
    Ok(())
}
