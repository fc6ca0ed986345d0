//! Process resource limits.

use super::syscall;
use std::io;

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit (servers
/// with many connections need more than the usual 1024). Returns the new soft limit; a soft
/// limit already at the hard limit is left alone.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: rlimit is plain old data; all-zero is a valid value.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut rl))?;
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &rl))?;
    }
    Ok(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::raise_fd_limit;

    #[test]
    fn raises_the_soft_limit_to_the_hard_limit() {
        let new = raise_fd_limit().expect("getrlimit/setrlimit");
        // SAFETY: rlimit is plain old data; all-zero is a valid value.
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `rl` is a live rlimit for getrlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, rl.rlim_max);
        assert_eq!(new, rl.rlim_cur);
        // A second call finds nothing to raise and reports the same limit.
        assert_eq!(raise_fd_limit().expect("second call"), new);
    }
}
