//! The load of kendynet's `examples/timer_bench` on tokio-util's `DelayQueue`, the way a tokio
//! actor keeps its own timers: one task owns the queue, inserts N timers with random delays of
//! 1-10 s, removes every other one, then inserts M short ones all due at one instant 50 ms
//! after the first is set, and polls them out as they expire (the rate counts from that
//! instant to the last one out). Same flags, same output line.
//!
//! ```text
//! cargo run --release -- [--timers N] [--short M] [--seed S]
//! ```

use std::future::poll_fn;
use std::time::{Duration, Instant};
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

/// What the timers deliver: the same small enum as the kendynet side.
#[allow(dead_code)]
enum Msg {
    Expire(u32),
    Short,
}

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

fn main() {
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
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Allocated and touched before the first RSS sample, as the kendynet side's handles.
    let mut keys: Vec<Key> = Vec::with_capacity(timers);
    for slot in keys.spare_capacity_mut() {
        *slot = std::mem::MaybeUninit::zeroed();
    }
    let (schedule_ns, cancel_ns, bytes_per_timer, fired_per_s, first_late_ms) =
        rt.block_on(async {
            let mut q: DelayQueue<Msg> = DelayQueue::new();
            let rss0 = status_kb("VmRSS:");
            let t0 = Instant::now();
            for i in 0..timers {
                let delay = Duration::from_millis(1000 + next() % 9001);
                keys.push(q.insert(Msg::Expire(i as u32), delay));
            }
            let t1 = Instant::now();
            let rss1 = status_kb("VmRSS:");
            for k in keys.iter().step_by(2) {
                drop(q.remove(k));
            }
            let t2 = Instant::now();
            // The same delays as the kendynet side: each computed from the clock.
            let due = Instant::now() + Duration::from_millis(50);
            for _ in 0..short {
                let delay = due.saturating_duration_since(Instant::now());
                q.insert(Msg::Short, delay);
            }
            let mut fired = 0;
            let mut first_late_ms = 0.0;
            while fired < short {
                let expired = poll_fn(|cx| q.poll_expired(cx)).await.expect("pending");
                if let Msg::Short = expired.into_inner() {
                    fired += 1;
                    if fired == 1 {
                        first_late_ms = due.elapsed().as_secs_f64() * 1e3;
                    }
                }
            }
            // From the instant they were all due to the last one out, as on the kendynet side.
            let secs = due.elapsed().as_secs_f64().max(1e-9);
            (
                (t1 - t0).as_nanos() as f64 / timers as f64,
                (t2 - t1).as_nanos() as f64 / timers.div_ceil(2) as f64,
                (rss1.saturating_sub(rss0) * 1024) as f64 / timers as f64,
                short as f64 / secs,
                first_late_ms,
            )
        });
    println!(
        "timer_bench impl=tokio-delayqueue timers={timers} short={short} schedule_ns={schedule_ns:.1} \
         cancel_ns={cancel_ns:.1} fired_per_s={fired_per_s:.0} first_late_ms={first_late_ms:.2} bytes_per_timer={bytes_per_timer:.1} \
         handle_bytes={} peak_rss_mb={:.1}",
        std::mem::size_of::<Key>(),
        status_kb("VmHWM:") as f64 / 1024.0
    );
}
