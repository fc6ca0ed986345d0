//! Small shared helpers for the TLS peer binaries.

use std::collections::HashMap;

/// Largest frame payload the TLS peers accept (guards against garbage headers).
pub const MAX_FRAME: usize = 1 << 20;

/// Minimal `--key value` / `--flag` argument parser.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse() -> Args {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                if let Some((k, v)) = key.split_once('=') {
                    map.insert(k.to_string(), v.to_string());
                } else {
                    let v = match it.peek() {
                        Some(n) if !n.starts_with("--") => it.next().unwrap(),
                        _ => "true".to_string(),
                    };
                    map.insert(key.to_string(), v);
                }
            } else {
                eprintln!("unexpected argument: {a}");
                std::process::exit(2);
            }
        }
        Args { map }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }

    pub fn str_or(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }

    pub fn num_or<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        match self.map.get(k) {
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("bad value for --{k}: {v}");
                std::process::exit(2)
            }),
            None => d,
        }
    }

    pub fn f64_or(&self, k: &str, d: f64) -> f64 {
        self.num_or(k, d)
    }
}

/// Raise the soft open-file limit to the hard one (many connections).
pub fn raise_nofile() {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// User + system CPU seconds of this process so far.
pub fn rusage() -> f64 {
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Total CPU time (ns) of all threads of `pid`: the sum of
/// /proc/PID/task/*/schedstat, or utime + stime of /proc/PID/stat where the
/// kernel has no schedstat. 0 when `pid` is 0 or gone.
pub fn proc_cpu_ns(pid: u32) -> u64 {
    if pid == 0 {
        return 0;
    }
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let ns: Vec<u64> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
            .filter_map(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .collect();
        if !ns.is_empty() {
            return ns.iter().sum();
        }
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (ticks(11) + ticks(12)) * 1_000_000_000 / hz
}
